//! The `weir_checkpoints` statements the embedded databases (SQLite, DuckDB) share: both take `?` placeholders and
//! `INSERT … ON CONFLICT`, so only the table's column types (each module's `CREATE`) differ.

use weir_engine::{Batch, StepContext};

/// Records a committed batch; binds [`values`].
pub const RECORD: &str = "INSERT INTO weir_checkpoints (pipeline, step, run_id, batches, rows) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (pipeline, step) DO UPDATE SET run_id = excluded.run_id, batches = excluded.batches,
         rows = excluded.rows, committed_at = excluded.committed_at";

/// The batches a run committed; binds pipeline, step and run id.
pub const LOOKUP: &str = "SELECT batches FROM weir_checkpoints WHERE pipeline = ? AND step = ? AND run_id = ?";

/// What [`RECORD`] binds once `batch`, of `rows` rows, commits: the step's place, and the batches and rows
/// committed so far.
pub fn values(cx: &StepContext, batch: Batch, rows: u64) -> (&str, &str, &str, i64, i64) {
    (&cx.pipeline, &cx.step, &cx.run_id, batch.index as i64 + 1, (batch.rows_before + rows) as i64)
}
