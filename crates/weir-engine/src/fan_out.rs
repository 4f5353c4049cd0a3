//! A step read by several others runs once and streams to all of them at once. Each reader has a slot: a queue
//! in memory of at most [`QUEUE_BYTES`], accounted in the run's memory pool. The step advances as its slowest
//! reader takes, so readers that keep up cost no copy at all. A reader that stops taking for [`STALL`] (a join
//! reading its other side first, a load still connecting) is left behind rather than holding the others: what
//! it has not taken goes to a spill file in the run's scratch directory, which it reads before it catches up.
//!
//! Every reader must be known before the step starts. A run plans each load's input once before it executes any
//! ([`FanOut::arm`]); each scan planned until then is one reader. A step that something reads outside the loads'
//! streams (a check after the loads, `enrich_api` while planning) is materialized instead (see `materialize`).

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_datafusion_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use futures::{Stream, StreamExt};
use tokio::sync::Notify;

/// What one reader may hold in memory before the step waits for it (or, once it stalls, spills for it).
const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// How long a reader with a full queue may take nothing before the others go on without it.
const STALL: Duration = Duration::from_millis(250);

/// The table of a step with several readers.
pub struct FanOut {
    shared: Arc<Shared>,
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FanOut({})", self.shared.step)
    }
}

struct Shared {
    step: String,
    table: Arc<dyn TableProvider>,
    scratch_dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the producer: a reader took a batch, claimed its slot or went away.
    taken: Notify,
}

#[derive(Default)]
struct State {
    /// The step's own plan, made by its first scan.
    upstream: Option<Arc<dyn ExecutionPlan>>,
    /// Scans planned before the run armed the step: one reader each.
    planned: usize,
    /// One per planned reader, once armed.
    slots: Option<Vec<Slot>>,
    started: Option<Instant>,
    producer: Option<SpawnedTask<()>>,
    reservation: Option<MemoryReservation>,
    end: Option<End>,
    spill_files: usize,
}

#[derive(Clone)]
enum End {
    Done,
    Failed(Arc<DataFusionError>),
}

#[derive(Default)]
struct Slot {
    /// When its reader last took a batch (or claimed the slot); `None` until claimed.
    taken_at: Option<Instant>,
    closed: bool,
    queue: VecDeque<RecordBatch>,
    queued_bytes: usize,
    /// Batches after those in `queue`, set down while the reader lagged; drained before memory is used again.
    spill: Option<Spill>,
    waker: Option<Waker>,
}

/// How a slot lets the step go on.
enum Pace {
    /// Its reader takes and has room.
    Accepting,
    /// Its reader is left behind: new batches go to its spill file.
    Lagging,
    /// Full (or not yet claimed) for less than [`STALL`]: the step waits at most this long for it.
    Holding(Duration),
}

impl Slot {
    fn pace(&self, now: Instant, started: Instant) -> Pace {
        if self.spill.is_some() {
            return Pace::Lagging;
        }
        if self.taken_at.is_some() && self.queued_bytes < QUEUE_BYTES {
            return Pace::Accepting;
        }
        let idle = now.saturating_duration_since(self.taken_at.unwrap_or(started));
        match STALL.checked_sub(idle) {
            Some(left) if !left.is_zero() => Pace::Holding(left),
            _ => Pace::Lagging,
        }
    }
}

/// What the producer does next.
enum Next {
    Go,
    Wait(Duration),
    Stop,
}

impl State {
    fn next(&self, now: Instant) -> Next {
        let Some(slots) = &self.slots else { return Next::Wait(STALL) };
        let started = self.started.unwrap_or(now);
        let mut accepting = false;
        let mut hold: Option<Duration> = None;
        let mut open = false;
        for slot in slots.iter().filter(|s| !s.closed) {
            open = true;
            match slot.pace(now, started) {
                Pace::Accepting => accepting = true,
                Pace::Lagging => {}
                Pace::Holding(left) => hold = Some(hold.map_or(left, |h| h.min(left))),
            }
        }
        match (open, hold, accepting) {
            (false, _, _) => Next::Stop,
            (true, Some(left), _) => Next::Wait(left),
            (true, None, true) => Next::Go,
            // Every reader is behind: wait until one catches up.
            (true, None, false) => Next::Wait(STALL),
        }
    }
}

/// A spill file written by the producer and read by one reader, batch by batch, while it is written.
struct Spill {
    path: PathBuf,
    writer: StreamWriter<BufWriter<File>>,
    reader: Option<StreamReader<BufReader<File>>>,
    written: usize,
    read: usize,
}

impl Spill {
    fn create(path: PathBuf, schema: &SchemaRef) -> Result<Self> {
        let file = File::create(&path).map_err(|e| spill_error(&path, e))?;
        let mut writer = StreamWriter::try_new(BufWriter::new(file), schema)?;
        writer.flush()?;
        Ok(Self { path, writer, reader: None, written: 0, read: 0 })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.writer.flush()?;
        self.written += 1;
        Ok(())
    }

    /// The next batch written and not yet read; `None` when the reader has caught up.
    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.read == self.written {
            return None;
        }
        self.read += 1;
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => match File::open(&self.path)
                .map_err(|e| spill_error(&self.path, e))
                .and_then(|file| Ok(StreamReader::try_new(BufReader::new(file), None)?))
            {
                Ok(reader) => self.reader.insert(reader),
                Err(e) => return Some(Err(e)),
            },
        };
        Some(match reader.next() {
            Some(batch) => batch.map_err(DataFusionError::from),
            None => Err(internal_datafusion_err!("the spill file {} ended early", self.path.display())),
        })
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spill_error(path: &std::path::Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("cannot use the spill file {}: {e}", path.display()))
}

impl FanOut {
    pub fn new(step: &str, table: Arc<dyn TableProvider>, scratch_dir: PathBuf) -> Self {
        let shared = Shared {
            step: step.to_string(),
            table,
            scratch_dir,
            state: Mutex::new(State::default()),
            taken: Notify::new(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// Ends planning: the scans made so far are the step's readers, and the next executions claim them.
    pub fn arm(&self) {
        let mut state = self.shared.lock();
        let planned = state.planned;
        state.slots.get_or_insert_with(|| (0..planned).map(|_| Slot::default()).collect());
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        // A run that ends (or is stopped) with readers still unclaimed leaves no producer behind.
        self.shared.lock().producer.take();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the next reader's slot, starting the step on the first claim.
    fn claim(self: &Arc<Self>, context: &Arc<TaskContext>) -> Result<usize> {
        let mut state = self.lock();
        let Some(slots) = state.slots.as_mut() else {
            return exec_err!("step `{}` was read before its run started its loads", self.step);
        };
        let Some(slot) = slots.iter().position(|s| s.taken_at.is_none() && !s.closed) else {
            return exec_err!(
                "step `{}` was read by more readers than its run planned ({}); a load may have read its input twice",
                self.step,
                slots.len()
            );
        };
        slots[slot].taken_at = Some(Instant::now());
        if state.producer.is_none() {
            let upstream = state.upstream.clone().ok_or_else(|| internal_datafusion_err!("no plan for a fan-out"))?;
            let plan: Arc<dyn ExecutionPlan> = match upstream.output_partitioning().partition_count() {
                1 => upstream,
                _ => Arc::new(CoalescePartitionsExec::new(upstream)),
            };
            let input = plan.execute(0, Arc::clone(context))?;
            state.reservation =
                Some(MemoryConsumer::new(format!("fan-out of `{}`", self.step)).register(context.memory_pool()));
            state.started = Some(Instant::now());
            state.producer = Some(SpawnedTask::spawn(produce(Arc::clone(self), input)));
        }
        drop(state);
        self.taken.notify_one();
        Ok(slot)
    }

    /// Waits until the step may produce its next batch; `false` when no reader is left.
    async fn ready(&self) -> bool {
        loop {
            let wait = match self.lock().next(Instant::now()) {
                Next::Go => return true,
                Next::Stop => return false,
                Next::Wait(wait) => wait,
            };
            let _ = tokio::time::timeout(wait, self.taken.notified()).await;
        }
    }

    /// Hands a batch to every open slot: into memory where its reader keeps up, else to its spill file.
    fn deliver(&self, batch: RecordBatch) -> Result<()> {
        let size = batch.get_array_memory_size();
        let mut guard = self.lock();
        let state = &mut *guard;
        let slots = state.slots.as_mut().expect("the producer starts once armed");
        let reservation = state.reservation.as_ref().expect("the producer starts with its reservation");
        let started = state.started.unwrap_or_else(Instant::now);
        let now = Instant::now();
        for (index, slot) in slots.iter_mut().enumerate().filter(|(_, s)| !s.closed) {
            let in_memory = matches!(slot.pace(now, started), Pace::Accepting) && reservation.try_grow(size).is_ok();
            if in_memory {
                slot.queue.push_back(batch.clone());
                slot.queued_bytes += size;
            } else {
                let spill = match &mut slot.spill {
                    Some(spill) => spill,
                    None => {
                        state.spill_files += 1;
                        let path =
                            self.scratch_dir.join(format!("{}.reader-{index}.{}.arrow", self.step, state.spill_files));
                        std::fs::create_dir_all(&self.scratch_dir).map_err(|e| spill_error(&path, e))?;
                        slot.spill.insert(Spill::create(path, &batch.schema())?)
                    }
                };
                spill.write(&batch)?;
            }
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
        Ok(())
    }

    fn finish(&self, end: End) {
        let mut state = self.lock();
        state.end = Some(end);
        for slot in state.slots.iter_mut().flatten() {
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    fn poll_slot(&self, index: usize, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(End::Failed(e)) = &state.end {
            return Poll::Ready(Some(Err(DataFusionError::Shared(Arc::clone(e)))));
        }
        let slot = &mut state.slots.as_mut().expect("claimed slots exist")[index];
        if let Some(batch) = slot.queue.pop_front() {
            let size = batch.get_array_memory_size();
            slot.queued_bytes -= size;
            slot.taken_at = Some(Instant::now());
            if let Some(reservation) = &state.reservation {
                reservation.shrink(size);
            }
            drop(guard);
            self.taken.notify_one();
            return Poll::Ready(Some(Ok(batch)));
        }
        if let Some(spill) = &mut slot.spill {
            match spill.next() {
                Some(batch) => {
                    slot.taken_at = Some(Instant::now());
                    return Poll::Ready(Some(batch));
                }
                None => {
                    // Caught up: batches go to memory again.
                    slot.spill = None;
                    self.taken.notify_one();
                }
            }
        }
        match &state.end {
            Some(_) => Poll::Ready(None),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn close(&self, index: usize) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(slot) = state.slots.as_mut().and_then(|s| s.get_mut(index)) {
            slot.closed = true;
            slot.spill = None;
            slot.queue.clear();
            if let Some(reservation) = &state.reservation {
                reservation.shrink(std::mem::take(&mut slot.queued_bytes));
            }
        }
        drop(guard);
        self.taken.notify_one();
    }
}

/// Runs the step, handing each batch to its readers as fast as they let it.
async fn produce(shared: Arc<Shared>, mut input: SendableRecordBatchStream) {
    loop {
        if !shared.ready().await {
            return;
        }
        let end = match input.next().await {
            Some(Ok(batch)) => match shared.deliver(batch) {
                Ok(()) => continue,
                Err(e) => End::Failed(Arc::new(e)),
            },
            Some(Err(e)) => End::Failed(Arc::new(e)),
            None => End::Done,
        };
        shared.finish(end);
        return;
    }
}

#[async_trait]
impl TableProvider for FanOut {
    fn schema(&self) -> SchemaRef {
        self.shared.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.shared.lock().upstream.is_none() {
            let upstream = self.shared.table.scan(state, None, &[], None).await?;
            self.shared.lock().upstream.get_or_insert(upstream);
        }
        {
            let mut state = self.shared.lock();
            if state.slots.is_none() {
                state.planned += 1;
            }
        }
        let schema = self.schema();
        let projection = projection.cloned();
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&projected)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(FanOutExec {
            shared: Arc::clone(&self.shared),
            projection,
            schema: projected,
            properties: Arc::new(properties),
        }))
    }
}

/// One reader of a fan-out step.
struct FanOutExec {
    shared: Arc<Shared>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for FanOutExec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FanOutExec({})", self.shared.step)
    }
}

impl DisplayAs for FanOutExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WeirFanOut: step={}", self.shared.step)
    }
}

impl ExecutionPlan for FanOutExec {
    fn name(&self) -> &str {
        "WeirFanOut"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("a fan-out reader has one partition, not {partition}");
        }
        let slot = self.shared.claim(&context)?;
        Ok(Box::pin(Reader {
            shared: Arc::clone(&self.shared),
            slot,
            projection: self.projection.clone(),
            schema: Arc::clone(&self.schema),
            done: false,
        }))
    }
}

/// The stream of one claimed slot.
struct Reader {
    shared: Arc<Shared>,
    slot: usize,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    done: bool,
}

impl Stream for Reader {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self.shared.poll_slot(self.slot, cx);
        match polled {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(match &self.projection {
                Some(p) => batch.project(p).map_err(DataFusionError::from),
                None => Ok(batch),
            })),
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl RecordBatchStream for Reader {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.close(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// A session whose memory pool holds a few batches at most, and `src`: ids 0 to 99,999 in batches of 1,000,
    /// behind a fan-out that has `readers` planned scans and is armed.
    async fn fan_out(readers: usize, dir: &std::path::Path) -> (SessionContext, Arc<FanOut>) {
        let runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(GreedyMemoryPool::new(64 * 1024)));
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime.build_arc().unwrap());
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batches = (0..100)
            .map(|i| {
                let ids = Int64Array::from_iter_values(i * 1000..(i + 1) * 1000);
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()
            })
            .collect();
        let table = Arc::new(MemTable::try_new(schema, vec![batches]).unwrap());
        let fan_out = Arc::new(FanOut::new("src", table, dir.to_path_buf()));
        ctx.register_table("src", fan_out.clone()).unwrap();
        for _ in 0..readers {
            ctx.table("src").await.unwrap().create_physical_plan().await.unwrap();
        }
        fan_out.arm();
        (ctx, fan_out)
    }

    async fn ids(stream: &mut SendableRecordBatchStream) -> Vec<i64> {
        let mut ids = Vec::new();
        while let Some(batch) = stream.next().await {
            ids.extend(batch.unwrap().column(0).as_primitive::<Int64Type>().values().iter().copied());
        }
        ids.sort_unstable();
        ids
    }

    #[tokio::test]
    async fn a_reader_that_stops_taking_is_left_behind_on_disk_and_still_reads_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, fan_out) = fan_out(2, dir.path()).await;
        let mut fast = ctx.table("src").await.unwrap().execute_stream().await.unwrap();
        let mut slow = ctx.table("src").await.unwrap().execute_stream().await.unwrap();
        let first = slow.next().await.unwrap().unwrap();
        assert_eq!(ids(&mut fast).await, (0..100_000).collect::<Vec<_>>());
        assert!(fan_out.shared.lock().spill_files > 0, "the idle reader's batches went to a spill file");
        let mut rest = ids(&mut slow).await;
        rest.extend(first.column(0).as_primitive::<Int64Type>().values().iter().copied());
        rest.sort_unstable();
        assert_eq!(rest, (0..100_000).collect::<Vec<_>>());
        drop((fast, slow));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "spill files are removed once read");
    }

    #[tokio::test]
    async fn a_planned_reader_that_never_reads_holds_no_other_back() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _fan_out) = fan_out(3, dir.path()).await;
        let mut a = ctx.table("src").await.unwrap().execute_stream().await.unwrap();
        let mut b = ctx.table("src").await.unwrap().execute_stream().await.unwrap();
        let (a, b) = futures::join!(ids(&mut a), ids(&mut b));
        assert_eq!(a.len(), 100_000);
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn a_reader_more_than_planned_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _fan_out) = fan_out(1, dir.path()).await;
        let _only = ctx.table("src").await.unwrap().execute_stream().await.unwrap();
        let err = ctx.table("src").await.unwrap().execute_stream().await.err().expect("a second reader fails");
        assert!(err.to_string().contains("step `src` was read by more readers than its run planned (1)"), "{err}");
    }

    #[tokio::test]
    async fn an_error_of_the_step_reaches_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        ctx.register_table("ids", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let failing = ctx.sql("SELECT 10 / (id - id) AS v FROM ids").await.unwrap().into_view();
        let fan_out = Arc::new(FanOut::new("broken", failing, dir.path().to_path_buf()));
        ctx.register_table("broken", fan_out.clone()).unwrap();
        for _ in 0..2 {
            ctx.table("broken").await.unwrap().create_physical_plan().await.unwrap();
        }
        fan_out.arm();
        for _ in 0..2 {
            let err = ctx.table("broken").await.unwrap().collect().await.err();
            assert!(err.is_some_and(|e| e.to_string().contains("Divide by zero")));
        }
    }
}
