//! `weir executor`: a Ballista executor that decodes Weir's functions and plan nodes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::error::Result;

use super::codec::{LogicalCodec, PhysicalCodec};
use super::scheduler::ballista;

/// How to start an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler it registers with.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// The address it listens on, and the host name others reach it by.
    pub bind_host: IpAddr,
    pub external_host: Option<String>,
    /// Its Arrow Flight port (shuffle data and results) and its gRPC port (tasks).
    pub flight_port: u16,
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub concurrent_tasks: usize,
    /// Where it keeps shuffle files.
    pub work_dir: Option<PathBuf>,
    /// How often it tells the scheduler it is alive.
    pub heartbeat: Duration,
    /// The memory its tasks' joins, sorts and aggregates share before they spill, in bytes; `None` is Ballista's
    /// default, a share of the machine's (or its cgroup's) memory.
    pub memory_limit: Option<u64>,
}

/// Runs an executor until the process ends.
pub async fn executor(options: ExecutorOptions) -> Result<()> {
    let mut registry = BallistaFunctionRegistry::default();
    for pick in weir_engine::all_picks() {
        registry.aggregate_functions.insert(pick.name().to_string(), Arc::new(pick));
    }
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.to_string(),
        external_host: options.external_host,
        port: options.flight_port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host,
        scheduler_port: options.scheduler_port,
        // An executor started before its scheduler (a cluster coming up at once) keeps trying for a while.
        scheduler_connect_timeout_seconds: 60,
        vcores: options.concurrent_tasks,
        work_dir: options.work_dir.map(|dir| dir.display().to_string()),
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        memory_pool_size: options.memory_limit,
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(ballista)
}
