//! A run's session on a Ballista cluster: the run's own session state (memory pool, configuration), upgraded so
//! that its physical plans are `DistributedQueryExec`s that send the query to the scheduler and stream the
//! result back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec;
use tokio::net::TcpStream;
use weir_engine::Cluster;
use weir_spec::ClusterEngine;

use super::codec::{LogicalCodec, PhysicalCodec};

struct Ballista {
    at: ClusterEngine,
    ctx: SessionContext,
    codec: Arc<LogicalCodec>,
}

pub(crate) fn session(at: &ClusterEngine, local: SessionState) -> Result<Box<dyn Cluster>> {
    let codec = Arc::new(LogicalCodec::default());
    let config = local
        .config()
        .clone()
        .with_ballista_logical_extension_codec(codec.clone())
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()));
    let local = SessionStateBuilder::new_from_existing(local).with_config(config).build();
    let state = local.upgrade_for_ballista(at.scheduler_url())?;
    let ctx = SessionContext::new_with_state(state);
    Ok(Box::new(Ballista { at: at.clone(), ctx, codec }))
}

#[async_trait]
impl Cluster for Ballista {
    fn context(&self) -> &SessionContext {
        &self.ctx
    }

    async fn reach(&self) -> Result<()> {
        let refused = |why: String| {
            DataFusionError::Plan(format!(
                "cannot reach the scheduler at {} ({why}); start one with `weir scheduler`, or run without --engine",
                self.at
            ))
        };
        let connect = TcpStream::connect((self.at.host.as_str(), self.at.port));
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(refused(e.to_string())),
            Err(_) => Err(refused("no answer in 10 s".into())),
        }
    }

    /// A plan reaches the scheduler as protobuf: one that encodes, with the codec the session sends it with,
    /// is one the cluster can read.
    fn can_run(&self, plan: &LogicalPlan) -> std::result::Result<(), String> {
        logical_plan_to_bytes_with_extension_codec(plan, self.codec.as_ref()).map(drop).map_err(|e| e.to_string())
    }
}
