//! A run: resolve inputs, plan every step into the session in DAG order, stream every load, then commit the loads
//! and the new state together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{SessionConfig, SessionContext};
use tracing::{info, warn};
use weir_spec::{Category, Dag, Diagnostic, MaxInvalid, Pipeline, Pos, StateUpdate, Step, StepKind, TypedValue};

use crate::connector::{Connectors, PendingLoad, StepContext};
use crate::error::{EngineError, attribute};
use crate::materialize::materialize;
use crate::metrics::{RunMetrics, StepCounters, StepTable};
use crate::params::{resolve_state, resolve_variables, sql_params, typed_from_scalar};
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
}

/// What a finished run did.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: String,
    pub steps: Vec<StepMetricsRow>,
    pub duration_ms: u64,
    pub state: BTreeMap<String, TypedValue>,
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
    sinks: Vec<(Step, StepContext)>,
    /// Action steps in file order, run after the loads commit.
    actions: Vec<(Step, StepContext)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plan only: nothing executes (validate, explain).
    Plan,
    /// Plan to run: steps read by several others are materialized once.
    Run,
}

struct RunInputs {
    run_id: String,
    started: chrono::DateTime<chrono::Utc>,
    variables: BTreeMap<String, TypedValue>,
    state: BTreeMap<String, TypedValue>,
    scratch_dir: PathBuf,
}

impl Engine {
    pub fn new(connectors: Arc<dyn Connectors>, store: Arc<StateStore>) -> Self {
        Self { connectors, store }
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// Plans every step without running anything: SQL parses, columns resolve, sources are reachable.
    pub async fn plan(&self, pipeline: &Pipeline, options: &RunOptions) -> Result<Planned, EngineError> {
        let inputs = self.inputs(pipeline, options, "plan")?;
        self.plan_steps(pipeline, options, &inputs, Mode::Plan, RunMetrics::default()).await
    }

    /// Runs a pipeline to the end; the run, its metrics and (on success) its new state are recorded.
    pub async fn run(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        metrics: RunMetrics,
    ) -> Result<RunReport, EngineError> {
        let clock = Instant::now();
        let run_id = uuid::Uuid::now_v7().to_string();
        let inputs = self.inputs(pipeline, options, &run_id)?;
        let name = pipeline.name();
        let vars_json = serde_json::to_value(&inputs.variables).unwrap_or_default();
        self.store.start_run(&run_id, name, &options.trigger, &vars_json)?;
        info!(pipeline = name, run_id = %run_id, trigger = %options.trigger, "Run started");

        let (outcome, steps) = match self.plan_steps(pipeline, options, &inputs, Mode::Run, metrics).await {
            Ok(planned) => {
                let outcome = self.execute(pipeline, options, &inputs, &planned).await;
                (outcome, step_rows(pipeline, &planned))
            }
            Err(err) => (Err(err), Vec::new()),
        };
        let _ = std::fs::remove_dir_all(&inputs.scratch_dir);
        let duration_ms = clock.elapsed().as_millis() as u64;
        match outcome {
            Ok(state) => {
                self.store.finish_run(&run_id, name, Ok(&state), &steps)?;
                log_summary(&steps);
                info!(pipeline = name, run_id = %run_id, duration_ms, "Pipeline finished in {duration_ms} ms");
                Ok(RunReport { run_id, steps, duration_ms, state })
            }
            Err(err) => {
                let message = err.to_string();
                self.store.finish_run(&run_id, name, Err((&message, err.step())), &steps)?;
                warn!(pipeline = name, run_id = %run_id, stage = err.step().unwrap_or("-"), "Pipeline failed: {message}");
                Err(err)
            }
        }
    }

    fn inputs(&self, pipeline: &Pipeline, options: &RunOptions, run_id: &str) -> Result<RunInputs, EngineError> {
        let input_err = |message| EngineError::Input { pipeline: pipeline.name().to_string(), message };
        let variables = resolve_variables(pipeline, &options.variables).map_err(input_err)?;
        let stored = self.store.state(pipeline.name())?;
        let state = resolve_state(pipeline, &stored).map_err(input_err)?;
        Ok(RunInputs {
            run_id: run_id.to_string(),
            started: chrono::Utc::now(),
            variables,
            state,
            scratch_dir: options.scratch_root.join(run_id),
        })
    }

    /// Prepares every load, then commits them all or none; returns the state to record.
    async fn execute(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        planned: &Planned,
    ) -> Result<BTreeMap<String, TypedValue>, EngineError> {
        let name = pipeline.name();
        let loads = planned.sinks.iter().map(|(step, cx)| async {
            let input = step.kind.input().expect("load steps have an input");
            let df = planned.ctx.table(input.value.as_str()).await.map_err(|e| attribute(name, step.id(), e))?;
            info!(pipeline = name, step = step.id(), "Starting load");
            let pending = self.connectors.sink(step, cx, df).await.map_err(|e| attribute(name, step.id(), e))?;
            cx.counters.set_rows(pending.rows());
            Ok::<_, EngineError>((step.id(), pending))
        });
        let results = futures::future::join_all(loads).await;
        let mut ready: Vec<(&str, Box<dyn PendingLoad>)> = Vec::new();
        let mut failure: Option<EngineError> = None;
        for result in results {
            match result {
                Ok(p) => ready.push(p),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if failure.is_none() {
            failure = check_invalid_budgets(pipeline, &planned.metrics).err();
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

    async fn plan_steps(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        inputs: &RunInputs,
        mode: Mode,
        metrics: RunMetrics,
    ) -> Result<Planned, EngineError> {
        let name = pipeline.name().to_string();
        let ctx = session(pipeline, options)?;
        let dag = Dag::build(pipeline, |step| match &step.kind {
            StepKind::Sql(sql) => transforms::sql_inputs(&ctx, &sql.query.value).map_err(|e| {
                Diagnostic::new(Pos::of(&sql.query), format!("step `{}`: SQL does not parse: {e}", step.id()))
            }),
            _ => Ok(Vec::new()),
        })
        .map_err(|diagnostics| EngineError::Spec { pipeline: name.clone(), diagnostics })?;
        let readers = dag.readers();
        let params = sql_params(&inputs.variables, &inputs.state);
        let templates = Arc::new(template_values(pipeline, inputs));
        let values: Arc<BTreeMap<String, TypedValue>> =
            Arc::new(inputs.variables.iter().chain(&inputs.state).map(|(k, v)| (k.clone(), v.clone())).collect());
        let connections = Arc::new(pipeline.connections.clone());
        let mut sinks = Vec::new();
        let mut actions = Vec::new();

        for id in &dag.order {
            let step = pipeline.step(id).expect("the DAG holds the pipeline's steps");
            let counters = Arc::new(match cursor_column(pipeline, id) {
                Some(column) => StepCounters::tracking_max(column),
                None => StepCounters::default(),
            });
            metrics.insert(id, counters.clone());
            let cx = StepContext {
                pipeline: name.clone(),
                step: id.clone(),
                run_id: inputs.run_id.clone(),
                base_dir: options.base_dir.clone(),
                scratch_dir: inputs.scratch_dir.clone(),
                batch_size: pipeline.settings.batch_size,
                retry: pipeline.settings.retry.clone(),
                on_error: step.on_error(),
                dry_run: options.dry_run,
                planning: mode == Mode::Plan,
                templates: templates.clone(),
                values: values.clone(),
                connections: connections.clone(),
                store: self.store.clone(),
                counters: counters.clone(),
            };
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
                Category::Extract => self.connectors.source(&ctx, step, &cx).await.map_err(plan_err)?,
                Category::Transform => plan_transform(&ctx, step, &params, cx).await.map_err(plan_err)?,
            };
            let table: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(StepTable::new(id, provider, counters));
            let table = if mode == Mode::Run && readers.get(id.as_str()).copied().unwrap_or(0) > 1 {
                materialize(&ctx, id, table, &inputs.scratch_dir).await.map_err(|e| attribute(&name, id, e))?
            } else {
                table
            };
            ctx.register_table(id.as_str(), table).map_err(plan_err)?;
        }
        // Actions run in file order, whatever the DAG's order.
        actions.sort_by_key(|(step, _): &(Step, StepContext)| pipeline.steps.iter().position(|s| s.id() == step.id()));
        Ok(Planned { ctx, dag, metrics, sinks, actions })
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
        StepKind::Map(spec) => transforms::map(input().await?, spec, params)?,
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
    let config = SessionConfig::new()
        .with_batch_size(pipeline.settings.batch_size)
        .with_information_schema(true);
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
            Some(StateUpdate::RunStartedAt) => Some(TypedValue::Timestamp(
                inputs.started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )),
            Some(StateUpdate::Max(target)) => {
                let step = target.value.split_once('.').map_or("", |(s, _)| s);
                let max = metrics.get(step).map(|c| c.max()).transpose().map_err(|e| attribute(pipeline.name(), step, e))?;
                match max.flatten() {
                    Some(scalar) => Some(typed_from_scalar(decl.value.ty, &scalar).map_err(|message| {
                        EngineError::Input { pipeline: pipeline.name().to_string(), message: format!("state `{name}`: {message}") }
                    })?),
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

fn step_rows(pipeline: &Pipeline, planned: &Planned) -> Vec<StepMetricsRow> {
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
