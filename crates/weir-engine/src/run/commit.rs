//! All-or-nothing: every load of a run is prepared, then all are committed or all aborted.

use super::*;

impl Run<'_> {
    /// Prepares every load, then commits them all or none; returns the state to record.
    pub(crate) async fn execute(&self, planned: &Planned) -> Result<BTreeMap<String, TypedValue>, EngineError> {
        let Run { engine, pipeline, options, inputs } = *self;
        let name = pipeline.name();
        planned.arm_fan_outs(name).await?;
        let loads = planned.sinks.iter().map(|(step, cx)| async {
            let input = step.kind.input().expect("load steps have an input").value.as_str();
            info!(pipeline = name, step = step.id(), "Starting load");
            inputs.enter(step.id());
            let load = || async { engine.connectors.sink(step, cx, planned.ctx.table(input).await?).await };
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
            failure = self.check_quality(planned).await.err();
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
            let changes = pending.changes();
            pending.commit().await.map_err(|e| attribute(name, step, e))?;
            planned.metrics.get(step).expect("every planned step has counters").add_changes(changes);
        }
        for (step, cx) in &planned.actions {
            let rows = engine.connectors.action(step, cx).await.map_err(|e| attribute(name, step.id(), e))?;
            cx.counters.set_rows(rows);
        }
        next_state(pipeline, inputs, &planned.metrics)
    }
}
