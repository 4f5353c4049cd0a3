//! `read_parquet`.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
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
