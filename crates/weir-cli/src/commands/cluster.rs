//! `weir scheduler` and `weir executor`: the processes of a cluster that runs pipelines' queries
//! (`settings.engine: ballista://host:port`). Every node runs this one binary.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use weir_connectors::cluster::ballista::{ExecutorOptions, SchedulerOptions, executor, scheduler};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Where to listen for runs and executors.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,
    /// The host name executors and runs reach this scheduler by [default: the address it listens on].
    #[arg(long)]
    pub external_host: Option<String>,
    /// Seconds an executor may go without a heartbeat before its tasks are run on the others.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub executor_timeout: u64,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to join, `host:port`.
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
    pub scheduler: String,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// The host name the scheduler, other executors and runs reach this executor by [default: its bind address].
    #[arg(long)]
    pub external_host: Option<String>,
    /// The port for shuffle data and results (Arrow Flight).
    #[arg(long, default_value_t = 50051)]
    pub flight_port: u16,
    /// The port the scheduler sends tasks to.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks to run at once [default: the machine's cores].
    #[arg(long)]
    pub concurrent_tasks: Option<usize>,
    /// Where to keep shuffle files [default: a temporary directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seconds between heartbeats to the scheduler; keep it well under the scheduler's `--executor-timeout`.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub heartbeat: u64,
    /// Memory the tasks' joins, sorts and aggregates share before they spill to the work directory, e.g. `4GB`
    /// [default: a share of the machine's memory].
    #[arg(long)]
    pub memory_limit: Option<String>,
}

pub async fn run_scheduler(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let options = SchedulerOptions {
        bind: args.listen,
        external_host: args.external_host.unwrap_or_else(|| args.listen.ip().to_string()),
        executor_timeout: Duration::from_secs(args.executor_timeout),
    };
    eprintln!("weir scheduler listening on {}", args.listen);
    scheduler(options).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run_executor(args: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let (host, port) = args
        .scheduler
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--scheduler `{}`: write it as host:port", args.scheduler))?;
    let concurrent_tasks =
        args.concurrent_tasks.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let memory_limit = args
        .memory_limit
        .as_deref()
        .map(weir_engine::parse_bytes)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--memory-limit: {e}"))?
        .map(|bytes| bytes as u64);
    let options = ExecutorOptions {
        scheduler_host: host,
        scheduler_port: port,
        bind_host: args.bind,
        external_host: args.external_host,
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        concurrent_tasks,
        work_dir: args.work_dir,
        heartbeat: Duration::from_secs(args.heartbeat),
        memory_limit,
    };
    eprintln!("weir executor joining {} with {concurrent_tasks} task slots", args.scheduler);
    executor(options).await?;
    Ok(ExitCode::SUCCESS)
}
