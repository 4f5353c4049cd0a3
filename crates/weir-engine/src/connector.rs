//! The seam between the engine and the systems it reads and writes. The engine plans and runs steps; a
//! [`Connectors`] implementation (the `weir-connectors` crate) turns extract steps into tables and load steps into
//! writes that commit only when the whole run succeeds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use weir_spec::{
    ClusterEngine, Connection, OnError, Retry, RetryOn, Spanned, Step, Template, TypedValue, interpolate_env,
};

use crate::dead_letters::DeadLetters;
use crate::metrics::StepCounters;
use crate::state_store::{DeadLetterFilter, NewDeadLetter};

/// Extract and load steps, by kind.
#[async_trait]
pub trait Connectors: Send + Sync {
    /// A table for an extract step. Scanning it must stream: no connector may hold a whole input in memory.
    async fn source(&self, session: &SessionContext, step: &Step, cx: &StepContext) -> Result<Arc<dyn TableProvider>>;

    /// Writes `input` for a load step where nobody can see it yet, returning what makes it visible.
    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>>;

    /// Runs an action step (after every load committed); returns the rows it affected.
    async fn action(&self, step: &Step, cx: &StepContext) -> Result<u64>;

    /// Whether this load step commits a run's input batch by batch (see [`StepContext::batch`]), recording each
    /// batch's checkpoint in the same transaction. Loads that do not are given their whole input once.
    fn loads_in_batches(&self, _step: &Step, _cx: &StepContext) -> bool {
        false
    }

    /// How many batches of run `cx.run_id` the destination of a batch-loading step has committed, read from the
    /// checkpoint it keeps beside the data.
    async fn committed_batches(&self, _step: &Step, _cx: &StepContext) -> Result<u64> {
        Ok(0)
    }

    /// A dead-letter store in `table` of a database connection (`settings.dead_letters.connection`).
    fn dead_letter_table(
        &self,
        connection: ResolvedConnection,
        _table: &str,
        _base_dir: &Path,
    ) -> Result<Arc<dyn DeadLetters>> {
        Err(DataFusionError::Plan(format!("connection `{}` cannot hold dead letters in this build", connection.name)))
    }

    /// A session on the cluster `engine` (`settings.engine`, `weir run --engine`), made from the run's local
    /// session state: its memory pool, configuration and functions.
    fn cluster(&self, engine: &ClusterEngine, _local: SessionState) -> Result<Box<dyn Cluster>> {
        Err(DataFusionError::Plan(format!("this build of Weir cannot run on a cluster ({engine})")))
    }
}

/// A cluster that runs the queries planned in its session. The engine plans a run's steps in [`Cluster::context`]
/// and asks [`Cluster::can_run`] of each; a step the cluster cannot run runs on this machine and its output is
/// handed to the cluster as a file in the run's scratch directory.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// The session whose physical plans run on the cluster.
    fn context(&self) -> &SessionContext;

    /// Fails, saying how to fix it, when the cluster cannot be reached: a run checks before it starts.
    async fn reach(&self) -> Result<()>;

    /// Whether the cluster can run `plan` (an optimized plan of the session): `Err` says what it cannot take.
    fn can_run(&self, plan: &LogicalPlan) -> std::result::Result<(), String>;
}

/// One batch of a load committed batch by batch: the destination records `index + 1` batches and
/// `rows_before` plus this batch's rows as its checkpoint, in the transaction that commits the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub index: u64,
    pub rows_before: u64,
}

impl Batch {
    /// Whether this is the first batch of its load, the one a `replace` empties the table in.
    pub fn is_first(batch: Option<Batch>) -> bool {
        batch.is_none_or(|b| b.index == 0)
    }
}

/// A failure that another attempt may not meet: a dropped connection, a transaction that lost a serialization
/// conflict or a deadlock. Connectors wrap such errors in it so the engine's retry policy can tell them apart.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Transient {
    pub kind: RetryOn,
    pub message: String,
}

impl Transient {
    pub fn error(kind: RetryOn, message: String) -> DataFusionError {
        DataFusionError::External(Box::new(Self { kind, message }))
    }

    /// The transient failure inside `err`, if it is one.
    pub fn find(err: &DataFusionError) -> Option<&Transient> {
        crate::error::find_in(err)
    }
}

/// What a load did to its destination's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowChanges {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

impl std::ops::Add for RowChanges {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            inserted: self.inserted + other.inserted,
            updated: self.updated + other.updated,
            deleted: self.deleted + other.deleted,
        }
    }
}

/// Data written by a load step but not yet visible at its destination. Every load of a run is prepared before any
/// is committed, so a failure anywhere leaves every destination as it was.
#[async_trait]
pub trait PendingLoad: Send {
    /// Rows written.
    fn rows(&self) -> u64;
    /// How the rows changed the destination, where it tells: a file, or a database that does not say, has `None`.
    fn changes(&self) -> Option<RowChanges> {
        None
    }
    /// Makes the data visible (an atomic rename, a transaction commit).
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Throws the data away.
    async fn abort(self: Box<Self>);
}

/// A load that wrote nothing and has nothing to commit (a dry run's, or an upsert of no rows into a table that does
/// not exist yet).
pub struct NothingToLoad;

#[async_trait]
impl PendingLoad for NothingToLoad {
    fn rows(&self) -> u64 {
        0
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    async fn abort(self: Box<Self>) {}
}

/// What a step sees of its run.
#[derive(Clone)]
pub struct StepContext {
    pub pipeline: String,
    pub step: String,
    pub run_id: String,
    /// The directory of the pipeline file; relative paths start here.
    pub base_dir: PathBuf,
    /// The temporary directory of this run, removed when it ends.
    pub scratch_dir: PathBuf,
    pub batch_size: usize,
    pub on_error: OnError,
    /// The run will abort its loads rather than commit them: a connector must not make anything visible before
    /// commit (MySQL's implicit DDL commits, say).
    pub dry_run: bool,
    /// The pipeline is only planned (`weir validate`, `weir explain`): a source should learn its schema with as
    /// little reading as it can (an API source fetches at most one page or lookup) and nothing is written.
    pub planning: bool,
    /// The pipeline's default retry policy (`settings.retry`), for steps that set none.
    pub retry: Option<Retry>,
    /// The batch being loaded, when the run commits its loads batch by batch (`settings.commit_every`).
    pub batch: Option<Batch>,
    /// The body of the webhook request that started the run, for `read_webhook`.
    pub payload: Option<Arc<serde_json::Value>>,
    pub(crate) templates: Arc<HashMap<&'static str, HashMap<String, String>>>,
    /// Variables and state by name, for connectors that bind `$name` in their own SQL.
    pub(crate) values: Arc<BTreeMap<String, TypedValue>>,
    pub(crate) connections: Arc<BTreeMap<String, Connection>>,
    pub(crate) dead_letters: Arc<dyn DeadLetters>,
    pub(crate) counters: Arc<StepCounters>,
    /// The run's state store, for what steps keep between runs besides state values (model answers).
    pub(crate) store: Arc<crate::StateStore>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("pipeline", &self.pipeline)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl StepContext {
    /// Renders `{{ scope.name }}` placeholders.
    pub fn render(&self, text: &Spanned<String>) -> Result<String> {
        self.render_str(&text.value)
    }

    /// Renders `{{ scope.name }}` placeholders in text that carries no position.
    pub fn render_str(&self, text: &str) -> Result<String> {
        Template(text).render(&self.templates).map_err(|e| DataFusionError::Plan(e.to_string()))
    }

    /// Renders a path and makes it absolute against the pipeline's directory (URLs pass through).
    pub fn path(&self, text: &Spanned<String>) -> Result<String> {
        let rendered = self.render(text)?;
        if rendered.contains("://") || Path::new(&rendered).is_absolute() {
            return Ok(rendered);
        }
        Ok(self.base_dir.join(rendered).to_string_lossy().into_owned())
    }

    /// A variable or state value, for `$name` in a database's own SQL.
    pub fn value(&self, name: &str) -> Option<&TypedValue> {
        self.values.get(name)
    }

    /// The names [`Self::value`] knows, for error messages.
    pub fn value_names(&self) -> Vec<&str> {
        self.values.keys().map(String::as_str).collect()
    }

    /// A connection with its `${ENV}` references read from the environment.
    pub fn connection(&self, name: &str) -> Result<ResolvedConnection> {
        resolve_connection(&self.connections, name)
    }

    /// The step's counters, for connectors that count what the engine cannot see (retried requests).
    pub fn counters(&self) -> Arc<StepCounters> {
        self.counters.clone()
    }

    /// The model answers kept under those of `keys` that have one (see [`crate::StateStore::model_answers`]).
    pub fn model_answers(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        self.store.model_answers(keys).map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// Keeps model answers for later runs, by key.
    pub fn keep_model_answers(&self, answers: &[(String, String)]) -> Result<()> {
        self.store.keep_model_answers(answers).map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// Hands over records this step could not process, following its `on_error`: fail on the first, count and drop
    /// them, or keep them in the dead-letter store. Nothing is dropped silently: skipped and dead-lettered records
    /// are counted as `rows_invalid`. In a batch of a batched load (which is loaded again after a retry or a
    /// resume), a dead letter already kept for the same record at the same place is not kept twice.
    pub fn reject(&self, letters: Vec<NewDeadLetter>) -> Result<()> {
        let Some(first) = letters.first() else { return Ok(()) };
        match self.on_error {
            OnError::Fail => {
                let origin = first.origin.as_deref().map(|o| format!(" at {o}")).unwrap_or_default();
                Err(DataFusionError::Execution(format!(
                    "{}{origin}; record: {}{}",
                    first.error,
                    truncate(&first.record.to_string(), 300),
                    hint_on_error(letters.len())
                )))
            }
            OnError::Skip => {
                self.counters.add_invalid(letters.len() as u64);
                Ok(())
            }
            OnError::DeadLetter => {
                let kept = |e: crate::dead_letters::BoxError| {
                    DataFusionError::External(format!("cannot keep dead letters: {e}").into())
                };
                let letters = match self.batch {
                    Some(_) => self.not_kept_yet(letters).map_err(kept)?,
                    None => letters,
                };
                self.dead_letters.add(&self.pipeline, &self.run_id, &letters).map_err(kept)?;
                self.counters.add_invalid(letters.len() as u64);
                Ok(())
            }
        }
    }

    /// `letters` without those this run's step already kept for the same record at the same place.
    fn not_kept_yet(&self, letters: Vec<NewDeadLetter>) -> crate::DlqResult<Vec<NewDeadLetter>> {
        let filter = DeadLetterFilter { run_id: Some(self.run_id.clone()), step: Some(self.step.clone()), id: None };
        let kept: std::collections::HashSet<(Option<String>, String)> = self
            .dead_letters
            .matching(&self.pipeline, &filter)?
            .into_iter()
            .map(|l| (l.origin, l.record.to_string()))
            .collect();
        Ok(letters.into_iter().filter(|l| !kept.contains(&(l.origin.clone(), l.record.to_string()))).collect())
    }
}

/// Connection `name` of `connections` with its `${ENV}` references read from the environment.
pub(crate) fn resolve_connection(connections: &BTreeMap<String, Connection>, name: &str) -> Result<ResolvedConnection> {
    let conn = connections.get(name).ok_or_else(|| DataFusionError::Plan(format!("unknown connection `{name}`")))?;
    let resolve = |text: &str| {
        interpolate_env(text, |var| std::env::var(var).ok()).map(Secret).map_err(|var| {
            DataFusionError::Plan(format!("connection `{name}` needs environment variable `{var}`, which is not set"))
        })
    };
    Ok(ResolvedConnection {
        name: name.to_string(),
        kind: conn.kind.value.clone(),
        url: match &conn.url {
            Some(url) => resolve(&url.value)?,
            None => Secret(String::new()),
        },
        options: conn.options.iter().map(|(k, v)| Ok((k.to_string(), resolve(&v.value)?))).collect::<Result<_>>()?,
    })
}

/// A connection ready to open. Its values may hold secrets, so they print as `***`.
#[derive(Debug, Clone)]
pub struct ResolvedConnection {
    /// The name under `connections:`, which errors and logs use instead of the URL.
    pub name: String,
    pub kind: String,
    /// Empty for kinds whose steps carry the location (object stores); `weir validate` requires it of the rest.
    pub url: Secret,
    pub options: BTreeMap<String, Secret>,
}

/// A value that must never be printed, logged or stored.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

fn hint_on_error(count: usize) -> String {
    let more = if count > 1 { format!(" ({} bad records in this batch)", count) } else { String::new() };
    format!("{more}. Set `on_error: dead_letter` on the step to keep bad records aside and go on")
}

/// `s` cut to at most `max` characters, with `…` when cut: records and response bodies quoted in messages.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
