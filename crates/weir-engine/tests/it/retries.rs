//! A load whose connection drops is prepared again from the start, within the retry policy, and counted.

use crate::fake::{Fake, engine, pipeline};

fn yaml(attempts: u32) -> String {
    format!(
        "name: retried\nsettings:\n  retry: {{ max_attempts: {attempts}, delay: 1ms, retry_on: [connection] }}\nsteps:\n  src:\n    read_csv: {{ path: in.csv }}\n  out:\n    write_csv: {{ input: src, path: out.csv }}\n"
    )
}

#[tokio::test]
async fn a_dropped_connection_is_retried_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(4);
    fake.drops.lock().unwrap().insert("out".into(), 2);
    let log = fake.log.clone();
    let (engine, options) = engine(fake, dir.path());
    let report = engine.run(&pipeline(&yaml(3)), &options, Default::default()).await.unwrap();
    assert_eq!(log.lines(), ["drop out", "drop out", "prepare out 4", "commit out"]);
    let out = report.steps.iter().find(|s| s.step == "out").unwrap();
    assert_eq!((out.rows_out, out.retries), (4, 2));
    let src = report.steps.iter().find(|s| s.step == "src").unwrap();
    assert_eq!(src.rows_out, 4, "a retried load's upstream counts start over, not add up");
}

#[tokio::test]
async fn a_load_out_of_attempts_fails_the_run_without_committing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(4);
    fake.drops.lock().unwrap().insert("out".into(), 5);
    let log = fake.log.clone();
    let (engine, options) = engine(fake, dir.path());
    let err = engine.run(&pipeline(&yaml(2)), &options, Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("the connection dropped"), "{err}");
    assert_eq!(log.lines(), ["drop out", "drop out"]);
}
