//! The ODBC connector for real: unixODBC with the PostgreSQL ODBC driver (Debian's `odbc-postgresql`) against the
//! machine's PostgreSQL, one fresh database per test. Built with the `odbc` feature, as `scripts/test.sh` does.

use crate::common::postgres::TestDb;
use crate::common::{Project, over_budget};

fn project(db: &TestDb) -> Project {
    db.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), updated_at timestamp);
         INSERT INTO orders VALUES (1, 'Zoë', 25.00, '2024-01-05 08:00:00'), (2, 'Grace', 12.50, '2024-01-06 09:15:00'),
                                   (3, 'Ada', 30.10, '2024-01-07 10:30:00');
         CREATE TABLE copy (id bigint, customer text, amount numeric(12,2), updated_at timestamp);",
    );
    Project::new().env("ODBC_URL", &db.odbc_url())
}

const PIPELINE: &str = r#"
name: odbc_copy
variables:
  since: { type: timestamp, default: "2024-01-06T00:00:00Z" }
connections:
  legacy: { kind: odbc, url: "${ODBC_URL}" }
steps:
  recent:
    read_db: { connection: legacy, query: "SELECT id, customer, amount, updated_at FROM orders WHERE updated_at > $since" }
  big:
    sql: { query: "SELECT * FROM recent WHERE amount > 20" }
  out:
    write_db: { input: recent, connection: legacy, table: copy, mode: MODE }
  out_big:
    write_csv: { input: big, path: out/big.csv }
"#;

#[test]
fn reads_with_parameters_and_writes_in_one_transaction() {
    let db = TestDb::new();
    let p = project(&db);
    p.file("p.yaml", &PIPELINE.replace("MODE", "append"));
    p.ok(&["run", "p.yaml"]);
    p.ok(&["run", "p.yaml", "--var", "since=2024-01-07T00:00:00Z"]);
    assert_eq!(
        db.rows("SELECT id, customer, amount, updated_at FROM copy ORDER BY id, updated_at"),
        ["2|Grace|12.50|2024-01-06 09:15:00", "3|Ada|30.10|2024-01-07 10:30:00", "3|Ada|30.10|2024-01-07 10:30:00"]
    );
    assert_eq!(p.read("out/big.csv"), "id,customer,amount,updated_at\n3,Ada,30.10,2024-01-07T10:30:00\n");

    p.file("p.yaml", &PIPELINE.replace("MODE", "replace"));
    p.ok(&["run", "p.yaml", "--var", "since=2000-01-01T00:00:00Z"]);
    assert_eq!(db.rows("SELECT id FROM copy ORDER BY id"), ["1", "2", "3"]);
    let plan = p.ok(&["explain", "p.yaml"]);
    assert!(plan.contains("OdbcScan: connection=legacy") && plan.contains("params=[?=$since]"), "{plan}");
}

#[test]
fn unsupported_writes_fail_clearly_and_change_nothing() {
    let db = TestDb::new();
    let p = project(&db);
    p.file("p.yaml", &PIPELINE.replace("MODE", "upsert, keys: [id]"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("over ODBC, write_db supports `mode: append` and `mode: replace`"), "{err}");
    db.exec("ALTER TABLE copy DROP COLUMN customer");
    p.file("p.yaml", &PIPELINE.replace("MODE", "append"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("table `copy` has no column `customer`"), "{err}");
    assert_eq!(db.rows("SELECT count(*) FROM copy"), ["0"]);
}

#[test]
fn a_failed_run_rolls_back_what_it_wrote() {
    let db = TestDb::new();
    db.exec("CREATE TABLE t (id bigint, amount bigint)");
    let p = Project::new().env("DB_URL", &db.odbc_url());
    let err = p.fails(&["run", &over_budget(&p, "odbc")], 2);
    assert!(err.contains("above max_invalid"), "{err}");
    assert_eq!(db.rows("SELECT count(*) FROM t"), ["0"]);
}
