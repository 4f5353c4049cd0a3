//! REST APIs over HTTP: an `http` connection (base URL and authentication), the `read_api`, `enrich_api` and
//! `write_api` steps, and `http(s)://` file reads. The client and its authentication serve the alerts and
//! SharePoint too.

pub(crate) mod auth;
pub(crate) mod client;
mod enrich;
mod kind;
mod page;
mod read;
mod write;

use std::sync::LazyLock;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use regex::Regex;
use reqwest::{Method, Url};
use serde_json::Value;
use weir_engine::StepContext;
use weir_spec::{HttpMethod, Retry, Spanned};

pub use enrich::table as enrich;
pub use kind::KIND;
pub use read::table;
pub(crate) use read::{objects, parse_path, select_values};
pub use write::write;

use auth::Auth;
use client::Client;

/// The base URL of a step's `http` connection (if it names one) and a client that authenticates as it says and
/// retries as the step (or else the pipeline's `settings.retry`) says.
fn connect(
    cx: &StepContext,
    connection: Option<&Spanned<String>>,
    timeout: Duration,
    retry: Option<&Retry>,
    requests_per_second: Option<f64>,
) -> Result<(Option<String>, Client)> {
    let retry = retry.or(cx.retry.as_ref()).cloned().unwrap_or_default();
    let (base, auth) = match connection {
        Some(name) => {
            let conn = cx.connection(&name.value)?;
            if conn.kind != "http" {
                return Err(DataFusionError::Plan(format!("connection `{}` is not of kind `http`", conn.name)));
            }
            let auth = Auth::from_connection(&conn)?;
            (Some(conn.url.expose().to_string()), auth)
        }
        None => (None, Auth::None),
    };
    Ok((base, Client::new(auth, timeout, retry, requests_per_second)?.counting_retries(cx.counters())))
}

/// `url` as written when absolute, else joined to the connection's base URL.
fn absolute(base: Option<String>, url: &str) -> Result<Url> {
    let joined = match base {
        Some(base) if !url.contains("://") => format!("{}/{}", base.trim_end_matches('/'), url.trim_start_matches('/')),
        _ => url.to_string(),
    };
    Url::parse(&joined).map_err(|e| DataFusionError::Plan(format!("`{joined}` is not a URL: {e}")))
}

/// Where requests go: one URL, or one per record from `{column}` placeholders.
enum Target {
    Fixed(Url),
    PerRecord { base: Option<String>, template: String },
}

impl Target {
    fn new(base: Option<String>, url: String) -> Result<Self> {
        Ok(if FIELD.is_match(&url) {
            Target::PerRecord { base, template: url }
        } else {
            Target::Fixed(absolute(base, &url)?)
        })
    }

    /// The URL for a request about `first`, the (first) record it sends or looks up.
    fn url(&self, first: &Value) -> std::result::Result<Url, String> {
        match self {
            Target::Fixed(url) => Ok(url.clone()),
            Target::PerRecord { base, template } => {
                let mut missing = None;
                let filled = FIELD.replace_all(template, |c: &regex::Captures| match first.get(&c[1]) {
                    Some(Value::String(s)) => utf8_percent_encode(s, NON_ALPHANUMERIC).to_string(),
                    Some(Value::Null) | None => {
                        missing.get_or_insert_with(|| c[1].to_string());
                        String::new()
                    }
                    Some(other) => utf8_percent_encode(&other.to_string(), NON_ALPHANUMERIC).to_string(),
                });
                if let Some(field) = missing {
                    return Err(format!("the record has no `{field}` for the URL `{template}`"));
                }
                absolute(base.clone(), &filled).map_err(|e| e.to_string())
            }
        }
    }
}

/// A `{column}` placeholder, in URLs and in `ai_extract` templates.
pub(crate) static FIELD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("static regex"));

fn method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
    }
}

/// A web server as file steps read from it (`https://host/data.csv`), through object_store.
pub struct WebFiles;

impl crate::object_store::StoreKind for WebFiles {
    fn schemes(&self) -> &'static [&'static str] {
        &["http", "https"]
    }

    fn build(
        &self,
        url: &Url,
        options: &[(&str, weir_engine::Secret)],
    ) -> std::result::Result<std::sync::Arc<dyn object_store::ObjectStore>, String> {
        use object_store::ClientConfigKey;
        let mut builder = object_store::http::HttpBuilder::new().with_url(url.origin().ascii_serialization());
        if url.scheme() == "http" {
            // The URL says plain HTTP; object_store refuses it unless told.
            builder = builder.with_config(ClientConfigKey::AllowHttp, "true");
        }
        let builder = crate::object_store::configured(builder, options, |b, key: ClientConfigKey, value| {
            b.with_config(key, value)
        })?;
        Ok(std::sync::Arc::new(builder.build().map_err(|e| e.to_string())?))
    }
}

/// The `http` kind's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Store(&WebFiles));
