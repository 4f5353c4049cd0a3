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
    Category, Dag, Diagnostic, MaxInvalid, OnError, Pipeline, Pos, Severity, StateUpdate, Step, StepKind, TypedValue,
};

use crate::connector::{Batch, Connectors, PendingLoad, StepContext, resolve_connection};
use crate::dead_letters::{DeadLetters, NdjsonDeadLetters};
use crate::error::{EngineError, attribute};
use crate::materialize::materialize;
use crate::metrics::{RunMetrics, StepCounters, StepTable};
use crate::package::{self, Manifest};
use crate::params::{resolve_state, resolve_variables, sql_params, typed_from_scalar};
use crate::quality::run_checks;
use crate::retry::{with_retries, with_retries_unnamed};
use crate::state_store::{StateStore, StepMetricsRow};
use crate::transforms;

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
    /// Steps whose output was written to scratch once, for their several readers.
    materialized: BTreeSet<String>,
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
    /// Plan to run: steps read by several others are materialized once.
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

/// What every step of a run shares, from which each step's [`StepContext`] is made.
struct Shared {
    base: StepContext,
}

impl Shared {
    fn new(
        engine: &Engine,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        mode: Mode,
    ) -> Result<Self, EngineError> {
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
        };
        Ok(Self { base })
    }

    fn context(&self, step: &Step, counters: Arc<StepCounters>) -> StepContext {
        StepContext { step: step.id().to_string(), on_error: step.on_error(), counters, ..self.base.clone() }
    }
}

impl Engine {
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
        self.plan_steps(pipeline, options, &inputs, Mode::Plan, RunMetrics::default(), None).await
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
                    self.execute_batched(pipeline, options, &inputs, metrics, every).await
                }
                _ => match self.plan_steps(pipeline, options, &inputs, Mode::Run, metrics, None).await {
                    Ok(planned) => {
                        let outcome = self.execute(pipeline, options, &inputs, &planned).await;
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

    /// Prepares every load, then commits them all or none; returns the state to record.
    pub(crate) async fn execute(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        planned: &Planned,
    ) -> Result<BTreeMap<String, TypedValue>, EngineError> {
        let name = pipeline.name();
        let loads = planned.sinks.iter().map(|(step, cx)| async {
            let input = step.kind.input().expect("load steps have an input").value.as_str();
            info!(pipeline = name, step = step.id(), "Starting load");
            inputs.enter(step.id());
            let load = || async { self.connectors.sink(step, cx, planned.ctx.table(input).await?).await };
            let pending = match rereadable(pipeline, planned, step.id()) {
                // A load whose connection dropped after rows flowed goes again from the start (nothing of it is
                // committed), reading its input again: its upstream counts start over.
                Some(upstream) => {
                    let what = format!("the load of `{}`", step.id());
                    with_retries_unnamed(&load_retry(pipeline, step), &what, &cx.counters, || async {
                        for id in &upstream {
                            planned.metrics.get(id).expect("every planned step has counters").restart_flow();
                        }
                        load().await
                    })
                    .await
                }
                None => load().await,
            }
            .map_err(|e| attribute(name, step.id(), e))?;
            cx.counters.set_rows(pending.rows());
            Ok::<_, EngineError>((step.id(), pending))
        });
        let (ready, mut failure): (Vec<(&str, Box<dyn PendingLoad>)>, _) =
            split(futures::future::join_all(loads).await);
        if failure.is_none() {
            failure = check_invalid_budgets(pipeline, &planned.metrics).err();
        }
        if failure.is_none() {
            failure = self.check_quality(pipeline, inputs, planned).await.err();
        }
        if let Some(err) = failure {
            for (_, pending) in ready {
                pending.abort().await;
            }
            return Err(err);
        }
        if options.dry_run {
            for (step, pending) in ready {
                info!(pipeline = name, step, rows = pending.rows(), "Dry run: rolling back {} rows", pending.rows());
                pending.abort().await;
            }
            for (step, _) in &planned.actions {
                info!(pipeline = name, step = step.id(), "Dry run: not running action `{}`", step.id());
            }
            return Ok(inputs.state.clone());
        }
        for (step, pending) in ready {
            pending.commit().await.map_err(|e| attribute(name, step, e))?;
        }
        for (step, cx) in &planned.actions {
            let rows = self.connectors.action(step, cx).await.map_err(|e| attribute(name, step.id(), e))?;
            cx.counters.set_rows(rows);
        }
        next_state(pipeline, inputs, &planned.metrics)
    }

    /// Plans every step into one session; with `replay`, only the steps it names, its input being its table.
    pub(crate) async fn plan_steps(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        mode: Mode,
        metrics: RunMetrics,
        replay: Option<&ReplayInput>,
    ) -> Result<Planned, EngineError> {
        let name = pipeline.name().to_string();
        let ctx = session(pipeline, options)?;
        let dag = build_dag(&ctx, pipeline)?;
        let mut readers = dag.readers();
        // A check reads its step too: a checked step that a load also reads is materialized, and runs once.
        for check in pipeline.checks.values() {
            *readers.entry(check.step.value.as_str()).or_default() += 1;
        }
        let params = sql_params(&inputs.variables, &inputs.state);
        let shared = Shared::new(self, pipeline, options, inputs, mode)?;
        let mut sinks = Vec::new();
        let mut actions = Vec::new();
        let mut materialized = BTreeSet::new();

        for id in &dag.order {
            if replay.is_some_and(|r| !r.steps.contains(id) && *id != r.input) {
                continue;
            }
            let step = pipeline.step(id).expect("the DAG holds the pipeline's steps");
            let counters = Arc::new(match cursor_column(pipeline, id) {
                Some(column) => StepCounters::tracking_max(column),
                None => StepCounters::default(),
            });
            metrics.insert(id, counters.clone());
            let cx = shared.context(step, counters.clone());
            let plan_err = |e: DataFusionError| EngineError::Plan {
                pipeline: name.clone(),
                step: id.clone(),
                message: crate::error::user_message(&e),
                pos: step.kind_pos,
            };
            let provider = match step.kind.category() {
                Category::Load => {
                    sinks.push((step.clone(), cx));
                    continue;
                }
                Category::Action => {
                    actions.push((step.clone(), cx));
                    continue;
                }
                _ if replay.is_some_and(|r| r.input == *id) => replay.expect("checked").table.clone(),
                Category::Extract => self.connectors.source(&ctx, step, &cx).await.map_err(plan_err)?,
                Category::Transform => plan_transform(&ctx, step, &params, cx).await.map_err(plan_err)?,
            };
            let table: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(StepTable::new(id, provider, counters));
            let table = if mode == Mode::Run && readers.get(id.as_str()).copied().unwrap_or(0) > 1 {
                materialized.insert(id.clone());
                materialize(&ctx, id, table, &inputs.scratch_dir).await.map_err(|e| attribute(&name, id, e))?
            } else {
                table
            };
            ctx.register_table(id.as_str(), table).map_err(plan_err)?;
        }
        // Actions run in file order, whatever the DAG's order.
        actions.sort_by_key(|(step, _): &(Step, StepContext)| pipeline.steps.iter().position(|s| s.id() == step.id()));
        Ok(Planned { ctx, dag, metrics, materialized, sinks, actions })
    }
}

impl Engine {
    /// A run with `settings.commit_every`: stage every load's input into the run's load package (unless a resumed
    /// run staged it already), then load it batch by batch; returns the state to record and the step metrics.
    async fn execute_batched(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        metrics: RunMetrics,
        every: u64,
    ) -> (Result<BTreeMap<String, TypedValue>, EngineError>, Vec<StepMetricsRow>) {
        let dir = options.packages.join(&inputs.run_id);
        let name = pipeline.name();
        let manifest = match Manifest::read(&dir) {
            Ok(Some(manifest)) => {
                info!(
                    pipeline = name,
                    "The load package of run {} is staged: loading what is not committed", inputs.run_id
                );
                manifest
            }
            Ok(None) => {
                // Staging never finished, so no load has started: stage everything again.
                let _ = std::fs::remove_dir_all(&dir);
                match self.stage(pipeline, options, inputs, &metrics, &dir, every).await {
                    Ok(manifest) => manifest,
                    Err((err, steps)) => return (Err(err), steps),
                }
            }
            Err(e) => return (Err(attribute(name, "-", e)), Vec::new()),
        };
        let loaded = self.load_package(pipeline, options, inputs, &metrics, &dir, &manifest).await;
        let Manifest { state, mut steps, .. } = manifest;
        for row in steps.iter_mut().filter(|r| r.category == "load") {
            row.retries = metrics.get(&row.step).map_or(0, |c| c.retries());
        }
        (loaded.map(|()| state), steps)
    }

    /// Plans the pipeline and streams every load's input into parts; the manifest, written last, records the
    /// state and metrics the run ends with.
    async fn stage(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        metrics: &RunMetrics,
        dir: &std::path::Path,
        every: u64,
    ) -> Result<Manifest, (EngineError, Vec<StepMetricsRow>)> {
        let name = pipeline.name();
        let planned = self
            .plan_steps(pipeline, options, inputs, Mode::Run, metrics.clone(), None)
            .await
            .map_err(|e| (e, Vec::new()))?;
        let staged = planned.sinks.iter().map(|(step, cx)| async {
            let input = step.kind.input().expect("load steps have an input");
            let df = planned.ctx.table(input.value.as_str()).await.map_err(|e| attribute(name, step.id(), e))?;
            info!(pipeline = name, step = step.id(), "Staging the input of `{}` in batches of {every} rows", step.id());
            inputs.enter(step.id());
            let parts = package::stage(df, dir, step.id(), every).await.map_err(|e| attribute(name, step.id(), e))?;
            cx.counters.set_rows(parts.iter().sum());
            Ok::<_, EngineError>((step.id().to_string(), parts))
        });
        let (parts, failure) = split(futures::future::join_all(staged).await);
        let parts: BTreeMap<String, Vec<u64>> = parts.into_iter().collect();
        let steps = step_rows(pipeline, &planned);
        let checked = match failure {
            Some(err) => Err(err),
            None => self.check_quality(pipeline, inputs, &planned).await,
        };
        let manifest = checked
            .and_then(|()| check_invalid_budgets(pipeline, &planned.metrics))
            .and_then(|()| next_state(pipeline, inputs, &planned.metrics))
            .map(|state| Manifest { state, steps: steps.clone(), parts })
            .and_then(|manifest| manifest.write(dir).map(|()| manifest).map_err(|e| attribute(name, "-", e)));
        manifest.map_err(|e| (e, steps))
    }

    /// Loads a staged package: batch-loading steps from the batch after their destination's checkpoint, others
    /// whole unless done; then the action steps.
    async fn load_package(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        metrics: &RunMetrics,
        dir: &std::path::Path,
        manifest: &Manifest,
    ) -> Result<(), EngineError> {
        let shared = Shared::new(self, pipeline, options, inputs, Mode::Run)?;
        let session = SessionContext::new();
        let by_category = |category| pipeline.steps.iter().filter(move |s| s.kind.category() == category);
        let loads = by_category(Category::Load).map(|step| {
            let counters = metrics.get(step.id()).unwrap_or_else(|| {
                let fresh = Arc::new(StepCounters::default());
                metrics.insert(step.id(), fresh.clone());
                fresh
            });
            let cx = shared.context(step, counters);
            let parts = manifest.parts.get(step.id()).map(Vec::as_slice).unwrap_or_default();
            let session = &session;
            async move {
                self.load_staged(pipeline, inputs, step, &cx, session, dir, parts)
                    .await
                    .map_err(|e| attribute(pipeline.name(), step.id(), e))
            }
        });
        if let (_, Some(err)) = split(futures::future::join_all(loads).await) {
            return Err(err);
        }
        for step in by_category(Category::Action) {
            let cx = shared.context(step, Arc::default());
            self.connectors.action(step, &cx).await.map_err(|e| attribute(pipeline.name(), step.id(), e))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn load_staged(
        &self,
        pipeline: &Pipeline,
        inputs: &RunInputs,
        step: &Step,
        cx: &StepContext,
        session: &SessionContext,
        dir: &std::path::Path,
        parts: &[u64],
    ) -> datafusion::error::Result<()> {
        let id = step.id();
        let total: u64 = parts.iter().sum();
        inputs.enter(id);
        if !self.connectors.loads_in_batches(step, cx) {
            if self.store.checkpoint(&cx.run_id, id).map_err(external)? == parts.len() as u64 {
                return Ok(());
            }
            let path = format!("{}/", dir.join(id).display());
            let input = session.read_parquet(path, ParquetReadOptions::default()).await?;
            self.connectors.sink(step, cx, input).await?.commit().await?;
            self.store.set_checkpoint(&cx.run_id, id, parts.len() as u64, total).map_err(external)?;
            info!(pipeline = pipeline.name(), step = id, rows = total, "Load complete: {total} rows");
            return Ok(());
        }
        let done = self.connectors.committed_batches(step, cx).await? as usize;
        if done > 0 {
            info!(
                pipeline = pipeline.name(),
                step = id,
                "`{id}` committed {done} of {} batches before: going on from there",
                parts.len()
            );
        }
        let retry = load_retry(pipeline, step);
        let mut rows_before: u64 = parts[..done.min(parts.len())].iter().sum();
        for (index, rows) in parts.iter().enumerate().skip(done) {
            let cx = StepContext { batch: Some(Batch { index: index as u64, rows_before }), ..cx.clone() };
            let path = package::part(dir, id, index);
            let what = format!("batch {} of {} of `{id}`", index + 1, parts.len());
            with_retries(&retry, &what, &cx.counters, || async {
                let input = session.read_parquet(path.display().to_string(), ParquetReadOptions::default()).await?;
                self.connectors.sink(step, &cx, input).await?.commit().await
            })
            .await?;
            rows_before += rows;
            self.store.set_checkpoint(&cx.run_id, id, index as u64 + 1, rows_before).map_err(external)?;
            info!(
                pipeline = pipeline.name(),
                step = id,
                rows = rows_before,
                "Committed {what}: {rows_before} of {total} rows"
            );
        }
        Ok(())
    }
}

/// The retry policy of a load: its own (`write_db.retry`), else the pipeline's, else the default.
fn load_retry(pipeline: &Pipeline, step: &Step) -> weir_spec::Retry {
    let own = match &step.kind {
        StepKind::WriteDb(spec) => spec.retry.clone(),
        _ => None,
    };
    own.or_else(|| pipeline.settings.retry.clone()).unwrap_or_default()
}

/// The steps a retry of `load` as a whole runs again (the load and what it reads, back to the materialized steps,
/// which are read from their scratch copy), if running them again is harmless: none may set records aside
/// (`on_error` other than `fail`, which `validate` is by default), or those would be kept twice. `None` when a
/// retry would repeat such a side effect.
fn rereadable(pipeline: &Pipeline, planned: &Planned, load: &str) -> Option<Vec<String>> {
    let mut upstream = Vec::new();
    let mut pending = vec![load.to_string()];
    while let Some(id) = pending.pop() {
        if planned.materialized.contains(&id) || upstream.contains(&id) {
            continue;
        }
        if pipeline.step(&id)?.on_error() != OnError::Fail {
            return None;
        }
        pending.extend(planned.dag.inputs.get(&id).into_iter().flatten().cloned());
        upstream.push(id);
    }
    Some(upstream)
}

impl Engine {
    /// Runs the pipeline's data-quality checks over the planned step tables and records how each went; fails with
    /// the first failed `error` check.
    async fn check_quality(
        &self,
        pipeline: &Pipeline,
        inputs: &RunInputs,
        planned: &Planned,
    ) -> Result<(), EngineError> {
        if pipeline.checks.is_empty() {
            return Ok(());
        }
        let params = sql_params(&inputs.variables, &inputs.state);
        let results =
            run_checks(pipeline, &planned.ctx, &params).await.map_err(|e| attribute(pipeline.name(), "-", e))?;
        self.store.record_checks(&inputs.run_id, &results)?;
        match results.iter().find(|r| !r.passed() && r.severity == Severity::Error) {
            Some(failed) => Err(EngineError::Step {
                pipeline: pipeline.name().to_string(),
                step: failed.step.clone(),
                error: DataFusionError::Execution(format!(
                    "check `{}` failed: {}; nothing was loaded",
                    failed.name,
                    failed.message()
                )),
            }),
            None => Ok(()),
        }
    }
}

/// The successes of steps that all ran to their end, and the first failure among them.
fn split<T>(results: Vec<Result<T, EngineError>>) -> (Vec<T>, Option<EngineError>) {
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

fn external(e: crate::state_store::StateError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Waits until the run is cancelled or out of time; says which.
async fn stopped(cancel: &CancellationToken, timeout: Option<weir_spec::Duration>) -> String {
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

fn humanize(d: std::time::Duration) -> String {
    match d.as_secs() {
        0 => format!("{} ms", d.as_millis()),
        s if s < 120 => format!("{s} s"),
        s => format!("{} min", s / 60),
    }
}

async fn plan_transform(
    ctx: &SessionContext,
    step: &Step,
    params: &ParamValues,
    cx: StepContext,
) -> datafusion::error::Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let input = || async {
        let id = step.kind.input().expect("transforms other than sql have an input");
        ctx.table(id.value.as_str()).await
    };
    let df: DataFrame = match &step.kind {
        StepKind::Sql(sql) => transforms::plan_sql(ctx, &sql.query.value, params).await?,
        StepKind::Map(spec) => {
            let mapped = transforms::map(input().await?, spec, params)?;
            match (cx.on_error, mapped.logical_plan()) {
                (OnError::Fail, _) => mapped,
                // Rows its expressions fail on are set aside before it, so the projection itself cannot fail.
                (_, datafusion::logical_expr::LogicalPlan::Projection(projection)) => {
                    let exprs = projection.expr.iter().map(|e| (e.schema_name().to_string(), e.clone())).collect();
                    let guard = transforms::ValidateTable::rows_that_evaluate(input().await?, exprs, cx);
                    transforms::map(ctx.read_table(Arc::new(guard))?, spec, params)?
                }
                _ => mapped,
            }
        }
        StepKind::Filter(spec) => transforms::filter(input().await?, &spec.condition.value, params)?,
        StepKind::Dedup(spec) => transforms::dedup(input().await?, spec)?,
        StepKind::Validate(spec) => {
            return Ok(Arc::new(transforms::ValidateTable::try_new(input().await?, spec, cx)?));
        }
        other => unreachable!("{} is not a transform", other.name()),
    };
    Ok(df.into_view())
}

fn session(pipeline: &Pipeline, options: &RunOptions) -> Result<SessionContext, EngineError> {
    let limit = match (options.memory_limit, &pipeline.settings.memory_limit) {
        (Some(bytes), _) => Some(bytes),
        (None, Some(text)) => Some(parse_bytes(text).map_err(|message| EngineError::Input {
            pipeline: pipeline.name().to_string(),
            message: format!("settings.memory_limit: {message}"),
        })?),
        (None, None) => None,
    };
    let config = SessionConfig::new().with_batch_size(pipeline.settings.batch_size).with_information_schema(true);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
    }
    let runtime = runtime.build_arc().map_err(|e| EngineError::Input {
        pipeline: pipeline.name().to_string(),
        message: format!("cannot set up the runtime: {e}"),
    })?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// The pipeline's steps and what each reads, with SQL steps' inputs taken from their parsed queries.
pub fn step_graph(pipeline: &Pipeline) -> Result<Dag, EngineError> {
    build_dag(&SessionContext::new(), pipeline)
}

fn build_dag(ctx: &SessionContext, pipeline: &Pipeline) -> Result<Dag, EngineError> {
    Dag::build(pipeline, |step| match &step.kind {
        StepKind::Sql(sql) => transforms::sql_inputs(ctx, &sql.query.value).map_err(|e| {
            Diagnostic::new(Pos::of(&sql.query), format!("step `{}`: SQL does not parse: {e}", step.id()))
        }),
        _ => Ok(Vec::new()),
    })
    .map_err(|diagnostics| EngineError::Spec { pipeline: pipeline.name().to_string(), diagnostics })
}

/// Parses `512MB`, `2GiB`, `1048576`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a size like 512MB"))?;
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "K" => 1e3,
        "KIB" => 1024.0,
        "MB" | "M" => 1e6,
        "MIB" => 1024.0 * 1024.0,
        "GB" | "G" => 1e9,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    Ok((number * factor) as usize)
}

fn template_values(pipeline: &Pipeline, inputs: &RunInputs) -> HashMap<&'static str, HashMap<String, String>> {
    let text = |m: &BTreeMap<String, TypedValue>| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    HashMap::from([
        ("var", text(&inputs.variables)),
        ("state", text(&inputs.state)),
        (
            "run",
            HashMap::from([
                ("id".to_string(), inputs.run_id.clone()),
                ("started_at".to_string(), inputs.started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                ("date".to_string(), inputs.started.format("%Y-%m-%d").to_string()),
            ]),
        ),
        ("pipeline", HashMap::from([("name".to_string(), pipeline.name().to_string())])),
    ])
}

/// The column of `step` whose max a state value takes, if any.
fn cursor_column<'a>(pipeline: &'a Pipeline, step: &str) -> Option<&'a str> {
    pipeline.state.values().find_map(|decl| match &decl.value.update {
        Some(StateUpdate::Max(target)) => match target.value.split_once('.') {
            Some((s, column)) if s == step => Some(column),
            _ => None,
        },
        _ => None,
    })
}

fn next_state(
    pipeline: &Pipeline,
    inputs: &RunInputs,
    metrics: &RunMetrics,
) -> Result<BTreeMap<String, TypedValue>, EngineError> {
    let mut state = inputs.state.clone();
    for (name, decl) in &pipeline.state {
        let new = match &decl.value.update {
            None => None,
            Some(StateUpdate::RunStartedAt) => {
                Some(TypedValue::Timestamp(inputs.started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
            }
            Some(StateUpdate::Max(target)) => {
                let step = target.value.split_once('.').map_or("", |(s, _)| s);
                let max =
                    metrics.get(step).map(|c| c.max()).transpose().map_err(|e| attribute(pipeline.name(), step, e))?;
                match max.flatten() {
                    Some(scalar) => {
                        Some(typed_from_scalar(decl.value.ty, &scalar).map_err(|message| EngineError::Input {
                            pipeline: pipeline.name().to_string(),
                            message: format!("state `{name}`: {message}"),
                        })?)
                    }
                    None => None,
                }
            }
        };
        if let Some(value) = new {
            state.insert(name.clone(), value);
        }
    }
    Ok(state)
}

fn check_invalid_budgets(pipeline: &Pipeline, metrics: &RunMetrics) -> Result<(), EngineError> {
    for step in &pipeline.steps {
        let StepKind::Validate(v) = &step.kind else { continue };
        let Some(MaxInvalid::Ratio(max)) = v.max_invalid else { continue };
        let Some(c) = metrics.get(step.id()) else { continue };
        let total = c.rows() + c.invalid();
        if total > 0 && c.invalid() as f64 / total as f64 > max {
            return Err(EngineError::Step {
                pipeline: pipeline.name().to_string(),
                step: step.id().to_string(),
                error: DataFusionError::Execution(format!(
                    "{} of {total} rows invalid ({:.1}%), above max_invalid {:.1}%; nothing was loaded. See `weir dlq list`",
                    c.invalid(),
                    100.0 * c.invalid() as f64 / total as f64,
                    100.0 * max
                )),
            });
        }
    }
    Ok(())
}

pub(crate) fn step_rows(pipeline: &Pipeline, planned: &Planned) -> Vec<StepMetricsRow> {
    let metrics = &planned.metrics;
    pipeline
        .steps
        .iter()
        .filter_map(|step| {
            let c = metrics.get(step.id())?;
            // A step read twice (a self-join) still takes each input row in once.
            let inputs: BTreeSet<&String> = planned.dag.inputs.get(step.id()).into_iter().flatten().collect();
            let rows_in = inputs.iter().filter_map(|i| metrics.get(i)).map(|c| c.rows()).sum();
            Some(StepMetricsRow {
                step: step.id().to_string(),
                kind: step.kind.name().to_string(),
                category: format!("{:?}", step.kind.category()).to_lowercase(),
                rows_in,
                rows_out: c.rows(),
                rows_invalid: c.invalid(),
                bytes: c.bytes(),
                duration_ms: c.duration_ms(),
                retries: c.retries(),
            })
        })
        .collect()
}

fn log_summary(steps: &[StepMetricsRow]) {
    for s in steps {
        match s.category.as_str() {
            "extract" => info!(step = %s.step, records = s.rows_out, "Extracted {} records", s.rows_out),
            "load" => info!(step = %s.step, records = s.rows_out, "Load complete: {} inserted", s.rows_out),
            "action" => info!(step = %s.step, records = s.rows_out, "Action complete: {} rows affected", s.rows_out),
            _ if s.kind == "validate" => info!(
                step = %s.step,
                valid = s.rows_out,
                invalid = s.rows_invalid,
                "Transform complete: {}/{} valid",
                s.rows_out,
                s.rows_out + s.rows_invalid
            ),
            _ => info!(step = %s.step, records = s.rows_out, "Transformed {} records", s.rows_out),
        }
    }
}

impl Planned {
    /// The DAG and, for every load, the physical plan that feeds it.
    pub async fn explain(&self) -> datafusion::error::Result<String> {
        let mut out = String::from("Steps in order (step <- inputs):\n");
        for id in &self.dag.order {
            let inputs = &self.dag.inputs[id];
            if inputs.is_empty() {
                out.push_str(&format!("  {id}\n"));
            } else {
                out.push_str(&format!("  {id} <- {}\n", inputs.join(", ")));
            }
        }
        for (step, _) in &self.actions {
            out.push_str(&format!("\nAction `{}` ({}) runs after every load commits.\n", step.id(), step.kind.name()));
        }
        for (step, _) in &self.sinks {
            let input = step.kind.input().expect("load steps have an input");
            let plan = self.ctx.table(input.value.as_str()).await?.create_physical_plan().await?;
            out.push_str(&format!(
                "\nLoad `{}` ({}) reads `{}`:\n{}",
                step.id(),
                step.kind.name(),
                input.value,
                displayable(plan.as_ref()).indent(true)
            ));
        }
        Ok(out)
    }
}
