//! Pipelines on a cluster: a `weir scheduler` and two `weir executor`s started on free ports of 127.0.0.1 (Apache
//! DataFusion Ballista inside), and the same pipeline run here and with `--engine`, their outputs compared.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::common::mysql::TestMyDb;
use crate::common::postgres::TestDb;
use crate::common::running::Running;
use crate::common::server::{Server, free_port};
use crate::common::{Project, parquet_rows};
use crate::lakes::deltalake;

/// A scheduler and its executors, each a `weir` process, stopped when dropped.
struct Cluster {
    scheduler: Running,
    executors: Vec<Executor>,
    pub engine: String,
}

struct Executor {
    process: Running,
    work_dir: PathBuf,
}

impl Cluster {
    /// A scheduler that gives up on an executor after 5 s without a heartbeat, and `executors` executors of two
    /// task slots and 512 MB each, with their shuffle files under `p`.
    fn start(p: &Project, executors: usize) -> Self {
        let port = free_port();
        let scheduler_at = format!("127.0.0.1:{port}");
        let mut scheduler =
            Running::start(p, &[], &["scheduler", "--listen", &scheduler_at, "--executor-timeout", "5"]);
        let started = Instant::now();
        while std::net::TcpStream::connect(&scheduler_at).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "the scheduler did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let executors = (0..executors)
            .map(|i| {
                let work_dir = p.path().join(format!("executor-{i}"));
                std::fs::create_dir_all(&work_dir).unwrap();
                let (flight, grpc) = (free_port().to_string(), free_port().to_string());
                let args = [
                    "executor",
                    "--scheduler",
                    &scheduler_at,
                    "--flight-port",
                    &flight,
                    "--grpc-port",
                    &grpc,
                    "--concurrent-tasks",
                    "2",
                    "--heartbeat",
                    "1",
                    "--memory-limit",
                    "512MB",
                    "--work-dir",
                    work_dir.to_str().unwrap(),
                ];
                // Debug lines of Weir's connectors name the database scans an executor runs.
                let process = Running::start(p, &[("WEIR_LOG", "info,weir_connectors=debug".into())], &args);
                scheduler.wait_for("register executor");
                Executor { process, work_dir }
            })
            .collect();
        Self { scheduler, executors, engine: format!("ballista://{scheduler_at}") }
    }
}

impl Cluster {
    /// Whether some executor's log so far holds `every` text (database scans log their SQL at debug level).
    fn an_executor_logged(&mut self, every: &[&str]) -> bool {
        self.executors.iter_mut().any(|e| {
            let log = e.process.log_so_far();
            every.iter().all(|text| log.contains(text))
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.executors.iter_mut().map(|e| &mut e.process).chain([&mut self.scheduler]) {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// The rows of the Parquet file or directory at `path`, sorted: a cluster's output comes in another order.
fn sorted_rows(path: PathBuf) -> Vec<String> {
    let mut rows = parquet_rows(path);
    rows.sort();
    rows
}

/// `rows` orders as `files` Parquet files under `dir`: each order id twice (two versions, the later with a higher
/// `updated_at`), over 500 customers.
fn orders_parquet(dir: &Path, rows: u64, files: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        let query = format!(
            "SELECT value % {half} AS order_id, value % 500 AS customer_id, CAST(value % 997 AS DOUBLE) / 4 AS amount,
                    CAST(value AS BIGINT) AS updated_at
             FROM generate_series(1, {rows})",
            half = rows / 2
        );
        let df = ctx.sql(&query).await.unwrap();
        let df = df.repartition(datafusion::logical_expr::Partitioning::RoundRobinBatch(files)).unwrap();
        df.write_parquet(dir.to_str().unwrap(), DataFrameWriteOptions::new(), None).await.unwrap();
        let written = ctx.read_parquet(dir.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        assert_eq!(written.count().await.unwrap(), rows as usize);
    });
}

#[test]
fn the_orders_example_runs_on_a_cluster_with_the_rows_and_dead_letters_of_a_local_run() {
    let local = Project::example("orders");
    let remote = Project::example("orders");
    let cluster = Cluster::start(&remote, 2);

    let plan = remote.ok(&["explain", "pipeline.yaml", "--engine", &cluster.engine]);
    for (step, place) in [
        ("raw_orders", "[here: the cluster cannot run a `read_csv` step]"),
        ("clean <- raw_orders  [cluster]", ""),
        ("valid <- clean", "[here: the cluster cannot run a `validate` step]"),
        ("latest <- valid  [cluster]", ""),
        ("monthly <- latest  [cluster]", ""),
    ] {
        let line = plan.lines().find(|l| l.trim_start().starts_with(step)).unwrap_or_else(|| panic!("{step}:\n{plan}"));
        assert!(line.contains(place), "{step} should be {place}:\n{plan}");
    }
    assert!(plan.contains("DistributedQueryExec"), "the load reads the cluster's result:\n{plan}");

    local.ok(&["run", "pipeline.yaml"]);
    let log = remote.ok_log(&["run", "pipeline.yaml", "--engine", &cluster.engine]);
    assert!(log.contains("`valid` runs here"), "{log}");
    assert_eq!(
        sorted_rows(remote.path().join("out/monthly_spend.parquet")),
        sorted_rows(local.path().join("out/monthly_spend.parquet"))
    );
    let letters = |p: &Project| {
        let mut reasons: Vec<String> =
            p.dlq("pipeline.yaml").iter().map(|d| format!("{} {}", d["step"], d["reason"])).collect();
        reasons.sort();
        reasons
    };
    let expected = letters(&local);
    assert!(!expected.is_empty(), "the example sets rows aside");
    assert_eq!(letters(&remote), expected);
}

/// `join.yaml`: orders from a Parquet directory joined with a PostgreSQL table of customers, deduplicated, to a
/// Parquet file and upserted into a Delta table, the orders directory given as `--var orders=…`.
fn join_pipeline(p: &Project, db: &TestDb) {
    p.file(
        "join.yaml",
        &format!(
            r#"name: cluster_join
variables:
  orders: {{ type: string }}
connections:
  app: {{ kind: postgres, url: "{url}" }}
steps:
  orders:
    read_parquet: {{ path: "{{{{ var.orders }}}}" }}
  customers:
    read_db: {{ connection: app, table: customers }}
  latest:
    dedup: {{ input: orders, keys: [order_id], order_by: updated_at DESC }}
  by_region:
    sql:
      query: |
        SELECT c.region, count(*) AS orders, sum(l.amount) AS amount
        FROM latest l JOIN customers c ON c.id = l.customer_id
        GROUP BY c.region
  report:
    write_parquet: {{ input: by_region, path: out/by_region.parquet }}
  lake:
    write_delta: {{ input: latest, path: lake/orders, mode: upsert, keys: [order_id] }}
"#,
            url = db.url()
        ),
    );
}

#[test]
fn a_parquet_join_with_a_postgres_table_and_a_delta_upsert_on_a_cluster_equal_the_local_run() {
    let db = TestDb::new();
    db.exec(
        "CREATE TABLE customers (id bigint PRIMARY KEY, region text);
         INSERT INTO customers SELECT g, CASE g % 3 WHEN 0 THEN 'eu' WHEN 1 THEN 'us' ELSE 'apac' END
         FROM generate_series(0, 499) g",
    );
    let local = Project::new();
    let remote = Project::new();
    let mut cluster = Cluster::start(&remote, 2);
    for p in [&local, &remote] {
        join_pipeline(p, &db);
        orders_parquet(&p.path().join("day1"), 20_000, 3);
        orders_parquet(&p.path().join("day2"), 30_000, 2);
    }
    let plan = remote.ok(&["explain", "join.yaml", "--engine", &cluster.engine, "--var", "orders=day1"]);
    assert!(plan.contains("orders  [cluster]"), "{plan}");
    assert!(plan.contains("customers  [cluster]"), "a PostgreSQL scan runs on the executors: {plan}");
    assert!(plan.contains("by_region <- latest, customers  [cluster]"), "{plan}");

    for day in ["orders=day1", "orders=day2"] {
        local.ok(&["run", "join.yaml", "--var", day]);
        remote.ok(&["run", "join.yaml", "--engine", &cluster.engine, "--var", day]);
        let report = sorted_rows(remote.path().join("out/by_region.parquet"));
        assert_eq!(report, sorted_rows(local.path().join("out/by_region.parquet")), "{day}");
        assert!(report.iter().any(|r| r.contains("apac")), "{report:?}");
    }
    assert!(
        cluster.an_executor_logged(&["Postgres scan: SELECT"]),
        "an executor, not this machine, read the customers from PostgreSQL"
    );
    let lake = |p: &Project| deltalake(p.path().join("lake/orders").to_str().unwrap(), None, "").rows;
    let rows = lake(&remote);
    assert_eq!(rows.len(), 15_000, "day2's orders upserted over day1's");
    assert_eq!(rows, lake(&local));
}

#[test]
fn weir_serve_runs_a_pipeline_whose_settings_name_a_cluster_on_it() {
    let db = TestDb::new();
    db.exec(
        "CREATE TABLE customers (id bigint PRIMARY KEY, region text);
         INSERT INTO customers SELECT g, CASE g % 2 WHEN 0 THEN 'eu' ELSE 'us' END FROM generate_series(0, 499) g",
    );
    let local = Project::new();
    let served = Project::new();
    let mut cluster = Cluster::start(&served, 2);
    for p in [&local, &served] {
        join_pipeline(p, &db);
        orders_parquet(&p.path().join("day1"), 20_000, 3);
    }
    let named = served.read("join.yaml").replacen(
        "name: cluster_join\n",
        &format!("name: cluster_join\nsettings: {{ engine: \"{}\" }}\n", cluster.engine),
        1,
    );
    served.file("join.yaml", &named);
    local.ok(&["run", "join.yaml", "--var", "orders=day1"]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let server = Server::start(served.path()).await;
        let (status, body) =
            server.post("/api/pipelines/cluster_join/runs?wait=true", &[], r#"{"orders":"day1"}"#).await;
        assert_eq!(status, 200, "{body}\n{}", server.log());
    });
    let report = sorted_rows(served.path().join("out/by_region.parquet"));
    assert_eq!(report, sorted_rows(local.path().join("out/by_region.parquet")));
    assert!(cluster.an_executor_logged(&["Postgres scan: SELECT"]), "the served run's queries went to the cluster");
}

#[test]
fn a_mariadb_query_with_a_bound_variable_runs_on_the_executors_with_the_rows_of_a_local_run() {
    let db = TestMyDb::new();
    db.exec(
        "CREATE TABLE customers (id bigint PRIMARY KEY, region varchar(8));
         INSERT INTO customers SELECT seq, ELT(seq % 3 + 1, 'eu', 'us', 'apac') FROM seq_0_to_499",
    );
    let local = Project::new();
    let remote = Project::new();
    let mut cluster = Cluster::start(&remote, 2);
    for p in [&local, &remote] {
        p.file(
            "regions.yaml",
            &format!(
                r#"name: cluster_mariadb
variables:
  from_id: {{ type: integer, default: 100 }}
connections:
  app: {{ kind: mysql, url: "{url}" }}
steps:
  customers:
    read_db: {{ connection: app, query: "SELECT id, region FROM customers WHERE id >= $from_id" }}
  by_region:
    sql: {{ query: "SELECT region, count(*) AS customers, max(id) AS last FROM customers WHERE id < 400 GROUP BY region" }}
  report:
    write_parquet: {{ input: by_region, path: out/regions.parquet }}
"#,
                url = db.url()
            ),
        );
    }
    let plan = remote.ok(&["explain", "regions.yaml", "--engine", &cluster.engine]);
    assert!(plan.contains("customers  [cluster]"), "{plan}");
    local.ok(&["run", "regions.yaml", "--var", "from_id=250"]);
    remote.ok(&["run", "regions.yaml", "--engine", &cluster.engine, "--var", "from_id=250"]);
    let report = sorted_rows(remote.path().join("out/regions.parquet"));
    assert_eq!(report, sorted_rows(local.path().join("out/regions.parquet")));
    let regions = report.iter().filter(|r| r.contains("| 50 ")).count();
    assert_eq!(regions, 3, "ids 250 to 399 in three regions: {report:?}");
    assert!(
        cluster.an_executor_logged(&["MySql scan: SELECT", "(`id` < 400)"]),
        "an executor read the customers from MariaDB with the filter pushed down"
    );
}

#[test]
fn a_run_survives_an_executor_killed_mid_query_with_the_same_rows() {
    let local = Project::new();
    let remote = Project::new();
    let cluster = Cluster::start(&remote, 2);
    let pipeline = "name: cluster_kill
steps:
  orders:
    read_parquet: { path: orders }
  latest:
    dedup: { input: orders, keys: [order_id], order_by: updated_at DESC }
  spend:
    sql:
      query: SELECT customer_id, count(*) AS orders, sum(amount) AS amount FROM latest GROUP BY customer_id
  out:
    write_parquet: { input: spend, path: out/spend.parquet }
";
    for p in [&local, &remote] {
        p.file("kill.yaml", pipeline);
        orders_parquet(&p.path().join("orders"), 3_000_000, 8);
    }
    local.ok(&["run", "kill.yaml"]);

    let mut run = Running::start(&remote, &[], &["run", "kill.yaml", "--engine", &cluster.engine]);
    // An executor is mid-query once its work directory holds shuffle files of the run's job: kill the first.
    let started = Instant::now();
    let victim = loop {
        if let Some(busy) = cluster.executors.iter().position(|e| has_files(&e.work_dir)) {
            break busy;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no executor got a task");
        assert!(run.child.try_wait().unwrap().is_none(), "the run ended before an executor wrote shuffle files");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut cluster = cluster;
    let victim = &mut cluster.executors[victim].process.child;
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (code, log) = run.finish();
    assert_eq!(code, Some(0), "{log}");
    // The scheduler ran the killed executor's tasks again: the kill came mid-query, not after it.
    cluster.scheduler.wait_for("on lost Executor");
    assert_eq!(
        sorted_rows(remote.path().join("out/spend.parquet")),
        sorted_rows(local.path().join("out/spend.parquet"))
    );
}

fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() { has_files(&path) } else { true }
    })
}

#[test]
fn a_cluster_that_cannot_be_reached_fails_the_run_before_it_starts_saying_how_to_fix_it() {
    let p = Project::example("orders");
    let engine = format!("ballista://127.0.0.1:{}", free_port());
    let out = p.fails(&["run", "pipeline.yaml", "--engine", &engine], 2);
    assert!(out.contains(&format!("cannot reach the scheduler at {engine}")), "{out}");
    assert!(out.contains("start one with `weir scheduler`"), "{out}");
    assert!(!p.path().join("out/monthly_spend.parquet").exists());
    // Planning needs no cluster: what would run where is shown without one.
    assert!(p.ok(&["explain", "pipeline.yaml", "--engine", &engine]).contains("latest <- valid  [cluster]"));
    let wrong = p.fails(&["run", "pipeline.yaml", "--engine", "spark://127.0.0.1:7077"], 2);
    assert!(wrong.contains("write the scheduler as ballista://host:port"), "{wrong}");
}
