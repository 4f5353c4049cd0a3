//! Any text as a pipeline file: parsed, then checked as `weir validate` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_spec::{Environment, Pipeline, check};

fuzz_target!(|text: &str| {
    if let Ok(pipeline) = Pipeline::from_yaml_str(text) {
        let _ = check(&pipeline, &Environment::default());
    }
});
