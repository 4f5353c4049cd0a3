//! Checkpoints of batched loads whose destination cannot keep them.

use super::*;

impl StateStore {
    /// Records that `batches` batches (`rows` rows) of a load of run `run_id` have committed.
    pub fn set_checkpoint(&self, run_id: &str, step: &str, batches: u64, rows: u64) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO checkpoints (run_id, step, batches, rows, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, step) DO UPDATE SET batches = excluded.batches, rows = excluded.rows,
                     updated_at = excluded.updated_at",
                args![run_id, step, batches, rows, now()],
            )
        })?;
        Ok(())
    }

    /// The batches of a load of run `run_id` recorded by [`Self::set_checkpoint`].
    pub fn checkpoint(&self, run_id: &str, step: &str) -> Result<u64> {
        self.tx(|db| {
            let row =
                db.query_opt("SELECT batches FROM checkpoints WHERE run_id = ?1 AND step = ?2", args![run_id, step])?;
            Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0) as u64)
        })
    }
}
