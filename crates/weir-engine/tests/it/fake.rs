//! A [`Connectors`] whose every extract step is the same small table and whose loads and actions only write down
//! what happened, in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use weir_engine::{Connectors, Engine, PendingLoad, RunOptions, StateStore, StepContext, Transient};
use weir_spec::{Pipeline, RetryOn, Step};

/// What the fake was asked to do, in order: `prepare a 3`, `prepare b 3 batch 2`, `commit a`, `abort b`,
/// `action x`.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The place of the first line starting with `prefix`.
    pub fn first(&self, prefix: &str) -> Option<usize> {
        self.lines().iter().position(|l| l.starts_with(prefix))
    }
}

#[derive(Default)]
pub struct Fake {
    pub log: Log,
    /// Rows every extract step yields: `id` 1 to this.
    pub rows: i64,
    /// Loads that fail to prepare.
    pub failing: HashSet<String>,
    /// Loads whose connection drops this many times before they prepare.
    pub drops: Mutex<HashMap<String, u32>>,
    /// Loads that commit batch by batch, and the batch at which one fails once.
    pub batched: HashSet<String>,
    pub fail_batch: Mutex<Option<(String, u64)>>,
    /// Batches committed so far, per load: the checkpoint the destination would keep.
    committed: Arc<Mutex<HashMap<String, u64>>>,
}

impl Fake {
    pub fn new(rows: i64) -> Self {
        Self { rows, ..Self::default() }
    }

    pub fn committed_batches(&self, step: &str) -> u64 {
        self.committed.lock().unwrap().get(step).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Connectors for Fake {
    async fn source(&self, _: &SessionContext, _: &Step, _: &StepContext) -> Result<Arc<dyn TableProvider>> {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let ids = Int64Array::from_iter_values(1..=self.rows);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)])?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    async fn sink(&self, step: &Step, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
        let id = step.id().to_string();
        let rows: usize = input.collect().await?.iter().map(RecordBatch::num_rows).sum();
        if let Some(left) = self.drops.lock().unwrap().get_mut(&id).filter(|n| **n > 0) {
            *left -= 1;
            self.log.push(format!("drop {id}"));
            return Err(Transient::error(RetryOn::Connection, "the connection dropped".into()));
        }
        let batch = cx.batch.map(|b| b.index);
        let mut fail_batch = self.fail_batch.lock().unwrap();
        if self.failing.contains(&id) || fail_batch.as_ref().is_some_and(|(s, b)| *s == id && Some(*b) == batch) {
            fail_batch.take();
            self.log.push(format!("refuse {id}"));
            return Err(DataFusionError::Execution(format!("`{id}` refused its rows")));
        }
        let suffix = batch.map(|b| format!(" batch {b}")).unwrap_or_default();
        self.log.push(format!("prepare {id} {rows}{suffix}"));
        Ok(Box::new(Pending { log: self.log.clone(), id, rows: rows as u64, batch, committed: self.committed.clone() }))
    }

    async fn action(&self, step: &Step, _: &StepContext) -> Result<u64> {
        self.log.push(format!("action {}", step.id()));
        Ok(0)
    }

    fn loads_in_batches(&self, step: &Step, _: &StepContext) -> bool {
        self.batched.contains(step.id())
    }

    async fn committed_batches(&self, step: &Step, _: &StepContext) -> Result<u64> {
        Ok(self.committed_batches(step.id()))
    }
}

struct Pending {
    log: Log,
    id: String,
    rows: u64,
    batch: Option<u64>,
    committed: Arc<Mutex<HashMap<String, u64>>>,
}

#[async_trait]
impl PendingLoad for Pending {
    fn rows(&self) -> u64 {
        self.rows
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        if let Some(index) = self.batch {
            self.committed.lock().unwrap().insert(self.id.clone(), index + 1);
        }
        self.log.push(format!("commit {}", self.id));
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        self.log.push(format!("abort {}", self.id));
    }
}

/// An engine over `fake` with an in-memory store, and run options rooted in `dir`.
pub fn engine(fake: Fake, dir: &std::path::Path) -> (Engine, RunOptions) {
    let engine = Engine::new(Arc::new(fake), Arc::new(StateStore::in_memory().unwrap()));
    let options = RunOptions {
        trigger: "test".into(),
        variables: Default::default(),
        memory_limit: None,
        base_dir: dir.to_path_buf(),
        scratch_root: dir.join("tmp"),
        dry_run: false,
        packages: dir.join("packages"),
        cancel: Default::default(),
        record_state: true,
        payload: None,
        run_id: None,
        engine: None,
    };
    (engine, options)
}

pub fn pipeline(yaml: &str) -> Pipeline {
    Pipeline::from_yaml_str(yaml).unwrap_or_else(|d| panic!("{d}"))
}
