//! The state store: runs, per-step metrics, state values, dead letters, run logs, checkpoints and schedule fires.
//! Embedded by default (SQLite, [`sqlite`]); shared by several instances in PostgreSQL ([`postgres`]). Every
//! operation below is one transaction written once for both (see [`db`]).

mod audit;
mod checkpoints;
mod checks;
mod db;
mod dead_letters;
mod fires;
mod logs;
mod model_answers;
pub mod postgres;
mod runs;
mod sqlite;
mod values;

pub use audit::AuditEntry;
pub use checks::CheckRecord;
pub use dead_letters::{DeadLetter, DeadLetterFilter, NewDeadLetter};
pub use logs::LogLine;
pub use runs::{ResumableRun, RunRecord, StepMetricsRow};

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

    /// An in-memory store holding this one's state values of `pipeline`, for a dry run that must see the real
    /// cursors but record nothing.
    pub fn scratch_copy(&self, pipeline: &str) -> Result<Self> {
        let copy = Self::in_memory()?;
        for (name, value) in self.state(pipeline)? {
            copy.set_state(pipeline, &name, &value)?;
        }
        Ok(copy)
    }
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
