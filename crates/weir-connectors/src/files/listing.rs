//! JSON and Parquet files through DataFusion's listing tables, which already stream, prune, parallelize and
//! decompress; Weir adds path templating, file checks and Hive partition discovery.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::Result;
use datafusion::prelude::SessionContext;

use crate::files::paths;

/// A listing table over the files `path` names, with the given format.
pub async fn listing_table(
    session: &SessionContext,
    path: &str,
    hive_partitioning: bool,
    format: Arc<dyn FileFormat>,
    schema: Option<SchemaRef>,
) -> Result<Arc<dyn TableProvider>> {
    // List first: a clear "no such file" beats an empty table.
    let found = paths::list(path, hive_partitioning)?;
    let is_dir = std::path::Path::new(path).is_dir();
    let url = if is_dir && !path.ends_with('/') { format!("{path}/") } else { path.to_string() };
    let url = ListingTableUrl::parse(&url)?;
    let mut options = ListingOptions::new(format).with_file_extension("");
    if hive_partitioning && !found[0].partitions.is_empty() {
        let state = session.state();
        let columns = options.infer_partitions(&state, &url).await?;
        options = options.with_table_partition_cols(
            columns.into_iter().map(|c| (c, datafusion::arrow::datatypes::DataType::Utf8)).collect(),
        );
    }
    let config = ListingTableConfig::new(url).with_listing_options(options);
    let config = match schema {
        Some(schema) => config.with_schema(schema),
        None => config.infer_schema(&session.state()).await?,
    };
    Ok(Arc::new(ListingTable::try_new(config)?))
}
