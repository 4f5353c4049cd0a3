//! ClickHouse, over its HTTP interface (`url: clickhouse://user:${CH_PASSWORD}@host:8123/db`, or `clickhouses://`
//! for HTTPS). Rows travel as `RowBinary` both ways: exact (dates as day numbers, times as Unix seconds, decimals
//! as scaled integers), compact, and read by every ClickHouse release, including the 18.x this machine has, which
//! knows neither Arrow nor Parquet formats nor query parameters.
//!
//! The `clickhouse` crate maps rows onto Rust structs fixed at compile time, and `clickhouse-arrow` speaks the
//! native protocol of current releases only; Weir's rows are Arrow batches whose columns are known at run time,
//! so the RowBinary codec ([`rowbinary`]) is Weir's own.
//!
//! Bound values (`$last_sync`) never enter the SQL text: they travel as a one-row table of external data beside
//! the query ([`Style::ExternalTable`]), which the query reads as `(SELECT p1 FROM weir_params)`.

mod kind;
mod read;
mod rowbinary;
mod types;
mod write;

use std::time::Duration;

use datafusion::error::DataFusionError;
use reqwest::{Response, Url};
use tracing::info;
use weir_engine::{Patience, ResolvedConnection, StepContext, Transient, timestamp_micros};
use weir_spec::{Execute, RetryOn, TypedValue};

use crate::db::sql_params::{PARAMS_TABLE, Style, bind_values};

pub use kind::KIND;

/// An identifier in ClickHouse's backquotes.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A bound value: its ClickHouse type and its text in the TabSeparated format.
#[derive(Debug, Clone)]
struct Param {
    ty: &'static str,
    text: String,
}

impl Param {
    fn of(value: &TypedValue) -> Result<Self, String> {
        Ok(match value {
            TypedValue::String(s) => Self { ty: "String", text: tsv_escape(s) },
            TypedValue::Integer(i) => Self { ty: "Int64", text: i.to_string() },
            TypedValue::Float(f) => Self { ty: "Float64", text: f.to_string() },
            TypedValue::Boolean(b) => Self { ty: "UInt8", text: u8::from(*b).to_string() },
            TypedValue::Date(d) => Self { ty: "Date", text: tsv_escape(d) },
            // DateTime holds whole seconds from 1970: the cursor is rounded down (to 1970 at the least), so
            // `> $last_sync` re-reads (never skips) rows of the cursor's own second, and an upsert absorbs them.
            // The text is Unix seconds, which ClickHouse reads as such when they are ten digits.
            TypedValue::Timestamp(t) => {
                let micros = timestamp_micros(t).ok_or_else(|| format!("`{t}` is not a timestamp"))?;
                Self { ty: "DateTime", text: format!("{:010}", micros.div_euclid(1_000_000).max(0)) }
            }
        })
    }
}

fn tsv_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

/// One ClickHouse server as a connection names it.
#[derive(Debug, Clone)]
struct Server {
    http: reqwest::Client,
    /// `http(s)://host:port/`
    endpoint: Url,
    user: Option<String>,
    password: Option<String>,
    /// The database unqualified table names are in.
    database: String,
    /// The connection's name, for messages (never its URL).
    name: String,
}

impl Server {
    /// The server of `conn`, once it answers, waiting out one that refuses connections as `patience` allows.
    async fn connect(conn: &ResolvedConnection, patience: &Patience) -> Result<Self, DataFusionError> {
        let server = Self::of(conn)?;
        patience
            .open(&format!("connection `{}`", conn.name), || server.query("SELECT 1", &[], "cannot connect"))
            .await?;
        Ok(server)
    }

    fn of(conn: &ResolvedConnection) -> Result<Self, DataFusionError> {
        let bad = |why: &str| DataFusionError::Plan(format!("connection `{}`: {why}", conn.name));
        let url = Url::parse(conn.url.expose()).map_err(|e| bad(&format!("the url does not parse: {e}")))?;
        let scheme = match url.scheme() {
            "clickhouse" => "http",
            "clickhouses" => "https",
            other => {
                return Err(bad(&format!(
                    "`{other}://` is not ClickHouse; write `clickhouse://host:8123/db` (HTTPS: `clickhouses://`)"
                )));
            }
        };
        let host = url.host_str().ok_or_else(|| bad("the url names no host"))?;
        let port = url.port().unwrap_or(if scheme == "https" { 8443 } else { 8123 });
        let endpoint = Url::parse(&format!("{scheme}://{host}:{port}/")).map_err(|e| bad(&e.to_string()))?;
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let database = url.path().trim_matches('/');
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(&format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint,
            user: (!url.username().is_empty()).then(|| decode(url.username())),
            password: url.password().map(decode),
            database: if database.is_empty() { "default".into() } else { decode(database) },
            name: conn.name.clone(),
        })
    }

    /// Runs `sql` with `params` bound and returns the response, whose body is the result. ClickHouse is asked to
    /// finish the query before it answers, so an error halfway through is an error status, not a cut-off body that
    /// could pass for fewer rows.
    async fn query(&self, sql: &str, params: &[Param], doing: &str) -> Result<Response, DataFusionError> {
        let mut url = self.url();
        url.query_pairs_mut().append_pair("wait_end_of_query", "1");
        let request = if params.is_empty() {
            self.http.post(url).body(sql.to_string())
        } else {
            let structure: Vec<String> =
                params.iter().enumerate().map(|(i, p)| format!("p{} {}", i + 1, p.ty)).collect();
            let row: Vec<&str> = params.iter().map(|p| p.text.as_str()).collect();
            url.query_pairs_mut()
                .append_pair("query", sql)
                .append_pair(&format!("{PARAMS_TABLE}_structure"), &structure.join(", "))
                .append_pair(&format!("{PARAMS_TABLE}_format"), "TabSeparated");
            let part =
                reqwest::multipart::Part::bytes(format!("{}\n", row.join("\t")).into_bytes()).file_name(PARAMS_TABLE);
            self.http.post(url).multipart(reqwest::multipart::Form::new().part(PARAMS_TABLE, part))
        };
        self.send(request, doing).await
    }

    /// The result of a `FORMAT JSONCompact` query.
    async fn json(&self, sql: &str, params: &[Param], doing: &str) -> Result<serde_json::Value, DataFusionError> {
        let body = self.query(&format!("{sql} FORMAT JSONCompact"), params, doing).await?.bytes().await;
        let unreadable = |e: String| {
            DataFusionError::External(format!("ClickHouse `{}` {doing}: unreadable answer: {e}", self.name).into())
        };
        serde_json::from_slice(&body.map_err(|e| unreadable(without_url(&e)))?).map_err(|e| unreadable(e.to_string()))
    }

    /// Sends `rows` (RowBinary) to `INSERT INTO … FORMAT RowBinary`.
    async fn insert(&self, into: &str, rows: Vec<u8>, doing: &str) -> Result<(), DataFusionError> {
        let mut url = self.url();
        url.query_pairs_mut().append_pair("query", &format!("INSERT INTO {into} FORMAT RowBinary"));
        self.send(self.http.post(url).body(rows), doing).await.map(drop)
    }

    fn url(&self) -> Url {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("database", &self.database);
        url
    }

    async fn send(&self, request: reqwest::RequestBuilder, doing: &str) -> Result<Response, DataFusionError> {
        let request = match &self.user {
            Some(user) => request.basic_auth(user, self.password.as_deref()),
            None => request,
        };
        let context = format!("ClickHouse `{}` {doing}", self.name);
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() { RetryOn::Timeout } else { RetryOn::Connection };
            match e.is_connect() || e.is_timeout() {
                true => Transient::error(kind, format!("{context}: {}", without_url(&e))),
                false => DataFusionError::External(format!("{context}: {}", without_url(&e)).into()),
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(DataFusionError::External(
            format!("{context}: {} (HTTP {})", server_message(&text), status.as_u16()).into(),
        ))
    }
}

/// ClickHouse's error text without its C++ tail: `Code: 60, e.displayText() = DB::Exception: Table x doesn't
/// exist., e.what() = DB::Exception` becomes `Code: 60: Table x doesn't exist.`
fn server_message(text: &str) -> String {
    let text = text.trim();
    let text = text.split(", e.what() = ").next().unwrap_or(text);
    text.replace(", e.displayText() = DB::Exception", "")
}

/// A reqwest error's message without the URL, which may carry the database name and query.
fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    message
}

/// ClickHouse as `read_db`, `write_db` and `execute` use it.
pub struct ClickHouse;

#[async_trait::async_trait]
impl crate::db::Database for ClickHouse {
    async fn read(
        &self,
        spec: &weir_spec::ReadDb,
        cx: &StepContext,
    ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::catalog::TableProvider>> {
        read::table(spec, cx).await
    }

    async fn write(
        &self,
        spec: &weir_spec::WriteDb,
        cx: &StepContext,
        input: datafusion::dataframe::DataFrame,
    ) -> datafusion::error::Result<Box<dyn weir_engine::PendingLoad>> {
        write::write(spec, cx, input).await
    }

    async fn execute(&self, spec: &Execute, cx: &StepContext) -> datafusion::error::Result<u64> {
        let server = Server::connect(&cx.connection(&spec.connection.value)?, &Patience::of(cx, None)).await?;
        let (sql, params) = bind_values(&spec.sql.value, Style::ExternalTable, cx, Param::of)?;
        server.query(&sql, &params, "failed the statement").await?;
        info!(connection = %server.name, "Executed on `{}`: {sql}", server.name);
        Ok(0)
    }
}

/// ClickHouse's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Database(&ClickHouse));
