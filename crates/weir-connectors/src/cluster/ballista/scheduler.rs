//! `weir scheduler`: a Ballista scheduler whose sessions know Weir's functions and plan nodes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::start_server;
use datafusion::error::{DataFusionError, Result};

use super::codec::{LogicalCodec, PhysicalCodec};

/// How to start a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens for runs and executors.
    pub bind: SocketAddr,
    /// The host name executors and runs reach it by.
    pub external_host: String,
    /// How long an executor may go without a heartbeat before its tasks run elsewhere.
    pub executor_timeout: Duration,
}

/// Runs a scheduler until the process ends.
pub async fn scheduler(options: SchedulerOptions) -> Result<()> {
    let timeout = options.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.external_host,
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: (timeout / 2).clamp(1, 15),
        no_executors_grace_period_seconds: timeout,
        // Spread a stage's tasks over the executors rather than fill one first: more machines at work on one
        // query, and less of it lost with one executor.
        task_distribution: TaskDistributionPolicy::RoundRobin,
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..SchedulerConfig::default()
    }
    .with_override_session_builder(Arc::new(super::cluster_state));
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(ballista)?;
    start_server(cluster, options.bind, Arc::new(config)).await.map_err(ballista)
}

pub(super) fn ballista(e: ballista_core::error::BallistaError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
