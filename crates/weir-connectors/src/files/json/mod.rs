//! `read_json`: NDJSON or a JSON array of objects, detected from the first byte of the first file.

use std::io::Read;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{SessionContext, ident};
use tracing::info;
use weir_engine::StepContext;
use weir_spec::{Compression, OrderedMap, ReadJson};

use super::listing::listing_table;
use crate::db::types::parse_sql_type;
use crate::files::paths;
use crate::object_store::remote;

pub async fn table(session: &SessionContext, spec: &ReadJson, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let path = remote::localize(cx.path(&spec.path)?, spec.connection.as_ref(), cx, remote::Arrival::Whole).await?;
    let inputs = paths::list(&path, spec.hive_partitioning)?;
    info!(step = %cx.step, files = inputs.len(), "Starting extract from {path}");
    let first = &inputs[0].path;
    let compression = paths::compression_of(first, spec.compression);
    let mut head = [0u8; 512];
    let n = paths::open(first, compression)?.read(&mut head)?;
    let is_array = head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let format = JsonFormat::default()
        .with_newline_delimited(!is_array)
        .with_schema_infer_max_rec(spec.infer_rows)
        .with_file_compression_type(match compression {
            Compression::Gzip => FileCompressionType::GZIP,
            Compression::Zstd => FileCompressionType::ZSTD,
            _ => FileCompressionType::UNCOMPRESSED,
        });
    let table =
        listing_table(session, &path, spec.hive_partitioning, Arc::new(format), declared_schema(spec.schema.as_ref())?)
            .await?;
    flattened(session, table, spec.flatten)
}

/// A table over an NDJSON file Weir wrote to scratch (API pages, lookup answers): the declared schema, or one
/// inferred from every record, so a field that first appears late is still a column.
pub(crate) async fn spilled_ndjson(
    session: &SessionContext,
    path: &std::path::Path,
    schema: Option<SchemaRef>,
) -> Result<Arc<dyn TableProvider>> {
    let format = JsonFormat::default().with_newline_delimited(true).with_schema_infer_max_rec(usize::MAX);
    listing_table(session, &path.to_string_lossy(), false, Arc::new(format), schema).await
}

/// The Arrow schema a `schema:` mapping of column to SQL type declares.
pub(crate) fn declared_schema(columns: Option<&OrderedMap<String>>) -> Result<Option<SchemaRef>> {
    let Some(columns) = columns else { return Ok(None) };
    let fields = columns
        .iter()
        .map(|(name, ty)| {
            parse_sql_type(ty)
                .map(|t| Field::new(name, t, true))
                .map_err(|e| DataFusionError::Plan(format!("schema of column `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// `table` as is, or with its nested objects turned into `parent.child` columns.
pub(crate) fn flattened(
    session: &SessionContext,
    table: Arc<dyn TableProvider>,
    flatten: bool,
) -> Result<Arc<dyn TableProvider>> {
    if !flatten {
        return Ok(table);
    }
    let df = session.read_table(table)?;
    let mut columns = Vec::new();
    for field in df.schema().fields() {
        flatten_into(ident(field.name()), field.name(), field.data_type(), &mut columns);
    }
    Ok(df.select(columns)?.into_view())
}

/// `a: {b: {c}}` becomes the column `a.b.c`.
fn flatten_into(expr: Expr, name: &str, ty: &DataType, out: &mut Vec<Expr>) {
    match ty {
        DataType::Struct(fields) => flatten_fields(expr, name, fields, out),
        _ => out.push(expr.alias(name)),
    }
}

fn flatten_fields(expr: Expr, name: &str, fields: &Fields, out: &mut Vec<Expr>) {
    for f in fields {
        let child = get_field(expr.clone(), f.name().as_str());
        flatten_into(child, &format!("{name}.{}", f.name()), f.data_type(), out);
    }
}
