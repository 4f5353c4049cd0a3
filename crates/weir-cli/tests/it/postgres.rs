//! `read_db` and `write_db` against the machine's real PostgreSQL, one fresh database per test.

use crate::common::postgres::TestDb;
use crate::common::{Project, load_csv, over_budget};

/// A copy of `examples/postgres` with both of its connections pointed at `db`, after running its setup script.
fn postgres_example(db: &TestDb) -> Project {
    db.exec(
        &std::fs::read_to_string(format!("{}/../../examples/postgres/setup.sql", crate::common::manifest_dir()))
            .unwrap(),
    );
    Project::example("postgres").env("APP_DB_URL", &db.url()).env("WAREHOUSE_DB_URL", &db.url())
}

#[test]
fn example_full_sync_replaces_the_copy() {
    let db = TestDb::new();
    let p = postgres_example(&db);
    p.ok(&["run", "full_sync.yaml"]);
    db.exec("DELETE FROM orders WHERE customer_id = 11; DELETE FROM customers WHERE id = 11; UPDATE customers SET email = 'ada@new.example' WHERE id = 10");
    p.ok(&["run", "full_sync.yaml"]);
    assert_eq!(
        db.rows("SELECT id, name, email, country, created_at FROM warehouse.customers ORDER BY id"),
        [
            "10|Ada Lovelace|ada@new.example|GB|2024-01-02 09:00:00+00",
            "12|Zoë Müller|zoe@example.de|DE|2024-01-04 11:45:00+00"
        ]
    );
    // The table Weir created carries the source's types.
    assert_eq!(
        db.rows(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = 'warehouse' AND table_name = 'customers' ORDER BY ordinal_position"
        ),
        ["id|integer", "name|text", "email|text", "country|text", "created_at|timestamp with time zone"]
    );
}

#[test]
fn example_incremental_sync_reads_only_changes_and_upserts() {
    let db = TestDb::new();
    let p = postgres_example(&db);
    let first = p.ok_log(&["run", "incremental_sync.yaml"]);
    assert!(first.contains("Extracted 4 records"), "{first}");
    assert_eq!(
        p.ok(&["state", "get", "incremental_sync.yaml", "last_sync"]).trim(),
        "last_sync = 2024-01-08T11:45:00Z"
    );

    db.exec(
        "UPDATE orders SET status = 'refunded', updated_at = '2024-01-09 08:00:00+00' WHERE id = 2;
         INSERT INTO orders VALUES (5, 11, 99.99, 'paid', '2024-01-09 09:00:00+00');",
    );
    let second = p.ok_log(&["run", "incremental_sync.yaml"]);
    assert!(second.contains("Extracted 2 records"), "{second}");
    assert_eq!(
        db.rows("SELECT id, customer_id, amount, status, updated_at FROM warehouse.orders ORDER BY id"),
        [
            "1|10|25.00|paid|2024-01-05 08:00:00+00",
            "2|11|12.50|refunded|2024-01-09 08:00:00+00",
            "3|10|30.00|pending|2024-01-07 10:30:00+00",
            "4|12|40.00|paid|2024-01-08 11:45:00+00",
            "5|11|99.99|paid|2024-01-09 09:00:00+00",
        ]
    );
    // Nothing changed: nothing extracted, the cursor stays.
    let third = p.ok_log(&["run", "incremental_sync.yaml"]);
    assert!(third.contains("Extracted 0 records"), "{third}");
    assert_eq!(
        p.ok(&["state", "get", "incremental_sync.yaml", "last_sync"]).trim(),
        "last_sync = 2024-01-09T09:00:00Z"
    );

    // A crash after the load committed but before the cursor did leaves the old cursor: the next run reads the
    // same rows again, and the upsert absorbs them without a duplicate.
    let before = db.rows("SELECT id, customer_id, amount, status, updated_at FROM warehouse.orders ORDER BY id");
    p.ok(&["state", "set", "incremental_sync.yaml", "last_sync", "2024-01-08T00:00:00Z"]);
    let replay = p.ok_log(&["run", "incremental_sync.yaml"]);
    assert!(replay.contains("Extracted 3 records"), "{replay}");
    assert_eq!(db.rows("SELECT id, customer_id, amount, status, updated_at FROM warehouse.orders ORDER BY id"), before);
}

#[test]
fn example_join_across_csv_and_postgres_fetches_only_needed_columns() {
    let db = TestDb::new();
    let p = postgres_example(&db);
    p.ok(&["run", "csv_join.yaml"]);
    assert_eq!(p.read("out/web_orders_by_country.csv"), "country,orders,revenue\nDE,1,5.0\nGB,2,27.49\nUS,1,42.0\n");
    let plan = p.ok(&["explain", "csv_join.yaml"]);
    assert!(plan.contains(r#"PostgresScan: connection=app, sql=SELECT "id", "country" FROM "customers""#), "{plan}");
}

#[test]
fn filters_are_pushed_down_and_parameters_stay_data() {
    let db = TestDb::new();
    let p = postgres_example(&db);
    p.file(
        "filtered.yaml",
        r#"
name: filtered
variables:
  who: { type: string, default: "nobody" }
connections:
  app: { kind: postgres, url: "${APP_DB_URL}" }
steps:
  named:
    read_db: { connection: app, query: "SELECT id, name FROM customers WHERE name = $who OR email = $who" }
  big:
    read_db: { connection: app, table: orders }
  big_paid:
    sql: { query: "SELECT id FROM big WHERE amount > 20 AND status = 'paid'" }
  out_named:
    write_csv: { input: named, path: out/named.csv }
  out_big:
    write_csv: { input: big_paid, path: out/big.csv }
"#,
    );
    let plan = p.ok(&["explain", "filtered.yaml"]);
    assert!(
        plan.contains(r#"PostgresScan: connection=app, sql=SELECT "id", "amount", "status" FROM "orders" WHERE ("amount" > 20.00) AND ("status" = 'paid')"#),
        "{plan}"
    );
    assert!(plan.contains("params=[$1=$who]"), "{plan}");

    let hostile = "x' OR '1'='1'; DROP TABLE customers; --";
    p.ok(&["run", "filtered.yaml", "--var", &format!("who={hostile}")]);
    assert_eq!(p.read("out/named.csv"), "id,name\n");
    assert_eq!(p.read("out/big.csv"), "id\n1\n4\n");
    assert_eq!(db.rows("SELECT count(*) FROM customers"), ["3"]);

    p.ok(&["run", "filtered.yaml", "--var", "who=Zoë Müller"]);
    assert_eq!(p.read("out/named.csv"), "id,name\n12,Zoë Müller\n");
}

/// A pipeline that loads `data/rows.csv` into `t` with the given `write_db` settings.
#[test]
fn upsert_with_cdc_deletes_applies_the_last_event_per_key() {
    let db = TestDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    let file = load_csv(
        &p,
        "postgres",
        "id,name,deleted\n1,a,false\n2,b,false\n3,c,false\n",
        "mode: upsert, keys: [id], delete_when: deleted, audit_columns: true",
    );
    p.ok(&["run", &file]);
    assert_eq!(db.rows("SELECT id, name FROM t ORDER BY id"), ["1|a", "2|b", "3|c"]);
    // Key 1 updated, key 2 deleted, key 4 inserted then deleted, key 5 deleted then re-inserted.
    let events = "id,name,deleted\n1,A,false\n2,b,true\n4,d,false\n4,d,true\n5,e,true\n5,E,false\n";
    let file = load_csv(&p, "postgres", events, "mode: upsert, keys: [id], delete_when: deleted, audit_columns: true");
    p.ok(&["run", &file]);
    assert_eq!(db.rows("SELECT id, name FROM t ORDER BY id"), ["1|A", "3|c", "5|E"]);
    // Rows 1 and 5 were written by the second run, row 3 still carries the first.
    assert_eq!(
        db.rows("SELECT count(DISTINCT _weir_run_id), bool_and(_weir_loaded_at > now() - interval '1 hour') FROM t"),
        ["2|t"]
    );
    assert_eq!(
        db.rows("SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'deleted'"),
        ["0"]
    );
}

#[test]
fn append_delete_and_schema_evolution() {
    let db = TestDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    p.ok(&["run", &load_csv(&p, "postgres", "id,name\n1,a\n2,b\n", "mode: append")]);
    // A new column is added; a narrower existing column is widened.
    db.exec("ALTER TABLE t ALTER COLUMN id TYPE integer");
    p.ok(&["run", &load_csv(&p, "postgres", "id,name,score\n3000000000,c,1.5\n", "mode: append")]);
    assert_eq!(db.rows("SELECT id, name, score FROM t ORDER BY id"), ["1|a|NULL", "2|b|NULL", "3000000000|c|1.5"]);
    assert_eq!(
        db.rows("SELECT data_type FROM information_schema.columns WHERE table_name = 't' AND column_name = 'id'"),
        ["bigint"]
    );

    let frozen = p.fails(
        &["run", &load_csv(&p, "postgres", "id,name,extra\n4,d,x\n", "mode: append, schema_evolution: freeze")],
        2,
    );
    assert!(
        frozen.contains("step `out`") && frozen.contains("new column `extra` (Utf8)") && frozen.contains("frozen"),
        "{frozen}"
    );
    let mismatch = p.fails(&["run", &load_csv(&p, "postgres", "id,name,score\n4,d,high\n", "mode: append")], 2);
    assert!(mismatch.contains("column `score`: the input has Utf8, the table has float8"), "{mismatch}");
    p.ok(&["run", &load_csv(&p, "postgres", "id,name,extra\n4,d,x\n", "mode: append, schema_evolution: discard")]);
    assert_eq!(db.rows("SELECT count(*) FROM information_schema.columns WHERE table_name = 't'"), ["3"]);

    p.ok(&["run", &load_csv(&p, "postgres", "id\n1\n4\n99\n", "mode: delete, keys: [id]")]);
    assert_eq!(db.rows("SELECT id FROM t ORDER BY id"), ["2", "3000000000"]);
}

#[test]
fn a_failed_run_leaves_the_database_untouched() {
    let db = TestDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    let err = p.fails(&["run", &over_budget(&p, "postgres")], 2);
    assert!(err.contains("above max_invalid"), "{err}");
    // The table was created inside the load's transaction, so it is gone with it.
    assert_eq!(db.rows("SELECT to_regclass('t') IS NULL"), ["t"]);
}

#[test]
fn validate_checks_connections_and_db_steps() {
    let p = Project::new();
    p.file(
        "p.yaml",
        r#"
name: bad_db
connections:
  app: { kind: postgress, url: "${NOT_SET_ANYWHERE}" }
steps:
  a:
    read_db: { connection: ap, table: t, query: "SELECT 1" }
  b:
    write_db: { input: a, connection: app, table: t, mode: upsert }
"#,
    );
    let out = p.fails(&["validate", "p.yaml"], 1);
    for expected in [
        "4:16: connection `app`: unknown kind `postgress`",
        "needs environment variable `NOT_SET_ANYWHERE`",
        "unknown connection `ap`",
        "did you mean `app`?",
        "needs exactly one of `table` and `query`",
        "mode `upsert` needs `keys`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn dry_run_shows_ddl_and_merge_and_changes_nothing() {
    let db = TestDb::new();
    let p = postgres_example(&db);
    let log = p.ok_log(&["run", "incremental_sync.yaml", "--dry-run"]);
    for expected in [
        r#"Creating table: CREATE TABLE IF NOT EXISTS "warehouse"."orders" ("id" bigint NOT NULL, "customer_id" integer"#,
        r#"Merging: WITH merged AS (INSERT INTO "warehouse"."orders" AS t ("id", "customer_id", "amount", "status", "updated_at")"#,
        "ON CONFLICT (\"id\") DO UPDATE SET",
        "Dry run: rolling back 4 rows",
        "dry run finished",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
    assert_eq!(db.rows("SELECT to_regclass('warehouse.orders') IS NULL"), ["t"]);
    assert_eq!(
        p.ok(&["state", "get", "incremental_sync.yaml", "last_sync"]).trim(),
        "last_sync = \"1970-01-01T00:00:00Z\" (default)"
    );
    p.ok(&["run", "incremental_sync.yaml"]);
    assert_eq!(db.rows("SELECT count(*) FROM warehouse.orders"), ["4"]);
}

#[test]
fn execute_steps_run_after_the_loads_commit_with_bound_parameters() {
    let db = TestDb::new();
    db.exec("CREATE TABLE load_log (loaded bigint, note text)");
    let p = Project::new().env("DB_URL", &db.url());
    p.file("data/rows.csv", "id,name\n1,a\n2,b\n3,c\n").file(
        "p.yaml",
        r#"
name: with_actions
variables:
  note: { type: string, default: "nightly'; DROP TABLE load_log; --" }
connections:
  db: { kind: postgres, url: "${DB_URL}" }
steps:
  log_it:
    execute: { connection: db, sql: "INSERT INTO load_log SELECT count(*), $note FROM t" }
  rows:
    read_csv: { path: data/rows.csv }
  out:
    write_db: { input: rows, connection: db, table: t, mode: append }
  analyze:
    execute: { connection: db, sql: "ANALYZE t" }
"#,
    );
    let dry = p.ok_log(&["run", "p.yaml", "--dry-run"]);
    assert!(dry.contains("Dry run: not running action `log_it`"), "{dry}");
    assert_eq!(db.rows("SELECT count(*) FROM load_log"), ["0"]);
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(log.contains("Action complete: 1 rows affected"), "{log}");
    // The action saw the rows the load committed, though it comes first in the file.
    assert_eq!(db.rows("SELECT loaded, note FROM load_log"), ["3|nightly'; DROP TABLE load_log; --"]);
}

#[test]
fn dead_letters_kept_in_a_postgres_table_round_trip_through_replay() {
    let db = TestDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    crate::common::dead_letter_table_pipeline(&p, "postgres", "ok: { positive: amount }");
    p.ok(&["run", "p.yaml"]);
    assert_eq!(
        db.rows("SELECT step, record, retry_count FROM dlq ORDER BY id"),
        [r#"checked|{"amount":-5,"id":2}|0"#, r#"checked|{"amount":0,"id":3}|0"#,]
    );
    assert_eq!(p.dlq("p.yaml").len(), 2, "weir dlq reads the table");

    crate::common::dead_letter_table_pipeline(&p, "postgres", "ok: { expr: \"amount > -100\" }");
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("2 went through and were removed, 0 failed again"), "{log}");
    assert_eq!(db.rows("SELECT count(*) FROM dlq"), ["0"]);
    assert_eq!(db.rows("SELECT id FROM orders ORDER BY id"), ["1", "2", "3"]);
}

/// A port that drops its first `refused` connections at once, then forwards to the local PostgreSQL: a server
/// that is restarting.
fn flaky_postgres(refused: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            if n < refused {
                drop(client);
                continue;
            }
            let server = std::net::TcpStream::connect("127.0.0.1:5432").unwrap();
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_read, &mut s_write));
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || std::io::copy(&mut s_read, &mut c_write));
        }
    });
    port
}

#[test]
fn a_load_waits_out_a_server_that_drops_its_first_connections() {
    let db = TestDb::new();
    let port = flaky_postgres(2);
    let url = format!("postgres://postgres@127.0.0.1:{port}/{}", db.name);
    let p = Project::new().env("DB_URL", &url);
    let file = load_csv(&p, "postgres", "id,name\n1,a\n2,b\n", "mode: append, retry: { max_attempts: 5, delay: 20ms }");
    let log = p.ok_log(&["run", &file]);
    assert!(log.contains("connection `db`") && log.contains("retrying"), "{log}");
    assert_eq!(db.rows("SELECT id, name FROM t ORDER BY id"), ["1|a", "2|b"]);
    assert_eq!(p.retries(&file, "out"), 2, "two dropped connections, two retries");
}

#[test]
fn a_state_store_in_postgres_keeps_runs_state_logs_and_dead_letters() {
    let db = TestDb::new();
    let p = Project::example("orders").env("WEIR_STATE", &db.url());
    p.ok(&["run", "pipeline.yaml"]);
    assert!(!p.path().join(".weir/state.db").exists(), "nothing is kept in the embedded store");
    assert_eq!(db.rows("SELECT pipeline, status, trigger FROM weir.runs"), ["orders|success|manual"]);

    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--json"])).unwrap();
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--run", &run_id, "--json"])).unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"raw_orders"), "steps in the order they ran: {names:?}");
    assert!(p.ok(&["runs", "pipeline.yaml", "--run", &run_id, "--logs"]).contains("Run "), "log lines are kept");
    assert!(p.ok(&["state", "get", "pipeline.yaml"]).contains("last_run = "));

    let letters = p.dlq("pipeline.yaml");
    assert!(!letters.is_empty(), "the example sets bad rows aside");
    let stored = db.rows("SELECT count(*) FROM weir.dead_letters");
    assert_eq!(stored, [letters.len().to_string()]);
    let id = letters[0]["id"].as_i64().unwrap().to_string();
    p.ok(&["dlq", "purge", "pipeline.yaml", "--id", &id]);
    assert_eq!(p.dlq("pipeline.yaml").len(), letters.len() - 1);

    // The password of the URL is never printed, even when the store cannot be reached.
    let p = p.env("WEIR_STATE", "postgres://weir:hunter2@127.0.0.1:1/state");
    let out = p.fails(&["runs", "pipeline.yaml"], 2);
    assert!(out.contains("postgres://weir:***@127.0.0.1:1/state") && !out.contains("hunter2"), "{out}");
    let help = p.ok(&["serve", "--help"]);
    assert!(
        help.contains("WEIR_STATE") && !help.contains("hunter2"),
        "--help names the variable, not its value:\n{help}"
    );
}

#[test]
fn rows_the_database_refuses_go_to_the_dead_letters_and_replay_once_it_is_fixed() {
    let db = TestDb::new();
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY, email text NOT NULL, amount bigint CHECK (amount >= 0)); INSERT INTO t VALUES (1, 'old@x.io', 1)");
    let p = Project::new().env("DB_URL", &db.url());
    let mut csv = String::from("id,email,amount\n");
    for id in 2..=1000 {
        let (email, amount) = match id {
            17 => (String::new(), 5),
            500 => (format!("u{id}@x.io"), -3),
            _ => (format!("u{id}@x.io"), id),
        };
        csv.push_str(&format!("{id},{email},{amount}\n"));
    }
    csv.push_str("1,dup@x.io,9\n");
    p.file("data/in.csv", &csv);
    let pipeline = |mode: &str, on_error: &str| {
        format!(
            "name: load\nconnections:\n  db: {{ kind: postgres, url: \"${{DB_URL}}\" }}\nsteps:\n  rows:\n    read_csv: {{ path: data/in.csv }}\n  \
             out:\n    on_error: {on_error}\n    write_db: {{ input: rows, connection: db, table: t, mode: {mode}, keys: [id] }}\n"
        )
    };
    p.file("p.yaml", &pipeline("append", "fail"));
    let out = p.fails(&["run", "p.yaml"], 2);
    assert!(out.contains("violates"), "on_error: fail stops at the first refusal:\n{out}");
    assert_eq!(db.rows("SELECT count(*) FROM t"), ["1"], "and loads nothing");

    p.file("p.yaml", &pipeline("append", "dead_letter"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(
        db.rows("SELECT count(*), sum(amount) FROM t"),
        [format!("{}|{}", 1 + 997, 1 + (2..=1000).sum::<i64>() - 17 - 500)]
    );
    let letters = p.dlq("p.yaml");
    let mut refused: Vec<(i64, String)> = letters
        .iter()
        .map(|l| (l["record"]["id"].as_i64().unwrap(), l["error"].as_str().unwrap().to_string()))
        .collect();
    refused.sort();
    assert_eq!(refused.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 17, 500], "{refused:?}");
    assert!(
        refused[0].1.contains("duplicate key")
            && refused[1].1.contains("not-null")
            && refused[2].1.contains("t_amount_check"),
        "{refused:?}"
    );
    assert_eq!(letters[0]["step"], "out");
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--json"])).unwrap();
    let id = runs["runs"][0]["run_id"].as_str().unwrap();
    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&["runs", "p.yaml", "--run", id, "--json"])).unwrap();
    let out = steps.iter().find(|s| s["step"] == "out").unwrap();
    assert_eq!((out["rows_out"].as_u64(), out["rows_invalid"].as_u64()), (Some(997), Some(3)), "{out}");

    // The destination is fixed: the empty email and the negative amount are allowed now. The duplicate key is still
    // refused in append mode, and stays with one more retry.
    db.exec("ALTER TABLE t ALTER COLUMN email DROP NOT NULL; ALTER TABLE t DROP CONSTRAINT t_amount_check");
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("2 went through and were removed, 1 failed again"), "{log}");
    let left = p.dlq("p.yaml");
    assert_eq!((left.len(), left[0]["record"]["id"].as_i64(), left[0]["retry_count"].as_i64()), (1, Some(1), Some(1)));
    assert_eq!(db.rows("SELECT count(*) FROM t"), ["1000"]);

    // In upsert mode the duplicate key is an update, and a refused row is isolated the same way.
    db.exec("ALTER TABLE t ADD CONSTRAINT small CHECK (amount < 2000)");
    p.file("data/in.csv", "id,email,amount\n1,dup@x.io,9\n2,a@x.io,5000\n3,b@x.io,3\n");
    p.file("p.yaml", &pipeline("upsert", "skip"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(db.rows("SELECT id, amount FROM t WHERE id <= 3 ORDER BY id"), ["1|9", "2|2", "3|3"]);
    assert_eq!(p.dlq("p.yaml").len(), 1, "skip keeps no new dead letter");
}

#[test]
fn a_batch_loaded_again_keeps_its_refused_row_once() {
    let db = TestDb::new();
    // Row 20,001 (the first of batch 3) breaks the CHECK. Batch 3's first COMMIT fails with a serialization
    // failure (a deferred trigger counting inserted rows), after its refused row was set aside, so batch 3 is
    // loaded a second time and refuses that row again.
    db.exec(
        "CREATE TABLE t (id bigint PRIMARY KEY, amount bigint CHECK (amount >= 0));
         CREATE SEQUENCE inserted;
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF nextval('inserted') = 20001 THEN RAISE EXCEPTION 'try again' USING ERRCODE = '40001'; END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER fail_once AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_once();",
    );
    let mut csv = String::from("id,amount\n");
    for id in 1..=30_000 {
        csv.push_str(&format!("{id},{}\n", if id == 20_001 { -1 } else { id }));
    }
    let p = Project::new().env("DB_URL", &db.url());
    p.file("data/rows.csv", &csv).file(
        "load.yaml",
        "name: load\nsettings: { commit_every: 10000 }\nconnections:\n  db: { kind: postgres, url: \"${DB_URL}\" }\nsteps:\n  rows:\n    read_csv: { path: data/rows.csv }\n  \
         out:\n    on_error: dead_letter\n    write_db: { input: rows, connection: db, table: t, mode: append, retry: { max_attempts: 3, delay: 10ms, retry_on: [conflict] } }\n",
    );
    let log = p.ok_log(&["run", "load.yaml"]);
    assert!(log.contains("try again") && log.contains("retrying"), "batch 3 was loaded again:\n{log}");
    assert_eq!(db.rows("SELECT count(*), count(DISTINCT id) FROM t"), ["29999|29999"]);
    let letters = p.dlq("load.yaml");
    assert_eq!(letters.len(), 1, "one dead letter for the one refused row: {letters:?}");
    assert_eq!(letters[0]["origin"], "row 20001 of the load into `t` on `db`");
}

/// The machine's PostgreSQL has TLS on with Debian's self-signed "snakeoil" certificate, issued for `localhost`:
/// each `sslmode` is checked against what the server saw (`pg_stat_ssl`) and what the certificate allows.
#[test]
fn sslmode_encrypts_and_checks_the_server_certificate_as_libpq_does() {
    let db = TestDb::new();
    assert_eq!(db.rows("SHOW ssl"), ["on"], "this test needs the server's TLS (Debian's default, ssl = on)");
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    // A project whose one connection goes to `url`; the pipeline records whether the server saw TLS.
    let project = |url: &str| {
        let p = Project::new().env("DB_URL", url);
        p.file(
            "p.yaml",
            "name: tls\nconnections:\n  db: { kind: postgres, url: \"${DB_URL}\" }\nsteps:\n  seen:\n    \
             read_db: { connection: db, query: \"SELECT ssl::text AS encrypted FROM pg_stat_ssl WHERE pid = pg_backend_pid()\" }\n  \
             out:\n    write_csv: { input: seen, path: out/tls.csv }\n",
        );
        p
    };
    let run = |url: String| {
        let p = project(&url);
        p.ok(&["run", "p.yaml"]);
        p.read("out/tls.csv")
    };
    let name = &db.name;
    assert_eq!(run(format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=disable")), "encrypted\nfalse\n");
    assert_eq!(
        run(format!("postgres://postgres@127.0.0.1:5432/{name}")),
        "encrypted\ntrue\n",
        "prefer, the default, encrypts"
    );
    assert_eq!(run(format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=require")), "encrypted\ntrue\n");
    assert_eq!(
        run(format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=verify-ca&sslrootcert={snakeoil}")),
        "encrypted\ntrue\n",
        "verify-ca does not compare the name"
    );
    assert_eq!(
        run(format!(
            "postgres://postgres@localhost:5432/{name}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={snakeoil}"
        )),
        "encrypted\ntrue\n",
        "verify-full: the certificate names localhost"
    );

    let refused = |url: String| project(&url).fails(&["run", "p.yaml"], 2);
    let err = refused(format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=verify-full&sslrootcert={snakeoil}"));
    assert!(
        err.contains("connection `db`") && err.to_lowercase().contains("certificate"),
        "not issued for 127.0.0.1:\n{err}"
    );
    let err = refused(format!(
        "postgres://postgres@localhost:5432/{name}?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert=/etc/ssl/certs/ca-certificates.crt"
    ));
    assert!(err.contains("UnknownIssuer"), "the public roots did not sign the server's certificate:\n{err}");
    assert!(!err.contains("attempts"), "a refused certificate is not retried:\n{err}");
    let err = refused(format!(
        "postgres://postgres@127.0.0.1:5432/{name}?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt"
    ));
    assert!(err.contains("sslrootcert /nonexistent/root.crt"), "{err}");
}

/// Lists of scalars become PostgreSQL arrays and objects `jsonb`, and read back as Arrow lists and JSON text; an
/// ISO-8601 string a pipeline declares a `timestamp` is one in the table, so a cursor on it compares as time.
#[test]
fn nested_json_records_load_as_arrays_and_jsonb_and_read_back() {
    let db = TestDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    p.file(
        "data/docs.json",
        r#"[{"id": 1, "at": "2024-01-01T10:00:00Z", "scores": [3, 1], "tags": ["a", "b"], "meta": {"k": [{"x": 1}]}},
            {"id": 2, "at": "2024-01-02T10:00:00Z", "scores": [], "tags": null, "meta": {"k": []}}]"#,
    )
    .file(
        "load.yaml",
        "name: load\nconnections:\n  db: { kind: postgres, url: \"${DB_URL}\" }\nsteps:\n  docs:\n    read_json: { path: data/docs.json, schema: { id: bigint, at: timestamp } }\n  raw:\n    read_json: { path: data/docs.json }\n  typed:\n    sql: { query: \"SELECT d.id, d.at, r.scores, r.tags, r.meta FROM docs d JOIN raw r ON d.id = r.id\" }\n  out:\n    write_db: { input: typed, connection: db, table: t, mode: upsert, keys: [id] }\n",
    );
    p.ok(&["run", "load.yaml"]);
    assert_eq!(
        db.rows("SELECT column_name, data_type, udt_name FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position"),
        ["id|bigint|int8", "at|timestamp without time zone|timestamp", "scores|ARRAY|_int8", "tags|ARRAY|_text", "meta|jsonb|jsonb"]
    );
    assert_eq!(
        db.rows("SELECT id, at, scores, tags, meta FROM t ORDER BY id"),
        [r#"1|2024-01-01 10:00:00|{3,1}|{a,b}|{"k": [{"x": 1}]}"#, r#"2|2024-01-02 10:00:00|{}|NULL|{"k": []}"#]
    );
    p.file(
        "read.yaml",
        "name: read\nconnections:\n  db: { kind: postgres, url: \"${DB_URL}\" }\nsteps:\n  t:\n    read_db: { connection: db, table: t }\n  shown:\n    sql: { query: \"SELECT id, cardinality(scores) AS n, scores[1] AS first, array_to_string(tags, '+') AS tags, meta FROM t ORDER BY id\" }\n  out:\n    write_csv: { input: shown, path: out/t.csv }\n",
    );
    p.ok(&["run", "read.yaml"]);
    assert_eq!(
        p.read("out/t.csv"),
        "id,n,first,tags,meta\n1,2,3,a+b,\"{\"\"k\"\": [{\"\"x\"\": 1}]}\"\n2,0,,,\"{\"\"k\"\": []}\"\n"
    );
}
