//! Weir's sources and sinks: one module per system under `sources/` and `sinks/`, shared helpers under `common/`.
//! [`Builtin`] is the [`weir_engine::Connectors`] the `weir` command uses.

mod common;
mod sinks;
mod sources;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use weir_engine::{Connectors, PendingLoad, StepContext};
use weir_spec::{Step, StepKind};

pub use common::types::parse_sql_type;

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
            other => unreachable!("{} is not an extract step", other.name()),
        }
    }

    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
        sinks::files::write(step, cx, input).await
    }
}
