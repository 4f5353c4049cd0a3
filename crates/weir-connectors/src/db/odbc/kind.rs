//! The `odbc` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, Family, UrlUse};

pub const KIND: ConnectionKind = ConnectionKind {
    name: "odbc",
    family: Family::Database,
    description: "any ODBC driver (Oracle, SQL Server, Db2), encrypted as its DSN says",
    url: UrlUse::Required("Driver={...};Server=...;Pwd=${PASSWORD}"),
    option_groups: &[],
    feature: Some("odbc"),
    can: Capabilities { read: true, write: true, execute: true, dead_letters: false, checkpoints: false },
};
