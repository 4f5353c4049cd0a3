//! Delta Lake tables through delta-rs (`deltalake-core`), which runs on Weir's DataFusion: [`read`] registers a
//! table (or its change data feed) as a DataFusion table, [`write`] runs delta-rs's own write, merge and delete
//! with their commit held back by [`gate`] until the run commits, and [`maintain`] compacts, vacuums and
//! checkpoints.
//!
//! Tables on object storage are opened on the same object stores (and connections) as Weir's file steps, handed
//! to delta-rs ready-made; its commits use the store's conditional put (`PutMode::Create`), which S3, Azure Blob
//! and GCS provide, so two writers can never both create the same version.

mod gate;
pub mod maintain;
pub mod read;
pub mod write;

use std::sync::{Arc, Once};

use datafusion::error::{DataFusionError, Result};
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, LogStoreRef, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake_core::{DeltaResult, DeltaTableBuilder, DeltaTableError};
use reqwest::Url;
use serde_json::Value;
use weir_engine::StepContext;
use weir_spec::Spanned;

use crate::object_store::remote;

/// Where a Delta table lives, ready to open.
pub struct Location {
    url: Url,
    /// The bucket's store for a table on object storage; local tables are opened by delta-rs itself.
    store: Option<ObjectStoreRef>,
}

impl Location {
    /// The table at the step's `path`, through its `connection` when on object storage. A local directory is
    /// created when `create` is set (a table a load is about to create).
    pub fn of(
        path: &Spanned<String>,
        connection: Option<&Spanned<String>>,
        cx: &StepContext,
        create: bool,
    ) -> Result<Self> {
        let rendered = cx.path(path)?;
        if !remote::is_remote(&rendered) {
            let dir = std::path::Path::new(&rendered);
            if create {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DataFusionError::Execution(format!("cannot create {}: {e}", dir.display())))?;
            }
            let absolute = std::path::absolute(dir).map_err(|e| DataFusionError::Plan(format!("{rendered}: {e}")))?;
            let url = Url::from_directory_path(&absolute)
                .map_err(|()| DataFusionError::Plan(format!("`{rendered}` is not a directory path")))?;
            return Ok(Self { url, store: None });
        }
        let url = Url::parse(rendered.trim_end_matches('/'))
            .map_err(|e| DataFusionError::Plan(format!("`{rendered}` is not a URL: {e}")))?;
        register_log_stores();
        let store = remote::store_of(&url, connection, cx)?;
        Ok(Self { url, store: Some(store) })
    }

    /// A builder for the table, not yet loaded.
    pub fn builder(&self) -> Result<DeltaTableBuilder> {
        let builder = DeltaTableBuilder::from_url(self.url.clone()).map_err(|e| self.error(e))?;
        Ok(match &self.store {
            Some(store) => builder.with_storage_backend(store.clone(), self.url.clone()),
            None => builder,
        })
    }

    /// The table's log store, for a load that opens the table itself.
    pub fn log_store(&self) -> Result<LogStoreRef> {
        self.builder()?.build_storage().map_err(|e| self.error(e))
    }

    /// A delta-rs error, said of this table.
    pub fn error(&self, e: DeltaTableError) -> DataFusionError {
        let shown = self.shown();
        match e {
            DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_) => {
                DataFusionError::Plan(format!("{shown} is not a Delta table (it has no _delta_log)"))
            }
            other => DataFusionError::External(format!("Delta table {shown}: {other}").into()),
        }
    }

    /// The table as users wrote it: a local path, or the URL.
    pub fn shown(&self) -> String {
        match self.url.scheme() {
            "file" => self.url.to_file_path().map_or_else(|()| self.url.to_string(), |p| p.display().to_string()),
            _ => self.url.to_string(),
        }
    }
}

/// Weir's pipeline, step and run in a commit's metadata, for the table's history.
fn commit_properties(cx: &StepContext) -> CommitProperties {
    CommitProperties::default().with_metadata(super::run_metadata(cx).map(|(key, value)| (key, Value::from(value))))
}

/// Registers delta-rs's default log store (commits by conditional put) for the object-storage schemes Weir
/// speaks; delta-rs's cloud crates would register their own along with clients Weir already has.
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = logstore_factories();
        for scheme in ["s3", "s3a", "az", "azure", "abfs", "abfss", "gs"] {
            let url = Url::parse(&format!("{scheme}://")).expect("a scheme is a URL");
            if !factories.contains_key(&url) {
                factories.insert(url, Arc::new(ConditionalPut));
            }
        }
    });
}

/// Log stores that commit a version by creating its file only if absent.
struct ConditionalPut;

impl LogStoreFactory for ConditionalPut {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}
