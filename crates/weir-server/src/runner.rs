//! Starting runs: the per-pipeline limit (`settings.concurrency`, 1 by default: no overlap), the server-wide limit,
//! and `after:` dependencies, which start a pipeline once everything it waits for has succeeded since it last
//! started.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use weir_connectors::{Start, run_and_alert};
use weir_engine::{
    CancellationToken, DeadLetterFilter, DeadLetters, Engine, ReplayReport, RunMetrics, RunOptions, RunReport,
    StateStore,
};

use crate::metrics::Metrics;
use crate::project::{Entry, Project};
use crate::schedule::Fire;

/// How a run started by the server ended.
#[derive(Debug)]
pub struct Finished {
    pub pipeline: String,
    pub result: Result<RunReport, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("no pipeline `{0}` in this project")]
    Unknown(String),
    #[error("pipeline `{pipeline}` has {running} run(s) going, its limit (settings.concurrency)")]
    Busy { pipeline: String, running: usize },
}

/// A run started and waiting for a server-wide slot (`--max-runs`).
#[derive(Debug, Clone)]
pub struct Queued {
    pub run_id: String,
    pub pipeline: String,
    pub trigger: String,
    pub queued_at: DateTime<Utc>,
    since: Instant,
}

impl Queued {
    pub fn waited(&self) -> std::time::Duration {
        self.since.elapsed()
    }
}

#[derive(Debug, Default)]
struct Book {
    /// The runs going in this instance, by id: their pipeline and what cancels them.
    live: HashMap<String, (String, CancellationToken)>,
    /// The live runs still waiting for a slot, by id.
    queued: HashMap<String, Queued>,
    /// How many runs each pipeline has live: what `live` holds, counted, since a trigger asks for every fire.
    per_pipeline: HashMap<String, usize>,
    started: HashMap<String, DateTime<Utc>>,
    succeeded: HashMap<String, DateTime<Utc>>,
}

impl Book {
    fn running(&self, pipeline: &str) -> usize {
        self.per_pipeline.get(pipeline).copied().unwrap_or(0)
    }

    fn admit(&mut self, run_id: &str, pipeline: &str, cancel: CancellationToken) {
        self.live.insert(run_id.to_string(), (pipeline.to_string(), cancel));
        *self.per_pipeline.entry(pipeline.to_string()).or_default() += 1;
    }

    fn release(&mut self, run_id: &str) {
        self.queued.remove(run_id);
        let Some((pipeline, _)) = self.live.remove(run_id) else { return };
        if let Some(n) = self.per_pipeline.get_mut(&pipeline) {
            *n -= 1;
            if *n == 0 {
                self.per_pipeline.remove(&pipeline);
            }
        }
    }
}

pub struct Runner {
    engine: Engine,
    project: RwLock<Project>,
    state_dir: PathBuf,
    slots: Arc<Semaphore>,
    max_runs: usize,
    book: Mutex<Book>,
    pub metrics: Metrics,
    shutdown: CancellationToken,
}

impl Runner {
    pub fn new(
        project: Project,
        store: Arc<StateStore>,
        state_dir: PathBuf,
        max_runs: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            engine: Engine::new(Arc::new(weir_connectors::Builtin), store),
            project: RwLock::new(project),
            state_dir,
            slots: Arc::new(Semaphore::new(max_runs)),
            max_runs,
            book: Mutex::new(Book::default()),
            metrics: Metrics::default(),
            shutdown,
        }
    }

    pub fn store(&self) -> &Arc<StateStore> {
        self.engine.store()
    }

    pub fn project(&self) -> std::sync::RwLockReadGuard<'_, Project> {
        self.project.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn project_mut(&self) -> std::sync::RwLockWriteGuard<'_, Project> {
        self.project.write().unwrap_or_else(|p| p.into_inner())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs of `pipeline` going now.
    pub fn running(&self, pipeline: &str) -> usize {
        self.book().running(pipeline)
    }

    /// The runs waiting for a server-wide slot, longest waiting first.
    pub fn queue(&self) -> Vec<Queued> {
        let mut queued: Vec<Queued> = self.book().queued.values().cloned().collect();
        queued.sort_by_key(|q| q.since);
        queued
    }

    /// The server-wide limit of runs going at once, and the slots free now.
    pub fn slots(&self) -> (usize, usize) {
        (self.max_runs, self.slots.available_permits())
    }

    /// Starts a run of `pipeline` unless it is at its limit; it waits for a server-wide slot before it begins.
    pub fn trigger(
        self: &Arc<Self>,
        pipeline: &str,
        trigger: &str,
        variables: BTreeMap<String, String>,
        payload: Option<Arc<serde_json::Value>>,
    ) -> Result<JoinHandle<Finished>, TriggerError> {
        self.start(pipeline, trigger, variables, payload, None)
    }

    /// Starts the runs of schedules' fires, each once across every instance sharing the store: the fires are
    /// claimed in the store first (one transaction), which also refuses a fire while its pipeline has its limit of
    /// runs going on any instance. A refused fire is skipped, as the misfire policy `skip` would.
    pub fn fire(self: &Arc<Self>, fires: Vec<Fire>) {
        let shared = self.store().is_shared();
        let wanted: Vec<(Fire, usize, String)> = {
            let project = self.project();
            fires
                .into_iter()
                .filter_map(|fire| {
                    let limit = project.pipelines.get(&fire.pipeline)?.pipeline.settings.concurrency;
                    // With others sharing the store, a fire goes to an instance that can start it now, not one that
                    // would hold it while waiting for a slot.
                    if shared && (self.slots.available_permits() == 0 || self.running(&fire.pipeline) >= limit) {
                        debug!(pipeline = %fire.pipeline, "No free slot here; another instance may take the fire");
                        return None;
                    }
                    let due = weir_engine::state_store::timestamp(fire.due);
                    Some((fire, limit, due))
                })
                .collect()
        };
        let claims: Vec<(&str, &str, usize)> =
            wanted.iter().map(|(f, limit, due)| (f.pipeline.as_str(), due.as_str(), *limit)).collect();
        let clock = Instant::now();
        let claimed = match self.store().claim_fires(&claims) {
            Ok(claimed) => claimed,
            Err(e) => {
                warn!("Cannot claim {} scheduled fire(s) in the state store: {e}", claims.len());
                return;
            }
        };
        let claiming = clock.elapsed();
        for ((fire, _, due), claimed) in wanted.iter().zip(claimed) {
            if !claimed {
                debug!(pipeline = %fire.pipeline, %due, "Fire taken by another instance, or the pipeline is at its limit");
                continue;
            }
            self.metrics.schedule_lag((Utc::now() - fire.due).to_std().unwrap_or_default().as_secs_f64());
            if let Err(e) = self.trigger(&fire.pipeline, "schedule", BTreeMap::new(), None) {
                warn!(pipeline = %fire.pipeline, "Scheduled run skipped: {e}");
            }
        }
        debug!(
            fires = claims.len(),
            "Claimed {} fire(s) in {} ms and queued their runs in {} ms",
            claims.len(),
            claiming.as_millis(),
            (clock.elapsed() - claiming).as_millis()
        );
    }

    /// Resumes the pipelines' runs whose process died (`weir run` or an earlier `weir serve` killed, a machine
    /// that lost power, an instance sharing the store that stopped heartbeating): each is claimed, so one
    /// instance resumes it, and goes on from its last checkpoint.
    pub fn resume_interrupted(self: &Arc<Self>) {
        // A run fed by a webhook request cannot be resumed without it; its sender, never acknowledged, sends again.
        let names: Vec<(String, usize)> = self
            .project()
            .pipelines
            .iter()
            .filter(|(_, e)| !e.pipeline.steps.iter().any(|s| matches!(s.kind, weir_spec::StepKind::ReadWebhook(_))))
            .map(|(n, e)| (n.clone(), e.pipeline.settings.concurrency))
            .collect();
        for (name, limit) in names {
            let Ok(found) = self.store().resumable_run(&name, None) else { continue };
            if self.running(&name) >= limit {
                continue;
            }
            // The claim takes only a run that was interrupted (not one that failed on its own), and only once.
            match self.store().claim_interrupted(&found.run_id) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(pipeline = %name, "Cannot claim run {}: {e}", found.run_id);
                    continue;
                }
            }
            info!(pipeline = %name, run_id = %found.run_id, "Resuming interrupted run {}", found.run_id);
            if let Err(e) = self.start(&name, "resume", BTreeMap::new(), None, Some(found.run_id.clone())) {
                warn!(pipeline = %name, "Cannot resume: {e}");
                let released = format!("interrupted: not resumed by {} ({e})", self.store().instance());
                if let Err(e) = self.store().finish_run(&found.run_id, &name, Err((&released, None)), &[]) {
                    warn!(pipeline = %name, "Cannot release run {}: {e}", found.run_id);
                }
            }
        }
    }

    fn start(
        self: &Arc<Self>,
        pipeline: &str,
        trigger: &str,
        variables: BTreeMap<String, String>,
        payload: Option<Arc<serde_json::Value>>,
        resume: Option<String>,
    ) -> Result<JoinHandle<Finished>, TriggerError> {
        let entry = self
            .project()
            .pipelines
            .get(pipeline)
            .cloned()
            .ok_or_else(|| TriggerError::Unknown(pipeline.to_string()))?;
        let run_id = resume.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let cancel = self.shutdown.child_token();
        {
            let mut book = self.book();
            let running = book.running(pipeline);
            if running >= entry.pipeline.settings.concurrency {
                return Err(TriggerError::Busy { pipeline: pipeline.to_string(), running });
            }
            book.admit(&run_id, pipeline, cancel.clone());
            book.started.insert(pipeline.to_string(), Utc::now());
            let queued = Queued {
                run_id: run_id.clone(),
                pipeline: pipeline.to_string(),
                trigger: trigger.to_string(),
                queued_at: Utc::now(),
                since: Instant::now(),
            };
            book.queued.insert(run_id.clone(), queued);
        }
        self.metrics.run_started(pipeline);
        info!(pipeline, trigger, run_id, "Triggered {pipeline} ({trigger})");
        let runner = self.clone();
        let trigger = trigger.to_string();
        Ok(tokio::spawn(async move {
            let _slot = runner.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            if let Some(queued) = runner.book().queued.remove(&run_id) {
                runner.metrics.queue_wait(queued.waited().as_secs_f64());
            }
            let options = RunOptions {
                trigger,
                variables,
                payload,
                cancel,
                run_id: Some(run_id.clone()),
                ..runner.options(&entry)
            };
            let metrics = RunMetrics::default();
            let clock = Instant::now();
            let start = resume.as_deref().map_or(Start::New, |run_id| Start::Resume(Some(run_id)));
            let (result, outcome) =
                run_and_alert(&runner.engine, &entry.pipeline, &options, metrics.clone(), start).await;
            let status = if result.is_ok() { "success" } else { "failed" };
            runner.metrics.run_finished(
                &entry.pipeline.name.value,
                status,
                clock.elapsed().as_secs_f64(),
                &metrics,
                outcome.records_set_aside,
            );
            let name = entry.pipeline.name().to_string();
            runner.finished(&name, &run_id, result.is_ok());
            Finished { pipeline: name, result: result.map_err(|e| e.to_string()) }
        }))
    }

    fn options(&self, entry: &Entry) -> RunOptions {
        RunOptions {
            trigger: "api".into(),
            variables: BTreeMap::new(),
            memory_limit: None,
            base_dir: entry.dir(),
            scratch_root: self.state_dir.join("tmp"),
            dry_run: false,
            packages: self.state_dir.join("packages"),
            cancel: self.shutdown.child_token(),
            record_state: true,
            payload: None,
            run_id: None,
            engine: None,
        }
    }

    /// Cancels run `run_id` if it is going in this instance (its open batch rolls back; it is recorded failed,
    /// "cancelled"); false when it is not.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.book().live.get(run_id) {
            Some((_, token)) => {
                info!(run_id, "Cancelling run {run_id}");
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Where `pipeline` keeps its dead letters.
    pub fn dead_letters(&self, pipeline: &str) -> anyhow::Result<Arc<dyn DeadLetters>> {
        let entry = self
            .project()
            .pipelines
            .get(pipeline)
            .cloned()
            .ok_or_else(|| TriggerError::Unknown(pipeline.to_string()))?;
        Ok(self.engine.dead_letters(&entry.pipeline, &entry.dir())?)
    }

    /// Replays the dead letters of one step of `pipeline` (see `weir dlq replay`).
    pub async fn replay(&self, pipeline: &str, step: &str) -> anyhow::Result<ReplayReport> {
        let entry = self
            .project()
            .pipelines
            .get(pipeline)
            .cloned()
            .ok_or_else(|| TriggerError::Unknown(pipeline.to_string()))?;
        let filter = DeadLetterFilter { step: Some(step.to_string()), ..DeadLetterFilter::default() };
        let letters = self.dead_letters(pipeline)?.matching(pipeline, &filter).map_err(anyhow::Error::from_boxed)?;
        let _slot = self.slots.acquire().await?;
        Ok(self.engine.replay(&entry.pipeline, &self.options(&entry), RunMetrics::default(), step, &letters).await?)
    }

    /// Books a finished run and starts the pipelines waiting on it whose every dependency has now succeeded
    /// since they last started.
    fn finished(self: &Arc<Self>, pipeline: &str, run_id: &str, succeeded: bool) {
        let ready: Vec<String> = {
            let mut book = self.book();
            book.release(run_id);
            if !succeeded {
                return;
            }
            book.succeeded.insert(pipeline.to_string(), Utc::now());
            let project = self.project();
            project
                .pipelines
                .iter()
                .filter_map(|(name, entry)| {
                    let waits = entry.pipeline.triggers.iter().find(|t| t.after.iter().any(|a| a.value == pipeline))?;
                    let since = book.started.get(name);
                    let all_done = waits
                        .after
                        .iter()
                        .all(|a| book.succeeded.get(&a.value).is_some_and(|done| since.is_none_or(|s| done > s)));
                    all_done.then(|| name.clone())
                })
                .collect()
        };
        for name in ready {
            if let Err(e) = self.trigger(&name, &format!("after {pipeline}"), BTreeMap::new(), None) {
                warn!(pipeline = %name, "Not started after {pipeline}: {e}");
            }
        }
    }
}
