//! Files on object storage (`s3://`, `az://`/`abfs://`, `gs://`, `http(s)://`) through the `object_store` crate,
//! and on SFTP servers (`sftp://`) and SharePoint (`sharepoint://`) through Weir's own object stores.
//!
//! Reads are staged: the objects a path names are streamed into the run's scratch directory (keeping their
//! relative paths, so Hive partitions and globs work unchanged) and read there by the same readers as local
//! files. That keeps one reader per format, with the file-and-line errors and the dead-letter routing of the
//! CSV reader, at the cost of local disk the size of the input. The CSV reader reads a single object while it
//! downloads (`download.rs`), so parsing overlaps the transfer. A single output file streams into the store as
//! it is written, its upload held open until the run commits (`deferred_upload.rs`); a directory is written to scratch and
//! uploaded when the run commits. Either way an object is visible only once complete.
//!
//! Object bodies are fetched through a second client whose requests have no overall time limit: a large object
//! may take longer to arrive than any fixed limit (object_store's default is 30 s per request, and a body cut off
//! is fetched on from where it stopped only within 3 minutes), so a transfer fails instead once no bytes have come
//! for the connection's `timeout`.
//!
//! Credentials come from the step's connection (`kind: s3 | azure | gcs | http`, options named as object_store
//! names them: `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, `account_name`, …), on
//! top of the standard environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`); `kind: sftp | sharepoint` take
//! the options their modules describe.

use std::path::Path as LocalPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use reqwest::Url;
use tokio::io::AsyncWriteExt;
use tracing::info;
use weir_engine::{ResolvedConnection, Secret, StepContext};
use weir_spec::Spanned;

use crate::files::paths;

/// Whether a rendered path is a URL of a kind of store (`s3://`, `sftp://`, ...) rather than a local path.
pub fn is_remote(path: &str) -> bool {
    path.split_once("://").is_some_and(|(scheme, _)| crate::registry::store_for_scheme(scheme).is_some())
}

/// An object store and the location of a path inside it.
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    /// The same store for reading object bodies, without an overall time limit per request (see the module doc).
    pub transfers: Arc<dyn ObjectStore>,
    /// How long a transfer may wait for its next bytes: the connection's `timeout`, 30 s unless set.
    pub idle: Duration,
    /// The URL as written, for messages.
    pub url: String,
    /// The URL up to the directory where a glob starts (all of it without a glob).
    pub base: String,
    /// The key (or key prefix) before the first glob character.
    pub prefix: Path,
    /// The glob after the prefix, if any.
    pub pattern: Option<String>,
}

impl Remote {
    pub fn open(url: &str, connection: Option<&Spanned<String>>, cx: &StepContext) -> Result<Self> {
        let conn = connection.map(|c| cx.connection(&c.value)).transpose()?;
        let (base, pattern) = paths::split_glob(url);
        if !is_remote(url) {
            // A local path, as a store rooted at its directory, so copies treat both ends alike.
            let local = LocalPath::new(if base.is_empty() { "." } else { base });
            let (root, key) = match local.is_file() {
                true => (
                    local.parent().unwrap_or(LocalPath::new(".")),
                    local.file_name().map(|n| n.to_string_lossy().into_owned()),
                ),
                false => (local, None),
            };
            if !root.is_dir() {
                return Err(DataFusionError::Plan(format!("no such file or directory: {}", root.display())));
            }
            let store: Arc<dyn ObjectStore> = Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| DataFusionError::Plan(format!("{url}: {e}")))?,
            );
            let prefix = key.map_or_else(Path::default, Path::from);
            let (transfers, idle) = (store.clone(), DEFAULT_IDLE);
            return Ok(Self { store, transfers, idle, url: url.to_string(), base: base.to_string(), prefix, pattern });
        }
        let parsed = Url::parse(base).map_err(|e| DataFusionError::Plan(format!("`{url}` is not a URL: {e}")))?;
        // Before the stores, which would reject a bad `timeout` in object_store's words.
        let idle = idle_limit(conn.as_ref())?;
        let store = build_store(&parsed, conn.as_ref(), Limit::PerRequest)?;
        let transfers = match parsed.scheme() {
            // Weir's own stores read a body in pieces, each request limited on its own: one session serves both.
            "sftp" | "sharepoint" => store.clone(),
            _ => build_store(&parsed, conn.as_ref(), Limit::Idle)?,
        };
        // The URL's path is percent-encoded (`Shared%20Reports`); keys are not.
        let key = parsed.path().trim_matches('/');
        let prefix = Path::from_url_path(key).map_err(|e| DataFusionError::Plan(format!("`{url}`: {e}")))?;
        Ok(Self { store, transfers, idle, url: url.to_string(), base: base.to_string(), prefix, pattern })
    }

    /// The objects the path names: the object itself, or everything under the prefix that matches the glob.
    /// Names starting with `.` or `_` are skipped, as they are in local directories.
    pub async fn objects(&self) -> Result<Vec<ObjectMeta>> {
        if self.pattern.is_none() && !self.prefix.as_ref().is_empty() {
            match self.store.head(&self.prefix).await {
                Ok(meta) => return Ok(vec![meta]),
                // Not an object: perhaps a directory of them, listed below.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(external(e)),
            }
        }
        let glob = self.pattern.as_deref().map(|p| paths::glob_matcher(p, &self.url)).transpose()?;
        let listed: Vec<_> = self.store.list(Some(&self.prefix)).try_collect().await.map_err(external)?;
        let mut found: Vec<ObjectMeta> = listed
            .into_iter()
            .filter(|meta| {
                let rel = relative(&self.prefix, &meta.location);
                let hidden = rel.split('/').any(|part| part.starts_with('.') || part.starts_with('_'));
                !hidden && glob.as_ref().is_none_or(|g| g.is_match(&rel))
            })
            .collect();
        if found.is_empty() {
            return Err(DataFusionError::Plan(format!("`{}` matches no objects", self.url)));
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }
}

/// A local path to read for `path`: itself when local, or a scratch copy of the objects it names. With
/// [`Arrival::Streamed`] a single object is returned while it downloads (see `download.rs`).
pub async fn localize(
    path: String,
    connection: Option<&Spanned<String>>,
    cx: &StepContext,
    arrival: Arrival,
) -> Result<String> {
    if !is_remote(&path) {
        return Ok(path);
    }
    let remote = Remote::open(&path, connection, cx)?;
    let objects = remote.objects().await?;
    let root = cx.scratch_dir.join(format!("{}.download", cx.step));
    let local_of = |object: &Path| match relative(&remote.prefix, object) {
        rel if rel.is_empty() => root.join(object.filename().unwrap_or("object")),
        rel => root.join(rel),
    };
    if let (Arrival::Streamed, [only]) = (arrival, objects.as_slice()) {
        let local = local_of(&only.location);
        super::download::begin(
            remote.transfers.clone(),
            only.location.clone(),
            only.size,
            &local,
            remote.url.clone(),
            remote.idle,
        )?;
        info!(step = %cx.step, bytes = only.size, "Reading {path} as it downloads");
    } else {
        let mut bytes = 0u64;
        for object in &objects {
            bytes += download(&remote, &object.location, &local_of(&object.location)).await.map_err(|e| {
                DataFusionError::Execution(format!("cannot download {} from {}: {e}", object.location, remote.url))
            })?;
        }
        info!(step = %cx.step, objects = objects.len(), bytes, "Downloaded {} objects from {path}", objects.len());
    }
    let objects: Vec<Path> = objects.into_iter().map(|meta| meta.location).collect();
    let local = match (&remote.pattern, objects.as_slice()) {
        (None, [only]) if relative(&remote.prefix, only).is_empty() => root.join(only.filename().unwrap_or("object")),
        (Some(pattern), _) => root.join(pattern),
        (None, _) => root.clone(),
    };
    Ok(local.to_string_lossy().into_owned())
}

/// Whether a reader needs the whole download before it starts, or reads a single object while it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Whole,
    Streamed,
}

/// Copies an object of `remote`'s store to a local file as one streamed GET. Parallel ranged GETs are not used:
/// some S3-compatible servers (moto) read the whole object for every range, which made the S3 benchmark 4x slower.
pub async fn download(remote: &Remote, object: &Path, local: &LocalPath) -> Result<u64> {
    if let Some(parent) = local.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::File::create(local).await?;
    let mut body = remote.transfers.get(object).await.map_err(external)?.into_stream();
    let mut bytes = 0u64;
    while let Some(piece) = next_piece(&mut body, remote.idle).await {
        let piece = piece.map_err(|e| DataFusionError::External(e.into()))?;
        bytes += piece.len() as u64;
        file.write_all(&piece).await?;
    }
    file.flush().await?;
    Ok(bytes)
}

/// The next piece of an object's body, or an error once none has come for `idle`.
pub async fn next_piece(
    body: &mut BoxStream<'static, object_store::Result<Bytes>>,
    idle: Duration,
) -> Option<Result<Bytes, String>> {
    match tokio::time::timeout(idle, body.next()).await {
        Ok(piece) => piece.map(|p| p.map_err(|e| with_causes(&e))),
        Err(_) => Some(Err(format!("no data for {}", humantime::format_duration(idle)))),
    }
}

/// object_store's request timeout, which a connection's `timeout` replaces.
const DEFAULT_IDLE: Duration = Duration::from_secs(30);

/// A request limit long enough never to cut a transfer short; [`next_piece`] notices a stalled one.
const NO_LIMIT: &str = "7d";

/// The store that holds `url` (its bucket or container, rooted at `/`), for libraries that address the keys
/// themselves (delta-rs), with the connection's endpoint, credentials and per-request `timeout`.
pub fn store_of(url: &Url, connection: Option<&Spanned<String>>, cx: &StepContext) -> Result<Arc<dyn ObjectStore>> {
    let conn = connection.map(|c| cx.connection(&c.value)).transpose()?;
    build_store(url, conn.as_ref(), Limit::PerRequest)
}

/// The store of `url`'s bucket through an already resolved connection (`None`: the environment's credentials),
/// for libraries that open stores after the step's context is gone.
pub fn store_for(url: &Url, conn: Option<&ResolvedConnection>) -> Result<Arc<dyn ObjectStore>> {
    build_store(url, conn, Limit::PerRequest)
}

/// How a store's requests are limited in time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// Each request by the connection's `timeout` (object_store's default 30 s): for everything but object bodies.
    PerRequest,
    /// Only by the wait for the next bytes, which the reader enforces with [`next_piece`].
    Idle,
}

/// The connection's `timeout`, the longest wait for a transfer's next bytes.
fn idle_limit(conn: Option<&ResolvedConnection>) -> Result<Duration> {
    let Some((name, value)) =
        conn.and_then(|c| c.options.iter().find(|(k, _)| k.eq_ignore_ascii_case("timeout")).map(|(_, v)| (&c.name, v)))
    else {
        return Ok(DEFAULT_IDLE);
    };
    humantime::parse_duration(value.expose()).map_err(|e| {
        DataFusionError::Plan(format!("connection `{name}`: `timeout` is not a duration such as 30s or 5m: {e}"))
    })
}

/// Uploads a local file to `key`: a file of up to one part in a single PUT, a larger one in parts. Either way the
/// object appears whole (the last part completes the upload) or not at all. Returns the bytes sent.
pub async fn upload(store: &dyn ObjectStore, local: &LocalPath, key: &Path) -> Result<u64> {
    use tokio::io::AsyncReadExt;
    const PART: usize = 8 * 1024 * 1024;
    let size = tokio::fs::metadata(local).await?.len();
    if size <= PART as u64 {
        let bytes = tokio::fs::read(local).await?;
        store.put(key, PutPayload::from(bytes)).await.map_err(external)?;
        return Ok(size);
    }
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(key).await.map_err(external)?, PART);
    let mut file = tokio::fs::File::open(local).await?;
    let mut buf = vec![0u8; PART];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e.into());
            }
        };
        bytes += n as u64;
        // At most four parts in flight bounds the memory of a large upload.
        if let Err(e) = upload.wait_for_capacity(4).await {
            return Err(external(e));
        }
        upload.write(&buf[..n]);
    }
    upload.finish().await.map_err(external)?;
    Ok(bytes)
}

/// Every object under `prefix`, for replacing a directory.
pub async fn list_under(store: &dyn ObjectStore, prefix: &Path) -> Result<Vec<Path>> {
    let listed: Vec<_> = store.list(Some(prefix)).try_collect().await.map_err(external)?;
    Ok(listed.into_iter().map(|m| m.location).collect())
}

/// `location` relative to `prefix`, `/`-separated; empty when they are the same object.
pub fn relative(prefix: &Path, location: &Path) -> String {
    let prefix = prefix.as_ref();
    let location = location.as_ref();
    if prefix.is_empty() {
        return location.to_string();
    }
    location.strip_prefix(prefix).map(|r| r.trim_start_matches('/').to_string()).unwrap_or_default()
}

fn build_store(url: &Url, conn: Option<&ResolvedConnection>, limit: Limit) -> Result<Arc<dyn ObjectStore>> {
    let mut options: Vec<(&str, Secret)> =
        conn.map(|c| c.options.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()).unwrap_or_default();
    if limit == Limit::Idle {
        options.retain(|(k, _)| !k.eq_ignore_ascii_case("timeout"));
        options.insert(0, ("timeout", Secret::new(NO_LIMIT.to_string())));
    }
    let name = conn.map_or_else(|| url.scheme().to_string(), |c| format!("connection `{}`", c.name));
    let kind = crate::registry::store_for_scheme(url.scheme())
        .ok_or_else(|| DataFusionError::Plan(format!("no object store for `{}://` URLs", url.scheme())))?;
    kind.build(url, &options).map_err(|e| DataFusionError::Plan(format!("{name}: {e}")))
}

fn external(e: object_store::Error) -> DataFusionError {
    DataFusionError::External(with_causes(&e).into())
}

/// An error's message followed by its causes, which object_store's own message leaves out (a certificate the
/// trusted roots do not vouch for, a refused connection).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_at_their_directory() {
        assert_eq!(paths::split_glob("s3://b/in/*.csv"), ("s3://b/in/", Some("*.csv".to_string())));
        assert_eq!(paths::split_glob("s3://b/in/year=*/x.csv"), ("s3://b/in/", Some("year=*/x.csv".to_string())));
        assert_eq!(paths::split_glob("s3://b/in/a.csv"), ("s3://b/in/a.csv", None));
        assert!(is_remote("az://c/x") && is_remote("https://h/x.csv") && !is_remote("/tmp/x.csv"));
    }
}
