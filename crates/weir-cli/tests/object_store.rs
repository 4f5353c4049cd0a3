//! File steps on `s3://` paths against a real S3 server on 127.0.0.1 (moto, from PyPI; `scripts/test.sh` installs
//! it). Each test starts its own server on a free port and stops it by PID.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Project;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A moto S3 server with one bucket, stopped when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    bucket: String,
}

impl S3Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]') runs");
        let endpoint = format!("http://127.0.0.1:{port}");
        let bucket = "weir-test".to_string();
        let started = Instant::now();
        // Path-style bucket creation; retried until the server listens.
        while !Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]).status().unwrap().success() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        Self { child, endpoint, bucket }
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
    fn connection(&self) -> String {
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

    fn keys(&self, prefix: &str) -> Vec<String> {
        let store = self.store();
        let mut keys: Vec<String> = block_on(store.list(Some(&Path::from(prefix))).map_ok(|m| m.location.to_string()).try_collect()).unwrap();
        keys.sort();
        keys
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let rows = common::parquet_rows(p.path().join("orders.parquet"));
    assert_eq!(
        rows[3..6],
        ["| 1  | 10.5   | eu     |", "| 2  | 20.0   | eu     |", "| 3  | 7.25   | us     |"].map(String::from),
        "{rows:#?}"
    );
    let csv_keys = s3.keys("out/csv");
    assert_eq!(csv_keys.len(), 2, "{csv_keys:?}");
    assert!(csv_keys[0].starts_with("out/csv/region=eu/") && csv_keys[1].starts_with("out/csv/region=us/"), "{csv_keys:?}");
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
    let rows = common::parquet_rows(p.path().join("got.parquet"));
    assert!(rows.iter().any(|r| r.contains("ada@example.com")), "{rows:#?}");
    assert_eq!(rows.len(), 3 + 3 + 1, "three rows between the table's borders: {rows:#?}");
}
