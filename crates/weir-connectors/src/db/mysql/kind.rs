//! The `mysql` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, Family, UrlUse};

pub const KIND: ConnectionKind = ConnectionKind {
    name: "mysql",
    family: Family::Database,
    description: "MySQL or MariaDB (TLS: `?ssl-mode=REQUIRED`, `ssl-ca=`)",
    url: UrlUse::Required("mysql://user:${MYSQL_PASSWORD}@host:3306/db"),
    option_groups: &[],
    feature: None,
    can: Capabilities { read: true, write: true, execute: true, dead_letters: true, checkpoints: true },
};
