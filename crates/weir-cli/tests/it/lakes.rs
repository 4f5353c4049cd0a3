//! Delta Lake tables, read and written by Weir and by the tools its users read them with: pip `deltalake`
//! (delta-rs's Python package) and DuckDB's `delta` extension, both installed by `scripts/test.sh`, on local disk
//! and on the S3 server the object-storage tests start.

use std::process::Command;

use crate::common::Project;
use crate::common::postgres::TestDb;
use crate::common::running::Running;
use crate::object_store::S3Server;

/// A Delta table as another tool reads it.
#[derive(Debug)]
pub(crate) struct Read {
    version: i64,
    /// `name:type` of each column, in order.
    schema: String,
    partitions: String,
    /// Each row as `value|value|…`, sorted by the first column.
    pub(crate) rows: Vec<String>,
}

impl Read {
    fn parse(out: &str) -> Self {
        let mut lines = out.lines();
        let mut next = || lines.next().unwrap_or_default().to_string();
        let version = next().parse().unwrap_or_else(|_| panic!("a version first:\n{out}"));
        let schema = next();
        let partitions = next();
        let rows = out.lines().skip(3).map(str::to_string).collect();
        Self { version, schema, partitions, rows }
    }
}

/// Runs a Python `script` with `args`; its standard output.
fn python(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The table at `uri` (a path or URL), as of `version` when given, as pip `deltalake` reads it.
pub(crate) fn deltalake(uri: &str, version: Option<i64>, storage: &str) -> Read {
    const SCRIPT: &str = r#"
import json, os, sys
from deltalake import DeltaTable
uri, version, storage = sys.argv[1], sys.argv[2], json.loads(sys.argv[3] or "{}")
t = DeltaTable(uri, version=int(version) if version else None, storage_options=storage or None)
table = t.to_pyarrow_table()
print(t.version())
print(",".join(f"{f.name}:{f.type}" for f in table.schema))
print(",".join(t.metadata().partition_columns))
for row in sorted(table.to_pylist(), key=lambda r: next(iter(r.values()))):
    print("|".join(str(row[f.name]) for f in table.schema))
sys.stdout.flush()
os._exit(0)  # deltalake's runtime can keep a process from exiting
"#;
    let version = version.map(|v| v.to_string()).unwrap_or_default();
    Read::parse(&python(SCRIPT, &[uri, &version, storage], &[]))
}

/// The newest version of the local table at `path`, as DuckDB's `delta` extension reads it (its version line is
/// pip `deltalake`'s, as DuckDB does not say).
fn duckdb(path: &std::path::Path) -> Read {
    const SCRIPT: &str = r#"
import glob, os, sys
import duckdb, duckdb_extension_delta
path = sys.argv[1]
con = duckdb.connect()
con.execute(f"LOAD '{glob.glob(duckdb_extension_delta.__path__[0] + '/extensions/*/delta.duckdb_extension')[0]}'")
query = f"SELECT * FROM delta_scan('{path}') ORDER BY 1"
print(-1)
print(",".join(f"{name}:{ty}" for name, ty, *_ in con.execute(f"DESCRIBE {query}").fetchall()))
print()
for row in con.execute(query).fetchall():
    print("|".join(str(v) for v in row))
"#;
    let dir = std::env::var("WEIR_DUCKDB_DELTA").unwrap_or_else(|_| "/var/tmp/weir-duckdb-delta/1.5.2".into());
    Read::parse(&python(SCRIPT, &[path.to_str().unwrap()], &[("PYTHONPATH", &dir)]))
}

/// A pipeline `{name}.yaml` loading the CSV file `csv` into the Delta table at `lake/orders` with the given
/// `write_delta` settings.
fn load(p: &Project, name: &str, csv: &str, settings: &str) {
    p.file(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nsteps:\n  input:\n    read_csv: {{ path: {csv} }}\n  lake:\n    write_delta: {{ input: input, path: lake/orders, {settings} }}\n"
        ),
    );
}

fn local(p: &Project) -> String {
    p.path().join("lake/orders").display().to_string()
}

const ORDERS: &str = "id,customer,amount,day\n1,alice,10.5,2024-01-15\n2,bob,20,2024-01-15\n3,carol,7.25,2024-01-16\n4,dave,3,2024-01-17\n";

#[test]
fn every_write_mode_is_read_back_by_pip_deltalake_and_duckdb_with_its_rows_and_types() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS)
        .file("data/more.csv", "id,customer,amount,day\n5,erin,99,2024-01-17\n")
        .file("data/changes.csv", "id,customer,amount,day,deleted\n2,bob,25,2024-01-15,false\n3,carol,7.25,2024-01-16,true\n6,frank,1.5,2024-01-16,false\n")
        .file("data/day16.csv", "id,customer,amount,day\n7,grace,70,2024-01-16\n")
        .file("data/gone.csv", "id\n1\n")
        .file("data/channel.csv", "id,customer,amount,day,channel\n8,heidi,8,2024-01-17,web\n");
    load(&p, "create", "data/orders.csv", "partition_by: [day]");
    load(&p, "append", "data/more.csv", "mode: append");
    load(&p, "upsert", "data/changes.csv", "mode: upsert, keys: [id], delete_when: deleted");
    load(&p, "replace", "data/day16.csv", "mode: overwrite, replace_where: \"day = '2024-01-16'\"");
    load(&p, "delete", "data/gone.csv", "mode: delete, keys: [id]");
    load(&p, "evolve", "data/channel.csv", "schema_evolution: evolve");
    let table = local(&p);

    let log = p.ok_log(&["run", "create.yaml"]);
    assert!(log.contains("version 0 when the run commits"), "{log}");
    let read = deltalake(&table, None, "");
    assert_eq!(read.version, 0);
    assert_eq!(read.schema, "id:int64,customer:string,amount:double,day:date32[day]");
    assert_eq!(read.partitions, "day");
    assert_eq!(
        read.rows,
        ["1|alice|10.5|2024-01-15", "2|bob|20.0|2024-01-15", "3|carol|7.25|2024-01-16", "4|dave|3.0|2024-01-17"]
    );
    assert_eq!(std::fs::read_dir(p.path().join("lake/orders")).unwrap().count(), 4, "_delta_log and three partitions");

    p.ok(&["run", "append.yaml"]);
    assert_eq!(deltalake(&table, None, "").rows.len(), 5);

    let log = p.ok_log(&["run", "upsert.yaml"]);
    assert!(log.contains("1 inserted, 1 updated, 1 deleted"), "{log}");
    let upserted = [
        "1|alice|10.5|2024-01-15",
        "2|bob|25.0|2024-01-15",
        "4|dave|3.0|2024-01-17",
        "5|erin|99.0|2024-01-17",
        "6|frank|1.5|2024-01-16",
    ];
    assert_eq!(deltalake(&table, None, "").rows, upserted);

    p.ok(&["run", "replace.yaml"]);
    let replaced = [
        "1|alice|10.5|2024-01-15",
        "2|bob|25.0|2024-01-15",
        "4|dave|3.0|2024-01-17",
        "5|erin|99.0|2024-01-17",
        "7|grace|70.0|2024-01-16",
    ];
    assert_eq!(deltalake(&table, None, "").rows, replaced, "only the named partition is replaced");

    p.ok(&["run", "delete.yaml"]);
    assert_eq!(deltalake(&table, None, "").rows, replaced[1..]);

    p.ok(&["run", "evolve.yaml"]);
    let read = deltalake(&table, None, "");
    assert_eq!(read.version, 5, "one version per load");
    assert_eq!(read.schema, "id:int64,customer:string,amount:double,day:date32[day],channel:string");
    assert_eq!(read.rows.first().unwrap(), "2|bob|25.0|2024-01-15|None");
    assert_eq!(read.rows.last().unwrap(), "8|heidi|8.0|2024-01-17|web");

    let by_duckdb = duckdb(&p.path().join("lake/orders"));
    assert_eq!(by_duckdb.schema, "id:BIGINT,customer:VARCHAR,amount:DOUBLE,day:DATE,channel:VARCHAR");
    assert_eq!(by_duckdb.rows, read.rows);

    // Old versions stay readable, by other tools and by Weir.
    assert_eq!(deltalake(&table, Some(2), "").rows, upserted);
    p.file(
        "as_of.yaml",
        "name: as_of\nsteps:\n  then:\n    read_delta: { path: lake/orders, version: 2 }\n  sorted:\n    sql: { query: \"SELECT id, customer FROM then ORDER BY id\" }\n  out:\n    write_csv: { input: sorted, path: out/v2.csv }\n",
    );
    p.ok(&["run", "as_of.yaml"]);
    assert_eq!(p.read("out/v2.csv"), "id,customer\n1,alice\n2,bob\n4,dave\n5,erin\n6,frank\n");
}

#[test]
fn tables_pip_deltalake_writes_partitioned_evolved_and_merged_are_read_by_weir_with_partition_pruning() {
    const WRITE: &str = r#"
import os, sys, datetime
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path = sys.argv[1]
day = lambda d: datetime.date(2024, 1, d)
write_deltalake(path, pa.table({"id": [1, 2, 3], "day": [day(15), day(15), day(16)], "amount": [1.5, 2.5, 3.5]}), partition_by=["day"])
write_deltalake(path, pa.table({"id": [4], "day": [day(17)], "amount": [4.5], "note": ["new"]}), mode="append", schema_mode="merge")
source = pa.table({"id": [2, 5], "day": [day(15), day(15)], "amount": [20.0, 5.5], "note": ["changed", "added"]})
(DeltaTable(path).merge(source, "t.id = s.id", source_alias="s", target_alias="t")
    .when_matched_update_all().when_not_matched_insert_all().execute())
os._exit(0)
"#;
    let p = Project::new();
    python(WRITE, &[p.path().join("lake/orders").to_str().unwrap()], &[]);
    p.file(
        "read.yaml",
        "name: read\nsteps:\n  transactions:\n    read_delta: { path: lake/orders }\n  jan15:\n    sql: { query: \"SELECT id, amount, note FROM transactions WHERE day = '2024-01-15' ORDER BY id\" }\n  out:\n    write_csv: { input: jan15, path: out/jan15.csv }\n",
    );
    p.ok(&["run", "read.yaml"]);
    assert_eq!(p.read("out/jan15.csv"), "id,amount,note\n1,1.5,\n2,20.0,changed\n5,5.5,added\n");

    // Only the partition the filter names is scanned.
    let plan = p.ok(&["explain", "read.yaml"]);
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains("day=2024-01-15") && !scan.contains("day=2024-01-16"), "{plan}");

    p.file(
        "first.yaml",
        "name: first\nsteps:\n  then:\n    read_delta: { path: lake/orders, version: 0 }\n  sorted:\n    sql: { query: SELECT * FROM then ORDER BY id }\n  out:\n    write_csv: { input: sorted, path: out/v0.csv }\n",
    );
    p.ok(&["run", "first.yaml"]);
    assert_eq!(p.read("out/v0.csv"), "id,day,amount\n1,2024-01-15,1.5\n2,2024-01-15,2.5\n3,2024-01-16,3.5\n");
}

#[test]
fn changes_since_reads_each_committed_change_once_through_the_change_data_feed() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS).file(
        "data/changes.csv",
        "id,customer,amount,day,deleted\n2,bob,25,2024-01-15,false\n3,carol,7.25,2024-01-16,true\n",
    );
    load(&p, "create", "data/orders.csv", "properties: { delta.enableChangeDataFeed: \"true\" }");
    load(&p, "upsert", "data/changes.csv", "mode: upsert, keys: [id], delete_when: deleted");
    p.file(
        "feed.yaml",
        "name: feed\nstate:\n  seen: { type: integer, default: -1, update: { max: changes._commit_version } }\nsteps:\n  changes:\n    read_delta: { path: lake/orders, changes_since: \"{{ state.seen }}\" }\n  sorted:\n    sql: { query: \"SELECT id, _change_type, _commit_version FROM changes ORDER BY _commit_version, id, _change_type\" }\n  out:\n    write_csv: { input: sorted, path: \"out/{{ run.id }}.csv\" }\n",
    );
    let feed = |p: &Project| {
        let before: Vec<_> =
            std::fs::read_dir(p.path().join("out")).into_iter().flatten().flatten().map(|e| e.path()).collect();
        p.ok(&["run", "feed.yaml"]);
        let new =
            std::fs::read_dir(p.path().join("out")).unwrap().flatten().map(|e| e.path()).find(|f| !before.contains(f));
        std::fs::read_to_string(new.expect("each run writes its file")).unwrap()
    };
    p.ok(&["run", "create.yaml"]);
    assert_eq!(feed(&p), "id,_change_type,_commit_version\n1,insert,0\n2,insert,0\n3,insert,0\n4,insert,0\n");
    assert_eq!(feed(&p), "id,_change_type,_commit_version\n", "nothing new");
    p.ok(&["run", "upsert.yaml"]);
    assert_eq!(feed(&p), "id,_change_type,_commit_version\n2,update_postimage,1\n2,update_preimage,1\n3,delete,1\n");

    // A table without the feed is named, with the property that turns it on.
    let p2 = Project::new();
    p2.file("data/orders.csv", ORDERS).file("feed.yaml", &p.read("feed.yaml"));
    load(&p2, "plain", "data/orders.csv", "mode: append");
    p2.ok(&["run", "plain.yaml"]);
    let err = p2.fails(&["run", "feed.yaml"], 2);
    assert!(err.contains("has no change data feed") && err.contains("delta.enableChangeDataFeed"), "{err}");
}

#[test]
fn a_failed_or_dry_run_adds_no_version_and_the_schema_policy_is_kept() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS)
        .file("data/wide.csv", "id,customer,amount,day,channel\n9,ivan,9,2024-01-17,web\n");
    load(&p, "create", "data/orders.csv", "mode: append");
    p.ok(&["run", "create.yaml"]);

    // The second load fails (its directory is a file), so the Delta load's commit is never made.
    p.file("blocked", "a file, not a directory");
    p.file(
        "both.yaml",
        "name: both\nsteps:\n  input:\n    read_csv: { path: data/orders.csv }\n  lake:\n    write_delta: { input: input, path: lake/orders }\n  copy:\n    write_csv: { input: input, path: blocked/orders.csv }\n",
    );
    p.fails(&["run", "both.yaml"], 2);
    p.ok(&["run", "create.yaml", "--dry-run"]);
    let read = deltalake(&local(&p), None, "");
    assert_eq!((read.version, read.rows.len()), (0, 4), "{read:?}");

    load(&p, "frozen", "data/wide.csv", "schema_evolution: freeze");
    let err = p.fails(&["run", "frozen.yaml"], 2);
    assert!(err.contains("has no column `channel`") && err.contains("schema_evolution: evolve"), "{err}");
    load(&p, "discarded", "data/wide.csv", "schema_evolution: discard");
    p.ok(&["run", "discarded.yaml"]);
    let read = deltalake(&local(&p), None, "");
    assert_eq!(read.schema, "id:int64,customer:string,amount:double,day:date32[day]");
    assert_eq!(read.rows.last().unwrap(), "9|ivan|9.0|2024-01-17");

    let missing = Project::new();
    missing.file("r.yaml", "name: r\nsteps:\n  t:\n    read_delta: { path: nowhere }\n  out:\n    write_csv: { input: t, path: out/t.csv }\n");
    std::fs::create_dir(missing.path().join("nowhere")).unwrap();
    let err = missing.fails(&["run", "r.yaml"], 2);
    assert!(err.contains("step `t`") && err.contains("is not a Delta table"), "{err}");

    // Deleting from a table that does not exist yet deletes nothing and creates no table.
    missing.file("data/gone.csv", "id\n1\n");
    load(&missing, "delete", "data/gone.csv", "mode: delete, keys: [id]");
    assert!(missing.ok_log(&["run", "delete.yaml"]).contains("nothing to delete"));
    assert!(!missing.path().join("lake/orders/_delta_log").exists());
}

/// What holds a run with its lake load prepared and not committed: a second load, into a PostgreSQL table the
/// test has locked, waits for the lock, and a run commits its loads only once all are prepared. (A `write_api`
/// load would not do: it sends at commit, after the lake's commit.)
pub(crate) struct Hold {
    db: TestDb,
}

impl Hold {
    /// The table, locked until [`Hold::release`].
    pub(crate) fn locked() -> Self {
        let db = TestDb::new();
        db.exec("CREATE TABLE held (id bigint)");
        db.exec("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE");
        Self { db }
    }

    /// The connection to list under `connections:`.
    pub(crate) fn connection(&self) -> String {
        format!("  held_db: {{ kind: postgres, url: \"{}\" }}\n", self.db.url())
    }

    /// The step that waits: `input` loaded into the locked table.
    pub(crate) fn step(&self, input: &str) -> String {
        format!("  aside:\n    write_db: {{ input: {input}, connection: held_db, table: held }}\n")
    }

    /// Lets the waiting load (and any later run) through.
    pub(crate) fn release(&self) {
        self.db.exec("COMMIT");
    }
}

/// `held.yaml`: the orders appended to `lake/orders`, in a run that `hold` holds before its commit.
fn held_pipeline(p: &Project, hold: &Hold) {
    p.file(
        "held.yaml",
        &format!(
            "name: held\nconnections:\n{}steps:\n  input:\n    read_csv: {{ path: data/orders.csv }}\n  lake:\n    write_delta: {{ input: input, path: lake/orders }}\n{}",
            hold.connection(),
            hold.step("input")
        ),
    );
}

#[test]
fn a_run_killed_before_its_commit_leaves_the_table_at_its_last_version_and_a_rerun_adds_it_once() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS);
    load(&p, "create", "data/orders.csv", "mode: append");
    p.ok(&["run", "create.yaml"]);
    let hold = Hold::locked();
    held_pipeline(&p, &hold);

    let mut run = Running::start(&p, &[], &["run", "held.yaml"]);
    run.wait_for("version 1 when the run commits");
    run.child.kill().unwrap();
    let (code, _) = run.finish();
    assert_eq!(code, None, "killed by a signal");

    let read = deltalake(&local(&p), None, "");
    assert_eq!((read.version, read.rows.len()), (0, 4), "{read:?}");
    let written = walk_parquet(&p.path().join("lake/orders"));
    assert_eq!(written, 2, "the killed run wrote its data file, which no version names");

    hold.release();
    p.ok(&["run", "held.yaml"]);
    let read = deltalake(&local(&p), None, "");
    assert_eq!((read.version, read.rows.len()), (1, 8), "{read:?}");
    assert_eq!(walk_parquet(&p.path().join("lake/orders")), 3);

    // Maintenance compacts the two loads' files into one and removes the replaced and the unnamed files.
    p.file(
        "tidy.yaml",
        "name: tidy\nsteps:\n  tidy:\n    maintain_delta: { path: lake/orders, optimize: true, vacuum: 0s, checkpoint: true }\n",
    );
    let log = p.ok_log(&["run", "tidy.yaml"]);
    assert!(log.contains("2 files into 1") && log.contains("3 files removed"), "{log}");
    assert_eq!(walk_parquet(&p.path().join("lake/orders")), 1, "one data file left");
    let read = deltalake(&local(&p), None, "");
    assert_eq!(read.rows.len(), 8, "the same rows: {read:?}");
    let checkpoint = std::fs::read_dir(p.path().join("lake/orders/_delta_log"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".checkpoint.parquet"));
    assert!(checkpoint, "a checkpoint in the log");
}

#[test]
fn a_writer_that_commits_first_moves_a_held_append_to_the_next_version() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS);
    load(&p, "create", "data/orders.csv", "mode: append");
    p.ok(&["run", "create.yaml"]);
    let hold = Hold::locked();
    held_pipeline(&p, &hold);

    let mut held = Running::start(&p, &[], &["run", "held.yaml"]);
    held.wait_for("version 1 when the run commits");
    p.ok(&["run", "create.yaml"]);
    hold.release();
    let (code, log) = held.finish();
    assert_eq!(code, Some(0), "{log}");
    let read = deltalake(&local(&p), None, "");
    assert_eq!((read.version, read.rows.len()), (2, 12), "both appends, each once: {read:?}");
}

/// The data files under `dir` (a checkpoint, in `_delta_log`, is no data file).
fn walk_parquet(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| match e.path() {
            path if path.ends_with("_delta_log") => 0,
            path if path.is_dir() => walk_parquet(&path),
            path => usize::from(path.extension().is_some_and(|x| x == "parquet")),
        })
        .sum()
}

#[test]
fn delta_tables_on_s3_are_written_merged_and_read_through_a_connection() {
    let s3 = S3Server::start();
    let p = Project::new().env("S3_SECRET", "test");
    let uri = format!("s3://{}/lake/orders", s3.bucket);
    p.file("data/orders.csv", ORDERS).file(
        "data/changes.csv",
        "id,customer,amount,day,deleted\n2,bob,25,2024-01-15,false\n3,carol,7.25,2024-01-16,true\n",
    );
    let pipeline = |name: &str, csv: &str, settings: &str| {
        format!(
            "name: {name}\nconnections:\n{}steps:\n  input:\n    read_csv: {{ path: {csv} }}\n  lake:\n    write_delta: {{ input: input, path: \"{uri}\", connection: lake, {settings} }}\n",
            s3.connection()
        )
    };
    p.file("create.yaml", &pipeline("create", "data/orders.csv", "partition_by: [day]"))
        .file("upsert.yaml", &pipeline("upsert", "data/changes.csv", "mode: upsert, keys: [id], delete_when: deleted"));
    p.ok(&["run", "create.yaml"]);
    p.ok(&["run", "upsert.yaml"]);
    assert!(s3.keys("lake/orders/_delta_log").iter().any(|k| k.ends_with("00000000000000000001.json")));

    let storage = format!(
        r#"{{"AWS_ENDPOINT_URL": "{}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}}"#,
        s3.endpoint
    );
    let read = deltalake(&uri, None, &storage);
    assert_eq!(read.version, 1);
    assert_eq!(read.rows, ["1|alice|10.5|2024-01-15", "2|bob|25.0|2024-01-15", "4|dave|3.0|2024-01-17"]);

    p.file(
        "read.yaml",
        &format!(
            "name: read\nconnections:\n{}steps:\n  t:\n    read_delta: {{ path: \"{uri}\", connection: lake, version: 0 }}\n  sorted:\n    sql: {{ query: SELECT id FROM t ORDER BY id }}\n  out:\n    write_csv: {{ input: sorted, path: out/v0.csv }}\n",
            s3.connection()
        ),
    );
    let log = p.ok_log(&["run", "read.yaml"]);
    assert!(!log.contains("secret_access_key: test"), "{log}");
    assert_eq!(p.read("out/v0.csv"), "id\n1\n2\n3\n4\n");

    // Maintenance on the bucket: the upsert rewrote the 2024-01-15 file and the 2024-01-16 one, so vacuum removes
    // the two files version 0 had; compaction finds one file per partition and leaves them.
    let parquet =
        || s3.keys("lake/orders").iter().filter(|k| k.ends_with(".parquet") && !k.contains("_delta_log")).count();
    let before = parquet();
    p.file(
        "tidy.yaml",
        &format!(
            "name: tidy\nconnections:\n{}steps:\n  tidy:\n    maintain_delta: {{ path: \"{uri}\", connection: lake, optimize: true, vacuum: 0s, checkpoint: true }}\n",
            s3.connection()
        ),
    );
    let log = p.ok_log(&["run", "tidy.yaml"]);
    assert!(log.contains("files removed") && log.contains("Wrote a checkpoint"), "{log}");
    assert!(parquet() < before, "vacuum removed files on the bucket: {before} then {}", parquet());
    assert!(s3.keys("lake/orders/_delta_log").iter().any(|k| k.ends_with(".checkpoint.parquet")), "a checkpoint on S3");
    let read = deltalake(&uri, None, &storage);
    assert_eq!(read.rows, ["1|alice|10.5|2024-01-15", "2|bob|25.0|2024-01-15", "4|dave|3.0|2024-01-17"]);
}

#[test]
fn the_lake_examples_merge_exports_into_a_delta_table_and_query_one_day() {
    let p = Project::example("lake");
    p.ok(&["run", "transactions_upsert.yaml"]);
    p.ok(&["run", "transactions_upsert.yaml"]);
    let table = p.path().join("out/delta/transactions").display().to_string();
    let read = deltalake(&table, None, "");
    assert_eq!(read.version, 1, "a re-run is a version of its own");
    assert_eq!(read.rows.len(), 4, "that changes nothing: {read:?}");
    assert_eq!(read.schema, "transaction_id:int64,account:string,amount:decimal128(12, 2),partition_date:date32[day]");

    p.ok(&["run", "transactions_upsert.yaml", "--var", "input=data/corrections.csv"]);
    p.ok(&["run", "transactions_query.yaml"]);
    let mut day: Vec<String> = p.read("out/transactions_2024-01-15.csv").lines().map(str::to_string).collect();
    day[1..].sort();
    assert_eq!(
        day,
        [
            "transaction_id,account,amount,partition_date",
            "1001,acct-1,120.00,2024-01-15",
            "1002,acct-2,53.50,2024-01-15",
            "1005,acct-2,7.00,2024-01-15"
        ]
    );
    let rows = duckdb(&p.path().join("out/delta/transactions")).rows;
    assert_eq!(
        rows,
        [
            "1001|acct-1|120.00|2024-01-15",
            "1002|acct-2|53.50|2024-01-15",
            "1004|acct-3|980.00|2024-01-16",
            "1005|acct-2|7.00|2024-01-15"
        ]
    );
}

#[test]
fn an_overwrite_held_while_another_writer_appends_commits_after_it_and_keeps_the_appended_rows() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS).file("data/more.csv", "id,customer,amount,day\n5,erin,99,2024-01-17\n");
    load(&p, "create", "data/orders.csv", "mode: append");
    load(&p, "more", "data/more.csv", "mode: append");
    p.ok(&["run", "create.yaml"]);
    let hold = Hold::locked();
    p.file(
        "held.yaml",
        &format!(
            "name: held\nconnections:\n{}steps:\n  input:\n    read_csv: {{ path: data/orders.csv }}\n  lake:\n    write_delta: {{ input: input, path: lake/orders, mode: overwrite }}\n{}",
            hold.connection(),
            hold.step("input")
        ),
    );

    let mut held = Running::start(&p, &[], &["run", "held.yaml"]);
    held.wait_for("version 1 when the run commits");
    p.ok(&["run", "more.yaml"]);
    hold.release();
    let (code, log) = held.finish();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("Committed version 2 of Delta table"), "moved past the other writer's version 1: {log}");
    // delta-rs's conflict check lets an overwrite through a concurrent blind append (Delta's WriteSerializable
    // isolation: as if the append came after it), so the appended row stays beside the overwrite's.
    let read = deltalake(&local(&p), None, "");
    assert_eq!((read.version, read.rows.len()), (2, 5), "{read:?}");
    assert_eq!(read.rows.last().unwrap(), "5|erin|99.0|2024-01-17");
}

#[test]
fn a_value_the_table_refuses_fails_the_load_naming_the_record_or_goes_to_the_dead_letters() {
    let p = Project::new();
    p.file("data/orders.csv", ORDERS)
        .file("data/bad.csv", "id,customer,amount,day\n2,bob,lots,2024-01-15\n6,frank,6,2024-01-18\n");
    load(&p, "create", "data/orders.csv", "mode: append");
    p.ok(&["run", "create.yaml"]);
    let pipeline = |on_error: &str| {
        format!(
            "name: bad\nsteps:\n  input:\n    read_csv: {{ path: data/bad.csv, schema: {{ id: bigint, customer: text, amount: text, day: date }} }}\n  lake:\n    on_error: {on_error}\n    write_delta: {{ input: input, path: lake/orders, mode: upsert, keys: [id] }}\n"
        )
    };
    p.file("bad.yaml", &pipeline("fail"));
    let err = p.fails(&["run", "bad.yaml"], 2);
    assert!(
        err.contains("pipeline `bad`, step `lake`") && err.contains("column `amount`: `lots` is not a Float64"),
        "{err}"
    );
    assert!(err.contains(r#""customer":"bob""#), "the record is named: {err}");
    assert_eq!(deltalake(&local(&p), None, "").version, 0, "nothing committed");

    p.file("bad.yaml", &pipeline("dead_letter"));
    p.ok(&["run", "bad.yaml"]);
    let read = deltalake(&local(&p), None, "");
    assert_eq!(read.version, 1);
    assert_eq!(read.rows.len(), 5, "bob untouched, frank inserted: {read:?}");
    assert!(read.rows.contains(&"2|bob|20.0|2024-01-15".to_string()), "{read:?}");
    let dlq = p.dlq("bad.yaml");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!((&dlq[0]["record"]["id"], &dlq[0]["step"]), (&serde_json::json!(2), &serde_json::json!("lake")));
    assert_eq!(dlq[0]["error"], "column `amount`: `lots` is not a Float64");
}
