//! ODBC, for databases without a native connector here (Oracle, SQL Server, Db2, ...): any driver unixODBC knows.
//! `url` is the ODBC connection string (`Driver={PostgreSQL Unicode};Server=…;Uid=…;Pwd=${PASSWORD}` or
//! `DSN=…`). arrow-odbc moves whole column buffers between the driver and Arrow, in both directions.
//!
//! `read_db` works as for the native databases (bound `?` parameters, pushed-down projections and filters).
//! `write_db` appends (or replaces, with `DELETE` first) in one transaction that commits with the run, into a
//! table that already exists: column types and upsert syntax differ between databases, so Weir neither creates
//! nor alters tables over ODBC, and `upsert`/`delete` need a native connector.

#[cfg(feature = "odbc")]
mod connection;
mod kind;

pub use kind::KIND;

/// ODBC as `read_db`, `write_db` and `execute` use it.
#[cfg(feature = "odbc")]
pub struct Odbc;

#[cfg(feature = "odbc")]
#[async_trait::async_trait]
impl crate::db::Database for Odbc {
    async fn read(
        &self,
        spec: &weir_spec::ReadDb,
        cx: &weir_engine::StepContext,
    ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::catalog::TableProvider>> {
        connection::table(spec, cx).await
    }

    async fn write(
        &self,
        spec: &weir_spec::WriteDb,
        cx: &weir_engine::StepContext,
        input: datafusion::dataframe::DataFrame,
    ) -> datafusion::error::Result<Box<dyn weir_engine::PendingLoad>> {
        connection::write(spec, cx, input).await
    }

    async fn execute(
        &self,
        spec: &weir_spec::Execute,
        cx: &weir_engine::StepContext,
    ) -> datafusion::error::Result<u64> {
        connection::execute(spec, cx).await
    }
}

/// ODBC's entry in the registry of connection kinds: present in builds with the `odbc` feature.
#[cfg(feature = "odbc")]
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Database(&Odbc));
#[cfg(not(feature = "odbc"))]
pub const CONNECTOR: Option<crate::registry::Connector> = None;
