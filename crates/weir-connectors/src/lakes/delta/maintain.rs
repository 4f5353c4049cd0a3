//! `maintain_delta`: delta-rs's optimize (compaction), vacuum and checkpoint, run after the run's loads commit.
//!
//! Vacuum runs in delta-rs's `full` mode, which also removes files that no version ever named: those a failed or
//! killed run wrote before its commit was made (see [`super::gate`]).

use datafusion::error::{DataFusionError, Result};
use deltalake_core::checkpoints::create_checkpoint;
use deltalake_core::operations::vacuum::VacuumMode;
use tracing::info;
use weir_engine::StepContext;
use weir_spec::MaintainDelta;

use super::{Location, commit_properties};

/// Runs the step's operations in order (compaction, vacuum, checkpoint); the number of files they added or removed.
pub async fn maintain(spec: &MaintainDelta, cx: &StepContext) -> Result<u64> {
    let location = Location::of(&spec.path, spec.connection.as_ref(), cx, false)?;
    let mut table = location.builder()?.load().await.map_err(|e| location.error(e))?;
    let mut touched = 0;
    if spec.optimize {
        let (optimized, metrics) =
            table.optimize().with_commit_properties(commit_properties(cx)).await.map_err(|e| location.error(e))?;
        info!(
            step = %cx.step,
            added = metrics.num_files_added,
            removed = metrics.num_files_removed,
            "Compacted Delta table {}: {} files into {}",
            location.shown(),
            metrics.num_files_removed,
            metrics.num_files_added
        );
        touched += metrics.num_files_added + metrics.num_files_removed;
        table = optimized;
    }
    if let Some(retain) = spec.vacuum {
        let retention = chrono::Duration::from_std(retain.0)
            .map_err(|e| DataFusionError::Plan(format!("`vacuum` span is out of range: {e}")))?;
        let (vacuumed, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            // The span was asked for by name (see the field's documentation).
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_commit_properties(commit_properties(cx))
            .await
            .map_err(|e| location.error(e))?;
        let removed = metrics.files_deleted.len() as u64;
        info!(step = %cx.step, removed, "Vacuumed Delta table {}: {removed} files removed", location.shown());
        touched += removed;
        table = vacuumed;
    }
    if spec.checkpoint {
        create_checkpoint(&table, None).await.map_err(|e| location.error(e))?;
        let version = table.version().unwrap_or_default();
        info!(step = %cx.step, version, "Wrote a checkpoint of Delta table {} at version {version}", location.shown());
    }
    Ok(touched)
}
