//! What the fuzz targets share: a pipeline run in-process, on a file or a webhook body the fuzzer made.

use std::path::Path;
use std::sync::Arc;

use weir_engine::{Engine, RunOptions, StateStore};
use weir_spec::Pipeline;

/// Runs pipelines with Weir's connectors, its files in a directory of its own.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Default for Harness {
    fn default() -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts"),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl Harness {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `name` in the directory.
    pub fn file(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir().join(name), bytes).expect("the fuzz directory is writable");
    }

    /// Runs `pipeline` (which must be valid) with `payload` as its webhook body. A run may fail, as bad input
    /// should make it; what it must not do is panic, hang or grow without bound.
    pub fn run(&self, pipeline: &Pipeline, payload: Option<serde_json::Value>) {
        let options = RunOptions {
            trigger: "fuzz".into(),
            variables: Default::default(),
            memory_limit: Some(256 << 20),
            base_dir: self.dir().to_path_buf(),
            scratch_root: self.dir().join("tmp"),
            dry_run: false,
            packages: self.dir().join("packages"),
            cancel: Default::default(),
            record_state: false,
            payload: payload.map(Arc::new),
            run_id: None,
        };
        // A fresh in-memory store for each run, so what runs record (dead letters, metrics) does not add up.
        let store = StateStore::in_memory().expect("an in-memory state store opens");
        let engine = Engine::new(Arc::new(weir_connectors::Builtin), Arc::new(store));
        let _ = self.runtime.block_on(engine.run(pipeline, &options, Default::default()));
    }
}

/// A pipeline of Weir's own, which must parse.
pub fn pipeline(yaml: &str) -> Pipeline {
    Pipeline::from_yaml_str(yaml).unwrap_or_else(|e| panic!("the target's pipeline: {e}"))
}
