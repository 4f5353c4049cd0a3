//! SQLite: a database in a file, no server. `read_db` reads a table or a query with bound parameters and
//! pushed-down projections and filters; `write_db` loads inside one transaction (DDL included: SQLite's DDL is
//! transactional) that commits with the run.
//!
//! SQLite stores values by type affinity, so Weir reads a column by its declared type (`INTEGER`, `REAL`,
//! `DECIMAL(12,2)`, `DATE`, `TIMESTAMP`, ...) or, for an expression without one, by the type of its first value.
//! Dates and timestamps are text in SQLite's own format (`2024-01-15`, `2024-01-15 10:00:00.000000`, UTC).

mod dead_letters;
mod kind;
mod read;
mod shared;
mod write;

use std::path::{Path, PathBuf};

use chrono::DateTime;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::DataFusionError;
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};
use tracing::info;
use weir_engine::{ResolvedConnection, StepContext, timestamp_micros};
use weir_spec::{Execute, TypedValue};

use crate::db::column_builder::ColumnBuilder;
use crate::db::sql_params::{Style, bind_values, quote_ident, quote_table};

pub use kind::KIND;

/// The database file of a connection: `url: sqlite://data/app.db` (relative to the pipeline file) or
/// `sqlite:///var/lib/app.db`.
fn db_path(conn: &ResolvedConnection, cx: &StepContext) -> PathBuf {
    crate::files::paths::database_file(conn.url.expose(), "sqlite", &cx.base_dir)
}

/// Opens the file of `conn`, waiting up to its `busy_timeout` for a lock another process holds.
fn open(conn: &ResolvedConnection, path: &Path) -> Result<Connection, DataFusionError> {
    let db = Connection::open(path)
        .map_err(|e| sqlite_error(&format!("cannot open `{}` ({})", conn.name, path.display()), e))?;
    db.busy_timeout(busy_timeout(conn)?).map_err(|e| sqlite_error("cannot set a busy timeout", e))?;
    Ok(db)
}

/// How long a statement waits for a lock another process holds on the file: the connection's `busy_timeout`.
fn busy_timeout(conn: &ResolvedConnection) -> Result<std::time::Duration, DataFusionError> {
    let Some(value) = conn.options.get("busy_timeout") else { return Ok(kind::BUSY_TIMEOUT) };
    humantime::parse_duration(value.expose()).map_err(|e| {
        DataFusionError::Plan(format!("connection `{}`: `busy_timeout` is not a duration: {e}", conn.name))
    })
}

fn sqlite_error(context: &str, e: rusqlite::Error) -> DataFusionError {
    DataFusionError::External(format!("{context}: {e}").into())
}

/// The Arrow type of a column by its declared type (SQLite's affinity rules, plus dates, timestamps, booleans
/// and decimals by name), or by a sample value when nothing is declared.
fn arrow_type(declared: Option<&str>, sample: Option<ValueRef>) -> DataType {
    let Some(declared) = declared.map(str::to_ascii_uppercase).filter(|d| !d.is_empty()) else {
        return match sample {
            Some(ValueRef::Integer(_)) => DataType::Int64,
            Some(ValueRef::Real(_)) => DataType::Float64,
            Some(ValueRef::Blob(_)) => DataType::Binary,
            _ => DataType::Utf8,
        };
    };
    let decimal = |d: &str| {
        let args = d.split_once('(')?.1.trim_end_matches(')');
        let (p, s) = args.split_once(',')?;
        let (p, s): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
        ((1..=38).contains(&p) && s >= 0 && s as u8 <= p).then_some(DataType::Decimal128(p, s))
    };
    if declared.starts_with("BOOL") {
        DataType::Boolean
    } else if declared.contains("INT") {
        DataType::Int64
    } else if declared.contains("CHAR") || declared.contains("CLOB") || declared.contains("TEXT") {
        DataType::Utf8
    } else if declared.contains("BLOB") {
        DataType::Binary
    } else if declared.contains("REAL") || declared.contains("FLOA") || declared.contains("DOUB") {
        DataType::Float64
    } else if declared.starts_with("DECIMAL") || declared.starts_with("NUMERIC") {
        decimal(&declared).unwrap_or(DataType::Float64)
    } else if declared == "DATE" {
        DataType::Date32
    } else if declared.starts_with("DATETIME") || declared.starts_with("TIMESTAMP") {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    } else {
        DataType::Float64
    }
}

/// The declared type Weir gives a new column, chosen so [`arrow_type`] reads it back as the same Arrow type.
fn ddl_type(ty: &DataType) -> Option<String> {
    Some(match ty {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => "INTEGER".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "REAL".into(),
        // JSON text: a declared `JSON` would have numeric affinity, turning `"123"` into a number.
        ty if crate::db::nested::is_nested(ty) => "TEXT".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::UInt64 | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "TEXT".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(..) => "TIMESTAMP".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        _ => return None,
    })
}

/// Appends one stored value, converting by the column's Arrow type.
fn append(value: ValueRef, out: &mut ColumnBuilder) -> Result<(), String> {
    match value {
        ValueRef::Null => {
            out.append_null();
            Ok(())
        }
        ValueRef::Integer(i) => out.append_i64(i),
        ValueRef::Real(f) => out.append_f64(f).or_else(|_| out.append_decimal_text(&f.to_string())),
        ValueRef::Text(t) => {
            out.append_temporal_text(std::str::from_utf8(t).map_err(|e| format!("invalid UTF-8: {e}"))?)
        }
        ValueRef::Blob(b) => out.append_bytes(b),
    }
}

/// Microseconds since the epoch as SQLite's datetime text.
fn datetime_text(micros: i64) -> Result<String, String> {
    let t = DateTime::from_timestamp_micros(micros).ok_or_else(|| format!("{micros} µs is out of range"))?;
    Ok(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

/// A variable or state value as a bound parameter; dates and timestamps as SQLite's text.
fn param(value: &TypedValue) -> Result<Value, String> {
    Ok(match value {
        TypedValue::String(s) => Value::Text(s.clone()),
        TypedValue::Integer(i) => Value::Integer(*i),
        TypedValue::Float(f) => Value::Real(*f),
        TypedValue::Boolean(b) => Value::Integer(*b as i64),
        TypedValue::Date(d) => Value::Text(d.clone()),
        TypedValue::Timestamp(t) => {
            Value::Text(datetime_text(timestamp_micros(t).ok_or_else(|| format!("`{t}` is not a timestamp"))?)?)
        }
    })
}

/// Sqlite as `read_db`, `write_db` and `execute` use it.
pub struct Sqlite;

#[async_trait::async_trait]
impl crate::db::Database for Sqlite {
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
        let (sql, params) = bind_values(&spec.sql.value, Style::Question, cx, param)?;
        let path = db_path(&conn, cx);
        let db = open(&conn, &path)?;
        let rows = tokio::task::block_in_place(|| db.execute(&sql, rusqlite::params_from_iter(params.iter())))
            .map_err(|e| sqlite_error(&format!("SQLite `{}` failed the statement", conn.name), e))?;
        info!(connection = %conn.name, rows, "Executed on `{}`: {sql}", conn.name);
        Ok(rows as u64)
    }

    async fn committed_batches(&self, spec: &weir_spec::WriteDb, cx: &StepContext) -> datafusion::error::Result<u64> {
        write::committed_batches(spec, cx)
    }

    fn dead_letter_table(
        &self,
        connection: ResolvedConnection,
        table: &str,
        base_dir: &std::path::Path,
    ) -> datafusion::error::Result<std::sync::Arc<dyn weir_engine::DeadLetters>> {
        let path = crate::files::paths::database_file(connection.url.expose(), "sqlite", base_dir);
        crate::db::dead_letter_table::open(dead_letters::SqliteLetters(path), table)
    }
}

/// Sqlite's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Database(&Sqlite));
