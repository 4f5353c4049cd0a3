//! `read_db` and `write_db` against the machine's real MariaDB (the `mysql` connection kind), one fresh database
//! per test, and a pipeline that moves rows between PostgreSQL and MariaDB.

use crate::common::mysql::TestMyDb;
use crate::common::postgres::TestDb;
use crate::common::{Project, load_csv, over_budget};

const SOURCE: &str = "
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  customer VARCHAR(100) NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  paid BOOLEAN NOT NULL,
  note TEXT,
  updated_at DATETIME(6) NOT NULL
);
INSERT INTO orders VALUES
  (1, 'Zoë 🦀', 25.00, TRUE, NULL, '2024-01-05 08:00:00'),
  (2, 'Grace', 12.50, FALSE, 'gift \\'wrapped\\'', '2024-01-06 09:15:00.250000'),
  (3, 'Ada', 30.10, TRUE, 'x', '2024-01-07 10:30:00')
";

fn sync_pipeline(p: &Project) -> &str {
    p.file(
        "sync.yaml",
        r#"
name: mysql_sync
state:
  last_sync: { type: timestamp, default: "1970-01-01T00:00:00Z", update: { max: changed.updated_at } }
connections:
  shop: { kind: mysql, url: "${SHOP_DB_URL}" }
steps:
  changed:
    read_db:
      connection: shop
      query: SELECT id, customer, amount, paid, note, updated_at FROM orders WHERE updated_at > $last_sync
  load:
    write_db: { input: changed, connection: shop, table: orders_copy, mode: upsert, keys: [id] }
"#,
    );
    "sync.yaml"
}

#[test]
fn incremental_upsert_keeps_types_and_reads_only_changes() {
    let db = TestMyDb::new();
    db.exec(SOURCE);
    let p = Project::new().env("SHOP_DB_URL", &db.url());
    let file = sync_pipeline(&p);
    assert!(p.ok_log(&["run", file]).contains("Extracted 3 records"));
    let copied = "SELECT id, customer, amount, paid, note, updated_at FROM orders_copy ORDER BY id";
    assert_eq!(db.rows(copied), db.rows("SELECT id, customer, amount, paid, note, updated_at FROM orders ORDER BY id"));
    assert_eq!(
        db.rows("SELECT column_name, column_type FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'orders_copy' ORDER BY ordinal_position"),
        ["id|bigint(20)", "customer|longtext", "amount|decimal(12,2)", "paid|tinyint(1)", "note|longtext", "updated_at|datetime(6)"]
    );

    db.exec("UPDATE orders SET amount = 26.00, updated_at = '2024-01-08 00:00:00' WHERE id = 1;\nINSERT INTO orders VALUES (4, 'Lin', 1.05, FALSE, NULL, '2024-01-09 00:00:00')");
    assert!(p.ok_log(&["run", file]).contains("Extracted 2 records"));
    assert_eq!(
        db.rows("SELECT id, customer, amount, updated_at FROM orders_copy ORDER BY id"),
        [
            "1|Zoë 🦀|26.00|2024-01-08 00:00:00.000000",
            "2|Grace|12.50|2024-01-06 09:15:00.250000",
            "3|Ada|30.10|2024-01-07 10:30:00.000000",
            "4|Lin|1.05|2024-01-09 00:00:00.000000",
        ]
    );
    assert_eq!(p.ok(&["state", "get", file, "last_sync"]).trim(), "last_sync = 2024-01-09T00:00:00");
}

#[test]
fn parameters_stay_data_and_filters_push_down() {
    let db = TestMyDb::new();
    db.exec(SOURCE);
    let p = Project::new().env("SHOP_DB_URL", &db.url());
    p.file(
        "p.yaml",
        r#"
name: mysql_params
variables:
  who: { type: string, default: "Ada" }
connections:
  shop: { kind: mysql, url: "${SHOP_DB_URL}" }
steps:
  named:
    read_db: { connection: shop, query: "SELECT id FROM orders WHERE customer = $who OR note = $who" }
  orders:
    read_db: { connection: shop, table: orders }
  big:
    sql: { query: "SELECT id FROM orders WHERE amount > 20 AND paid" }
  out_named:
    write_csv: { input: named, path: out/named.csv }
  out_big:
    write_csv: { input: big, path: out/big.csv }
"#,
    );
    let plan = p.ok(&["explain", "p.yaml"]);
    assert!(plan.contains("params=[?=$who, ?=$who]"), "{plan}");
    assert!(
        plan.contains(
            "MySqlScan: connection=shop, sql=SELECT `id`, `amount`, `paid` FROM `orders` WHERE (`amount` > 20.00)"
        ),
        "{plan}"
    );
    p.ok(&["run", "p.yaml", "--var", "who=x' OR 1=1; DROP TABLE orders; -- "]);
    assert_eq!(p.read("out/named.csv"), "id\n");
    assert_eq!(p.read("out/big.csv"), "id\n1\n3\n");
    p.ok(&["run", "p.yaml", "--var", "who=gift 'wrapped'"]);
    assert_eq!(p.read("out/named.csv"), "id\n2\n");
}

/// The write modes themselves are in the conformance suite; MySQL's upsert needs a key the server enforces.
#[test]
fn an_upsert_without_a_key_the_server_enforces_is_refused() {
    let db = TestMyDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    db.exec("CREATE TABLE no_key (id BIGINT, name TEXT)");
    let file = load_csv(&p, "mysql", "id,name\n1,a\n", "mode: upsert, keys: [id]");
    p.file("load2.yaml", &p.read(&file).replace("table: t,", "table: no_key,"));
    let err = p.fails(&["run", "load2.yaml"], 2);
    assert!(err.contains("upsert needs a primary key or unique index on (id) of `no_key`"), "{err}");
}

#[test]
fn a_failed_run_loads_no_rows() {
    let db = TestMyDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    let err = p.fails(&["run", &over_budget(&p, "mysql")], 2);
    assert!(err.contains("above max_invalid"), "{err}");
    // MySQL commits CREATE TABLE at once, so the table stays, but the transaction held its rows.
    assert_eq!(db.rows("SELECT COUNT(*) FROM t"), ["0"]);
}

#[test]
fn postgres_to_mariadb_join_across_systems() {
    let pg = TestDb::new();
    pg.exec("CREATE TABLE customers (id integer PRIMARY KEY, country text); INSERT INTO customers VALUES (1, 'DE'), (2, 'GB')");
    let my = TestMyDb::new();
    my.exec("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2));\nINSERT INTO orders VALUES (1, 1, 10.00), (2, 2, 5.50), (3, 1, 2.25)");
    let p = Project::new().env("PG_URL", &pg.url()).env("MY_URL", &my.url());
    p.file(
        "p.yaml",
        r#"
name: cross_db
connections:
  crm: { kind: postgres, url: "${PG_URL}" }
  shop: { kind: mysql, url: "${MY_URL}" }
steps:
  customers:
    read_db: { connection: crm, table: customers }
  orders:
    read_db: { connection: shop, table: orders }
  revenue:
    sql: { query: "SELECT c.country, sum(o.amount) AS revenue FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.country" }
  to_pg:
    write_db: { input: revenue, connection: crm, table: revenue_by_country, mode: replace }
  to_my:
    write_db: { input: revenue, connection: shop, table: revenue_by_country, mode: replace }
"#,
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(pg.rows("SELECT country, revenue FROM revenue_by_country ORDER BY country"), ["DE|12.25", "GB|5.50"]);
    assert_eq!(my.rows("SELECT country, revenue FROM revenue_by_country ORDER BY country"), ["DE|12.25", "GB|5.50"]);
}

#[test]
fn dry_run_logs_the_ddl_it_cannot_roll_back_instead_of_running_it() {
    let db = TestMyDb::new();
    db.exec(SOURCE);
    let p = Project::new().env("SHOP_DB_URL", &db.url());
    let file = sync_pipeline(&p);
    let log = p.ok_log(&["run", file, "--dry-run"]);
    assert!(log.contains("Dry run: would create the table, then load: CREATE TABLE `orders_copy`"), "{log}");
    assert_eq!(db.rows("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'orders_copy'"), ["0"]);
}

#[test]
fn execute_steps_bind_parameters_and_count_affected_rows() {
    let db = TestMyDb::new();
    db.exec(SOURCE);
    let p = Project::new().env("SHOP_DB_URL", &db.url());
    p.file(
        "p.yaml",
        r#"
name: mysql_actions
variables:
  since: { type: timestamp, default: "2024-01-06T00:00:00Z" }
connections:
  shop: { kind: mysql, url: "${SHOP_DB_URL}" }
steps:
  archive:
    execute: { connection: shop, sql: "UPDATE orders SET note = 'archived' WHERE updated_at < $since" }
"#,
    );
    assert!(p.ok_log(&["run", "p.yaml"]).contains("Action complete: 1 rows affected"));
    assert_eq!(db.rows("SELECT id FROM orders WHERE note = 'archived'"), ["1"]);
}

#[test]
fn rows_mariadb_refuses_go_to_the_dead_letters() {
    let db = TestMyDb::new();
    db.exec(crate::common::REFUSING_TABLE);
    let p = Project::new().env("DB_URL", &db.url());
    let refused = crate::common::refused_rows(&p, "mysql");
    assert!(
        refused[0].1.contains("Duplicate entry")
            && refused[1].1.contains("cannot be null")
            && refused[2].1.contains("CONSTRAINT"),
        "{refused:?}"
    );
    assert_eq!(
        db.rows("SELECT count(*), sum(amount) FROM t"),
        [format!("{}|{}", 1 + 197, 1 + (2..=200).sum::<i64>() - 17 - 50)]
    );
}

#[test]
fn dead_letters_kept_in_a_mariadb_table_round_trip_through_replay() {
    let db = TestMyDb::new();
    let p = Project::new().env("DB_URL", &db.url());
    crate::common::dead_letter_table_pipeline(&p, "mysql", "ok: { positive: amount }");
    p.ok(&["run", "p.yaml"]);
    assert_eq!(
        db.rows("SELECT step, record, retry_count FROM dlq ORDER BY id"),
        [r#"checked|{"amount":-5,"id":2}|0"#, r#"checked|{"amount":0,"id":3}|0"#,]
    );
    let letters = p.dlq("p.yaml");
    assert_eq!(letters.len(), 2, "weir dlq reads the table");
    let id = letters[0]["id"].as_i64().unwrap().to_string();
    assert!(p.ok(&["dlq", "show", "p.yaml", &id]).contains("failed rules: ok"), "one dead letter by id");

    crate::common::dead_letter_table_pipeline(&p, "mysql", "ok: { expr: \"amount > -1\" }");
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("1 went through and were removed, 1 failed again"), "{log}");
    assert_eq!(db.rows("SELECT step, record, retry_count FROM dlq"), [r#"checked|{"amount":-5,"id":2}|1"#]);
    p.ok(&["dlq", "purge", "p.yaml", "--all"]);
    assert_eq!(db.rows("SELECT count(*) FROM dlq"), ["0"]);
    assert_eq!(db.rows("SELECT id FROM orders ORDER BY id"), ["1", "3"]);
}

#[test]
fn a_narrower_column_is_widened_keeping_its_null_default_and_auto_increment() {
    let db = TestMyDb::new();
    db.exec("CREATE TABLE t (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, n INT NOT NULL DEFAULT 7, f FLOAT)");
    let p = Project::new().env("DB_URL", &db.url());
    let frozen = p.fails(
        &[
            "run",
            &load_csv(&p, "mysql", "id,n,f\n3000000000,4000000000,1.25\n", "mode: append, schema_evolution: freeze"),
        ],
        2,
    );
    assert!(frozen.contains("column `n`: the input has Int64, the table has long"), "{frozen}");
    p.ok(&["run", &load_csv(&p, "mysql", "id,n,f\n3000000000,4000000000,1.25\n", "mode: append")]);
    assert_eq!(db.rows("SELECT id, n, f FROM t"), ["3000000000|4000000000|1.25"]);
    assert_eq!(
        db.rows(
            "SELECT column_name, column_type, is_nullable, COALESCE(column_default, 'NULL'), extra FROM information_schema.columns
             WHERE table_schema = DATABASE() AND table_name = 't' ORDER BY ordinal_position"
        ),
        ["id|bigint(20)|NO|NULL|auto_increment", "n|bigint(20)|NO|7|", "f|double|YES|NULL|"]
    );
}

/// A private MariaDB with TLS on (the machine's has it off), on a free port of 127.0.0.1, with a certificate for
/// 127.0.0.1 from a test CA; stopped when dropped.
struct TlsMariaDb {
    process: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsMariaDb {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::common::test_certificates(d);
        let user = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let data = d.join("data");
        let installed = std::process::Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db (Debian's mariadb-server, on this machine) runs");
        assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = std::process::Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", d.join("mariadb.sock").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--ssl-cert={}", d.join("server.pem").display()))
            .arg(format!("--ssl-key={}", d.join("server.key").display()))
            .arg(format!("--ssl-ca={}", d.join("ca.pem").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mariadbd runs");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "the TLS MariaDB did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self { process, port, dir }
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn ssl_mode_encrypts_and_checks_the_server_certificate() {
    let server = TlsMariaDb::start();
    let ca = server.dir.path().join("ca.pem").display().to_string();
    let project = |query: &str| {
        let p = Project::new().env("DB_URL", &format!("mysql://root@127.0.0.1:{}/mysql?{query}", server.port));
        p.file(
            "p.yaml",
            "name: tls\nconnections:\n  db: { kind: mysql, url: \"${DB_URL}\" }\nsteps:\n  seen:\n    \
             read_db: { connection: db, query: \"SELECT VARIABLE_VALUE AS cipher FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'\" }\n  \
             out:\n    write_csv: { input: seen, path: out/tls.csv }\n",
        );
        p
    };
    let cipher = |query: &str| {
        let p = project(query);
        p.ok(&["run", "p.yaml"]);
        p.read("out/tls.csv").lines().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(cipher("ssl-mode=DISABLED"), "\"\"", "not encrypted: an empty cipher");
    assert!(cipher("ssl-mode=REQUIRED").starts_with("TLS_"), "encrypted, certificate not checked");
    assert!(
        cipher(&format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")).starts_with("TLS_"),
        "signed by the CA, issued for 127.0.0.1"
    );

    let err = project("ssl-mode=VERIFY_CA").fails(&["run", "p.yaml"], 2);
    assert!(
        err.contains("connection `db`") && err.to_lowercase().contains("certificate"),
        "a CA the public roots do not hold:\n{err}"
    );
    assert!(!err.contains("attempts"), "a refused certificate is not retried:\n{err}");
}

/// Every unsigned integer type of MySQL, at its largest value, copied into each database Weir loads: the table Weir
/// creates holds it exactly (PostgreSQL's `numeric(20,0)` for `BIGINT UNSIGNED`, SQLite's `TEXT`).
#[test]
fn unsigned_integers_copy_exactly_into_every_database() {
    let source = TestMyDb::new();
    source.exec(
        "CREATE TABLE u (id INT PRIMARY KEY, t TINYINT UNSIGNED, s SMALLINT UNSIGNED, m MEDIUMINT UNSIGNED,
                         i INT UNSIGNED, b BIGINT UNSIGNED);
         INSERT INTO u VALUES (1, 255, 65535, 16777215, 4294967295, 18446744073709551615), (2, 0, 0, 0, 0, 0)",
    );
    let (pg, my) = (TestDb::new(), TestMyDb::new());
    let clickhouse = crate::common::clickhouse::TestClickHouse::start();
    clickhouse.exec("CREATE DATABASE w");
    let p = Project::new();
    let sqlite = p.path().join("u.sqlite");
    let mut connections = vec![
        ("pg", "postgres", pg.url()),
        ("my", "mysql", my.url()),
        ("lite", "sqlite", format!("sqlite://{}", sqlite.display())),
        ("ch", "clickhouse", clickhouse.url("w")),
    ];
    if cfg!(feature = "duckdb") {
        connections.push(("duck", "duckdb", format!("duckdb://{}", p.path().join("u.duckdb").display())));
    }
    let mut yaml = format!("name: unsigned\nconnections:\n  src: {{ kind: mysql, url: \"{}\" }}\n", source.url());
    for (name, kind, url) in &connections {
        yaml.push_str(&format!("  {name}: {{ kind: {kind}, url: \"{url}\" }}\n"));
    }
    yaml.push_str("steps:\n  u:\n    read_db: { connection: src, table: u }\n");
    for (name, _, _) in &connections {
        yaml.push_str(&format!(
            "  to_{name}:\n    write_db: {{ input: u, connection: {name}, table: u, mode: replace }}\n"
        ));
    }
    p.file("p.yaml", &yaml);
    p.ok(&["run", "p.yaml"]);

    let largest = "1|255|65535|16777215|4294967295|18446744073709551615";
    let query = "SELECT id, t, s, m, i, b FROM u ORDER BY id";
    assert_eq!(pg.rows(query), [largest, "2|0|0|0|0|0"], "PostgreSQL");
    assert_eq!(
        pg.rows("SELECT data_type, numeric_precision FROM information_schema.columns WHERE column_name = 'b'"),
        ["numeric|20"]
    );
    assert_eq!(my.rows(query), [largest, "2|0|0|0|0|0"], "MariaDB");
    let lite = rusqlite::Connection::open(&sqlite).unwrap();
    let b: String = lite.query_row("SELECT b FROM u WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(b, "18446744073709551615", "SQLite");
    let ch: Vec<String> =
        clickhouse.rows("SELECT id, t, s, m, i, b FROM w.u ORDER BY id").iter().map(|r| r.replace('\t', "|")).collect();
    assert_eq!(ch, [largest, "2|0|0|0|0|0"], "ClickHouse");
    if cfg!(feature = "duckdb") {
        p.file(
            "dump.yaml",
            &format!(
                "name: dump\nconnections:\n  duck: {{ kind: duckdb, url: \"duckdb://{}\" }}\nsteps:\n  u:\n    read_db: {{ connection: duck, query: \"SELECT id, t, s, m, i, b, typeof(b) AS ty FROM u ORDER BY id\" }}\n  out:\n    write_csv: {{ input: u, path: out/duck.csv }}\n",
                p.path().join("u.duckdb").display()
            ),
        );
        p.ok(&["run", "dump.yaml"]);
        assert_eq!(
            p.read("out/duck.csv").lines().nth(1),
            Some("1,255,65535,16777215,4294967295,18446744073709551615,UBIGINT")
        );
    }
}
