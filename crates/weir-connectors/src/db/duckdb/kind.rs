//! The `duckdb` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, Family, UrlUse};

pub const KIND: ConnectionKind = ConnectionKind {
    name: "duckdb",
    family: Family::Database,
    description: "DuckDB: a file relative to the pipeline file, or an absolute path",
    url: UrlUse::Required("duckdb://data/app.duckdb"),
    option_groups: &[],
    feature: Some("duckdb"),
    can: Capabilities { read: true, write: true, execute: true, dead_letters: false, checkpoints: true },
};
