//! Who may call `weir serve`: every API route against no token, a wrong token and each role; cross-site requests;
//! dashboard sessions and their limits; replayed, rate-limited and separately served webhooks; TLS with a renewed
//! certificate; and that no token is ever written anywhere.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::common::server::{Server, free_port};
use crate::common::test_certificates;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

/// `p`: two of its four rows fail validation (dead letters), and it keeps a state value.
fn project(dir: &Path) {
    write(dir, "data/in.csv", "id,amount\n1,10\n2,-5\n3,7\n4,-1\n");
    write(
        dir,
        "p.yaml",
        "name: p\nstate:\n  last_run: { type: timestamp, default: \"1970-01-01T00:00:00Z\", update: run_started_at }\n\
         steps:\n  rows:\n    read_csv: { path: data/in.csv }\n  checked:\n    validate: { input: rows, rules: { positive: { positive: amount } } }\n  \
         out:\n    write_csv: { input: checked, path: out/p.csv }\n",
    );
}

/// One token per role, by name.
struct Tokens {
    metrics: String,
    read: String,
    operate: String,
    admin: String,
}

impl Tokens {
    fn new() -> Self {
        let make = || {
            let out = Command::new(env!("CARGO_BIN_EXE_weir")).args(["token", "t", "--role", "read"]).output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        Self { metrics: make(), read: make(), operate: make(), admin: make() }
    }

    fn env(&self) -> String {
        format!(
            "scraper:metrics:{},reader:read:{},operator:operate:{},boss:admin:{}",
            self.metrics, self.read, self.operate, self.admin
        )
    }

    fn by_role(&self) -> [(&'static str, &str, &str); 4] {
        [
            ("metrics", "scraper", &self.metrics),
            ("read", "reader", &self.read),
            ("operate", "operator", &self.operate),
            ("admin", "boss", &self.admin),
        ]
    }

    fn secrets(&self) -> [&str; 4] {
        [&self.metrics, &self.read, &self.operate, &self.admin]
    }
}

const ROLES: [&str; 4] = ["metrics", "read", "operate", "admin"];

/// A client whose requests come from `address` (any of 127.0.0.0/8), so failures counted per address stay apart.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn call(client: &reqwest::Client, base: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
    let mut request = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if method != "GET" {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_its_document_says_and_no_token_is_ever_written() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let tokens = Tokens::new();
    let server =
        Server::launch(dir.path(), &[], &[("WEIR_API_TOKENS", &tokens.env())], "http", client_from([127, 0, 0, 1]))
            .await
            .with_token(&tokens.operate);
    let (status, first) = server.post("/api/pipelines/p/runs?wait=true", &[], "").await;
    assert_eq!(status, 200, "{first}");
    let run_id = first["run_id"].as_str().unwrap().to_string();

    // Each guarded operation of the document, with a request its route answers (the allowed status), and the
    // least role the document says it needs.
    let requests: Vec<(&str, String, &str, u16)> = vec![
        ("GET", "/api/pipelines".into(), "", 200),
        ("POST", "/api/pipelines/p/runs?wait=true".into(), "", 200),
        ("GET", "/api/pipelines/p/state".into(), "", 200),
        ("PUT", "/api/pipelines/p/state/last_run".into(), r#"{"value": "2026-01-01T00:00:00Z"}"#, 200),
        ("DELETE", "/api/pipelines/p/state/last_run".into(), "", 200),
        ("GET", "/api/runs".into(), "", 200),
        ("GET", "/api/queue".into(), "", 200),
        ("GET", format!("/api/runs/{run_id}"), "", 200),
        ("POST", format!("/api/runs/{run_id}/cancel"), "", 409),
        ("GET", "/api/dead-letters?pipeline=p".into(), "", 200),
        ("POST", "/api/dead-letters/replay?pipeline=p&step=checked".into(), "", 200),
        ("DELETE", "/api/dead-letters?pipeline=p&step=checked".into(), "", 200),
        ("GET", "/api/audit".into(), "", 200),
        ("GET", "/api/session".into(), "", 200),
        ("GET", "/api/openapi.json".into(), "", 200),
    ];
    let document = server.get("/api/openapi.json").await;
    let mut documented = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if let Some(role) = operation["x-weir-role"].as_str() {
                documented.push((method.to_uppercase(), path.clone(), role.to_string()));
            }
        }
    }
    assert_eq!(documented.len(), requests.len(), "a request for every guarded operation: {documented:?}");

    let base = server.base.clone();
    for (i, (method, path, body, allowed)) in requests.iter().enumerate() {
        let template = path.split('?').next().unwrap().replace(&run_id, "{id}").replace("/p/", "/{name}/");
        let template = template.replace("/state/last_run", "/state/{key}");
        let needs = documented
            .iter()
            .find(|(m, p, _)| m == method && *p == template)
            .map(|(_, _, role)| role.as_str())
            .unwrap_or_else(|| panic!("{method} {template} is not in the document"));
        let needs_rank = ROLES.iter().position(|r| *r == needs).unwrap();
        // Wrong tokens from an address of their own, so the failures do not add up across routes.
        let stranger = client_from([127, 0, 1, i as u8 + 1]);
        assert_eq!(call(&stranger, &base, method, path, None, body).await, 401, "{method} {path} without a token");
        let wrong = format!("{}0", tokens.read);
        assert_eq!(call(&stranger, &base, method, path, Some(&wrong), body).await, 401, "{method} {path}, wrong");
        for (rank, (role, _, secret)) in tokens.by_role().iter().enumerate() {
            let expected = if rank >= needs_rank { *allowed } else { 403 };
            let got = call(&server.http, &base, method, path, Some(secret), body).await;
            assert_eq!(got, expected, "{method} {path} as {role} (needs {needs})");
        }
    }
    // /metrics takes the scraper's token, the dashboard a reader's.
    let metrics_rank = [("metrics", 200), ("read", 200)];
    for (role, status) in metrics_rank {
        let secret = tokens.by_role().iter().find(|(r, ..)| *r == role).unwrap().2.to_string();
        assert_eq!(call(&server.http, &base, "GET", "/metrics", Some(&secret), "").await, status);
    }
    assert_eq!(call(&server.http, &base, "GET", "/metrics", None, "").await, 401);
    assert_eq!(call(&server.http, &base, "GET", "/", None, "").await, 303, "to the sign-in page");
    assert_eq!(call(&server.http, &base, "GET", "/", Some(&tokens.metrics), "").await, 403);
    assert_eq!(call(&server.http, &base, "GET", "/", Some(&tokens.read), "").await, 200);

    // The audit log names who did what and how it ended, refusals included.
    let audit = server.http.get(format!("{base}/api/audit?limit=500")).bearer_auth(&tokens.admin).send().await;
    let audit = json(audit.unwrap()).await;
    let entries = audit["audit"].as_array().unwrap();
    let has = |actor: &str, action: &str, status: i64| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["action"].as_str().unwrap().starts_with(action) && e["status"] == status)
    };
    assert!(has("operator", "POST /api/pipelines/p/runs", 200), "{audit}");
    assert!(has("reader", "POST /api/pipelines/p/runs", 403), "{audit}");
    assert!(has("scraper", "DELETE /api/dead-letters", 403), "{audit}");
    assert!(has("-", "DELETE /api/dead-letters", 401), "{audit}");
    assert!(has("boss", "PUT /api/pipelines/p/state/last_run", 200), "{audit}");
    assert!(entries.iter().all(|e| e["address"].as_str().unwrap().starts_with("127.0.")), "{audit}");

    // No secret in the log, the audit log, the runs, the answers, or the state store's file.
    let runs = server.http.get(format!("{base}/api/runs")).bearer_auth(&tokens.read).send().await.unwrap();
    let written = [
        server.log(),
        audit.to_string(),
        runs.text().await.unwrap(),
        String::from_utf8_lossy(&std::fs::read(dir.path().join(".weir/state.db")).unwrap()).into_owned(),
    ];
    assert!(server.log().contains("The API takes 4 token(s)"), "{}", server.log());
    for secret in tokens.secrets() {
        let hex = &secret["weir_".len()..];
        for text in &written {
            assert!(!text.contains(hex), "a token was written: {}", &text[..text.len().min(2000)]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_request_is_refused_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    // No tokens, on loopback: the case a page in any browser tab could reach.
    let server = Server::start(dir.path()).await;
    let url = format!("{}/api/pipelines/p/runs", server.base);
    let forged = server
        .http
        .post(&url)
        .header("Content-Type", "text/plain")
        .header("Origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(forged.text().await.unwrap().contains("another site"));
    let fetched = server
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Sec-Fetch-Site", "cross-site")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status().as_u16(), 403);
    let plain = server.http.post(&url).header("Content-Type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 415, "a change must come as JSON");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.get("/api/runs?pipeline=p").await["runs"], serde_json::json!([]), "nothing started");

    // What schemathesis found, answered as the document says: a query that does not parse gets a JSON 400, an
    // unknown step a 404, a method a route lacks 405, and a change without a body needs no content type.
    let bad = server.http.get(format!("{}/api/runs?status=bogus", server.base)).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(bad.headers()["content-type"], "application/json");
    assert!(bad.text().await.unwrap().contains("\"error\""));
    let (status, body) = server.post("/api/dead-letters/replay?pipeline=p&step=", &[], "").await;
    assert_eq!(status, 404, "{body}");
    let trace = server.http.request("TRACE".parse().unwrap(), format!("{}/api/pipelines", server.base));
    assert_eq!(trace.send().await.unwrap().status().as_u16(), 405);
    let bodiless = server.http.post(format!("{}/api/runs/none/cancel", server.base)).send().await.unwrap();
    assert_eq!(bodiless.status().as_u16(), 404, "no body, no content type needed");

    // The dashboard's own request passes.
    let host = server.base.trim_start_matches("http://").to_string();
    let own = server
        .http
        .post(format!("{url}?wait=true"))
        .header("Content-Type", "application/json")
        .header("Origin", format!("http://{host}"))
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_with_a_token_into_a_strict_cookie_and_failures_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let tokens = Tokens::new();
    let server =
        Server::launch(dir.path(), &[], &[("WEIR_API_TOKENS", &tokens.env())], "http", client_from([127, 0, 2, 1]))
            .await;
    let base = server.base.clone();

    let page = server.http.get(format!("{base}/signin")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(!page.text().await.unwrap().contains("<script>"), "no inline script");

    let sign_in = |client: reqwest::Client, token: String| {
        let url = format!("{base}/api/session");
        async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .body(format!(r#"{{"token":"{token}"}}"#))
                .send()
                .await
                .unwrap()
        }
    };
    let signed = sign_in(server.http.clone(), tokens.read.clone()).await;
    assert_eq!(signed.status().as_u16(), 200);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("weir_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "Secure only over TLS: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let with_session = |path: &str| server.http.get(format!("{base}{path}")).header("Cookie", session.clone()).send();
    let home = with_session("/").await.unwrap();
    assert_eq!(home.status().as_u16(), 200);
    assert!(home.text().await.unwrap().contains("/assets/dashboard.js"));
    assert_eq!(with_session("/api/pipelines").await.unwrap().status().as_u16(), 200);
    let me = json(with_session("/api/session").await.unwrap()).await;
    assert_eq!((me["name"].as_str(), me["role"].as_str()), (Some("reader"), Some("read")));
    // A reader's session cannot start runs, and a cross-site page cannot use it.
    let trigger = |origin: &'static str| {
        server
            .http
            .post(format!("{base}/api/pipelines/p/runs"))
            .header("Cookie", session.clone())
            .header("Content-Type", "text/plain")
            .header("Origin", origin)
            .send()
    };
    assert_eq!(trigger("https://evil.example").await.unwrap().status().as_u16(), 403);

    // Ten wrong tokens from one address, then even the right one is refused there for a while.
    let guesser = client_from([127, 0, 2, 2]);
    for _ in 0..10 {
        assert_eq!(sign_in(guesser.clone(), format!("{}x", tokens.admin)).await.status().as_u16(), 401);
    }
    let refused = sign_in(guesser.clone(), tokens.admin.clone()).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(call(&guesser, &base, "GET", "/api/pipelines", Some(&tokens.admin), "").await, 429, "bearer too");
    assert_eq!(sign_in(client_from([127, 0, 2, 3]), tokens.admin.clone()).await.status().as_u16(), 200, "elsewhere");

    // Signing out ends the session.
    let out = server
        .http
        .delete(format!("{base}/api/session"))
        .header("Cookie", session.clone())
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 204);
    assert_eq!(with_session("/api/pipelines").await.unwrap().status().as_u16(), 401);
}

fn sign(secret: &str, stamp: &str, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{stamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_webhooks_run_once_hooks_have_their_own_listener_and_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let csv = "steps:\n  rows:\n    read_csv: { path: data/in.csv }\n  out:\n    write_csv: { input: rows, path: out/x.csv }\n";
    write(
        dir.path(),
        "signed.yaml",
        &format!(
            "name: signed\ntriggers:\n  - webhook: {{ name: signed, hmac: {{ secret: \"${{HOOK_SECRET}}\", header: X-Signature, timestamp_header: X-Timestamp }} }}\n{csv}"
        ),
    );
    write(
        dir.path(),
        "keyed.yaml",
        &format!(
            "name: keyed\ntriggers:\n  - webhook: {{ name: keyed, token: t0ken, rate_limit: {{ requests: 3, per: 1m }} }}\n{csv}"
        ),
    );
    let hooks_port = free_port();
    let hooks_listen = format!("127.0.0.1:{hooks_port}");
    let tokens = Tokens::new();
    let server = Server::launch(
        dir.path(),
        &["--hooks-listen", &hooks_listen],
        &[("WEIR_API_TOKENS", &tokens.env()), ("HOOK_SECRET", "hook-secret")],
        "http",
        reqwest::Client::new(),
    )
    .await
    .with_token(&tokens.read);
    let hooks = format!("http://{hooks_listen}");
    let http = reqwest::Client::new();

    // The API's port has no hooks; the hooks' port has nothing else.
    assert_eq!(server.post("/hooks/keyed", &[("Authorization", "Bearer t0ken")], "{}").await.0, 404);
    assert_eq!(http.get(format!("{hooks}/api/pipelines")).send().await.unwrap().status().as_u16(), 404);

    // A signed request sent twice (a sender's retry, or a capture replayed within the tolerance) runs once; both
    // get the first answer.
    let stamp = chrono::Utc::now().timestamp().to_string();
    let signature = sign("hook-secret", &stamp, "{}");
    let send = || {
        http.post(format!("{hooks}/hooks/signed?wait=true"))
            .header("X-Timestamp", &stamp)
            .header("X-Signature", &signature)
            .body("{}")
            .send()
    };
    let (first, again) = (send().await.unwrap(), send().await.unwrap());
    assert_eq!((first.status().as_u16(), again.status().as_u16()), (200, 200));
    assert!(again.headers().contains_key("weir-replayed") && !first.headers().contains_key("weir-replayed"));
    let (first, again) = (json(first).await, json(again).await);
    assert_eq!(first["run_id"], again["run_id"], "{first} {again}");
    assert_eq!(server.runs("signed", 1).await.len(), 1);
    // A new delivery (a new timestamp) runs again.
    let later = (chrono::Utc::now().timestamp() + 1).to_string();
    let fresh = http
        .post(format!("{hooks}/hooks/signed?wait=true"))
        .header("X-Timestamp", &later)
        .header("X-Signature", sign("hook-secret", &later, "{}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status().as_u16(), 200);
    assert_eq!(server.runs("signed", 2).await.len(), 2);

    // The same idempotency key twice runs once; the hook takes three requests a minute, then 429.
    let keyed = |key: &'static str| {
        http.post(format!("{hooks}/hooks/keyed?wait=true"))
            .bearer_auth("t0ken")
            .header("Idempotency-Key", key)
            .body("{}")
            .send()
    };
    assert_eq!(keyed("delivery-1").await.unwrap().status().as_u16(), 200);
    let copy = keyed("delivery-1").await.unwrap();
    assert_eq!(copy.status().as_u16(), 200);
    assert!(copy.headers().contains_key("weir-replayed"));
    assert_eq!(server.runs("keyed", 1).await.len(), 1);
    assert_eq!(keyed("delivery-2").await.unwrap().status().as_u16(), 200);
    let limited = keyed("delivery-3").await.unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(server.runs("keyed", 2).await.len(), 2);
}

#[test]
fn without_tokens_only_a_loopback_address_is_served() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let listen = format!("0.0.0.0:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", dir.path().to_str().unwrap(), "--listen", &listen])
        .env_remove("WEIR_API_TOKENS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("refusing to serve the API on {listen} without tokens")), "{stderr}");
    assert!(stderr.contains("--insecure-no-auth") && stderr.contains("weir token"), "{stderr}");
}

/// A client that trusts the test CA in `dir`.
fn trusting(dir: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    reqwest::Client::builder().add_root_certificate(ca).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_with_secure_cookies_and_takes_a_renewed_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let (first_ca, second_ca) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    test_certificates(first_ca.path());
    test_certificates(second_ca.path());
    let served = dir.path().join("tls");
    std::fs::create_dir_all(&served).unwrap();
    for file in ["server.pem", "server.key"] {
        std::fs::copy(first_ca.path().join(file), served.join(file)).unwrap();
    }
    let (cert, key) = (served.join("server.pem"), served.join("server.key"));
    let tokens = Tokens::new();
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let server =
        Server::launch(dir.path(), &args, &[("WEIR_API_TOKENS", &tokens.env())], "https", trusting(first_ca.path()))
            .await;
    assert!(server.base.starts_with("https://"));
    let signed = server
        .http
        .post(format!("{}/api/session", server.base))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"token":"{}"}}"#, tokens.read))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status().as_u16(), 200);
    assert!(signed.headers()["set-cookie"].to_str().unwrap().ends_with("; Secure"));
    assert!(reqwest::get(server.base.replace("https", "http") + "/signin").await.is_err(), "no plain HTTP");

    // The renewed certificate is from another CA: a client trusting only that one gets in once it is reloaded.
    let renewed = trusting(second_ca.path());
    assert!(renewed.get(format!("{}/signin", server.base)).send().await.is_err());
    std::fs::copy(second_ca.path().join("server.key"), &key).unwrap();
    std::fs::copy(second_ca.path().join("server.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while renewed.get(format!("{}/signin", server.base)).send().await.is_err() {
        assert!(Instant::now() < deadline, "the renewed certificate was not taken:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.log().contains("Reloaded the TLS certificate"), "{}", server.log());
}
