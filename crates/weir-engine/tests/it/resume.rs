//! A batched load that fails part way is resumed after its last committed batch: no batch is loaded twice and
//! none is skipped.

use crate::fake::{Fake, engine, pipeline};

#[tokio::test]
async fn a_resumed_run_loads_only_the_batches_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Fake::new(10);
    fake.batched.insert("out".into());
    *fake.fail_batch.lock().unwrap() = Some(("out".into(), 2));
    let log = fake.log.clone();
    let yaml = "name: batched\nsettings:\n  commit_every: 3\nsteps:\n  src:\n    read_csv: { path: in.csv }\n  out:\n    write_csv: { input: src, path: out.csv }\n";
    let (engine, options) = engine(fake, dir.path());
    let pipeline = pipeline(yaml);
    let err = engine.run(&pipeline, &options, Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("refused its rows"), "{err}");
    let first: Vec<String> = log.lines();
    assert_eq!(first, ["prepare out 3 batch 0", "commit out", "prepare out 3 batch 1", "commit out", "refuse out"]);

    engine.resume(&pipeline, &options, Default::default(), None).await.unwrap();
    let resumed: Vec<String> = log.lines()[first.len()..].to_vec();
    assert_eq!(resumed, ["prepare out 3 batch 2", "commit out", "prepare out 1 batch 3", "commit out"]);
}
