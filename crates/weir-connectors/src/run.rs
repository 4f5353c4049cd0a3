//! The one way a pipeline is run by `weir run`, `weir backfill` and `weir serve`: the engine runs it (and records
//! it in the state store), with OpenLineage events before and after when configured, then its alerts are sent.
//! Keeping the three on one path is what makes a failed backfill or scheduled run alert (and tell a catalog) like
//! a manual one.

use std::time::Instant;

use weir_engine::{Engine, EngineError, RunMetrics, RunOptions, RunReport};
use weir_spec::Pipeline;

use crate::alerts::{RunOutcome, send_alerts};
use crate::lineage::{Ending, Lineage};

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
    // A dry run commits nothing, so it tells catalogs nothing either.
    let lineage = Lineage::from_env().filter(|_| !options.dry_run);
    let mut options = options.clone();
    let run_id = match start {
        Start::New => Some(options.run_id.get_or_insert_with(|| uuid::Uuid::now_v7().to_string()).clone()),
        Start::Resume(run_id) => engine.store().resumable_run(pipeline.name(), run_id).ok().map(|r| r.run_id),
    };
    if let (Some(lineage), Some(run_id)) = (&lineage, &run_id) {
        lineage.start(pipeline, &options.base_dir, run_id).await;
    }
    let result = match start {
        Start::New => engine.run(pipeline, &options, metrics.clone()).await,
        Start::Resume(run_id) => engine.resume(pipeline, &options, metrics.clone(), run_id).await,
    };
    if let (Some(lineage), Some(run_id)) = (&lineage, &run_id) {
        let message = result.as_ref().err().map(ToString::to_string);
        let ending = message.as_deref().map_or(Ending::Complete, Ending::Fail);
        lineage.end(pipeline, &options.base_dir, run_id, ending).await;
    }
    let outcome = RunOutcome::of(pipeline, &metrics, &result, clock.elapsed().as_millis() as u64);
    if !options.dry_run {
        send_alerts(pipeline, &outcome).await;
    }
    (result, outcome)
}
