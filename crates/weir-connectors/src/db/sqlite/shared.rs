//! The loads of one run into one SQLite file share one connection and one transaction. SQLite has one writer per
//! file, so loads with a transaction each would wait on each other's lock until the run failed; sharing, they go
//! one after another and commit together or not at all. Each load is a savepoint inside the transaction: a load
//! that fails (and may be tried again) undoes only itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use datafusion::error::{DataFusionError, Result};
use rusqlite::Connection;
use weir_engine::{ResolvedConnection, StepContext};

use super::{busy_timeout, open, sqlite_error};

/// A run (and batch, for batch-by-batch loads) and the file it loads into.
type Key = (String, Option<u64>, PathBuf);

/// The transactions open now. An entry lives as long as a load holds it.
static OPEN: LazyLock<Mutex<HashMap<Key, Weak<Transaction>>>> = LazyLock::new(Default::default);

/// One run's transaction on one file.
pub struct Transaction {
    /// Held by one load at a time, for the whole of its load.
    pub db: tokio::sync::Mutex<Connection>,
    connection: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Loads written into the transaction and not yet committed.
    loaded: usize,
    /// A load was aborted, and with it the whole transaction.
    rolled_back: bool,
}

/// The transaction of `cx`'s run on `path`, begun by the first load that asks. A lock another process holds is
/// waited for up to the connection's `busy_timeout`, then fails naming the file.
pub fn join(cx: &StepContext, conn: &ResolvedConnection, path: &Path) -> Result<Arc<Transaction>> {
    let key = (cx.run_id.clone(), cx.batch.map(|b| b.index), path.to_path_buf());
    let mut open_now = OPEN.lock().expect("no panic while holding the lock");
    open_now.retain(|_, tx| tx.strong_count() > 0);
    if let Some(tx) = open_now.get(&key).and_then(Weak::upgrade)
        && !tx.state.lock().expect("no panic while holding the lock").rolled_back
    {
        return Ok(tx);
    }
    let db = open(conn, path)?;
    db.execute_batch("BEGIN IMMEDIATE").map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) => DataFusionError::Execution(format!(
            "`{}` ({}) is locked by another process: waited {} for it (the connection's `busy_timeout` sets how long)",
            conn.name,
            path.display(),
            busy_timeout(conn).map(|t| humantime::format_duration(t).to_string()).unwrap_or_default()
        )),
        _ => sqlite_error(&format!("cannot start a transaction on `{}` ({})", conn.name, path.display()), e),
    })?;
    let tx = Arc::new(Transaction {
        db: tokio::sync::Mutex::new(db),
        connection: conn.name.clone(),
        state: Mutex::new(State::default()),
    });
    open_now.insert(key, Arc::downgrade(&tx));
    Ok(tx)
}

impl Transaction {
    /// Counts a load written into the transaction, to be committed with the others.
    pub fn loaded(&self) {
        self.state.lock().expect("no panic while holding the lock").loaded += 1;
    }

    /// Commits once the last load written into the transaction is committed.
    pub async fn commit(&self, table: &str) -> Result<()> {
        let last = {
            let mut state = self.state.lock().expect("no panic while holding the lock");
            if state.rolled_back {
                return Err(DataFusionError::Execution(format!(
                    "the load of `{table}` on `{}` was rolled back with another load into the same file",
                    self.connection
                )));
            }
            state.loaded -= 1;
            state.loaded == 0
        };
        if !last {
            return Ok(());
        }
        self.db
            .lock()
            .await
            .execute_batch("COMMIT")
            .map_err(|e| sqlite_error(&format!("cannot commit the loads of `{}` (last `{table}`)", self.connection), e))
    }

    /// Rolls back every load of the transaction.
    pub async fn abort(&self) {
        let first =
            !std::mem::replace(&mut self.state.lock().expect("no panic while holding the lock").rolled_back, true);
        if first {
            let _ = self.db.lock().await.execute_batch("ROLLBACK");
        }
    }
}
