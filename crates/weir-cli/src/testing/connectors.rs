//! The connectors of a test run: Weir's own, except that extract steps a case gives rows for read those rows, and
//! loads write to captured tables unless their connection is one the case uses for real.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use weir_connectors::Builtin;
use weir_engine::{Connectors, PendingLoad, StepContext};
use weir_spec::{Step, StepKind};

use super::captured::{CapturedLoad, Destinations, Table, Write};

/// What stands in for an extract step.
#[derive(Debug, Clone)]
pub enum StandIn {
    Rows(datafusion::arrow::array::RecordBatch),
    /// A fixture file read by its extension (for steps that do not read files themselves).
    File(PathBuf),
}

pub struct TestConnectors {
    pub stand_ins: HashMap<String, StandIn>,
    pub destinations: Destinations,
    /// Connections the case uses for real.
    pub real: BTreeSet<String>,
}

/// The connection a load or action step writes through, if it names one.
pub fn connection_of(kind: &StepKind) -> Option<&str> {
    match kind {
        StepKind::WriteDb(s) => Some(&s.connection.value),
        StepKind::Execute(s) => Some(&s.connection.value),
        StepKind::WriteApi(s) => s.connection.as_ref().map(|c| c.value.as_str()),
        StepKind::WriteDelta(s) => s.connection.as_ref().map(|c| c.value.as_str()),
        StepKind::WriteIceberg(s) => Some(&s.catalog.value),
        other => other.file_sink().and_then(|s| s.connection).map(|c| c.value.as_str()),
    }
}

impl TestConnectors {
    fn is_real(&self, step: &Step) -> bool {
        connection_of(&step.kind).is_some_and(|c| self.real.contains(c))
    }
}

#[async_trait]
impl Connectors for TestConnectors {
    async fn source(&self, session: &SessionContext, step: &Step, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
        match self.stand_ins.get(step.id()) {
            Some(StandIn::Rows(batch)) => Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?)),
            Some(StandIn::File(path)) => Ok(read_fixture(session, path).await?.into_view()),
            None => Builtin.source(session, step, cx).await,
        }
    }

    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
        if self.is_real(step) {
            return Builtin.sink(step, cx, input).await;
        }
        // A test's rows are a fixture's: small enough to hold, unlike a real run's.
        let planned = Arc::new(input.schema().as_arrow().clone());
        let batches = input.collect().await?;
        let schema = batches.first().map_or(planned, |b| b.schema());
        Ok(Box::new(CapturedLoad {
            step: step.id().to_string(),
            write: Write::of(&step.kind, cx)?,
            rows: Table { schema, batches },
            destinations: self.destinations.clone(),
        }))
    }

    async fn action(&self, step: &Step, cx: &StepContext) -> Result<u64> {
        if self.is_real(step) { Builtin.action(step, cx).await } else { Ok(0) }
    }

    fn loads_in_batches(&self, step: &Step, cx: &StepContext) -> bool {
        self.is_real(step) && Builtin.loads_in_batches(step, cx)
    }

    async fn committed_batches(&self, step: &Step, cx: &StepContext) -> Result<u64> {
        if self.is_real(step) { Builtin.committed_batches(step, cx).await } else { Ok(0) }
    }
}

/// A fixture file as a table, by its extension.
async fn read_fixture(session: &SessionContext, path: &Path) -> Result<DataFrame> {
    let shown = path.display().to_string();
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".csv") {
        session.read_csv(&shown, CsvReadOptions::new()).await
    } else if name.ends_with(".parquet") {
        session.read_parquet(&shown, ParquetReadOptions::default()).await
    } else if name.ends_with(".json") || name.ends_with(".ndjson") || name.ends_with(".jsonl") {
        let extension = name.rsplit('.').next().unwrap_or("json").to_string();
        session.read_json(&shown, JsonReadOptions::default().file_extension(&format!(".{extension}"))).await
    } else {
        Err(DataFusionError::Plan(format!("fixture {shown}: name it .csv, .json, .ndjson or .parquet")))
    }
}
