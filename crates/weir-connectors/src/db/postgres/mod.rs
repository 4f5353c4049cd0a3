//! PostgreSQL: `read_db` streams a table or a query with bound parameters and pushed-down projections and
//! filters; `write_db` loads through binary COPY inside one transaction that commits with the run.

mod checkpoint;
mod copy;
mod dead_letters;
mod kind;
mod read;
mod types;
mod write;

use std::error::Error as StdError;

use bytes::BytesMut;
use datafusion::error::DataFusionError;
use tokio_postgres::Client;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tracing::{info, warn};
use weir_engine::{Patience, ResolvedConnection, StepContext, Transient, timestamp_micros};
use weir_spec::{Execute, RetryOn, TypedValue};

use crate::db::sql_params::{Style, bind_named, quote_ident, quote_table};

pub use kind::KIND;

/// Opens a client, waiting out a server that refuses connections as `patience` allows; the connection's task ends
/// when the client is dropped.
async fn connect(conn: &ResolvedConnection, patience: &Patience) -> Result<Client, DataFusionError> {
    patience.open(&format!("connection `{}`", conn.name), || connect_once(conn)).await
}

async fn connect_once(conn: &ResolvedConnection) -> Result<Client, DataFusionError> {
    let target = weir_engine::postgres_tls::connect(conn.url.expose())
        .map_err(|e| DataFusionError::Plan(format!("connection `{}`: {e}", conn.name)))?;
    let (client, connection) = tokio_postgres::connect(&target.url, target.tls)
        .await
        .map_err(|e| pg_error(&format!("cannot connect to `{}`", conn.name), &e))?;
    let name = conn.name.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(connection = %name, "PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// A PostgreSQL error with the server's message, detail and hint, after what Weir was doing. A lost session
/// (dropped connection, terminated backend) and a lost serialization conflict or deadlock are [`Transient`].
fn pg_error(context: &str, e: &tokio_postgres::Error) -> DataFusionError {
    let message = pg_message(e);
    let state = e.code().map(|c| c.code());
    let transient = match state {
        Some("40001" | "40P01") => Some(RetryOn::Conflict),
        Some(code) if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") => {
            Some(RetryOn::Connection)
        }
        None if e.is_closed() => Some(RetryOn::Connection),
        // A refused certificate comes as invalid data: waiting does not change it.
        None => match e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
            Some(io) if io.kind() != std::io::ErrorKind::InvalidData => Some(RetryOn::Connection),
            _ => None,
        },
        Some(_) => None,
    };
    match transient {
        Some(kind) => Transient::error(kind, format!("{context}: {message}")),
        None => DataFusionError::External(format!("{context}: {message}").into()),
    }
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(detail) = db.detail() {
                m.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                m.push_str(&format!("; hint: {hint}"));
            }
            if let Some(w) = db.where_() {
                m.push_str(&format!("; at {w}"));
            }
            m
        }
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A variable or state value bound as a parameter of whatever type PostgreSQL inferred for its placeholder.
#[derive(Debug)]
struct Param<'a> {
    name: &'a str,
    value: &'a TypedValue,
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let mismatch = || -> Box<dyn StdError + Sync + Send> {
            format!(
                "parameter `${}` ({:?} `{}`) cannot be bound as PostgreSQL `{ty}`",
                self.name,
                self.value.value_type(),
                self.value
            )
            .into()
        };
        let text = self.value.to_string();
        match *ty {
            Type::BOOL => match self.value {
                TypedValue::Boolean(b) => b.to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Type::INT2 => {
                i16::try_from(integer(self.value).ok_or_else(mismatch)?).map_err(|_| mismatch())?.to_sql(ty, out)
            }
            Type::INT4 => {
                i32::try_from(integer(self.value).ok_or_else(mismatch)?).map_err(|_| mismatch())?.to_sql(ty, out)
            }
            Type::INT8 => integer(self.value).ok_or_else(mismatch)?.to_sql(ty, out),
            Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => {
                let x: f64 = match self.value {
                    TypedValue::Integer(i) => *i as f64,
                    TypedValue::Float(f) => *f,
                    TypedValue::String(s) => s.trim().parse().map_err(|_| mismatch())?,
                    _ => return Err(mismatch()),
                };
                match *ty {
                    Type::FLOAT4 => (x as f32).to_sql(ty, out),
                    Type::FLOAT8 => x.to_sql(ty, out),
                    _ => {
                        let (unscaled, scale) = decimal_from_text(&text).ok_or_else(mismatch)?;
                        let mut buf = Vec::new();
                        types::encode_numeric(unscaled, scale, &mut buf);
                        out.extend_from_slice(&buf);
                        Ok(IsNull::No)
                    }
                }
            }
            Type::DATE => {
                let micros =
                    timestamp_micros(&format!("{}T00:00:00Z", &text[..text.len().min(10)])).ok_or_else(mismatch)?;
                types::pg_days((micros / 86_400_000_000) as i32).to_sql(&Type::INT4, out)
            }
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = match self.value {
                    TypedValue::Date(d) => timestamp_micros(&format!("{d}T00:00:00Z")),
                    _ => timestamp_micros(&text),
                }
                .ok_or_else(mismatch)?;
                types::pg_micros(micros).to_sql(&Type::INT8, out)
            }
            Type::UUID => {
                out.extend_from_slice(&types::parse_uuid(&text).ok_or_else(mismatch)?);
                Ok(IsNull::No)
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                text.as_str().to_sql(&Type::TEXT, out)
            }
            _ => Err(mismatch()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn integer(value: &TypedValue) -> Option<i64> {
    match value {
        TypedValue::Integer(i) => Some(*i),
        TypedValue::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `-12.345` as (-12345, 3).
fn decimal_from_text(text: &str) -> Option<(i128, i8)> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if frac.len() > 38 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((format!("{int}{frac}").parse().ok()?, frac.len() as i8))
}

/// Postgres as `read_db`, `write_db` and `execute` use it.
pub struct Postgres;

#[async_trait::async_trait]
impl crate::db::Database for Postgres {
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
        let conn = cx.connection(&spec.connection.value)?;
        let bound =
            bind_named(&spec.sql.value, Style::Dollar, &|n| cx.value(n).is_some()).map_err(DataFusionError::Plan)?;
        let params: Vec<Param> = bound
            .names
            .iter()
            .map(|name| Param { name, value: cx.value(name).expect("bind_named checked the name") })
            .collect();
        let client = connect(&conn, &Patience::of(cx, None)).await?;
        let rows = client
            .execute_raw(bound.sql.as_str(), params.iter().map(|p| p as &dyn ToSql))
            .await
            .map_err(|e| pg_error(&format!("PostgreSQL `{}` failed the statement", conn.name), &e))?;
        info!(connection = %conn.name, rows, "Executed on `{}`: {}", conn.name, bound.sql);
        Ok(rows)
    }

    async fn committed_batches(&self, spec: &weir_spec::WriteDb, cx: &StepContext) -> datafusion::error::Result<u64> {
        let conn = cx.connection(&spec.connection.value)?;
        checkpoint::committed(&connect(&conn, &Patience::of(cx, spec.retry.as_ref())).await?, cx, &conn.name).await
    }

    fn dead_letter_table(
        &self,
        connection: ResolvedConnection,
        table: &str,
        _base_dir: &std::path::Path,
    ) -> datafusion::error::Result<std::sync::Arc<dyn weir_engine::DeadLetters>> {
        crate::db::dead_letter_table::open(dead_letters::PostgresLetters(connection.url), table)
    }

    fn rebuild_query(
        &self,
        state: serde_json::Value,
    ) -> datafusion::error::Result<(&'static crate::db::scan::Flavor, std::sync::Arc<dyn crate::db::scan::Query>)> {
        read::rebuild(state)
    }
}

/// Postgres's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Database(&Postgres));
