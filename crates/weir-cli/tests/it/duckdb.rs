//! `read_db`, `write_db` and `execute` on DuckDB files (cargo feature `duckdb`, which `scripts/test.sh` turns on),
//! checked end to end through `weir` itself: set up with `execute` steps, read back with `read_db`.

use crate::common::Project;

/// A project whose `db.duckdb` holds an `orders` table, made by a pipeline of `execute` steps.
fn project() -> Project {
    let p = Project::new();
    let statements = [
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR NOT NULL, amount DECIMAL(12,2), paid BOOLEAN, ordered DATE, updated_at TIMESTAMP)",
        "INSERT INTO orders VALUES (1, 'Zoë 🦀', 25.00, true, DATE '2024-01-05', TIMESTAMP '2024-01-05 08:00:00'), \
         (2, 'Grace', 12.50, false, DATE '2024-01-06', TIMESTAMP '2024-01-06 09:15:00.25'), \
         (3, 'Ada', 30.10, true, NULL, TIMESTAMP '2024-01-07 10:30:00')",
    ];
    let steps: String = statements
        .iter()
        .enumerate()
        .map(|(i, sql)| format!("  s{i}:\n    execute: {{ connection: db, sql: \"{sql}\" }}\n"))
        .collect();
    p.file(
        "setup.yaml",
        &format!("name: setup\nconnections:\n  db: {{ kind: duckdb, url: \"duckdb://db.duckdb\" }}\nsteps:\n{steps}"),
    );
    p.ok(&["run", "setup.yaml"]);
    p
}

/// The rows of `table` (in `order`), as CSV, read back through `read_db`.
fn dump(p: &Project, table: &str, order: &str) -> String {
    p.file(
        "dump.yaml",
        &format!(
            "name: dump\nconnections:\n  db: {{ kind: duckdb, url: \"duckdb://db.duckdb\" }}\nsteps:\n  t:\n    read_db: {{ connection: db, query: \"SELECT * FROM {table} ORDER BY {order}\" }}\n  \
             out:\n    write_csv: {{ input: t, path: out/dump.csv }}\n"
        ),
    );
    p.ok(&["run", "dump.yaml"]);
    p.read("out/dump.csv")
}

#[test]
fn incremental_upsert_round_trips_types_and_pushes_filters_down() {
    let p = project();
    p.file(
        "sync.yaml",
        r#"
name: duck_sync
state:
  last_sync: { type: timestamp, default: "1970-01-01T00:00:00Z", update: { max: changed.updated_at } }
variables:
  who: { type: string, default: "nobody" }
connections:
  db: { kind: duckdb, url: "duckdb://db.duckdb" }
steps:
  changed:
    read_db: { connection: db, query: "SELECT * FROM orders WHERE updated_at > $last_sync" }
  load:
    write_db: { input: changed, connection: db, table: orders_copy, mode: upsert, keys: [id] }
  named:
    read_db: { connection: db, query: "SELECT id FROM orders WHERE customer = $who" }
  found:
    sql: { query: "SELECT id FROM named WHERE id > 1" }
  out:
    write_csv: { input: found, path: out/found.csv }
"#,
    );
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 3 records"));
    let copy = dump(&p, "orders_copy", "id");
    assert_eq!(
        copy,
        "id,customer,amount,paid,ordered,updated_at\n\
         1,Zoë 🦀,25.00,true,2024-01-05,2024-01-05T08:00:00\n\
         2,Grace,12.50,false,2024-01-06,2024-01-06T09:15:00.250\n\
         3,Ada,30.10,true,,2024-01-07T10:30:00\n"
    );
    // The cursor moved: a second run reads only what changed since.
    p.file("setup.yaml", "name: change\nconnections:\n  db: { kind: duckdb, url: \"duckdb://db.duckdb\" }\nsteps:\n  s:\n    execute: { connection: db, sql: \"UPDATE orders SET amount = 99.99, updated_at = TIMESTAMP '2024-02-01 00:00:00' WHERE id = 2\" }\n");
    p.ok(&["run", "setup.yaml"]);
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 1 records"));
    assert!(dump(&p, "orders_copy", "id").contains("2,Grace,99.99,false"));

    // A value with quotes and SQL in it is data.
    p.ok(&["run", "sync.yaml", "--var", "who=Grace' OR '1'='1"]);
    assert_eq!(p.read("out/found.csv"), "id\n");
    p.ok(&["run", "sync.yaml", "--var", "who=Grace"]);
    assert_eq!(p.read("out/found.csv"), "id\n2\n");
    // The filter on `named` goes to DuckDB with the query.
    let plan = p.ok(&["explain", "sync.yaml"]);
    assert!(plan.contains("DuckDbScan") && plan.contains("WHERE") && plan.contains("> 1"), "{plan}");
}

#[test]
fn upsert_with_deletes_applies_the_last_event_per_key_then_delete_and_replace() {
    let p = project();
    p.file(
        "events.csv",
        "id,customer,amount,deleted\n1,Zoë,26.00,false\n4,Linus,5.00,false\n3,Ada,1.00,false\n3,Ada,,true\n4,Linus,6.00,false\n",
    );
    let pipeline = |mode: &str, extra: &str| {
        format!(
            "name: cdc\nconnections:\n  db: {{ kind: duckdb, url: \"duckdb://db.duckdb\" }}\nsteps:\n  events:\n    read_csv: {{ path: events.csv }}\n  \
             apply:\n    write_db: {{ input: events, connection: db, table: orders, mode: {mode}, keys: [id]{extra} }}\n"
        )
    };
    p.file("cdc.yaml", &pipeline("upsert", ", delete_when: deleted"));
    p.ok(&["run", "cdc.yaml"]);
    assert_eq!(
        dump(&p, "orders", "id"),
        "id,customer,amount,paid,ordered,updated_at\n1,Zoë,26.00,true,2024-01-05,2024-01-05T08:00:00\n\
         2,Grace,12.50,false,2024-01-06,2024-01-06T09:15:00.250\n4,Linus,6.00,,,\n"
    );

    p.file("events.csv", "id\n1\n4\n");
    p.file("cdc.yaml", &pipeline("delete", ""));
    p.ok(&["run", "cdc.yaml"]);
    assert_eq!(
        dump(&p, "orders", "id"),
        "id,customer,amount,paid,ordered,updated_at\n2,Grace,12.50,false,2024-01-06,2024-01-06T09:15:00.250\n"
    );

    // A new input column is added to the table (schema_evolution: evolve, the default).
    p.file("events.csv", "id,customer,region\n7,Edsger,eu\n");
    p.file("cdc.yaml", &pipeline("replace", ""));
    p.ok(&["run", "cdc.yaml"]);
    assert_eq!(dump(&p, "orders", "id"), "id,customer,amount,paid,ordered,updated_at,region\n7,Edsger,,,,,eu\n");
}

#[test]
fn batched_loads_commit_with_checkpoints_and_a_failed_run_changes_nothing() {
    let p = Project::new();
    let mut csv = String::from("id,name\n");
    for i in 0..2500 {
        csv.push_str(&format!("{i},name {i}\n"));
    }
    p.file("in.csv", &csv);
    p.file(
        "load.yaml",
        "name: batched\nsettings: { commit_every: 1000 }\nconnections:\n  db: { kind: duckdb, url: \"duckdb://db.duckdb\" }\nsteps:\n  rows:\n    read_csv: { path: in.csv }\n  \
         load:\n    write_db: { input: rows, connection: db, table: people, mode: append }\n",
    );
    p.ok(&["run", "load.yaml"]);
    assert_eq!(dump(&p, "(SELECT count(*) AS n, count(DISTINCT id) AS ids FROM people)", "n"), "n,ids\n2500,2500\n");
    assert_eq!(
        dump(&p, "(SELECT batches, rows FROM weir_checkpoints WHERE pipeline = 'batched')", "batches"),
        "batches,rows\n3,2500\n"
    );

    // A run that fails after its load was prepared (a quality check) rolls the load back.
    p.file(
        "load.yaml",
        "name: guarded\nconnections:\n  db: { kind: duckdb, url: \"duckdb://db.duckdb\" }\nsteps:\n  rows:\n    read_csv: { path: in.csv }\n  \
         load:\n    write_db: { input: rows, connection: db, table: people, mode: replace }\n\
         checks:\n  small: { step: rows, max_rows: 10 }\n",
    );
    p.fails(&["run", "load.yaml"], 2);
    assert_eq!(dump(&p, "(SELECT count(*) AS n FROM people)", "n"), "n\n2500\n");
}

#[test]
fn an_error_deep_into_a_streamed_result_fails_the_run_instead_of_ending_it_early() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: deep\nconnections:\n  db: { kind: duckdb, url: \"duckdb://db.duckdb\" }\nsteps:\n  r:\n    \
         read_db: { connection: db, query: \"SELECT CAST(CASE WHEN i > 3000000 THEN 'x' ELSE i::VARCHAR END AS INTEGER) AS v FROM range(4000000) t(i)\" }\n  \
         n:\n    sql: { query: \"SELECT count(v) AS n FROM r\" }\n  out:\n    write_csv: { input: n, path: out/n.csv }\n",
    );
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("Could not convert string 'x'"), "{err}");
    assert!(!p.path().join("out/n.csv").exists());
}
