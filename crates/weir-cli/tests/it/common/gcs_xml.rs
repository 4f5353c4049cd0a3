//! A stand-in for Google Cloud Storage's XML API, for testing `gs://` writes: object_store's GCS client writes
//! with the XML API (a PUT per object, XML multipart uploads), which no GCS emulator that runs here accepts
//! (fake-gcs-server answers such a PUT with `invalid uploadType`; gcp-storage-emulator's answer lacks the ETag).
//! It keeps objects in memory and speaks only what that client sends: PUT, multipart initiate / part / complete /
//! abort, GET and HEAD, V2 listing and DELETE, on path-style URLs `/{bucket}/{key}`. The README's support table
//! says gs:// writes are tested against this stand-in; reads are tested against fake-gcs-server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;

#[derive(Default)]
struct State {
    /// Objects by `bucket/key`, with their ETags.
    objects: BTreeMap<String, (Bytes, String)>,
    /// Open multipart uploads by id: the object they will become and their parts by number.
    uploads: HashMap<String, (String, BTreeMap<u32, Bytes>)>,
    /// One line per write request: `METHOD kind`, kind being `put`, `initiate`, `part`, `complete`, `abort` or
    /// `delete`.
    writes: Vec<String>,
    next_id: u64,
    /// Whether part uploads are refused (403), as a bucket without write permission would.
    refuse_parts: bool,
}

impl State {
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn etag(&mut self) -> String {
        format!("\"{}\"", self.fresh_id())
    }
}

#[derive(Clone, Default)]
pub struct GcsXml {
    state: Arc<Mutex<State>>,
}

impl GcsXml {
    /// Starts the server on a free port of 127.0.0.1; returns it and its base URL.
    pub fn start() -> (Self, String) {
        let server = Self::default();
        let handler = server.clone();
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, Query(query): Query<HashMap<String, String>>, body: Bytes| {
                let server = handler.clone();
                async move { server.answer(&method, &uri, &query, body) }
            },
        );
        // Parts are several MiB: above axum's default request-body limit.
        let router = router.layer(axum::extract::DefaultBodyLimit::disable());
        let addr: SocketAddr = super::serve(router);
        (server, format!("http://{addr}"))
    }

    /// The object `bucket/key`, if it exists.
    pub fn object(&self, name: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().objects.get(name).map(|(bytes, _)| bytes.to_vec())
    }

    /// Every object's `bucket/key` under `prefix`, in order.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        self.state.lock().unwrap().objects.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// How many multipart uploads are open.
    pub fn open_uploads(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    /// Refuses (or again accepts) part uploads.
    pub fn refuse_parts(&self, refuse: bool) {
        self.state.lock().unwrap().refuse_parts = refuse;
    }

    /// The write requests seen so far, in order (see [`State::writes`]).
    pub fn writes(&self) -> Vec<String> {
        self.state.lock().unwrap().writes.clone()
    }

    fn answer(&self, method: &Method, uri: &Uri, query: &HashMap<String, String>, body: Bytes) -> Response {
        let path =
            percent_encoding::percent_decode_str(uri.path().trim_start_matches('/')).decode_utf8_lossy().into_owned();
        let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
        let name = format!("{bucket}/{key}");
        let mut state = self.state.lock().unwrap();
        let upload_id = query.get("uploadId").cloned();
        match (method.clone(), key.is_empty(), upload_id) {
            (Method::GET, true, _) if query.get("list-type").map(String::as_str) == Some("2") => {
                let prefix = format!("{bucket}/{}", query.get("prefix").map_or("", String::as_str));
                let contents: String = state
                    .objects
                    .iter()
                    .filter(|(name, _)| name.starts_with(&prefix))
                    .map(|(name, (bytes, etag))| {
                        let key = &name[bucket.len() + 1..];
                        format!(
                            "<Contents><Key>{key}</Key><Size>{}</Size><LastModified>2026-11-30T00:00:00.000Z</LastModified><ETag>{etag}</ETag></Contents>",
                            bytes.len()
                        )
                    })
                    .collect();
                xml(format!("<ListBucketResult><Name>{bucket}</Name>{contents}</ListBucketResult>"))
            }
            (Method::GET | Method::HEAD, false, None) => match state.objects.get(&name) {
                Some((bytes, etag)) => {
                    let builder = Response::builder()
                        .header("content-length", bytes.len())
                        .header("etag", etag.as_str())
                        .header("last-modified", "Mon, 30 Nov 2026 00:00:00 GMT");
                    let body = if method == Method::HEAD { Body::empty() } else { Body::from(bytes.clone()) };
                    builder.body(body).unwrap()
                }
                None => status(StatusCode::NOT_FOUND),
            },
            (Method::PUT, false, None) => {
                state.writes.push("PUT put".into());
                let etag = state.etag();
                state.objects.insert(name, (body, etag.clone()));
                with_etag(&etag)
            }
            (Method::PUT, false, Some(id)) => {
                state.writes.push("PUT part".into());
                if state.refuse_parts {
                    return Response::builder()
                        .status(StatusCode::FORBIDDEN)
                        .body(Body::from("<Error><Code>AccessDenied</Code><Message>no storage.objects.create permission</Message></Error>"))
                        .unwrap();
                }
                let number: u32 = query.get("partNumber").and_then(|n| n.parse().ok()).unwrap_or(0);
                let etag = state.etag();
                match state.uploads.get_mut(&id) {
                    Some((_, parts)) => {
                        parts.insert(number, body);
                        with_etag(&etag)
                    }
                    None => status(StatusCode::NOT_FOUND),
                }
            }
            (Method::POST, false, None) if query.contains_key("uploads") => {
                state.writes.push("POST initiate".into());
                let id = format!("upload-{}", state.fresh_id());
                state.uploads.insert(id.clone(), (name, BTreeMap::new()));
                xml(format!(
                    "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
                ))
            }
            (Method::POST, false, Some(id)) => {
                state.writes.push("POST complete".into());
                let Some((target, parts)) = state.uploads.remove(&id) else { return status(StatusCode::NOT_FOUND) };
                // The body lists the parts to join, in order: every one must have been uploaded.
                let listed = String::from_utf8_lossy(&body).matches("<PartNumber>").count();
                if listed != parts.len() {
                    return status(StatusCode::BAD_REQUEST);
                }
                let joined: Vec<u8> = parts.into_values().flat_map(|p| p.to_vec()).collect();
                let etag = state.etag();
                state.objects.insert(target, (Bytes::from(joined), etag.clone()));
                xml(format!(
                    "<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>{etag}</ETag></CompleteMultipartUploadResult>"
                ))
            }
            (Method::DELETE, false, Some(id)) => {
                state.writes.push("DELETE abort".into());
                state.uploads.remove(&id);
                status(StatusCode::NO_CONTENT)
            }
            (Method::DELETE, false, None) => {
                state.writes.push("DELETE delete".into());
                match state.objects.remove(&name) {
                    Some(_) => status(StatusCode::NO_CONTENT),
                    None => status(StatusCode::NOT_FOUND),
                }
            }
            _ => status(StatusCode::NOT_IMPLEMENTED),
        }
    }
}

fn status(code: StatusCode) -> Response {
    Response::builder().status(code).body(Body::empty()).unwrap()
}

fn with_etag(etag: &str) -> Response {
    Response::builder().header("etag", etag).body(Body::empty()).unwrap()
}

fn xml(body: String) -> Response {
    Response::builder().header("content-type", "application/xml").body(Body::from(body)).unwrap()
}
