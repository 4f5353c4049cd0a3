//! Run logs: the lines each run logged.

use super::*;

impl StateStore {
    /// Appends one log line of a run.
    pub fn add_run_log(&self, run_id: &str, level: &str, message: &str) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO run_logs (run_id, at, level, message) VALUES (?1, ?2, ?3, ?4)",
                args![run_id, now(), level, message],
            )
        })?;
        Ok(())
    }

    /// A run's log lines in order.
    pub fn run_logs(&self, run_id: &str) -> Result<Vec<LogLine>> {
        self.tx(|db| {
            db.query("SELECT at, level, message FROM run_logs WHERE run_id = ?1 ORDER BY seq", args![run_id])?
                .iter()
                .map(|r| Ok(LogLine { at: r.text(0)?, level: r.text(1)?, message: r.text(2)? }))
                .collect()
        })
    }
}

/// One line a run logged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub at: String,
    pub level: String,
    pub message: String,
}
