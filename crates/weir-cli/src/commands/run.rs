use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use weir_connectors::{Start, run_and_alert};
use weir_engine::{CancellationToken, DeadLetterFilter, Engine, RunMetrics, RunOptions};

use crate::load::{Loaded, load, parse_var};
use crate::progress::Progress;
use crate::{Global, LogFormat};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Set a variable: `--var name=value` (repeatable). Checked against the variable's type.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Cap on the memory of joins, sorts and aggregates, e.g. `512MB`; above it they spill to disk.
    #[arg(long, env = "WEIR_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Run everything, then roll every load back: the log shows the DDL and statements each load would run, its
    /// row counts and any error a real run would meet. Nothing is committed, no run or dead letter is recorded,
    /// and state does not move.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,
    /// A JSON file that `read_webhook` steps read as if it had been posted to the pipeline's webhook: to try a
    /// webhook pipeline without a server.
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Go on with a failed, killed or cancelled run: the latest, or the one whose id is given. With
    /// `settings.commit_every` it loads only the batches its destinations have not committed, from the load package
    /// the run staged; otherwise it runs again from the start. It keeps the run's id and variables.
    #[arg(long, value_name = "RUN_ID", num_args = 0..=1, default_missing_value = "", conflicts_with = "vars")]
    pub resume: Option<String>,
    /// Run the pipeline's extract and transform queries on a cluster, `ballista://host:port` (a `weir scheduler`
    /// with `weir executor`s): overrides `settings.engine`. Loads, and steps the cluster cannot run (database and
    /// API sources, steps that set rows aside), run on this machine; `weir explain --engine` shows which is which.
    #[arg(long, value_name = "ballista://HOST:PORT", env = "WEIR_ENGINE")]
    pub engine: Option<weir_spec::ClusterEngine>,
}

pub async fn run(global: &Global, args: RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.pipeline)?;
    let variables: BTreeMap<String, String> = args.vars.iter().map(|v| parse_var(v)).collect::<anyhow::Result<_>>()?;
    let memory_limit =
        args.memory_limit.as_deref().map(weir_engine::parse_bytes).transpose().map_err(anyhow::Error::msg)?;
    let payload = match &args.payload {
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let body: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
            Some(Arc::new(body))
        }
        None => None,
    };
    let options = RunOptions {
        variables,
        memory_limit,
        dry_run: args.dry_run,
        payload,
        engine: args.engine.clone(),
        ..options(global, &loaded)
    };
    let store = loaded.store(global)?;
    let store = if args.dry_run { Arc::new(store.scratch_copy(loaded.pipeline.name())?) } else { store };
    let engine = Engine::new(Arc::new(weir_connectors::Builtin), store);
    let metrics = RunMetrics::default();
    let progress = Progress::start(metrics.clone(), global.log_format == LogFormat::Human && global.quiet == 0);
    let start = match &args.resume {
        Some(id) => Start::Resume(Some(id.as_str()).filter(|id| !id.is_empty())),
        None => Start::New,
    };
    let (result, _) = run_and_alert(&engine, &loaded.pipeline, &options, metrics.clone(), start).await;
    progress.finish();
    let report = result?;
    if global.quiet == 0 && args.dry_run {
        eprintln!("dry run finished in {} ms: every load was rolled back; nothing was committed", report.duration_ms);
    } else if global.quiet == 0 {
        eprintln!("run {} succeeded in {} ms", report.run_id, report.duration_ms);
    }
    Ok(ExitCode::SUCCESS)
}

/// The options of a manual run of `loaded`, with no overrides.
pub fn options(global: &Global, loaded: &Loaded) -> RunOptions {
    RunOptions {
        trigger: "manual".into(),
        variables: BTreeMap::new(),
        memory_limit: None,
        base_dir: loaded.dir(),
        scratch_root: loaded.state_dir(global).join("tmp"),
        dry_run: false,
        packages: loaded.state_dir(global).join("packages"),
        cancel: cancel_on_signal(),
        record_state: true,
        payload: None,
        run_id: None,
        engine: None,
    }
}

/// `weir dlq replay`: the matching dead letters, step by step.
pub async fn replay(global: &Global, pipeline: &Path, filter: DeadLetterFilter) -> anyhow::Result<ExitCode> {
    let loaded = load(pipeline)?;
    let letters =
        loaded.dead_letters(global)?.matching(loaded.pipeline.name(), &filter).map_err(anyhow::Error::from_boxed)?;
    if letters.is_empty() {
        eprintln!("no dead letters to replay");
        return Ok(ExitCode::SUCCESS);
    }
    let engine = Engine::new(Arc::new(weir_connectors::Builtin), loaded.store(global)?);
    let options = options(global, &loaded);
    let mut failed = None;
    for (step, letters) in weir_engine::by_step(letters) {
        let report = engine.replay(&loaded.pipeline, &options, RunMetrics::default(), &step, &letters).await?;
        if report.skipped > 0 {
            eprintln!(
                "{} dead letters of `{step}` are of runs that failed and were left alone (see the log)",
                report.skipped
            );
        }
        let run = report.run_id.as_deref().unwrap_or("-");
        match report.error {
            None if report.run_id.is_none() => {}
            None => eprintln!(
                "replayed {} dead letters of `{step}` in run {run}: {} went through and were removed, {} failed again and stay",
                report.replayed, report.passed, report.failed_again
            ),
            Some(err) => {
                eprintln!(
                    "replay of {} dead letters of `{step}` failed (run {run}); they stay: {err}",
                    report.replayed
                );
                failed = Some(err);
            }
        }
    }
    match failed {
        Some(err) => Err(err.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// A token cancelled by Ctrl-C or SIGTERM: the run rolls back its open batch and is recorded as failed.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        stop_signal().await;
        eprintln!("stopping: the open batch rolls back, the run is recorded as failed");
        cancel.cancel();
    });
    token
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => signal.recv().await.map_or((), |_| ()),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
