//! What must hold before anything commits: data-quality checks and `max_invalid` budgets.

use super::*;

impl Run<'_> {
    /// Runs the pipeline's data-quality checks over the planned step tables and records how each went; fails with
    /// the first failed `error` check.
    pub(super) async fn check_quality(&self, planned: &Planned) -> Result<(), EngineError> {
        let Run { engine, pipeline, inputs, .. } = *self;
        if pipeline.checks.is_empty() {
            return Ok(());
        }
        let params = sql_params(&inputs.variables, &inputs.state);
        let results =
            run_checks(pipeline, &planned.ctx, &params).await.map_err(|e| attribute(pipeline.name(), "-", e))?;
        engine.store.record_checks(&inputs.run_id, &results)?;
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

pub(super) fn check_invalid_budgets(pipeline: &Pipeline, metrics: &RunMetrics) -> Result<(), EngineError> {
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
