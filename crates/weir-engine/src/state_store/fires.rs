//! Schedule fires: each claimed by one instance.

use super::*;

impl StateStore {
    /// Claims a schedule's fire due at `due` for this instance, unless another instance did (each fire runs once
    /// across every instance sharing the store) or `pipeline` is at its `limit` of runs anywhere. A fire claimed
    /// in the last [`CLAIM_GRACE`] whose run has not started yet counts as a run, so two instances cannot both
    /// start one in the moment between a claim and its run; claims are taken one at a time per pipeline.
    pub fn claim_fire(&self, pipeline: &str, due: &str, limit: usize) -> Result<bool> {
        Ok(self.claim_fires(&[(pipeline, due, limit)])?[0])
    }

    /// [`Self::claim_fire`] for many fires in one transaction (a minute's cron fires of thousands of pipelines).
    pub fn claim_fires(&self, fires: &[(&str, &str, usize)]) -> Result<Vec<bool>> {
        let claimed_at = now();
        let grace = ago(CLAIM_GRACE);
        self.tx(|db| {
            let mut claimed = Vec::with_capacity(fires.len());
            for (pipeline, due, limit) in fires {
                if db.dialect() == Dialect::Postgres {
                    db.execute("SELECT pg_advisory_xact_lock(hashtext('weir fire ' || ?1))", args![*pipeline])?;
                }
                let inserted = db.execute(
                    "INSERT INTO schedule_fires (pipeline, due, instance, claimed_at)
                     SELECT ?1, ?2, ?3, ?5
                     WHERE (SELECT count(*) FROM runs WHERE pipeline = ?1 AND status = 'running')
                         + (SELECT count(*) FROM schedule_fires f WHERE f.pipeline = ?1 AND f.claimed_at > ?6
                                AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.pipeline = f.pipeline AND r.instance = f.instance
                                                    AND r.started_at >= f.claimed_at)) < ?4
                     ON CONFLICT (pipeline, due) DO NOTHING",
                    args![*pipeline, *due, &self.instance, *limit as i64, claimed_at.as_str(), grace.as_str()],
                )?;
                claimed.push(inserted == 1);
            }
            Ok(claimed)
        })
    }

    /// When `pipeline`'s schedule last fired (claimed by any instance), else when it last started a run on one.
    pub fn last_fire(&self, pipeline: &str) -> Result<Option<String>> {
        self.tx(|db| {
            let fired = db.query_opt("SELECT max(due) FROM schedule_fires WHERE pipeline = ?1", args![pipeline])?;
            match fired.map(|r| r.opt_text(0)).transpose()?.flatten() {
                Some(due) => Ok(Some(due)),
                None => db
                    .query_opt(
                        "SELECT max(started_at) FROM runs WHERE pipeline = ?1 AND trigger = 'schedule'",
                        args![pipeline],
                    )?
                    .map(|r| r.opt_text(0))
                    .transpose()
                    .map(Option::flatten),
            }
        })
    }
}
