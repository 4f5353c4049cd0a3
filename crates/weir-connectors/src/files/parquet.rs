//! `read_parquet`, and the types `write_parquet` writes.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{SessionContext, ident};
use tracing::info;
use weir_engine::StepContext;
use weir_spec::ReadParquet;

use super::listing::listing_table;
use crate::object_store::remote;

pub async fn table(session: &SessionContext, spec: &ReadParquet, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let path = remote::localize(cx.path(&spec.path)?, spec.connection.as_ref(), cx, remote::Arrival::Whole).await?;
    info!(step = %cx.step, "Starting extract from {path}");
    listing_table(session, &path, spec.hive_partitioning, Arc::new(ParquetFormat::default()), None).await
}

/// `input` with every column of a type Parquet has no logical type for cast to the nearest one it has, so that
/// readers without Arrow's embedded schema (DuckDB, Spark, pyarrow's own types) see a timestamp as a timestamp:
/// seconds become milliseconds (Parquet's timestamps and times have no seconds) and `Date64` becomes a date.
pub(crate) fn with_parquet_types(input: DataFrame) -> Result<DataFrame> {
    let schema = input.schema().clone();
    if !schema.fields().iter().any(|f| parquet_type(f.data_type()).is_some()) {
        return Ok(input);
    }
    let columns: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| match parquet_type(f.data_type()) {
            Some(to) => cast(ident(f.name()), to).alias(f.name()),
            None => ident(f.name()),
        })
        .collect();
    input.select(columns)
}

/// The type a value of `ty` is written as, where Parquet cannot hold `ty` itself with its meaning.
fn parquet_type(ty: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| -> Option<FieldRef> {
        parquet_type(f.data_type()).map(|t| Arc::new(Field::new(f.name(), t, f.is_nullable())))
    };
    match ty {
        DataType::Timestamp(TimeUnit::Second, tz) => Some(DataType::Timestamp(TimeUnit::Millisecond, tz.clone())),
        DataType::Time32(TimeUnit::Second) => Some(DataType::Time32(TimeUnit::Millisecond)),
        DataType::Date64 => Some(DataType::Date32),
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Struct(fields) => {
            let coerced: Vec<Option<FieldRef>> = fields.iter().map(field).collect();
            coerced.iter().any(Option::is_some).then(|| {
                DataType::Struct(fields.iter().zip(coerced).map(|(f, c)| c.unwrap_or_else(|| f.clone())).collect())
            })
        }
        _ => None,
    }
}
