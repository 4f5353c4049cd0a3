//! `read_db`, `write_db` and `execute` on a real ClickHouse server (Debian's 18.16, each test starts its own),
//! checked end to end through `weir` and read back with the server's own client interface.

use crate::common::clickhouse::{PASSWORD, TestClickHouse};
use crate::common::{Project, load_csv, over_budget};

/// A server whose database `shop` holds `orders` and `customers`.
fn shop() -> TestClickHouse {
    let ch = TestClickHouse::start();
    ch.exec(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id Int64, customer_id UInt32, note Nullable(String), amount Nullable(Decimal(12, 2)), \
           ordered Date, updated_at DateTime, code FixedString(3)) ENGINE = MergeTree() ORDER BY id;
         INSERT INTO shop.orders VALUES (1, 10, 'Zoë 🦀 tab\there', 25.00, '2024-01-05', '2024-01-05 08:00:00', 'abc'), \
           (2, 20, NULL, 12.50, '2024-01-06', '2024-01-06 09:15:00', 'de'), (3, 10, 'it''s', NULL, '2024-01-07', '2024-01-07 10:30:00', 'xyz');
         CREATE TABLE shop.customers (id UInt32, name String) ENGINE = MergeTree() ORDER BY id;
         INSERT INTO shop.customers VALUES (10, 'Ada'), (20, 'Grace')",
    );
    ch
}

#[test]
fn reads_types_pushes_filters_down_binds_values_as_data_and_joins_with_files() {
    let ch = shop();
    let p = Project::new().env("CH_URL", &ch.url("shop"));
    p.file("data/returns.csv", "order_id,reason\n1,broken\n3,late\n");
    p.file(
        "p.yaml",
        r#"
name: ch_read
variables:
  who: { type: string, default: "nobody" }
  since: { type: timestamp, default: "2024-01-06T00:00:00Z" }
connections:
  ch: { kind: clickhouse, url: "${CH_URL}" }
steps:
  orders:
    read_db: { connection: ch, table: orders }
  recent:
    read_db: { connection: ch, query: "SELECT id, note FROM orders WHERE updated_at >= $since AND (note IS NULL OR note != $who)" }
  customers:
    read_db: { connection: ch, table: customers }
  returns:
    read_csv: { path: data/returns.csv }
  big:
    sql: { query: "SELECT id, customer_id FROM orders WHERE id > 1" }
  joined:
    sql:
      query: |
        SELECT o.id, c.name, r.reason FROM orders o
        JOIN customers c ON c.id = o.customer_id JOIN returns r ON r.order_id = o.id ORDER BY o.id
  all_out:
    write_csv: { input: orders, path: out/orders.csv }
  recent_out:
    write_csv: { input: recent, path: out/recent.csv }
  big_out:
    write_csv: { input: big, path: out/big.csv }
  joined_out:
    write_csv: { input: joined, path: out/joined.csv }
"#,
    );
    let plan = p.ok(&["explain", "p.yaml"]);
    assert!(
        plan.contains("ClickHouseScan: connection=ch, sql=SELECT `id`, `customer_id` FROM `orders` WHERE (`id` > 1)"),
        "{plan}"
    );
    assert!(plan.contains("params=[p1=$since, p2=$who]"), "{plan}");
    let log = p.ok_log(&["run", "p.yaml", "--var", "who=x' OR 1=1) --"]);
    assert!(!log.contains(PASSWORD) && !plan.contains(PASSWORD), "{log}");
    assert_eq!(
        p.read("out/orders.csv"),
        "id,customer_id,note,amount,ordered,updated_at,code\n\
         1,10,Zoë 🦀 tab\there,25.00,2024-01-05,2024-01-05T08:00:00Z,abc\n\
         2,20,,12.50,2024-01-06,2024-01-06T09:15:00Z,de\n\
         3,10,it's,,2024-01-07,2024-01-07T10:30:00Z,xyz\n"
    );
    // The injection attempt was compared as text: every row since the cursor has another note.
    assert_eq!(p.read("out/recent.csv"), "id,note\n2,\n3,it's\n");
    assert_eq!(p.read("out/big.csv"), "id,customer_id\n2,20\n3,10\n");
    assert_eq!(p.read("out/joined.csv"), "id,name,reason\n1,Ada,broken\n3,Ada,late\n");
    p.ok(&["run", "p.yaml", "--var", "who=it's"]);
    assert_eq!(p.read("out/recent.csv"), "id,note\n2,\n");
}

#[test]
fn incremental_sync_upserts_into_a_replacing_merge_tree() {
    let ch = shop();
    let p = Project::new().env("CH_URL", &ch.url("shop"));
    p.file(
        "sync.yaml",
        r#"
name: ch_sync
state:
  last_sync: { type: timestamp, default: "1970-01-01T00:00:00Z", update: { max: changed.updated_at } }
connections:
  ch: { kind: clickhouse, url: "${CH_URL}" }
steps:
  changed:
    read_db: { connection: ch, query: "SELECT id, note, amount, updated_at FROM orders WHERE updated_at > $last_sync" }
  load:
    write_db: { input: changed, connection: ch, table: orders_copy, mode: upsert, keys: [id] }
"#,
    );
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 3 records"));
    let copy = || ch.rows("SELECT id, note, amount, updated_at FROM shop.orders_copy FINAL ORDER BY id");
    assert_eq!(
        copy(),
        [
            "1\tZoë 🦀 tab\\there\t25.00\t2024-01-05 08:00:00",
            "2\t\\N\t12.50\t2024-01-06 09:15:00",
            "3\tit\\'s\t\\N\t2024-01-07 10:30:00"
        ]
    );
    assert_eq!(
        ch.rows("SELECT engine, sorting_key FROM system.tables WHERE name = 'orders_copy'"),
        ["ReplacingMergeTree\tid"]
    );

    // The cursor moved: the next run reads what changed since, and the key's row is replaced.
    ch.exec("ALTER TABLE shop.orders DELETE WHERE id = 2");
    let started = std::time::Instant::now();
    while ch.rows("SELECT count() FROM system.mutations WHERE is_done = 0") != ["0"] {
        assert!(started.elapsed().as_secs() < 30, "the delete did not finish");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ch.exec("INSERT INTO shop.orders VALUES (2, 20, NULL, 99.99, '2024-01-06', '2024-02-01 00:00:00', 'de')");
    assert!(p.ok_log(&["run", "sync.yaml"]).contains("Extracted 1 records"));
    assert_eq!(copy()[1], "2\t\\N\t99.99\t2024-02-01 00:00:00");
    assert_eq!(ch.rows("SELECT count() FROM shop.orders_copy FINAL"), ["3"]);
    assert_eq!(ch.rows("SELECT count() FROM system.tables WHERE name LIKE '%__weir_%'"), ["0"]);
}

#[test]
fn modes_cdc_deletes_and_schema_evolution() {
    let ch = TestClickHouse::start();
    ch.exec("CREATE DATABASE w");
    let p = Project::new().env("DB_URL", &ch.url("w"));
    let rows = |sql: &str| ch.rows(sql);
    p.ok(&["run", &load_csv(&p, "clickhouse", "id,name\n1,a\n2,b\n3,c\n", "mode: upsert, keys: [id]")]);
    let events = "id,name,score,deleted\n1,A,1.5,false\n2,b,,true\n4,d,,false\n4,d,,true\n5,e,,true\n5,E,2.5,false\n";
    let file = load_csv(&p, "clickhouse", events, "mode: upsert, keys: [id], delete_when: deleted");
    let planned = p.ok_log(&["run", &file, "--dry-run"]);
    assert!(planned.contains("Dry run: would stage the rows (CREATE TABLE `w`.`t__weir_stage_"), "{planned}");
    assert!(planned.contains("then commit: ALTER TABLE `w`.`t` DELETE WHERE (`id`) IN"), "{planned}");
    assert_eq!(rows("SELECT count() FROM system.tables WHERE name LIKE '%__weir_%'"), ["0"]);
    assert_eq!(rows("SELECT id, name FROM w.t FINAL ORDER BY id"), ["1\ta", "2\tb", "3\tc"]);
    p.ok(&["run", &file]);
    assert_eq!(rows("SELECT id, name, score FROM w.t FINAL ORDER BY id"), ["1\tA\t1.5", "3\tc\t\\N", "5\tE\t2.5"]);
    let frozen =
        p.fails(&["run", &load_csv(&p, "clickhouse", "id,extra\n9,x\n", "mode: append, schema_evolution: freeze")], 2);
    assert!(frozen.contains("new column `extra` (Utf8)"), "{frozen}");
    p.ok(&["run", &load_csv(&p, "clickhouse", "id\n1\n5\n", "mode: delete, keys: [id]")]);
    assert_eq!(rows("SELECT id FROM w.t FINAL ORDER BY id"), ["3"]);
    p.ok(&["run", &load_csv(&p, "clickhouse", "id,name\n3,c\n", "mode: append")]);
    assert_eq!(rows("SELECT id, name FROM w.t ORDER BY id"), ["3\tc", "3\tc"]);
    p.ok(&["run", &load_csv(&p, "clickhouse", "id,name\n7,g\n8,h\n", "mode: replace")]);
    assert_eq!(rows("SELECT id, name FROM w.t ORDER BY id"), ["7\tg", "8\th"]);
    // A replace that creates its table: keys are not Nullable there, and the rows are encoded to match.
    let file = load_csv(&p, "clickhouse", "id,name\n1,x\n2,\n", "mode: replace, keys: [id]");
    p.file(&file, &p.read(&file).replace("table: t,", "table: fresh,"));
    p.ok(&["run", &file]);
    assert_eq!(rows("SELECT id, name, toTypeName(id) FROM w.fresh ORDER BY id"), ["1\tx\tInt64", "2\t\\N\tInt64"]);
    // An upsert into a table whose engine would keep both rows of a key is refused, naming the engine.
    ch.exec("CREATE TABLE w.plain (id Int64, name String) ENGINE = MergeTree() ORDER BY id");
    let file = load_csv(&p, "clickhouse", "id,name\n1,a\n", "mode: upsert, keys: [id]");
    p.file(&file, &p.read(&file).replace("table: t,", "table: plain,"));
    let refused = p.fails(&["run", &file], 2);
    assert!(refused.contains("needs a ReplacingMergeTree ordered by the keys (id); `plain` is MergeTree"), "{refused}");
    assert_eq!(rows("SELECT count() FROM system.tables WHERE name LIKE '%__weir_%'"), ["0"]);
}

#[test]
fn a_failed_run_leaves_no_rows_and_no_staging_table() {
    let ch = TestClickHouse::start();
    ch.exec("CREATE DATABASE w");
    let p = Project::new().env("DB_URL", &ch.url("w"));
    let err = p.fails(&["run", &over_budget(&p, "clickhouse")], 2);
    assert!(err.contains("above max_invalid"), "{err}");
    assert_eq!(ch.rows("SELECT count() FROM w.t"), ["0"]);
    // A value ClickHouse 18's DateTime cannot hold fails the load with the row and column, and nothing is left.
    let err = p.fails(
        &[
            "run",
            &load_csv(&p, "clickhouse", "id,at\n1,2024-01-01T00:00:00\n2,2024-01-01T00:00:00.5\n", "mode: append"),
        ],
        2,
    );
    assert!(err.contains("row 2, column `at`: has a fraction of a second"), "{err}");
    assert_eq!(ch.rows("SELECT count() FROM system.tables WHERE database = 'w' AND name LIKE '%__weir_%'"), ["0"]);
    assert_eq!(ch.rows("SELECT count() FROM w.t"), ["0"]);

    // A query that fails on the server after many rows fails the run: never a short result passed off as whole.
    p.file(
        "boom.yaml",
        "name: boom\nconnections:\n  db: { kind: clickhouse, url: \"${DB_URL}\" }\nsteps:\n  rows:\n    read_db: { connection: db, query: \"SELECT number, throwIf(number = 150000) AS boom FROM system.numbers LIMIT 200000\" }\n  out:\n    write_csv: { input: rows, path: out/boom.csv }\n",
    );
    let err = p.fails(&["run", "boom.yaml"], 2);
    assert!(err.contains("step `rows`") && err.contains("Code: 395"), "{err}");
    assert!(!p.path().join("out/boom.csv").exists());
}
