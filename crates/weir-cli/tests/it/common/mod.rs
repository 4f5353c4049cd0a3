//! Helpers shared by the end-to-end tests: a scratch project with the `weir` command pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod clickhouse;
pub mod gcs_xml;
pub mod local_model;
pub mod mysql;
pub mod postgres;
pub mod running;
pub mod server;

use datafusion::prelude::{ParquetReadOptions, SessionContext};

/// A scratch project: a temp dir with a pipeline and data, and the `weir` command pointed at it.
pub struct Project {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Project {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir"), env: Vec::new() }
    }

    /// A copy of `examples/<name>` so runs never write into the repository.
    pub fn example(name: &str) -> Self {
        let p = Self::new();
        let src = Path::new(&manifest_dir()).join("../../examples").join(name);
        copy_dir(&src, p.path());
        p
    }

    /// Sets an environment variable for every `weir` this project runs.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn weir(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .current_dir(self.path())
            .env_remove("WEIR_STATE_DIR")
            .env("WEIR_LOG_FORMAT", "human")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("weir runs")
    }

    /// Runs and requires success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.weir(args);
        assert!(out.status.success(), "weir {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires success, returning the log (stderr).
    pub fn ok_log(&self, args: &[&str]) -> String {
        let out = self.weir(args);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "weir {args:?} failed:\n{log}");
        log
    }

    /// Runs and requires failure with `code`, returning stdout and stderr together.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.weir(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "weir {args:?} should exit {code}:\n{text}");
        text
    }

    /// How many failed attempts `step` retried in the pipeline's latest run, as its run record says.
    pub fn retries(&self, pipeline: &str, step: &str) -> u64 {
        let runs: serde_json::Value = serde_json::from_str(&self.ok(&["runs", pipeline, "--json"])).unwrap();
        let id = runs["runs"][0]["run_id"].as_str().expect("a run").to_string();
        let steps: Vec<serde_json::Value> =
            serde_json::from_str(&self.ok(&["runs", pipeline, "--run", &id, "--json"])).unwrap();
        let row = steps.iter().find(|s| s["step"] == step).unwrap_or_else(|| panic!("no step {step} in {steps:?}"));
        row["retries"].as_u64().unwrap()
    }

    pub fn dlq(&self, pipeline: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["dlq", "list", pipeline, "--json"])).unwrap()
    }
}

/// Serves `router` on a free port of 127.0.0.1 from its own thread for the rest of the test process.
pub fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    addr
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".weir" || name == "out" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn parquet_rows(path: PathBuf) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        let df = ctx.read_parquet(path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        let batches = df.collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        text.lines().map(str::to_string).collect()
    })
}

/// Writes `load.yaml`: `data/rows.csv` (holding `csv`) loaded into table `t` of a `kind` connection at
/// `$DB_URL`, with the given `write_db` settings (`mode: upsert, keys: [id]`). Returns the file name.
pub fn load_csv(p: &Project, kind: &str, csv: &str, write: &str) -> String {
    p.file("data/rows.csv", csv).file(
        "load.yaml",
        &format!(
            "name: load\nconnections:\n  db: {{ kind: {kind}, url: \"${{DB_URL}}\" }}\nsteps:\n  rows:\n    read_csv: {{ path: data/rows.csv }}\n  out:\n    write_db: {{ input: rows, connection: db, table: t, {write} }}\n"
        ),
    );
    "load.yaml".to_string()
}

/// Writes `budget.yaml`: two of three rows fail validation, above the 10% budget, so the run must load nothing
/// into table `t` of a `kind` connection at `$DB_URL`. Returns the file name.
pub fn over_budget(p: &Project, kind: &str) -> String {
    p.file("data/budget.csv", "id,amount\n1,10\n2,-5\n3,-7\n").file(
        "budget.yaml",
        &format!(
            "name: budget\nconnections:\n  db: {{ kind: {kind}, url: \"${{DB_URL}}\" }}\nsteps:\n  rows:\n    read_csv: {{ path: data/budget.csv }}\n  checked:\n    validate: {{ input: rows, rules: {{ positive_amount: {{ positive: amount }} }}, max_invalid: \"10%\" }}\n  out:\n    write_db: {{ input: checked, connection: db, table: t, mode: append }}\n"
        ),
    );
    "budget.yaml".to_string()
}

/// The DDL of table `t` for [`refused_rows`]: a key, a NOT NULL column and a CHECK, holding id 1.
pub const REFUSING_TABLE: &str = "CREATE TABLE t (id BIGINT PRIMARY KEY, email VARCHAR(100) NOT NULL, amount BIGINT CHECK (amount >= 0)); INSERT INTO t VALUES (1, 'old@x.io', 1)";

/// Appends 200 rows into [`REFUSING_TABLE`] of a `kind` connection with `on_error: dead_letter`: id 1 repeats the
/// table's key, id 17 has no email, id 50 a negative amount. The rest must load and those three must be dead
/// letters of step `out` naming the database's reason; returns the reasons by id.
pub fn refused_rows(p: &Project, kind: &str) -> Vec<(i64, String)> {
    let mut csv = String::from("id,email,amount\n1,dup@x.io,9\n");
    for id in 2..=200 {
        let email = if id == 17 { String::new() } else { format!("u{id}@x.io") };
        let amount = if id == 50 { -3 } else { id };
        csv.push_str(&format!("{id},{email},{amount}\n"));
    }
    let file = load_csv(p, kind, &csv, "mode: append");
    p.file(&file, &p.read(&file).replace("  out:\n", "  out:\n    on_error: dead_letter\n"));
    p.ok(&["run", &file]);
    let letters = p.dlq(&file);
    assert!(letters.iter().all(|l| l["step"] == "out"), "{letters:?}");
    let mut refused: Vec<(i64, String)> = letters
        .iter()
        .map(|l| (l["record"]["id"].as_i64().unwrap(), l["error"].as_str().unwrap().to_string()))
        .collect();
    refused.sort();
    assert_eq!(refused.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 17, 50], "{refused:?}");
    refused
}

/// Writes `p.yaml`: `data/orders.csv` (ids 1-3, amounts 10, -5, 0) validated by `rule` and upserted into table
/// `orders` of a `kind` connection at `$DB_URL`, whose table `dlq` keeps the dead letters.
pub fn dead_letter_table_pipeline(p: &Project, kind: &str, rule: &str) {
    p.file("data/orders.csv", "id,amount\n1,10\n2,-5\n3,0\n").file(
        "p.yaml",
        &format!(
            "name: orders\nconnections:\n  db: {{ kind: {kind}, url: \"${{DB_URL}}\" }}\nsettings: {{ dead_letters: {{ connection: db, table: dlq }} }}\n\
             steps:\n  rows:\n    read_csv: {{ path: data/orders.csv }}\n  checked:\n    validate: {{ input: rows, rules: {{ {rule} }} }}\n  \
             out:\n    write_db: {{ input: checked, connection: db, table: orders, mode: upsert, keys: [id] }}\n"
        ),
    );
}

/// Makes a test CA (`ca.pem`) in `dir` and a certificate for 127.0.0.1 it signed (`server.pem`, `server.key`),
/// with openssl (which `scripts/test.sh` installs).
pub fn test_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=weir test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
}

/// This package's directory, read when the test runs (cargo sets it), not when it was compiled: the build directory
/// is shared between clones, so a test binary built in another clone must still read this clone's files.
pub fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
