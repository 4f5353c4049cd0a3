//! `weir serve` end to end: the real binary on a free port of 127.0.0.1, driven over HTTP. A webhook starts `a`;
//! `b` and `c` run after it, in parallel; `d` waits for both. Also: webhook refusals, no overlapping runs, variables
//! checked before a run starts, `/metrics`, and a broken edit that leaves the previous version running.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::postgres::TestDb;
use crate::common::serve;
use crate::common::server::Server;
use axum::Router;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Serves `/slow`: one record, after 700 ms, so `b` and `c` take long enough to be seen overlapping.
fn slow_api() -> SocketAddr {
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        axum::Json(json!({ "data": [{ "id": 1 }] }))
    };
    serve(Router::new().route("/slow", get(slow)))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn project(dir: &Path, api: SocketAddr) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write(dir, "data/in.csv", "id,day\n1,2026-11-25\n");
    let csv_to = |name: &str, triggers: &str| {
        format!(
            "name: {name}\nvariables:\n  day: {{ type: date, default: \"2026-01-01\" }}\nstate:\n  last_run: {{ type: timestamp, default: \"1970-01-01T00:00:00Z\", update: run_started_at }}\ntriggers:\n{triggers}\nsteps:\n  rows:\n    read_csv: {{ path: data/in.csv }}\n  out:\n    write_csv: {{ input: rows, path: out/{name}.csv }}\n"
        )
    };
    let api_to = |name: &str| {
        format!(
            "name: {name}\ntriggers:\n  - after: [a]\nsteps:\n  rows:\n    read_api: {{ url: \"http://{api}/slow\", records: $.data }}\n  out:\n    write_csv: {{ input: rows, path: out/{name}.csv }}\n"
        )
    };
    write(dir, "a.yaml", &csv_to("a", "  - webhook: { name: start-a, token: s3cret }"));
    write(dir, "b.yaml", &api_to("b"));
    write(dir, "c.yaml", &api_to("c"));
    write(dir, "d.yaml", &csv_to("d", "  - after: [b, c]"));
}

fn time(run: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(run[field].as_str().unwrap()).unwrap().to_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_starts_a_chain_that_fans_out_and_joins() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), slow_api());
    let server = Server::start(dir.path()).await;

    // Refused: a wrong token, an unknown hook, a variable the pipeline lacks.
    let (status, body) = server.post("/hooks/start-a", &[("Authorization", "Bearer nope")], "{}").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(server.post("/hooks/nobody", &[], "{}").await.0, 404);
    let (status, body) = server.post("/hooks/start-a", &[("Authorization", "Bearer s3cret")], r#"{"month":"x"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("month"), "{body}");

    // Accepted: the body's fields are the run's variables.
    let (status, body) =
        server.post("/hooks/start-a", &[("Authorization", "Bearer s3cret")], r#"{"day":"2026-11-25"}"#).await;
    assert_eq!(status, 202, "{body}");
    let a = &server.runs("a", 1).await[0];
    let b = &server.runs("b", 1).await[0];
    let c = &server.runs("c", 1).await[0];
    let d = &server.runs("d", 1).await[0];
    for run in [a, b, c, d] {
        assert_eq!(run["status"], "success", "{run}");
    }
    assert_eq!(a["trigger"], "webhook");
    assert_eq!((b["trigger"].as_str(), c["trigger"].as_str()), (Some("after a"), Some("after a")));
    assert!(
        time(b, "started_at") >= time(a, "ended_at") && time(c, "started_at") >= time(a, "ended_at"),
        "b and c wait for a"
    );
    assert!(
        time(b, "started_at") < time(c, "ended_at") && time(c, "started_at") < time(b, "ended_at"),
        "b and c overlap:\n{b}\n{c}"
    );
    assert!(time(d, "started_at") >= time(b, "ended_at").max(time(c, "ended_at")), "d waits for both");
    assert!(dir.path().join("out/d.csv").exists());

    // One run of a pipeline at a time: a second trigger while `b` runs is refused.
    let (first, _) = server.post("/api/pipelines/b/runs", &[], "").await;
    let (second, body) = server.post("/api/pipelines/b/runs", &[], "").await;
    assert_eq!((first, second), (202, 409), "{body}");

    // Cancelled while it waits on the slow API: recorded failed, and cancelling again is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = loop {
        let runs = server.get("/api/runs?pipeline=b&status=running").await;
        if let Some(id) = runs["runs"][0]["run_id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "b's second run did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, body) = server.post(&format!("/api/runs/{running}/cancel"), &[], "").await;
    assert_eq!(status, 202, "{body}");
    let cancelled = server.runs("b", 2).await.pop().unwrap();
    assert_eq!((cancelled["run_id"].as_str(), cancelled["status"].as_str()), (Some(running.as_str()), Some("failed")));
    assert!(cancelled["error"].as_str().unwrap().contains("cancelled"), "{cancelled}");
    assert_eq!(server.post(&format!("/api/runs/{running}/cancel"), &[], "").await.0, 409, "it is not running any more");
    assert_eq!(server.post("/api/runs/no-such-run/cancel", &[], "").await.0, 404);

    let pipelines = server.get("/api/pipelines").await;
    let names: Vec<&str> =
        pipelines["pipelines"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(pipelines["pipelines"][0]["last_run"]["status"], "success");
    let state = server.get("/api/pipelines/a/state").await;
    assert_eq!(state["state"]["last_run"]["default"], false, "a's run saved its state: {state}");
    assert!(state["state"]["last_run"]["value"].as_str().unwrap().starts_with("20"), "{state}");

    let run_id = d["run_id"].as_str().unwrap();
    let detail = server.get(&format!("/api/runs/{run_id}")).await;
    let steps: Vec<&str> = detail["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["rows", "out"]);

    // Every GET path of the OpenAPI document answers as it says (path parameters filled from this run).
    let openapi = server.get("/api/openapi.json").await;
    let paths = openapi["paths"].as_object().unwrap();
    assert!(paths.len() >= 9, "{openapi}");
    for (path, ops) in paths {
        if ops.get("get").is_none() {
            continue;
        }
        let url = path.replace("{id}", run_id).replace("{name}", "a")
            + if path == "/api/dead-letters" { "?pipeline=a" } else { "" };
        let status = server.http.get(format!("{}{url}", server.base)).send().await.unwrap().status().as_u16();
        assert_eq!(status, 200, "GET {url}");
    }
    let metrics = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    for line in [
        "weir_runs_total{pipeline=\"d\",status=\"success\"} 1",
        "weir_webhook_requests_total{hook=\"start-a\",status=\"202\"} 1",
        "weir_webhook_requests_total{hook=\"start-a\",status=\"401\"} 1",
        "weir_rows_total{pipeline=\"a\",step=\"rows\"} 1",
        "weir_run_duration_seconds_count{pipeline=\"a\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_is_reported_and_the_previous_version_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), slow_api());
    let server = Server::start(dir.path()).await;
    // Wait for a later modification time than the one loaded.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(
        dir.path(),
        "d.yaml",
        "name: d\nsteps:\n  rows:\n    read_csv: { path: data/in.csv }\n  out:\n    write_csv: { input: nowhere, path: out/d.csv }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let pipelines = loop {
        let pipelines = server.get("/api/pipelines").await;
        if pipelines["broken"].as_object().is_some_and(|b| !b.is_empty()) {
            break pipelines;
        }
        assert!(Instant::now() < deadline, "the broken edit was not noticed: {pipelines}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let broken = pipelines["broken"].to_string();
    assert!(broken.contains("d.yaml") && broken.contains("nowhere"), "{broken}");
    let (status, body) = server.post("/api/pipelines/d/runs?wait=true", &[], "").await;
    assert_eq!(status, 200, "the previous version of d still runs: {body}");
    assert_eq!(body["status"], "success");
}

#[test]
fn webhook_records_are_acknowledged_after_commit_and_change_events_apply_in_order() {
    // The database helper runs its own runtime, so it lives on this thread and is queried from blocking tasks.
    let db = std::sync::Arc::new(TestDb::new());
    tokio::runtime::Runtime::new().unwrap().block_on(ingest_and_cdc(db.clone()));
}

async fn ingest_and_cdc(db: std::sync::Arc<TestDb>) {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "orders.yaml",
        "name: orders_in\nconnections:\n  db: { kind: postgres, url: \"${DB_URL}\" }\ntriggers:\n  - webhook: { name: orders, token: t0k }\n\
         steps:\n  events:\n    read_webhook: { records: $.records, schema: { id: bigint, email: text, amount: double } }\n  \
         checked:\n    on_error: fail\n    validate: { input: events, rules: { amount_positive: { positive: amount } } }\n  \
         out:\n    write_db: { input: checked, connection: db, table: orders, mode: upsert, keys: [id] }\n",
    );
    write(
        dir.path(),
        "cdc.yaml",
        "name: customers_cdc\nconnections:\n  db: { kind: postgres, url: \"${DB_URL}\" }\ntriggers:\n  - webhook: { name: cdc, token: t0k }\n\
         steps:\n  changes:\n    read_webhook: { format: debezium, schema: { id: bigint, name: text } }\n  \
         rows:\n    sql: { query: \"SELECT id, name, _deleted FROM changes\" }\n  \
         out:\n    write_db: { input: rows, connection: db, table: customers, mode: upsert, keys: [id], delete_when: _deleted }\n",
    );
    let url = db.url();
    let server = Server::start_with(dir.path(), &[("DB_URL", &url)]).await;
    let auth = [("Authorization", "Bearer t0k")];

    // The answer comes after the commit: the rows are there the moment it arrives.
    let body =
        r#"{"records": [{"id": 1, "email": "a@x.io", "amount": 10.5}, {"id": 2, "email": "b@x.io", "amount": 3}]}"#;
    let (status, reply) = server.post("/hooks/orders", &auth, body).await;
    assert_eq!(
        (status, reply["status"].as_str(), reply["records"].as_u64()),
        (200, Some("committed"), Some(2)),
        "{reply}"
    );
    let count = |db: std::sync::Arc<TestDb>, sql: &'static str| async move {
        tokio::task::spawn_blocking(move || db.rows(sql)).await.unwrap()
    };
    assert_eq!(
        count(db.clone(), "SELECT id, email, amount FROM orders ORDER BY id").await,
        ["1|a@x.io|10.5", "2|b@x.io|3"]
    );

    // A record that does not fit, or fails validation, is refused with the reason, and nothing of its request loads.
    let (status, reply) = server
        .post("/hooks/orders", &auth, r#"{"records": [{"id": 3, "amount": 1}, {"id": 4, "amount": "lots"}]}"#)
        .await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("field `amount` is a string (\"lots\"), where the column is Float64 at record 2"),
        "{reply}"
    );
    let (status, reply) =
        server.post("/hooks/orders", &auth, r#"{"records": [{"id": 5, "amount": 2}, {"id": 6, "amount": -1}]}"#).await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("amount_positive"), "{reply}");
    assert_eq!(count(db.clone(), "SELECT count(*) FROM orders").await, ["2"]);

    // Debezium events: inserts, an update and a delete, applied in the order sent.
    let events = r#"[
        {"op": "c", "after": {"id": 1, "name": "Ada"}, "before": null, "source": {"lsn": 1}},
        {"op": "c", "after": {"id": 2, "name": "Bob"}, "before": null, "source": {"lsn": 2}},
        {"payload": {"op": "u", "before": {"id": 1, "name": "Ada"}, "after": {"id": 1, "name": "Ada Lovelace"}}},
        {"op": "d", "before": {"id": 2, "name": "Bob"}, "after": null}
    ]"#;
    let (status, reply) = server.post("/hooks/cdc", &auth, events).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(count(db.clone(), "SELECT id, name FROM customers ORDER BY id").await, ["1|Ada Lovelace"]);
    let (status, _) = server.post("/hooks/cdc", &auth, r#"[{"op": "r", "after": {"id": 3, "name": "Cy"}}]"#).await;
    assert_eq!(status, 200);
    assert_eq!(count(db.clone(), "SELECT id FROM customers ORDER BY id").await, ["1", "3"]);
    let metrics = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    for line in [
        "weir_rows_changed_total{pipeline=\"orders_in\",step=\"out\",change=\"inserted\"} 2",
        "weir_rows_changed_total{pipeline=\"customers_cdc\",step=\"out\",change=\"inserted\"} 2",
        "weir_rows_changed_total{pipeline=\"customers_cdc\",step=\"out\",change=\"updated\"} 0",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}

/// The page at `url` as headless Chromium renders it once its scripts have run.
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", url])
        .stderr(Stdio::null())
        .output()
        .expect("chromium (Debian's package; the test command installs it)");
    let page = String::from_utf8(out.stdout).unwrap();
    // What the scripts drew, without the scripts themselves.
    let start = page.find(r#"<main id="view">"#).expect("the dashboard's main element");
    let end = page[start..].find("</main>").map_or(page.len(), |e| start + e);
    page[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_pipelines_runs_their_dag_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write(dir.path(), "data/orders.csv", "id,amount\n1,10\n2,-5\n3,7\n4,-1\n");
    write(
        dir.path(),
        "orders.yaml",
        "name: orders\ndescription: Orders into a CSV\ntriggers:\n  - cron: '0 3 * * *'\n    timezone: Europe/Paris\nsteps:\n  rows:\n    read_csv: { path: data/orders.csv }\n  \
         checked:\n    validate: { input: rows, rules: { amount_positive: { positive: amount } } }\n  \
         summary:\n    sql: { query: \"SELECT count(*) AS n FROM checked\" }\n  \
         out:\n    write_csv: { input: summary, path: out/summary.csv }\n\
         state:\n  last_run: { type: timestamp, default: \"1970-01-01T00:00:00Z\", update: run_started_at }\n",
    );
    // A run that takes long enough to be seen going.
    let slow = serve(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            axum::Json(json!({ "data": [] }))
        }),
    ));
    write(
        dir.path(),
        "slow.yaml",
        &format!(
            "name: slow\nsteps:\n  rows:\n    read_api: {{ url: \"http://{slow}/slow\", records: $.data, timeout: 60s }}\n  out:\n    write_csv: {{ input: rows, path: out/slow.csv }}\n"
        ),
    );
    write(
        dir.path(),
        "broken.yaml",
        "name: broken\nsteps:\n  a:\n    read_csv: { path: x.csv }\n  b:\n    write_csv: { input: nowhere, path: y.csv }\n",
    );
    write(
        dir.path(),
        "fails.yaml",
        "name: fails\nsteps:\n  rows:\n    read_csv: { path: data/missing.csv }\n  out:\n    write_csv: { input: rows, path: out/x.csv }\n",
    );
    let server = Server::start(dir.path()).await;
    for _ in 0..2 {
        assert_eq!(server.post("/api/pipelines/orders/runs?wait=true", &[], "").await.0, 200);
    }
    assert_eq!(server.post("/api/pipelines/fails/runs?wait=true", &[], "").await.0, 422);
    let base = server.base.clone();
    let page = |path: &'static str| {
        let url = format!("{base}/#{path}");
        tokio::task::spawn_blocking(move || rendered(&url))
    };

    let home = page("/").await.unwrap();
    assert!(home.contains(r#"<tr data-pipeline="orders">"#), "{home}");
    assert!(home.contains("cron 0 3 * * * (Europe/Paris)"), "{home}");
    assert!(home.contains(r#"data-status="success""#) && home.contains(r#"data-status="failed""#), "{home}");
    assert!(home.contains("broken.yaml") && home.contains("nowhere"), "the file with mistakes is listed: {home}");

    let runs = server.get("/api/runs?pipeline=orders").await["runs"].as_array().unwrap().clone();
    let history = page("/pipeline/orders").await.unwrap();
    assert_eq!(history.matches("<rect").count(), 4, "two bars in each chart: {history}");
    assert!(
        history.contains(r#"<tr data-state="last_run"><td>last_run</td><td>20"#) && history.contains("stored"),
        "{history}"
    );
    assert!(history.contains(runs[0]["run_id"].as_str().unwrap()), "{history}");

    let ok_run = runs[0]["run_id"].as_str().unwrap().to_string();
    let ok_page = {
        let url = format!("{base}/#/run/{ok_run}");
        tokio::task::spawn_blocking(move || rendered(&url)).await.unwrap()
    };
    for step in ["rows", "checked", "summary", "out"] {
        assert!(ok_page.contains(&format!(r#"data-step="{step}" data-outcome="success""#)), "{step}: {ok_page}");
    }
    assert_eq!(ok_page.matches("<line").count(), 3, "rows → checked → summary → out: {ok_page}");
    assert!(
        ok_page.contains("Transform complete: 2/4 valid") && ok_page.contains("Pipeline finished in"),
        "the run's log: {ok_page}"
    );

    let failed = server.get("/api/runs?pipeline=fails").await["runs"][0]["run_id"].as_str().unwrap().to_string();
    let failed_page = {
        let url = format!("{base}/#/run/{failed}");
        tokio::task::spawn_blocking(move || rendered(&url)).await.unwrap()
    };
    assert!(failed_page.contains(r#"data-step="rows" data-outcome="failed""#), "{failed_page}");
    assert!(failed_page.contains("run-error") && failed_page.contains("missing.csv"), "{failed_page}");

    // A run going shows a cancel button; the button's request stops it.
    assert_eq!(server.post("/api/pipelines/slow/runs", &[], "").await.0, 202);
    let going = loop {
        if let Some(id) = server.get("/api/runs?pipeline=slow&status=running").await["runs"][0]["run_id"].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let going_page = {
        let url = format!("{base}/#/run/{going}");
        tokio::task::spawn_blocking(move || rendered(&url)).await.unwrap()
    };
    assert!(going_page.contains(&format!(r#"<button data-cancel="{going}">Cancel run</button>"#)), "{going_page}");
    assert_eq!(server.post(&format!("/api/runs/{going}/cancel"), &[], "").await.0, 202);
    let cancelled = server.runs("slow", 1).await.pop().unwrap();
    assert!(cancelled["error"].as_str().unwrap().contains("cancelled"), "{cancelled}");

    let letters = page("/dlq/orders").await.unwrap();
    assert_eq!(letters.matches("<tr data-letter=").count(), 4, "two bad rows per run: {letters}");
    assert!(letters.contains("amount_positive") && letters.contains("Replay checked"), "{letters}");
    // The replay button's request: with the rule unchanged, every dead letter fails again and stays.
    let (status, reply) = server.post("/api/dead-letters/replay?pipeline=orders&step=checked", &[], "").await;
    assert_eq!((status, reply["failed_again"].as_u64()), (200, Some(4)), "{reply}");

    // The audit log shows each call that changed something: the runs started, the cancel and the replay.
    let audit = page("/audit").await.unwrap();
    assert!(audit.contains("POST /api/runs/") && audit.contains("/cancel"), "{audit}");
    assert!(audit.contains("POST /api/dead-letters/replay?pipeline=orders&amp;step=checked"), "{audit}");
    assert!(audit.matches("<tr data-audit").count() >= 6, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_max_runs_wait_in_a_queue_that_the_api_and_metrics_show() {
    let dir = tempfile::tempdir().unwrap();
    let api = slow_api();
    for name in ["first", "second"] {
        write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nsteps:\n  rows:\n    read_api: {{ url: \"http://{api}/slow\", records: $.data }}\n  out:\n    write_csv: {{ input: rows, path: out/{name}.csv }}\n"
            ),
        );
    }
    let server = Server::launch(dir.path(), &["--max-runs", "1"], &[], "http", reqwest::Client::new()).await;
    for name in ["first", "second"] {
        let (status, body) = server.post(&format!("/api/pipelines/{name}/runs"), &[], "").await;
        assert_eq!(status, 202, "{body}");
    }
    let queue = server.get("/api/queue").await;
    assert_eq!((queue["max_runs"].as_u64(), queue["depth"].as_u64()), (Some(1), Some(1)), "{queue}");
    let waiting = &queue["waiting"][0];
    assert!(["first", "second"].contains(&waiting["pipeline"].as_str().unwrap()), "{queue}");
    assert_eq!(waiting["trigger"], "api", "{queue}");
    let metrics = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("weir_run_queue_depth 1"), "{metrics}");

    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/api/runs?status=success").await["runs"].as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the queued run did not run:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.get("/api/queue").await["depth"], 0);
    let metrics = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    for line in ["weir_run_queue_depth 0", "weir_run_queue_wait_seconds_count 2", "weir_run_queue_oldest_seconds 0"] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}
