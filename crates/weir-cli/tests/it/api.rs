//! `read_api` against a real HTTP server on 127.0.0.1 (axum, in this test): every pagination style, auth, 429 with
//! Retry-After, 503s, a dropped connection, a schema that changes mid-stream and invalid JSON. Each test asserts
//! the exact records that arrive, so a lost or doubled page shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{Project, serve};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

type Params = Query<HashMap<String, String>>;

/// What the server saw: one line per request (`path?query` and the auth header), and per-route counters.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<String>>>,
    hits: Arc<AtomicUsize>,
}

impl Seen {
    fn log(&self, line: String) {
        self.requests.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Customer `id`, as the API returns it; from id 7 on records carry a `tier` field the first pages lack.
fn customer(id: u64) -> Value {
    let mut c = json!({ "id": id, "name": format!("customer {id}"), "address": { "city": if id.is_multiple_of(2) { "Oslo" } else { "Lyon" } } });
    if id >= 7 {
        c["tier"] = json!("gold");
    }
    c
}

fn customers(from: u64, to: u64) -> Vec<Value> {
    (from..=to).map(customer).collect()
}

/// A pipeline reading the test server with `read_api` settings `api` and writing the records, sorted by id, as CSV
/// with the given columns.
fn pipeline(addr: SocketAddr, connection_options: &str, api: &str, columns: &str) -> String {
    format!(
        "name: api_test\nconnections:\n  svc: {{ kind: http, url: \"http://{addr}\"{connection_options} }}\nsteps:\n  customers:\n    read_api:\n      connection: svc\n{api}\n  sorted:\n    sql: {{ query: \"SELECT {columns} FROM customers ORDER BY id\" }}\n  out:\n    write_csv: {{ input: sorted, path: out/customers.csv }}\n"
    )
}

fn indent(yaml: &str) -> String {
    yaml.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
}

fn expected_ids(p: &Project, ids: std::ops::RangeInclusive<u64>) {
    let got: Vec<String> =
        p.read("out/customers.csv").lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
    let want: Vec<String> = ids.map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every record exactly once");
}

#[test]
fn cursor_pages_with_a_field_first_seen_on_the_last_page() {
    let seen = Seen::default();
    async fn page(State(seen): State<Seen>, headers: HeaderMap, Query(q): Params) -> Response {
        seen.log(format!("cursor={:?} auth={:?}", q.get("cursor"), headers.get("authorization")));
        if headers.get("authorization") != Some(&HeaderValue::from_static("Bearer s3cret-token")) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let (records, next) = match q.get("cursor").map(String::as_str) {
            None => (customers(1, 3), json!("c2")),
            Some("c2") => (customers(4, 6), json!("c3")),
            Some("c3") => (customers(7, 8), Value::Null),
            Some(other) => return (StatusCode::BAD_REQUEST, format!("bad cursor {other}")).into_response(),
        };
        axum::Json(json!({ "data": records, "next_cursor": next })).into_response()
    }
    let addr = serve(Router::new().route("/customers", get(page)).with_state(seen.clone()));
    let p = Project::new().env("API_TOKEN", "s3cret-token");
    let api = indent("url: /customers\nrecords: $.data\npaginate: { cursor: { param: cursor, from: $.next_cursor } }");
    p.file("p.yaml", &pipeline(addr, ", options: { bearer_token: \"${API_TOKEN}\" }", &api, "id, name, tier"));
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(log.contains("Extracted 8 records from 3 pages"), "{log}");
    assert!(!log.contains("s3cret-token"), "the token never shows in the log:\n{log}");
    assert_eq!(
        p.read("out/customers.csv"),
        "id,name,tier\n1,customer 1,\n2,customer 2,\n3,customer 3,\n4,customer 4,\n5,customer 5,\n6,customer 6,\n7,customer 7,gold\n8,customer 8,gold\n"
    );
    let cursors: Vec<String> = seen.lines().iter().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(cursors, ["cursor=None", "cursor=Some(\"c2\")", "cursor=Some(\"c3\")"]);
}

#[test]
fn next_url_link_header_offset_and_page_styles() {
    async fn next_url(Query(q): Params) -> Response {
        let n: u64 = q.get("p").map_or(1, |p| p.parse().unwrap());
        let next = if n < 3 { json!(format!("/next?p={}", n + 1)) } else { Value::Null };
        axum::Json(json!({ "items": customers(n * 3 - 2, n * 3), "links": { "next": next } })).into_response()
    }
    async fn link(Query(q): Params) -> Response {
        let n: u64 = q.get("p").map_or(1, |p| p.parse().unwrap());
        let mut response = axum::Json(customers(n * 4 - 3, n * 4)).into_response();
        let mut value = "<http://ignored.invalid/first>; rel=\"first\"".to_string();
        if n < 2 {
            value.push_str(&format!(", </link?p={}>; rel=\"next\"", n + 1));
        }
        response.headers_mut().insert("link", HeaderValue::from_str(&value).unwrap());
        response
    }
    async fn offset(Query(q): Params) -> Response {
        let (offset, limit): (u64, u64) = (q["offset"].parse().unwrap(), q["limit"].parse().unwrap());
        let last = (offset + limit).min(10);
        axum::Json(json!({ "results": customers(offset + 1, last) })).into_response()
    }
    async fn page(Query(q): Params) -> Response {
        let (page, size): (u64, u64) = (q["page"].parse().unwrap(), q["per_page"].parse().unwrap());
        let first = (page - 1) * size + 1;
        let records = if first > 7 { vec![] } else { customers(first, (first + size - 1).min(7)) };
        axum::Json(json!({ "results": records, "has_more": first + size <= 7 })).into_response()
    }
    let addr = serve(
        Router::new()
            .route("/next", get(next_url))
            .route("/link", get(link))
            .route("/offset", get(offset))
            .route("/page", get(page)),
    );
    let cases = [
        ("url: /next\nrecords: $.items\npaginate: { next_url: $.links.next }", 1..=9),
        ("url: /link\npaginate: link_header", 1..=8),
        ("url: /offset\nrecords: $.results\npaginate: { offset: { limit: 4 } }", 1..=10),
        (
            "url: /page\nrecords: $.results\nhas_more: $.has_more\npaginate: { page: { size_param: per_page, size: 3 } }",
            1..=7,
        ),
    ];
    for (api, ids) in cases {
        let p = Project::new();
        p.file("p.yaml", &pipeline(addr, "", &indent(api), "id, name"));
        p.ok(&["run", "p.yaml"]);
        expected_ids(&p, ids);
    }
}

#[test]
fn retries_503_and_429_honouring_retry_after_then_gets_every_page() {
    let seen = Seen::default();
    async fn flaky(State(seen): State<Seen>, Query(q): Params) -> Response {
        let hit = seen.hits.fetch_add(1, Ordering::SeqCst);
        seen.log(format!("{:?} {:?}", q.get("page"), std::time::Instant::now()));
        match hit {
            0 | 1 => return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response(),
            3 => return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response(),
            _ => {}
        }
        let page: u64 = q["page"].parse().unwrap();
        let records = if page > 3 { vec![] } else { customers(page * 2 - 1, page * 2) };
        axum::Json(records).into_response()
    }
    let addr = serve(Router::new().route("/flaky", get(flaky)).with_state(seen.clone()));
    let p = Project::new();
    let api =
        indent("url: /flaky\npaginate: { page: {} }\nretry: { max_attempts: 4, delay: 50ms, retry_on: [429, 5xx] }");
    p.file("p.yaml", &pipeline(addr, "", &api, "id"));
    let started = std::time::Instant::now();
    let log = p.ok_log(&["run", "p.yaml"]);
    expected_ids(&p, 1..=6);
    assert!(log.contains("HTTP 503 Service Unavailable: try later; retrying"), "{log}");
    assert!(log.contains("HTTP 429 Too Many Requests: slow down; retrying"), "{log}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After: 1 was honoured");
    // Pages 1 (after two 503s), 2 (after one 429), 3, and the empty page 4.
    assert_eq!(seen.hits.load(Ordering::SeqCst), 7);
    assert_eq!(p.retries("p.yaml", "customers"), 3, "the run record counts the retried attempts");
}

#[test]
fn gives_up_after_max_attempts_and_does_not_retry_a_404() {
    async fn down() -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response()
    }
    async fn missing() -> Response {
        (StatusCode::NOT_FOUND, "no such thing").into_response()
    }
    let addr = serve(Router::new().route("/down", get(down)).route("/missing", get(missing)));
    let p = Project::new();
    p.file("p.yaml", &pipeline(addr, "", &indent("url: /down\nretry: { max_attempts: 3, delay: 10ms }"), "id"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(
        err.contains(&format!(
            "GET http://{addr}/down failed after 3 attempts: HTTP 503 Service Unavailable: maintenance"
        )),
        "{err}"
    );
    assert!(err.contains("customers"), "names the step: {err}");
    assert!(!p.path().join("out/customers.csv").exists());

    p.file("p.yaml", &pipeline(addr, "", &indent("url: /missing\nretry: { max_attempts: 3, delay: 10ms }"), "id"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("failed after 1 attempt: HTTP 404 Not Found: no such thing (not retried"), "{err}");

    // A step without a policy of its own follows the pipeline's `settings.retry`.
    let yaml =
        pipeline(addr, "", &indent("url: /down"), "id") + "settings:\n  retry: { max_attempts: 2, delay: 10ms }\n";
    p.file("p.yaml", &yaml);
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("/down failed after 2 attempts"), "{err}");
}

#[test]
fn a_dropped_connection_is_retried_and_nothing_doubles() {
    let seen = Seen::default();
    async fn dropping(State(seen): State<Seen>, Query(q): Params) -> Response {
        let hit = seen.hits.fetch_add(1, Ordering::SeqCst);
        let page: u64 = q["page"].parse().unwrap();
        let records = if page > 2 { vec![] } else { customers(page * 3 - 2, page * 3) };
        let body = serde_json::to_vec(&records).unwrap();
        if hit == 1 {
            // Half the body, then the connection dies.
            let half = body[..body.len() / 2].to_vec();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("connection cut"))];
            let mut response = Body::from_stream(futures::stream::iter(chunks)).into_response();
            response.headers_mut().insert("content-length", HeaderValue::from(body.len()));
            return response;
        }
        axum::Json(records).into_response()
    }
    let addr = serve(Router::new().route("/drop", get(dropping)).with_state(seen.clone()));
    let p = Project::new();
    p.file("p.yaml", &pipeline(addr, "", &indent("url: /drop\npaginate: { page: {} }\nretry: { delay: 10ms }"), "id"));
    let log = p.ok_log(&["run", "p.yaml"]);
    expected_ids(&p, 1..=6);
    assert!(log.contains("connection failed"), "{log}");
}

#[test]
fn invalid_json_fails_naming_the_page_and_loads_nothing() {
    async fn broken(Query(q): Params) -> Response {
        match q["page"].as_str() {
            "1" => axum::Json(customers(1, 2)).into_response(),
            _ => ([("content-type", "application/json")], "[{\"id\": 3, \"name\": ").into_response(),
        }
    }
    let addr = serve(Router::new().route("/broken", get(broken)));
    let p = Project::new();
    p.file("p.yaml", &pipeline(addr, "", &indent("url: /broken\npaginate: { page: {} }"), "id"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains(&format!("page 2 (http://{addr}/broken?page=2): the response is not JSON")), "{err}");
    assert!(err.contains("customers"), "names the step: {err}");
    assert!(!p.path().join("out/customers.csv").exists(), "a failed run writes nothing");
}

#[test]
fn basic_api_key_and_oauth2_with_a_token_refreshed_on_401() {
    let seen = Seen::default();
    async fn basic(headers: HeaderMap) -> Response {
        // "reader:pa ss" in base64.
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Basic cmVhZGVyOnBhIHNz") => axum::Json(customers(1, 2)).into_response(),
            _ => StatusCode::UNAUTHORIZED.into_response(),
        }
    }
    async fn keyed(Query(q): Params) -> Response {
        match q.get("key").map(String::as_str) {
            Some("k-123") => axum::Json(customers(1, 3)).into_response(),
            _ => StatusCode::FORBIDDEN.into_response(),
        }
    }
    async fn token(State(seen): State<Seen>, body: String) -> Response {
        let n = seen.hits.fetch_add(1, Ordering::SeqCst) + 1;
        seen.log(body);
        axum::Json(json!({ "access_token": format!("t{n}"), "expires_in": 3600 })).into_response()
    }
    async fn secure(headers: HeaderMap) -> Response {
        // The first token is revoked early: the server answers 401 and Weir must fetch another.
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer t2") => axum::Json(customers(1, 4)).into_response(),
            _ => StatusCode::UNAUTHORIZED.into_response(),
        }
    }
    let addr = serve(
        Router::new()
            .route("/basic", get(basic))
            .route("/keyed", get(keyed))
            .route("/oauth/token", post(token))
            .route("/secure", get(secure))
            .with_state(seen.clone()),
    );

    let p = Project::new().env("API_USER", "reader").env("API_PASS", "pa ss");
    p.file(
        "p.yaml",
        &pipeline(
            addr,
            ", options: { username: \"${API_USER}\", password: \"${API_PASS}\" }",
            &indent("url: /basic"),
            "id",
        ),
    );
    p.ok(&["run", "p.yaml"]);
    expected_ids(&p, 1..=2);

    let p = Project::new().env("API_KEY", "k-123");
    p.file(
        "p.yaml",
        &pipeline(addr, ", options: { api_key: \"${API_KEY}\", api_key_query: key }", &indent("url: /keyed"), "id"),
    );
    let log = p.ok_log(&["run", "p.yaml"]);
    expected_ids(&p, 1..=3);
    assert!(!log.contains("k-123"), "the key never shows in the log:\n{log}");

    let p = Project::new().env("CLIENT_SECRET", "shh");
    let options = format!(
        ", options: {{ token_url: \"http://{addr}/oauth/token\", client_id: weir, client_secret: \"${{CLIENT_SECRET}}\", scope: read }}"
    );
    p.file("p.yaml", &pipeline(addr, &options, &indent("url: /secure"), "id"));
    p.ok(&["run", "p.yaml"]);
    expected_ids(&p, 1..=4);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2, "one token, then one more after the 401");
    assert_eq!(seen.lines()[0], "grant_type=client_credentials&client_id=weir&client_secret=shh&scope=read");
}

#[test]
fn incremental_sync_sends_the_saved_cursor_and_advances_it_after_the_load() {
    let seen = Seen::default();
    async fn changes(State(seen): State<Seen>, Query(q): Params) -> Response {
        let since = q["updated_since"].replace(' ', "T");
        seen.log(since.clone());
        let all = [(1, "2024-03-01T10:00:00"), (2, "2024-03-02T10:00:00"), (3, "2024-03-03T10:00:00")];
        let newer: Vec<Value> = all
            .iter()
            .filter(|(_, at)| **at > since[..19.min(since.len())])
            .map(|(id, at)| json!({ "id": id, "name": format!("customer {id}"), "updated_at": at }))
            .collect();
        axum::Json(json!({ "data": newer })).into_response()
    }
    let addr = serve(Router::new().route("/changes", get(changes)).with_state(seen.clone()));
    let p = Project::new();
    p.file(
        "p.yaml",
        &format!(
            r#"name: api_incremental
state:
  last_sync: {{ type: timestamp, default: "2024-03-01T12:00:00Z", update: {{ max: customers.updated_at }} }}
connections:
  svc: {{ kind: http, url: "http://{addr}" }}
steps:
  customers:
    read_api:
      connection: svc
      url: /changes
      query: {{ updated_since: "{{{{ state.last_sync }}}}" }}
      records: $.data
      schema: {{ id: bigint, name: text, updated_at: timestamp }}
  out:
    write_csv: {{ input: customers, path: out/changes/, mode: append }}
"#
        ),
    );
    p.ok(&["run", "p.yaml"]);
    let saved = p.ok(&["state", "get", "p.yaml", "last_sync"]);
    assert!(saved.contains("2024-03-03T10:00:00") || saved.contains("2024-03-03 10:00:00"), "{saved}");
    p.ok(&["run", "p.yaml"]);
    let sent = seen.lines();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].starts_with("2024-03-01T12:00:00"), "{sent:?}");
    assert!(sent[1].starts_with("2024-03-03T10:00:00"), "the second run asks only for newer changes: {sent:?}");
    let rows: usize = std::fs::read_dir(p.path().join("out/changes"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap().lines().skip(1).count())
        .sum();
    assert_eq!(rows, 2, "ids 2 and 3 once; the empty second run adds nothing");
}

#[test]
fn validate_reports_a_bad_jsonpath_and_a_wrong_connection_kind() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: bad\nconnections:\n  db: { kind: sqlite, url: \"sqlite://x.db\" }\nsteps:\n  c:\n    read_api: { connection: db, url: /x, records: \"$.data[\" }\n",
    );
    let out = p.fails(&["validate", "p.yaml"], 1);
    assert!(out.contains("read_api needs an `http` connection"), "{out}");
    assert!(out.contains("p.yaml:6:") && out.contains("is not a JSONPath"), "{out}");
}

#[test]
fn example_customer_sync_pages_validates_and_upserts() {
    let seen = Seen::default();
    async fn crm(State(seen): State<Seen>, headers: HeaderMap, Query(q): Params) -> Response {
        seen.log(format!("{:?} {:?}", q.get("updated_since"), q.get("cursor")));
        if headers.get("authorization") != Some(&HeaderValue::from_static("Bearer crm-token")) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let record = |id: u64, email: &str, ltv: f64| json!({ "id": id, "email": email, "phone": "+47 (22) 12-34", "country": " no ", "lifetime_value": ltv, "updated_at": format!("2024-05-0{id}T08:00:00") });
        let (data, next) = match q.get("cursor").map(String::as_str) {
            None => (vec![record(1, " Ada@Example.com", 1500.0), record(2, "not-an-email", 10.0)], json!("p2")),
            _ => (vec![record(3, "grace@example.com", 150.0)], Value::Null),
        };
        axum::Json(json!({ "data": data, "next_cursor": next })).into_response()
    }
    let addr = serve(Router::new().route("/v1/customers", get(crm)).with_state(seen.clone()));
    let p = Project::example("api").env("CRM_API_URL", &format!("http://{addr}/v1")).env("CRM_API_TOKEN", "crm-token");
    p.ok(&["run", "customers_sync.yaml"]);
    let db = rusqlite::Connection::open(p.path().join("warehouse.db")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT id, email, phone, country, customer_segment FROM customers ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "{}|{}|{}|{}|{}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, ["1|ada@example.com|+47221234|NO|vip", "3|grace@example.com|+47221234|NO|regular"]);
    let letters = p.dlq("customers_sync.yaml");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].to_string().contains("email_format"), "{letters:?}");
    assert_eq!(seen.lines()[0], "Some(\"1970-01-01T00:00:00Z\") None");
}

/// `data/customers.csv` with ids 1..=5 and a pipeline pushing it with the given `write_api` settings (the step
/// `push`, `on_error: dead_letter`).
fn push_project(addr: SocketAddr, write: &str) -> Project {
    let p = Project::new();
    p.file("data/customers.csv", "id,name,amount\n1,Ada,10\n2,Grace,20\n3,Linus,-1\n4,Zoë 🦀,40\n5,Ken,50\n");
    p.file(
        "push.yaml",
        &format!(
            "name: push\nconnections:\n  svc: {{ kind: http, url: \"http://{addr}/api\" }}\nsteps:\n  customers:\n    read_csv: {{ path: data/customers.csv }}\n  push:\n    on_error: dead_letter\n    write_api:\n      input: customers\n      connection: svc\n{}\n",
            indent(write)
        ),
    );
    p
}

#[test]
fn write_api_sends_each_record_once_with_stable_idempotency_keys_and_dead_letters_rejects() {
    let seen = Seen::default();
    async fn put(
        State(seen): State<Seen>,
        axum::extract::Path(id): axum::extract::Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let key = headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let status = match id.as_str() {
            "3" => StatusCode::UNPROCESSABLE_ENTITY,
            "2" if !seen.lines().iter().any(|l| l.starts_with("2 ")) => {
                seen.log(format!("2 503 {key}"));
                return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
            }
            _ => StatusCode::OK,
        };
        seen.log(format!("{id} {} {key} {body}", status.as_u16()));
        (status, if status == StatusCode::OK { "" } else { "amount must be positive" }).into_response()
    }
    let addr = serve(Router::new().route("/api/customers/{id}", axum::routing::put(put)).with_state(seen.clone()));
    let p = push_project(
        addr,
        "method: PUT\nurl: /customers/{id}\nidempotency_header: Idempotency-Key\nretry: { delay: 10ms }",
    );
    let log = p.ok_log(&["run", "push.yaml"]);
    assert!(log.contains("Sent 4 of 5 records"), "{log}");

    let lines = seen.lines();
    let ok: Vec<&String> = lines.iter().filter(|l| l.split(' ').nth(1) == Some("200")).collect();
    let mut ids: Vec<&str> = ok.iter().map(|l| l.split(' ').next().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["1", "2", "4", "5"], "each accepted record exactly once: {lines:#?}");
    let key_of =
        |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).unwrap().split(' ').nth(2).unwrap().to_string();
    assert_eq!(key_of("2 503"), key_of("2 200"), "the retry repeats the key");
    assert!(lines.iter().any(|l| l.starts_with("4 200") && l.contains(r#""name":"Zoë 🦀""#)), "{lines:#?}");

    let letters = p.dlq("push.yaml");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters[0].to_string();
    assert!(
        letter.contains("422") && letter.contains("amount must be positive") && letter.contains("Linus"),
        "{letter}"
    );

    // A re-run sends the same records with the same keys, so an idempotent API can drop them.
    let first_keys: Vec<String> = ["1 200", "4 200"].iter().map(|p| key_of(p)).collect();
    p.ok(&["run", "push.yaml"]);
    let again = seen.lines();
    let rerun_keys: Vec<String> = ["1 200", "4 200"]
        .iter()
        .map(|prefix| again.iter().rfind(|l| l.starts_with(prefix)).unwrap().split(' ').nth(2).unwrap().to_string())
        .collect();
    assert_eq!(first_keys, rerun_keys);
}

#[test]
fn write_api_batches_and_a_failed_run_sends_nothing() {
    let seen = Seen::default();
    async fn bulk(State(seen): State<Seen>, axum::Json(body): axum::Json<Value>) -> Response {
        seen.log(body.to_string());
        StatusCode::ACCEPTED.into_response()
    }
    let addr = serve(Router::new().route("/api/bulk", post(bulk)).with_state(seen.clone()));
    let p = push_project(addr, "url: /bulk\nbatch_size: 2\nwrap: records\nconcurrency: 2");
    p.ok(&["run", "push.yaml"]);
    let mut ids: Vec<i64> = Vec::new();
    for line in seen.lines() {
        let body: Value = serde_json::from_str(&line).unwrap();
        let records = body["records"].as_array().unwrap();
        assert!(records.len() <= 2);
        ids.extend(records.iter().map(|r| r["id"].as_i64().unwrap()));
    }
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(seen.lines().len(), 3);

    // Validation over budget: the run fails before commit, and the API hears nothing.
    let before = seen.lines().len();
    p.file(
        "push.yaml",
        &p.read("push.yaml").replace("input: customers\n      connection", "input: checked\n      connection").replace(
            "  push:\n",
            "  checked:\n    validate: { input: customers, rules: { positive: { positive: amount } }, max_invalid: 0 }\n  push:\n",
        ),
    );
    p.fails(&["run", "push.yaml"], 2);
    assert_eq!(seen.lines().len(), before, "nothing sent by a failed run");
}

#[test]
fn enrich_api_looks_up_each_distinct_key_once_and_joins_the_answers() {
    let seen = Seen::default();
    async fn score(State(seen): State<Seen>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
        seen.log(id.clone());
        match id.as_str() {
            "3" => (StatusCode::NOT_FOUND, "unknown customer").into_response(),
            _ => axum::Json(json!({ "result": { "score": id.parse::<i64>().unwrap() * 10, "tier": "gold" } }))
                .into_response(),
        }
    }
    let addr = serve(Router::new().route("/score/{id}", get(score)).with_state(seen.clone()));
    let p = Project::new();
    p.file("data/orders.csv", "order_id,customer_id,amount\n10,1,5\n11,1,6\n12,2,-1\n13,3,8\n14,2,9\n15,1,7\n");
    p.file(
        "p.yaml",
        &format!(
            r#"name: enrich
connections:
  scoring: {{ kind: http, url: "http://{addr}" }}
steps:
  orders:
    read_csv: {{ path: data/orders.csv }}
  valid:
    validate: {{ input: orders, rules: {{ positive: {{ positive: amount }} }} }}
  scored:
    on_error: dead_letter
    enrich_api:
      input: valid
      connection: scoring
      url: /score/{{customer_id}}
      keys: [customer_id]
      records: $.result
      prefix: customer_
      concurrency: 2
  sorted:
    sql: {{ query: "SELECT order_id, customer_id, amount, customer_score, customer_tier FROM scored ORDER BY order_id" }}
  out:
    write_csv: {{ input: sorted, path: out/scored.csv }}
"#
        ),
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(
        p.read("out/scored.csv"),
        "order_id,customer_id,amount,customer_score,customer_tier\n10,1,5,10,gold\n11,1,6,10,gold\n13,3,8,,\n14,2,9,20,gold\n15,1,7,10,gold\n"
    );
    let mut asked = seen.lines();
    asked.sort();
    assert_eq!(asked, ["1", "2", "3"], "one request per distinct key");
    let letters = p.dlq("p.yaml");
    assert_eq!(
        letters.len(),
        2,
        "one invalid order (validated once, not per read) and one failed lookup: {letters:#?}"
    );
    let text = serde_json::to_string(&letters).unwrap();
    assert!(text.contains("404") && text.contains("unknown customer"), "{text}");

    // Explaining the pipeline looks up one key, to learn the answer's columns.
    p.ok(&["explain", "p.yaml"]);
    assert_eq!(seen.lines().len(), 4);
}

#[test]
fn alerts_reach_slack_and_a_webhook_and_an_undeliverable_one_changes_nothing() {
    let seen = Seen::default();
    async fn hook(
        State(seen): State<Seen>,
        axum::extract::Path(which): axum::extract::Path<String>,
        body: String,
    ) -> Response {
        seen.log(format!("{which} {body}"));
        if which == "flaky" && seen.hits.fetch_add(1, Ordering::SeqCst) == 0 {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        StatusCode::OK.into_response()
    }
    let addr = serve(Router::new().route("/hooks/{which}", post(hook)).with_state(seen.clone()));
    // A port nobody listens on: the third alert cannot be delivered.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = Project::new()
        .env("SLACK_WEBHOOK_URL", &format!("http://{addr}/hooks/slack"))
        .env("ALERT_URL", &format!("http://{addr}/hooks/flaky"));
    p.file("data/orders.csv", "id,amount\n1,10\n2,-5\n3,7\n");
    let pipeline = |budget: &str| {
        format!(
            "name: alerting\nalerts:\n  - slack: \"${{SLACK_WEBHOOK_URL}}\"\n  - webhook: \"${{ALERT_URL}}\"\n    on: [failure, dead_letters]\n  - webhook: \"http://{dead}/nobody\"\nsteps:\n  orders:\n    read_csv: {{ path: data/orders.csv }}\n  checked:\n    validate: {{ input: orders, rules: {{ positive: {{ positive: amount }} }}, max_invalid: {budget} }}\n  out:\n    write_csv: {{ input: checked, path: out/orders.csv }}\n"
        )
    };
    // One invalid row within budget: only the dead-letter alert fires.
    p.file("p.yaml", &pipeline("5"));
    let log = p.ok_log(&["run", "p.yaml"]);
    let lines = seen.lines();
    assert_eq!(lines.len(), 2, "the webhook, tried twice (503, then 200): {lines:#?}");
    let body: Value = serde_json::from_str(lines[1].strip_prefix("flaky ").unwrap()).unwrap();
    assert_eq!(body["event"], "dead_letters");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["records_set_aside"], 1);
    assert_eq!(body["records_extracted"], 3);
    assert_eq!(body["records_loaded"], 2);
    assert!(body["run_id"].is_string());
    assert!(log.contains("Sent webhook alert 2"), "{log}");

    // Over budget: the run fails; Slack hears why and where, the webhook too, and the dead URL is only logged.
    p.file("p.yaml", &pipeline("0"));
    let out = p.fails(&["run", "p.yaml"], 2);
    let lines = seen.lines();
    let slack = lines.iter().find(|l| l.starts_with("slack ")).expect("a Slack message");
    let text = serde_json::from_str::<Value>(slack.strip_prefix("slack ").unwrap()).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Pipeline *alerting* failed at step `checked`"), "{text}");
    assert!(text.contains("max_invalid") && text.contains("3 extracted"), "{text}");
    let failure: Value = serde_json::from_str(lines.last().unwrap().strip_prefix("flaky ").unwrap()).unwrap();
    assert_eq!((failure["event"].as_str(), failure["failed_step"].as_str()), (Some("failure"), Some("checked")));
    assert!(out.contains("Could not send webhook alert 3") && out.contains(&format!("http://{dead}/***")), "{out}");
    assert!(!out.contains(&format!("http://{addr}/hooks/slack")), "the Slack URL is a secret: {out}");
}

/// A backfill goes through the same run-and-alert path as `weir run`: its failed run alerts too.
#[test]
fn a_failed_backfill_run_alerts() {
    let seen = Seen::default();
    async fn hook(State(seen): State<Seen>, body: String) -> StatusCode {
        seen.log(body);
        StatusCode::OK
    }
    let addr = serve(Router::new().route("/hook", post(hook)).with_state(seen.clone()));
    let p = Project::new();
    p.file("data/2024-01-01.csv", "id,amount\n1,10\n");
    p.file(
        "p.yaml",
        &format!(
            "name: daily\nvariables:\n  day: {{ type: date, default: '2024-01-01' }}\nalerts:\n  - webhook: http://{addr}/hook\nsteps:\n  orders:\n    read_csv: {{ path: 'data/{{{{ var.day }}}}.csv' }}\n  out:\n    write_csv: {{ input: orders, path: 'out/{{{{ var.day }}}}.csv' }}\n"
        ),
    );
    let out = p.fails(&["backfill", "p.yaml", "--var", "day", "--from", "2024-01-01", "--to", "2024-01-02"], 2);
    assert!(out.contains("backfill stopped at day=2024-01-02"), "{out}");
    let lines = seen.lines();
    assert_eq!(lines.len(), 1, "one alert, for the failed day: {lines:#?}");
    let body: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!((body["event"].as_str(), body["status"].as_str()), (Some("failure"), Some("failed")), "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("2024-01-02"), "{body}");
}

#[test]
fn data_quality_checks_gate_the_load_and_alert() {
    let seen = Seen::default();
    async fn hook(State(seen): State<Seen>, body: String) -> StatusCode {
        seen.log(body);
        StatusCode::OK
    }
    let addr = serve(Router::new().route("/hook", post(hook)).with_state(seen.clone()));
    let p = Project::new().env("ALERT_URL", &format!("http://{addr}/hook"));
    p.file("data/orders.csv", "id,email,amount\n1,a@x.io,10\n2,c@x.io,\n2,b@x.io,7\n");
    let pipeline = |severity: &str| {
        format!(
            "name: quality\nalerts:\n  - webhook: \"${{ALERT_URL}}\"\n    on: [failure, check]\nchecks:\n  \
             ids_unique: {{ step: orders, unique: [id], severity: {severity} }}\n  \
             amounts_present: {{ step: orders, not_null: [amount], severity: warn }}\n  \
             enough: {{ step: orders, min_rows: 2, condition: \"amount > 0\" }}\n\
             steps:\n  orders:\n    read_csv: {{ path: data/orders.csv }}\n  out:\n    write_csv: {{ input: orders, path: out/orders.csv }}\n"
        )
    };
    // A failed `error` check fails the run before anything is loaded; the failure alert names it.
    p.file("p.yaml", &pipeline("error"));
    let out = p.fails(&["run", "p.yaml"], 2);
    assert!(
        out.contains("check `ids_unique` failed: 1 values of (id) appear more than once; nothing was loaded"),
        "{out}"
    );
    assert!(!p.path().join("out/orders.csv").exists());
    let failure: Value = serde_json::from_str(&seen.lines()[0]).unwrap();
    assert_eq!((failure["event"].as_str(), failure["failed_step"].as_str()), (Some("failure"), Some("orders")));

    // As `warn` checks they let the load through, and the check alert lists both.
    p.file("p.yaml", &pipeline("warn"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/orders.csv").lines().count(), 4);
    let alert: Value = serde_json::from_str(&seen.lines()[1]).unwrap();
    assert_eq!(alert["event"], "check");
    assert_eq!(
        alert["failed_checks"],
        json!(["amounts_present: 1 rows with `amount` NULL", "ids_unique: 1 values of (id) appear more than once"])
    );
    // The run record keeps every check's outcome; the checked step ran once (its rows are counted once).
    let runs: Value = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--json"])).unwrap();
    let run = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let detail = p.ok(&["runs", "p.yaml", "--run", &run]);
    assert!(detail.contains("check enough on orders: passed"), "{detail}");
    assert!(detail.contains("check ids_unique on orders: FAILED (warn)"), "{detail}");
    assert_eq!(p.retries("p.yaml", "orders"), 0);
    let steps: Vec<Value> = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--run", &run, "--json"])).unwrap();
    assert_eq!(steps.iter().find(|s| s["step"] == "orders").unwrap()["rows_out"], 3);
}

#[test]
fn an_email_alert_reaches_a_real_smtp_server() {
    let maildir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // aiosmtpd (PyPI; scripts/test.sh installs it) stores what it receives in a Maildir.
    let mut smtpd = std::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("box"))
        .spawn()
        .expect("python3 -m aiosmtpd runs");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "aiosmtpd did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let p = Project::new().env("SMTP_URL", &format!("smtp://127.0.0.1:{port}"));
    p.file(
        "p.yaml",
        "name: mailing\nalerts:\n  - email: { smtp: \"${SMTP_URL}\", from: weir@example.com, to: [oncall@example.com, data@example.com] }\nsteps:\n  orders:\n    read_csv: { path: data/missing.csv }\n  out:\n    write_csv: { input: orders, path: out/o.csv }\n",
    );
    let log = p.fails(&["run", "p.yaml"], 2);
    let _ = smtpd.kill();
    let _ = smtpd.wait();
    assert!(log.contains("Sent email alert 1"), "{log}");
    let new = maildir.path().join("box/new");
    let mails: Vec<String> =
        std::fs::read_dir(&new).unwrap().map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap()).collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(mail.contains("Subject: [weir] mailing failed"), "{mail}");
    assert!(mail.contains("To: oncall@example.com, data@example.com"), "{mail}");
    assert!(mail.contains("failed at step `orders`") && mail.contains("missing.csv"), "{mail}");
}

#[test]
fn explain_reads_one_page_at_most_and_none_when_the_schema_is_declared() {
    let seen = Seen::default();
    async fn pages(State(seen): State<Seen>, Query(q): Params) -> Response {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        let page: u64 = q["page"].parse().unwrap();
        axum::Json(if page > 3 { vec![] } else { customers(page * 2 - 1, page * 2) }).into_response()
    }
    let addr = serve(Router::new().route("/pages", get(pages)).with_state(seen.clone()));
    let p = Project::new();
    p.file("p.yaml", &pipeline(addr, "", &indent("url: /pages\npaginate: { page: {} }"), "id, name"));
    let plan = p.ok(&["explain", "p.yaml"]);
    assert!(plan.contains("customers"), "{plan}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1, "one page to learn the columns");

    p.file(
        "p.yaml",
        &pipeline(
            addr,
            "",
            &indent("url: /pages\npaginate: { page: {} }\nschema: { id: bigint, name: text }"),
            "id, name",
        ),
    );
    p.ok(&["explain", "p.yaml"]);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1, "no request at all with a declared schema");
    p.ok(&["run", "p.yaml"]);
    expected_ids(&p, 1..=6);
}

#[test]
fn offset_and_page_pagination_fetch_pages_ahead_and_drop_those_past_the_end() {
    #[derive(Clone, Default)]
    struct Load {
        going: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }
    async fn slowly(load: &Load) {
        load.requests.fetch_add(1, Ordering::SeqCst);
        let now = load.going.fetch_add(1, Ordering::SeqCst) + 1;
        load.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        load.going.fetch_sub(1, Ordering::SeqCst);
    }
    async fn offset(State(load): State<Load>, Query(q): Params) -> Response {
        slowly(&load).await;
        let (offset, limit): (u64, u64) = (q["offset"].parse().unwrap(), q["limit"].parse().unwrap());
        let records = if offset >= 95 { vec![] } else { customers(offset + 1, (offset + limit).min(95)) };
        axum::Json(json!({ "results": records })).into_response()
    }
    async fn page(State(load): State<Load>, Query(q): Params) -> Response {
        slowly(&load).await;
        let page: u64 = q["page"].parse().unwrap();
        // Pages past the last are an error here: the pages fetched ahead past the end are never looked at.
        if page > 10 {
            return (StatusCode::NOT_FOUND, "no such page").into_response();
        }
        axum::Json(json!({ "results": customers((page - 1) * 10 + 1, (page * 10).min(95)) })).into_response()
    }
    for (route, api) in [
        ("/offset", "url: /offset\nrecords: $.results\nconcurrency: 4\npaginate: { offset: { limit: 10 } }"),
        (
            "/page",
            "url: /page\nrecords: $.results\nconcurrency: 4\npaginate: { page: { size_param: per_page, size: 10 } }",
        ),
    ] {
        let load = Load::default();
        let app = match route {
            "/offset" => Router::new().route(route, get(offset)),
            _ => Router::new().route(route, get(page)),
        };
        let addr = serve(app.with_state(load.clone()));
        let p = Project::new();
        p.file("p.yaml", &pipeline(addr, "", &indent(api), "id, name"));
        p.ok(&["run", "p.yaml"]);
        expected_ids(&p, 1..=95);
        assert!(load.most.load(Ordering::SeqCst) >= 2, "{route}: pages were fetched one at a time");
        assert_eq!(
            load.requests.load(Ordering::SeqCst),
            12,
            "{route}: three rounds of four pages, the last two past the end"
        );
    }
}

#[test]
fn pretty_pages_a_cursor_from_the_last_record_and_a_type_that_changes_named_by_its_page() {
    // Pretty-printed pages (records span lines), the next cursor taken from inside the records.
    async fn pretty(Query(q): Params) -> Response {
        let after: u64 = q.get("after").map_or(0, |a| a.parse().unwrap());
        let records = if after >= 6 { Vec::new() } else { customers(after + 1, after + 3) };
        let body = serde_json::to_string_pretty(&json!({ "meta": { "count": records.len() }, "data": records }));
        ([("content-type", "application/json")], body.unwrap()).into_response()
    }
    // Page 2's `name` is an object where page 1's was text.
    async fn changing(Query(q): Params) -> Response {
        match q["page"].as_str() {
            "1" => axum::Json(json!({ "items": customers(1, 2) })).into_response(),
            _ => axum::Json(json!({ "items": [{ "id": 3, "name": { "first": "Ada" } }] })).into_response(),
        }
    }
    let addr = serve(Router::new().route("/pretty", get(pretty)).route("/changing", get(changing)));
    let p = Project::new();
    let api = indent(
        "url: /pretty\nrecords: $.data\nflatten: true\npaginate: { cursor: { param: after, from: \"$.data[-1].id\" } }",
    );
    p.file("p.yaml", &pipeline(addr, "", &api, "id, name, \\\"address.city\\\" AS city"));
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(log.contains("Extracted 6 records from 3 pages"), "{log}");
    expected_ids(&p, 1..=6);
    assert!(p.read("out/customers.csv").starts_with("id,name,city\n1,customer 1,Lyon\n"));

    let api = indent("url: /changing\nrecords: $.items\npaginate: { page: {} }");
    p.file("q.yaml", &pipeline(addr, "", &api, "id"));
    let err = p.fails(&["run", "q.yaml"], 2);
    assert!(
        err.contains("page 2, record 1: cannot infer the columns: field `name` is an object in one record and a scalar in another"),
        "{err}"
    );
    assert!(err.contains("customers"), "names the step: {err}");
}
