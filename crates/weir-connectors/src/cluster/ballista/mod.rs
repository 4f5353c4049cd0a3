//! Apache DataFusion Ballista: a run's session on a Ballista cluster ([`session`]), and the scheduler and executor
//! processes of such a cluster built with what Weir's plans need ([`scheduler`], [`executor`]).
//!
//! Ballista sends a query's logical plan to the scheduler, which plans it into stages and sends their physical
//! plans to the executors; both ends decode functions by name, so Weir's own aggregates (`dedup`'s `pick`) are
//! registered in every process of the cluster, and Weir's own plan nodes through its extension codecs
//! ([`codec`]), which every process uses too.

mod codec;
mod executor;
mod scheduler;
mod session;

pub use executor::{ExecutorOptions, executor};
pub use scheduler::{SchedulerOptions, scheduler};
pub(crate) use session::session;

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionConfig;

/// A session of a scheduler or an executor: Ballista's own, with Weir's aggregates.
fn cluster_state(config: SessionConfig) -> Result<SessionState> {
    let mut state = ballista_core::utils::default_session_builder(config)?;
    for pick in weir_engine::all_picks() {
        datafusion::execution::FunctionRegistry::register_udaf(&mut state, Arc::new(pick))?;
    }
    Ok(state)
}
