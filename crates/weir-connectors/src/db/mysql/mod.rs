//! MySQL and MariaDB: `read_db` streams a table or a query over the binary protocol with bound parameters and
//! pushed-down projections and filters; `write_db` loads with batched multi-row statements in one transaction
//! that commits with the run.
//!
//! Weir uses `mysql_async` rather than sqlx here: sqlx keeps a column's decimal scale private, and an exact
//! `DECIMAL(p,s)` → `Decimal128(p,s)` mapping needs it.

mod dead_letters;
mod kind;
mod read;
mod tls;
mod types;
mod write;

use datafusion::error::DataFusionError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params};
use tracing::info;
use weir_engine::{Patience, ResolvedConnection, StepContext, Transient};
use weir_spec::{Execute, RetryOn};

use crate::db::sql_params::{Style, bind_values};

pub use kind::KIND;
pub use tls::opts;

/// Opens a session in UTC, so TIMESTAMP columns read and write instants unchanged.
/// Opens a connection, waiting out a server that refuses connections as `patience` allows.
async fn connect(conn: &ResolvedConnection, patience: &Patience) -> Result<Conn, DataFusionError> {
    patience.open(&format!("connection `{}`", conn.name), || connect_once(conn)).await
}

async fn connect_once(conn: &ResolvedConnection) -> Result<Conn, DataFusionError> {
    let opts =
        tls::opts(conn.url.expose()).map_err(|e| DataFusionError::Plan(format!("connection `{}`: {e}", conn.name)))?;
    let mut c = Conn::new(opts).await.map_err(|e| my_error(&format!("cannot connect to `{}`", conn.name), e))?;
    c.query_drop("SET time_zone = '+00:00'")
        .await
        .map_err(|e| my_error(&format!("cannot set up `{}`", conn.name), e))?;
    Ok(c)
}

/// A MySQL error after what Weir was doing; server errors keep their code (`1146`) and message. A lost
/// connection and a deadlock or lock wait timeout are [`Transient`].
fn my_error(context: &str, e: mysql_async::Error) -> DataFusionError {
    let (message, transient) = match &e {
        mysql_async::Error::Server(s) => (
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
            match s.code {
                1205 | 1213 => Some(RetryOn::Conflict),
                1053 | 1927 | 2006 | 2013 => Some(RetryOn::Connection),
                _ => None,
            },
        ),
        // A refused certificate (a TLS error, or invalid data from the handshake) stays refused: not retried.
        mysql_async::Error::Io(mysql_async::IoError::Tls(_)) => (e.to_string(), None),
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            (e.to_string(), None)
        }
        mysql_async::Error::Io(_) => (e.to_string(), Some(RetryOn::Connection)),
        other => (other.to_string(), None),
    };
    match transient {
        Some(kind) => Transient::error(kind, format!("{context}: {message}")),
        None => DataFusionError::External(format!("{context}: {message}").into()),
    }
}

/// `` `db`.`table` `` or `` `table` `` as written.
fn quote_table(name: &str) -> String {
    crate::db::sql_params::qualified(name, quote_ident)
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Mysql as `read_db`, `write_db` and `execute` use it.
pub struct Mysql;

#[async_trait::async_trait]
impl crate::db::Database for Mysql {
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
        let (sql, params) = bind_values(&spec.sql.value, Style::Question, cx, types::param)?;
        let mut client = connect(&conn, &Patience::of(cx, None)).await?;
        let params = if params.is_empty() { Params::Empty } else { Params::Positional(params) };
        client
            .exec_drop(sql.as_str(), params)
            .await
            .map_err(|e| my_error(&format!("MySQL `{}` failed the statement", conn.name), e))?;
        let rows = client.affected_rows();
        let _ = client.disconnect().await;
        info!(connection = %conn.name, rows, "Executed on `{}`: {sql}", conn.name);
        Ok(rows)
    }

    async fn committed_batches(&self, spec: &weir_spec::WriteDb, cx: &StepContext) -> datafusion::error::Result<u64> {
        write::committed_batches(spec, cx).await
    }

    fn dead_letter_table(
        &self,
        connection: ResolvedConnection,
        table: &str,
        _base_dir: &std::path::Path,
    ) -> datafusion::error::Result<std::sync::Arc<dyn weir_engine::DeadLetters>> {
        crate::db::dead_letter_table::open(dead_letters::MysqlLetters(connection.url), table)
    }

    fn rebuild_query(
        &self,
        state: serde_json::Value,
    ) -> datafusion::error::Result<(&'static crate::db::scan::Flavor, std::sync::Arc<dyn crate::db::scan::Query>)> {
        read::rebuild(state)
    }
}

/// Mysql's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Database(&Mysql));
