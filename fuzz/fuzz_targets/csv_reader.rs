//! Any bytes as a CSV file, read by `read_csv` in a pipeline: rows that do not fit go to the dead letters, the
//! rest are counted and written.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use weir_fuzz::{Harness, pipeline};
use weir_spec::Pipeline;

static PIPELINE: LazyLock<Pipeline> = LazyLock::new(|| {
    pipeline(
        "name: csv\nsteps:\n  rows:\n    on_error: dead_letter\n    read_csv: { path: in.csv }\n  \
         counted:\n    sql: { query: \"SELECT count(*) AS n FROM rows\" }\n  out:\n    write_csv: { input: counted, path: out.csv }\n",
    )
});

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::default);

fuzz_target!(|data: &[u8]| {
    HARNESS.file("in.csv", data);
    HARNESS.run(&PIPELINE, None);
});
