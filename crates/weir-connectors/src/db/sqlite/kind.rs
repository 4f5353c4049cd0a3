//! The `sqlite` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use std::time::Duration;

use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

/// How long a load waits for a file another process has locked, unless the connection says.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub const KIND: ConnectionKind = ConnectionKind {
    name: "sqlite",
    family: Family::Database,
    description: "SQLite: a file relative to the pipeline file, or an absolute path",
    url: UrlUse::Required("sqlite://data/app.db"),
    option_groups: &[&[ConnectionOption::new(
        "busy_timeout",
        OptionType::Duration,
        "how long a statement waits for a lock another process holds on the file before failing",
    )
    .default("5s")]],
    feature: None,
    can: Capabilities { read: true, write: true, execute: true, dead_letters: true, checkpoints: true },
};
