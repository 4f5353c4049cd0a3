//! A step with several readers, one of which reads outside the loads' streams (a check, after the loads; an
//! `enrich_api`, while planning), runs once before the loads: its output is written to an Arrow IPC file in the
//! run's scratch directory, and the readers scan that file. This keeps
//! side effects (dead letters, API calls, cursors) to one pass. Other steps with several readers are streamed to
//! them at once instead (see `fan_out`). The file is in IPC's stream format, which DataFusion reads batch by
//! batch; it reads the file format's byte ranges whole, a partition's half of the file in memory at once.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

pub async fn materialize(
    ctx: &SessionContext,
    step: &str,
    table: Arc<dyn TableProvider>,
    scratch_dir: &Path,
) -> Result<Arc<dyn TableProvider>> {
    std::fs::create_dir_all(scratch_dir)?;
    let path = scratch_dir.join(format!("{step}.arrow"));
    let df = ctx.read_table(table)?;
    let schema = Arc::clone(df.schema().inner());
    let mut stream = df.execute_stream().await?;
    let file = std::fs::File::create(&path)?;
    let mut writer = StreamWriter::try_new(std::io::BufWriter::new(file), &schema)?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    writer.finish()?;
    let url = ListingTableUrl::parse(
        path.to_str().ok_or_else(|| DataFusionError::Plan("scratch path is not UTF-8".into()))?,
    )?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(".arrow"))
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}
