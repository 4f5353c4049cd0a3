//! Runs: started, finished, abandoned, resumed; their step metrics and the `pipeline_metrics` view.

use super::*;
use crate::metrics::ModelUsage;

impl StateStore {
    pub fn start_run(&self, run_id: &str, pipeline: &str, trigger: &str, variables: &serde_json::Value) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO runs (run_id, pipeline, trigger, status, started_at, variables, pid, instance)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7)",
                args![
                    run_id,
                    pipeline,
                    trigger,
                    now(),
                    variables.to_string(),
                    i64::from(std::process::id()),
                    &self.instance
                ],
            )
        })?;
        Ok(())
    }

    /// Marks the runs whose process is gone (killed, crashed, the machine lost power) as failed, so they read as
    /// what they are and can be resumed. In the embedded store a run is judged on the machine that runs it: its
    /// process id is checked under `/proc`. In a shared store, by its instance's heartbeat: silent for longer than
    /// `lease`, it is gone. Returns the runs marked.
    pub fn mark_abandoned_runs(&self, lease: Duration) -> Result<Vec<String>> {
        let stale = ago(lease);
        self.tx(|db| {
            let gone: Vec<(String, String)> = match db.dialect() {
                Dialect::Sqlite => db
                    .query("SELECT run_id, pid FROM runs WHERE status = 'running' AND pid IS NOT NULL", &[])?
                    .iter()
                    .map(|r| Ok((r.text(0)?, r.int(1)?)))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|(_, pid)| !process_alive(*pid as u32))
                    .map(|(run, pid)| (run, format!("process {pid}")))
                    .collect(),
                Dialect::Postgres => db
                    .query(
                        "SELECT r.run_id, coalesce(i.host, '?') || ' process ' || coalesce(r.pid, 0) FROM runs r
                         LEFT JOIN instances i ON i.id = r.instance
                         WHERE r.status = 'running' AND (i.id IS NULL OR i.heartbeat_at < ?1)",
                        args![stale.as_str()],
                    )?
                    .iter()
                    .map(|r| Ok((r.text(0)?, r.text(1)?)))
                    .collect::<Result<_>>()?,
            };
            for (run_id, process) in &gone {
                db.execute(
                    "UPDATE runs SET status = 'failed', ended_at = ?2, error = ?3 WHERE run_id = ?1 AND status = 'running'",
                    args![run_id, now(), format!("interrupted: {process} ended before the run finished; `weir run --resume` goes on from its last checkpoint")],
                )?;
            }
            Ok(gone.into_iter().map(|(run, _)| run).collect())
        })
    }

    /// Claims an interrupted run for this instance to resume; false when another instance claimed it first. Rows
    /// are claimed with `FOR UPDATE SKIP LOCKED` in a shared store, so instances never wait on each other's claim.
    pub fn claim_interrupted(&self, run_id: &str) -> Result<bool> {
        self.tx(|db| {
            let lock = db.dialect().skip_locked();
            let claimed = db.query(
                &format!("SELECT run_id FROM runs WHERE run_id = ?1 AND status = 'failed' AND error LIKE 'interrupted%'{lock}"),
                args![run_id],
            )?;
            if claimed.is_empty() {
                return Ok(false);
            }
            db.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, error = NULL, stage = NULL, pid = ?2, instance = ?3
                 WHERE run_id = ?1",
                args![run_id, i64::from(std::process::id()), &self.instance],
            )?;
            Ok(true)
        })
    }

    /// The run `weir run --resume` goes on with: `run_id`, or the pipeline's latest run when it failed. A run that
    /// succeeded, or that a later successful run superseded, cannot be resumed: its loads are done, or redoing
    /// them would move state back. A run this instance claimed ([`Self::claim_interrupted`]) is resumable.
    pub fn resumable_run(&self, pipeline: &str, run_id: Option<&str>) -> Result<ResumableRun, String> {
        let found = self
            .tx(|db| {
                let row = db.query_opt(
                    "SELECT run_id, status, started_at, variables, pid, instance FROM runs
                     WHERE pipeline = ?1 AND (CAST(?2 AS TEXT) IS NULL OR run_id = ?2) ORDER BY started_at DESC, run_id DESC LIMIT 1",
                    args![pipeline, run_id],
                )?;
                let Some(r) = row else { return Ok(None) };
                let (id, status, started_at) = (r.text(0)?, r.text(1)?, r.text(2)?);
                let later = db
                    .query_opt(
                        "SELECT run_id FROM runs WHERE pipeline = ?1 AND status = 'success' AND started_at > ?2 LIMIT 1",
                        args![pipeline, started_at.as_str()],
                    )?
                    .map(|l| l.text(0))
                    .transpose()?;
                Ok(Some((id, status, started_at, r.text(3)?, r.opt_int(4)?, r.opt_text(5)?, later)))
            })
            .map_err(|e| e.to_string())?;
        let Some((run_id, status, started_at, variables, pid, instance, later)) = found else {
            return Err(match run_id {
                Some(id) => format!("pipeline `{pipeline}` has no run `{id}`"),
                None => format!("pipeline `{pipeline}` has no run to resume"),
            });
        };
        match status.as_str() {
            "success" => return Err(format!("run {run_id} of `{pipeline}` succeeded; there is nothing to resume")),
            "running" if instance.as_deref() != Some(self.instance.as_str()) => {
                return Err(format!(
                    "run {run_id} of `{pipeline}` is still running (process {}); stop it first",
                    pid.map_or("?".into(), |p| p.to_string())
                ));
            }
            _ => {}
        }
        if let Some(later) = later {
            return Err(format!(
                "run {run_id} of `{pipeline}` was followed by run {later}, which succeeded; resuming would move state back"
            ));
        }
        let variables = serde_json::from_str(&variables)
            .map_err(|e| format!("run {run_id}: stored variables are unreadable: {e}"))?;
        Ok(ResumableRun { run_id, started_at, variables })
    }

    /// Marks a failed run as running again, in this process.
    pub fn restart_run(&self, run_id: &str) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, error = NULL, stage = NULL, pid = ?2, instance = ?3
                 WHERE run_id = ?1",
                args![run_id, i64::from(std::process::id()), &self.instance],
            )
        })?;
        Ok(())
    }

    /// Ends a run: its metrics, its status and, only on success, the new state values, in one transaction so a
    /// crash can never leave state advanced for a run that is not marked successful.
    pub fn finish_run(
        &self,
        run_id: &str,
        pipeline: &str,
        outcome: Result<&BTreeMap<String, TypedValue>, (&str, Option<&str>)>,
        metrics: &[StepMetricsRow],
    ) -> Result<()> {
        self.tx(|db| {
            for (position, m) in metrics.iter().enumerate() {
                db.execute(
                    "INSERT INTO step_metrics
                         (run_id, step, kind, category, rows_in, rows_out, rows_invalid, bytes, duration_ms, retries, position,
                          inserted, updated, deleted, rows_skipped, model_requests, model_cached, input_tokens,
                          output_tokens, cost_micros)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
                     ON CONFLICT (run_id, step) DO UPDATE SET kind = excluded.kind, category = excluded.category,
                         rows_in = excluded.rows_in, rows_out = excluded.rows_out, rows_invalid = excluded.rows_invalid,
                         bytes = excluded.bytes, duration_ms = excluded.duration_ms, retries = excluded.retries,
                         position = excluded.position, inserted = excluded.inserted, updated = excluded.updated,
                         deleted = excluded.deleted, rows_skipped = excluded.rows_skipped,
                         model_requests = excluded.model_requests, model_cached = excluded.model_cached,
                         input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
                         cost_micros = excluded.cost_micros",
                    args![
                        run_id,
                        &m.step,
                        &m.kind,
                        &m.category,
                        m.rows_in,
                        m.rows_out,
                        m.rows_invalid,
                        m.bytes,
                        m.duration_ms,
                        m.retries,
                        position as i64,
                        m.inserted.map(|n| n as i64),
                        m.updated.map(|n| n as i64),
                        m.deleted.map(|n| n as i64),
                        m.rows_skipped,
                        m.model.map(|u| u.requests as i64),
                        m.model.map(|u| u.cached as i64),
                        m.model.map(|u| u.input_tokens as i64),
                        m.model.map(|u| u.output_tokens as i64),
                        m.model.and_then(|u| u.cost_micros).map(|c| c as i64)
                    ],
                )?;
            }
            let ended = now();
            match outcome {
                Ok(state) => {
                    for (name, value) in state {
                        db.execute(
                            "INSERT INTO state_values (pipeline, name, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value,
                                 updated_at = excluded.updated_at, run_id = excluded.run_id",
                            args![pipeline, name, serde_json::to_string(value).expect("typed values serialize"), ended.as_str(), run_id],
                        )?;
                    }
                    db.execute("UPDATE runs SET status = 'success', ended_at = ?2 WHERE run_id = ?1", args![run_id, ended.as_str()])?;
                }
                Err((error, stage)) => {
                    db.execute(
                        "UPDATE runs SET status = 'failed', ended_at = ?2, error = ?3, stage = ?4 WHERE run_id = ?1",
                        args![run_id, ended.as_str(), error, stage],
                    )?;
                }
            }
            Ok(())
        })
    }

    pub fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.tx(|db| {
            db.query(
                "SELECT run_id, pipeline, trigger, status, started_at, ended_at, error, stage FROM runs
                 WHERE (CAST(?1 AS TEXT) IS NULL OR pipeline = ?1) ORDER BY started_at DESC, run_id DESC LIMIT ?2",
                args![pipeline, limit as i64],
            )?
            .iter()
            .map(run_from_row)
            .collect()
        })
    }

    /// One run.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.tx(|db| {
            db.query_opt(
                "SELECT run_id, pipeline, trigger, status, started_at, ended_at, error, stage FROM runs WHERE run_id = ?1",
                args![run_id],
            )?
            .as_ref()
            .map(run_from_row)
            .transpose()
        })
    }

    pub fn step_metrics(&self, run_id: &str) -> Result<Vec<StepMetricsRow>> {
        self.tx(|db| {
            db.query(
                "SELECT step, kind, category, rows_in, rows_out, rows_invalid, bytes, duration_ms, retries, inserted, updated,
                        deleted, rows_skipped, model_requests, model_cached, input_tokens, output_tokens, cost_micros
                 FROM step_metrics
                 WHERE run_id = ?1 ORDER BY position, step",
                args![run_id],
            )?
            .iter()
            .map(|r| {
                Ok(StepMetricsRow {
                    step: r.text(0)?,
                    kind: r.text(1)?,
                    category: r.text(2)?,
                    rows_in: r.int(3)? as u64,
                    rows_out: r.int(4)? as u64,
                    rows_invalid: r.int(5)? as u64,
                    bytes: r.int(6)? as u64,
                    duration_ms: r.int(7)? as u64,
                    retries: r.int(8)? as u64,
                    inserted: r.opt_int(9)?.map(|n| n as u64),
                    updated: r.opt_int(10)?.map(|n| n as u64),
                    deleted: r.opt_int(11)?.map(|n| n as u64),
                    rows_skipped: r.int(12)? as u64,
                    model: match r.opt_int(13)? {
                        Some(requests) => Some(ModelUsage {
                            requests: requests as u64,
                            cached: r.opt_int(14)?.unwrap_or(0) as u64,
                            input_tokens: r.opt_int(15)?.unwrap_or(0) as u64,
                            output_tokens: r.opt_int(16)?.unwrap_or(0) as u64,
                            cost_micros: r.opt_int(17)?.map(|c| c as u64),
                        }),
                        None => None,
                    },
                })
            })
            .collect()
        })
    }

    /// Rows of the `pipeline_metrics` view, newest first.
    pub fn pipeline_metrics(&self, pipeline: &str) -> Result<Vec<serde_json::Value>> {
        self.tx(|db| {
            db.query(
                "SELECT pipeline_id, run_id, start_time, end_time, records_extracted, records_transformed, records_loaded,
                        errors_count, status FROM pipeline_metrics WHERE pipeline_id = ?1 ORDER BY start_time DESC",
                args![pipeline],
            )?
            .iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "pipeline_id": r.text(0)?,
                    "run_id": r.text(1)?,
                    "start_time": r.text(2)?,
                    "end_time": r.opt_text(3)?,
                    "records_extracted": r.int(4)?,
                    "records_transformed": r.int(5)?,
                    "records_loaded": r.int(6)?,
                    "errors_count": r.int(7)?,
                    "status": r.text(8)?,
                }))
            })
            .collect()
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub trigger: String,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub error: Option<String>,
    pub stage: Option<String>,
}

/// One step's figures for one run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepMetricsRow {
    pub step: String,
    pub kind: String,
    pub category: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_invalid: u64,
    /// Records the step passed over by design (Debezium tombstones), not set aside.
    #[serde(default)]
    pub rows_skipped: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Failed attempts the step retried.
    #[serde(default)]
    pub retries: u64,
    /// For a load into a database that tells: rows inserted, updated and deleted; `None` otherwise.
    #[serde(default)]
    pub inserted: Option<u64>,
    #[serde(default)]
    pub updated: Option<u64>,
    #[serde(default)]
    pub deleted: Option<u64>,
    /// For a step that asks a language model: requests, cache hits, tokens and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelUsage>,
}

/// A failed run that `weir run --resume` can go on with, with what it started from.
#[derive(Debug, Clone)]
pub struct ResumableRun {
    pub run_id: String,
    pub started_at: String,
    pub variables: BTreeMap<String, TypedValue>,
}

fn run_from_row(r: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.text(0)?,
        pipeline: r.text(1)?,
        trigger: r.text(2)?,
        status: r.text(3)?,
        started_at: r.text(4)?,
        ended_at: r.opt_text(5)?,
        error: r.opt_text(6)?,
        stage: r.opt_text(7)?,
    })
}
