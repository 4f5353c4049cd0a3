//! Data-quality check results of each run.

use super::*;

impl StateStore {
    /// Records how a run's data-quality checks went.
    pub fn record_checks(&self, run_id: &str, results: &[crate::CheckResult]) -> Result<()> {
        self.tx(|db| {
            for r in results {
                db.execute(
                    "INSERT INTO checks (run_id, name, step, severity, passed, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (run_id, name) DO UPDATE SET step = excluded.step, severity = excluded.severity,
                         passed = excluded.passed, message = excluded.message",
                    args![
                        run_id,
                        &r.name,
                        &r.step,
                        format!("{:?}", r.severity).to_lowercase(),
                        r.passed(),
                        r.message()
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// A run's checks by name.
    pub fn checks(&self, run_id: &str) -> Result<Vec<CheckRecord>> {
        self.tx(|db| {
            db.query(
                "SELECT name, step, severity, passed, message FROM checks WHERE run_id = ?1 ORDER BY name",
                args![run_id],
            )?
            .iter()
            .map(|r| {
                Ok(CheckRecord {
                    name: r.text(0)?,
                    step: r.text(1)?,
                    severity: r.text(2)?,
                    passed: r.int(3)? != 0,
                    message: r.text(4)?,
                })
            })
            .collect()
        })
    }

    /// The failed checks of a run as `name: what failed`.
    pub fn failed_checks(&self, run_id: &str) -> Result<Vec<String>> {
        Ok(self
            .checks(run_id)?
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.message))
            .collect())
    }
}

/// How one data-quality check of a run went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRecord {
    pub name: String,
    pub step: String,
    /// `error` or `warn`.
    pub severity: String,
    pub passed: bool,
    /// `passed`, or what failed.
    pub message: String,
}
