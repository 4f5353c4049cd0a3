//! Weir's engine: turns a checked [`weir_spec::Pipeline`] into DataFusion plans, one table per step, runs its
//! loads, and records runs, metrics, state and dead letters in the embedded [`StateStore`].
//!
//! Sources and sinks come from a [`Connectors`] implementation; the engine itself knows no external system.

mod connector;
mod error;
mod materialize;
mod metrics;
mod params;
mod run;
pub mod state_store;
mod transforms;

pub use connector::{Connectors, PendingLoad, ResolvedConnection, Secret, StepContext, truncate};
pub use error::{EngineError, in_step};
pub use metrics::{RunMetrics, StepCounters};
pub use params::{timestamp_micros, to_scalar};
pub use run::{Engine, Planned, RunOptions, RunReport, parse_bytes};
pub use state_store::{DeadLetter, DeadLetterFilter, NewDeadLetter, RunRecord, StateStore, StepMetricsRow};
