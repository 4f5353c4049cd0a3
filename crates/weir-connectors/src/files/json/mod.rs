//! `read_json`: Weir's own reader rather than DataFusion's, because any JSON document of records must read (NDJSON,
//! an array, one object, pretty or compact; see [`split`]) and a record that does not fit its columns must be set
//! aside with its file and line while the others go on (see [`decode`]). Files stream: only a batch of records is
//! held at a time.

mod decode;
pub(crate) use decode::json_type;
mod infer;
pub(crate) use infer::Inference;
pub(crate) mod split;

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionContext, ident};
use tracing::info;
use weir_engine::StepContext;
use weir_spec::{Compression, ReadJson};

pub use decode::{Origin, RecordDecoder};
use split::Records;

use crate::db::types::declared_schema;
use crate::files::paths::{self, InputFile};
use crate::object_store::remote::{self, Arrival};

/// The table of a `read_json` step.
pub async fn table(session: &SessionContext, spec: &ReadJson, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let rendered = cx.path(&spec.path)?;
    let path = remote::localize(rendered.clone(), spec.connection.as_ref(), cx, Arrival::Streamed).await?;
    let inputs = paths::list(&path, spec.hive_partitioning)?;
    info!(step = %cx.step, files = inputs.len(), "Starting extract from {path}");
    // A download is named by its URL, not by its scratch copy.
    let name: Arc<dyn Fn(&Path) -> String + Send + Sync> = if remote::is_remote(&rendered) && inputs.len() == 1 {
        Arc::new(move |_| rendered.clone())
    } else {
        Arc::new(|path| path.display().to_string())
    };
    let files: Vec<JsonFile> = inputs
        .into_iter()
        .map(|input| {
            let shown = name(&input.path);
            JsonFile { origin: Arc::new(move |line| format!("{shown}:{line}")), input }
        })
        .collect();
    let columns = match declared_schema(spec.schema.as_ref())? {
        Some(schema) => (schema, None),
        None => infer(&files, spec.compression, spec.infer_rows)?,
    };
    let table = records_table(session, files, columns, spec.compression, cx)?;
    flattened(session, table, spec.flatten)
}

/// The columns of an NDJSON file Weir wrote to scratch.
pub(crate) enum Columns {
    /// As the step declares them.
    Declared(SchemaRef),
    /// Inferred from this many records while they were written.
    Inferred(SchemaRef, usize),
    /// To be inferred from every record of the file.
    FromFile,
}

/// A table over an NDJSON file Weir wrote to scratch (API pages, lookup answers), so a field that first appears
/// late is still a column. `origin` names a record by its line in the file.
pub(crate) fn spilled_ndjson(
    session: &SessionContext,
    path: &Path,
    columns: Columns,
    origin: Origin,
    cx: &StepContext,
) -> Result<Arc<dyn TableProvider>> {
    let file = JsonFile { input: InputFile { path: path.to_path_buf(), partitions: Vec::new() }, origin };
    let columns = match columns {
        Columns::Declared(schema) => (schema, None),
        Columns::Inferred(schema, records) => (schema, Some(records)),
        Columns::FromFile => infer(std::slice::from_ref(&file), Compression::None, usize::MAX)?,
    };
    records_table(session, vec![file], columns, Compression::None, cx)
}

/// One input file and how its records are named in messages.
#[derive(Clone)]
struct JsonFile {
    input: InputFile,
    origin: Origin,
}

impl std::fmt::Debug for JsonFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonFile").field("path", &self.input.path).finish_non_exhaustive()
    }
}

/// The records of `files` as a streaming table: their columns (and how many records they were inferred from, if
/// they were), then the files' partition columns.
fn records_table(
    session: &SessionContext,
    files: Vec<JsonFile>,
    (file_schema, inferred): (SchemaRef, Option<usize>),
    compression: Compression,
    cx: &StepContext,
) -> Result<Arc<dyn TableProvider>> {
    let mut fields: Vec<Field> = file_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(files[0].input.partitions.iter().map(|(k, _)| Field::new(k, DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(fields));
    let groups = session.copied_config().target_partitions().clamp(1, files.len());
    let partitions: Vec<Arc<dyn PartitionStream>> = (0..groups)
        .map(|g| {
            Arc::new(JsonPartition {
                files: files.iter().skip(g).step_by(groups).cloned().collect(),
                schema: schema.clone(),
                file_schema: file_schema.clone(),
                inferred,
                compression,
                cx: cx.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    Ok(Arc::new(StreamingTable::try_new(schema, partitions)?))
}

/// The records of `file`, from its first byte.
fn records(file: &JsonFile, compression: Compression) -> Result<FileRecords> {
    let input = BufReader::with_capacity(1 << 16, paths::open(&file.input.path, compression)?);
    Records::new(input).map_err(|e| split_error(file, e))
}

fn split_error(file: &JsonFile, error: split::SplitError) -> DataFusionError {
    match error {
        split::SplitError::NotRecords { line, what } => {
            DataFusionError::Execution(format!("{}: {what}", (file.origin)(line)))
        }
        split::SplitError::Io(e) => DataFusionError::Execution(format!("{}: {e}", file.input.path.display())),
    }
}

/// Columns inferred from the first `limit` records of `files`, and how many records that was. Each record is
/// visited once as it is read and none is held, so inferring over every record of a large spill is cheap.
fn infer(files: &[JsonFile], compression: Compression, limit: usize) -> Result<(SchemaRef, Option<usize>)> {
    let mut inference = Inference::default();
    'files: for file in files {
        let mut records = records(file, compression)?;
        while inference.records() < limit {
            let Some(record) = records.next_record().map_err(|e| split_error(file, e))? else { continue 'files };
            inference
                .add(&record.bytes)
                .map_err(|e| DataFusionError::Execution(format!("{}: {e}", (file.origin)(record.line))))?;
        }
        break;
    }
    Ok((Arc::new(inference.schema()), Some(inference.records())))
}

type FileRecords = Records<BufReader<Box<dyn std::io::Read + Send>>>;

#[derive(Debug)]
struct JsonPartition {
    files: Vec<JsonFile>,
    schema: SchemaRef,
    file_schema: SchemaRef,
    inferred: Option<usize>,
    compression: Compression,
    cx: StepContext,
}

impl PartitionStream for JsonPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        let (files, schema, file_schema, inferred, compression, cx) = (
            self.files.clone(),
            self.schema.clone(),
            self.file_schema.clone(),
            self.inferred,
            self.compression,
            self.cx.clone(),
        );
        builder.spawn_blocking(move || {
            for file in &files {
                let mut records = records(file, compression)?;
                let mut decoder = RecordDecoder::new(file_schema.clone(), inferred, &cx, file.origin.clone());
                let emit = |batch: RecordBatch| -> Result<bool> {
                    let rows = batch.num_rows();
                    let batch = paths::with_partitions(&schema, batch.columns().to_vec(), rows, &file.input)?;
                    Ok(batch.num_rows() == 0 || tx.blocking_send(Ok(batch)).is_ok())
                };
                while let Some(record) = records.next_record().map_err(|e| split_error(file, e))? {
                    decoder.push(record.line, record.bytes);
                    if decoder.len() >= cx.batch_size && !emit(decoder.flush()?)? {
                        return Ok(());
                    }
                }
                if !emit(decoder.flush()?)? {
                    return Ok(());
                }
            }
            Ok(())
        });
        builder.build()
    }
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
