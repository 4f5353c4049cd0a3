//! The `sqlite` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, Family, UrlUse};

pub const KIND: ConnectionKind = ConnectionKind {
    name: "sqlite",
    family: Family::Database,
    description: "SQLite: a file relative to the pipeline file, or an absolute path",
    url: UrlUse::Required("sqlite://data/app.db"),
    option_groups: &[],
    feature: None,
    can: Capabilities { read: true, write: true, execute: true, dead_letters: true, checkpoints: true },
};
