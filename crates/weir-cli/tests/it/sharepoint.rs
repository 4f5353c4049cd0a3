//! File steps on SharePoint through Microsoft Graph. No real Graph can run here, so these tests run against an
//! in-test server that speaks the endpoints Weir uses, the way Graph does: OAuth2 client credentials,
//! `sites/{site}/drives`, path-addressed items (`drives/{id}/root:/a/b.csv:`), paged `children` with
//! `@odata.nextLink`, `content` answered with a redirect to a download URL that honours `Range`, simple PUT
//! uploads with `@microsoft.graph.conflictBehavior`, upload sessions (pre-authorised URL, `Content-Range`
//! chunks in multiples of 320 KiB, the file appearing only when complete), DELETE, and throttling (429 with
//! `Retry-After`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::common::Project;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const TOKEN: &str = "token-1";
const DRIVE: &str = "b!drive-1";

#[derive(Default)]
struct Drive {
    /// Files by path (`in/a.csv`), with their bytes.
    files: BTreeMap<String, Vec<u8>>,
    /// Upload sessions by id: the path, whether to replace, and the bytes so far.
    sessions: BTreeMap<u32, (String, bool, Vec<u8>)>,
    /// Sizes of every upload-session chunk received.
    chunks: Vec<usize>,
    tokens_issued: u32,
    throttled: bool,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Drive>>;

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8().unwrap().into_owned()
}

fn item(path: &str, drive: &Drive) -> Option<Value> {
    let name = path.rsplit('/').next().unwrap_or_default();
    if let Some(bytes) = drive.files.get(path) {
        return Some(json!({ "name": name, "size": bytes.len(), "eTag": format!("\"{}\"", bytes.len()),
            "lastModifiedDateTime": "2026-11-30T10:00:00Z", "file": { "mimeType": "text/csv" } }));
    }
    let folder = format!("{path}/");
    let is_folder = path.is_empty() || drive.files.keys().any(|k| k.starts_with(&folder));
    is_folder.then(|| json!({ "name": name, "size": 0, "folder": { "childCount": 1 } }))
}

/// The items directly under `path`.
fn children(path: &str, drive: &Drive) -> Vec<Value> {
    let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
    let mut names: Vec<String> = drive
        .files
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap().to_string())
        .collect();
    names.dedup();
    names.iter().filter_map(|n| item(&format!("{prefix}{n}"), drive)).collect()
}

fn status(code: StatusCode, body: Value) -> Response {
    (code, axum::Json(body)).into_response()
}

async fn graph(State(drive): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let host = headers.get("host").unwrap().to_str().unwrap().to_string();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let mut drive = drive.lock().unwrap();
    drive.requests.push(format!("{method} {path}"));
    if path == "/token" {
        let form = String::from_utf8_lossy(&body).to_string();
        assert!(form.contains("grant_type=client_credentials") && form.contains("client_secret=s3cret"), "{form}");
        assert!(form.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"), "{form}");
        drive.tokens_issued += 1;
        return status(StatusCode::OK, json!({ "access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600 }));
    }
    if let Some(rest) = path.strip_prefix("/download/") {
        let file = drive.files.get(&decode(rest)).cloned().unwrap();
        let Some(range) = headers.get("range") else { return file.into_response() };
        let (start, end) = range.to_str().unwrap().trim_start_matches("bytes=").split_once('-').unwrap();
        let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse::<usize>().unwrap().min(file.len() - 1));
        let content_range = format!("bytes {start}-{end}/{}", file.len());
        return (StatusCode::PARTIAL_CONTENT, [("content-range", content_range)], file[start..=end].to_vec())
            .into_response();
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        assert!(headers.get("authorization").is_none(), "upload URLs are pre-authorised: no token is sent to them");
        let id: u32 = id.parse().unwrap();
        let range = headers.get("content-range").unwrap().to_str().unwrap().to_string();
        let (span, total) = range.trim_start_matches("bytes ").split_once('/').unwrap();
        let start: usize = span.split_once('-').unwrap().0.parse().unwrap();
        drive.chunks.push(body.len());
        let (target, replace, so_far) = drive.sessions.get_mut(&id).unwrap();
        assert_eq!(start, so_far.len(), "chunks arrive in order");
        so_far.extend_from_slice(&body);
        if so_far.len() < total.parse::<usize>().unwrap() {
            return status(StatusCode::ACCEPTED, json!({ "nextExpectedRanges": [format!("{}-", so_far.len())] }));
        }
        let (target, replace, bytes) = (target.clone(), *replace, std::mem::take(so_far));
        drive.sessions.remove(&id);
        if !replace && drive.files.contains_key(&target) {
            return status(StatusCode::CONFLICT, json!({ "error": { "code": "nameAlreadyExists" } }));
        }
        drive.files.insert(target.clone(), bytes);
        return status(StatusCode::CREATED, item(&target, &drive).unwrap());
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return status(StatusCode::UNAUTHORIZED, json!({ "error": { "code": "InvalidAuthenticationToken" } }));
    }
    if path == "/v1.0/sites/contoso.sharepoint.com:/sites/Finance:/drives" {
        // Graph throttles: the first listing of drives is told to come back in a second.
        if !drive.throttled {
            drive.throttled = true;
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
        }
        return status(
            StatusCode::OK,
            json!({ "value": [{ "id": "b!other", "name": "Site Assets" }, { "id": DRIVE, "name": "Documents" }] }),
        );
    }
    let root = format!("/v1.0/drives/{DRIVE}/root");
    let Some(rest) = path.strip_prefix(&root) else {
        return status(StatusCode::NOT_FOUND, json!({ "error": { "code": "itemNotFound" } }));
    };
    // `root`, `root/children`, `root:/a/b.csv`, `root:/a/b.csv:/content`, …
    let (item_path, action) = match rest {
        "" => (String::new(), ""),
        "/children" => (String::new(), "children"),
        rest => {
            let rest = rest.strip_prefix(":/").unwrap();
            match rest.split_once(":/") {
                Some((p, action)) => (decode(p), action),
                None => (decode(rest), ""),
            }
        }
    };
    let item_path = item_path.trim_end_matches('/').to_string();
    match (method.as_str(), action) {
        ("GET", "") => match item(&item_path, &drive) {
            Some(found) => status(StatusCode::OK, found),
            None => status(StatusCode::NOT_FOUND, json!({ "error": { "code": "itemNotFound" } })),
        },
        ("GET", "children") => {
            // Two items a page, the rest behind @odata.nextLink.
            let skip: usize = query.strip_prefix("$skiptoken=").map_or(0, |s| s.parse().unwrap());
            let all = children(&item_path, &drive);
            let mut page = json!({ "value": all.iter().skip(skip).take(2).collect::<Vec<_>>() });
            if skip + 2 < all.len() {
                page["@odata.nextLink"] = json!(format!("http://{host}{path}?$skiptoken={}", skip + 2));
            }
            status(StatusCode::OK, page)
        }
        ("GET", "content") => match drive.files.contains_key(&item_path) {
            true => (StatusCode::FOUND, [("location", format!("http://{host}/download/{item_path}"))]).into_response(),
            false => status(StatusCode::NOT_FOUND, json!({ "error": { "code": "itemNotFound" } })),
        },
        ("PUT", "content") => {
            assert!(body.len() <= 4 * 1024 * 1024, "simple uploads are at most 4 MiB");
            if query.contains("conflictBehavior=fail") && drive.files.contains_key(&item_path) {
                return status(StatusCode::CONFLICT, json!({ "error": { "code": "nameAlreadyExists" } }));
            }
            drive.files.insert(item_path.clone(), body.to_vec());
            status(StatusCode::CREATED, item(&item_path, &drive).unwrap())
        }
        ("POST", "createUploadSession") => {
            let request: Value = serde_json::from_slice(&body).unwrap();
            let replace = request["item"]["@microsoft.graph.conflictBehavior"] == "replace";
            let id = drive.sessions.len() as u32 + drive.chunks.len() as u32 + 1;
            drive.sessions.insert(id, (item_path, replace, Vec::new()));
            status(
                StatusCode::OK,
                json!({ "uploadUrl": format!("http://{host}/upload/{id}"), "expirationDateTime": "2026-12-01T00:00:00Z" }),
            )
        }
        ("DELETE", "") => match drive.files.remove(&item_path) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => status(StatusCode::NOT_FOUND, json!({ "error": { "code": "itemNotFound" } })),
        },
        _ => status(
            StatusCode::BAD_REQUEST,
            json!({ "error": { "code": "invalidRequest", "message": format!("{method} {path}") } }),
        ),
    }
}

fn start() -> (Shared, std::net::SocketAddr) {
    let drive = Shared::default();
    // Upload-session chunks are larger than axum's default 2 MB body limit.
    let app = axum::Router::new()
        .fallback(graph)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(drive.clone());
    (drive, crate::common::serve(app))
}

fn connection(addr: std::net::SocketAddr) -> String {
    format!(
        "connections:\n  docs:\n    kind: sharepoint\n    options:\n      site: \"contoso.sharepoint.com:/sites/Finance\"\n      \
         client_id: weir\n      client_secret: \"${{SP_SECRET}}\"\n      token_url: \"http://{addr}/token\"\n      graph_url: \"http://{addr}/v1.0\"\n"
    )
}

#[test]
fn csv_files_are_read_from_and_written_to_a_sharepoint_library() {
    let (drive, addr) = start();
    {
        let mut d = drive.lock().unwrap();
        for (name, rows) in [("a", "1,eu\n"), ("b", "2,us\n"), ("c", "3,eu\n")] {
            d.files.insert(format!("Shared Reports/in/{name}.csv"), format!("id,region\n{rows}").into_bytes());
        }
        d.files.insert("Shared Reports/in/notes.txt".into(), b"not a csv".to_vec());
    }
    let p = Project::new().env("SP_SECRET", "s3cret");
    p.file(
        "p.yaml",
        &format!(
            "name: sp\n{}steps:\n  rows:\n    read_csv: {{ path: \"sharepoint://Documents/Shared Reports/in/*.csv\", connection: docs }}\n  \
             summary:\n    sql: {{ query: \"SELECT region, count(*) AS n FROM rows GROUP BY region ORDER BY region\" }}\n  \
             out:\n    write_csv: {{ input: summary, path: \"sharepoint://Documents/Shared Reports/out/summary.csv\", connection: docs }}\n",
            connection(addr)
        ),
    );
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(!log.contains("s3cret"), "the client secret is never printed");
    let d = drive.lock().unwrap();
    assert_eq!(String::from_utf8_lossy(&d.files["Shared Reports/out/summary.csv"]), "region,n\neu,2\nus,1\n");
    // Each step that uses the connection fetches one token and reuses it for all its requests.
    assert_eq!(d.tokens_issued, 2, "one token per step, not per request: {:?}", d.requests);
    assert!(d.throttled, "the throttled request was retried after Retry-After");
    let pages = d.requests.iter().filter(|r| r.contains("/children")).count();
    assert!(pages >= 2, "the folder's listing spans pages: {:?}", d.requests);
}

#[test]
fn large_files_go_through_upload_sessions_and_come_back_in_ranges() {
    let (drive, addr) = start();
    let mut big = String::from("id,payload\n");
    let mut n = 0;
    while big.len() < 12_000_000 {
        big.push_str(&format!("{n},{}\n", "y".repeat(60)));
        n += 1;
    }
    let p = Project::new().env("SP_SECRET", "s3cret");
    p.file("staging/big.csv", &big);
    p.file(
        "push.yaml",
        &format!(
            "name: push\n{}steps:\n  staged:\n    list_files: {{ path: \"staging/*.csv\" }}\n  \
             upload:\n    copy_files: {{ input: staged, to: \"sharepoint://Documents/inbox/\", connection: docs }}\n",
            connection(addr)
        ),
    );
    p.ok(&["run", "push.yaml"]);
    {
        let d = drive.lock().unwrap();
        assert!(d.files["inbox/big.csv"] == big.as_bytes(), "the file arrives byte for byte");
        assert!(d.chunks.len() >= 2, "{:?}", d.chunks);
        let (last, whole) = d.chunks.split_last().unwrap();
        assert!(whole.iter().all(|c| c % (320 * 1024) == 0), "chunks are multiples of 320 KiB: {:?}", d.chunks);
        assert!(*last > 0);
    }
    p.file(
        "count.yaml",
        &format!(
            "name: count\n{}steps:\n  rows:\n    read_csv: {{ path: \"sharepoint://Documents/inbox/big.csv\", connection: docs }}\n  \
             n:\n    sql: {{ query: \"SELECT count(*) AS n, max(id) AS last FROM rows\" }}\n  out:\n    write_csv: {{ input: n, path: out/n.csv }}\n",
            connection(addr)
        ),
    );
    p.ok(&["run", "count.yaml"]);
    assert_eq!(p.read("out/n.csv"), format!("n,last\n{n},{}\n", n - 1));
    let ranged = drive.lock().unwrap().requests.iter().filter(|r| r.starts_with("GET /download/")).count();
    assert!(ranged >= 2, "a 12 MB file is fetched in 8 MiB ranges");
}

#[test]
fn an_unknown_library_names_the_ones_the_site_has() {
    let (_drive, addr) = start();
    let p = Project::new().env("SP_SECRET", "s3cret");
    p.file(
        "p.yaml",
        &format!(
            "name: sp\n{}steps:\n  rows:\n    read_csv: {{ path: \"sharepoint://Reports/x.csv\", connection: docs }}\n  out:\n    write_csv: {{ input: rows, path: out/x.csv }}\n",
            connection(addr)
        ),
    );
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("no library `Reports`") && err.contains("Site Assets, Documents"), "{err}");
}
