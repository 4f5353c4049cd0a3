//! The seam between the engine and the systems it reads and writes. The engine plans and runs steps; a
//! [`Connectors`] implementation (the `weir-connectors` crate) turns extract steps into tables and load steps into
//! writes that commit only when the whole run succeeds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use weir_spec::{OnError, Spanned, Step, Template};

use crate::metrics::StepCounters;
use crate::state_store::{NewDeadLetter, StateStore};

/// Extract and load steps, by kind.
#[async_trait]
pub trait Connectors: Send + Sync {
    /// A table for an extract step. Scanning it must stream: no connector may hold a whole input in memory.
    async fn source(&self, session: &SessionContext, step: &Step, cx: &StepContext) -> Result<Arc<dyn TableProvider>>;

    /// Writes `input` for a load step where nobody can see it yet, returning what makes it visible.
    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>>;
}

/// Data written by a load step but not yet visible at its destination. Every load of a run is prepared before any
/// is committed, so a failure anywhere leaves every destination as it was.
#[async_trait]
pub trait PendingLoad: Send {
    /// Rows written.
    fn rows(&self) -> u64;
    /// Makes the data visible (an atomic rename, a transaction commit).
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Throws the data away.
    async fn abort(self: Box<Self>);
}

/// What a step sees of its run.
#[derive(Clone)]
pub struct StepContext {
    pub pipeline: String,
    pub step: String,
    pub run_id: String,
    /// The directory of the pipeline file; relative paths start here.
    pub base_dir: PathBuf,
    /// The temporary directory of this run, removed when it ends.
    pub scratch_dir: PathBuf,
    pub batch_size: usize,
    pub on_error: OnError,
    pub(crate) templates: Arc<HashMap<&'static str, HashMap<String, String>>>,
    pub(crate) store: Arc<StateStore>,
    pub(crate) counters: Arc<StepCounters>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext").field("pipeline", &self.pipeline).field("step", &self.step).finish_non_exhaustive()
    }
}

impl StepContext {
    /// Renders `{{ scope.name }}` placeholders.
    pub fn render(&self, text: &Spanned<String>) -> Result<String> {
        Template(&text.value).render(&self.templates).map_err(|e| DataFusionError::Plan(e.to_string()))
    }

    /// Renders a path and makes it absolute against the pipeline's directory (URLs pass through).
    pub fn path(&self, text: &Spanned<String>) -> Result<String> {
        let rendered = self.render(text)?;
        if rendered.contains("://") || Path::new(&rendered).is_absolute() {
            return Ok(rendered);
        }
        Ok(self.base_dir.join(rendered).to_string_lossy().into_owned())
    }

    /// Hands over records this step could not process, following its `on_error`: fail on the first, count and drop
    /// them, or keep them in the dead-letter store. Nothing is dropped silently: skipped and dead-lettered records
    /// are counted as `rows_invalid`.
    pub fn reject(&self, letters: Vec<NewDeadLetter>) -> Result<()> {
        let Some(first) = letters.first() else { return Ok(()) };
        match self.on_error {
            OnError::Fail => {
                let origin = first.origin.as_deref().map(|o| format!(" at {o}")).unwrap_or_default();
                Err(DataFusionError::Execution(format!(
                    "{}{origin}; record: {}{}",
                    first.error,
                    truncate(&first.record.to_string(), 300),
                    hint_on_error(letters.len())
                )))
            }
            OnError::Skip => {
                self.counters.add_invalid(letters.len() as u64);
                Ok(())
            }
            OnError::DeadLetter => {
                self.store
                    .add_dead_letters(&self.pipeline, &self.run_id, &letters)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                self.counters.add_invalid(letters.len() as u64);
                Ok(())
            }
        }
    }
}

fn hint_on_error(count: usize) -> String {
    let more = if count > 1 { format!(" ({} bad records in this batch)", count) } else { String::new() };
    format!("{more}. Set `on_error: dead_letter` on the step to keep bad records aside and go on")
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
