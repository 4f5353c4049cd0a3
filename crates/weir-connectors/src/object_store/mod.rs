//! Files on object stores and file servers: the remote access every file step shares ([`remote`]), downloads
//! read while they arrive ([`download`]), uploads held open until the run commits ([`deferred_upload`]), and one
//! folder per kind of store. A kind implements [`StoreKind`] and describes itself in its folder; the shared
//! modules find kinds by URL scheme through the registry.

pub mod deferred_upload;
pub mod download;
pub mod remote;

pub mod azure;
pub mod gcs;
pub mod s3;
pub mod sftp;
pub mod sharepoint;

use std::fmt::Display;
use std::str::FromStr;
use std::sync::Arc;

use object_store::ObjectStore;
use reqwest::Url;
use weir_engine::Secret;
use weir_spec::{ConnectionOption, OptionType};

/// A kind of store that holds the files of some URL schemes.
pub trait StoreKind: Send + Sync {
    /// The URL schemes of the paths it holds (`s3`, `s3a`).
    fn schemes(&self) -> &'static [&'static str];

    /// A store for `url` configured by a connection's `options` (none without a connection). It must not touch the
    /// network: stores are built when a pipeline is planned.
    fn build(&self, url: &Url, options: &[(&str, Secret)]) -> Result<Arc<dyn ObjectStore>, String>;
}

/// `builder` with each option set through `set` by its object_store key `K`; an unknown key is an error naming it.
pub fn configured<B, K>(builder: B, options: &[(&str, Secret)], set: impl Fn(B, K, &str) -> B) -> Result<B, String>
where
    K: FromStr,
    K::Err: Display,
{
    options.iter().try_fold(builder, |builder, (key, value)| {
        let parsed = key.parse::<K>().map_err(|e| format!("unknown option `{key}` ({e})"))?;
        Ok(set(builder, parsed, value.expose()))
    })
}

/// The HTTP client settings every object_store-backed kind takes (object_store's `ClientConfigKey`).
pub const CLIENT_OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new(
        "timeout",
        OptionType::Duration,
        "the longest wait for a request's answer and for a transfer's next bytes",
    )
    .default("30s"),
    ConnectionOption::new("connect_timeout", OptionType::Duration, "the longest wait for a connection").default("5s"),
    ConnectionOption::new("allow_http", OptionType::Bool, "allow plain-HTTP endpoints (test servers)").default("false"),
    ConnectionOption::new(
        "allow_invalid_certificates",
        OptionType::Bool,
        "accept any TLS certificate (never in production)",
    )
    .default("false"),
    ConnectionOption::new("proxy_url", OptionType::Url, "an HTTP proxy for every request"),
    ConnectionOption::new("proxy_ca_certificate", OptionType::Text, "the PEM certificate of the proxy's CA"),
    ConnectionOption::new("proxy_excludes", OptionType::Text, "hosts reached without the proxy, comma-separated"),
    ConnectionOption::new("user_agent", OptionType::Text, "the User-Agent header"),
    ConnectionOption::new(
        "default_content_type",
        OptionType::Text,
        "the Content-Type of uploads whose type is not known",
    ),
    ConnectionOption::new("http1_only", OptionType::Bool, "speak HTTP/1 only").default("false"),
    ConnectionOption::new("http2_only", OptionType::Bool, "speak HTTP/2 only").default("false"),
    ConnectionOption::new("http2_keep_alive_interval", OptionType::Duration, "HTTP/2 keep-alive ping interval"),
    ConnectionOption::new("http2_keep_alive_timeout", OptionType::Duration, "HTTP/2 keep-alive ping timeout"),
    ConnectionOption::new(
        "http2_keep_alive_while_idle",
        OptionType::Bool,
        "HTTP/2 keep-alive pings on idle connections",
    ),
    ConnectionOption::new("http2_max_frame_size", OptionType::Integer, "the largest HTTP/2 frame"),
    ConnectionOption::new("pool_idle_timeout", OptionType::Duration, "how long an idle pooled connection is kept"),
    ConnectionOption::new("pool_max_idle_per_host", OptionType::Integer, "idle pooled connections kept per host"),
    ConnectionOption::new("randomize_addresses", OptionType::Bool, "try a host's addresses in random order"),
];

/// Tests that a kind's options are the keys object_store knows, so `weir validate` accepts only what will work.
#[cfg(test)]
pub fn assert_options_parse<K: FromStr>(kind: &weir_spec::ConnectionKind) {
    for option in kind.options() {
        for name in std::iter::once(&option.name).chain(option.aliases) {
            assert!(name.parse::<K>().is_ok(), "{}: object_store does not know `{name}`", kind.name);
        }
    }
}
