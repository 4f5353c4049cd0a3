//! Batched loads (`settings.commit_every`): stage every input into the load package, then load it batch by
//! batch with checkpoints, resuming after the last committed batch.

use super::*;

impl Run<'_> {
    /// A run with `settings.commit_every`: stage every load's input into the run's load package (unless a resumed
    /// run staged it already), then load it batch by batch; returns the state to record and the step metrics.
    pub(super) async fn execute_batched(
        &self,
        metrics: RunMetrics,
        every: u64,
    ) -> (Result<BTreeMap<String, TypedValue>, EngineError>, Vec<StepMetricsRow>) {
        let Run { pipeline, options, inputs, .. } = *self;
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
                match self.stage(&metrics, &dir, every).await {
                    Ok(manifest) => manifest,
                    Err((err, steps)) => return (Err(err), steps),
                }
            }
            Err(e) => return (Err(attribute(name, "-", e)), Vec::new()),
        };
        let loaded = self.load_package(&metrics, &dir, &manifest).await;
        let Manifest { state, mut steps, .. } = manifest;
        for row in steps.iter_mut().filter(|r| r.category == "load") {
            row.retries = metrics.get(&row.step).map_or(0, |c| c.retries());
        }
        (loaded.map(|()| state), steps)
    }

    /// Plans the pipeline and streams every load's input into parts; the manifest, written last, records the
    /// state and metrics the run ends with.
    pub(super) async fn stage(
        &self,
        metrics: &RunMetrics,
        dir: &std::path::Path,
        every: u64,
    ) -> Result<Manifest, (EngineError, Vec<StepMetricsRow>)> {
        let Run { pipeline, inputs, .. } = *self;
        let name = pipeline.name();
        let planned = self.plan_steps(Mode::Run, metrics.clone(), None).await.map_err(|e| (e, Vec::new()))?;
        planned.arm_fan_outs(name).await.map_err(|e| (e, Vec::new()))?;
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
            None => self.check_quality(&planned).await,
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
    pub(super) async fn load_package(
        &self,
        metrics: &RunMetrics,
        dir: &std::path::Path,
        manifest: &Manifest,
    ) -> Result<(), EngineError> {
        let Run { engine, pipeline, .. } = *self;
        let shared = Shared::new(*self, Mode::Run)?;
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
                self.load_staged(step, &cx, session, dir, parts)
                    .await
                    .map_err(|e| attribute(pipeline.name(), step.id(), e))
            }
        });
        if let (_, Some(err)) = split(futures::future::join_all(loads).await) {
            return Err(err);
        }
        for step in by_category(Category::Action) {
            let cx = shared.context(step, Arc::default());
            engine.connectors.action(step, &cx).await.map_err(|e| attribute(pipeline.name(), step.id(), e))?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn load_staged(
        &self,
        step: &Step,
        cx: &StepContext,
        session: &SessionContext,
        dir: &std::path::Path,
        parts: &[u64],
    ) -> datafusion::error::Result<()> {
        let Run { engine, pipeline, inputs, .. } = *self;
        let id = step.id();
        let total: u64 = parts.iter().sum();
        inputs.enter(id);
        if !engine.connectors.loads_in_batches(step, cx) {
            if engine.store.checkpoint(&cx.run_id, id).map_err(external)? == parts.len() as u64 {
                return Ok(());
            }
            let path = format!("{}/", dir.join(id).display());
            let input = session.read_parquet(path, ParquetReadOptions::default()).await?;
            let pending = engine.connectors.sink(step, cx, input).await?;
            let changes = pending.changes();
            pending.commit().await?;
            cx.counters.add_changes(changes);
            engine.store.set_checkpoint(&cx.run_id, id, parts.len() as u64, total).map_err(external)?;
            info!(pipeline = pipeline.name(), step = id, rows = total, "Load complete: {total} rows");
            return Ok(());
        }
        let done = engine.connectors.committed_batches(step, cx).await? as usize;
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
                let pending = engine.connectors.sink(step, &cx, input).await?;
                let changes = pending.changes();
                pending.commit().await?;
                cx.counters.add_changes(changes);
                Ok(())
            })
            .await?;
            rows_before += rows;
            engine.store.set_checkpoint(&cx.run_id, id, index as u64 + 1, rows_before).map_err(external)?;
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
pub(super) fn load_retry(pipeline: &Pipeline, step: &Step) -> weir_spec::Retry {
    let own = match &step.kind {
        StepKind::WriteDb(spec) => spec.retry.clone(),
        _ => None,
    };
    own.or_else(|| pipeline.settings.retry.clone()).unwrap_or_default()
}

/// The steps a retry of `load` as a whole runs again (the load and what it reads, back to the materialized steps,
/// which are read from their scratch copy), if running them again is harmless: none may set records aside
/// (`on_error` other than `fail`, which `validate` is by default), or those would be kept twice, and none may be
/// streamed to several readers, which each read once. `None` when a retry would repeat such a side effect.
pub(super) fn rereadable(pipeline: &Pipeline, planned: &Planned, load: &str) -> Option<Vec<String>> {
    let mut upstream = Vec::new();
    let mut pending = vec![load.to_string()];
    while let Some(id) = pending.pop() {
        if planned.materialized.contains(&id) || upstream.contains(&id) {
            continue;
        }
        if planned.fan_outs.contains_key(&id) || pipeline.step(&id)?.on_error() != OnError::Fail {
            return None;
        }
        pending.extend(planned.dag.inputs.get(&id).into_iter().flatten().cloned());
        upstream.push(id);
    }
    Some(upstream)
}
