//! `weir serve`: one process that runs a project's pipelines on their triggers (cron, intervals, webhooks, other
//! pipelines), serves the JSON API and `/metrics`, and reloads changed pipeline files.

mod access;
mod hooks;
mod http;
mod limit;
mod metrics;
mod project;
mod runner;
mod schedule;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tracing::{info, warn};
use weir_engine::{CancellationToken, LogSink, StateLocation, StateStore};

pub use access::{Role, TokenError, Tokens, file_entry as token_file_entry, generate as generate_token};
pub use hooks::{Refused, authenticate};
pub use project::Project;
pub use runner::{Finished, Runner, TriggerError};
pub use schedule::{Fire, Schedule, Scheduler};
pub use tls::TlsFiles;

/// How to serve.
#[derive(Debug)]
pub struct Config {
    /// The directory of pipeline files.
    pub project: PathBuf,
    /// Where scratch files and load packages live (default `<project>/.weir`); instances sharing a store must
    /// share this directory too, so one can resume another's staged loads.
    pub state_dir: PathBuf,
    /// The state store: a SQLite file (default `<state_dir>/state.db`) or a PostgreSQL database that several
    /// instances share.
    pub state: StateLocation,
    /// How long an instance of a shared store may miss heartbeats before its runs are taken over.
    pub lease: Duration,
    /// Where the API, the dashboard and `/metrics` are served, and the webhooks unless `hooks_listen` is given.
    pub listen: SocketAddr,
    /// A listener for the webhooks alone, so they can face the network while the API stays on loopback.
    pub hooks_listen: Option<SocketAddr>,
    /// Serve both listeners over TLS with this certificate.
    pub tls: Option<TlsFiles>,
    /// The API tokens; with none, anyone who reaches `listen` may do everything, so `listen` must be a loopback
    /// address unless `insecure_no_auth`.
    pub tokens: Tokens,
    pub insecure_no_auth: bool,
    /// `/metrics` answers without a token.
    pub open_metrics: bool,
    /// Runs at once across all pipelines.
    pub max_runs: usize,
    /// How often pipeline files are checked for changes.
    pub reload_every: Duration,
    /// Where the runs' log lines go; the server attaches its store.
    pub run_logs: LogSink,
}

/// Serves until `shutdown` is cancelled, then lets running runs stop (they roll back their open batch).
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.tokens.is_empty() && !config.listen.ip().is_loopback() && !config.insecure_no_auth {
        anyhow::bail!(
            "refusing to serve the API on {} without tokens: anyone who can reach it could start and cancel runs and \
             read dead letters. Give tokens (--tokens FILE or WEIR_API_TOKENS; `weir token` makes one), listen on \
             127.0.0.1, or pass --insecure-no-auth",
            config.listen
        );
    }
    let project =
        Project::load(&config.project).with_context(|| format!("cannot read {}", config.project.display()))?;
    info!(
        pipelines = project.pipelines.len(),
        broken = project.broken.len(),
        "Loaded {} pipelines",
        project.pipelines.len()
    );
    let store = Arc::new(
        StateStore::at(&config.state).with_context(|| format!("cannot open the state store {}", config.state))?,
    );
    info!(
        instance = store.instance(),
        "State store: {} ({})",
        config.state,
        if store.is_shared() { "shared" } else { "embedded" }
    );
    config.run_logs.attach(store.clone());
    let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
    let api =
        std::net::TcpListener::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let hooks = config
        .hooks_listen
        .map(|addr| std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}")))
        .transpose()?;

    let scheduler = Arc::new(Mutex::new(build_scheduler(&project, &store)));
    let runner =
        Arc::new(Runner::new(project, store.clone(), config.state_dir.clone(), config.max_runs, shutdown.clone()));
    runner.resume_interrupted();
    tokio::spawn(takeover_loop(runner.clone(), config.lease, shutdown.clone()));
    spawn_scheduler(runner.clone(), scheduler.clone(), shutdown.clone()).context("cannot start the scheduler")?;
    tokio::spawn(reload_loop(
        runner.clone(),
        scheduler.clone(),
        config.project.clone(),
        config.reload_every,
        shutdown.clone(),
    ));
    if let (Some(files), Some(tls)) = (config.tls.clone(), tls.clone()) {
        tokio::spawn(files.watch(tls, shutdown.clone()));
    }

    if config.tokens.is_empty() {
        warn!("The API has no tokens: anyone who can reach {} may start runs and read dead letters", config.listen);
    } else {
        info!(tokens = config.tokens.len(), "The API takes {} token(s)", config.tokens.len());
    }
    let state = http::AppState {
        runner,
        scheduler,
        access: Arc::new(access::Access::new(config.tokens, config.open_metrics, tls.is_some())),
        replays: Default::default(),
        hook_requests: Default::default(),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("Serving on {scheme}://{}", api.local_addr()?);
    let mut served =
        vec![tokio::spawn(listen(api, tls.clone(), http::router(state.clone(), hooks.is_none()), shutdown.clone()))];
    if let Some(hooks) = hooks {
        info!("Serving webhooks on {scheme}://{}", hooks.local_addr()?);
        served.push(tokio::spawn(listen(hooks, tls, http::hooks_router(state), shutdown.clone())));
    }
    for listener in served {
        listener.await??;
    }
    Ok(())
}

/// Serves `app` on `listener` until `shutdown`, over TLS when `tls` is given; requests going finish first.
async fn listen(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    app: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        }
    });
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum_server::from_tcp(listener)?.handle(handle).serve(app).await?,
        Some(tls) => axum_server::tls_rustls::from_tcp_rustls(listener, tls)?.handle(handle).serve(app).await?,
    }
    Ok(())
}

fn build_scheduler(project: &Project, store: &StateStore) -> Scheduler {
    let last_fire = |pipeline: &str| -> Option<DateTime<Utc>> {
        let text = store.last_fire(pipeline).ok().flatten()?;
        DateTime::parse_from_rfc3339(&text).ok().map(|t| t.to_utc())
    };
    Scheduler::new(project, Utc::now(), last_fire)
}

/// Fires due schedules on a thread of its own, sleeping until the next is due and waking at least every second
/// to notice reloads and shutdown. Claiming fires is a blocking state-store transaction, kept off the workers of
/// the async runtime that the runs use; a claimed fire's run waits for a slot in the queue (`/api/queue`).
fn spawn_scheduler(
    runner: Arc<Runner>,
    scheduler: Arc<Mutex<Scheduler>>,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new().name("weir-scheduler".into()).spawn(move || {
        // Runs are spawned onto the server's runtime.
        let _entered = runtime.enter();
        while !shutdown.is_cancelled() {
            let now = Utc::now();
            let (fires, next) = {
                let mut s = scheduler.lock().unwrap_or_else(|p| p.into_inner());
                (s.due(now), s.next_due())
            };
            if !fires.is_empty() {
                runner.fire(fires);
            }
            let wait =
                next.and_then(|n| (n - Utc::now()).to_std().ok()).unwrap_or(Duration::ZERO).min(Duration::from_secs(1));
            std::thread::sleep(wait.max(Duration::from_millis(5)));
        }
    })
}

/// Marks the runs of processes and instances that are gone as interrupted, and resumes them here: a `weir run`
/// killed while this server runs, or, in a shared store, the runs of an instance that stopped heartbeating.
async fn takeover_loop(runner: Arc<Runner>, lease: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(weir_engine::state_store::postgres::HEARTBEAT * 2) => {}
            () = shutdown.cancelled() => return,
        }
        match runner.store().mark_abandoned_runs(lease) {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => {
                warn!(runs = ?gone, "Found {} abandoned run(s)", gone.len());
                runner.resume_interrupted();
            }
            Err(e) => warn!("Cannot check for abandoned runs: {e}"),
        }
    }
}

/// Re-reads changed pipeline files; a valid change replaces the pipeline and its schedules, an invalid one is
/// logged and the previous version stays.
async fn reload_loop(
    runner: Arc<Runner>,
    scheduler: Arc<Mutex<Scheduler>>,
    dir: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let changed = match runner.project_mut().reload(&dir) {
            Ok(changed) => changed,
            Err(e) => {
                warn!("Cannot re-read {}: {e}", dir.display());
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
