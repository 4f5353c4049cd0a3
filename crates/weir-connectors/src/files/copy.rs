//! `list_files` and `copy_files`: moving whole files between any two locations (local disk, S3, Azure Blob, GCS),
//! "write Parquet to staging, then upload to S3" and incremental file pickup.
//!
//! Listing is a read with no side effects; copying is a load, done when the run commits, so a run that fails
//! copies nothing. Each file is staged in the run's scratch directory and uploaded whole (one PUT, or a multipart
//! upload that completes at its last part): a destination never holds part of a file.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use tracing::info;
use weir_engine::{PendingLoad, StepContext};
use weir_spec::{CopyFiles, ListFiles};

use crate::object_store::remote::{self, Remote};

/// The table of a `list_files` step. A listing is metadata, a row per file, so it is held in memory.
pub async fn list(spec: &ListFiles, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let location = cx.path(&spec.path)?;
    let since = spec.since.as_ref().map(|s| parse_instant(&cx.render(s)?)).transpose()?;
    let root = Remote::open(&location, spec.connection.as_ref(), cx)?;
    let mut objects = match root.objects().await {
        Ok(objects) => objects,
        // An empty pickup directory is the normal case of an incremental run, not an error.
        Err(DataFusionError::Plan(why)) if why.contains("matches no") => Vec::new(),
        Err(e) => return Err(e),
    };
    // At or after: stores that keep whole seconds give a file landing in the cursor's second the cursor's time, and
    // `>` would miss it for good. The files at the boundary are listed again, and copying one again overwrites it
    // with itself. Compared at the microsecond precision the cursor is stored in.
    objects.retain(|meta| since.is_none_or(|since| meta.last_modified.trunc_subsecs(6) >= since));
    let mut paths = Vec::new();
    let mut names = Vec::new();
    for meta in &objects {
        let rel = remote::relative(&root.prefix, &meta.location);
        if rel.is_empty() {
            // The path named this one file.
            paths.push(root.base.clone());
            names.push(meta.location.filename().unwrap_or_default().to_string());
        } else {
            paths.push(format!("{}/{rel}", root.base.trim_end_matches('/')));
            names.push(rel);
        }
    }
    info!(step = %cx.step, files = objects.len(), "Listed {} files in {location}", objects.len());
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("last_modified", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(paths)),
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from_iter_values(objects.iter().map(|m| m.size as i64))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                objects.iter().map(|m| m.last_modified.timestamp_micros()),
            )),
        ],
    )?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// Stages the list of files to copy; the copying happens at commit.
pub async fn copy(spec: &CopyFiles, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let to = cx.path(&spec.to)?;
    if !remote::is_remote(&to) {
        std::fs::create_dir_all(&to)?;
    }
    let destination = Remote::open(&format!("{}/", to.trim_end_matches('/')), spec.connection.as_ref(), cx)?;
    let mut files = Vec::new();
    let mut stream = input
        .select_columns(&["path", "name"])
        .map_err(|e| {
            DataFusionError::Plan(format!("copy_files reads the `path` and `name` columns of a list_files step: {e}"))
        })?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let text = |i: usize| batch.column(i).as_any().downcast_ref::<StringArray>().cloned();
        let (Some(paths), Some(names)) = (text(0), text(1)) else {
            return Err(DataFusionError::Plan("copy_files: `path` and `name` must be text".into()));
        };
        for i in 0..batch.num_rows() {
            if paths.is_valid(i) && names.is_valid(i) {
                files.push((paths.value(i).to_string(), names.value(i).to_string()));
            }
        }
    }
    Ok(Box::new(PendingCopy { files, destination, spec: spec.clone(), cx: cx.clone() }))
}

struct PendingCopy {
    /// (source path or URL, name under the destination)
    files: Vec<(String, String)>,
    destination: Remote,
    spec: CopyFiles,
    cx: StepContext,
}

#[async_trait]
impl PendingLoad for PendingCopy {
    fn rows(&self) -> u64 {
        self.files.len() as u64
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let staging = self.cx.scratch_dir.join(format!("{}.copy", self.cx.step));
        let mut bytes = 0u64;
        for (i, (path, name)) in self.files.iter().enumerate() {
            let failed = |e: DataFusionError| {
                DataFusionError::Execution(format!("copying {path} to {}: {e}", self.destination.url))
            };
            let source = Remote::open(path, self.spec.from_connection.as_ref(), &self.cx)?;
            let local = staging.join(i.to_string());
            remote::download(&source, &source.prefix, &local).await.map_err(failed)?;
            let key = name.split('/').fold(self.destination.prefix.clone(), |key, part| key.join(part));
            bytes += remote::upload(&*self.destination.store, &local, &key).await.map_err(failed)?;
            let _ = std::fs::remove_file(&local);
        }
        info!(step = %self.cx.step, files = self.files.len(), bytes, "Copied {} files to {}", self.files.len(), self.destination.url);
        Ok(())
    }

    async fn abort(self: Box<Self>) {}
}

/// An instant written as RFC 3339 or as a bare ISO date-time, read as UTC.
fn parse_instant(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text.trim(), f).ok())
        .map(|t| t.and_utc())
        .ok_or_else(|| DataFusionError::Plan(format!("since: `{text}` is not a timestamp (e.g. 2024-05-01T00:00:00Z)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_with_or_without_zone() {
        let expected = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_instant("2024-05-01T10:00:00Z").unwrap(), expected);
        assert_eq!(parse_instant("2024-05-01 10:00:00").unwrap(), expected);
        assert!(parse_instant("yesterday").is_err());
    }
}
