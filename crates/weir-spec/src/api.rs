//! `read_api`: records from a REST API, page after page, and the retry policy its requests follow.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::step::OrderedMap;

/// Declares an HTTP step: `connection`, `url`, `headers`, `requests_per_second`, `timeout` and `retry` around the
/// kind's own fields. Spelled out rather than `#[serde(flatten)]`ed so every value keeps its line and column.
macro_rules! http_step {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// An `http` connection: its `url` is the base a relative `url` joins, its options the authentication.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub connection: Option<Spanned<String>>,
            /// Absolute, or relative to the connection's URL; `{{ var.x }}` templating.
            #[schemars(with = "String")]
            pub url: Spanned<String>,
            /// Request headers; `{{ state.x }}` templating.
            #[serde(default)]
            pub headers: OrderedMap<String>,
            $($(#[$fmeta])* pub $field: $ty,)*
            /// At most this many requests per second.
            #[serde(default)]
            pub requests_per_second: Option<f64>,
            /// Time allowed for one request, connection to last byte.
            #[serde(default = "default_timeout")]
            pub timeout: Duration,
            /// This step's retry policy; without one, `settings.retry`, else 5 attempts with exponential backoff on
            /// timeouts, lost connections, 429 and 5xx.
            #[serde(default)]
            pub retry: Option<Retry>,
        }
    };
}

http_step! {
    /// Read records from an HTTP JSON API. The base URL and credentials live in an `http` connection (so secrets come
    /// from the environment); the step says what to fetch, where the records are in each response and how to page.
    ///
    /// ```yaml
    /// customers:
    ///   read_api:
    ///     connection: crm
    ///     url: /customers
    ///     query: { updated_since: "{{ state.last_sync }}", limit: "100" }
    ///     records: $.data
    ///     paginate: { cursor: { param: cursor, from: $.next_cursor } }
    /// ```
    pub struct ReadApi {
        #[serde(default)]
        pub method: HttpMethod,
        /// Query parameters added to the URL (encoded); `{{ state.x }}` templating.
        #[serde(default)]
        pub query: OrderedMap<String>,
        /// A JSON request body, sent with `Content-Type: application/json`; `{{ state.x }}` templating.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub body: Option<Spanned<String>>,
        /// JSONPath (RFC 9535) of the records in a response, e.g. `$.data` or `$.result.items[*]`. Without it the
        /// response must be an array of records.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub records: Option<Spanned<String>>,
        #[serde(default)]
        pub paginate: Option<Paginate>,
        /// JSONPath of a boolean in the response; paging stops after a page where it is false.
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub has_more: Option<Spanned<String>>,
        /// Stop after this many pages, even if the API has more.
        #[serde(default)]
        pub max_pages: Option<u64>,
        /// Pages fetched at once with `offset` or `page` pagination, whose requests need no earlier answer: pages
        /// are fetched ahead, written in order, and paging stops at the first short or empty page (pages fetched
        /// past it are dropped). Other styles fetch one page at a time. Default 1.
        #[serde(default)]
        pub concurrency: Option<usize>,
        /// Turn nested objects into `parent.child` columns instead of structs.
        #[serde(default)]
        pub flatten: bool,
        /// Column name to SQL type. Without it the types are inferred from every record of every page, so a field
        /// that first appears on page 40 still becomes a column.
        #[serde(default)]
        pub schema: Option<OrderedMap<String>>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
    Put,
    Patch,
}

http_step! {
    /// Send the records of a step to an HTTP API, one per request or in batches. Requests go out when the run
    /// commits (after every other load is ready and every `max_invalid` budget holds), concurrently within the
    /// limits; a record whose request fails for good follows `on_error` (to the dead-letter store with the status and
    /// response body, or failing the run).
    ///
    /// ```yaml
    /// push:
    ///   write_api:
    ///     input: customers
    ///     connection: crm
    ///     method: PUT
    ///     url: /customers/{id}          # {column} takes each record's value (with batch_size 1)
    ///     idempotency_header: Idempotency-Key
    /// ```
    pub struct WriteApi {
        #[schemars(with = "String")]
        pub input: Spanned<String>,
        #[serde(default = "post")]
        pub method: HttpMethod,
        /// Records per request: 1 sends each record as the JSON body; more sends a JSON array of them.
        #[serde(default = "one_usize")]
        pub batch_size: usize,
        /// With batches: send `{"<wrap>": [records]}` instead of a bare array.
        #[serde(default)]
        pub wrap: Option<String>,
        /// Requests in flight at once.
        #[serde(default = "default_concurrency")]
        pub concurrency: usize,
        /// A header carrying a key derived from the pipeline, step, URL and body, so a request repeated by a retry or
        /// a re-run carries the same key and the API can drop the duplicate.
        #[serde(default)]
        pub idempotency_header: Option<String>,
    }
}

/// How to ask for the next page. Every style also stops at an empty page, at `has_more: false` and at `max_pages`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Paginate {
    /// The response names a cursor that the next request sends as a query parameter;
    /// paging stops when it is missing, null or empty.
    Cursor {
        /// The query parameter that carries the cursor.
        param: String,
        /// JSONPath of the next cursor in the response, e.g. `$.next_cursor`.
        from: String,
    },
    /// The response holds the next page's full URL at this JSONPath (e.g. `$.links.next`); stops when missing.
    NextUrl(String),
    /// The `Link: <…>; rel="next"` response header gives the next URL (GitHub style); stops when absent.
    LinkHeader,
    /// `?offset=0&limit=100`, then `offset=100`, … until a page has fewer records than `limit`.
    Offset {
        #[serde(default = "offset_param")]
        param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        limit: u64,
    },
    /// `?page=1`, then `page=2`, … until a page is empty (or shorter than `size`, when given).
    Page {
        #[serde(default = "page_param")]
        param: String,
        #[serde(default = "one")]
        start: u64,
        /// The query parameter for the page size, with `size`.
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
}

/// How a failing request is tried again. Each attempt is logged with the reason.
// Serialize: a database scan carries its policy to a cluster's executors.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included; 1 means no retry.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry.
    #[serde(default = "default_delay")]
    pub delay: Duration,
    #[serde(default)]
    pub backoff: Backoff,
    /// The longest wait between two attempts.
    #[serde(default = "default_max_delay")]
    pub max_delay: Duration,
    /// Which failures are retried: `timeout`, `connection` (refused, reset, dropped; a database session ended),
    /// `conflict` (a database serialization failure or deadlock), or an HTTP status (`429`, `503`) or class (`5xx`).
    /// A `Retry-After` header on a retried response sets the wait.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            delay: default_delay(),
            backoff: Backoff::default(),
            max_delay: default_max_delay(),
            retry_on: default_retry_on(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Fixed,
    /// Doubling waits with jitter, up to `max_delay`.
    #[default]
    Exponential,
}

/// A failure a retry policy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    Timeout,
    Connection,
    /// A database transaction that lost to another: a serialization failure or a deadlock.
    Conflict,
    Status(u16),
    /// Every status of a class: `5` for `5xx`.
    StatusClass(u16),
}

impl RetryOn {
    pub fn matches_status(self, status: u16) -> bool {
        match self {
            Self::Status(s) => s == status,
            Self::StatusClass(c) => status / 100 == c,
            Self::Timeout | Self::Connection | Self::Conflict => false,
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetryOnVisitor;
        impl Visitor<'_> for RetryOnVisitor {
            type Value = RetryOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`timeout`, `connection`, an HTTP status such as 429, or a class such as `5xx`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOn, E> {
                match u16::try_from(v) {
                    Ok(s @ 100..=599) => Ok(RetryOn::Status(s)),
                    _ => Err(E::custom(format!("{v} is not an HTTP status"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOn, E> {
                self.visit_u64(u64::try_from(v).map_err(|_| E::custom(format!("{v} is not an HTTP status")))?)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "timeout" => Ok(RetryOn::Timeout),
                    "connection" => Ok(RetryOn::Connection),
                    "conflict" => Ok(RetryOn::Conflict),
                    _ => {
                        if let Some(class) = v.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok())
                            && (1..=5).contains(&class)
                        {
                            return Ok(RetryOn::StatusClass(class));
                        }
                        match v.parse::<u64>() {
                            Ok(n) => self.visit_u64(n),
                            Err(_) => Err(E::custom(format!(
                                "unknown retry_on `{v}`; expected timeout, connection, conflict, a status like 429 or a class like 5xx"
                            ))),
                        }
                    }
                }
            }
        }
        deserializer.deserialize_any(RetryOnVisitor)
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Timeout => serializer.serialize_str("timeout"),
            Self::Connection => serializer.serialize_str("connection"),
            Self::Conflict => serializer.serialize_str("conflict"),
            Self::Status(status) => serializer.serialize_u16(*status),
            Self::StatusClass(class) => serializer.serialize_str(&format!("{class}xx")),
        }
    }
}

impl JsonSchema for RetryOn {
    fn schema_name() -> Cow<'static, str> {
        "RetryOn".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "oneOf": [
            { "type": "integer", "minimum": 100, "maximum": 599 },
            { "type": "string", "pattern": "^(timeout|connection|conflict|[1-5]xx|[1-5][0-9][0-9])$" },
        ] })
    }
}

/// A span of time written `500ms`, `30s`, `5m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 =
            number.parse().map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 30s, 5m"))?;
        let seconds = match unit.trim() {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "" => return Err(format!("`{text}` needs a unit: ms, s, m or h")),
            other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, m or h")),
        };
        Ok(Self(std::time::Duration::from_secs_f64(seconds)))
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As a person writes it: the largest unit the span is a whole number of.
        let ms = self.0.as_millis();
        let text = match ms {
            _ if ms > 0 && ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
            _ if ms > 0 && ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
            _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
            _ => format!("{}ms", self.0.as_secs_f64() * 1000.0),
        };
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[0-9.]+(ms|s|m|h)$", "examples": ["500ms", "30s", "5m"] })
    }
}

fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_attempts() -> u32 {
    5
}
fn default_delay() -> Duration {
    Duration(std::time::Duration::from_millis(500))
}
fn default_max_delay() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Timeout, RetryOn::Connection, RetryOn::Conflict, RetryOn::Status(429), RetryOn::StatusClass(5)]
}
http_step! {
    /// Enrich each row of an input with an API lookup: one request per distinct key (so responses are cached for the
    /// run), answered fields joined back as new columns. Rows whose lookup fails keep NULLs there, and the failure
    /// follows `on_error` (the dead-letter store keeps the key and the reason).
    ///
    /// ```yaml
    /// scored:
    ///   enrich_api:
    ///     input: customers
    ///     connection: scoring
    ///     url: /score/{customer_id}
    ///     keys: [customer_id]
    ///     prefix: score_
    /// ```
    pub struct EnrichApi {
        #[schemars(with = "String")]
        pub input: Spanned<String>,
        #[serde(default)]
        pub method: HttpMethod,
        /// Input columns that identify a lookup.
        pub keys: Vec<String>,
        /// JSONPath of the answer's fields in a response; without it, the whole response (an object).
        #[serde(default)]
        #[schemars(with = "Option<String>")]
        pub records: Option<Spanned<String>>,
        /// Prepended to every new column, to keep them apart from the input's.
        #[serde(default)]
        pub prefix: Option<String>,
        #[serde(default = "default_concurrency")]
        pub concurrency: usize,
        /// The answer's field name to SQL type; without it, inferred from every answer.
        #[serde(default)]
        pub schema: Option<OrderedMap<String>>,
    }
}

fn post() -> HttpMethod {
    HttpMethod::Post
}
fn one_usize() -> usize {
    1
}
fn default_concurrency() -> usize {
    4
}
fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn page_param() -> String {
    "page".into()
}
fn one() -> u64 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(Duration::parse("250ms").unwrap().0, std::time::Duration::from_millis(250));
        assert_eq!(Duration::parse("1.5s").unwrap().0, std::time::Duration::from_millis(1500));
        assert_eq!(Duration::parse("2m").unwrap().0, std::time::Duration::from_secs(120));
        assert!(Duration::parse("30").unwrap_err().contains("needs a unit"));
        assert!(Duration::parse("3 days").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn retry_on_reads_names_statuses_and_classes() {
        let parsed: Vec<RetryOn> = serde_saphyr::from_str("[timeout, connection, conflict, 429, 5xx]").unwrap();
        assert_eq!(parsed, default_retry_on());
        assert!(RetryOn::StatusClass(5).matches_status(503));
        assert!(!RetryOn::Status(429).matches_status(503));
        assert!(serde_saphyr::from_str::<Vec<RetryOn>>("[700]").is_err());
        assert!(serde_saphyr::from_str::<Vec<RetryOn>>("[sometimes]").is_err());
    }

    #[test]
    fn a_retry_policy_reads_back_as_it_was_written() {
        let written =
            "{max_attempts: 4, delay: 250ms, backoff: fixed, max_delay: 1.5s, retry_on: [conflict, 429, 5xx]}";
        let retry: Retry = serde_saphyr::from_str(written).unwrap();
        let again: Retry = serde_json::from_value(serde_json::to_value(&retry).unwrap()).unwrap();
        assert_eq!(again.max_attempts, 4);
        assert_eq!((again.delay, again.max_delay), (retry.delay, retry.max_delay));
        assert_eq!(again.backoff, Backoff::Fixed);
        assert_eq!(again.retry_on, [RetryOn::Conflict, RetryOn::Status(429), RetryOn::StatusClass(5)]);
        let written = |d: &str| serde_json::to_value(Duration::parse(d).unwrap()).unwrap();
        assert_eq!([written("90s"), written("2m"), written("1h"), written("1.5s")], ["90s", "2m", "1h", "1500ms"]);
    }
}
