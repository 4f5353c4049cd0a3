//! DuckDB (cargo feature `duckdb`): a database in a file, no server. `read_db` streams a table or a query with
//! bound parameters and pushed-down projections and filters; `write_db` stages its input as Parquet and loads it
//! with one set-based statement per mode (DuckDB reads Parquet natively, so no row passes through Rust), inside
//! one transaction that commits with the run.
//!
//! The `duckdb` crate is on arrow 58 and Weir on 59: batches and schemas cross by Arrow's C data interface
//! ([`from_duckdb`], [`schema_to_duckdb`]), whose structs have the same layout in every arrow-rs version.

#[cfg(feature = "duckdb")]
mod connection;
mod kind;
#[cfg(feature = "duckdb")]
mod read;
#[cfg(feature = "duckdb")]
mod write;

pub use kind::KIND;

/// DuckDB as `read_db`, `write_db` and `execute` use it.
#[cfg(feature = "duckdb")]
pub struct DuckDb;

#[cfg(feature = "duckdb")]
#[async_trait::async_trait]
impl crate::db::Database for DuckDb {
    async fn read(
        &self,
        spec: &weir_spec::ReadDb,
        cx: &weir_engine::StepContext,
    ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::catalog::TableProvider>> {
        read::table(spec, cx).await
    }

    async fn write(
        &self,
        spec: &weir_spec::WriteDb,
        cx: &weir_engine::StepContext,
        input: datafusion::dataframe::DataFrame,
    ) -> datafusion::error::Result<Box<dyn weir_engine::PendingLoad>> {
        write::write(spec, cx, input).await
    }

    async fn execute(
        &self,
        spec: &weir_spec::Execute,
        cx: &weir_engine::StepContext,
    ) -> datafusion::error::Result<u64> {
        connection::execute(spec, cx).await
    }

    async fn committed_batches(
        &self,
        spec: &weir_spec::WriteDb,
        cx: &weir_engine::StepContext,
    ) -> datafusion::error::Result<u64> {
        write::committed_batches(spec, cx)
    }
}

/// DuckDB's entry in the registry of connection kinds: present in builds with the `duckdb` feature.
#[cfg(feature = "duckdb")]
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Database(&DuckDb));
#[cfg(not(feature = "duckdb"))]
pub const CONNECTOR: Option<crate::registry::Connector> = None;
