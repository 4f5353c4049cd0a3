//! The `sftp` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

const OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("user", OptionType::Text, "the user, when the path's URL names none"),
    ConnectionOption::new("password", OptionType::Secret, "password sign-in"),
    ConnectionOption::new("private_key", OptionType::Secret, "a private key's text (OpenSSH or PEM)"),
    ConnectionOption::new("private_key_path", OptionType::Path, "a private key's file"),
    ConnectionOption::new("passphrase", OptionType::Secret, "the private key's passphrase"),
    ConnectionOption::new("known_hosts", OptionType::Path, "the known_hosts file the server's key is checked against")
        .default("~/.ssh/known_hosts"),
    ConnectionOption::new(
        "host_key_fingerprint",
        OptionType::Text,
        "the server key's `SHA256:` fingerprint, as `ssh-keygen -lf` prints it",
    ),
];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "sftp",
    family: Family::ObjectStore,
    description: "an SFTP server (password or key sign-in; the host key is always checked)",
    url: UrlUse::InSteps("sftp://user@host:22/absolute/path"),
    option_groups: &[OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};
