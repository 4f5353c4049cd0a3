//! `weir serve`: run a directory of pipelines on their triggers, with the HTTP API and `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use weir_engine::CancellationToken;

use crate::Global;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The directory of pipeline files (`*.yaml`).
    #[arg(default_value = ".")]
    pub project: PathBuf,
    /// Address of the HTTP API, webhooks and `/metrics`. Keep it on 127.0.0.1 behind a proxy that terminates TLS.
    #[arg(long, default_value = "127.0.0.1:8080", env = "WEIR_LISTEN")]
    pub listen: SocketAddr,
    /// Runs at once across all pipelines; each pipeline also has its own limit (`settings.concurrency`, default 1).
    #[arg(long, default_value_t = 4)]
    pub max_runs: usize,
    /// How often pipeline files are checked for changes, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub reload_secs: f64,
    /// With a shared store (`--state postgres://…`): seconds an instance may miss its heartbeat (written every
    /// second) before another instance takes its runs over and resumes them from their last checkpoint.
    #[arg(long, default_value_t = 15.0)]
    pub lease_secs: f64,
}

pub async fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let state_dir = global.state_dir.clone().unwrap_or_else(|| args.project.join(".weir"));
    let config = weir_server::Config {
        state: global.state_location(&state_dir),
        state_dir,
        lease: Duration::from_secs_f64(args.lease_secs.max(3.0)),
        project: args.project,
        listen: args.listen,
        max_runs: args.max_runs.max(1),
        reload_every: Duration::from_secs_f64(args.reload_secs.max(0.1)),
        run_logs: global.run_logs.clone(),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::commands::run::stop_signal().await;
        eprintln!("stopping: running runs roll back their open batch");
        stop.cancel();
    });
    weir_server::serve(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
