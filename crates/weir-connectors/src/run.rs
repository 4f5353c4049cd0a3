//! The one way a pipeline is run by `weir run`, `weir backfill` and `weir serve`: the engine runs it (and records
//! it in the state store), then its alerts are sent. Keeping the three on one path is what makes a failed
//! backfill or scheduled run alert like a manual one.

use std::time::Instant;

use weir_engine::{Engine, EngineError, RunMetrics, RunOptions, RunReport};
use weir_spec::Pipeline;

use crate::alerts::{RunOutcome, send_alerts};

/// How a run starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// A new run.
    New,
    /// Going on with an earlier run from its checkpoints: that run, or the pipeline's latest unfinished one.
    Resume(Option<&'a str>),
}

/// Runs `pipeline` as `start` says, then sends its alerts (none for a dry run, which commits nothing). Returns the
/// run's result and what the alerts reported of it.
pub async fn run_and_alert(
    engine: &Engine,
    pipeline: &Pipeline,
    options: &RunOptions,
    metrics: RunMetrics,
    start: Start<'_>,
) -> (Result<RunReport, EngineError>, RunOutcome) {
    let clock = Instant::now();
    let result = match start {
        Start::New => engine.run(pipeline, options, metrics.clone()).await,
        Start::Resume(run_id) => engine.resume(pipeline, options, metrics.clone(), run_id).await,
    };
    let outcome = RunOutcome::of(pipeline, &metrics, &result, clock.elapsed().as_millis() as u64);
    if !options.dry_run {
        send_alerts(pipeline, &outcome).await;
    }
    (result, outcome)
}
