//! What every `write_db` does before talking to its database: add the audit columns, and check that the
//! input has the key and delete-flag columns the step names.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::lit;
use weir_engine::{NewDeadLetter, StepContext};
use weir_spec::WriteDb;

/// The columns [`with_audit_columns`] adds.
pub const AUDIT_COLUMNS: [&str; 2] = ["_weir_run_id", "_weir_loaded_at"];

/// The input, with `_weir_run_id` and `_weir_loaded_at` when the step asks for them.
pub fn with_audit_columns(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<DataFrame> {
    if !spec.audit_columns {
        return Ok(input);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let loaded_at = ScalarValue::TimestampMicrosecond(Some(now), Some("UTC".into()));
    input.with_column(AUDIT_COLUMNS[0], lit(cx.run_id.clone()))?.with_column(AUDIT_COLUMNS[1], lit(loaded_at))
}

/// Fails a load into a `system` whose loads cannot set single refused rows aside (they load set-based, all or
/// nothing) when the step asks for that with `on_error`.
pub fn refuse_row_by_row_errors(cx: &StepContext, system: &str) -> Result<()> {
    if cx.on_error == weir_spec::OnError::Fail {
        return Ok(());
    }
    Err(DataFusionError::Plan(format!(
        "step `{}`: {system} loads do not set refused rows aside yet; remove `on_error` (a refused row fails the load)",
        cx.step
    )))
}

/// The dead letter of a row the destination refused: the row as the step was given it, the database's reason, and
/// the row's place in the whole load (`position` counts this load call's rows from 1; batches before it are added).
/// The place is the dead letter's identity when a batch is loaded again (see [`StepContext::reject`]).
pub fn refused_letter(
    cx: &StepContext,
    record: serde_json::Value,
    position: u64,
    destination: (&str, &str),
    why: &str,
) -> NewDeadLetter {
    let (table, connection) = destination;
    let position = cx.batch.map_or(0, |b| b.rows_before) + position;
    NewDeadLetter {
        step: cx.step.clone(),
        record,
        error: format!("`{table}` refused the row: {why}"),
        origin: Some(format!("row {position} of the load into `{table}` on `{connection}`")),
    }
}

/// Hands the rows of `batch` the destination refused (`(row, reason)`) to the step's `on_error`, each without the
/// audit columns Weir added; `before` rows of this load call came before the batch. Returns how many there were.
pub fn reject_refused(
    cx: &StepContext,
    batch: &RecordBatch,
    refused: &[(usize, String)],
    before: u64,
    destination: (&str, &str),
) -> Result<u64> {
    let letters = refused
        .iter()
        .map(|(row, why)| {
            let mut record = weir_engine::rows_as_json(&batch.slice(*row, 1))?.pop().unwrap_or_default();
            if let Some(fields) = record.as_object_mut() {
                for audit in AUDIT_COLUMNS {
                    fields.remove(audit);
                }
            }
            Ok(refused_letter(cx, record, before + *row as u64 + 1, destination, why))
        })
        .collect::<Result<Vec<_>>>()?;
    cx.reject(letters)?;
    Ok(refused.len() as u64)
}

/// The input columns that go into the table: all but the delete flag. Fails when a key or the flag is missing.
pub fn data_fields<'a>(spec: &WriteDb, schema: &'a Schema) -> Result<Vec<&'a Field>> {
    if let Some(flag) = &spec.delete_when
        && schema.field_with_name(flag).is_err()
    {
        return Err(DataFusionError::Plan(format!("`delete_when: {flag}` names no input column")));
    }
    let fields: Vec<&Field> =
        schema.fields().iter().map(|f| f.as_ref()).filter(|f| Some(f.name()) != spec.delete_when.as_ref()).collect();
    for key in &spec.keys {
        if !fields.iter().any(|f| f.name() == key) {
            return Err(DataFusionError::Plan(format!("key column `{key}` is not in the input")));
        }
    }
    Ok(fields)
}

/// A database's column type for `field` (`ddl_type` is told whether the column is a key), or a plan error naming
/// the column and the system when Weir has none.
pub fn column_type(
    field: &Field,
    is_key: bool,
    system: &str,
    ddl_type: &dyn Fn(&DataType, bool) -> Option<String>,
) -> Result<String> {
    ddl_type(field.data_type(), is_key).ok_or_else(|| {
        DataFusionError::Plan(format!(
            "column `{}` is {}, which has no {system} column type in Weir yet; cast it in a sql step",
            field.name(),
            field.data_type()
        ))
    })
}

/// The column list of a table Weir creates for `fields`: each column with its type, the keys `NOT NULL` and
/// together the primary key.
pub fn column_definitions(
    spec: &WriteDb,
    fields: &[&Field],
    system: &str,
    quote: fn(&str) -> String,
    ddl_type: &dyn Fn(&DataType, bool) -> Option<String>,
) -> Result<String> {
    let mut defs = Vec::new();
    for f in fields {
        let is_key = spec.keys.contains(f.name());
        let ty = column_type(f, is_key, system, ddl_type)?;
        let not_null = if is_key { " NOT NULL" } else { "" };
        defs.push(format!("{} {ty}{not_null}", quote(f.name())));
    }
    if !spec.keys.is_empty() {
        defs.push(format!("PRIMARY KEY ({})", spec.keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")));
    }
    Ok(defs.join(", "))
}

/// The Arrow type a column is cast to before a row-by-row driver sends it: few types, each with one encoding in
/// every driver. Nested values go as text, their JSON.
pub fn canonical_type(ty: &DataType) -> DataType {
    match ty {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::UInt64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Decimal128(..) | DataType::Boolean | DataType::Date32 => ty.clone(),
        DataType::Decimal256(p, s) => DataType::Decimal128((*p).min(38), *s),
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        _ => DataType::Utf8,
    }
}

/// `array` cast to its [`canonical_type`]; nested values become their JSON text.
pub fn canonical(array: &ArrayRef) -> std::result::Result<ArrayRef, String> {
    let options = CastOptions { safe: false, ..Default::default() };
    crate::db::nested::cast_for_table(array, &canonical_type(array.data_type()), &options).map_err(|e| e.to_string())
}
