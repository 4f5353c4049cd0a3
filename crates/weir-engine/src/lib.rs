//! Weir's engine: turns a checked [`weir_spec::Pipeline`] into DataFusion plans, one table per step, runs its
//! loads, and records runs, metrics, state and dead letters in the [`StateStore`] (embedded, or shared in PostgreSQL).
//!
//! Sources and sinks come from a [`Connectors`] implementation; the engine itself knows no external system.

mod connector;
mod dead_letters;
mod error;
mod fan_out;
mod materialize;
mod metrics;
mod package;
mod params;
pub mod postgres_tls;
mod quality;
mod records;
mod replay;
mod retry;
mod run;
mod run_logs;
pub mod state_store;
mod transforms;

pub use connector::{
    Batch, Cluster, Connectors, NothingToLoad, PendingLoad, ResolvedConnection, RowChanges, Secret, StepContext,
    Transient, truncate,
};
pub use dead_letters::{DeadLetters, DlqResult, by_step, purge};
pub use error::{EngineError, in_step};
pub use metrics::{ModelUsage, RunMetrics, StepCounters};
pub use params::{resolve_variables, timestamp_micros, to_scalar};
pub use quality::CheckResult;
pub use replay::ReplayReport;
pub use retry::{Patience, retry_delays, with_retries};
pub use run::{Engine, Planned, RunOptions, RunReport, parse_bytes, step_graph};
pub use run_logs::{LogSink, RunLogLayer};
pub use state_store::{
    DeadLetter, DeadLetterFilter, NewDeadLetter, RunRecord, StateLocation, StateStore, StepMetricsRow,
};
pub use tokio_util::sync::CancellationToken;
pub use transforms::{all_picks, rows_as_json};
