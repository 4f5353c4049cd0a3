//! The `clickhouse` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, Family, UrlUse};

pub const KIND: ConnectionKind = ConnectionKind {
    name: "clickhouse",
    family: Family::Database,
    description: "ClickHouse over its HTTP interface (HTTPS: `clickhouses://`)",
    url: UrlUse::Required("clickhouse://user:${CH_PASSWORD}@host:8123/db"),
    option_groups: &[],
    feature: None,
    can: Capabilities { read: true, write: true, execute: true, dead_letters: false, checkpoints: false },
};
