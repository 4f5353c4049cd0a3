//! The state store: runs, per-step metrics, state values, dead letters, run logs, checkpoints and schedule fires.
//! Embedded by default (SQLite, [`sqlite`]); shared by several instances in PostgreSQL ([`postgres`]). Every
//! operation below is one transaction written once for both (see [`db`]).

mod db;
pub mod postgres;
mod sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_spec::TypedValue;

pub use db::Arg;
use db::{Dialect, Row, Sql, args};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("cannot open state store {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("cannot create directory for state store {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state store: {0}")]
    Postgres(String),
    #[error("the state store's connection thread has ended")]
    Gone,
    #[error("state store returned an unexpected row: {0}")]
    Shape(String),
    #[error("stored state `{name}` is unreadable: {message}")]
    Corrupt { name: String, message: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Where a store lives: a SQLite file, or a PostgreSQL database shared by several instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    File(PathBuf),
    Postgres(String),
}

impl StateLocation {
    /// `postgres://…` or `postgresql://…` is a database; anything else is the path of a SQLite file.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(text.to_string())
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&postgres::redact(url)),
        }
    }
}

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

pub struct StateStore {
    backend: Backend,
    /// This process's name in the store; runs it starts carry it, so others can tell whose runs were abandoned.
    instance: String,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

/// How the store writes a time: RFC 3339 in UTC to the millisecond, one fixed width, so text order is time order
/// in both databases.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// [`timestamp`] of `age` ago.
fn ago(age: Duration) -> String {
    timestamp(chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default())
}

/// This machine's name, for instance names and the instances table.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// How long a claimed fire whose run has not started yet holds the pipeline's place (see
/// [`StateStore::claim_fire`]); an instance claims a fire only when it has a free slot to run it at once.
pub const CLAIM_GRACE: Duration = Duration::from_secs(10);

/// How long an instance of a shared store may stay silent before its runs are judged abandoned, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

impl StateStore {
    /// Opens (creating when missing) the embedded store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let store = Self { backend: Backend::Sqlite(sqlite::Sqlite::open(path)?), instance: new_instance() };
        store.mark_abandoned_runs(DEFAULT_LEASE)?;
        Ok(store)
    }

    /// Connects to (creating the tables of) a shared store in PostgreSQL.
    pub fn connect(url: &str) -> Result<Self> {
        let instance = new_instance();
        let store = Self { backend: Backend::Postgres(postgres::Postgres::connect(url, &instance)?), instance };
        store.mark_abandoned_runs(DEFAULT_LEASE)?;
        Ok(store)
    }

    /// Opens the store at `location`.
    pub fn at(location: &StateLocation) -> Result<Self> {
        match location {
            StateLocation::File(path) => Self::open(path),
            StateLocation::Postgres(url) => Self::connect(url),
        }
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Ok(Self { backend: Backend::Sqlite(sqlite::Sqlite::in_memory()?), instance: new_instance() })
    }

    /// Whether other instances may share this store (PostgreSQL), so runs and schedules are claimed.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// This process's name in the store.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn tx<R>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<R>) -> Result<R> {
        match &self.backend {
            Backend::Sqlite(db) => db.transaction(f),
            Backend::Postgres(db) => db.transaction(f),
        }
    }

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
                         (run_id, step, kind, category, rows_in, rows_out, rows_invalid, bytes, duration_ms, retries, position)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (run_id, step) DO UPDATE SET kind = excluded.kind, category = excluded.category,
                         rows_in = excluded.rows_in, rows_out = excluded.rows_out, rows_invalid = excluded.rows_invalid,
                         bytes = excluded.bytes, duration_ms = excluded.duration_ms, retries = excluded.retries,
                         position = excluded.position",
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
                        position as i64
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

    /// An in-memory store holding this one's state values of `pipeline`, for a dry run that must see the real
    /// cursors but record nothing.
    pub fn scratch_copy(&self, pipeline: &str) -> Result<Self> {
        let copy = Self::in_memory()?;
        for (name, value) in self.state(pipeline)? {
            copy.set_state(pipeline, &name, &value)?;
        }
        Ok(copy)
    }

    /// The stored state values of a pipeline.
    pub fn state(&self, pipeline: &str) -> Result<BTreeMap<String, TypedValue>> {
        self.tx(|db| {
            let mut out = BTreeMap::new();
            for r in
                db.query("SELECT name, value FROM state_values WHERE pipeline = ?1 ORDER BY name", args![pipeline])?
            {
                let (name, json) = (r.text(0)?, r.text(1)?);
                let value = serde_json::from_str(&json)
                    .map_err(|e| StateError::Corrupt { name: name.clone(), message: e.to_string() })?;
                out.insert(name, value);
            }
            Ok(out)
        })
    }

    /// Sets one state value by hand (`weir state set`).
    pub fn set_state(&self, pipeline: &str, name: &str, value: &TypedValue) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO state_values (pipeline, name, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, run_id = NULL",
                args![pipeline, name, serde_json::to_string(value).expect("typed values serialize"), now()],
            )
        })?;
        Ok(())
    }

    /// Forgets one state value, or all of a pipeline's, so the declared defaults apply again.
    pub fn reset_state(&self, pipeline: &str, name: Option<&str>) -> Result<usize> {
        self.tx(|db| {
            db.execute(
                "DELETE FROM state_values WHERE pipeline = ?1 AND (CAST(?2 AS TEXT) IS NULL OR name = ?2)",
                args![pipeline, name],
            )
        })
        .map(|n| n as usize)
    }

    pub fn add_dead_letters(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> Result<()> {
        let created = now();
        self.tx(|db| {
            for l in letters {
                db.execute(
                    "INSERT INTO dead_letters (pipeline, run_id, step, record, error, origin, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    args![pipeline, run_id, &l.step, l.record.to_string(), &l.error, l.origin.as_ref(), created.as_str()],
                )?;
            }
            Ok(())
        })
    }

    /// A pipeline's dead letters that match every filter given, oldest first.
    pub fn dead_letters_matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        self.tx(|db| {
            db.query(
                "SELECT id, pipeline, run_id, step, record, error, origin, created_at, retry_count FROM dead_letters
                 WHERE pipeline = ?1 AND (CAST(?2 AS TEXT) IS NULL OR run_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR step = ?3)
                     AND (CAST(?4 AS BIGINT) IS NULL OR id = ?4)
                 ORDER BY id",
                args![pipeline, filter.run_id.as_ref(), filter.step.as_ref(), filter.id],
            )?
            .iter()
            .map(dead_letter_from_row)
            .collect()
        })
    }

    /// Deletes these dead letters of `pipeline`; returns how many there were.
    pub fn remove_dead_letters(&self, pipeline: &str, ids: &[i64]) -> Result<usize> {
        self.tx(|db| {
            let mut removed = 0;
            for id in ids {
                removed +=
                    db.execute("DELETE FROM dead_letters WHERE pipeline = ?1 AND id = ?2", args![pipeline, *id])?;
            }
            Ok(removed as usize)
        })
    }

    /// Counts one more retry of a dead letter, with its new reason when given.
    pub fn count_dead_letter_retry(&self, pipeline: &str, id: i64, error: Option<&str>) -> Result<()> {
        self.tx(|db| {
            db.execute(
                "UPDATE dead_letters SET retry_count = retry_count + 1, error = coalesce(?3, error) WHERE pipeline = ?1 AND id = ?2",
                args![pipeline, id, error],
            )
        })?;
        Ok(())
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
                "SELECT step, kind, category, rows_in, rows_out, rows_invalid, bytes, duration_ms, retries FROM step_metrics
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
                })
            })
            .collect()
        })
    }

    /// Rows of the `pipeline_metrics` view (the seed's metric columns), newest first.
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
    pub bytes: u64,
    pub duration_ms: u64,
    /// Failed attempts the step retried.
    #[serde(default)]
    pub retries: u64,
}

/// A record that could not be processed, kept with why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub pipeline: String,
    pub run_id: String,
    pub step: String,
    /// The original record as a JSON object (or the raw line when it could not be decoded).
    pub record: serde_json::Value,
    pub error: String,
    /// Where the record came from, e.g. `data/orders.csv:17`.
    pub origin: Option<String>,
    pub created_at: String,
    pub retry_count: i64,
}

/// A dead letter before it is stored.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub step: String,
    pub record: serde_json::Value,
    pub error: String,
    pub origin: Option<String>,
}

/// Which dead letters an operation applies to; a field left `None` does not narrow.
#[derive(Debug, Default, Clone)]
pub struct DeadLetterFilter {
    pub run_id: Option<String>,
    pub step: Option<String>,
    pub id: Option<i64>,
}

/// One line a run logged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub at: String,
    pub level: String,
    pub message: String,
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

/// A failed run that `weir run --resume` can go on with, with what it started from.
#[derive(Debug, Clone)]
pub struct ResumableRun {
    pub run_id: String,
    pub started_at: String,
    pub variables: BTreeMap<String, TypedValue>,
}

/// A name for this process in a store: its host, process id and a random part, so a restarted process with a
/// reused pid is not mistaken for the one before.
fn new_instance() -> String {
    format!("{}:{}:{}", hostname(), std::process::id(), &uuid::Uuid::now_v7().simple().to_string()[20..])
}

/// Whether a process of this machine is alive. Where that cannot be told (no `/proc`), every process is.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.exists() || pid == std::process::id() || proc.join(pid.to_string()).exists()
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

fn dead_letter_from_row(r: &Row) -> Result<DeadLetter> {
    let record = r.text(4)?;
    Ok(DeadLetter {
        id: r.int(0)?,
        pipeline: r.text(1)?,
        run_id: r.text(2)?,
        step: r.text(3)?,
        record: serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record)),
        error: r.text(5)?,
        origin: r.opt_text(6)?,
        created_at: r.text(7)?,
        retry_count: r.int(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_advances_only_with_a_successful_run() {
        let store = StateStore::in_memory().unwrap();
        let new_state = BTreeMap::from([("last_sync".to_string(), TypedValue::Integer(7))]);
        store.start_run("r1", "p", "manual", &serde_json::json!({})).unwrap();
        store.finish_run("r1", "p", Err(("boom", Some("load"))), &[]).unwrap();
        assert!(store.state("p").unwrap().is_empty());
        store.start_run("r2", "p", "manual", &serde_json::json!({})).unwrap();
        store.finish_run("r2", "p", Ok(&new_state), &[]).unwrap();
        assert_eq!(store.state("p").unwrap(), new_state);
        let runs = store.runs(Some("p"), 10).unwrap();
        assert_eq!(runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["success", "failed"]);
        assert_eq!(runs[1].stage.as_deref(), Some("load"));
    }

    #[test]
    fn a_fire_is_claimed_once_and_not_while_the_pipeline_is_at_its_limit() {
        let store = StateStore::in_memory().unwrap();
        assert!(store.claim_fire("p", "2026-11-25T12:00:00.000Z", 1).unwrap());
        assert!(!store.claim_fire("p", "2026-11-25T12:00:00.000Z", 1).unwrap(), "claimed already");
        assert!(
            !store.claim_fire("p", "2026-11-25T12:01:00.000Z", 1).unwrap(),
            "the 12:00 fire's run is about to start"
        );
        store.start_run("r1", "p", "schedule", &serde_json::json!({})).unwrap();
        assert!(!store.claim_fire("p", "2026-11-25T12:01:00.000Z", 1).unwrap(), "p is running");
        assert!(store.claim_fire("p", "2026-11-25T12:01:00.000Z", 2).unwrap(), "a limit of 2 allows a second run");
        store.finish_run("r1", "p", Ok(&BTreeMap::new()), &[]).unwrap();
        store.start_run("r2", "p", "schedule", &serde_json::json!({})).unwrap();
        store.finish_run("r2", "p", Ok(&BTreeMap::new()), &[]).unwrap();
        assert!(store.claim_fire("p", "2026-11-25T12:02:00.000Z", 1).unwrap(), "both runs ended");
        assert_eq!(store.last_fire("p").unwrap().as_deref(), Some("2026-11-25T12:02:00.000Z"));
    }
}
