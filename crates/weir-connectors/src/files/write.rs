//! `write_csv`, `write_json`, `write_parquet`: DataFusion's streaming writers into a hidden temporary path beside
//! the destination, made visible by rename only when the whole run commits. A failed run leaves no partial file,
//! and readers never see a half-written one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::config::{CsvOptions, JsonOptions, TableParquetOptions};
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::error::{DataFusionError, Result};
use object_store::ObjectStoreExt;
use reqwest::Url;
use tracing::info;
use weir_engine::{PendingLoad, RowChanges, StepContext};
use weir_spec::{Step, StepKind, WriteMode};

use crate::files::paths;
use crate::object_store::deferred_upload::DeferredUpload;
use crate::object_store::remote::{self, Remote};

/// Writes a load step's input to its temporary location.
pub async fn write(step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let input = match &step.kind {
        StepKind::WriteParquet(_) => super::parquet::with_parquet_types(input)?,
        _ => input,
    };
    let sink = step.kind.file_sink().expect("only file sinks reach here");
    let rendered = cx.path(sink.path)?;
    let remote = if remote::is_remote(&rendered) { Some(Remote::open(&rendered, sink.connection, cx)?) } else { None };
    // A remote destination is written to the run's scratch directory and uploaded when the run commits.
    let dest = match &remote {
        Some(_) => cx
            .scratch_dir
            .join(format!("{}.upload", cx.step))
            .join(rendered.rsplit('/').find(|s| !s.is_empty()).unwrap_or("output")),
        None => PathBuf::from(rendered),
    };
    let parent = dest.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent)
        .map_err(|e| DataFusionError::Execution(format!("cannot create {}: {e}", parent.display())))?;
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    let directory = sink.is_directory();
    // Hidden (leading dot) so that readers of the destination directory skip it.
    let temp = parent.join(format!(".{file_name}.weir-{}.tmp", cx.run_id));
    let schema: SchemaRef = Arc::clone(input.schema().inner());

    // One remote file streams straight into object storage, its upload held open until the run commits; a
    // directory is written locally and uploaded at commit (see `PendingUpload`).
    let held = match &remote {
        Some(remote) if !directory => {
            let held = Arc::new(DeferredUpload::new(remote.store.clone()));
            let url = Url::parse(&format!("weir-held://{}", cx.step))
                .map_err(|e| DataFusionError::Plan(format!("step id as a URL host: {e}")))?;
            input.task_ctx().runtime_env().register_object_store(&url, held.clone());
            Some((held, format!("{url}/{}", remote.prefix)))
        }
        _ => None,
    };
    let options =
        DataFrameWriteOptions::new().with_single_file_output(!directory).with_partition_by(sink.partition_by.to_vec());
    let target = match &held {
        Some((_, target)) => target.clone(),
        None if directory => format!("{}/", temp.display()),
        None => temp.display().to_string(),
    };
    let result = match &step.kind {
        StepKind::WriteCsv(spec) => {
            let csv = CsvOptions::default().with_has_header(spec.header).with_delimiter(spec.delimiter as u8);
            input.write_csv(&target, options, Some(csv)).await
        }
        StepKind::WriteJson(_) => input.write_json(&target, options, Some(JsonOptions::default())).await,
        StepKind::WriteParquet(spec) => {
            let mut parquet = TableParquetOptions::default();
            parquet.global.compression = Some(spec.compression.clone());
            parquet.global.max_row_group_size = spec.row_group_size;
            input.write_parquet(&target, options, Some(parquet)).await
        }
        other => unreachable!("{} is not a file sink", other.name()),
    };
    let batches = match result {
        Ok(b) => b,
        Err(e) => {
            remove(&temp);
            let Some((held, _)) = &held else { return Err(e) };
            held.abort().await;
            return Err(match (held.failure(), &remote) {
                (Some(why), Some(remote)) => DataFusionError::Execution(format!("cannot upload {}: {why}", remote.url)),
                _ => e,
            });
        }
    };
    let rows = paths::rows_written(&batches);
    if let (Some((held, _)), Some(remote)) = (held, &remote) {
        if held.is_empty() {
            // DataFusion wrote nothing for an empty input: a file with the header or schema is held instead.
            write_empty(&step.kind, &temp, &schema)?;
            let bytes = std::fs::read(&temp)?;
            remove(&temp);
            held.put(&remote.prefix, bytes.into()).await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        }
        info!(step = %cx.step, rows, "Wrote {rows} rows to {}, held until the run commits", remote.url);
        return Ok(Box::new(PendingStream { held, url: remote.url.clone(), rows }));
    }
    if !directory && !temp.exists() {
        write_empty(&step.kind, &temp, &schema)?;
    }
    let tag = format!("weir-{}-{}-", cx.run_id, cx.step);
    if let Some(remote) = remote {
        info!(step = %cx.step, rows, "Wrote {rows} rows to a local file to upload to {}", remote.url);
        return Ok(Box::new(PendingUpload { temp, remote, rows, mode: sink.mode, tag }));
    }
    info!(step = %cx.step, rows, "Wrote {rows} rows to a temporary file beside {}", dest.display());
    Ok(Box::new(PendingFiles { temp, dest, rows, mode: sink.mode, directory, tag }))
}

/// DataFusion writes nothing for an empty input; a load of zero rows still leaves a readable file (header or schema).
fn write_empty(kind: &StepKind, path: &Path, schema: &SchemaRef) -> Result<()> {
    let file = std::fs::File::create(path)?;
    match kind {
        StepKind::WriteParquet(_) => {
            datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?.close()?;
        }
        StepKind::WriteCsv(spec) if spec.header => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_delimiter(spec.delimiter as u8)
                .build(file);
            w.write(&datafusion::arrow::record_batch::RecordBatch::new_empty(schema.clone()))?;
        }
        _ => {}
    }
    Ok(())
}

fn remove(path: &Path) {
    let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
}

struct PendingFiles {
    temp: PathBuf,
    dest: PathBuf,
    rows: u64,
    mode: WriteMode,
    directory: bool,
    /// The prefix of the files this run's step appends (see [`move_files`]).
    tag: String,
}

#[async_trait]
impl PendingLoad for PendingFiles {
    fn rows(&self) -> u64 {
        self.rows
    }

    /// A file's rows are all new.
    fn changes(&self) -> Option<RowChanges> {
        Some(RowChanges { inserted: self.rows, ..RowChanges::default() })
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let io =
            |what: &str, e: std::io::Error| DataFusionError::Execution(format!("{what} {}: {e}", self.dest.display()));
        match (self.directory, self.mode) {
            (false, _) => std::fs::rename(&self.temp, &self.dest).map_err(|e| io("cannot replace", e))?,
            // An empty input writes no file into a directory.
            (true, _) if !self.temp.exists() => {
                std::fs::create_dir_all(&self.dest).map_err(|e| io("cannot create", e))?
            }
            (true, WriteMode::Overwrite) => {
                let old = self.temp.with_extension("old");
                if self.dest.exists() {
                    std::fs::rename(&self.dest, &old).map_err(|e| io("cannot move aside", e))?;
                }
                std::fs::rename(&self.temp, &self.dest).map_err(|e| io("cannot replace", e))?;
                remove(&old);
            }
            (true, WriteMode::Append) => {
                move_files(&self.temp, &self.dest, &self.tag).map_err(|e| io("cannot add files to", e))?;
                remove(&self.temp);
            }
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        remove(&self.temp);
    }
}

/// One file streamed into object storage while it was written, made visible at commit (see [`DeferredUpload`]).
struct PendingStream {
    held: Arc<DeferredUpload>,
    url: String,
    rows: u64,
}

#[async_trait]
impl PendingLoad for PendingStream {
    fn rows(&self) -> u64 {
        self.rows
    }

    /// A file's rows are all new.
    fn changes(&self) -> Option<RowChanges> {
        Some(RowChanges { inserted: self.rows, ..RowChanges::default() })
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.held
            .commit()
            .await
            .map_err(|e| DataFusionError::Execution(format!("upload to {} failed: {e}", self.url)))?;
        info!("Uploaded {}", self.url);
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        self.held.abort().await;
    }
}

/// A directory loaded into object storage, written locally and uploaded at commit. Each object appears whole or not at all
/// (one PUT, or a multipart upload completed by its last part); replacing a directory uploads the new objects, then deletes the old ones that remain, so
/// a reader may briefly see both, never a missing or half-written object.
struct PendingUpload {
    temp: PathBuf,
    remote: Remote,
    rows: u64,
    mode: WriteMode,
    /// The prefix of the objects this run's step appends (see [`move_files`]).
    tag: String,
}

#[async_trait]
impl PendingLoad for PendingUpload {
    fn rows(&self) -> u64 {
        self.rows
    }

    /// A file's rows are all new.
    fn changes(&self) -> Option<RowChanges> {
        Some(RowChanges { inserted: self.rows, ..RowChanges::default() })
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let store = &*self.remote.store;
        let failed =
            |e: DataFusionError| DataFusionError::Execution(format!("upload to {} failed: {e}", self.remote.url));
        // Replaced: every object under the prefix when overwriting; when appending, those an earlier attempt of this
        // run's load added.
        let mut old = remote::list_under(store, &self.remote.prefix).await.map_err(failed)?;
        if self.mode == WriteMode::Append {
            old.retain(|key| key.filename().is_some_and(|name| name.starts_with(&self.tag)));
        }
        let files = if self.temp.exists() { paths::under(&self.temp)? } else { Vec::new() };
        let mut written = std::collections::HashSet::new();
        for (local, rel) in &files {
            let rel = match self.mode {
                WriteMode::Append => tagged(rel, &self.tag),
                WriteMode::Overwrite => rel.clone(),
            };
            let key = rel.split('/').fold(self.remote.prefix.clone(), |key, part| key.join(part));
            remote::upload(store, local, &key).await.map_err(failed)?;
            written.insert(key);
        }
        for stale in old.iter().filter(|o| !written.contains(*o)) {
            store.delete(stale).await.map_err(|e| failed(DataFusionError::External(Box::new(e))))?;
        }
        info!(objects = files.len(), "Uploaded {} objects to {}", files.len(), self.remote.url);
        remove(&self.temp);
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        remove(&self.temp);
    }
}

/// Moves every file under `from` to the same relative place under `to`, its name prefixed with `tag` (the run and
/// step). Files under `to` that already carry the tag come from an earlier attempt of the same load (a resumed run
/// cut short after its files moved but before its checkpoint) and are removed first, so appending a run's files
/// again leaves them once. Each file appears whole (rename).
fn move_files(from: &Path, to: &Path, tag: &str) -> std::io::Result<()> {
    if to.exists() {
        remove_tagged(to, tag)?;
    }
    move_tagged(from, to, tag)
}

fn remove_tagged(dir: &Path, tag: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tagged(&entry.path(), tag)?;
        } else if entry.file_name().to_string_lossy().starts_with(tag) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn move_tagged(from: &Path, to: &Path, tag: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            move_tagged(&entry.path(), &to.join(name), tag)?;
        } else {
            std::fs::rename(entry.path(), to.join(format!("{tag}{name}")))?;
        }
    }
    Ok(())
}

/// `a/b/file` → `a/b/{tag}file`.
fn tagged(rel: &str, tag: &str) -> String {
    match rel.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{tag}{name}"),
        None => format!("{tag}{rel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        paths::under(dir).unwrap().into_iter().map(|(_, rel)| rel).collect()
    }

    #[test]
    fn appending_a_runs_files_again_leaves_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let (dest, temp) = (dir.path().join("out"), dir.path().join("temp"));
        std::fs::create_dir_all(dest.join("day=1")).unwrap();
        std::fs::write(dest.join("day=1/earlier-run.csv"), "x").unwrap();
        for attempt in ["a", "b"] {
            std::fs::create_dir_all(temp.join("day=1")).unwrap();
            std::fs::write(temp.join(format!("day=1/{attempt}.csv")), attempt).unwrap();
            move_files(&temp, &dest, "weir-r1-out-").unwrap();
        }
        assert_eq!(
            files(&dest),
            ["day=1/earlier-run.csv", "day=1/weir-r1-out-b.csv"],
            "the second attempt replaced the first"
        );
        assert_eq!(tagged("day=1/x.parquet", "t-"), "day=1/t-x.parquet");
    }
}
