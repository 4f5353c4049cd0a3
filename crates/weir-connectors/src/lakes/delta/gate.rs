//! Holds a delta-rs operation's commit until Weir's run commits.
//!
//! delta-rs's write, merge and delete each write their data files and then commit in one call. Weir prepares
//! every load of a run before committing any, so the operation runs against a [`Gate`]: a log store that passes
//! everything to the table's own log store except the first `write_commit_entry` (the atomic step that makes
//! a version exist), which it reports as ready and holds until the run says commit or abort. Until then the
//! new data files are in the table's directory but no version names them: readers do not see them, and a run
//! killed at this point leaves the table at its last version (`VACUUM` removes such files). Released, the commit
//! goes on inside delta-rs, conflict checks and retries included, when another writer took the version.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use deltalake_core::kernel::Version;
use deltalake_core::kernel::transaction::TransactionError;
use deltalake_core::logstore::{CommitOrBytes, LogStore, LogStoreConfig, LogStoreRef};
use deltalake_core::{DeltaResult, ObjectStore};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A commit delta-rs is ready to make.
pub struct Held {
    /// The version the commit will create, unless another writer takes it first.
    pub version: Version,
    /// The commit's actions as delta-rs will write them (one JSON object a line), when its log store takes bytes.
    pub log: Option<Bytes>,
}

/// What the run decided for a held commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort,
}

/// The table's log store with its first commit held (see the module doc).
pub struct Gate {
    inner: LogStoreRef,
    ready: Mutex<Option<oneshot::Sender<Held>>>,
    decision: tokio::sync::Mutex<Option<oneshot::Receiver<Decision>>>,
}

impl Gate {
    /// A gate over `inner`, the receiver told when the commit is ready, and the sender of the run's decision.
    pub fn new(inner: LogStoreRef) -> (Arc<Self>, oneshot::Receiver<Held>, oneshot::Sender<Decision>) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (decide_tx, decide_rx) = oneshot::channel();
        let gate =
            Self { inner, ready: Mutex::new(Some(ready_tx)), decision: tokio::sync::Mutex::new(Some(decide_rx)) };
        (Arc::new(gate), ready_rx, decide_tx)
    }
}

#[async_trait]
impl LogStore for Gate {
    /// The inner store's name: delta-rs passes commit bytes (rather than a temporary file) to stores it knows by
    /// name, and its conditional-put stores are such.
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn refresh(&self) -> DeltaResult<()> {
        self.inner.refresh().await
    }

    async fn read_commit_entry(&self, version: Version) -> DeltaResult<Option<Bytes>> {
        self.inner.read_commit_entry(version).await
    }

    async fn write_commit_entry(
        &self,
        version: Version,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        // The first attempt waits for the run; retries after a lost race for the version go straight on.
        let decision = self.decision.lock().await.take();
        if let Some(decision) = decision {
            let log = match &commit_or_bytes {
                CommitOrBytes::LogBytes(bytes) => Some(bytes.clone()),
                CommitOrBytes::TmpCommit(_) => None,
            };
            if let Some(ready) = self.ready.lock().expect("the gate's lock is never poisoned").take() {
                // The load may have gone (its run failed elsewhere): then the decision below is an abort.
                let _ = ready.send(Held { version, log });
            }
            if decision.await.unwrap_or(Decision::Abort) == Decision::Abort {
                // delta-rs aborts the entry itself on this error.
                return Err(TransactionError::LogStoreError {
                    msg: "the run did not commit".into(),
                    source: "aborted by Weir".into(),
                });
            }
        }
        self.inner.write_commit_entry(version, commit_or_bytes, operation_id).await
    }

    async fn abort_commit_entry(
        &self,
        version: Version,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        self.inner.abort_commit_entry(version, commit_or_bytes, operation_id).await
    }

    async fn get_latest_version(&self, start_version: Version) -> DeltaResult<Version> {
        self.inner.get_latest_version(start_version).await
    }

    fn object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.object_store(operation_id)
    }

    fn root_object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.root_object_store(operation_id)
    }

    fn config(&self) -> &LogStoreConfig {
        self.inner.config()
    }
}
