//! A run's session on a Ballista cluster: the run's own session state (memory pool, configuration), upgraded so
//! that its physical plans are `DistributedQueryExec`s that send the query to the scheduler and stream the
//! result back.

use ballista_core::extension::SessionStateExt;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec;
use weir_engine::Cluster;
use weir_spec::ClusterEngine;

struct Ballista {
    ctx: SessionContext,
    codec: BallistaLogicalExtensionCodec,
}

pub(crate) fn session(at: &ClusterEngine, local: SessionState) -> Result<Box<dyn Cluster>> {
    let state = local.upgrade_for_ballista(at.scheduler_url())?;
    Ok(Box::new(Ballista {
        ctx: SessionContext::new_with_state(state),
        codec: BallistaLogicalExtensionCodec::default(),
    }))
}

impl Cluster for Ballista {
    fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// A plan reaches the scheduler as protobuf: one that encodes, with the codec the session sends it with,
    /// is one the cluster can read.
    fn can_run(&self, plan: &LogicalPlan) -> std::result::Result<(), String> {
        logical_plan_to_bytes_with_extension_codec(plan, &self.codec).map(drop).map_err(|e| e.to_string())
    }
}
