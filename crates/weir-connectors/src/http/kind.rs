//! The `http` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

use crate::object_store::CLIENT_OPTIONS;

/// How API steps sign in: one method per connection.
pub const AUTH_OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("bearer_token", OptionType::Secret, "`Authorization: Bearer …`"),
    ConnectionOption::new("username", OptionType::Text, "HTTP basic sign-in, with `password`"),
    ConnectionOption::new("password", OptionType::Secret, "the basic sign-in's password"),
    ConnectionOption::new("api_key", OptionType::Secret, "an API key, sent as `api_key_header` or `api_key_query`"),
    ConnectionOption::new("api_key_header", OptionType::Text, "the header that carries `api_key`"),
    ConnectionOption::new("api_key_query", OptionType::Text, "the query parameter that carries `api_key`"),
    ConnectionOption::new("token_url", OptionType::Url, "OAuth 2 client credentials: where tokens come from"),
    ConnectionOption::new("client_id", OptionType::Text, "OAuth 2 client id"),
    ConnectionOption::new("client_secret", OptionType::Secret, "OAuth 2 client secret"),
    ConnectionOption::new("scope", OptionType::Text, "OAuth 2 scope"),
];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "http",
    family: Family::Http,
    description: "a REST API for read_api, enrich_api and write_api (sign-in options), or a web server for https:// file reads (client options)",
    url: UrlUse::Required("https://api.example.com/v1"),
    option_groups: &[AUTH_OPTIONS, CLIENT_OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};
