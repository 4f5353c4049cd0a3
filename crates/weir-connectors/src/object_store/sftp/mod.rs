//! Files on SFTP servers (`sftp://user@host:port/absolute/path`), as an [`ObjectStore`] so that every file step,
//! `copy_files` and `list_files` work on them exactly as on S3.
//!
//! object_store has no SFTP backend (and OpenDAL's adapter targets a newer object_store and drives the `ssh`
//! binary), so this is a small one over `russh` and `russh-sftp`'s raw protocol session, which lets reads and
//! writes be pipelined: up to [`IN_FLIGHT`] requests of [`CHUNK`] bytes are outstanding at once, which is what
//! makes SFTP fast over a link with any latency.
//!
//! Objects appear whole: a put or an upload writes `.<name>.weir-<uuid>.tmp` beside the target and renames it
//! into place (`posix-rename@openssh.com`, which replaces atomically; plain SFTP rename refuses an existing
//! target, which is what `PutMode::Create` wants). Keys are absolute paths on the server; directories are made as
//! needed and are not objects themselves.
//!
//! The server's host key is checked, always: against `known_hosts` (default `~/.ssh/known_hosts`) or a pinned
//! `host_key_fingerprint` (`SHA256:…`, as `ssh-keygen -lf` prints it).

mod kind;

pub use kind::KIND;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::sync::OnceCell;

/// Bytes per read or write request: OpenSSH's server answers reads of up to 256 KiB; 64 KiB keeps every packet
/// well inside any server's limit.
const CHUNK: u32 = 64 * 1024;
/// Requests outstanding at once on one file.
const IN_FLIGHT: usize = 16;
const STORE: &str = "SFTP";

/// Where and how to log in, from the URL and the connection's options.
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: Auth,
    pub host_key: HostKeyCheck,
}

pub enum Auth {
    Password(String),
    /// An OpenSSH or PEM private key's text, and its passphrase.
    Key {
        text: String,
        passphrase: Option<String>,
    },
}

#[derive(Clone)]
pub enum HostKeyCheck {
    KnownHosts(PathBuf),
    /// `SHA256:` and the base64 digest, as `ssh-keygen -lf` prints it.
    Fingerprint(String),
}

impl SftpConfig {
    /// Reads `sftp://[user@]host[:port]/…` and the options `user`, `password`, `private_key` (the key's text),
    /// `private_key_path`, `passphrase`, `known_hosts` and `host_key_fingerprint`.
    pub fn new(url: &reqwest::Url, options: &[(&str, &str)]) -> Result<Self, String> {
        let option = |name: &str| options.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        if let Some((unknown, _)) = options.iter().find(|(k, _)| KIND.option(k).is_none()) {
            let known: Vec<&str> = KIND.options().map(|o| o.name).collect();
            return Err(format!("unknown option `{unknown}` (SFTP takes {})", known.join(", ")));
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("an sftp:// URL needs a host")?.to_string();
        let user = match (url.username(), option("user")) {
            ("", Some(user)) => user,
            ("", None) => return Err("no user: write sftp://user@host/… or set the option `user`".into()),
            (user, _) => user.to_string(),
        };
        let auth = match (option("password"), option("private_key"), option("private_key_path")) {
            (Some(password), None, None) => Auth::Password(password),
            (None, Some(text), None) => Auth::Key { text, passphrase: option("passphrase") },
            (None, None, Some(path)) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("cannot read private_key_path {path}: {e}"))?;
                Auth::Key { text, passphrase: option("passphrase") }
            }
            _ => return Err("give exactly one of the options `password`, `private_key` and `private_key_path`".into()),
        };
        let host_key = match (option("host_key_fingerprint"), option("known_hosts")) {
            (Some(fingerprint), None) => HostKeyCheck::Fingerprint(fingerprint),
            (None, Some(path)) => HostKeyCheck::KnownHosts(PathBuf::from(path)),
            (None, None) => {
                let home = std::env::home_dir()
                    .ok_or("no home directory for ~/.ssh/known_hosts: set the option `known_hosts`")?;
                HostKeyCheck::KnownHosts(home.join(".ssh/known_hosts"))
            }
            (Some(_), Some(_)) => {
                return Err("give one of the options `known_hosts` and `host_key_fingerprint`, not both".into());
            }
        };
        Ok(Self { host, port: url.port().unwrap_or(22), user, auth, host_key })
    }
}

/// An SFTP server as an object store. It connects on first use, so building one (when a pipeline is planned)
/// does not touch the network.
pub struct SftpStore {
    server: Arc<Server>,
}

struct Server {
    config: SftpConfig,
    session: OnceCell<Arc<Session>>,
}

impl Server {
    async fn session(&self) -> object_store::Result<Arc<Session>> {
        self.session.get_or_try_init(|| Session::connect(&self.config)).await.cloned().map_err(generic)
    }
}

impl SftpStore {
    pub fn new(config: SftpConfig) -> Self {
        Self { server: Arc::new(Server { config, session: OnceCell::new() }) }
    }
}

impl fmt::Display for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.server.config;
        write!(f, "sftp://{}@{}:{}", config.user, config.host, config.port)
    }
}

impl fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SftpStore({self})")
    }
}

/// A logged-in SSH connection and its SFTP channel.
struct Session {
    sftp: RawSftpSession,
    /// DeferredUpload so the connection stays open as long as the session.
    _ssh: client::Handle<HostKeyVerifier>,
}

impl Session {
    async fn connect(config: &SftpConfig) -> Result<Arc<Self>, String> {
        let target = format!("sftp://{}:{}", config.host, config.port);
        let refusal = Arc::new(Mutex::new(None));
        let verifier = HostKeyVerifier {
            host: config.host.clone(),
            port: config.port,
            check: config.host_key.clone(),
            refusal: refusal.clone(),
        };
        let ssh_config = client::Config { inactivity_timeout: Some(Duration::from_secs(300)), ..Default::default() };
        let connected = client::connect(Arc::new(ssh_config), (config.host.as_str(), config.port), verifier).await;
        let mut ssh = connected.map_err(|e| match refusal.lock().expect("refusal lock").take() {
            Some(reason) => format!("{target}: {reason}"),
            None => format!("cannot connect to {target}: {e}"),
        })?;
        let authenticated = match &config.auth {
            Auth::Password(password) => ssh.authenticate_password(&config.user, password).await,
            Auth::Key { text, passphrase } => {
                let key = russh::keys::decode_secret_key(text, passphrase.as_deref())
                    .map_err(|e| format!("{target}: cannot read the private key: {e}"))?;
                let hash = ssh.best_supported_rsa_hash().await.map_err(|e| format!("{target}: {e}"))?.flatten();
                ssh.authenticate_publickey(&config.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await
            }
        }
        .map_err(|e| format!("{target}: authentication failed: {e}"))?;
        if !authenticated.success() {
            return Err(format!("{target}: the server refused user `{}` with the given credentials", config.user));
        }
        let channel = ssh.channel_open_session().await.map_err(|e| format!("{target}: {e}"))?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| format!("{target}: no SFTP subsystem: {e}"))?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(60);
        sftp.init().await.map_err(|e| format!("{target}: SFTP handshake failed: {e}"))?;
        Ok(Arc::new(Self { sftp, _ssh: ssh }))
    }

    async fn stat(&self, path: &str) -> Result<FileAttributes, SftpError> {
        self.sftp.stat(path).await.map(|a| a.attrs)
    }

    /// `mkdir -p` of a file's directory.
    async fn make_parents(&self, file: &str) -> Result<(), SftpError> {
        let Some((dir, _)) = file.rsplit_once('/') else { return Ok(()) };
        if dir.is_empty() || self.stat(dir).await.is_ok() {
            return Ok(());
        }
        Box::pin(self.make_parents(dir)).await?;
        match self.sftp.mkdir(dir, FileAttributes::empty()).await {
            Ok(_) => Ok(()),
            // Made meanwhile by a concurrent writer.
            Err(_) if self.stat(dir).await.is_ok_and(|a| a.is_dir()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads `range` of an open file as one buffer, however the server splits its answers.
    async fn read_at(&self, handle: &str, range: Range<u64>) -> Result<Bytes, SftpError> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut offset = range.start;
        while offset < range.end {
            let want = (range.end - offset) as u32;
            match self.sftp.read(handle, offset, want).await {
                Ok(data) if data.data.is_empty() => break,
                Ok(data) => {
                    offset += data.data.len() as u64;
                    out.extend_from_slice(&data.data);
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out.into())
    }

    /// Writes `data` at `offset` of an open file, [`IN_FLIGHT`] chunks at a time.
    async fn write_at(&self, handle: &str, offset: u64, data: Bytes) -> Result<(), SftpError> {
        let chunks = (0..data.len()).step_by(CHUNK as usize).map(|start| {
            let end = (start + CHUNK as usize).min(data.len());
            self.sftp.write(handle, offset + start as u64, data[start..end].to_vec())
        });
        stream::iter(chunks).buffer_unordered(IN_FLIGHT).try_for_each(|_| async { Ok(()) }).await
    }

    async fn create(&self, path: &str) -> Result<String, SftpError> {
        self.make_parents(path).await?;
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        self.sftp.open(path, flags, FileAttributes::empty()).await.map(|h| h.handle)
    }

    /// Moves a finished temporary file to its name: replacing what is there, or only when nothing is.
    async fn publish(&self, temp: &str, path: &str, replace: bool) -> Result<(), SftpError> {
        if !replace {
            return self.sftp.rename(temp, path).await.map(|_| ());
        }
        let mut data = Vec::new();
        for part in [temp, path] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        match self.sftp.extended("posix-rename@openssh.com", data).await? {
            russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
            russh_sftp::protocol::Packet::Status(s) => Err(SftpError::Status(s)),
            _ => Err(SftpError::UnexpectedPacket),
        }
    }

    /// Every file under `dir`, depth first; a missing directory has none.
    async fn walk(&self, dir: String, out: &mut Vec<(String, FileAttributes)>) -> Result<(), SftpError> {
        for (name, attrs) in self.read_dir(&dir).await? {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            if attrs.is_dir() {
                Box::pin(self.walk(path, out)).await?;
            } else {
                out.push((path, attrs));
            }
        }
        Ok(())
    }

    async fn read_dir(&self, dir: &str) -> Result<Vec<(String, FileAttributes)>, SftpError> {
        let handle = match self.sftp.opendir(dir).await {
            Ok(handle) => handle.handle,
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        let listed = loop {
            match self.sftp.readdir(handle.as_str()).await {
                Ok(name) => entries.extend(
                    name.files
                        .into_iter()
                        .filter(|f| f.filename != "." && f.filename != "..")
                        .map(|f| (f.filename, f.attrs)),
                ),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.sftp.close(handle).await?;
        listed.map(|()| entries)
    }
}

/// Accepts the server only if its host key is the expected one; the reason for a refusal is left in `refusal`,
/// since russh reports a refused key only as "unknown key".
struct HostKeyVerifier {
    host: String,
    port: u16,
    check: HostKeyCheck,
    refusal: Arc<Mutex<Option<String>>>,
}

impl HostKeyVerifier {
    fn verdict(&self, key: &PublicKey) -> Result<(), String> {
        let (host, port) = (&self.host, self.port);
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match &self.check {
            HostKeyCheck::Fingerprint(expected) if expected.trim() == fingerprint => Ok(()),
            HostKeyCheck::Fingerprint(expected) => Err(format!(
                "the server's host key is {fingerprint}, not the pinned host_key_fingerprint {expected}: refusing to connect"
            )),
            HostKeyCheck::KnownHosts(path) => match russh::keys::check_known_hosts_path(host, port, key, path) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "the server's host key ({} {fingerprint}) is not in {}: check it, then add it (`ssh-keyscan -p {port} {host} >> {}`) or pin it with the option host_key_fingerprint",
                    key.algorithm(),
                    path.display(),
                    path.display()
                )),
                Err(e) => Err(format!("host key check against {} failed: {e}", path.display())),
            },
        }
    }
}

impl client::Handler for HostKeyVerifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refusal.lock().expect("refusal lock") =
                Some("the server offered a host certificate; pin a plain host key".into());
            return Ok(false);
        };
        let verdict = self.verdict(key);
        let accepted = verdict.is_ok();
        *self.refusal.lock().expect("refusal lock") = verdict.err();
        Ok(accepted)
    }
}

/// The server path of a key: keys are absolute paths without their leading `/`.
fn server_path(location: &Path) -> String {
    format!("/{location}")
}

/// A temporary name beside `path`, hidden (leading `.`) so listings and readers of the directory skip it.
fn temp_beside(path: &str) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    format!("{dir}/.{name}.weir-{}.tmp", uuid::Uuid::now_v7().simple())
}

fn meta(location: Path, attrs: &FileAttributes) -> ObjectMeta {
    let last_modified = attrs.mtime.and_then(|t| DateTime::<Utc>::from_timestamp(i64::from(t), 0)).unwrap_or_default();
    ObjectMeta { location, last_modified, size: attrs.size.unwrap_or(0), e_tag: None, version: None }
}

fn generic(message: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: message.into().into() }
}

fn error(path: &str, e: SftpError) -> object_store::Error {
    match e {
        SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile => {
            object_store::Error::NotFound { path: path.to_string(), source: Box::new(SftpError::Status(s)) }
        }
        other => generic(format!("{path}: {other}")),
    }
}

#[async_trait]
impl ObjectStore for SftpStore {
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
        let session = self.server.session().await?;
        let path = server_path(location);
        let temp = temp_beside(&path);
        let handle = session.create(&temp).await.map_err(|e| error(&path, e))?;
        let mut offset = 0;
        let mut written = Ok(());
        for part in payload.iter() {
            written = session.write_at(&handle, offset, part.clone()).await;
            if written.is_err() {
                break;
            }
            offset += part.len() as u64;
        }
        finish(&session, handle, &temp, &path, replace, written).await?;
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let session = self.server.session().await?;
        let path = server_path(location);
        let temp = temp_beside(&path);
        let handle = session.create(&temp).await.map_err(|e| error(&path, e))?;
        Ok(Box::new(Upload { session, handle: Arc::from(handle), temp, path, next: 0 }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let session = self.server.session().await?;
        let path = server_path(location);
        let attrs = session.stat(&path).await.map_err(|e| error(&path, e))?;
        if attrs.is_dir() {
            return Err(object_store::Error::NotFound { path, source: "a directory, not a file".into() });
        }
        let meta = meta(location.clone(), &attrs);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(range) => range.as_range(meta.size).map_err(|e| generic(format!("{path}: {e}")))?,
            None => 0..meta.size,
        };
        if options.head {
            let payload = GetResultPayload::Stream(stream::empty().boxed());
            return Ok(GetResult { payload, meta, range, attributes: Attributes::new() });
        }
        let handle = session
            .sftp
            .open(&path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| error(&path, e))?
            .handle;
        let open = Arc::new(OpenFile { session: session.clone(), handle });
        let returned = range.clone();
        let chunks =
            range.clone().step_by(CHUNK as usize).map(move |start| {
                let open = open.clone();
                let end = (start + u64::from(CHUNK)).min(range.end);
                async move {
                    open.session.read_at(&open.handle, start..end).await.map_err(|e| generic(format!("reading: {e}")))
                }
            });
        let payload = GetResultPayload::Stream(stream::iter(chunks).buffered(IN_FLIGHT).boxed());
        Ok(GetResult { payload, meta, range: returned, attributes: Attributes::new() })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let server = self.server.clone();
        locations
            .and_then(move |location| {
                let server = server.clone();
                async move {
                    let session = server.session().await?;
                    let path = server_path(&location);
                    session.sftp.remove(path.as_str()).await.map_err(|e| error(&path, e))?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let root = prefix.map_or_else(|| "/".to_string(), server_path);
        let server = self.server.clone();
        stream::once(async move {
            let session = server.session().await?;
            let mut files = Vec::new();
            session.walk(root.clone(), &mut files).await.map_err(|e| error(&root, e))?;
            Ok::<_, object_store::Error>(stream::iter(
                files.into_iter().map(|(path, attrs)| Ok(meta(Path::from(path.trim_start_matches('/')), &attrs))),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let session = self.server.session().await?;
        let root = prefix.map_or_else(|| "/".to_string(), server_path);
        let entries = session.read_dir(&root).await.map_err(|e| error(&root, e))?;
        let mut listed = ListResult { common_prefixes: Vec::new(), objects: Vec::new() };
        for (name, attrs) in entries {
            let key = prefix.map_or_else(|| Path::from(name.as_str()), |p| p.clone().join(name.as_str()));
            match attrs.is_dir() {
                true => listed.common_prefixes.push(key),
                false => listed.objects.push(meta(key, &attrs)),
            }
        }
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let session = self.server.session().await?;
        let (source, path) = (server_path(from), server_path(to));
        let size = session.stat(&source).await.map_err(|e| error(&source, e))?.size.unwrap_or(0);
        let input = session
            .sftp
            .open(&source, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| error(&source, e))?
            .handle;
        let temp = temp_beside(&path);
        let output = session.create(&temp).await.map_err(|e| error(&path, e))?;
        let mut copied = Ok(());
        for start in (0..size).step_by(CHUNK as usize * IN_FLIGHT) {
            let end = (start + u64::from(CHUNK) * IN_FLIGHT as u64).min(size);
            copied = match session.read_at(&input, start..end).await {
                Ok(data) => session.write_at(&output, start, data).await,
                Err(e) => Err(e),
            };
            if copied.is_err() {
                break;
            }
        }
        let _ = session.sftp.close(input).await;
        finish(&session, output, &temp, &path, options.mode == CopyMode::Overwrite, copied).await
    }
}

/// Closes a written temporary file and renames it into place; on any failure removes it instead.
async fn finish(
    session: &Session,
    handle: String,
    temp: &str,
    path: &str,
    replace: bool,
    written: Result<(), SftpError>,
) -> object_store::Result<()> {
    let closed = session.sftp.close(handle).await.map(|_| ());
    let published = match written.and(closed) {
        Ok(()) => session.publish(temp, path, replace).await,
        Err(e) => Err(e),
    };
    if let Err(e) = published {
        let _ = session.sftp.remove(temp).await;
        if !replace && session.stat(path).await.is_ok() {
            return Err(object_store::Error::AlreadyExists { path: path.to_string(), source: Box::new(e) });
        }
        return Err(error(path, e));
    }
    Ok(())
}

/// A file open for reading, closed when the last chunk of its stream is dropped.
struct OpenFile {
    session: Arc<Session>,
    handle: String,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let (session, handle) = (self.session.clone(), std::mem::take(&mut self.handle));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { session.sftp.close(handle).await });
        }
    }
}

/// A multipart upload: each part is written at its offset in the temporary file as it comes (parts may be in
/// flight together), and `complete` renames the file into place.
struct Upload {
    session: Arc<Session>,
    handle: Arc<str>,
    temp: String,
    path: String,
    next: u64,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SFTP upload to {}", self.path)
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (session, handle, path) = (self.session.clone(), self.handle.clone(), self.path.clone());
        let offset = self.next;
        self.next += data.content_length() as u64;
        Box::pin(async move {
            let mut at = offset;
            for part in data.iter() {
                session.write_at(&handle, at, part.clone()).await.map_err(|e| error(&path, e))?;
                at += part.len() as u64;
            }
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        finish(&self.session, self.handle.to_string(), &self.temp, &self.path, true, Ok(())).await?;
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let _ = self.session.sftp.close(self.handle.to_string()).await;
        self.session.sftp.remove(self.temp.as_str()).await.map_err(|e| error(&self.temp, e))?;
        Ok(())
    }
}

/// SFTP as file steps use it.
pub struct Sftp;

impl super::StoreKind for Sftp {
    fn schemes(&self) -> &'static [&'static str] {
        &["sftp"]
    }

    fn build(
        &self,
        url: &reqwest::Url,
        options: &[(&str, weir_engine::Secret)],
    ) -> Result<Arc<dyn ObjectStore>, String> {
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.expose())).collect();
        Ok(Arc::new(SftpStore::new(SftpConfig::new(url, &options)?)))
    }
}

/// SFTP's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Store(&Sftp));
