//! A JSONPath on the first line, a JSON document after it: the records the path selects (as `read_api` and
//! `read_webhook` select them), the document split into records (as `read_json` splits a file), and the file read
//! whole by `read_json` in a pipeline.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use weir_fuzz::{Harness, pipeline};
use weir_spec::Pipeline;

static PIPELINE: LazyLock<Pipeline> = LazyLock::new(|| {
    pipeline(
        "name: json\nsteps:\n  rows:\n    on_error: dead_letter\n    read_json: { path: in.json }\n  \
         out:\n    write_csv: { input: rows, path: out.csv }\n",
    )
});

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::default);

fuzz_target!(|data: &[u8]| {
    let (path, document) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"$"[..], data),
    };
    if let Ok(path) = std::str::from_utf8(path) {
        let _ = weir_connectors::fuzzing::select_records(path, document);
    }
    if weir_connectors::fuzzing::split_records(document).is_ok() {
        HARNESS.file("in.json", document);
        HARNESS.run(&PIPELINE, None);
    }
});
