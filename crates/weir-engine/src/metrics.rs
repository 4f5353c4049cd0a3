//! Per-step figures gathered while data flows: every step's output table is wrapped in [`StepTable`], whose scan
//! adds a [`CountExec`] that counts rows and bytes (and tracks a cursor's max) batch by batch, and marks errors with
//! the step they came from.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::min_max::MaxAccumulator;
use datafusion::logical_expr::{Accumulator, Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::error::in_step;

/// Counters of one step in one run. Shared by every partition of every scan of the step.
#[derive(Debug, Default)]
pub struct StepCounters {
    rows: AtomicU64,
    bytes: AtomicU64,
    invalid: AtomicU64,
    /// Records a source passed over by design, not for a fault (a Debezium tombstone).
    skipped: AtomicU64,
    retries: AtomicU64,
    /// What asking a language model cost the step, for a step that asks one.
    usage: Mutex<Option<ModelUsage>>,
    /// What a load's rows did to its destination, summed over its batches; `None` where the destination cannot tell.
    changes: Mutex<Option<crate::RowChanges>>,
    timing: Mutex<Option<(Instant, Instant)>>,
    max: Option<MaxTracker>,
}

/// What a step's questions to a language model cost: requests sent, texts answered from the cache instead, tokens
/// as the server counted them, and their price (in millionths of the currency the connection's prices are in;
/// `None` when it sets no price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelUsage {
    pub requests: u64,
    pub cached: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
}

impl std::ops::Add for ModelUsage {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        let cost_micros = match (self.cost_micros, other.cost_micros) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        Self {
            requests: self.requests + other.requests,
            cached: self.cached + other.cached,
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            cost_micros,
        }
    }
}

#[derive(Debug)]
struct MaxTracker {
    column: String,
    acc: Mutex<Option<MaxAccumulator>>,
}

impl StepCounters {
    /// Counters that also track the largest value of `column` (for `state: update: max`).
    pub fn tracking_max(column: &str) -> Self {
        Self { max: Some(MaxTracker { column: column.to_string(), acc: Mutex::new(None) }), ..Self::default() }
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    pub fn changes(&self) -> Option<crate::RowChanges> {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what one commit of a load changed (a load commits once, or once per batch).
    pub fn add_changes(&self, changes: Option<crate::RowChanges>) {
        let mut total = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        *total = match (*total, changes) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) => b,
            (a, None) => a,
        };
    }

    /// For steps that count their own output (loads report rows written).
    pub fn set_rows(&self, n: u64) {
        self.rows.store(n, Ordering::Relaxed);
    }

    /// Forgets the rows and bytes counted, for a step whose output is read again from the start (a load retried
    /// whole); the largest cursor value stays, as the same rows come again.
    pub fn restart_flow(&self) {
        self.rows.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// Failed attempts the step retried (HTTP requests, database batches).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds requests, cache hits, tokens and cost of a step that asks a language model.
    pub fn add_usage(&self, more: ModelUsage) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        *usage = Some(usage.unwrap_or_default() + more);
    }

    pub fn usage(&self) -> Option<ModelUsage> {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_invalid(&self, n: u64) {
        self.invalid.fetch_add(n, Ordering::Relaxed);
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub fn add_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Milliseconds from the first batch asked for to the last one delivered.
    pub fn duration_ms(&self) -> u64 {
        let timing = self.timing.lock().unwrap_or_else(|p| p.into_inner());
        timing.map_or(0, |(start, end)| end.duration_since(start).as_millis() as u64)
    }

    /// Whether anything on this machine read the step (on a cluster, a step only other cluster steps read is
    /// never read here, and its rows are not counted).
    pub fn read_here(&self) -> bool {
        self.timing.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The tracked column's max so far; `None` when nothing flowed or nothing is tracked.
    pub fn max(&self) -> Result<Option<ScalarValue>> {
        let Some(tracker) = &self.max else { return Ok(None) };
        let mut acc = tracker.acc.lock().unwrap_or_else(|p| p.into_inner());
        match acc.as_mut() {
            Some(acc) => Ok(Some(acc.evaluate()?).filter(|v| !v.is_null())),
            None => Ok(None),
        }
    }

    fn touch(&self) {
        let now = Instant::now();
        let mut timing = self.timing.lock().unwrap_or_else(|p| p.into_inner());
        *timing = Some(timing.map_or((now, now), |(start, _)| (start, now)));
    }

    fn observe(&self, batch: &RecordBatch) -> Result<()> {
        self.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
        if let Some(tracker) = &self.max
            && let Ok(idx) = batch.schema().index_of(&tracker.column)
        {
            let column = batch.column(idx);
            let mut acc = tracker.acc.lock().unwrap_or_else(|p| p.into_inner());
            if acc.is_none() {
                *acc = Some(MaxAccumulator::try_new(column.data_type())?);
            }
            acc.as_mut().expect("just set").update_batch(std::slice::from_ref(column))?;
        }
        self.touch();
        Ok(())
    }
}

/// The counters of every step of a run, for progress display and the run record.
#[derive(Debug, Default, Clone)]
pub struct RunMetrics {
    pub steps: Arc<Mutex<HashMap<String, Arc<StepCounters>>>>,
}

impl RunMetrics {
    pub fn insert(&self, step: &str, counters: Arc<StepCounters>) {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).insert(step.to_string(), counters);
    }

    pub fn get(&self, step: &str) -> Option<Arc<StepCounters>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).get(step).cloned()
    }

    /// `(step, rows so far)` for every step, for progress bars.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.iter().map(|(k, v)| (k.clone(), v.rows())).collect()
    }

    /// `(step, what it asked of a language model)` for every step that asked one.
    pub fn usage(&self) -> Vec<(String, ModelUsage)> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.iter().filter_map(|(k, v)| Some((k.clone(), v.usage()?))).collect()
    }

    /// `(step, what its rows changed)` for every load whose destination tells.
    pub fn changes(&self) -> Vec<(String, crate::RowChanges)> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps.iter().filter_map(|(k, v)| Some((k.clone(), v.changes()?))).collect()
    }
}

/// A step's output as SQL sees it: the step's table, counted.
#[derive(Debug)]
pub struct StepTable {
    step: String,
    inner: Arc<dyn TableProvider>,
    counters: Arc<StepCounters>,
}

impl StepTable {
    pub fn new(step: &str, inner: Arc<dyn TableProvider>, counters: Arc<StepCounters>) -> Self {
        Self { step: step.to_string(), inner, counters }
    }
}

#[async_trait]
impl TableProvider for StepTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        if self.counters.max.is_some() {
            // The cursor must see every row the step produced, not only those a reader keeps.
            return Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()]);
        }
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wrap =
            |plan| -> Arc<dyn ExecutionPlan> { Arc::new(CountExec::new(&self.step, plan, self.counters.clone())) };
        if self.counters.max.is_none() {
            return Ok(wrap(self.inner.scan(state, projection, filters, limit).await?));
        }
        let counted = wrap(self.inner.scan(state, None, &[], None).await?);
        let Some(projection) = projection else { return Ok(counted) };
        let schema = counted.schema();
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name().clone();
                (Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, counted)?))
    }
}

/// Counts what flows out of a step and marks errors with the step.
#[derive(Debug, Clone)]
pub struct CountExec {
    step: String,
    input: Arc<dyn ExecutionPlan>,
    counters: Arc<StepCounters>,
}

impl CountExec {
    pub fn new(step: &str, input: Arc<dyn ExecutionPlan>, counters: Arc<StepCounters>) -> Self {
        Self { step: step.to_string(), input, counters }
    }
}

impl DisplayAs for CountExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WeirStep: step={}", self.step)
    }
}

impl ExecutionPlan for CountExec {
    fn name(&self) -> &str {
        "WeirStep"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self { input: children.swap_remove(0), ..(*self).clone() }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.counters.touch();
        let step = self.step.clone();
        let counters = self.counters.clone();
        let stream = self.input.execute(partition, context).map_err(|e| in_step(&step, e))?;
        let schema = stream.schema();
        let counted = stream.map(move |batch| match batch {
            Ok(batch) => {
                counters.observe(&batch).map_err(|e| in_step(&step, e))?;
                Ok(batch)
            }
            Err(e) => Err(in_step(&step, e)),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}
