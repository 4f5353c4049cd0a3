//! The embedded store: runs, per-step metrics, state values and dead letters in one SQLite file
//! (`.weir/state.db` beside the pipeline by default). No server is needed; WAL mode lets `weir runs` read while a
//! run writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use weir_spec::TypedValue;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("cannot open state store {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("cannot create directory for state store {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored state `{name}` is unreadable: {message}")]
    Corrupt { name: String, message: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    error       TEXT,
    stage       TEXT,
    variables   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started_at);
CREATE TABLE IF NOT EXISTS step_metrics (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    step         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    category     TEXT NOT NULL,
    rows_in      INTEGER NOT NULL,
    rows_out     INTEGER NOT NULL,
    rows_invalid INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS state_values (
    pipeline    TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    run_id      TEXT,
    PRIMARY KEY (pipeline, name)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline     TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    step         TEXT NOT NULL,
    record       TEXT NOT NULL,
    error        TEXT NOT NULL,
    origin       TEXT,
    created_at   TEXT NOT NULL,
    retry_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_by_pipeline ON dead_letters (pipeline, id);
CREATE TABLE IF NOT EXISTS checks (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    name        TEXT NOT NULL,
    step        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    passed      INTEGER NOT NULL,
    message     TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS run_logs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    at          TEXT NOT NULL,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_logs_by_run ON run_logs (run_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    step        TEXT NOT NULL,
    batches     INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE VIEW IF NOT EXISTS pipeline_metrics AS
SELECT
    r.pipeline AS pipeline_id,
    r.run_id,
    r.started_at AS start_time,
    r.ended_at AS end_time,
    COALESCE(SUM(CASE WHEN m.category = 'extract' THEN m.rows_out END), 0) AS records_extracted,
    COALESCE(SUM(CASE WHEN m.category = 'load' THEN m.rows_in END), 0) AS records_transformed,
    COALESCE(SUM(CASE WHEN m.category = 'load' THEN m.rows_out END), 0) AS records_loaded,
    COALESCE(SUM(m.rows_invalid), 0) + (CASE WHEN r.status = 'failed' THEN 1 ELSE 0 END) AS errors_count,
    r.status
FROM runs r LEFT JOIN step_metrics m ON m.run_id = r.run_id
GROUP BY r.run_id;
"#;

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

pub struct StateStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl StateStore {
    /// Opens (creating when missing) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StateError::Directory { path: dir.display().to_string(), source })?;
        }
        let conn =
            Connection::open(path).map_err(|source| StateError::Open { path: path.display().to_string(), source })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let store = Self { conn: Mutex::new(conn) };
        store.mark_abandoned_runs()?;
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic), so poison is ignorable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start_run(&self, run_id: &str, pipeline: &str, trigger: &str, variables: &serde_json::Value) -> Result<()> {
        self.conn().execute(
            "INSERT INTO runs (run_id, pipeline, trigger, status, started_at, variables, pid)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
            params![run_id, pipeline, trigger, now(), variables.to_string(), std::process::id()],
        )?;
        Ok(())
    }

    /// Marks the runs whose process is gone (killed, crashed, the machine lost power) as failed, so they read as
    /// what they are and can be resumed. A run is only judged on the machine that runs it: its process id is
    /// checked under `/proc`.
    fn mark_abandoned_runs(&self) -> Result<()> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT run_id, pid FROM runs WHERE status = 'running' AND pid IS NOT NULL")?;
        let running: Vec<(String, u32)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (run_id, pid) in running.into_iter().filter(|(_, pid)| !process_alive(*pid)) {
            conn.execute(
                "UPDATE runs SET status = 'failed', ended_at = ?2, error = ?3 WHERE run_id = ?1 AND status = 'running'",
                params![
                    run_id,
                    now(),
                    format!("interrupted: process {pid} ended before the run finished; `weir run --resume` goes on from its last checkpoint")
                ],
            )?;
        }
        Ok(())
    }

    /// The run `weir run --resume` goes on with: `run_id`, or the pipeline's latest run when it failed. A run that
    /// succeeded, or that a later successful run superseded, cannot be resumed: its loads are done, or redoing
    /// them would move state back.
    pub fn resumable_run(&self, pipeline: &str, run_id: Option<&str>) -> Result<ResumableRun, String> {
        let conn = self.conn();
        let found = conn
            .query_row(
                "SELECT run_id, status, started_at, variables, pid FROM runs
                 WHERE pipeline = ?1 AND (?2 IS NULL OR run_id = ?2) ORDER BY started_at DESC, run_id DESC LIMIT 1",
                params![pipeline, run_id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, Option<u32>>(4)?)),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let Some((run_id, status, started_at, variables, pid)) = found else {
            return Err(match run_id {
                Some(id) => format!("pipeline `{pipeline}` has no run `{id}`"),
                None => format!("pipeline `{pipeline}` has no run to resume"),
            });
        };
        match status.as_str() {
            "success" => return Err(format!("run {run_id} of `{pipeline}` succeeded; there is nothing to resume")),
            "running" => {
                return Err(format!(
                    "run {run_id} of `{pipeline}` is still running (process {}); stop it first",
                    pid.map_or("?".into(), |p| p.to_string())
                ));
            }
            _ => {}
        }
        let later: Option<String> = conn
            .query_row(
                "SELECT run_id FROM runs WHERE pipeline = ?1 AND status = 'success' AND started_at > ?2 LIMIT 1",
                params![pipeline, started_at],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        if let Some(later) = later {
            return Err(format!("run {run_id} of `{pipeline}` was followed by run {later}, which succeeded; resuming would move state back"));
        }
        let variables = serde_json::from_str(&variables).map_err(|e| format!("run {run_id}: stored variables are unreadable: {e}"))?;
        Ok(ResumableRun { run_id, started_at, variables })
    }

    /// Marks a failed run as running again, in this process.
    pub fn restart_run(&self, run_id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET status = 'running', ended_at = NULL, error = NULL, stage = NULL, pid = ?2 WHERE run_id = ?1",
            params![run_id, std::process::id()],
        )?;
        Ok(())
    }

    /// Appends one log line of a run.
    pub fn add_run_log(&self, run_id: &str, level: &str, message: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO run_logs (run_id, at, level, message) VALUES (?1, ?2, ?3, ?4)",
            params![run_id, now(), level, message],
        )?;
        Ok(())
    }

    /// A run's log lines in order: `(at, level, message)`.
    pub fn run_logs(&self, run_id: &str) -> Result<Vec<LogLine>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT at, level, message FROM run_logs WHERE run_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([run_id], |r| Ok(LogLine { at: r.get(0)?, level: r.get(1)?, message: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records how a run's data-quality checks went.
    pub fn record_checks(&self, run_id: &str, results: &[crate::CheckResult]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for r in results {
            tx.execute(
                "INSERT OR REPLACE INTO checks (run_id, name, step, severity, passed, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run_id, r.name, r.step, format!("{:?}", r.severity).to_lowercase(), r.passed(), r.message()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A run's checks by name.
    pub fn checks(&self, run_id: &str) -> Result<Vec<CheckRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, step, severity, passed, message FROM checks WHERE run_id = ?1 ORDER BY name")?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(CheckRecord { name: r.get(0)?, step: r.get(1)?, severity: r.get(2)?, passed: r.get(3)?, message: r.get(4)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The failed checks of a run as `name: what failed`.
    pub fn failed_checks(&self, run_id: &str) -> Result<Vec<String>> {
        Ok(self.checks(run_id)?.into_iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.message)).collect())
    }

    /// Records that `batches` batches (`rows` rows) of a load of run `run_id` have committed.
    pub fn set_checkpoint(&self, run_id: &str, step: &str, batches: u64, rows: u64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO checkpoints (run_id, step, batches, rows, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (run_id, step) DO UPDATE SET batches = excluded.batches, rows = excluded.rows,
                 updated_at = excluded.updated_at",
            params![run_id, step, batches as i64, rows as i64, now()],
        )?;
        Ok(())
    }

    /// The batches of a load of run `run_id` recorded by [`Self::set_checkpoint`].
    pub fn checkpoint(&self, run_id: &str, step: &str) -> Result<u64> {
        let batches: Option<i64> = self
            .conn()
            .query_row("SELECT batches FROM checkpoints WHERE run_id = ?1 AND step = ?2", params![run_id, step], |r| r.get(0))
            .optional()?;
        Ok(batches.unwrap_or(0) as u64)
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for m in metrics {
            tx.execute(
                "INSERT OR REPLACE INTO step_metrics
                     (run_id, step, kind, category, rows_in, rows_out, rows_invalid, bytes, duration_ms, retries)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run_id,
                    m.step,
                    m.kind,
                    m.category,
                    m.rows_in as i64,
                    m.rows_out as i64,
                    m.rows_invalid as i64,
                    m.bytes as i64,
                    m.duration_ms as i64,
                    m.retries as i64
                ],
            )?;
        }
        let ended = now();
        match outcome {
            Ok(state) => {
                for (name, value) in state {
                    tx.execute(
                        "INSERT INTO state_values (pipeline, name, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value,
                             updated_at = excluded.updated_at, run_id = excluded.run_id",
                        params![pipeline, name, serde_json::to_string(value).expect("typed values serialize"), ended, run_id],
                    )?;
                }
                tx.execute("UPDATE runs SET status = 'success', ended_at = ?2 WHERE run_id = ?1", params![run_id, ended])?;
            }
            Err((error, stage)) => {
                tx.execute(
                    "UPDATE runs SET status = 'failed', ended_at = ?2, error = ?3, stage = ?4 WHERE run_id = ?1",
                    params![run_id, ended, error, stage],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored state values of a pipeline.
    /// An in-memory store holding this one's state values of `pipeline`, for a dry run that must see the real
    /// cursors but record nothing.
    pub fn scratch_copy(&self, pipeline: &str) -> Result<Self> {
        let copy = Self::in_memory()?;
        for (name, value) in self.state(pipeline)? {
            copy.set_state(pipeline, &name, &value)?;
        }
        Ok(copy)
    }

    pub fn state(&self, pipeline: &str) -> Result<BTreeMap<String, TypedValue>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, value FROM state_values WHERE pipeline = ?1 ORDER BY name")?;
        let rows = stmt.query_map([pipeline], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (name, json) = row?;
            let value = serde_json::from_str(&json)
                .map_err(|e| StateError::Corrupt { name: name.clone(), message: e.to_string() })?;
            out.insert(name, value);
        }
        Ok(out)
    }

    /// Sets one state value by hand (`weir state set`).
    pub fn set_state(&self, pipeline: &str, name: &str, value: &TypedValue) -> Result<()> {
        self.conn().execute(
            "INSERT INTO state_values (pipeline, name, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, run_id = NULL",
            params![pipeline, name, serde_json::to_string(value).expect("typed values serialize"), now()],
        )?;
        Ok(())
    }

    /// Forgets one state value, or all of a pipeline's, so the declared defaults apply again.
    pub fn reset_state(&self, pipeline: &str, name: Option<&str>) -> Result<usize> {
        let conn = self.conn();
        Ok(match name {
            Some(n) => conn.execute("DELETE FROM state_values WHERE pipeline = ?1 AND name = ?2", params![pipeline, n])?,
            None => conn.execute("DELETE FROM state_values WHERE pipeline = ?1", params![pipeline])?,
        })
    }

    pub fn add_dead_letters(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO dead_letters (pipeline, run_id, step, record, error, origin, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let created = now();
            for l in letters {
                stmt.execute(params![pipeline, run_id, l.step, l.record.to_string(), l.error, l.origin, created])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A pipeline's dead letters that match every filter given, oldest first.
    pub fn dead_letters_matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, pipeline, run_id, step, record, error, origin, created_at, retry_count FROM dead_letters
             WHERE pipeline = ?1 AND (?2 IS NULL OR run_id = ?2) AND (?3 IS NULL OR step = ?3) AND (?4 IS NULL OR id = ?4)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![pipeline, filter.run_id, filter.step, filter.id], dead_letter_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes these dead letters of `pipeline`; returns how many there were.
    pub fn remove_dead_letters(&self, pipeline: &str, ids: &[i64]) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut removed = 0;
        for id in ids {
            removed += tx.execute("DELETE FROM dead_letters WHERE pipeline = ?1 AND id = ?2", params![pipeline, id])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Counts one more retry of a dead letter, with its new reason when given.
    pub fn count_dead_letter_retry(&self, pipeline: &str, id: i64, error: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE dead_letters SET retry_count = retry_count + 1, error = coalesce(?3, error) WHERE pipeline = ?1 AND id = ?2",
            params![pipeline, id, error],
        )?;
        Ok(())
    }

    pub fn runs(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, pipeline, trigger, status, started_at, ended_at, error, stage FROM runs
             WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY started_at DESC, run_id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pipeline, limit as i64], run_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One run.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT run_id, pipeline, trigger, status, started_at, ended_at, error, stage FROM runs WHERE run_id = ?1",
                [run_id],
                run_from_row,
            )
            .optional()?)
    }

    /// When `pipeline` last started a run with `trigger`.
    pub fn last_started(&self, pipeline: &str, trigger: &str) -> Result<Option<String>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT max(started_at) FROM runs WHERE pipeline = ?1 AND trigger = ?2",
                params![pipeline, trigger],
                |r| r.get(0),
            )?)
    }

    pub fn step_metrics(&self, run_id: &str) -> Result<Vec<StepMetricsRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT step, kind, category, rows_in, rows_out, rows_invalid, bytes, duration_ms, retries FROM step_metrics
             WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(StepMetricsRow {
                step: r.get(0)?,
                kind: r.get(1)?,
                category: r.get(2)?,
                rows_in: r.get::<_, i64>(3)? as u64,
                rows_out: r.get::<_, i64>(4)? as u64,
                rows_invalid: r.get::<_, i64>(5)? as u64,
                bytes: r.get::<_, i64>(6)? as u64,
                duration_ms: r.get::<_, i64>(7)? as u64,
                retries: r.get::<_, i64>(8)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows of the `pipeline_metrics` view (the seed's metric columns), newest first.
    pub fn pipeline_metrics(&self, pipeline: &str) -> Result<Vec<serde_json::Value>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pipeline_id, run_id, start_time, end_time, records_extracted, records_transformed, records_loaded,
                    errors_count, status FROM pipeline_metrics WHERE pipeline_id = ?1 ORDER BY start_time DESC",
        )?;
        let rows = stmt.query_map([pipeline], |r| {
            Ok(serde_json::json!({
                "pipeline_id": r.get::<_, String>(0)?,
                "run_id": r.get::<_, String>(1)?,
                "start_time": r.get::<_, String>(2)?,
                "end_time": r.get::<_, Option<String>>(3)?,
                "records_extracted": r.get::<_, i64>(4)?,
                "records_transformed": r.get::<_, i64>(5)?,
                "records_loaded": r.get::<_, i64>(6)?,
                "errors_count": r.get::<_, i64>(7)?,
                "status": r.get::<_, String>(8)?,
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
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

/// Adds what later versions keep to a store an earlier version made.
fn migrate(conn: &Connection) -> Result<()> {
    let has_pid = conn.prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'pid'")?.exists([])?;
    if !has_pid {
        conn.execute_batch("ALTER TABLE runs ADD COLUMN pid INTEGER")?;
    }
    let has_retries = conn.prepare("SELECT 1 FROM pragma_table_info('step_metrics') WHERE name = 'retries'")?.exists([])?;
    if !has_retries {
        conn.execute_batch("ALTER TABLE step_metrics ADD COLUMN retries INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

/// Whether a process of this machine is alive. Where that cannot be told (no `/proc`), every process is.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.exists() || pid == std::process::id() || proc.join(pid.to_string()).exists()
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        pipeline: r.get(1)?,
        trigger: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        error: r.get(6)?,
        stage: r.get(7)?,
    })
}

fn dead_letter_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let record: String = r.get(4)?;
    Ok(DeadLetter {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        run_id: r.get(2)?,
        step: r.get(3)?,
        record: serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record)),
        error: r.get(5)?,
        origin: r.get(6)?,
        created_at: r.get(7)?,
        retry_count: r.get(8)?,
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
}
