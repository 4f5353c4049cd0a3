//! Weir's connectors, one folder per family: [`files`] (CSV, JSON, Parquet, listing, writing, copying),
//! [`object_store`] (S3, Azure, GCS, SFTP, SharePoint and what remote files share), [`db`] (the shared scan and
//! load, then one folder per database), [`lakes`] (Delta Lake), [`http`] (REST APIs), [`models`] (language
//! models), [`alerts`] and the webhook source. Connection kinds are listed once, in [`registry`]. [`Builtin`] is the [`weir_engine::Connectors`] the `weir` command uses.

mod alerts;
pub mod cluster;
mod db;
mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http;
mod lakes;
mod lineage;
mod models;
mod object_store;
pub mod registry;
mod run;
mod webhook;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use weir_engine::{Cluster, Connectors, DeadLetters, PendingLoad, ResolvedConnection, StepContext};
use weir_spec::{Action, ClusterEngine, Extract, Load, Role, Spanned, Step};

pub use alerts::RunOutcome;
pub use db::types::parse_sql_type;
pub use run::{Start, run_and_alert};

/// Every connector compiled into this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct Builtin;

#[async_trait]
impl Connectors for Builtin {
    async fn source(&self, session: &SessionContext, step: &Step, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
        let Role::Extract(extract) = step.kind.role() else {
            return Err(not_a(step, "an extract"));
        };
        match extract {
            Extract::ReadCsv(spec) => files::csv::table(session, spec, cx).await,
            Extract::ReadJson(spec) => files::json::table(session, spec, cx).await,
            Extract::ReadParquet(spec) => files::parquet::table(session, spec, cx).await,
            Extract::ListFiles(spec) => files::copy::list(spec, cx).await,
            Extract::ReadDb(spec) => database(cx, &spec.connection)?.read(spec, cx).await,
            Extract::ReadApi(spec) => http::table(session, spec, cx).await,
            Extract::EnrichApi(spec) => http::enrich(session, spec, cx).await,
            Extract::AiExtract(spec) => models::extract(session, spec, cx).await,
            Extract::ReadDelta(spec) => lakes::delta::read::table(session, spec, cx).await,
            Extract::ReadIceberg(spec) => lakes::iceberg::read::table(spec, cx).await,
            Extract::ReadWebhook(spec) => webhook::table(spec, cx),
        }
    }

    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
        let Role::Load(load) = step.kind.role() else {
            return Err(not_a(step, "a load"));
        };
        match load {
            Load::WriteCsv(_) | Load::WriteJson(_) | Load::WriteParquet(_) => {
                files::write::write(step, cx, input).await
            }
            Load::CopyFiles(spec) => files::copy::copy(spec, cx, input).await,
            Load::WriteDb(spec) => database(cx, &spec.connection)?.write(spec, cx, input).await,
            Load::WriteDelta(spec) => lakes::delta::write::write(spec, cx, input).await,
            Load::WriteIceberg(spec) => lakes::iceberg::write::write(spec, cx, input).await,
            Load::WriteApi(spec) => http::write(spec, cx, input).await,
        }
    }

    async fn action(&self, step: &Step, cx: &StepContext) -> Result<u64> {
        let Role::Action(action) = step.kind.role() else {
            return Err(not_a(step, "an action"));
        };
        match action {
            Action::Execute(spec) => database(cx, &spec.connection)?.execute(spec, cx).await,
            Action::MaintainDelta(spec) => lakes::delta::maintain::maintain(spec, cx).await,
        }
    }

    fn loads_in_batches(&self, step: &Step, cx: &StepContext) -> bool {
        match step.kind.role() {
            Role::Load(Load::WriteDb(spec)) => {
                cx.connection(&spec.connection.value).is_ok_and(|conn| registry::checkpoints(&conn.kind))
            }
            _ => false,
        }
    }

    async fn committed_batches(&self, step: &Step, cx: &StepContext) -> Result<u64> {
        match step.kind.role() {
            Role::Load(Load::WriteDb(spec)) => database(cx, &spec.connection)?.committed_batches(spec, cx).await,
            _ => Ok(0),
        }
    }

    fn dead_letter_table(
        &self,
        connection: ResolvedConnection,
        table: &str,
        base_dir: &Path,
    ) -> Result<Arc<dyn DeadLetters>> {
        let db = registry::database(&connection.kind)
            .map_err(|e| DataFusionError::Plan(format!("connection `{}`: {e}", connection.name)))?;
        db.dead_letter_table(connection, table, base_dir)
    }

    fn cluster(&self, engine: &ClusterEngine, local: SessionState) -> Result<Box<dyn Cluster>> {
        cluster::ballista::session(engine, local)
    }
}

/// The database of the connection a step names.
fn database(cx: &StepContext, connection: &Spanned<String>) -> Result<&'static dyn db::Database> {
    let conn = cx.connection(&connection.value)?;
    registry::database(&conn.kind).map_err(|e| DataFusionError::Plan(format!("connection `{}`: {e}", conn.name)))
}

fn not_a(step: &Step, category: &str) -> DataFusionError {
    DataFusionError::Internal(format!("step `{}` ({}) is not {category} step", step.id(), step.kind.name()))
}
