//! The `postgres` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, Family, UrlUse};

pub const KIND: ConnectionKind = ConnectionKind {
    name: "postgres",
    family: Family::Database,
    description: "PostgreSQL (TLS as libpq: `?sslmode=require`, `sslrootcert=`)",
    url: UrlUse::Required("postgres://user:${PGPASSWORD}@host:5432/db"),
    option_groups: &[],
    feature: None,
    can: Capabilities { read: true, write: true, execute: true, dead_letters: true, checkpoints: true },
};
