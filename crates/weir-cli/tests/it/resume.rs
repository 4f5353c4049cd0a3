//! Batched loads (`settings.commit_every`) under faults: a batch that fails, a process killed or cancelled
//! mid-load, database sessions terminated under it, a run out of time. After `weir run --resume` every destination
//! holds each row exactly once.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Project;
use crate::common::mysql::TestMyDb;
use crate::common::postgres::TestDb;
use crate::common::running::Running;

const ROWS: u64 = 200_000;
const BATCH: u64 = 10_000;

/// `data/rows.csv` with ids 1..=ROWS and an amount of id % 1000, and `load.yaml` loading it into table `t` of
/// `$DB_URL` (a `kind` connection) with `write` settings, `commit_every: BATCH` and `extra` settings.
fn project(kind: &str, write: &str, extra: &str) -> Project {
    let p = Project::new();
    let mut csv = String::from("id,name,amount\n");
    for id in 1..=ROWS {
        csv.push_str(&format!("{id},name {id},{}\n", id % 1000));
    }
    p.file("data/rows.csv", &csv).file(
        "load.yaml",
        &format!(
            "name: load\nsettings: {{ commit_every: {BATCH}{extra} }}\nconnections:\n  db: {{ kind: {kind}, url: \"${{DB_URL}}\" }}\n\
             steps:\n  rows:\n    read_csv: {{ path: data/rows.csv }}\n  out:\n    write_db: {{ input: rows, connection: db, table: t, {write} }}\n"
        ),
    );
    p
}

/// Every row once: the count, distinct ids and the amount total an uninterrupted run leaves.
fn expected() -> String {
    let sum: u64 = (1..=ROWS).map(|id| id % 1000).sum();
    format!("{ROWS}|{ROWS}|{sum}")
}

const CHECK: &str = "SELECT count(*), count(DISTINCT id), sum(amount) FROM t";

#[test]
fn a_failed_batch_resumes_after_the_last_checkpoint_without_duplicates() {
    let db = TestDb::new();
    // Append mode: any batch loaded twice would show as duplicate ids.
    let p = project("postgres", "mode: append", "").env("DB_URL", &db.url());
    db.exec(
        "CREATE TABLE t (id bigint, name text, amount bigint);
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.id = 25001 THEN RAISE EXCEPTION 'row 25001 refused'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    let failed = p.fails(&["run", "load.yaml"], 2);
    assert!(failed.contains("row 25001 refused"), "{failed}");
    assert!(failed.contains("batch 3 of 20 of `out`"), "{failed}");
    // Two whole batches committed, each with its checkpoint.
    assert_eq!(db.rows("SELECT count(*) FROM t"), ["20000"]);
    assert_eq!(db.rows("SELECT step, batches, rows FROM weir_checkpoints"), ["out|2|20000"]);

    db.exec("DROP TRIGGER refuse ON t");
    let log = p.ok_log(&["run", "load.yaml", "--resume"]);
    assert!(log.contains("committed 2 of 20 batches before"), "{log}");
    assert_eq!(db.rows(CHECK), [expected()]);
    let runs = p.ok(&["runs", "load.yaml"]);
    assert_eq!(runs.matches("success").count(), 1, "one run, resumed to success:\n{runs}");
    // Nothing is left to resume.
    let again = p.fails(&["run", "load.yaml", "--resume"], 2);
    assert!(again.contains("nothing to resume"), "{again}");
}

#[test]
fn mariadb_batches_commit_with_their_checkpoint() {
    let db = TestMyDb::new();
    let p = project("mysql", "mode: append", "").env("DB_URL", &db.url());
    db.exec(
        "CREATE TABLE t (id BIGINT, name TEXT, amount BIGINT);\n\
         CREATE TRIGGER refuse BEFORE INSERT ON t FOR EACH ROW BEGIN IF NEW.id = 45001 THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'row 45001 refused'; END IF; END",
    );
    let failed = p.fails(&["run", "load.yaml"], 2);
    assert!(failed.contains("row 45001 refused"), "{failed}");
    assert_eq!(db.rows("SELECT count(*) FROM t"), ["40000"]);
    assert_eq!(db.rows("SELECT step, batches, `rows` FROM weir_checkpoints"), ["out|4|40000"]);
    db.exec("DROP TRIGGER refuse");
    p.ok(&["run", "load.yaml", "--resume"]);
    assert_eq!(db.rows(CHECK), [expected()]);
}

#[test]
fn a_killed_upsert_resumes_from_its_checkpoint() {
    let db = TestDb::new();
    let p = project("postgres", "mode: upsert, keys: [id]", "");
    let env = [("DB_URL", db.url())];
    let mut run = Running::start(&p, &env, &["run", "load.yaml"]);
    run.wait_for("Committed batch 3 of 20");
    run.child.kill().unwrap();
    let (code, _) = run.finish();
    assert_eq!(code, None, "killed by a signal");

    let committed: u64 = db.rows("SELECT count(*) FROM t")[0].parse().unwrap();
    assert!(
        (3 * BATCH..ROWS).contains(&committed) && committed.is_multiple_of(BATCH),
        "whole batches only: {committed}"
    );
    let p = p.env("DB_URL", &db.url());
    let runs = p.ok(&["runs", "load.yaml"]);
    assert!(runs.contains("interrupted"), "a killed run reads as interrupted:\n{runs}");

    let log = p.ok_log(&["run", "load.yaml", "--resume"]);
    assert!(log.contains("is staged: loading what is not committed"), "{log}");
    assert!(!log.contains("Committed batch 1 of 20"), "committed batches are not loaded again:\n{log}");
    assert_eq!(db.rows(CHECK), [expected()]);
}

#[test]
fn terminated_database_sessions_are_retried() {
    let db = TestDb::new();
    // Waits stay short (max_delay), so the retries do not outlast the test.
    let p = project("postgres", "mode: append, retry: { max_attempts: 50, delay: 50ms, max_delay: 200ms }", "")
        .env("DB_URL", &db.url());
    let mut run = Running::start(&p, &[("DB_URL", db.url())], &["run", "load.yaml"]);
    run.wait_for("Committed batch 1 of 20");
    // Terminate Weir's busy sessions: watch closely until three were hit, then let the run finish.
    let mut terminated = 0;
    while run.child.try_wait().unwrap().is_none() {
        if terminated < 3 {
            let hit = db.rows(&format!(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = '{}' AND pid <> pg_backend_pid() AND state <> 'idle'",
                db.name
            ));
            terminated += hit[0].parse::<u32>().unwrap();
        }
        std::thread::sleep(Duration::from_millis(if terminated == 0 { 5 } else { 100 }));
    }
    let (code, log) = run.finish();
    assert_eq!(code, Some(0), "{log}");
    assert!(terminated > 0, "no session was terminated while loading:\n{log}");
    assert!(log.contains("retrying"), "{log}");
    assert_eq!(db.rows(CHECK), [expected()]);
    assert!(p.retries("load.yaml", "out") > 0, "the run record counts the retried batches");
}

#[test]
fn a_whole_load_whose_session_is_terminated_starts_over_and_loads_every_row_once() {
    let db = TestDb::new();
    let p = project("postgres", "mode: append, retry: { max_attempts: 5, delay: 50ms, max_delay: 200ms }", "")
        .env("DB_URL", &db.url());
    p.file("load.yaml", &p.read("load.yaml").replace(&format!("commit_every: {BATCH}"), "batch_size: 4096"));
    let mut run = Running::start(&p, &[("DB_URL", db.url())], &["run", "load.yaml"]);
    run.wait_for("Loading: COPY");
    let mut terminated = 0;
    while terminated == 0 && run.child.try_wait().unwrap().is_none() {
        // Once rows have flowed: the COPY has taken 50,000 of them.
        let hit = db.rows(&format!(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_progress_copy
             WHERE datname = '{}' AND tuples_processed > 50000",
            db.name
        ));
        terminated += hit[0].parse::<u32>().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (code, log) = run.finish();
    assert!(terminated > 0, "the load ended before its session could be terminated:\n{log}");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("the load of `out`") && log.contains("retrying"), "{log}");
    assert_eq!(db.rows(CHECK), [expected()], "nothing of the broken attempt stayed, nothing is doubled");
    assert!(p.retries("load.yaml", "out") > 0, "the run record counts the retry");
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "load.yaml", "--json"])).unwrap();
    let id = runs["runs"][0]["run_id"].as_str().unwrap();
    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&["runs", "load.yaml", "--run", id, "--json"])).unwrap();
    let extract = steps.iter().find(|s| s["step"] == "rows").unwrap();
    assert_eq!(extract["rows_out"].as_u64(), Some(ROWS), "the extract's count started over with the load: {extract}");
}

#[test]
fn sigterm_cancels_between_checkpoints_and_resume_finishes() {
    let p = project("sqlite", "mode: upsert, keys: [id]", "").env("DB_URL", "dest.db");
    let mut run = Running::start(&p, &[("DB_URL", "dest.db".into())], &["run", "load.yaml"]);
    run.wait_for("Committed batch 2 of 20");
    let pid = run.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let (code, log) = run.finish();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("cancelled; batches committed so far stay"), "{log}");
    assert!(log.contains("(in step `out`)"), "{log}");

    let db = rusqlite::Connection::open(p.path().join("dest.db")).unwrap();
    let count = |db: &rusqlite::Connection| {
        db.query_row(CHECK, [], |r| {
            Ok(format!("{}|{}|{}", r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    let committed: u64 = db.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    assert!(committed >= 2 * BATCH && committed.is_multiple_of(BATCH), "whole batches only: {committed}");
    p.ok(&["run", "load.yaml", "--resume"]);
    assert_eq!(count(&db).unwrap(), expected());
}

#[test]
fn a_run_out_of_time_is_cancelled_and_recorded_with_its_step() {
    let db = TestDb::new();
    let p = project("postgres", "mode: append", ", timeout: 300ms").env("DB_URL", &db.url());
    let out = p.fails(&["run", "load.yaml"], 2);
    assert!(out.contains("timed out after 300 ms"), "{out}");
    let runs = p.ok(&["runs", "load.yaml"]);
    assert!(runs.contains("failed") && runs.contains("timed out"), "{runs}");
}

#[test]
fn weir_serve_resumes_a_killed_run_on_start() {
    let db = TestDb::new();
    let p = project("postgres", "mode: append", "").env("DB_URL", &db.url());
    let env = [("DB_URL", db.url())];
    let mut run = Running::start(&p, &env, &["run", "load.yaml"]);
    run.wait_for("Committed batch 2 of 20");
    run.child.kill().unwrap();
    run.finish();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Running::start(&p, &env, &["serve", ".", "--listen", &listen]);
    serve.wait_for("Resuming interrupted run");
    if let Err(statuses) = one_successful_run(&p) {
        panic!("the killed run was not resumed: {statuses:?}");
    }
    let _ = Command::new("kill").args(["-TERM", &serve.child.id().to_string()]).status();
    serve.finish();
    assert_eq!(db.rows(CHECK), [expected()], "append mode: nothing loaded twice");
}

/// Waits until `load.yaml` has one run and it succeeded (a resumed run keeps its id); after two minutes, the
/// runs' statuses.
fn one_successful_run(p: &Project) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "load.yaml", "--json"])).unwrap();
        let statuses: Vec<String> =
            runs["runs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect();
        if statuses == ["success"] {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(statuses);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `POST path` to a server on 127.0.0.1; the status line of its answer.
fn post(listen: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(listen).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: {listen}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

fn free_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

#[test]
fn two_instances_share_a_postgres_store_fire_each_schedule_once_and_take_over_a_killed_run() {
    let db = TestDb::new();
    let p = project("postgres", "mode: append", "").env("DB_URL", &db.url()).env("WEIR_STATE", &db.url());
    p.file("data/one.csv", "id\n1\n").file(
        "tick.yaml",
        "name: tick\ntriggers:\n  - every: 1s\nsteps:\n  one:\n    read_csv: { path: data/one.csv }\n  out:\n    write_csv: { input: one, path: out/tick.csv }\n",
    );
    let env = [("DB_URL", db.url()), ("WEIR_STATE", db.url())];
    let serve = |listen: &str| {
        Running::start(&p, &env, &["serve", ".", "--listen", listen, "--lease-secs", "3", "--max-runs", "2"])
    };
    let (listen_a, listen_b) = (free_listen(), free_listen());
    let mut a = serve(&listen_a);
    a.wait_for("Serving on");
    let mut b = serve(&listen_b);
    b.wait_for("Serving on");

    assert!(post(&listen_a, "/api/pipelines/load/runs").contains("202"), "instance A starts the load");
    a.wait_for("Committed batch 2 of 20");
    a.child.kill().unwrap();
    let (_, log_a) = a.finish();

    b.wait_for("Resuming interrupted run");
    let finished = one_successful_run(&p);
    let _ = Command::new("kill").args(["-TERM", &b.child.id().to_string()]).status();
    let (_, log_b) = b.finish();
    if let Err(statuses) = finished {
        panic!("instance B did not finish A's run: {statuses:?}\nA's log:\n{log_a}\nB's log:\n{log_b}");
    }
    assert!(
        log_b.contains("batches before: going on from there") && !log_b.contains("committed 0 of"),
        "B went on from A's checkpoint:\n{log_b}"
    );
    assert_eq!(db.rows(CHECK), [expected()], "append mode: B loaded only the batches A had not committed");

    // Both instances ran `tick` every second: each fire was claimed by one of them and ran once.
    let fires: u64 = db.rows("SELECT count(*) FROM weir.schedule_fires WHERE pipeline = 'tick'")[0].parse().unwrap();
    let runs = db.rows("SELECT count(*) FROM weir.runs WHERE pipeline = 'tick' AND trigger = 'schedule'");
    assert!(fires >= 3, "tick fired {fires} times");
    assert_eq!(runs, [fires.to_string()], "one run per fire");
}
