//! Iceberg tables through a REST catalog, read and written by Weir and by pyiceberg. The catalog is
//! `scripts/iceberg_catalog.py`: the REST protocol answered by pyiceberg's own SQL catalog (no REST catalog server
//! ships in the registries this machine reaches), with its warehouse in the test's directory.

use std::process::Command;

use crate::common::{Project, manifest_dir};
use crate::lakes::Hold;
use crate::object_store::{Process, until_ok};

/// A REST catalog on a free port of 127.0.0.1, its database under `dir`.
struct Catalog {
    _process: Process,
    url: String,
    /// Properties pyiceberg's client needs for the table files (an S3 endpoint), as Python keyword arguments.
    properties: String,
}

impl Catalog {
    /// Tables under `dir/warehouse`.
    fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Tables under `dir/warehouse`, pyiceberg reaching their files with `properties` (data files on S3).
    fn start_with(dir: &std::path::Path, properties: &[(&str, &str)]) -> Self {
        let script = format!("{}/../../scripts/iceberg_catalog.py", manifest_dir());
        let warehouse = dir.join("warehouse");
        let (process, port) =
            Process::start("python3", &[&script, "--port", "{port}", "--warehouse", warehouse.to_str().unwrap()]);
        let url = format!("http://127.0.0.1:{port}");
        until_ok(Command::new("curl").args(["-sf", &format!("{url}/v1/config")]), "the Iceberg catalog");
        let properties = properties.iter().map(|(k, v)| format!(", **{{'{k}': '{v}'}}")).collect();
        Self { _process: process, url, properties }
    }

    /// The connection block of a pipeline.
    fn connection(&self) -> String {
        format!("connections:\n  lake: {{ kind: iceberg_rest, url: \"{}\" }}\n", self.url)
    }

    /// Runs a pyiceberg script with the catalog as `catalog`, and `sys.argv[1:]` = `args`; its standard output.
    fn pyiceberg(&self, script: &str, args: &[&str]) -> String {
        let script = format!(
            "import sys\nfrom pyiceberg.catalog.rest import RestCatalog\ncatalog = RestCatalog('test', uri='{}'{})\n{script}",
            self.url, self.properties
        );
        let out = Command::new("python3").args(["-c", &script]).args(args).output().expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The table as pyiceberg reads it, as of `snapshot` when given: its schema (`name:type,…` in Iceberg's types), its partition
    /// fields, its number of snapshots, then each row as `value|value|…` sorted by the first column.
    fn read(&self, table: &str, snapshot: Option<i64>) -> Vec<String> {
        const SCRIPT: &str = r#"
t = catalog.load_table(sys.argv[1])
snapshot = int(sys.argv[2]) if sys.argv[2] else None
rows = t.scan(snapshot_id=snapshot).to_arrow()
print(",".join(f"{f.name}:{f.field_type}" for f in t.schema().fields))
print(",".join(f.name for f in t.spec().fields))
print(len(t.snapshots()))
for row in sorted(rows.to_pylist(), key=lambda r: next(iter(r.values()))):
    print("|".join(str(v) for v in row.values()))
"#;
        let snapshot = snapshot.map(|s| s.to_string()).unwrap_or_default();
        self.pyiceberg(SCRIPT, &[table, &snapshot]).lines().map(str::to_string).collect()
    }

    /// The table's snapshot ids, oldest first.
    fn snapshots(&self, table: &str) -> Vec<i64> {
        let out =
            self.pyiceberg("for s in catalog.load_table(sys.argv[1]).snapshots(): print(s.snapshot_id)", &[table]);
        out.lines().map(|l| l.parse().unwrap()).collect()
    }
}

const ORDERS: &str = "id,customer,amount,day\n1,alice,10.5,2024-01-15\n2,bob,20,2024-01-15\n3,carol,7.25,2024-01-16\n4,dave,3,2024-01-17\n";

/// A pipeline `{name}.yaml` appending the CSV file `csv` to the Iceberg table `sales.orders`.
fn load(p: &Project, catalog: &Catalog, name: &str, csv: &str, settings: &str) {
    p.file(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\n{}steps:\n  input:\n    read_csv: {{ path: {csv} }}\n  lake:\n    write_iceberg: {{ input: input, catalog: lake, table: sales.orders{settings} }}\n",
            catalog.connection()
        ),
    );
}

#[test]
fn appends_weir_commits_are_read_by_pyiceberg_with_their_rows_types_partitions_and_snapshots() {
    let p = Project::new();
    let catalog = Catalog::start(p.path());
    p.file("data/orders.csv", ORDERS)
        .file("data/wide.csv", "id,customer,amount,day,channel\n5,erin,99,2024-01-17,web\n");
    load(
        &p,
        &catalog,
        "create",
        "data/orders.csv",
        ", partition_by: [day], properties: { write.parquet.compression-codec: zstd }",
    );
    load(&p, &catalog, "evolve", "data/wide.csv", "");
    let log = p.ok_log(&["run", "create.yaml"]);
    assert!(log.contains("Created Iceberg table sales.orders"), "{log}");
    assert!(log.contains("Wrote 4 rows to Iceberg table sales.orders in 3 files"), "one file per day: {log}");
    p.ok(&["run", "evolve.yaml"]);

    let read = catalog.read("sales.orders", None);
    assert_eq!(read[0], "id:long,customer:string,amount:double,day:date,channel:string");
    assert_eq!((read[1].as_str(), read[2].as_str()), ("day", "2"), "partitioned by day, one snapshot per run");
    assert_eq!(
        read[3..],
        [
            "1|alice|10.5|2024-01-15|None",
            "2|bob|20.0|2024-01-15|None",
            "3|carol|7.25|2024-01-16|None",
            "4|dave|3.0|2024-01-17|None",
            "5|erin|99.0|2024-01-17|web",
        ]
    );
    let snapshots = catalog.snapshots("sales.orders");
    let first = catalog.read("sales.orders", Some(snapshots[0]));
    assert_eq!(first.len(), 3 + 4, "the first snapshot holds the first run's rows: {first:?}");
    let summary = catalog.pyiceberg(
        "print(catalog.load_table(sys.argv[1]).current_snapshot().summary['weir.pipeline'])",
        &["sales.orders"],
    );
    assert_eq!(summary.trim(), "evolve", "the run is named in the snapshot's summary");

    // Weir reads the old snapshot by id, and the current one with a filter that leaves one day's file.
    p.file(
        "read.yaml",
        &format!(
            "name: read\n{}steps:\n  old:\n    read_iceberg: {{ catalog: lake, table: sales.orders, snapshot_id: {} }}\n  now:\n    read_iceberg: {{ catalog: lake, table: sales.orders }}\n  day:\n    sql: {{ query: \"SELECT id, channel FROM now WHERE day = DATE '2024-01-17' ORDER BY id\" }}\n  first:\n    sql: {{ query: SELECT id FROM old ORDER BY id }}\n  out_day:\n    write_csv: {{ input: day, path: out/day.csv }}\n  out_first:\n    write_csv: {{ input: first, path: out/first.csv }}\n",
            catalog.connection(),
            snapshots[0]
        ),
    );
    p.ok(&["run", "read.yaml"]);
    assert_eq!(p.read("out/day.csv"), "id,channel\n4,\n5,web\n");
    assert_eq!(p.read("out/first.csv"), "id\n1\n2\n3\n4\n");
    let plan = p.ok(&["explain", "read.yaml"]);
    assert!(plan.contains("IcebergScan: table=sales.orders"), "{plan}");
    assert!(plan.contains("files=2 of 4"), "the two files of 2024-01-17 of the four: {plan}");
}

#[test]
fn a_table_pyiceberg_wrote_is_read_by_weir_as_of_a_time_and_with_pruning() {
    let p = Project::new();
    let catalog = Catalog::start(p.path());
    const SCRIPT: &str = r#"
import time
import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType
schema = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "region", StringType(), required=False),
    NestedField(3, "at", TimestamptzType(), required=False),
)
catalog.create_namespace("ops")
t = catalog.create_table("ops.events", schema, partition_spec=PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "region")))
ts = pa.timestamp("us", tz="UTC")
arrow = pa.schema([("id", pa.int64()), ("region", pa.string()), ("at", ts)])
t.append(pa.table({"id": [1, 2], "region": ["eu", "us"], "at": pa.array([0, 1_000_000], ts)}, schema=arrow))
time.sleep(0.05)
between = int(time.time() * 1000)
time.sleep(0.05)
t.append(pa.table({"id": [3], "region": ["eu"], "at": pa.array([2_000_000], ts)}, schema=arrow))
print(between)
print(t.metadata_location)
"#;
    let out = catalog.pyiceberg(SCRIPT, &[]);
    let (between, metadata) = out.trim().split_once('\n').unwrap();
    let between = between.parse::<i64>().unwrap();
    let instant = chrono::DateTime::from_timestamp_millis(between).unwrap().to_rfc3339();
    p.file(
        "read.yaml",
        &format!(
            "name: read\n{}steps:\n  then:\n    read_iceberg: {{ catalog: lake, table: ops.events, timestamp: \"{instant}\" }}\n  now:\n    read_iceberg: {{ catalog: lake, table: ops.events }}\n  eu:\n    sql: {{ query: \"SELECT id, at FROM now WHERE region = 'eu' ORDER BY id\" }}\n  out_then:\n    write_csv: {{ input: then, path: out/then.csv }}\n  out_eu:\n    write_csv: {{ input: eu, path: out/eu.csv }}\n",
            catalog.connection()
        ),
    );
    p.ok(&["run", "read.yaml"]);
    assert_eq!(p.read("out/then.csv").lines().count(), 3, "the first snapshot's two rows: {}", p.read("out/then.csv"));
    assert_eq!(p.read("out/eu.csv"), "id,at\n1,1970-01-01T00:00:00Z\n3,1970-01-01T00:00:02Z\n");
    let plan = p.ok(&["explain", "read.yaml"]);
    assert!(plan.contains("predicate=region = \"eu\"") || plan.contains("region"), "{plan}");
    assert!(plan.contains("files=2 of 3"), "the us file is skipped: {plan}");

    // Without the catalog: the table as its metadata file describes it, with the same pruning.
    let file = metadata.strip_prefix("file://").unwrap();
    p.file(
        "file.yaml",
        &format!(
            "name: file\nsteps:\n  t:\n    read_iceberg: {{ metadata: \"{file}\" }}\n  eu:\n    sql: {{ query: \"SELECT id FROM t WHERE region = 'eu' ORDER BY id\" }}\n  out:\n    write_csv: {{ input: eu, path: out/file.csv }}\n"
        ),
    );
    p.ok(&["run", "file.yaml"]);
    assert_eq!(p.read("out/file.csv"), "id\n1\n3\n");
    let plan = p.ok(&["explain", "file.yaml"]);
    assert!(plan.contains("files=2 of 3"), "{plan}");
    p.file("nofile.yaml", "name: nofile\nsteps:\n  t:\n    read_iceberg: { metadata: nowhere/v1.metadata.json }\n  out:\n    write_csv: { input: t, path: out/x.csv }\n");
    let err = p.fails(&["run", "nofile.yaml"], 2);
    assert!(
        err.contains("step `t`") && err.contains("cannot read Iceberg metadata file ./nowhere/v1.metadata.json"),
        "{err}"
    );
}

#[test]
fn a_failed_killed_or_dry_run_adds_no_snapshot_and_a_rerun_appends_once() {
    let p = Project::new();
    let catalog = Catalog::start(p.path());
    p.file("data/orders.csv", ORDERS)
        .file("data/wide.csv", "id,customer,amount,day,channel\n9,ivan,9,2024-01-17,web\n");
    load(&p, &catalog, "create", "data/orders.csv", "");
    p.ok(&["run", "create.yaml", "--dry-run"]);
    let dry = catalog.pyiceberg("print(catalog.table_exists(sys.argv[1]))", &["sales.orders"]);
    assert_eq!(dry.trim(), "False", "a dry run creates no table");
    p.ok(&["run", "create.yaml"]);

    // The second load fails (its directory is a file), so the Iceberg append is never committed.
    p.file("blocked", "a file, not a directory");
    p.file(
        "both.yaml",
        &format!(
            "name: both\n{}steps:\n  input:\n    read_csv: {{ path: data/orders.csv }}\n  lake:\n    write_iceberg: {{ input: input, catalog: lake, table: sales.orders }}\n  copy:\n    write_csv: {{ input: input, path: blocked/orders.csv }}\n",
            catalog.connection()
        ),
    );
    p.fails(&["run", "both.yaml"], 2);
    p.ok(&["run", "create.yaml", "--dry-run"]);
    assert_eq!(catalog.read("sales.orders", None)[2..].len(), 1 + 4, "one snapshot, four rows");
    assert_eq!(parquet_files(&p.path().join("warehouse")), 1, "the failed run removed its data file");

    // Killed while another load holds the run before its commit.
    let hold = Hold::locked();
    held_pipeline(&p, &catalog, "data/orders.csv", &hold);
    let mut run = crate::common::running::Running::start(&p, &[], &["run", "held.yaml"]);
    run.wait_for("a new snapshot when the run commits");
    run.child.kill().unwrap();
    let (code, _) = run.finish();
    assert_eq!(code, None, "killed by a signal");
    assert_eq!(catalog.snapshots("sales.orders").len(), 1, "no snapshot from the killed run");
    assert_eq!(parquet_files(&p.path().join("warehouse")), 2, "its data file is left, named by no snapshot");
    hold.release();
    p.ok(&["run", "held.yaml"]);
    let read = catalog.read("sales.orders", None);
    assert_eq!((read[2].as_str(), read[3..].len()), ("2", 8), "the rerun appended the orders once: {read:?}");

    load(&p, &catalog, "frozen", "data/wide.csv", ", schema_evolution: freeze");
    let err = p.fails(&["run", "frozen.yaml"], 2);
    assert!(err.contains("has no column `channel`") && err.contains("schema_evolution: evolve"), "{err}");
    load(&p, &catalog, "discarded", "data/wide.csv", ", schema_evolution: discard");
    p.ok(&["run", "discarded.yaml"]);
    let read = catalog.read("sales.orders", None);
    assert_eq!(read[0], "id:long,customer:string,amount:double,day:date");
    assert_eq!(read.last().unwrap(), "9|ivan|9.0|2024-01-17");

    p.file(
        "missing.yaml",
        &format!(
            "name: missing\n{}steps:\n  t:\n    read_iceberg: {{ catalog: lake, table: sales.nothing }}\n  out:\n    write_csv: {{ input: t, path: out/t.csv }}\n",
            catalog.connection()
        ),
    );
    let err = p.fails(&["run", "missing.yaml"], 2);
    assert!(err.contains("step `t`") && err.contains("Iceberg table `sales.nothing` does not exist"), "{err}");

    p.file(
        "wrong.yaml",
        "name: wrong\nconnections:\n  lake: { kind: postgres, url: \"postgres://localhost/test\" }\nsteps:\n  t:\n    read_iceberg: { catalog: lake, table: sales.orders }\n  out:\n    write_csv: { input: t, path: out/t.csv }\n",
    );
    let err = p.fails(&["validate", "wrong.yaml"], 1);
    assert!(err.contains("is of kind `postgres`, not a catalog") && err.contains("iceberg_rest"), "{err}");
}

/// The Parquet files under `dir`.
fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| match e.path() {
            path if path.is_dir() => parquet_files(&path),
            path => usize::from(path.extension().is_some_and(|x| x == "parquet")),
        })
        .sum()
}

/// The data files on S3, the metadata on local disk: pyiceberg's catalog writes metadata through pyarrow's S3
/// client, whose multipart uploads moto (the tests' S3 server) fails, while the data files are Weir's to write.
#[test]
fn data_files_on_s3_are_written_and_read_through_weirs_object_store_connection() {
    let s3 = crate::object_store::S3Server::start();
    let p = Project::new().env("S3_SECRET", "test");
    let properties = [
        ("s3.endpoint", s3.endpoint.as_str()),
        ("s3.access-key-id", "test"),
        ("s3.secret-access-key", "test"),
        ("s3.region", "us-east-1"),
    ];
    let catalog = Catalog::start_with(p.path(), &properties);
    let connections =
        format!("connections:\n  catalog: {{ kind: iceberg_rest, url: \"{}\" }}\n{}", catalog.url, s3.connection());
    let data = format!("s3://{}/iceberg-data", s3.bucket);
    p.file("data/orders.csv", ORDERS).file(
        "load.yaml",
        &format!(
            "name: load\n{connections}steps:\n  input:\n    read_csv: {{ path: data/orders.csv }}\n  out:\n    write_iceberg: {{ input: input, catalog: catalog, table: sales.orders, connection: lake, partition_by: [day], properties: {{ write.data.path: \"{data}\" }} }}\n"
        ),
    );
    p.ok(&["run", "load.yaml"]);
    p.ok(&["run", "load.yaml"]);
    let keys = s3.keys("iceberg-data");
    assert_eq!(keys.iter().filter(|k| k.ends_with(".parquet")).count(), 6, "a file per day and run on S3: {keys:?}");
    let read = catalog.read("sales.orders", None);
    assert_eq!((read[2].as_str(), read[3..].len()), ("2", 8), "two snapshots of four rows each: {read:?}");

    p.file(
        "read.yaml",
        &format!(
            "name: read\n{connections}steps:\n  t:\n    read_iceberg: {{ catalog: catalog, table: sales.orders, connection: lake }}\n  days:\n    sql: {{ query: \"SELECT day, count(*) AS n FROM t GROUP BY day ORDER BY day\" }}\n  out:\n    write_csv: {{ input: days, path: out/days.csv }}\n"
        ),
    );
    let log = p.ok_log(&["run", "read.yaml"]);
    assert!(!log.contains("secret_access_key: test"), "{log}");
    assert_eq!(p.read("out/days.csv"), "day,n\n2024-01-15,4\n2024-01-16,2\n2024-01-17,2\n");

    // A scan for no columns at all still counts the rows.
    p.file(
        "count.yaml",
        &format!(
            "name: count\n{connections}steps:\n  t:\n    read_iceberg: {{ catalog: catalog, table: sales.orders, connection: lake }}\n  n:\n    sql: {{ query: SELECT count(*) AS n FROM t }}\n  out:\n    write_csv: {{ input: n, path: out/n.csv }}\n"
        ),
    );
    p.ok(&["run", "count.yaml"]);
    assert_eq!(p.read("out/n.csv"), "n\n8\n");
}

/// `held.yaml`: `csv` appended to `sales.orders`, in a run that `hold` holds before its commit.
fn held_pipeline(p: &Project, catalog: &Catalog, csv: &str, hold: &Hold) {
    p.file(
        "held.yaml",
        &format!(
            "name: held\n{}{}steps:\n  input:\n    read_csv: {{ path: {csv} }}\n  lake:\n    write_iceberg: {{ input: input, catalog: lake, table: sales.orders }}\n{}",
            catalog.connection(),
            hold.connection(),
            hold.step("input")
        ),
    );
}

#[test]
fn a_writer_that_commits_first_is_built_on_and_a_concurrent_column_change_refuses_the_append() {
    let p = Project::new();
    let catalog = Catalog::start(p.path());
    p.file("data/orders.csv", ORDERS)
        .file("data/wide.csv", "id,customer,amount,day,channel\n9,ivan,9,2024-01-17,web\n");
    load(&p, &catalog, "create", "data/orders.csv", "");
    p.ok(&["run", "create.yaml"]);

    // Another append commits while Weir holds its own: iceberg-rust refreshes the table and appends on top.
    let hold = Hold::locked();
    held_pipeline(&p, &catalog, "data/orders.csv", &hold);
    let mut held = crate::common::running::Running::start(&p, &[], &["run", "held.yaml"]);
    held.wait_for("a new snapshot when the run commits");
    p.ok(&["run", "create.yaml"]);
    hold.release();
    let (code, log) = held.finish();
    assert_eq!(code, Some(0), "{log}");
    let read = catalog.read("sales.orders", None);
    assert_eq!((read[2].as_str(), read[3..].len()), ("3", 12), "all three appends, each once: {read:?}");

    // Weir's held load adds `channel`; meanwhile another writer adds `region`, taking the field id Weir's files
    // carry for `channel`. The append is refused rather than label the files' column wrongly.
    let hold = Hold::locked();
    held_pipeline(&p, &catalog, "data/wide.csv", &hold);
    let mut held = crate::common::running::Running::start(&p, &[], &["run", "held.yaml"]);
    held.wait_for("a new snapshot when the run commits");
    catalog.pyiceberg(
        "from pyiceberg.types import StringType\nt = catalog.load_table(sys.argv[1])\nwith t.update_schema() as u:\n    u.add_column('region', StringType())",
        &["sales.orders"],
    );
    hold.release();
    let (code, log) = held.finish();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("another writer changed the table's columns") && log.contains("nothing was appended"),
        "{log}"
    );
    let read = catalog.read("sales.orders", None);
    assert_eq!(read[2], "3", "no snapshot from the refused append: {read:?}");
    assert_eq!(read[3..].len(), 12);
}

#[test]
fn a_value_the_table_refuses_fails_the_load_naming_the_record_or_goes_to_the_dead_letters() {
    let p = Project::new();
    let catalog = Catalog::start(p.path());
    p.file("data/orders.csv", ORDERS)
        .file("data/bad.csv", "id,customer,amount,day\n5,erin,lots,2024-01-17\n6,frank,6,2024-01-18\n");
    load(&p, &catalog, "create", "data/orders.csv", "");
    p.ok(&["run", "create.yaml"]);

    let pipeline = |on_error: &str| {
        format!(
            "name: bad\n{}steps:\n  input:\n    read_csv: {{ path: data/bad.csv, schema: {{ id: bigint, customer: text, amount: text, day: date }} }}\n  lake:\n    on_error: {on_error}\n    write_iceberg: {{ input: input, catalog: lake, table: sales.orders }}\n",
            catalog.connection()
        )
    };
    p.file("bad.yaml", &pipeline("fail"));
    let err = p.fails(&["run", "bad.yaml"], 2);
    assert!(
        err.contains("pipeline `bad`, step `lake`") && err.contains("column `amount`: `lots` is not a Float64"),
        "{err}"
    );
    assert!(err.contains(r#""customer":"erin""#), "the record is named: {err}");
    assert_eq!(catalog.snapshots("sales.orders").len(), 1, "nothing committed");

    p.file("bad.yaml", &pipeline("dead_letter"));
    p.ok(&["run", "bad.yaml"]);
    let read = catalog.read("sales.orders", None);
    assert_eq!(read.last().unwrap(), "6|frank|6.0|2024-01-18", "the good row is appended: {read:?}");
    assert_eq!(read[3..].len(), 5);
    let dlq = p.dlq("bad.yaml");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["record"]["id"], 5);
    assert_eq!(dlq[0]["step"], "lake");
    assert_eq!(dlq[0]["error"], "column `amount`: `lots` is not a Float64");
}
