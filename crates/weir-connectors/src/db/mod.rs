//! Databases: what `read_db`, `write_db` and `execute` share (the scan with pushdown, the load with its staging and
//! schema changes, bound parameters, checkpoints, dead-letter tables), and one folder per system. The shared modules
//! name no system: each system's folder implements [`Database`] and describes its kind in `kind.rs`.

pub mod checkpoints;
pub mod column_builder;
pub mod dead_letter_table;
pub mod load;
pub mod nested;
pub mod scan;
pub mod schema_diff;
pub mod shipped;
pub mod sql_params;
pub mod types;

pub mod clickhouse;
pub mod duckdb;
pub mod mysql;
pub mod odbc;
pub mod postgres;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use weir_engine::{DeadLetters, PendingLoad, ResolvedConnection, StepContext};
use weir_spec::{Execute, ReadDb, WriteDb};

/// A database system, as the steps that name its connections use it.
#[async_trait]
pub trait Database: Send + Sync {
    /// The table `read_db` scans: its schema learnt from the server, its rows streamed with pushed-down columns
    /// and filters.
    async fn read(&self, spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>>;

    /// Stages `input` for `write_db` where no reader sees it, returning what makes it visible.
    async fn write(&self, spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>>;

    /// Runs an `execute` step's statement; returns the rows it affected.
    async fn execute(&self, spec: &Execute, cx: &StepContext) -> Result<u64>;

    /// How many batches of run `cx.run_id` a batch-by-batch load has committed, from the checkpoint kept beside the
    /// data. Only kinds whose `can.checkpoints` is set load batch by batch.
    async fn committed_batches(&self, _spec: &WriteDb, _cx: &StepContext) -> Result<u64> {
        Ok(0)
    }

    /// A dead-letter store in `table` (`settings.dead_letters: { connection, table }`), for kinds whose
    /// `can.dead_letters` is set.
    fn dead_letter_table(
        &self,
        connection: ResolvedConnection,
        _table: &str,
        _base_dir: &Path,
    ) -> Result<Arc<dyn DeadLetters>> {
        Err(DataFusionError::Plan(format!("connection `{}` cannot hold dead letters", connection.name)))
    }

    /// A scan's query sent by another process of a cluster ([`scan::Query::ship`]), rebuilt here with the
    /// database's flavor, for kinds whose scans can run on a cluster's executors.
    fn rebuild_query(&self, _state: serde_json::Value) -> Result<(&'static scan::Flavor, Arc<dyn scan::Query>)> {
        Err(DataFusionError::Plan("this database's scans run only on the machine that runs the pipeline".into()))
    }
}
