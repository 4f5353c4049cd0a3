//! Weir's sources and sinks: one module per system under `sources/` and `sinks/`, shared helpers under `common/`.
//! [`Builtin`] is the [`weir_engine::Connectors`] the `weir` command uses.

mod clickhouse;
mod common;
#[cfg(feature = "duckdb")]
mod duckdb;
mod http;
mod mysql;
#[cfg(feature = "odbc")]
mod odbc;
mod postgres;
mod sftp;
mod sharepoint;
mod sinks;
mod sources;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use weir_engine::{Connectors, DeadLetters, PendingLoad, ResolvedConnection, StepContext};
use datafusion::common::plan_err;
use weir_spec::{Execute, ReadDb, Spanned, Step, StepKind, WriteDb};

pub use common::types::parse_sql_type;
pub use http::{RunOutcome, send_alerts};

/// Every connector compiled into this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct Builtin;

#[async_trait]
impl Connectors for Builtin {
    async fn source(&self, session: &SessionContext, step: &Step, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
        match &step.kind {
            StepKind::ReadCsv(spec) => sources::csv::table(session, spec, cx).await,
            StepKind::ReadJson(spec) => sources::json::table(session, spec, cx).await,
            StepKind::ReadParquet(spec) => sources::parquet::table(session, spec, cx).await,
            StepKind::ReadDb(spec) => database(cx, &spec.connection)?.read(spec, cx).await,
            StepKind::ReadApi(spec) => http::table(session, spec, cx).await,
            StepKind::ReadWebhook(spec) => sources::webhook::table(spec, cx),
            StepKind::ListFiles(spec) => sinks::copy::list(spec, cx).await,
            StepKind::EnrichApi(spec) => http::enrich(session, spec, cx).await,
            other => unreachable!("{} is not an extract step", other.name()),
        }
    }

    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
        match &step.kind {
            StepKind::WriteDb(spec) => database(cx, &spec.connection)?.write(spec, cx, input).await,
            StepKind::WriteApi(spec) => http::write(spec, cx, input).await,
            StepKind::CopyFiles(spec) => sinks::copy::copy(spec, cx, input).await,
            _ => sinks::files::write(step, cx, input).await,
        }
    }

    async fn action(&self, step: &Step, cx: &StepContext) -> Result<u64> {
        match &step.kind {
            StepKind::Execute(spec) => database(cx, &spec.connection)?.execute(spec, cx).await,
            other => unreachable!("{} is not an action step", other.name()),
        }
    }

    fn loads_in_batches(&self, step: &Step, cx: &StepContext) -> bool {
        match &step.kind {
            StepKind::WriteDb(spec) => database(cx, &spec.connection).is_ok_and(|db| db.checkpoints()),
            _ => false,
        }
    }

    async fn committed_batches(&self, step: &Step, cx: &StepContext) -> Result<u64> {
        match &step.kind {
            StepKind::WriteDb(spec) => database(cx, &spec.connection)?.committed_batches(spec, cx).await,
            _ => Ok(0),
        }
    }

    fn dead_letter_table(&self, connection: ResolvedConnection, table: &str, base_dir: &Path) -> Result<Arc<dyn DeadLetters>> {
        common::dead_letter_table::open(connection, table, base_dir)
    }
}

/// The database systems `read_db` and `write_db` reach.
enum Database {
    Postgres,
    ClickHouse,
    MySql,
    Sqlite,
    #[cfg(feature = "duckdb")]
    DuckDb,
    #[cfg(feature = "odbc")]
    Odbc,
}

fn database(cx: &StepContext, connection: &Spanned<String>) -> Result<Database> {
    let conn = cx.connection(&connection.value)?;
    match conn.kind.as_str() {
        "postgres" => Ok(Database::Postgres),
        "mysql" => Ok(Database::MySql),
        "sqlite" => Ok(Database::Sqlite),
        "clickhouse" => Ok(Database::ClickHouse),
        #[cfg(feature = "duckdb")]
        "duckdb" => Ok(Database::DuckDb),
        #[cfg(not(feature = "duckdb"))]
        "duckdb" => plan_err!(
            "connection `{}` is DuckDB, which this build of weir leaves out; build it with `--features duckdb` (see the README)",
            conn.name
        ),
        #[cfg(feature = "odbc")]
        "odbc" => Ok(Database::Odbc),
        #[cfg(not(feature = "odbc"))]
        "odbc" => plan_err!(
            "connection `{}` is ODBC, which this build of weir leaves out; build it with `--features odbc` (needs unixODBC)",
            conn.name
        ),
        other => plan_err!("connection `{}` is of kind `{other}`, which is not a database", conn.name),
    }
}

impl Database {
    async fn read(&self, spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
        match self {
            Self::Postgres => postgres::table(spec, cx).await,
            Self::MySql => mysql::table(spec, cx).await,
            Self::Sqlite => sqlite::table(spec, cx).await,
            Self::ClickHouse => clickhouse::table(spec, cx).await,
            #[cfg(feature = "duckdb")]
            Self::DuckDb => duckdb::table(spec, cx).await,
            #[cfg(feature = "odbc")]
            Self::Odbc => odbc::table(spec, cx).await,
        }
    }

    async fn execute(&self, spec: &Execute, cx: &StepContext) -> Result<u64> {
        match self {
            Self::Postgres => postgres::execute(spec, cx).await,
            Self::MySql => mysql::execute(spec, cx).await,
            Self::Sqlite => sqlite::execute(spec, cx).await,
            Self::ClickHouse => clickhouse::execute(spec, cx).await,
            #[cfg(feature = "duckdb")]
            Self::DuckDb => duckdb::execute(spec, cx).await,
            #[cfg(feature = "odbc")]
            Self::Odbc => odbc::execute(spec, cx).await,
        }
    }

    /// Whether loads keep a checkpoint in the database, in the transaction of each batch. ODBC does not yet, and
    /// ClickHouse has no transactions: their loads stay whole.
    fn checkpoints(&self) -> bool {
        match self {
            Self::Postgres | Self::MySql | Self::Sqlite => true,
            Self::ClickHouse => false,
            #[cfg(feature = "duckdb")]
            Self::DuckDb => true,
            #[cfg(feature = "odbc")]
            Self::Odbc => false,
        }
    }

    async fn committed_batches(&self, spec: &WriteDb, cx: &StepContext) -> Result<u64> {
        match self {
            Self::Postgres => postgres::committed_batches(spec, cx).await,
            Self::MySql => mysql::committed_batches(spec, cx).await,
            Self::Sqlite => sqlite::committed_batches(spec, cx),
            Self::ClickHouse => Ok(0),
            #[cfg(feature = "duckdb")]
            Self::DuckDb => duckdb::committed_batches(spec, cx),
            #[cfg(feature = "odbc")]
            Self::Odbc => Ok(0),
        }
    }

    async fn write(&self, spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
        match self {
            Self::Postgres => postgres::write(spec, cx, input).await,
            Self::MySql => mysql::write(spec, cx, input).await,
            Self::Sqlite => sqlite::write(spec, cx, input).await,
            Self::ClickHouse => clickhouse::write(spec, cx, input).await,
            #[cfg(feature = "duckdb")]
            Self::DuckDb => duckdb::write(spec, cx, input).await,
            #[cfg(feature = "odbc")]
            Self::Odbc => odbc::write(spec, cx, input).await,
        }
    }
}
