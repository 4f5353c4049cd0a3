//! A run's load package (with `settings.commit_every`): every load's input staged on disk as Parquet parts of at
//! most `commit_every` rows, then a manifest, written last (write, then rename), that says staging finished and
//! holds what the run will record. Loading from parts gives every batch a fixed place, whatever the order the
//! plan produced rows in, so a resumed run loads exactly the batches its destinations have not committed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use weir_spec::TypedValue;

use crate::state_store::StepMetricsRow;

const MANIFEST: &str = "manifest.json";

/// What a fully staged package holds: the state and metrics the run records when its loads have committed, and
/// each load's parts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub state: BTreeMap<String, TypedValue>,
    pub steps: Vec<StepMetricsRow>,
    /// Rows per part, in load order, by load step.
    pub parts: BTreeMap<String, Vec<u64>>,
}

impl Manifest {
    /// The package's manifest, or `None` while staging is unfinished (or never started).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                DataFusionError::Execution(format!("load package manifest {} is unreadable: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DataFusionError::Execution(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes the manifest whole or not at all.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let temp = dir.join(format!("{MANIFEST}.tmp"));
        let io = |e: std::io::Error| {
            DataFusionError::Execution(format!("cannot write the load package manifest in {}: {e}", dir.display()))
        };
        std::fs::write(&temp, serde_json::to_vec_pretty(self).expect("manifests serialize")).map_err(io)?;
        File::open(&temp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&temp, dir.join(MANIFEST)).map_err(io)
    }
}

/// Where part `index` of a load step's input lives.
pub fn part(dir: &Path, step: &str, index: usize) -> PathBuf {
    dir.join(step).join(format!("part-{index:06}.parquet"))
}

/// Streams `input` into parts of at most `rows_per_part` rows under `dir/step`; returns the rows of each part.
/// An empty input still gets one (empty) part, so every load runs once: a `replace` of nothing empties its table.
pub async fn stage(input: DataFrame, dir: &Path, step: &str, rows_per_part: u64) -> Result<Vec<u64>> {
    std::fs::create_dir_all(dir.join(step))?;
    let schema = input.schema().inner().clone();
    let mut stream = input.execute_stream().await?;
    let mut parts: Vec<u64> = Vec::new();
    let mut open: Option<(ArrowWriter<File>, u64)> = None;
    while let Some(batch) = stream.next().await {
        let mut batch = batch?;
        while batch.num_rows() > 0 {
            let (writer, rows) = match &mut open {
                Some(w) => w,
                None => open.insert((writer(dir, step, parts.len(), &schema)?, 0)),
            };
            let take = (rows_per_part - *rows).min(batch.num_rows() as u64) as usize;
            writer.write(&batch.slice(0, take))?;
            *rows += take as u64;
            batch = batch.slice(take, batch.num_rows() - take);
            if *rows == rows_per_part {
                let (writer, rows) = open.take().expect("a part is open");
                close(writer, dir, step, parts.len())?;
                parts.push(rows);
            }
        }
    }
    if let Some((writer, rows)) = open {
        close(writer, dir, step, parts.len())?;
        parts.push(rows);
    }
    if parts.is_empty() {
        close(writer(dir, step, 0, &schema)?, dir, step, 0)?;
        parts.push(0);
    }
    Ok(parts)
}

fn writer(
    dir: &Path,
    step: &str,
    index: usize,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<ArrowWriter<File>> {
    let file = File::create(part(dir, step, index).with_extension("parquet.tmp"))?;
    // Written once and read once, nearby: light compression is the cheaper trade.
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?)).build();
    Ok(ArrowWriter::try_new(file, schema.clone(), Some(props))?)
}

/// Finishes a part and gives it its final name, so a part that exists is whole.
fn close(writer: ArrowWriter<File>, dir: &Path, step: &str, index: usize) -> Result<()> {
    writer.close()?;
    let path = part(dir, step, index);
    let temp = path.with_extension("parquet.tmp");
    File::open(&temp)?.sync_all()?;
    std::fs::rename(temp, &path)?;
    Ok(())
}
