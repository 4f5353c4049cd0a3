//! `weir docs`: the static site of a directory of pipelines, rendered by headless Chromium.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::Project;

/// The page at `path` as headless Chromium renders it.
fn rendered(path: &Path) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", path.display()))
        .stderr(Stdio::null())
        .output()
        .expect("chromium (Debian's package; the test command installs it)");
    String::from_utf8(out.stdout).unwrap()
}

/// How many pixels of a screenshot of `path` have the colour `rgb`: what a reader sees, not what the HTML says.
fn pixels_of(path: &Path, rgb: [u8; 3], shot: &Path) -> usize {
    let status = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,900"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", path.display()))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("chromium runs");
    assert!(status.success());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    buf[..info.buffer_size()].chunks(channels).filter(|p| p[..3] == rgb).count()
}

fn hrefs(page: &str) -> Vec<String> {
    page.split("href=\"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string).collect()
}

#[test]
fn the_site_shows_each_pipeline_its_lineage_schedule_and_dependencies_without_secrets() {
    let p = Project::new();
    p.file(
        "pipelines/extract.yaml",
        "name: extract\ndescription: Orders from the shop database.\nowner: data-team\ncontacts: [data@example.com]\n\
         triggers:\n  - cron: '0 3 * * *'\nconnections:\n  shop: { kind: postgres, url: 'postgres://app:hunter2@db.internal/shop' }\n\
         steps:\n  orders:\n    read_db: { connection: shop, table: public.orders }\n  paid:\n    sql:\n      query: SELECT * FROM orders WHERE status = 'paid'\n\
         \x20 out:\n    write_parquet: { input: paid, path: lake/orders.parquet }\n\
         checks:\n  some:\n    step: paid\n    min_rows: 1\n\
         state:\n  last_run: { type: timestamp, default: '1970-01-01T00:00:00Z', update: run_started_at }\n",
    );
    p.file(
        "pipelines/report.yaml",
        "name: report\ndescription: Daily revenue.\ntriggers:\n  - after: [extract]\nsteps:\n  orders:\n    read_parquet: { path: lake/orders.parquet }\n\
         \x20 daily:\n    sql:\n      query: SELECT order_date, sum(amount) AS revenue FROM orders GROUP BY order_date\n\
         \x20 out:\n    write_csv: { input: daily, path: out/daily.csv }\n",
    );
    p.file("pipelines/report.test.yaml", "cases: {}\n");
    p.file("pipelines/broken.yaml", "name: [oops\n");
    let log = p.ok_log(&["docs", "pipelines", "-o", "site"]);
    assert!(log.contains("wrote 2 pipeline pages"), "{log}");
    assert!(log.contains("left out: pipelines/broken.yaml:"), "{log}");

    let site = p.path().join("site");
    let index = rendered(&site.join("index.html"));
    assert!(index.contains(r#"<svg id="dependencies""#), "{index}");
    assert!(index.contains(r#"data-from="extract" data-to="report""#), "the dependency is drawn:\n{index}");
    for link in hrefs(&index).iter().filter(|h| h.ends_with(".html")) {
        assert!(site.join(link).is_file(), "index links to {link}, which is missing");
    }
    assert!(index.contains(r#"href="extract.html""#) && index.contains(r#"href="report.html""#), "{index}");
    assert!(index.contains("Files with mistakes"), "{index}");

    let extract = rendered(&site.join("extract.html"));
    for text in [
        "Orders from the shop database.",
        "data@example.com",
        "on the cron schedule <code>0 3 * * *</code> (UTC): <span class=\"cron-words\">",
        "; next: <span class=\"next-fires\">",
        "Then starts</th><td><a href=\"report.html\">report</a>",
        r#"data-node="source:orders""#,
        r#"data-from="orders" data-to="paid""#,
        r#"data-node="destination:out""#,
        "public.orders",
        "postgres · connection shop",
        "SELECT * FROM orders WHERE status = 'paid'",
        "at least 1 rows",
        "when the last successful run started",
    ] {
        assert!(extract.contains(text), "missing `{text}` in:\n{extract}");
    }
    let report = rendered(&site.join("report.html"));
    assert!(report.contains(r#"after <a href="extract.html">extract</a> succeeded"#), "{report}");
    assert!(report.contains("<td>daily</td><td>revenue</td><td>orders.amount</td>"), "column lineage:\n{report}");
    assert!(extract.contains("<td>paid</td><td>*</td><td>orders.*</td>"), "column lineage:\n{extract}");
    for file in std::fs::read_dir(&site).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("db.internal"), "a connection URL was written:\n{text}");
    }

    // Seen, not only written: the boxes are on screen in their colours.
    let shots = tempfile::tempdir().unwrap();
    let pipeline_boxes = pixels_of(&site.join("index.html"), [0xf3, 0xec, 0xd9], &shots.path().join("index.png"));
    assert!(pipeline_boxes > 2 * 4000, "two pipeline boxes on the index, {pipeline_boxes} pixels");
    let sources = pixels_of(&site.join("extract.html"), [0xdb, 0xe9, 0xf8], &shots.path().join("extract.png"));
    let destinations = pixels_of(&site.join("extract.html"), [0xd9, 0xf2, 0xdf], &shots.path().join("extract.png"));
    assert!(sources > 4000 && destinations > 4000, "source {sources} and destination {destinations} pixels");
}

#[test]
fn the_examples_site_is_built_with_a_page_per_pipeline() {
    let p = Project::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    p.ok_log(&["docs", examples.to_str().unwrap(), "-o", "site"]);
    let pages = std::fs::read_dir(p.path().join("site")).unwrap().count();
    assert_eq!(pages, 15, "index and 14 example pipelines");
}

/// The OpenLineage events a run wrote to `file`, one a line.
fn events(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_run_emits_openlineage_start_and_complete_with_its_inputs_and_outputs() {
    let p = Project::new();
    p.file("data/orders.csv", "id,amount\n1,10\n2,20\n");
    p.file(
        "orders.yaml",
        "name: orders\ndescription: Orders to Parquet.\nsteps:\n  raw:\n    read_csv: { path: data/orders.csv }\n  out:\n    write_parquet: { input: raw, path: out/orders.parquet }\n",
    );
    let file = p.path().join("lineage.ndjson");
    let p = p.env("OPENLINEAGE_URL", &format!("file://{}", file.display())).env("OPENLINEAGE_NAMESPACE", "shop");
    p.ok(&["run", "orders.yaml"]);
    let events = events(&file);
    assert_eq!(events.iter().map(|e| e["eventType"].as_str().unwrap()).collect::<Vec<_>>(), ["START", "COMPLETE"]);
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "orders.yaml", "--json"])).unwrap();
    let run_id = runs["metrics"][0]["run_id"].as_str().unwrap();
    for event in &events {
        assert_eq!(event["run"]["runId"], run_id, "the events name the run Weir records: {event}");
        assert_eq!(
            event["job"],
            serde_json::json!({"namespace": "shop", "name": "orders", "facets": {"documentation": event["job"]["facets"]["documentation"].clone()}})
        );
        assert_eq!(event["job"]["facets"]["documentation"]["description"], "Orders to Parquet.");
        assert_eq!(event["schemaURL"], "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent");
        let input = &event["inputs"][0];
        assert_eq!(input["namespace"], "file");
        assert!(input["name"].as_str().unwrap().ends_with("/data/orders.csv"), "{input}");
        assert!(event["outputs"][0]["name"].as_str().unwrap().ends_with("/out/orders.parquet"), "{event}");
    }
    p.ok(&["run", "orders.yaml", "--dry-run"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2, "a dry run tells catalogs nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_posts_a_fail_event_with_its_error_and_no_credentials() {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, serde_json::Value)>::new()));
    let keep = received.clone();
    let addr = crate::common::serve(axum::Router::new().route(
        "/api/v1/lineage",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                keep.lock().unwrap().push((auth, serde_json::from_str(&body).unwrap()));
                "{}"
            }
        }),
    ));
    let p = Project::new();
    p.file(
        "sync.yaml",
        "name: sync\nconnections:\n  app: { kind: postgres, url: 'postgres://app:hunter2@127.0.0.1:1/shop' }\nsteps:\n  users:\n    read_db: { connection: app, table: users }\n  out:\n    write_csv: { input: users, path: out/users.csv }\n",
    );
    let p = p.env("OPENLINEAGE_URL", &format!("http://{addr}")).env("OPENLINEAGE_API_KEY", "catalog-key");
    let out = tokio::task::spawn_blocking(move || p.fails(&["run", "sync.yaml"], 2)).await.unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received.iter().map(|(_, e)| e["eventType"].as_str().unwrap()).collect::<Vec<_>>(),
        ["START", "FAIL"],
        "{out}"
    );
    assert!(received.iter().all(|(auth, _)| auth == "Bearer catalog-key"));
    let fail = &received[1].1;
    assert!(fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap().contains("sync"), "{fail}");
    assert_eq!(fail["inputs"][0], serde_json::json!({"namespace": "postgres://127.0.0.1:1", "name": "shop.users"}));
    assert!(!fail.to_string().contains("hunter2"), "{fail}");
}

#[test]
fn with_state_each_page_shows_the_last_runs_and_the_stored_state() {
    let p = Project::new();
    p.file("data/orders.csv", "id,amount\n1,10\n");
    p.file(
        "orders.yaml",
        "name: orders\nstate:\n  last_run: { type: timestamp, default: '1970-01-01T00:00:00Z', update: run_started_at }\nsteps:\n  raw:\n    read_csv: { path: data/orders.csv }\n  out:\n    write_csv: { input: raw, path: out/orders.csv }\n",
    );
    p.ok(&["run", "orders.yaml"]);
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "orders.yaml", "--json"])).unwrap();
    let run_id = runs["metrics"][0]["run_id"].as_str().unwrap().to_string();
    p.ok_log(&["docs", ".", "-o", "site", "--state", ".weir/state.db"]);
    let page = rendered(&p.path().join("site/orders.html"));
    assert!(page.contains(&format!("<td>{run_id}</td><td>manual</td><td>success</td>")), "{page}");
    let stored = page.split("<td>last_run</td>").nth(1).unwrap_or_default();
    assert!(
        stored.contains("<td>state</td><td>Timestamp</td><td>1970-01-01T00:00:00Z</td><td>20"),
        "the stored value: {page}"
    );
}
