//! A run: resolve inputs, plan every step into the session in DAG order, stream every load, then commit the loads
//! and the new state together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};
use weir_spec::{
    Category, ClusterEngine, Dag, Diagnostic, MaxInvalid, OnError, Pipeline, Pos, Severity, StateUpdate, Step,
    StepKind, TypedValue,
};

use crate::connector::{Batch, Connectors, PendingLoad, StepContext, resolve_connection};
use crate::dead_letters::{DeadLetters, NdjsonDeadLetters};
use crate::error::{EngineError, attribute};
use crate::fan_out::FanOut;
use crate::materialize::materialize;
use crate::metrics::{RunMetrics, StepCounters, StepTable};
use crate::package::{self, Manifest};
use crate::params::{resolve_state, resolve_variables, sql_params, typed_from_scalar};
use crate::quality::run_checks;
use crate::retry::{with_retries, with_retries_unnamed};
use crate::state_store::{StateStore, StepMetricsRow};
use crate::transforms;

mod batched;
mod commit;
mod figures;
mod gates;
mod placement;
mod plan;
mod values;

use batched::{load_retry, rereadable};
use figures::log_summary;
pub(crate) use figures::step_rows;
use gates::check_invalid_budgets;
pub use placement::Placement;
use placement::{Split, place};
pub use plan::{parse_bytes, step_graph};
use values::{cursor_column, next_state, template_values};

/// How to run a pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What started the run: `manual`, `schedule`, `webhook`, ...
    pub trigger: String,
    /// `--var name=value` overrides.
    pub variables: BTreeMap<String, String>,
    /// Overrides the pipeline's `settings.memory_limit`, in bytes.
    pub memory_limit: Option<usize>,
    /// The directory relative paths in the pipeline start from (the pipeline file's).
    pub base_dir: PathBuf,
    /// Where runs keep scratch files (materialized fan-out inputs).
    pub scratch_root: PathBuf,
    /// Prepare every load, then abort them all instead of committing.
    pub dry_run: bool,
    /// Where runs with `settings.commit_every` keep their load package until they succeed.
    pub packages: PathBuf,
    /// Cancels the run (Ctrl-C, SIGTERM): the open batch rolls back and the run is marked failed.
    pub cancel: CancellationToken,
    /// Whether a successful run saves its new state; backfills of past values do not.
    pub record_state: bool,
    /// The body of the webhook request that started the run, which `read_webhook` steps read.
    pub payload: Option<Arc<serde_json::Value>>,
    /// The new run's id, when the caller must know it before the run starts (to cancel it); else a fresh one.
    pub run_id: Option<String>,
    /// Overrides the pipeline's `settings.engine`: the cluster to run its queries on.
    pub engine: Option<ClusterEngine>,
}

/// What a finished run did.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: String,
    pub steps: Vec<StepMetricsRow>,
    pub duration_ms: u64,
    pub state: BTreeMap<String, TypedValue>,
    /// The `warn` checks that failed: `name: what failed`.
    pub failed_checks: Vec<String>,
}

/// Runs pipelines against one state store.
pub struct Engine {
    connectors: Arc<dyn Connectors>,
    store: Arc<StateStore>,
}

/// A pipeline with every step planned into a session, ready to run or explain.
pub struct Planned {
    pub ctx: SessionContext,
    pub dag: Dag,
    pub metrics: RunMetrics,
    /// Steps whose output was written to scratch once, for their several readers (one of them a check).
    materialized: BTreeSet<String>,
    /// Steps streamed to their several readers at once.
    fan_outs: BTreeMap<String, Arc<FanOut>>,
    /// On a cluster, where each step that is not a load or an action runs.
    placements: BTreeMap<String, Placement>,
    sinks: Vec<(Step, StepContext)>,
    /// Action steps in file order, run after the loads commit.
    actions: Vec<(Step, StepContext)>,
}

/// The part of a pipeline a replay of dead letters runs: the steps downstream of the one that set them aside,
/// and what else those read; the input of that step is a table of the dead letters' records.
pub(crate) struct ReplayInput {
    pub input: String,
    pub table: Arc<dyn datafusion::catalog::TableProvider>,
    pub steps: BTreeSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Plan only: nothing executes (validate, explain).
    Plan,
    /// Plan to run: steps read by several others run once, streamed to all of them (or materialized).
    Run,
}

pub(crate) struct RunInputs {
    run_id: String,
    started: chrono::DateTime<chrono::Utc>,
    pub(crate) variables: BTreeMap<String, TypedValue>,
    state: BTreeMap<String, TypedValue>,
    pub(crate) scratch_dir: PathBuf,
    /// The load step the run is in, for the record of a run that is stopped.
    stage: Mutex<Option<String>>,
}

impl RunInputs {
    fn enter(&self, step: &str) {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = Some(step.to_string());
    }

    fn stage(&self) -> Option<String> {
        self.stage.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One run as its jobs (planning, committing, batched loading, the gates) see it: the engine, the pipeline, how
/// it was asked to run and what it started from. Carried as one value instead of four arguments.
#[derive(Clone, Copy)]
pub(crate) struct Run<'a> {
    engine: &'a Engine,
    pipeline: &'a Pipeline,
    options: &'a RunOptions,
    inputs: &'a RunInputs,
}

/// What every step of a run shares, from which each step's [`StepContext`] is made.
struct Shared {
    base: StepContext,
}

impl Shared {
    fn new(run: Run<'_>, mode: Mode) -> Result<Self, EngineError> {
        let Run { engine, pipeline, options, inputs } = run;
        // A dry run records nothing: its dead letters go to the scratch store it was given.
        let dead_letters: Arc<dyn DeadLetters> = if options.dry_run || mode == Mode::Plan {
            engine.store.clone()
        } else {
            engine.dead_letters(pipeline, &options.base_dir)?
        };
        let base = StepContext {
            pipeline: pipeline.name().to_string(),
            step: String::new(),
            run_id: inputs.run_id.clone(),
            base_dir: options.base_dir.clone(),
            scratch_dir: inputs.scratch_dir.clone(),
            batch_size: pipeline.settings.batch_size,
            retry: pipeline.settings.retry.clone(),
            batch: None,
            payload: options.payload.clone(),
            on_error: OnError::Fail,
            dry_run: options.dry_run,
            planning: mode == Mode::Plan,
            templates: Arc::new(template_values(pipeline, inputs)),
            values: Arc::new(
                inputs.variables.iter().chain(&inputs.state).map(|(k, v)| (k.clone(), v.clone())).collect(),
            ),
            connections: Arc::new(pipeline.connections.clone()),
            dead_letters,
            counters: Arc::default(),
            store: engine.store.clone(),
        };
        Ok(Self { base })
    }

    fn context(&self, step: &Step, counters: Arc<StepCounters>) -> StepContext {
        StepContext { step: step.id().to_string(), on_error: step.on_error(), counters, ..self.base.clone() }
    }
}

impl Engine {
    /// The run of `pipeline` with `options` and `inputs`, for the jobs that make it up.
    pub(crate) fn with<'a>(
        &'a self,
        pipeline: &'a Pipeline,
        options: &'a RunOptions,
        inputs: &'a RunInputs,
    ) -> Run<'a> {
        Run { engine: self, pipeline, options, inputs }
    }

    pub fn new(connectors: Arc<dyn Connectors>, store: Arc<StateStore>) -> Self {
        Self { connectors, store }
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// Where `pipeline` keeps its dead letters: `settings.dead_letters`, else the embedded store. `base_dir` is the
    /// pipeline file's directory, which a relative path starts from.
    pub fn dead_letters(&self, pipeline: &Pipeline, base_dir: &Path) -> Result<Arc<dyn DeadLetters>, EngineError> {
        let input_err = |message: String| EngineError::Input { pipeline: pipeline.name().to_string(), message };
        let Some(target) = &pipeline.settings.dead_letters else { return Ok(self.store.clone()) };
        match (&target.path, &target.connection) {
            (Some(path), _) => Ok(Arc::new(NdjsonDeadLetters::new(base_dir.join(&path.value)))),
            (None, Some(name)) => {
                let connection = resolve_connection(&pipeline.connections, &name.value)
                    .map_err(|e| input_err(format!("settings.dead_letters: {e}")))?;
                self.connectors
                    .dead_letter_table(connection, &target.table, base_dir)
                    .map_err(|e| input_err(format!("settings.dead_letters: {}", crate::error::user_message(&e))))
            }
            (None, None) => Ok(self.store.clone()),
        }
    }

    /// Plans every step without running anything: SQL parses, columns resolve, sources are reachable.
    pub async fn plan(&self, pipeline: &Pipeline, options: &RunOptions) -> Result<Planned, EngineError> {
        let variables = resolve_variables(pipeline, &options.variables)
            .map_err(|message| EngineError::Input { pipeline: pipeline.name().to_string(), message })?;
        let inputs = self.inputs(pipeline, options, "plan", chrono::Utc::now(), variables)?;
        self.with(pipeline, options, &inputs).plan_steps(Mode::Plan, RunMetrics::default(), None).await
    }

    /// Runs a pipeline to the end; the run, its metrics and (on success) its new state are recorded.
    pub async fn run(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        metrics: RunMetrics,
    ) -> Result<RunReport, EngineError> {
        let run_id = options.run_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let variables = resolve_variables(pipeline, &options.variables)
            .map_err(|message| EngineError::Input { pipeline: pipeline.name().to_string(), message })?;
        let inputs = self.inputs(pipeline, options, &run_id, chrono::Utc::now(), variables)?;
        let vars_json = serde_json::to_value(&inputs.variables).unwrap_or_default();
        self.store.start_run(&run_id, pipeline.name(), &options.trigger, &vars_json)?;
        let span = tracing::info_span!("run", run_id = %run_id, pipeline = pipeline.name());
        async {
            info!(pipeline = pipeline.name(), run_id = %run_id, trigger = %options.trigger, "Run started");
            self.drive(pipeline, options, inputs, metrics).await
        }
        .instrument(span)
        .await
    }

    /// Goes on with a failed run (`run_id`, or the pipeline's latest), with the variables it started with: from
    /// its load package and the checkpoints of its destinations when it staged one (`settings.commit_every`),
    /// else from the start. `--var` overrides do not apply: a resumed run loads what the run would have loaded.
    pub async fn resume(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        metrics: RunMetrics,
        run_id: Option<&str>,
    ) -> Result<RunReport, EngineError> {
        let name = pipeline.name().to_string();
        let found = self
            .store
            .resumable_run(&name, run_id)
            .map_err(|message| EngineError::Input { pipeline: name.clone(), message })?;
        // A webhook request's records are not kept: without them the run would load nothing and call it done.
        if options.payload.is_none() && pipeline.steps.iter().any(|s| matches!(s.kind, StepKind::ReadWebhook(_))) {
            return Err(EngineError::Input {
                pipeline: name,
                message: format!(
                    "run {} read a webhook request, whose records are not kept: its sender was not acknowledged and \
                     sends them again; to load a saved copy, resume with --payload FILE",
                    found.run_id
                ),
            });
        }
        let started =
            chrono::DateTime::parse_from_rfc3339(&found.started_at).map_or_else(|_| chrono::Utc::now(), |t| t.to_utc());
        let inputs = self.inputs(pipeline, options, &found.run_id, started, found.variables)?;
        self.store.restart_run(&found.run_id)?;
        let span = tracing::info_span!("run", run_id = %found.run_id, pipeline = %name);
        async {
            info!(pipeline = %name, run_id = %found.run_id, "Resuming run {}", found.run_id);
            self.drive(pipeline, options, inputs, metrics).await
        }
        .instrument(span)
        .await
    }

    /// Runs until done, cancelled or out of time, then records the outcome.
    async fn drive(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: RunInputs,
        metrics: RunMetrics,
    ) -> Result<RunReport, EngineError> {
        let clock = Instant::now();
        let name = pipeline.name();
        let run_id = inputs.run_id.clone();
        let work = async {
            match pipeline.settings.commit_every {
                Some(every) if !options.dry_run => {
                    self.with(pipeline, options, &inputs).execute_batched(metrics, every).await
                }
                _ => match self.with(pipeline, options, &inputs).plan_steps(Mode::Run, metrics, None).await {
                    Ok(planned) => {
                        let outcome = self.with(pipeline, options, &inputs).execute(&planned).await;
                        (outcome, step_rows(pipeline, &planned))
                    }
                    Err(err) => (Err(err), Vec::new()),
                },
            }
        };
        // Dropping the work rolls back what it holds open: a database transaction ends with its connection.
        let (outcome, steps) = tokio::select! {
            done = work => done,
            reason = stopped(&options.cancel, pipeline.settings.timeout) => {
                let kept = if pipeline.settings.commit_every.is_some() {
                    "; batches committed so far stay, and `weir run --resume` goes on from the last checkpoint"
                } else {
                    "; nothing was committed"
                };
                (Err(EngineError::Stopped { pipeline: name.to_string(), reason: format!("{reason}{kept}"), stage: inputs.stage() }), Vec::new())
            }
        };
        let _ = std::fs::remove_dir_all(&inputs.scratch_dir);
        let duration_ms = clock.elapsed().as_millis() as u64;
        match outcome {
            Ok(state) => {
                let recorded = if options.record_state { state.clone() } else { BTreeMap::new() };
                self.store.finish_run(&run_id, name, Ok(&recorded), &steps)?;
                let _ = std::fs::remove_dir_all(options.packages.join(&run_id));
                log_summary(&steps);
                info!(pipeline = name, run_id = %run_id, duration_ms, "Pipeline finished in {duration_ms} ms");
                let failed_checks = self.store.failed_checks(&run_id)?;
                Ok(RunReport { run_id, steps, duration_ms, state, failed_checks })
            }
            Err(err) => {
                let message = err.to_string();
                self.store.finish_run(&run_id, name, Err((&message, err.step())), &steps)?;
                warn!(pipeline = name, run_id = %run_id, stage = err.step().unwrap_or("-"), "Pipeline failed: {message}");
                Err(err)
            }
        }
    }

    pub(crate) fn inputs(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        run_id: &str,
        started: chrono::DateTime<chrono::Utc>,
        variables: BTreeMap<String, TypedValue>,
    ) -> Result<RunInputs, EngineError> {
        let stored = self.store.state(pipeline.name())?;
        let state = resolve_state(pipeline, &stored)
            .map_err(|message| EngineError::Input { pipeline: pipeline.name().to_string(), message })?;
        Ok(RunInputs {
            run_id: run_id.to_string(),
            started,
            variables,
            state,
            scratch_dir: options.scratch_root.join(run_id),
            stage: Mutex::new(None),
        })
    }
}

/// The successes of steps that all ran to their end, and the first failure among them.
pub(super) fn split<T>(results: Vec<Result<T, EngineError>>) -> (Vec<T>, Option<EngineError>) {
    let mut done = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(value) => done.push(value),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    (done, failure)
}

pub(super) fn external(e: crate::state_store::StateError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Waits until the run is cancelled or out of time; says which.
pub(super) async fn stopped(cancel: &CancellationToken, timeout: Option<weir_spec::Duration>) -> String {
    let limit = async {
        match timeout {
            Some(limit) => {
                tokio::time::sleep(limit.0).await;
                format!("timed out after {}", humanize(limit.0))
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = cancel.cancelled() => "cancelled".to_string(),
        reason = limit => reason,
    }
}

pub(super) fn humanize(d: std::time::Duration) -> String {
    match d.as_secs() {
        0 => format!("{} ms", d.as_millis()),
        s if s < 120 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}
