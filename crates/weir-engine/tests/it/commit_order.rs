//! Every load is prepared before any commits; one that fails leaves every other aborted and no action run.

use crate::fake::{Fake, engine, pipeline};

const PIPELINE: &str = "name: order\nconnections:\n  db: { kind: postgres, url: postgres://x@127.0.0.1/x }\nsteps:\n  src:\n    read_csv: { path: in.csv }\n  a:\n    write_csv: { input: src, path: a.csv }\n  b:\n    write_csv: { input: src, path: b.csv }\n  after:\n    execute: { connection: db, sql: ANALYZE }\n";

#[tokio::test]
async fn loads_commit_only_once_all_are_prepared_and_actions_run_after_the_commits() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(3);
    let log = fake.log.clone();
    let (engine, options) = engine(fake, dir.path());
    let report = engine.run(&pipeline(PIPELINE), &options, Default::default()).await.unwrap();
    let lines = log.lines();
    assert_eq!(lines.len(), 5, "{lines:?}");
    let last_prepare = lines.iter().rposition(|l| l.starts_with("prepare")).unwrap();
    assert!(last_prepare < log.first("commit").unwrap(), "{lines:?}");
    assert!(lines.contains(&"prepare a 3".to_string()) && lines.contains(&"prepare b 3".to_string()), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "action after", "{lines:?}");
    let a = report.steps.iter().find(|s| s.step == "a").unwrap();
    assert_eq!(a.rows_out, 3);
}

#[tokio::test]
async fn a_load_that_fails_to_prepare_aborts_the_others_and_nothing_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::new(3);
    fake.failing.insert("b".into());
    let log = fake.log.clone();
    let (engine, options) = engine(fake, dir.path());
    let err = engine.run(&pipeline(PIPELINE), &options, Default::default()).await.unwrap_err();
    assert_eq!(err.step(), Some("b"), "{err}");
    let lines = log.lines();
    assert!(lines.contains(&"prepare a 3".to_string()) && lines.contains(&"abort a".to_string()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("commit") || l.starts_with("action")), "{lines:?}");
    let runs = engine.store().runs(Some("order"), 1).unwrap();
    assert_eq!(runs[0].status, "failed");
}

#[tokio::test]
async fn a_dry_run_aborts_every_load_and_runs_no_action() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(3);
    let log = fake.log.clone();
    let (engine, mut options) = engine(fake, dir.path());
    options.dry_run = true;
    engine.run(&pipeline(PIPELINE), &options, Default::default()).await.unwrap();
    let lines = log.lines();
    assert_eq!(lines.iter().filter(|l| l.starts_with("abort")).count(), 2, "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("commit") || l.starts_with("action")), "{lines:?}");
}
