//! The two databases a state store can live in, behind one small interface: every store operation is a closure
//! over [`Sql`] that runs in one transaction, with its SQL written once. Statements use SQLite's numbered
//! placeholders (`?1`); the PostgreSQL driver rewrites them to `$1`. Integers are 64-bit and text is text in both,
//! which is all the store keeps.

use super::{Result, StateError};

/// Which database a store is in, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// The store's tables, in SQL both databases read but for `{id}` (a generated integer key) and `{create_view}`.
/// Integers are `BIGINT` (SQLite gives them integer affinity; PostgreSQL needs 64 bits to bind `i64`).
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
    variables   TEXT NOT NULL DEFAULT '{}',
    pid         BIGINT,
    instance    TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started_at);
CREATE INDEX IF NOT EXISTS runs_running ON runs (status) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS step_metrics (
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    step         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    category     TEXT NOT NULL,
    rows_in      BIGINT NOT NULL,
    rows_out     BIGINT NOT NULL,
    rows_invalid BIGINT NOT NULL,
    bytes        BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    retries      BIGINT NOT NULL DEFAULT 0,
    position     BIGINT NOT NULL DEFAULT 0,
    inserted     BIGINT,
    updated      BIGINT,
    deleted      BIGINT,
    rows_skipped BIGINT NOT NULL DEFAULT 0,
    model_requests BIGINT,
    model_cached   BIGINT,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    cost_micros    BIGINT,
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
    id           {id},
    pipeline     TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    step         TEXT NOT NULL,
    record       TEXT NOT NULL,
    error        TEXT NOT NULL,
    origin       TEXT,
    created_at   TEXT NOT NULL,
    retry_count  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_by_pipeline ON dead_letters (pipeline, id);
CREATE TABLE IF NOT EXISTS checks (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    name        TEXT NOT NULL,
    step        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    passed      BIGINT NOT NULL,
    message     TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS run_logs (
    seq         {id},
    run_id      TEXT NOT NULL,
    at          TEXT NOT NULL,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_logs_by_run ON run_logs (run_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    step        TEXT NOT NULL,
    batches     BIGINT NOT NULL,
    rows        BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS schedule_fires (
    pipeline    TEXT NOT NULL,
    due         TEXT NOT NULL,
    instance    TEXT NOT NULL,
    claimed_at  TEXT NOT NULL,
    PRIMARY KEY (pipeline, due)
);
CREATE TABLE IF NOT EXISTS instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_answers (
    key         TEXT PRIMARY KEY,
    answer      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq         {id},
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    address     TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      BIGINT NOT NULL
);
{create_view} pipeline_metrics AS
SELECT
    r.pipeline AS pipeline_id,
    r.run_id,
    r.started_at AS start_time,
    r.ended_at AS end_time,
    CAST(COALESCE(SUM(CASE WHEN m.category = 'extract' THEN m.rows_out END), 0) AS BIGINT) AS records_extracted,
    CAST(COALESCE(SUM(CASE WHEN m.category = 'load' THEN m.rows_in END), 0) AS BIGINT) AS records_transformed,
    CAST(COALESCE(SUM(CASE WHEN m.category = 'load' THEN m.rows_out END), 0) AS BIGINT) AS records_loaded,
    CAST(COALESCE(SUM(m.rows_invalid), 0) + (CASE WHEN r.status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS errors_count,
    r.status
FROM runs r LEFT JOIN step_metrics m ON m.run_id = r.run_id
GROUP BY r.run_id;
"#;

impl Dialect {
    /// The statements that create the store's tables and view where missing.
    pub(crate) fn schema(self) -> String {
        let (id, create_view) = match self {
            Self::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "CREATE VIEW IF NOT EXISTS"),
            Self::Postgres => ("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "CREATE OR REPLACE VIEW"),
        };
        SCHEMA.replace("{id}", id).replace("{create_view}", create_view)
    }

    /// The locking clause that lets several instances claim rows without waiting on each other.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A statement parameter: text or a 64-bit integer, either possibly NULL. Also what the dead-letter tables of
/// connections bind.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Arg {
    /// The parameter for the `postgres`/`tokio-postgres` clients.
    pub fn as_postgres(&self) -> &(dyn ::postgres::types::ToSql + Sync) {
        match self {
            Self::Text(t) => t,
            Self::Int(n) => n,
        }
    }
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Text(t) => t.to_sql(),
            Self::Int(n) => n.to_sql(),
        }
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_string()))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_string))
    }
}
impl From<Option<&String>> for Arg {
    fn from(v: Option<&String>) -> Self {
        Self::Text(v.cloned())
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Self::Int(Some(v as i64))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}

/// `args![a, b]`: statement parameters from anything [`Arg`] converts from.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::state_store::db::Arg::from($v)),*] };
}
pub(crate) use args;

/// A value read back.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
}

/// A row read back, its columns by position.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Val>);

impl Row {
    fn column(&self, i: usize) -> Result<&Val> {
        self.0.get(i).ok_or_else(|| StateError::Shape(format!("no column {i}")))
    }

    pub(crate) fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| StateError::Shape(format!("column {i} is NULL")))
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.column(i)? {
            Val::Null => Ok(None),
            Val::Text(t) => Ok(Some(t.clone())),
            Val::Int(n) => Ok(Some(n.to_string())),
        }
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| StateError::Shape(format!("column {i} is NULL")))
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.column(i)? {
            Val::Null => Ok(None),
            Val::Int(n) => Ok(Some(*n)),
            Val::Text(t) => {
                t.parse().map(Some).map_err(|_| StateError::Shape(format!("column {i} is not a number: {t}")))
            }
        }
    }
}

/// One open transaction of a store.
pub(crate) trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64>;
    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>>;
}

impl dyn Sql + '_ {
    pub(crate) fn query_opt(&mut self, sql: &str, args: &[Arg]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
}
