//! Files in SharePoint document libraries (`sharepoint://Documents/reports/2026.csv`) through Microsoft Graph,
//! as an [`ObjectStore`] so that every file step, `copy_files` and `list_files` work on them as on S3.
//!
//! The URL's host is the library's name (its drive, e.g. `Documents`); the connection says which site
//! (`site`: a Graph site id, or `contoso.sharepoint.com:/sites/Finance`) and how to log in (OAuth2 client
//! credentials: `tenant_id`, `client_id`, `client_secret`; or a `bearer_token`). No crate covers Graph's drive
//! API for object_store, so this is a small client on the same retrying, rate-aware HTTP client as `read_api`:
//! Graph's throttling answers 429 with `Retry-After`, which that client honours.
//!
//! Reads fetch the content in ranges of [`RANGE`] bytes, so memory stays bounded whatever the file's size.
//! Writes of up to [`SIMPLE_UPLOAD`] are one PUT; larger ones go through an upload session, which Graph commits
//! only when the last byte arrives, so a file appears whole or not at all. An upload session needs the total size
//! in every chunk's `Content-Range`, so the parts of a multipart upload are spooled to a local file first.

mod kind;

pub use kind::KIND;

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use weir_engine::Secret;
use weir_spec::Retry;

use crate::http::auth::Auth;
use crate::http::client::{Client, Request};

/// Bytes per ranged GET of a file's content.
const RANGE: u64 = 8 * 1024 * 1024;
/// Files up to this size are uploaded in one PUT: Graph's documented limit for a simple upload.
const SIMPLE_UPLOAD: usize = 4 * 1024 * 1024;
/// Bytes per upload-session PUT: Graph wants multiples of 320 KiB.
const SESSION_CHUNK: usize = 20 * 320 * 1024;
const STORE: &str = "SharePoint";
/// What a path segment may hold unescaped in a Graph path-addressed URL (`root:/a/b.csv:`).
const SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b':').add(b'?').add(b'<').add(b'>');

/// A library of a SharePoint site, as an object store. The library's drive id is looked up on first use.
pub struct SharePointStore {
    graph: Arc<Graph>,
}

struct Graph {
    client: Client,
    /// Upload-session URLs are pre-authorised: Graph wants no `Authorization` header on them.
    anonymous: Client,
    base: Url,
    site: String,
    library: String,
    drive: OnceCell<String>,
}

impl SharePointStore {
    /// `library` is the URL's host; `options` the connection's.
    pub fn new(library: &str, options: &[(&str, Secret)]) -> Result<Self, String> {
        let option = |name: &str| options.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        if let Some((unknown, _)) = options.iter().find(|(k, _)| KIND.option(k).is_none()) {
            let known: Vec<&str> = KIND.options().map(|o| o.name).collect();
            return Err(format!("unknown option `{unknown}` (SharePoint takes {})", known.join(", ")));
        }
        let site =
            option("site").ok_or("needs the option `site` (a Graph site id, or `host.sharepoint.com:/sites/Name`)")?;
        let auth = match (option("bearer_token"), option("client_id"), option("client_secret")) {
            (Some(token), None, None) => Auth::Bearer(token),
            (None, Some(client_id), Some(client_secret)) => {
                let token_url = match (option("token_url"), option("tenant_id")) {
                    (Some(url), _) => url,
                    (None, Some(tenant)) => {
                        Secret::new(format!("https://login.microsoftonline.com/{}/oauth2/v2.0/token", tenant.expose()))
                    }
                    (None, None) => return Err("needs the option `tenant_id` (or `token_url`) to fetch a token".into()),
                };
                let scope =
                    option("scope").unwrap_or_else(|| Secret::new("https://graph.microsoft.com/.default".into()));
                Auth::client_credentials(token_url, client_id, client_secret, Some(scope))
            }
            _ => return Err("give `client_id` and `client_secret` (with `tenant_id`), or a `bearer_token`".into()),
        };
        let base = option("graph_url")
            .map_or_else(|| "https://graph.microsoft.com/v1.0".to_string(), |u| u.expose().to_string());
        let base = Url::parse(&format!("{}/", base.trim_end_matches('/'))).map_err(|e| format!("graph_url: {e}"))?;
        let timeout = Duration::from_secs(120);
        let client = Client::new(auth, timeout, Retry::default(), None).map_err(|e| e.to_string())?;
        let anonymous =
            Client::new(Auth::None, timeout, Retry::default(), None).map_err(|e| e.to_string())?.hiding_urls();
        let graph = Graph {
            client,
            anonymous,
            base,
            site: site.expose().to_string(),
            library: library.to_string(),
            drive: OnceCell::new(),
        };
        Ok(Self { graph: Arc::new(graph) })
    }
}

impl fmt::Display for SharePointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sharepoint://{}", self.graph.library)
    }
}

impl fmt::Debug for SharePointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharePointStore({self})")
    }
}

/// What a Graph call can end in besides success, for the callers that treat it as an answer.
enum Refused {
    NotFound,
    Conflict,
}

impl Graph {
    fn request(method: Method, url: Url) -> Request {
        Request { method, url, headers: Vec::new(), body: None }
    }

    /// Sends a request, answering 404 and 409 as values and every other failure as an error.
    async fn send(
        &self,
        request: &Request,
    ) -> object_store::Result<Result<(reqwest::header::HeaderMap, Bytes), Refused>> {
        match self.client.send_expecting(request, &[StatusCode::NOT_FOUND, StatusCode::CONFLICT]).await {
            Ok(Ok(page)) => Ok(Ok((page.headers, page.body))),
            Ok(Err(StatusCode::NOT_FOUND)) => Ok(Err(Refused::NotFound)),
            Ok(Err(_)) => Ok(Err(Refused::Conflict)),
            Err(e) => Err(generic(e.to_string())),
        }
    }

    async fn json(&self, request: &Request) -> object_store::Result<Result<Value, Refused>> {
        Ok(match self.send(request).await? {
            Ok((_, body)) => {
                Ok(serde_json::from_slice(&body)
                    .map_err(|e| generic(format!("Graph answered with invalid JSON: {e}")))?)
            }
            Err(refused) => Err(refused),
        })
    }

    /// The id of the library's drive, looked up once by name among the site's drives.
    async fn drive(&self) -> object_store::Result<&str> {
        let found = self.drive.get_or_try_init(|| async {
            let url = self.url(&format!("{}/drives", self.site_address()))?;
            let drives = match self.json(&Self::request(Method::GET, url)).await? {
                Ok(drives) => drives,
                Err(_) => return Err(generic(format!("no SharePoint site `{}`", self.site))),
            };
            let drives = drives.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
            let name = |d: &Value| d.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            match drives.iter().find(|d| name(d).eq_ignore_ascii_case(&self.library)) {
                Some(drive) => Ok(drive.get("id").and_then(Value::as_str).unwrap_or_default().to_string()),
                None => Err(generic(format!(
                    "site `{}` has no library `{}`; it has {}",
                    self.site,
                    self.library,
                    drives.iter().map(name).collect::<Vec<_>>().join(", ")
                ))),
            }
        });
        found.await.map(String::as_str)
    }

    /// The site as Graph addresses it: `sites/{id}`, or by path, `sites/{host}:/sites/Name:`.
    fn site_address(&self) -> String {
        match self.site.split_once(":/") {
            Some((host, path)) => {
                let path: Vec<String> = path.split('/').map(|p| utf8_percent_encode(p, SEGMENT).to_string()).collect();
                format!("sites/{}:/{}:", utf8_percent_encode(host, SEGMENT), path.join("/"))
            }
            None => format!("sites/{}", utf8_percent_encode(&self.site, SEGMENT)),
        }
    }

    fn url(&self, relative: &str) -> object_store::Result<Url> {
        self.base.join(relative).map_err(|e| generic(format!("bad Graph URL {relative}: {e}")))
    }

    /// The URL of an item by path, with `suffix` (e.g. `:/content`) after it; the drive's root for an empty path.
    async fn item_url(&self, location: &Path, suffix: &str) -> object_store::Result<Url> {
        let drive = self.drive().await?;
        let path: Vec<String> =
            location.parts().map(|p| utf8_percent_encode(p.as_ref(), SEGMENT).to_string()).collect();
        let relative = match (path.is_empty(), suffix) {
            (true, "") => format!("drives/{drive}/root"),
            (true, suffix) => format!("drives/{drive}/root{}", suffix.trim_start_matches(':')),
            (false, suffix) => format!("drives/{drive}/root:/{}{suffix}", path.join("/")),
        };
        self.url(&relative)
    }

    async fn item(&self, location: &Path) -> object_store::Result<Option<Value>> {
        let url = self.item_url(location, "").await?;
        Ok(self.json(&Self::request(Method::GET, url)).await?.ok())
    }

    /// Every item of a folder, following `@odata.nextLink` across pages.
    async fn children(&self, folder: &Path) -> object_store::Result<Vec<Value>> {
        let mut url = self.item_url(folder, ":/children").await?;
        let mut items = Vec::new();
        loop {
            let page = match self.json(&Self::request(Method::GET, url)).await? {
                Ok(page) => page,
                Err(_) => return Ok(items),
            };
            items.extend(page.get("value").and_then(Value::as_array).cloned().unwrap_or_default());
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => url = Url::parse(next).map_err(|e| generic(format!("bad @odata.nextLink: {e}")))?,
                None => return Ok(items),
            }
        }
    }

    async fn walk(&self, folder: Path, out: &mut Vec<ObjectMeta>) -> object_store::Result<()> {
        for item in self.children(&folder).await? {
            let child = folder.clone().join(item.get("name").and_then(Value::as_str).unwrap_or_default());
            if item.get("folder").is_some() {
                Box::pin(self.walk(child, out)).await?;
            } else {
                out.push(meta(child, &item));
            }
        }
        Ok(())
    }

    /// One range of a file's content. A server that ignores `Range` sends the whole file: the range is cut out.
    async fn content(&self, url: Url, range: Range<u64>) -> object_store::Result<Bytes> {
        let mut request = Self::request(Method::GET, url);
        request.headers.push(("Range".into(), format!("bytes={}-{}", range.start, range.end - 1)));
        match self.send(&request).await? {
            Ok((headers, body)) if headers.contains_key(reqwest::header::CONTENT_RANGE) => Ok(body),
            Ok((_, body)) => Ok(body.slice(range.start as usize..(range.end as usize).min(body.len()))),
            Err(_) => Err(generic("the file disappeared while being read")),
        }
    }

    /// Uploads `size` bytes that `chunk` hands out in order: one PUT when small, else an upload session.
    async fn upload(&self, location: &Path, replace: bool, size: usize, chunk: Source) -> object_store::Result<()> {
        let conflict = if replace { "replace" } else { "fail" };
        let refused = |r: Refused| match r {
            Refused::Conflict => {
                object_store::Error::AlreadyExists { path: location.to_string(), source: "already exists".into() }
            }
            Refused::NotFound => {
                object_store::Error::NotFound { path: location.to_string(), source: "no such folder".into() }
            }
        };
        if size <= SIMPLE_UPLOAD {
            let mut url = self.item_url(location, ":/content").await?;
            url.query_pairs_mut().append_pair("@microsoft.graph.conflictBehavior", conflict);
            let mut request = Self::request(Method::PUT, url);
            request.headers.push(("Content-Type".into(), "application/octet-stream".into()));
            request.body = Some(chunk.read(0..size).await?);
            return self.send(&request).await?.map(|_| ()).map_err(refused);
        }
        let url = self.item_url(location, ":/createUploadSession").await?;
        let mut request = Self::request(Method::POST, url);
        request.body = Some(json!({ "item": { "@microsoft.graph.conflictBehavior": conflict } }).to_string().into());
        let session = self.json(&request).await?.map_err(refused)?;
        let upload_url = session
            .get("uploadUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| generic("the upload session has no uploadUrl"))?;
        let upload_url = Url::parse(upload_url).map_err(|e| generic(format!("bad uploadUrl: {e}")))?;
        for start in (0..size).step_by(SESSION_CHUNK) {
            let end = (start + SESSION_CHUNK).min(size);
            let mut put = Self::request(Method::PUT, upload_url.clone());
            put.headers.push(("Content-Type".into(), "application/octet-stream".into()));
            put.headers.push(("Content-Range".into(), format!("bytes {start}-{}/{size}", end - 1)));
            put.body = Some(chunk.read(start..end).await?);
            if let Err(e) = self.anonymous.send(&put).await {
                // An abandoned session would expire by itself; cancelling frees it now.
                let _ = self.anonymous.send(&Self::request(Method::DELETE, upload_url.clone())).await;
                return Err(generic(e.to_string()));
            }
        }
        Ok(())
    }
}

/// Where an upload's bytes come from.
enum Source {
    Memory(Bytes),
    Spool(Arc<std::fs::File>),
}

impl Source {
    async fn read(&self, range: Range<usize>) -> object_store::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let file = match self {
            Source::Memory(bytes) => return Ok(bytes.slice(range)),
            Source::Spool(file) => file.clone(),
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; range.len()];
            file.read_exact_at(&mut buf, range.start as u64).map(|()| Bytes::from(buf))
        });
        read.await.map_err(|e| generic(e.to_string()))?.map_err(|e| generic(format!("reading the spooled upload: {e}")))
    }
}

fn meta(location: Path, item: &Value) -> ObjectMeta {
    let modified =
        item.get("lastModifiedDateTime").and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    ObjectMeta {
        location,
        last_modified: modified.map(|t| t.with_timezone(&Utc)).unwrap_or_default(),
        size: item.get("size").and_then(Value::as_u64).unwrap_or(0),
        e_tag: item.get("eTag").and_then(Value::as_str).map(str::to_string),
        version: None,
    }
}

fn generic(message: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: message.into().into() }
}

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound { path: location.to_string(), source: "no such file in the library".into() }
}

#[async_trait]
impl ObjectStore for SharePointStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let replace = match opts.mode {
            PutMode::Overwrite => true,
            PutMode::Create => false,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional put".into(),
                    implementer: STORE.into(),
                });
            }
        };
        let bytes: Bytes = payload.into();
        self.graph.upload(location, replace, bytes.len(), Source::Memory(bytes)).await?;
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let spool = spool_file().map_err(|e| generic(format!("cannot spool an upload: {e}")))?;
        Ok(Box::new(Upload { graph: self.graph.clone(), location: location.clone(), spool: Arc::new(spool), next: 0 }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let item = self
            .graph
            .item(location)
            .await?
            .filter(|i| i.get("folder").is_none())
            .ok_or_else(|| not_found(location))?;
        let meta = meta(location.clone(), &item);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(range) => range.as_range(meta.size).map_err(|e| generic(format!("{location}: {e}")))?,
            None => 0..meta.size,
        };
        if options.head || range.is_empty() {
            let payload = GetResultPayload::Stream(stream::empty().boxed());
            return Ok(GetResult { payload, meta, range, attributes: Attributes::new() });
        }
        let url = self.graph.item_url(location, ":/content").await?;
        let graph = self.graph.clone();
        let returned = range.clone();
        let ranges = range.clone().step_by(RANGE as usize).map(move |start| start..(start + RANGE).min(range.end));
        let chunks = stream::iter(ranges).then(move |part| {
            let (graph, url) = (graph.clone(), url.clone());
            async move { graph.content(url, part).await }
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(chunks.boxed()),
            meta,
            range: returned,
            attributes: Attributes::new(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let graph = self.graph.clone();
        locations
            .and_then(move |location| {
                let graph = graph.clone();
                async move {
                    let url = graph.item_url(&location, "").await?;
                    match graph.send(&Graph::request(Method::DELETE, url)).await? {
                        Ok(_) => Ok(location),
                        Err(_) => Err(not_found(&location)),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (graph, root) = (self.graph.clone(), prefix.cloned().unwrap_or_default());
        stream::once(async move {
            let mut found = Vec::new();
            graph.walk(root, &mut found).await?;
            Ok::<_, object_store::Error>(stream::iter(found.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let root = prefix.cloned().unwrap_or_default();
        let mut listed = ListResult { common_prefixes: Vec::new(), objects: Vec::new() };
        for item in self.graph.children(&root).await? {
            let child = root.clone().join(item.get("name").and_then(Value::as_str).unwrap_or_default());
            match item.get("folder").is_some() {
                true => listed.common_prefixes.push(child),
                false => listed.objects.push(meta(child, &item)),
            }
        }
        Ok(listed)
    }

    /// Graph's own copy is asynchronous (a monitor URL to poll); going through Weir keeps it one call.
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let mut upload = Upload {
            graph: self.graph.clone(),
            location: to.clone(),
            spool: Arc::new(spool_file().map_err(|e| generic(format!("cannot spool a copy: {e}")))?),
            next: 0,
        };
        let mut source = self.get_opts(from, GetOptions::default()).await?.into_stream();
        while let Some(chunk) = source.try_next().await? {
            upload.put_part(chunk.into()).await?;
        }
        upload.finish(options.mode == CopyMode::Overwrite).await
    }
}

/// An unnamed temporary file: its name is removed at once, so it is gone when closed, even after a crash.
fn spool_file() -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("weir-sharepoint-{}.spool", uuid::Uuid::now_v7().simple()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// A multipart upload spooled to a local file, each part at its offset, then sent by [`Graph::upload`].
struct Upload {
    graph: Arc<Graph>,
    location: Path,
    spool: Arc<std::fs::File>,
    next: u64,
}

impl Upload {
    async fn finish(&mut self, replace: bool) -> object_store::Result<()> {
        let size = self.next as usize;
        self.graph.upload(&self.location, replace, size, Source::Spool(self.spool.clone())).await
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharePoint upload to {}", self.location)
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        use std::os::unix::fs::FileExt;
        let (spool, offset) = (self.spool.clone(), self.next);
        self.next += data.content_length() as u64;
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || {
                let mut at = offset;
                for part in data.iter() {
                    spool.write_all_at(part, at)?;
                    at += part.len() as u64;
                }
                (&*spool).flush()
            });
            written.await.map_err(|e| generic(e.to_string()))?.map_err(|e| generic(format!("spooling an upload: {e}")))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.finish(true).await?;
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        Ok(())
    }
}

/// SharePoint as file steps use it: the URL's host is the library.
pub struct SharePoint;

impl super::StoreKind for SharePoint {
    fn schemes(&self) -> &'static [&'static str] {
        &["sharepoint"]
    }

    fn build(&self, url: &Url, options: &[(&str, Secret)]) -> Result<Arc<dyn ObjectStore>, String> {
        let library = percent_encoding::percent_decode_str(url.host_str().unwrap_or_default()).decode_utf8_lossy();
        Ok(Arc::new(SharePointStore::new(&library, options)?))
    }
}

/// SharePoint's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Store(&SharePoint));
