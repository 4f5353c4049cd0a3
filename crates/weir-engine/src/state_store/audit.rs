//! The audit log: each state-changing call of `weir serve`'s API, with who made it (a token's name, never the
//! token) and how it ended.

use super::*;

impl StateStore {
    /// Records one call: `actor` is the caller's token name, `action` the method and path, `status` the answer.
    pub fn add_audit(&self, actor: &str, address: &str, action: &str, status: u16) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO audit_log (at, actor, address, action, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                args![now(), actor, address, action, i64::from(status)],
            )
        })?;
        Ok(())
    }

    /// The latest `limit` calls, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.tx(|db| {
            db.query(
                "SELECT at, actor, address, action, status FROM audit_log ORDER BY seq DESC LIMIT ?1",
                args![limit as i64],
            )?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.text(0)?,
                    actor: r.text(1)?,
                    address: r.text(2)?,
                    action: r.text(3)?,
                    status: r.int(4)?,
                })
            })
            .collect()
        })
    }
}

/// One audited call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub at: String,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub status: i64,
}
