//! `settings.dead_letters: { connection, table }`: dead letters in a table of a database connection, created when
//! missing. The statements are written once here (`CAST`, `$n` parameters); each system that can hold dead letters
//! runs them through its own [`LetterSession`] (in its folder), turning them into its own SQL where it must. The
//! engine calls the store synchronously from inside a run, so networked systems run on the runtime's blocking
//! section.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::error::{DataFusionError, Result};
use weir_engine::state_store::{Arg, DeadLetter, DeadLetterFilter, NewDeadLetter};
use weir_engine::{DeadLetters, DlqResult};

pub const COLUMNS: &str = "id, pipeline, run_id, step, record, error, origin, created_at, retry_count";

/// How one database system runs the dead-letter statements.
pub trait LetterSession: Send + Sync + 'static {
    /// The type of the `id` column: an auto-incremented primary key.
    const ID_COLUMN: &'static str;

    /// `name` quoted as an identifier.
    fn quote(name: &str) -> String;

    /// Runs `create` (of `table`, quoted) unless `created` says the table exists (then sets it), and `statements` in order in one
    /// transaction; returns the rows of the last query and the rows the others affected. Queries start with
    /// `SELECT` and return [`COLUMNS`].
    fn run(
        &self,
        table: &str,
        create: &str,
        created: &AtomicBool,
        statements: &[(String, Vec<Arg>)],
    ) -> DlqResult<(Vec<DeadLetter>, u64)>;
}

/// The store for `table` through `session`.
pub fn open<S: LetterSession>(session: S, table: &str) -> Result<Arc<dyn DeadLetters>> {
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(DataFusionError::Plan(format!("`{table}` is not a table name (letters, digits, `_`, `.`)")));
    }
    let table = table.split('.').map(S::quote).collect::<Vec<_>>().join(".");
    Ok(Arc::new(Table { session, table, created: AtomicBool::new(false) }))
}

struct Table<S> {
    session: S,
    table: String,
    /// Set once the table is known to exist, so later operations skip the check.
    created: AtomicBool,
}

impl<S: LetterSession> Table<S> {
    fn run(&self, statements: &[(String, Vec<Arg>)]) -> DlqResult<(Vec<DeadLetter>, u64)> {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (id {}, pipeline TEXT NOT NULL, run_id TEXT NOT NULL, step TEXT NOT NULL, \
             record TEXT NOT NULL, error TEXT NOT NULL, origin TEXT, created_at TEXT NOT NULL, retry_count INTEGER NOT NULL DEFAULT 0)",
            self.table,
            S::ID_COLUMN
        );
        self.session.run(&self.table, &create, &self.created, statements)
    }
}

/// A dead letter from the columns of [`COLUMNS`], in order.
#[allow(clippy::too_many_arguments)]
pub fn letter(
    id: i64,
    pipeline: String,
    run_id: String,
    step: String,
    record: String,
    error: String,
    origin: Option<String>,
    created_at: String,
    retry_count: i64,
) -> DeadLetter {
    let record = serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record));
    DeadLetter { id, pipeline, run_id, step, record, error, origin, created_at, retry_count }
}

/// Whether the table still has to be created: the first operation of a store creates it.
pub fn needs_create(created: &AtomicBool) -> bool {
    !created.load(Ordering::Relaxed)
}

/// Notes that the table exists.
pub fn mark_created(created: &AtomicBool) {
    created.store(true, Ordering::Relaxed);
}

impl<S: LetterSession> DeadLetters for Table<S> {
    fn add(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> DlqResult<()> {
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sql = format!(
            "INSERT INTO {} (pipeline, run_id, step, record, error, origin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            self.table
        );
        let statements: Vec<(String, Vec<Arg>)> = letters
            .iter()
            .map(|l| {
                let params = vec![
                    Arg::from(pipeline),
                    Arg::from(run_id),
                    Arg::from(&l.step),
                    Arg::from(l.record.to_string()),
                    Arg::from(&l.error),
                    Arg::from(l.origin.as_ref()),
                    Arg::from(&created),
                ];
                (sql.clone(), params)
            })
            .collect();
        self.run(&statements).map(drop)
    }

    fn matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> DlqResult<Vec<DeadLetter>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE pipeline = $1 AND (CAST($2 AS TEXT) IS NULL OR run_id = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR step = $3) AND (CAST($4 AS BIGINT) IS NULL OR id = $4) ORDER BY id",
            self.table
        );
        let params = vec![
            Arg::from(pipeline),
            Arg::from(filter.run_id.as_ref()),
            Arg::from(filter.step.as_ref()),
            Arg::from(filter.id),
        ];
        Ok(self.run(&[(sql, params)])?.0)
    }

    fn remove(&self, pipeline: &str, ids: &[i64]) -> DlqResult<usize> {
        let sql = format!("DELETE FROM {} WHERE pipeline = $1 AND id = $2", self.table);
        let statements: Vec<_> =
            ids.iter().map(|id| (sql.clone(), vec![Arg::from(pipeline), Arg::from(*id)])).collect();
        Ok(self.run(&statements)?.1 as usize)
    }

    fn retried(&self, pipeline: &str, id: i64, error: Option<&str>) -> DlqResult<()> {
        let sql = format!(
            "UPDATE {} SET retry_count = retry_count + 1, error = coalesce(CAST($3 AS TEXT), error) WHERE pipeline = $1 AND id = $2",
            self.table
        );
        let params = vec![Arg::from(pipeline), Arg::from(id), Arg::from(error)];
        self.run(&[(sql, params)]).map(drop)
    }
}
