//! Where each step of a run on a cluster runs. A step whose whole plan the cluster can take runs there; any other
//! step (a database or API source, one that sets rows aside as dead letters, one whose rows move a cursor) runs
//! on this machine, and its output goes to the cluster as a file in the run's scratch directory, which executors
//! must be able to read. Loads always run here, reading the cluster's results as a stream.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::Mode;
use crate::connector::Cluster;
use crate::metrics::{StepCounters, StepTable};

/// Where one step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Cluster,
    /// On this machine, for the reason given.
    Here(String),
}

/// Where `provider`, the table of a step of kind `kind`, runs. `cursor` names the column whose highest value the
/// step records: counting it needs every row here.
pub(super) fn place(
    cluster: &dyn Cluster,
    kind: &str,
    provider: Arc<dyn TableProvider>,
    cursor: Option<&str>,
) -> Result<Placement> {
    if let Some(column) = cursor {
        return Ok(Placement::Here(format!("its rows move the cursor `{column}`")));
    }
    let plan = cluster.context().read_table(provider)?.into_optimized_plan()?;
    Ok(match cluster.can_run(&plan) {
        Ok(()) => Placement::Cluster,
        Err(why) => {
            tracing::debug!("the cluster cannot take this `{kind}` step: {why}");
            Placement::Here(format!("the cluster cannot run a `{kind}` step"))
        }
    })
}

/// The two sessions of a run on a cluster: the cluster's, where steps are planned and the cluster's steps run,
/// and this machine's, where the other steps run and loads and checks read every step.
pub(super) struct Split<'a> {
    pub cluster: &'a dyn Cluster,
    pub here: &'a SessionContext,
    pub scratch_dir: &'a Path,
    pub mode: Mode,
}

impl Split<'_> {
    /// Registers a step's table in both sessions, counted where this machine reads it. A step that runs here
    /// runs once, to a file in scratch that both sessions read (when the run only plans, its table stays and the
    /// cluster's session names the file unwritten). Returns whether the step was written to scratch.
    pub(super) async fn register(
        &self,
        step: &str,
        placement: &Placement,
        provider: Arc<dyn TableProvider>,
        counters: Arc<StepCounters>,
    ) -> Result<bool> {
        let cluster = self.cluster.context();
        match placement {
            Placement::Cluster => {
                cluster.register_table(step, provider)?;
                let remote = Arc::new(ClusterTable::new(cluster, step).await?);
                self.here.register_table(step, Arc::new(StepTable::new(step, remote, counters)))?;
                Ok(false)
            }
            Placement::Here(_) => {
                let table = Arc::new(StepTable::new(step, provider, counters));
                let dir = self.scratch_dir.join(format!("{step}.parquet"));
                if self.mode == Mode::Plan {
                    cluster.register_table(step, staged(&dir, table.schema())?)?;
                    self.here.register_table(step, table)?;
                    return Ok(false);
                }
                std::fs::create_dir_all(&dir)?;
                let written = self.here.read_table(table.clone())?;
                written.write_parquet(&format!("{}/", path_text(&dir)?), DataFrameWriteOptions::new(), None).await?;
                let staged = staged(&dir, table.schema())?;
                cluster.register_table(step, staged.clone())?;
                self.here.register_table(step, staged)?;
                Ok(true)
            }
        }
    }
}

/// The Parquet files a step that runs here was written to, for the cluster (Parquet, whose row groups executors
/// split between them, rather than the Arrow file a local run's scratch holds).
fn staged(dir: &Path, schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let url = ListingTableUrl::parse(format!("{}/", path_text(dir)?))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| DataFusionError::Plan(format!("the scratch path {} is not UTF-8", path.display())))
}

/// A step the cluster runs, as a table of this machine's session: scanning it plans the step's query on the
/// cluster's session, whose physical plan sends it to the cluster and streams the result back.
#[derive(Debug)]
struct ClusterTable {
    query: DataFrame,
}

impl ClusterTable {
    async fn new(cluster: &SessionContext, step: &str) -> Result<Self> {
        Ok(Self { query: cluster.table(step).await? })
    }
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.query.schema().inner())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut query = self.query.clone();
        if let Some(projection) = projection {
            let schema = query.schema().clone();
            let columns: Vec<&str> = projection.iter().map(|&i| schema.field(i).name().as_str()).collect();
            query = query.select_columns(&columns)?;
        }
        if let Some(limit) = limit {
            query = query.limit(0, Some(limit))?;
        }
        query.create_physical_plan().await
    }
}
