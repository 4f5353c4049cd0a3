//! `read_db` and `write_db` on SQLite files: no server, one database file per test project.

use crate::common::{Project, over_budget};
use rusqlite::Connection;

/// Every row of `sql` on the project's `db.sqlite`, columns joined by `|`, NULL as `NULL`.
fn rows(p: &Project, sql: &str) -> Vec<String> {
    let db = Connection::open(p.path().join("db.sqlite")).unwrap();
    let mut statement = db.prepare(sql).unwrap();
    let n = statement.column_count();
    statement
        .query_map([], |row| {
            Ok((0..n)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "NULL".to_string(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                })
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn exec(p: &Project, sql: &str) {
    Connection::open(p.path().join("db.sqlite")).unwrap().execute_batch(sql).unwrap();
}

/// A project whose `db.sqlite` holds an `orders` table, with `DB_URL` pointing at it (relative to the pipeline).
fn project() -> Project {
    let p = Project::new().env("DB_URL", "sqlite://db.sqlite");
    exec(
        &p,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount DECIMAL(12,2), paid BOOLEAN,
                              ordered DATE, updated_at TIMESTAMP);
         INSERT INTO orders VALUES
           (1, 'Zoë 🦀', 25.00, 1, '2024-01-05', '2024-01-05 08:00:00.000000'),
           (2, 'Grace', 12.50, 0, '2024-01-06', '2024-01-06 09:15:00.250000'),
           (3, 'Ada', 30.10, 1, NULL, '2024-01-07 10:30:00.000000');",
    );
    p
}

#[test]
fn incremental_upsert_round_trips_types() {
    let p = project();
    p.file(
        "sync.yaml",
        r#"
name: sqlite_sync
state:
  last_sync: { type: timestamp, default: "1970-01-01T00:00:00Z", update: { max: changed.updated_at } }
connections:
  db: { kind: sqlite, url: "${DB_URL}" }
steps:
  changed:
    read_db: { connection: db, query: "SELECT * FROM orders WHERE updated_at > $last_sync" }
  load:
    write_db: { input: changed, connection: db, table: orders_copy, mode: upsert, keys: [id] }
"#,
    );
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 3 records"));
    let copy = "SELECT id, customer, amount, paid, ordered, updated_at FROM orders_copy ORDER BY id";
    assert_eq!(
        rows(&p, copy),
        [
            "1|Zoë 🦀|25|1|2024-01-05|2024-01-05 08:00:00.000000",
            "2|Grace|12.5|0|2024-01-06|2024-01-06 09:15:00.250000",
            "3|Ada|30.1|1|NULL|2024-01-07 10:30:00.000000",
        ]
    );
    assert_eq!(
        rows(&p, "SELECT name, type FROM pragma_table_info('orders_copy') ORDER BY cid"),
        ["id|INTEGER", "customer|TEXT", "amount|DECIMAL(12,2)", "paid|BOOLEAN", "ordered|DATE", "updated_at|TIMESTAMP"]
    );

    exec(&p, "UPDATE orders SET amount = 26, updated_at = '2024-01-08 00:00:00.000000' WHERE id = 1");
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 1 records"));
    assert_eq!(rows(&p, "SELECT amount, updated_at FROM orders_copy WHERE id = 1"), ["26|2024-01-08 00:00:00.000000"]);
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 0 records"));
}

#[test]
fn parameters_stay_data_and_filters_push_down() {
    let p = project();
    p.file(
        "p.yaml",
        r#"
name: sqlite_params
variables:
  who: { type: string, default: "Ada" }
connections:
  db: { kind: sqlite, url: "${DB_URL}" }
steps:
  named:
    read_db: { connection: db, query: "SELECT id FROM orders WHERE customer = $who" }
  orders:
    read_db: { connection: db, table: orders }
  big:
    sql: { query: "SELECT id FROM orders WHERE id > 1" }
  out_named:
    write_csv: { input: named, path: out/named.csv }
  out_big:
    write_csv: { input: big, path: out/big.csv }
"#,
    );
    let plan = p.ok(&["explain", "p.yaml"]);
    // DataFusion's SQLite dialect quotes with backticks, which SQLite accepts too.
    assert!(plan.contains(r#"SqliteScan: connection=db, sql=SELECT "id" FROM "orders" WHERE (`id` > 1)"#), "{plan}");
    p.ok(&["run", "p.yaml", "--var", "who=x' OR 1=1; DROP TABLE orders; --"]);
    assert_eq!(p.read("out/named.csv"), "id\n");
    assert_eq!(p.read("out/big.csv"), "id\n2\n3\n");
    assert_eq!(rows(&p, "SELECT count(*) FROM orders"), ["3"]);
}

#[test]
fn a_failed_run_leaves_the_file_untouched() {
    let p = Project::new().env("DB_URL", "sqlite://db.sqlite");
    let err = p.fails(&["run", &over_budget(&p, "sqlite")], 2);
    assert!(err.contains("above max_invalid"), "{err}");
    // SQLite's DDL is transactional: the table the load created went with the rollback.
    assert_eq!(rows(&p, "SELECT count(*) FROM sqlite_master WHERE name = 't'"), ["0"]);
}

#[test]
fn execute_steps_run_after_the_loads_commit() {
    let p = project();
    p.file(
        "p.yaml",
        r#"
name: sqlite_actions
variables:
  cutoff: { type: integer, default: 2 }
connections:
  db: { kind: sqlite, url: "${DB_URL}" }
steps:
  orders:
    read_db: { connection: db, table: orders }
  out:
    write_db: { input: orders, connection: db, table: orders_copy, mode: replace }
  prune:
    execute: { connection: db, sql: "DELETE FROM orders_copy WHERE id > $cutoff" }
"#,
    );
    assert!(p.ok_log(&["run", "p.yaml"]).contains("Action complete: 1 rows affected"));
    assert_eq!(rows(&p, "SELECT id FROM orders_copy ORDER BY id"), ["1", "2"]);
}

/// `orders.yaml`: orders validated by `rule` and an email check, upserted into `orders` of `db.sqlite`.
fn validated_orders(p: &Project, rule: &str) {
    p.file(
        "orders.yaml",
        &format!(
            "name: orders\nconnections:\n  db: {{ kind: sqlite, url: db.sqlite }}\nsteps:\n  rows:\n    read_csv: {{ path: data/orders.csv }}\n  \
             checked:\n    validate: {{ input: rows, rules: {{ {rule}, email: {{ regex: {{ column: email, pattern: '@' }} }} }} }}\n  \
             out:\n    write_db: {{ input: checked, connection: db, table: orders, mode: upsert, keys: [id] }}\n"
        ),
    );
}

#[test]
fn dead_letters_replay_through_the_fixed_pipeline_until_the_queue_is_empty() {
    let p = Project::new();
    p.file("data/orders.csv", "id,email,amount\n1,a@x.io,10\n2,b@x.io,0\n3,c@x.io,-4\n4,d@x.io,7\n5,bad,3\n");
    validated_orders(&p, "amount_positive: { positive: amount }");
    p.ok(&["run", "orders.yaml"]);
    assert_eq!(rows(&p, "SELECT id FROM orders ORDER BY id"), ["1", "4"]);
    let letters = p.dlq("orders.yaml");
    assert_eq!(letters.len(), 3, "{letters:?}");

    // The fix: a zero amount is fine. Order 2 goes through; 3 (negative) and 5 (no email) fail again.
    validated_orders(&p, "amount_not_negative: { expr: \"amount >= 0\" }");
    let log = p.ok_log(&["dlq", "replay", "orders.yaml"]);
    assert!(log.contains("replayed 3 dead letters of `checked`"), "{log}");
    assert!(log.contains("1 went through and were removed, 2 failed again and stay"), "{log}");
    assert_eq!(
        rows(&p, "SELECT id, email, amount FROM orders ORDER BY id"),
        ["1|a@x.io|10", "2|b@x.io|0", "4|d@x.io|7"]
    );
    let left = p.dlq("orders.yaml");
    let summary: Vec<String> = left
        .iter()
        .map(|l| {
            format!(
                "{}|{}|{}",
                l["record"]["id"],
                l["retry_count"],
                l["error"].as_str().unwrap().contains("amount_not_negative")
            )
        })
        .collect();
    assert_eq!(summary, ["3|1|true", "5|1|false"], "{left:?}");

    // A second fix lets everything through: the queue empties, and state never moved.
    validated_orders(&p, "amount_present: { required: [amount] }");
    std::fs::write(p.path().join("orders.yaml"), p.read("orders.yaml").replace("pattern: '@'", "pattern: '.'"))
        .unwrap();
    let log = p.ok_log(&["dlq", "replay", "orders.yaml"]);
    assert!(log.contains("2 went through and were removed, 0 failed again"), "{log}");
    assert!(p.dlq("orders.yaml").is_empty());
    assert_eq!(rows(&p, "SELECT count(*) FROM orders"), ["5"]);
    let runs = p.ok(&["runs", "orders.yaml", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let triggers: Vec<&str> = runs["runs"].as_array().unwrap().iter().map(|r| r["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["replay", "replay", "manual"]);
}

#[test]
fn dead_letters_kept_in_a_sqlite_table() {
    let p = Project::new();
    p.file("data/orders.csv", "id,email,amount\n1,a@x.io,10\n2,b@x.io,-1\n");
    validated_orders(&p, "amount_positive: { positive: amount }");
    let pipeline = p.read("orders.yaml");
    // The destination's own file cannot hold them: its load holds SQLite's one writer for the whole run.
    p.file("orders.yaml", &pipeline.replace("steps:", "settings: { dead_letters: { connection: db } }\nsteps:"));
    assert!(p.fails(&["run", "orders.yaml"], 2).contains("`db` is also loaded by this pipeline"));
    let with_table = pipeline
        .replace("steps:", "settings: { dead_letters: { connection: dlq } }\nsteps:")
        .replace("connections:\n", "connections:\n  dlq: { kind: sqlite, url: dlq.sqlite }\n");
    p.file("orders.yaml", &with_table);
    p.ok(&["run", "orders.yaml"]);
    let dlq = |sql: &str| {
        Connection::open(p.path().join("dlq.sqlite")).unwrap().query_row(sql, [], |r| r.get::<_, String>(0)).unwrap()
    };
    assert_eq!(dlq("SELECT step || '|' || retry_count FROM weir_dead_letters"), "checked|0");
    assert_eq!(p.dlq("orders.yaml")[0]["record"]["id"], 2);
    assert!(p.ok(&["dlq", "purge", "orders.yaml", "--step", "checked"]).contains("purged 1"));
    assert_eq!(dlq("SELECT CAST(count(*) AS TEXT) FROM weir_dead_letters"), "0");
}

#[test]
fn rows_sqlite_refuses_go_to_the_dead_letters() {
    let p = Project::new().env("DB_URL", "sqlite://db.sqlite");
    Connection::open(p.path().join("db.sqlite")).unwrap().execute_batch(crate::common::REFUSING_TABLE).unwrap();
    let refused = crate::common::refused_rows(&p, "sqlite");
    assert!(
        refused[0].1.contains("UNIQUE constraint failed")
            && refused[1].1.contains("NOT NULL")
            && refused[2].1.contains("CHECK"),
        "{refused:?}"
    );
    assert_eq!(
        rows(&p, "SELECT count(*), sum(amount) FROM t"),
        [format!("{}|{}", 1 + 197, 1 + (2..=200).sum::<i64>() - 17 - 50)]
    );
}
