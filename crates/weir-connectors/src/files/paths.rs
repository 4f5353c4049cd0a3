//! Finding input files (a file, a glob, or a directory), their compression, and Hive `key=value` partitions.

use std::path::{Path, PathBuf};

use datafusion::error::{DataFusionError, Result};
use globset::{GlobBuilder, GlobMatcher};
use weir_spec::Compression;

/// The file of an embedded database's connection: `url: sqlite://data/app.db` relative to the pipeline file, or
/// `sqlite:///var/lib/app.db` absolute (`scheme` is `sqlite`, `duckdb`).
pub fn database_file(url: &str, scheme: &str, base_dir: &Path) -> PathBuf {
    let path = url.strip_prefix(scheme).and_then(|rest| rest.strip_prefix("://")).unwrap_or(url);
    if path.starts_with('/') { PathBuf::from(path) } else { base_dir.join(path) }
}

/// The rows a DataFusion `write_*` reports in its result batches (one `count` column).
pub fn rows_written(batches: &[datafusion::arrow::array::RecordBatch]) -> u64 {
    use datafusion::arrow::array::{Array, UInt64Array};
    batches
        .iter()
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().map(|a| a.iter().flatten().sum::<u64>()))
        .sum()
}

/// One input file and the partition values its directories name.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub partitions: Vec<(String, String)>,
}

/// Lists the files a `path:` names, sorted so runs read in a stable order. Hidden files (`.x`, `_x`) are skipped in
/// directories, as Spark and DataFusion do, so temp files and markers are never read.
pub fn list(path: &str, hive: bool) -> Result<Vec<InputFile>> {
    let (root, pattern) = split_glob(path);
    let root = PathBuf::from(if root.is_empty() { "." } else { root });
    let mut files = Vec::new();
    if pattern.is_none() && root.is_file() {
        files.push(root.clone());
    } else if root.is_dir() {
        walk(&root, &mut files)?;
        if let Some(pattern) = &pattern {
            let glob = glob_matcher(pattern, path)?;
            files.retain(|f| f.strip_prefix(&root).is_ok_and(|rel| glob.is_match(rel)));
        }
    } else {
        return Err(DataFusionError::Plan(format!("no such file or directory: {}", root.display())));
    }
    if files.is_empty() {
        return Err(DataFusionError::Plan(format!("`{path}` matches no files")));
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|f| {
            let partitions = if hive { partitions_of(&root, &f) } else { Vec::new() };
            InputFile { path: f, partitions }
        })
        .collect())
}

/// Splits `dir/sub/*.csv` (or `s3://bucket/dir/*.csv`) into what comes before the directory where the first glob
/// character stands, and the glob; without a glob, the whole path and `None`.
pub fn split_glob(path: &str) -> (&str, Option<String>) {
    let Some(first) = path.find(['*', '?', '[', '{']) else { return (path, None) };
    let cut = path[..first].rfind('/').map_or(0, |i| i + 1);
    (&path[..cut], Some(path[cut..].to_string()))
}

/// A matcher for the glob after [`split_glob`]'s directory, where `*` stays within one path segment and `**`
/// crosses them. `path` is the whole path, for the error.
pub fn glob_matcher(pattern: &str, path: &str) -> Result<GlobMatcher> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| DataFusionError::Plan(format!("bad glob `{path}`: {e}")))?
        .compile_matcher())
}

/// Every file under `dir` with its path relative to it (`/`-separated), sorted; hidden names skipped as by
/// [`list`].
pub fn under(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(dir).expect("walked from dir").to_string_lossy().replace('\\', "/");
            (f, rel)
        })
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn partitions_of(root: &Path, file: &Path) -> Vec<(String, String)> {
    let Ok(rel) = file.strip_prefix(root) else { return Vec::new() };
    let Some(parent) = rel.parent() else { return Vec::new() };
    parent
        .components()
        .filter_map(|c| c.as_os_str().to_str()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// The compression of a file, from the setting or its extension.
pub fn compression_of(path: &Path, setting: Compression) -> Compression {
    match setting {
        Compression::Auto => match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Compression::Gzip,
            Some("zst") | Some("zstd") => Compression::Zstd,
            _ => Compression::None,
        },
        other => other,
    }
}

/// Opens a file for reading through its decompressor (waiting for its bytes while a download writes it).
pub fn open(path: &Path, compression: Compression) -> Result<Box<dyn std::io::Read + Send>> {
    let file = crate::object_store::download::open(path)
        .map_err(|e| DataFusionError::Execution(format!("cannot open {}: {e}", path.display())))?;
    let file = std::io::BufReader::with_capacity(1 << 20, file);
    Ok(match compression_of(path, compression) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(file)?),
        _ => Box::new(file),
    })
}

/// A batch of `schema` from a file's own `columns` of `rows` rows and the partition values of `file` after them.
pub fn with_partitions(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    mut columns: Vec<datafusion::arrow::array::ArrayRef>,
    rows: usize,
    file: &InputFile,
) -> Result<datafusion::arrow::record_batch::RecordBatch> {
    use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
    for (_, value) in &file.partitions {
        columns.push(std::sync::Arc::new(datafusion::arrow::array::StringArray::from(vec![value.as_str(); rows])));
    }
    if columns.len() != schema.fields().len() {
        return Err(DataFusionError::Execution(format!(
            "{}: not under the same partition directories as the first file",
            file.path.display()
        )));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_globs_and_hive_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("day=2024-01-01")).unwrap();
        std::fs::write(root.join("day=2024-01-01/a.csv"), "x\n1\n").unwrap();
        std::fs::write(root.join("day=2024-01-01/.a.csv.tmp"), "partial").unwrap();
        std::fs::write(root.join("b.json"), "{}").unwrap();
        let all = list(root.to_str().unwrap(), true).unwrap();
        assert_eq!(all.len(), 2);
        let csv = list(&format!("{}/**/*.csv", root.display()), true).unwrap();
        assert_eq!(csv.len(), 1);
        assert_eq!(csv[0].partitions, vec![("day".to_string(), "2024-01-01".to_string())]);
        assert!(
            list(&format!("{}/*.parquet", root.display()), false).unwrap_err().to_string().contains("matches no files")
        );
    }
}
