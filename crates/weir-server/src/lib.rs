//! `weir serve`: one process that runs a project's pipelines on their triggers (cron, intervals, webhooks, other
//! pipelines), serves the JSON API and `/metrics`, and reloads changed pipeline files.

mod hooks;
mod http;
mod metrics;
mod project;
mod runner;
mod schedule;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tracing::{info, warn};
use weir_engine::{CancellationToken, LogSink, StateStore};

pub use hooks::{Refused, authenticate};
pub use project::Project;
pub use runner::{Finished, Runner, TriggerError};
pub use schedule::{Fire, Schedule, Scheduler};

/// How to serve.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory of pipeline files.
    pub project: PathBuf,
    /// Where the state store, scratch files and load packages live (default `<project>/.weir`).
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Runs at once across all pipelines.
    pub max_runs: usize,
    /// How often pipeline files are checked for changes.
    pub reload_every: Duration,
    /// Where the runs' log lines go; the server attaches its store.
    pub run_logs: LogSink,
}

/// Serves until `shutdown` is cancelled, then lets running runs stop (they roll back their open batch).
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let project = Project::load(&config.project).with_context(|| format!("cannot read {}", config.project.display()))?;
    info!(pipelines = project.pipelines.len(), broken = project.broken.len(), "Loaded {} pipelines", project.pipelines.len());
    let store = Arc::new(StateStore::open(&config.state_dir.join("state.db"))?);
    config.run_logs.attach(store.clone());
    let scheduler = Arc::new(Mutex::new(build_scheduler(&project, &store)));
    let runner = Arc::new(Runner::new(project, store.clone(), config.state_dir.clone(), config.max_runs, shutdown.clone()));
    runner.resume_interrupted();

    tokio::spawn(schedule_loop(runner.clone(), scheduler.clone(), shutdown.clone()));
    tokio::spawn(reload_loop(runner.clone(), scheduler.clone(), config.clone(), shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    info!("Serving on http://{}", listener.local_addr()?);
    let app = http::router(http::AppState { runner, scheduler });
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

fn build_scheduler(project: &Project, store: &StateStore) -> Scheduler {
    let last_fire = |pipeline: &str| -> Option<DateTime<Utc>> {
        let text = store.last_started(pipeline, "schedule").ok().flatten()?;
        DateTime::parse_from_rfc3339(&text).ok().map(|t| t.to_utc())
    };
    Scheduler::new(project, Utc::now(), last_fire)
}

/// Fires due schedules; sleeps until the next is due, waking at least every second to notice reloads.
async fn schedule_loop(runner: Arc<Runner>, scheduler: Arc<Mutex<Scheduler>>, shutdown: CancellationToken) {
    loop {
        let now = Utc::now();
        let (fires, next) = {
            let mut s = scheduler.lock().unwrap_or_else(|p| p.into_inner());
            (s.due(now), s.next_due())
        };
        for fire in fires {
            runner.metrics.schedule_lag((now - fire.due).to_std().unwrap_or_default().as_secs_f64());
            if let Err(e) = runner.trigger(&fire.pipeline, "schedule", Default::default(), None) {
                warn!(pipeline = %fire.pipeline, "Scheduled run skipped: {e}");
            }
        }
        let wait = next.and_then(|n| (n - Utc::now()).to_std().ok()).unwrap_or(Duration::ZERO).min(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Re-reads changed pipeline files; a valid change replaces the pipeline and its schedules, an invalid one is
/// logged and the previous version stays.
async fn reload_loop(runner: Arc<Runner>, scheduler: Arc<Mutex<Scheduler>>, config: Config, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.reload_every) => {}
            () = shutdown.cancelled() => return,
        }
        let changed = match runner.project_mut().reload(&config.project) {
            Ok(changed) => changed,
            Err(e) => {
                warn!("Cannot re-read {}: {e}", config.project.display());
                continue;
            }
        };
        if !changed.is_empty() {
            info!(pipelines = ?changed, "Reloaded {}", changed.join(", "));
            let rebuilt = build_scheduler(&runner.project(), runner.store());
            *scheduler.lock().unwrap_or_else(|p| p.into_inner()) = rebuilt;
        }
    }
}
