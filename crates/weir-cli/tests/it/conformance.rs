//! One set of database behaviours run against every database Weir loads: each behaviour is a function generic over
//! [`Backend`], and each backend runs all of them. What a backend does not do is listed in its `UNSUPPORTED`,
//! beside it, instead of its test being left out.
//!
//! In the suite: PostgreSQL and MariaDB (the machine's servers), SQLite (a file), ClickHouse (a server each test
//! starts), DuckDB (a file; the tests have no DuckDB client, so it is read back through `weir` itself, with
//! `read_db`) and ODBC (unixODBC's PostgreSQL driver against the machine's PostgreSQL).

use crate::common::clickhouse::TestClickHouse;
use crate::common::mysql::TestMyDb;
use crate::common::postgres::TestDb;
use crate::common::running::Running;
use crate::common::{Project, REFUSING_TABLE, load_csv, over_budget, refused_rows};

/// A database the suite loads into with `weir` and reads back with its own client.
trait Backend {
    /// The connection kind.
    const KIND: &'static str;
    /// Behaviours this backend does not have, and why.
    const UNSUPPORTED: &'static [(Behaviour, &'static str)] = &[];
    fn url(&self) -> String;
    /// Makes table `t` with `columns` (`id bigint, name text`) for a backend whose loads do not create tables;
    /// for the others the load makes it, which is part of what the suite tests.
    fn create_table(&self, _columns: &str) {}
    /// Runs statements with the backend's own client.
    fn exec(&self, sql: &str);
    /// Every row of `sql`, columns joined by `|`, NULL as `NULL`.
    fn query(&self, sql: &str) -> Vec<String>;
    /// Every row of `SELECT {columns} FROM t ORDER BY id`.
    fn select(&self, columns: &str) -> Vec<String> {
        self.query(&format!("SELECT {columns} FROM t ORDER BY id"))
    }
    /// `column` as the backend's client shows it in [`Backend::select`] (DuckDB's through `weir`, as text).
    fn shown(&self, column: &str) -> String {
        column.to_string()
    }
    /// What `select` shows of a list `["a", "b"]` and an object `{"city": "X"}` loaded from JSON.
    const NESTED: &'static str;
    /// The same row read back with `read_db` and written with `write_json`.
    const NESTED_READ: &'static str;
    /// The number of rows of `t`.
    fn count(&self) -> u64 {
        self.query("SELECT count(*) AS n FROM t")[0].parse().unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Loads create the table, and `upsert`, `delete` and `delete_when` match rows by `keys`.
    KeyedWrites,
    /// A load adds the columns its input has and the table lacks (`schema_evolution: evolve`).
    SchemaEvolution,
    /// Lists and objects from JSON load into the columns Weir creates for them (arrays, JSON, nested types).
    Nested,
    /// A load reports the rows it inserted, updated and deleted.
    ChangeCounts,
    /// Loads commit batch by batch (`settings.commit_every`) with a checkpoint in the batch's transaction.
    Checkpoints,
    /// Rows the database refuses (a duplicate key, a NOT NULL, a CHECK) go to the dead letters, the rest load.
    RefusedRows,
}

/// Whether `B` has `behaviour`; says so in the test's output when it does not.
fn supports<B: Backend>(behaviour: Behaviour) -> bool {
    match B::UNSUPPORTED.iter().find(|(b, _)| *b == behaviour) {
        Some((_, why)) => {
            eprintln!("{}: {behaviour:?} is not supported: {why}", B::KIND);
            false
        }
        None => true,
    }
}

/// `upsert` creates the table, `delete_when` applies CDC deletes (the last event per key wins), `freeze`
/// refuses a new column, `delete` removes by key and `replace` swaps the contents.
fn write_modes_cdc_deletes_and_schema_evolution<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::KeyedWrites) {
        return;
    }
    let p = Project::new().env("DB_URL", &db.url());
    let kind = B::KIND;
    p.ok(&["run", &load_csv(&p, kind, "id,name\n1,a\n2,b\n3,c\n", "mode: upsert, keys: [id]")]);
    assert_eq!(db.select("id, name"), ["1|a", "2|b", "3|c"], "{kind}");
    let events = "id,name,score,deleted\n1,A,1.5,false\n2,b,,true\n4,d,,false\n4,d,,true\n5,e,,true\n5,E,2.5,false\n";
    p.ok(&["run", &load_csv(&p, kind, events, "mode: upsert, keys: [id], delete_when: deleted")]);
    assert_eq!(db.select("id, name, score"), ["1|A|1.5", "3|c|NULL", "5|E|2.5"], "{kind}");
    let frozen = p.fails(&["run", &load_csv(&p, kind, "id,extra\n9,x\n", "mode: append, schema_evolution: freeze")], 2);
    assert!(frozen.contains("new column `extra` (Utf8)"), "{kind}: {frozen}");
    p.ok(&["run", &load_csv(&p, kind, "id\n1\n5\n", "mode: delete, keys: [id]")]);
    assert_eq!(db.select("id"), ["3"], "{kind}");
    p.ok(&["run", &load_csv(&p, kind, "id,name\n7,g\n8,h\n", "mode: replace")]);
    assert_eq!(db.select("id, name"), ["7|g", "8|h"], "{kind}");
}

/// With `on_error: dead_letter` on the load, the rows the database refuses are set aside and the rest commit.
fn refused_rows_go_to_the_dead_letters<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::RefusedRows) {
        return;
    }
    db.exec(REFUSING_TABLE);
    let p = Project::new().env("DB_URL", &db.url());
    refused_rows(&p, B::KIND);
    assert_eq!(db.count(), 198, "{}: the row that was there and 197 of 200 new ones", B::KIND);
}

/// `schema_evolution: evolve` (the default) adds a column the input has and the table lacks; earlier rows read NULL.
fn new_columns_are_added<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::SchemaEvolution) {
        return;
    }
    let p = Project::new().env("DB_URL", &db.url());
    p.ok(&["run", &load_csv(&p, B::KIND, "id,name\n1,a\n", "mode: append")]);
    p.ok(&["run", &load_csv(&p, B::KIND, "id,name,extra\n2,b,x\n", "mode: append")]);
    assert_eq!(db.select("id, extra"), ["1|NULL", "2|x"], "{}", B::KIND);
}

/// An `execute` step runs after the run's loads commit: its statement sees the table the load created.
fn execute_runs_after_the_loads_commit<B: Backend>(db: &B) {
    db.create_table("id bigint, name text");
    let p = Project::new().env("DB_URL", &db.url());
    let file = load_csv(&p, B::KIND, "id,name\n1,a\n2,b\n", "mode: append");
    let after = "  after:\n    execute: { connection: db, sql: \"INSERT INTO t (id, name) VALUES (100, 'x')\" }\n";
    p.file(&file, &format!("{}{after}", p.read(&file)));
    p.ok(&["run", &file]);
    assert_eq!(db.count(), 3, "{}", B::KIND);
}

/// A filter of a later step over a `read_db` table goes into the SQL sent to the database, as `weir explain` shows,
/// and the rows are the same as DataFusion's own filter would give.
fn filters_push_down_into_the_query<B: Backend>(db: &B) {
    db.create_table("id bigint, name text");
    let p = Project::new().env("DB_URL", &db.url());
    p.ok(&["run", &load_csv(&p, B::KIND, "id,name\n1,a\n2,b\n3,c\n", "mode: append")]);
    p.file(
        "read.yaml",
        &format!(
            "name: read\nconnections:\n  db: {{ kind: {}, url: \"${{DB_URL}}\" }}\nsteps:\n  t:\n    read_db: {{ connection: db, table: t }}\n  big:\n    filter: {{ input: t, where: id > 1 }}\n  out:\n    write_csv: {{ input: big, path: out/big.csv }}\n",
            B::KIND
        ),
    );
    let plan = p.ok(&["explain", "read.yaml"]);
    let scan = plan.lines().find(|l| l.contains("Scan: connection=db, sql=")).unwrap_or_else(|| panic!("{plan}"));
    assert!(scan.contains("WHERE") && scan.contains("> 1"), "{}: {scan}", B::KIND);
    p.ok(&["run", "read.yaml"]);
    let mut ids: Vec<String> = p.read("out/big.csv").lines().skip(1).map(str::to_string).collect();
    ids.sort();
    assert_eq!(ids, ["2,b", "3,c"], "{}", B::KIND);
}

/// With `settings.commit_every`, a load commits batch by batch and keeps its checkpoint in `weir_checkpoints`
/// beside the data, in each batch's transaction.
fn batched_loads_keep_a_checkpoint_beside_the_data<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::Checkpoints) {
        return;
    }
    let p = Project::new().env("DB_URL", &db.url());
    let file = load_csv(&p, B::KIND, "id,name\n1,a\n2,b\n3,c\n4,d\n5,e\n", "mode: append");
    p.file(&file, &p.read(&file).replace("steps:\n", "settings:\n  commit_every: 2\nsteps:\n"));
    p.ok(&["run", &file]);
    assert_eq!(db.count(), 5, "{}", B::KIND);
    assert_eq!(
        db.query("SELECT batches FROM weir_checkpoints WHERE pipeline = 'load' AND step = 'out'"),
        ["3"],
        "{}",
        B::KIND
    );
}

/// A batched load killed (SIGKILL) after some batches committed goes on from its checkpoint with `--resume`: in
/// append mode a batch loaded twice would show as a repeated id.
fn a_killed_load_resumes_from_its_checkpoint<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::Checkpoints) {
        return;
    }
    const ROWS: u64 = 200_000;
    let csv: String =
        std::iter::once("id,name\n".to_string()).chain((1..=ROWS).map(|id| format!("{id},n{id}\n"))).collect();
    let p = Project::new().env("DB_URL", &db.url());
    let file = load_csv(&p, B::KIND, &csv, "mode: append");
    p.file(&file, &p.read(&file).replace("steps:\n", "settings:\n  commit_every: 10000\nsteps:\n"));
    let mut run = Running::start(&p, &[("DB_URL", db.url())], &["run", &file]);
    run.wait_for("Committed batch 2 of");
    run.child.kill().unwrap();
    let (code, log) = run.finish();
    assert_eq!(code, None, "{}: killed mid-load:\n{log}", B::KIND);
    let committed = db.count();
    assert!(committed < ROWS && committed.is_multiple_of(10_000), "{}: whole batches only: {committed}", B::KIND);
    p.ok(&["run", &file, "--resume"]);
    assert_eq!(db.query("SELECT count(*), count(DISTINCT id) FROM t"), [format!("{ROWS}|{ROWS}")], "{}", B::KIND);
}

/// Records with a list and an object field (a JSON API's, say) load into a table Weir creates, twice: the second
/// load finds the nested columns the first made.
fn nested_values_load<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::Nested) {
        return;
    }
    let p = Project::new().env("DB_URL", &db.url());
    p.file("data/docs.json", "[{\"id\": 1, \"tags\": [\"a\", \"b\"], \"address\": {\"city\": \"X\"}}]").file(
        "load.yaml",
        &format!(
            "name: load\nconnections:\n  db: {{ kind: {}, url: \"${{DB_URL}}\" }}\nsteps:\n  docs:\n    read_json: {{ path: data/docs.json }}\n  out:\n    write_db: {{ input: docs, connection: db, table: t, mode: append }}\n",
            B::KIND
        ),
    );
    p.ok(&["run", "load.yaml"]);
    p.ok(&["run", "load.yaml"]);
    let shown = db.select(&format!("id, {}, {}", db.shown("tags"), db.shown("address")));
    assert_eq!(shown, [B::NESTED, B::NESTED], "{}", B::KIND);
    p.file(
        "read.yaml",
        &format!(
            "name: read\nconnections:\n  db: {{ kind: {}, url: \"${{DB_URL}}\" }}\nsteps:\n  t:\n    read_db: {{ connection: db, query: \"SELECT id, tags, address FROM t\" }}\n  out:\n    write_json: {{ input: t, path: out/t.json }}\n",
            B::KIND
        ),
    );
    p.ok(&["run", "read.yaml"]);
    assert_eq!(p.read("out/t.json").lines().next(), Some(B::NESTED_READ), "{}", B::KIND);
}

/// An upsert of new, changed and deleted rows reports each apart: in its log, in `weir runs --run`.
fn loads_report_inserted_updated_and_deleted_rows<B: Backend>(db: &B) {
    if !supports::<B>(Behaviour::KeyedWrites) || !supports::<B>(Behaviour::ChangeCounts) {
        return;
    }
    let p = Project::new().env("DB_URL", &db.url());
    p.ok(&["run", &load_csv(&p, B::KIND, "id,name\n1,a\n2,b\n3,c\n", "mode: upsert, keys: [id]")]);
    let changes = "id,name,gone\n1,A,false\n3,c,true\n4,d,false\n5,e,false\n";
    let log = p.ok_log(&["run", &load_csv(&p, B::KIND, changes, "mode: upsert, keys: [id], delete_when: gone")]);
    assert!(log.contains("Load complete: 2 inserted, 1 updated, 1 deleted"), "{}: {log}", B::KIND);
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "load.yaml", "--json"])).unwrap();
    let id = runs["runs"][0]["run_id"].as_str().unwrap();
    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&["runs", "load.yaml", "--run", id, "--json"])).unwrap();
    let out = steps.iter().find(|s| s["step"] == "out").unwrap();
    assert_eq!((&out["inserted"], &out["updated"], &out["deleted"]), (&2.into(), &1.into(), &1.into()), "{}", B::KIND);
    let table = p.ok(&["runs", "load.yaml", "--run", id]);
    assert!(table.contains("INSERTED") && table.lines().any(|l| l.starts_with("out ")), "{table}");
}

/// A run that fails before its commit (a validation budget exceeded) leaves no row behind.
fn a_failed_run_loads_nothing<B: Backend>(db: &B) {
    db.create_table("id bigint, amount bigint");
    let p = Project::new().env("DB_URL", &db.url());
    p.ok(&["run", &load_csv(&p, B::KIND, "id,amount\n1,5\n", "mode: append")]);
    let err = p.fails(&["run", &over_budget(&p, B::KIND)], 2);
    assert!(err.contains("above max_invalid"), "{}: {err}", B::KIND);
    assert_eq!(db.count(), 1, "{}: only the first run's row", B::KIND);
}

/// A value with quotes and SQL in it is bound as data in `read_db`, never pasted into the query.
fn parameters_stay_data<B: Backend>(db: &B) {
    db.create_table("id bigint, name text");
    let p = Project::new().env("DB_URL", &db.url());
    p.ok(&["run", &load_csv(&p, B::KIND, "id,name\n1,plain\n2,o'brien\n", "mode: append")]);
    p.file(
        "read.yaml",
        &format!(
            "name: read\nvariables:\n  who: {{ type: string }}\nconnections:\n  db: {{ kind: {}, url: \"${{DB_URL}}\" }}\nsteps:\n  named:\n    read_db: {{ connection: db, query: \"SELECT id FROM t WHERE name = $who\" }}\n  out:\n    write_csv: {{ input: named, path: out/named.csv }}\n",
            B::KIND
        ),
    );
    p.ok(&["run", "read.yaml", "--var", "who=x' OR 1=1; DROP TABLE t; -- "]);
    assert_eq!(p.read("out/named.csv"), "id\n", "{}", B::KIND);
    p.ok(&["run", "read.yaml", "--var", "who=o'brien"]);
    assert_eq!(p.read("out/named.csv"), "id\n2\n", "{}", B::KIND);
    assert_eq!(db.count(), 2, "{}: the table is still there", B::KIND);
}

/// Runs every behaviour against the backend `new` makes, a fresh database for each.
macro_rules! conformance {
    ($module:ident, $new:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn write_modes_cdc_deletes_and_schema_evolution() {
                super::write_modes_cdc_deletes_and_schema_evolution(&$new);
            }

            #[test]
            fn new_columns_are_added() {
                super::new_columns_are_added(&$new);
            }

            #[test]
            fn execute_runs_after_the_loads_commit() {
                super::execute_runs_after_the_loads_commit(&$new);
            }

            #[test]
            fn filters_push_down_into_the_query() {
                super::filters_push_down_into_the_query(&$new);
            }

            #[test]
            fn batched_loads_keep_a_checkpoint_beside_the_data() {
                super::batched_loads_keep_a_checkpoint_beside_the_data(&$new);
            }

            #[test]
            fn a_killed_load_resumes_from_its_checkpoint() {
                super::a_killed_load_resumes_from_its_checkpoint(&$new);
            }

            #[test]
            fn nested_values_load() {
                super::nested_values_load(&$new);
            }

            #[test]
            fn loads_report_inserted_updated_and_deleted_rows() {
                super::loads_report_inserted_updated_and_deleted_rows(&$new);
            }

            #[test]
            fn a_failed_run_loads_nothing() {
                super::a_failed_run_loads_nothing(&$new);
            }

            #[test]
            fn parameters_stay_data() {
                super::parameters_stay_data(&$new);
            }

            #[test]
            fn refused_rows_go_to_the_dead_letters() {
                super::refused_rows_go_to_the_dead_letters(&$new);
            }
        }
    };
}

conformance!(postgres, TestDb::new());
conformance!(mariadb, TestMyDb::new());
conformance!(sqlite, SqliteFile::new());
conformance!(clickhouse, ClickHouseDb::new());
#[cfg(feature = "duckdb")]
conformance!(duckdb, DuckDbFile::new());
#[cfg(feature = "odbc")]
conformance!(odbc, OdbcDb(TestDb::new()));

impl Backend for TestDb {
    const KIND: &'static str = "postgres";
    const NESTED: &'static str = r#"1|{a,b}|{"city": "X"}"#;
    const NESTED_READ: &'static str = r#"{"id":1,"tags":["a","b"],"address":"{\"city\": \"X\"}"}"#;
    fn url(&self) -> String {
        TestDb::url(self)
    }
    fn exec(&self, sql: &str) {
        TestDb::exec(self, sql)
    }
    fn query(&self, sql: &str) -> Vec<String> {
        self.rows(sql)
    }
}

impl Backend for TestMyDb {
    const KIND: &'static str = "mysql";
    const NESTED: &'static str = r#"1|["a","b"]|{"city":"X"}"#;
    const NESTED_READ: &'static str = r#"{"id":1,"tags":"[\"a\",\"b\"]","address":"{\"city\":\"X\"}"}"#;
    fn url(&self) -> String {
        TestMyDb::url(self)
    }
    fn exec(&self, sql: &str) {
        TestMyDb::exec(self, sql)
    }
    fn query(&self, sql: &str) -> Vec<String> {
        self.rows(sql)
    }
}

/// A SQLite file in a directory of its own, which pipelines reach by an absolute URL.
struct SqliteFile(tempfile::TempDir);

impl SqliteFile {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn rows(&self, sql: &str) -> Vec<String> {
        let db = rusqlite::Connection::open(self.0.path().join("db.sqlite")).unwrap();
        let mut statement = db.prepare(sql).unwrap();
        let n = statement.column_count();
        let text = |value: rusqlite::types::ValueRef| match value {
            rusqlite::types::ValueRef::Null => "NULL".to_string(),
            rusqlite::types::ValueRef::Integer(v) => v.to_string(),
            rusqlite::types::ValueRef::Real(v) => v.to_string(),
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
        };
        statement
            .query_map([], |row| Ok((0..n).map(|i| text(row.get_ref(i).unwrap())).collect::<Vec<_>>().join("|")))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

impl Backend for SqliteFile {
    const KIND: &'static str = "sqlite";
    const NESTED: &'static str = r#"1|["a","b"]|{"city":"X"}"#;
    const NESTED_READ: &'static str = r#"{"id":1,"tags":"[\"a\",\"b\"]","address":"{\"city\":\"X\"}"}"#;
    fn url(&self) -> String {
        format!("sqlite://{}", self.0.path().join("db.sqlite").display())
    }
    fn exec(&self, sql: &str) {
        rusqlite::Connection::open(self.0.path().join("db.sqlite")).unwrap().execute_batch(sql).unwrap();
    }
    fn query(&self, sql: &str) -> Vec<String> {
        self.rows(sql)
    }
}

/// A database `w` on a ClickHouse server of the test's own. Reads of a `ReplacingMergeTree` (what a load with keys
/// creates) use `FINAL`, so they show one row per key before its parts merge; a plain `MergeTree` has no `FINAL`.
struct ClickHouseDb(TestClickHouse);

impl ClickHouseDb {
    fn new() -> Self {
        let server = TestClickHouse::start();
        server.exec("CREATE DATABASE w");
        Self(server)
    }

    /// `FINAL` where table `t` takes it.
    fn final_(&self) -> &'static str {
        let engine = self.0.rows("SELECT engine FROM system.tables WHERE database = 'w' AND name = 't'");
        if engine.iter().any(|e| e.starts_with("Replacing")) { "FINAL" } else { "" }
    }
}

impl Backend for ClickHouseDb {
    const KIND: &'static str = "clickhouse";
    const NESTED: &'static str = r#"1|['a','b']|{"city":"X"}"#;
    const NESTED_READ: &'static str = r#"{"id":1,"tags":["a","b"],"address":"{\"city\":\"X\"}"}"#;
    const UNSUPPORTED: &'static [(Behaviour, &'static str)] = &[
        (
            Behaviour::ChangeCounts,
            "a ReplacingMergeTree keeps every version of a row until its parts merge: an insert does not know whether it replaced one",
        ),
        (
            Behaviour::RefusedRows,
            "ClickHouse has no keys or CHECK constraints that refuse a row, and its loads stream whole, so a row it cannot take fails the load",
        ),
        (
            Behaviour::Checkpoints,
            "ClickHouse has no transactions to hold a batch and its checkpoint together: its loads are whole",
        ),
    ];
    fn url(&self) -> String {
        self.0.url("w")
    }
    fn exec(&self, sql: &str) {
        self.0.exec(sql)
    }
    fn query(&self, sql: &str) -> Vec<String> {
        let rows = self.0.rows(sql);
        rows.iter()
            .map(|r| r.split('\t').map(|v| if v == "\\N" { "NULL" } else { v }).collect::<Vec<_>>().join("|"))
            .collect()
    }
    fn select(&self, columns: &str) -> Vec<String> {
        let rows = self.0.rows(&format!("SELECT {columns} FROM w.t {} ORDER BY id", self.final_()));
        rows.iter()
            .map(|r| r.split('\t').map(|v| if v == "\\N" { "NULL" } else { v }).collect::<Vec<_>>().join("|"))
            .collect()
    }
    fn count(&self) -> u64 {
        self.0.rows(&format!("SELECT count() FROM w.t {}", self.final_()))[0].parse().unwrap()
    }
}

/// A DuckDB file in a directory of its own, written and read through `weir` (`execute` and `read_db` steps).
#[cfg(feature = "duckdb")]
struct DuckDbFile(Project);

#[cfg(feature = "duckdb")]
impl DuckDbFile {
    fn new() -> Self {
        Self(Project::new())
    }

    /// The rows of `query` as CSV lines without the header, read through `read_db`.
    fn csv(&self, query: &str) -> Vec<String> {
        self.0.file(
            "dump.yaml",
            &format!(
                "name: dump\nconnections:\n  db: {{ kind: duckdb, url: \"{}\" }}\nsteps:\n  t:\n    read_db: {{ connection: db, query: \"{query}\" }}\n  out:\n    write_csv: {{ input: t, path: out/dump.csv }}\n",
                self.url()
            ),
        );
        self.0.ok(&["run", "dump.yaml"]);
        self.0.read("out/dump.csv").lines().skip(1).map(str::to_string).collect()
    }
}

#[cfg(feature = "duckdb")]
impl Backend for DuckDbFile {
    const KIND: &'static str = "duckdb";
    const NESTED: &'static str = "1|[a;b]|{'city': X}";
    const NESTED_READ: &'static str = r#"{"id":1,"tags":["a","b"],"address":{"city":"X"}}"#;
    /// DuckDB's text of a nested value, its commas (which the CSV it is read back through would quote) as `;`.
    fn shown(&self, column: &str) -> String {
        format!("replace(CAST({column} AS VARCHAR), ', ', ';')")
    }
    const UNSUPPORTED: &'static [(Behaviour, &'static str)] =
        &[(Behaviour::RefusedRows, "DuckDB loads go through one set-based statement, so a refused row fails the load")];
    fn url(&self) -> String {
        format!("duckdb://{}", self.0.path().join("db.duckdb").display())
    }
    fn exec(&self, sql: &str) {
        let steps: String = sql
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, sql)| format!("  s{i}:\n    execute: {{ connection: db, sql: \"{sql}\" }}\n"))
            .collect();
        let yaml =
            format!("name: setup\nconnections:\n  db: {{ kind: duckdb, url: \"{}\" }}\nsteps:\n{steps}", self.url());
        self.0.file("setup.yaml", &yaml);
        self.0.ok(&["run", "setup.yaml"]);
    }
    fn query(&self, sql: &str) -> Vec<String> {
        let rows = self.csv(sql);
        rows.iter()
            .map(|r| r.split(',').map(|v| if v.is_empty() { "NULL" } else { v }).collect::<Vec<_>>().join("|"))
            .collect()
    }
}

/// The machine's PostgreSQL reached over ODBC. Weir neither creates nor alters tables over ODBC (column types and
/// upsert syntax differ between the databases behind it), so the suite makes `t` for the load.
#[cfg(feature = "odbc")]
struct OdbcDb(TestDb);

#[cfg(feature = "odbc")]
impl Backend for OdbcDb {
    const KIND: &'static str = "odbc";
    const NESTED: &'static str = "";
    const NESTED_READ: &'static str = "";
    const UNSUPPORTED: &'static [(Behaviour, &'static str)] = &[
        (Behaviour::KeyedWrites, "over ODBC, loads append or replace into a table that exists"),
        (Behaviour::SchemaEvolution, "Weir does not alter tables over ODBC"),
        (Behaviour::Nested, "Weir creates no tables over ODBC, and sends only scalar columns"),
        (Behaviour::RefusedRows, "ODBC loads go in whole column buffers, so a refused row fails the load"),
        (Behaviour::Checkpoints, "Weir keeps no checkpoint table over ODBC: its loads are whole"),
    ];
    fn url(&self) -> String {
        self.0.odbc_url()
    }
    fn create_table(&self, columns: &str) {
        self.0.exec(&format!("CREATE TABLE t ({columns})"))
    }
    fn exec(&self, sql: &str) {
        self.0.exec(sql)
    }
    fn query(&self, sql: &str) -> Vec<String> {
        self.0.rows(sql)
    }
}
