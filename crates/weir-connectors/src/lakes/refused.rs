//! Rows a lake table cannot hold: a value its column's type cannot take (`lots` for a double), or a null in a
//! required column. They go to the step's `on_error` (fail naming the record, skip, or the dead-letter store with
//! the reason) and the rest of the batch goes on, cast to the table's types.

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::kernels::boolean::{and, not, or};
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch, is_not_null, is_null};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use weir_engine::{NewDeadLetter, StepContext, rows_as_json};

/// `batch` (which has `target`'s columns, in its order, in the input's types) in `target`'s types, without the
/// rows the table refuses; those are handed to the step's `on_error`.
pub fn conform(batch: &RecordBatch, target: &SchemaRef, cx: &StepContext) -> Result<RecordBatch> {
    let safe = CastOptions { safe: true, ..Default::default() };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    let mut refused: Option<BooleanArray> = None;
    for (column, field) in batch.columns().iter().zip(target.fields()) {
        let cast = match column.data_type() == field.data_type() {
            true => column.clone(),
            false => cast_with_options(column, field.data_type(), &safe)?,
        };
        let lost = refusals(column, &cast, field)?;
        refused = Some(match refused {
            Some(before) => or(&before, &lost)?,
            None => lost,
        });
        columns.push(cast);
    }
    let Some(refused) = refused.filter(|r| r.true_count() > 0) else {
        return Ok(RecordBatch::try_new(target.clone(), columns)?);
    };
    // Until the refused rows are out, a required column may hold nulls, which its field does not allow.
    let nullable =
        Schema::new(target.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>());
    let cast = RecordBatch::try_new(Arc::new(nullable), columns)?;
    let letters = letters(batch, &cast, target, &refused, cx)?;
    cx.reject(letters)?;
    let kept = filter_record_batch(&cast, &not(&refused)?)?;
    Ok(RecordBatch::try_new(target.clone(), kept.columns().to_vec())?)
}

/// `input` with [`conform`] applied batch by batch to the table's columns (`table`; the input's other columns as
/// they are), as a DataFrame on the same session: for a library that takes the rows to write as a DataFrame.
pub async fn filtered(input: DataFrame, table: &Schema, cx: &StepContext) -> Result<DataFrame> {
    let fields: Vec<Field> = input
        .schema()
        .fields()
        .iter()
        .map(|f| match table.field_with_name(f.name()) {
            Ok(column) => Field::new(f.name(), column.data_type().clone(), column.is_nullable()),
            Err(_) => f.as_ref().clone(),
        })
        .collect();
    let target = Arc::new(Schema::new(fields));
    let (state, plan) = input.into_parts();
    let plan = state.create_physical_plan(&plan).await?;
    // One stream per partition of the input, so the library still writes them in parallel.
    let partitions = (0..plan.properties().output_partitioning().partition_count())
        .map(|partition| {
            let rows = Refusing { plan: plan.clone(), partition, target: target.clone(), cx: cx.clone() };
            Arc::new(rows) as Arc<dyn PartitionStream>
        })
        .collect();
    let table = StreamingTable::try_new(target, partitions)?;
    SessionContext::new_with_state(state).read_table(Arc::new(table))
}

/// One partition of the input plan, its batches through [`conform`].
struct Refusing {
    plan: Arc<dyn ExecutionPlan>,
    partition: usize,
    target: SchemaRef,
    cx: StepContext,
}

impl std::fmt::Debug for Refusing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rows the table can hold")
    }
}

impl PartitionStream for Refusing {
    fn schema(&self) -> &SchemaRef {
        &self.target
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (target, cx) = (self.target.clone(), self.cx.clone());
        let batches = match self.plan.execute(self.partition, ctx) {
            Ok(stream) => stream.map(move |batch| conform(&batch?, &target, &cx)).boxed(),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        };
        Box::pin(RecordBatchStreamAdapter::new(self.target.clone(), batches))
    }
}

/// The rows whose value the cast lost, or that are null where `field` is required.
fn refusals(column: &ArrayRef, cast: &ArrayRef, field: &Field) -> Result<BooleanArray> {
    let lost = and(&is_not_null(column)?, &is_null(cast)?)?;
    Ok(match field.is_nullable() {
        true => lost,
        false => or(&lost, &is_null(cast)?)?,
    })
}

/// One dead letter per refused row: the input row as JSON, and why, naming the column and value.
fn letters(
    batch: &RecordBatch,
    cast: &RecordBatch,
    target: &SchemaRef,
    refused: &BooleanArray,
    cx: &StepContext,
) -> Result<Vec<NewDeadLetter>> {
    let records = rows_as_json(&filter_record_batch(batch, refused)?)?;
    let rows = (0..refused.len()).filter(|&row| refused.value(row));
    let options = FormatOptions::default();
    rows.zip(records)
        .map(|(row, record)| {
            let error = target
                .fields()
                .iter()
                .enumerate()
                .find_map(|(i, field)| {
                    let (input, out) = (batch.column(i), cast.column(i));
                    if input.is_valid(row) && out.is_null(row) {
                        let value = ArrayFormatter::try_new(input.as_ref(), &options).ok()?.value(row).to_string();
                        Some(format!("column `{}`: `{value}` is not a {}", field.name(), field.data_type()))
                    } else if !field.is_nullable() && out.is_null(row) {
                        Some(format!("column `{}` is required by the table and is null", field.name()))
                    } else {
                        None
                    }
                })
                .unwrap_or_else(|| "the table refuses the row".to_string());
            Ok(NewDeadLetter { step: cx.step.clone(), record, error, origin: None })
        })
        .collect()
}
