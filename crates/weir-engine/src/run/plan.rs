//! Planning: one DataFusion session per run, every step registered as a table named by its id.

use super::*;

impl Run<'_> {
    /// Plans every step into one session; with `replay`, only the steps it names, its input being its table.
    pub(crate) async fn plan_steps(
        &self,
        mode: Mode,
        metrics: RunMetrics,
        replay: Option<&ReplayInput>,
    ) -> Result<Planned, EngineError> {
        let Run { engine, pipeline, options, inputs } = *self;
        let name = pipeline.name().to_string();
        let ctx = session(pipeline, options)?;
        let dag = build_dag(&ctx, pipeline)?;
        // On a cluster, steps are planned in its session; loads and checks read them here (see `placement`).
        let cluster = match options.engine.as_ref().or(pipeline.settings.engine.as_ref()) {
            Some(at) if replay.is_none() => {
                Some(engine.connectors.cluster(at, cluster_state(&ctx)).map_err(|e| EngineError::Input {
                    pipeline: name.clone(),
                    message: format!("engine {at}: {}", crate::error::user_message(&e)),
                })?)
            }
            _ => None,
        };
        if let (Some(cluster), Mode::Run) = (&cluster, mode) {
            cluster
                .reach()
                .await
                .map_err(|e| EngineError::Input { pipeline: name.clone(), message: crate::error::user_message(&e) })?;
        }
        let planning = cluster.as_ref().map_or(&ctx, |c| c.context());
        let split =
            cluster.as_deref().map(|cluster| Split { cluster, here: &ctx, scratch_dir: &inputs.scratch_dir, mode });
        let mut readers = dag.readers();
        // A check reads its step too: a checked step that a load also reads is materialized, and runs once.
        for check in pipeline.checks.values() {
            *readers.entry(check.step.value.as_str()).or_default() += 1;
        }
        // Checks read after the loads, when a streamed step has gone by, and an extract step with an input
        // (`enrich_api`) reads it while planning, before streams start: what either reads is materialized.
        let eager =
            pipeline.steps.iter().filter(|s| s.kind.category() == Category::Extract).filter_map(|s| s.kind.input());
        let materialize_at = dag.upstream(
            pipeline.checks.values().map(|c| c.step.value.as_str()).chain(eager.map(|input| input.value.as_str())),
        );
        let params = sql_params(&inputs.variables, &inputs.state);
        let shared = Shared::new(*self, mode)?;
        let mut sinks = Vec::new();
        let mut actions = Vec::new();
        let mut materialized = BTreeSet::new();
        let mut fan_outs = BTreeMap::new();
        let mut placements = BTreeMap::new();

        for id in &dag.order {
            if replay.is_some_and(|r| !r.steps.contains(id) && *id != r.input) {
                continue;
            }
            let step = pipeline.step(id).expect("the DAG holds the pipeline's steps");
            let cursor = cursor_column(pipeline, id);
            let counters = Arc::new(match cursor {
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
                Category::Extract => engine.connectors.source(planning, step, &cx).await.map_err(plan_err)?,
                Category::Transform => plan_transform(planning, step, &params, cx.clone()).await.map_err(plan_err)?,
            };
            if let Some(split) = &split {
                let placement = place(split.cluster, step.kind.name(), provider.clone(), cursor).map_err(plan_err)?;
                if let (Placement::Here(why), Mode::Run) = (&placement, mode) {
                    info!(pipeline = %name, step = %id, "`{id}` runs here ({why}); its output goes to the cluster");
                }
                let provider = match (&placement, step.kind.category()) {
                    // Planned again in this machine's session, where the inputs the cluster runs are read from it.
                    (Placement::Here(_), Category::Transform) => {
                        plan_transform(&ctx, step, &params, cx).await.map_err(plan_err)?
                    }
                    _ => provider,
                };
                if split.register(id, &placement, provider, counters).await.map_err(|e| attribute(&name, id, e))? {
                    materialized.insert(id.clone());
                }
                placements.insert(id.clone(), placement);
                continue;
            }
            let table: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(StepTable::new(id, provider, counters));
            let table = match readers.get(id.as_str()).copied().unwrap_or(0) {
                n if n > 1 && mode == Mode::Run && materialize_at.contains(id) => {
                    info!(pipeline = %name, step = %id, "`{id}` has {n} readers, one outside the loads: written to scratch once");
                    materialized.insert(id.clone());
                    materialize(&ctx, id, table, &inputs.scratch_dir).await.map_err(|e| attribute(&name, id, e))?
                }
                n if n > 1 && mode == Mode::Run => {
                    info!(pipeline = %name, step = %id, "`{id}` has {n} readers: streamed to all of them at once");
                    let fan_out = Arc::new(FanOut::new(id, table, inputs.scratch_dir.clone()));
                    fan_outs.insert(id.clone(), fan_out.clone());
                    fan_out
                }
                _ => table,
            };
            ctx.register_table(id.as_str(), table).map_err(plan_err)?;
        }
        // Actions run in file order, whatever the DAG's order.
        actions.sort_by_key(|(step, _): &(Step, StepContext)| pipeline.steps.iter().position(|s| s.id() == step.id()));
        Ok(Planned { ctx, dag, metrics, materialized, fan_outs, placements, sinks, actions })
    }
}

pub(super) async fn plan_transform(
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

pub(super) fn session(pipeline: &Pipeline, options: &RunOptions) -> Result<SessionContext, EngineError> {
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

/// The state a cluster's session starts from: this run's configuration and runtime (its memory pool), with a
/// catalog of its own, since both sessions name the same steps.
fn cluster_state(ctx: &SessionContext) -> datafusion::execution::SessionState {
    datafusion::execution::SessionStateBuilder::new()
        .with_config(ctx.copied_config())
        .with_runtime_env(ctx.runtime_env())
        .with_default_features()
        .build()
}

/// The pipeline's steps and what each reads, with SQL steps' inputs taken from their parsed queries.
pub fn step_graph(pipeline: &Pipeline) -> Result<Dag, EngineError> {
    build_dag(&SessionContext::new(), pipeline)
}

pub(super) fn build_dag(ctx: &SessionContext, pipeline: &Pipeline) -> Result<Dag, EngineError> {
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

impl Planned {
    /// Plans every load's input once, so that each step streamed to several readers knows them all before any
    /// starts; then arms those steps.
    pub(crate) async fn arm_fan_outs(&self, pipeline: &str) -> Result<(), EngineError> {
        if self.fan_outs.is_empty() {
            return Ok(());
        }
        for (step, _) in &self.sinks {
            let input = step.kind.input().expect("load steps have an input").value.as_str();
            let planned = async { self.ctx.table(input).await?.create_physical_plan().await };
            planned.await.map_err(|e| attribute(pipeline, step.id(), e))?;
        }
        for fan_out in self.fan_outs.values() {
            fan_out.arm();
        }
        Ok(())
    }

    /// The DAG and, for every load, the physical plan that feeds it.
    pub async fn explain(&self) -> datafusion::error::Result<String> {
        let mut out = String::from("Steps in order (step <- inputs):\n");
        for id in &self.dag.order {
            let inputs = &self.dag.inputs[id];
            let place = match self.placements.get(id) {
                Some(Placement::Cluster) => "  [cluster]".to_string(),
                Some(Placement::Here(why)) => format!("  [here: {why}]"),
                None => String::new(),
            };
            if inputs.is_empty() {
                out.push_str(&format!("  {id}{place}\n"));
            } else {
                out.push_str(&format!("  {id} <- {}{place}\n", inputs.join(", ")));
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
