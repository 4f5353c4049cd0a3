//! What every `write_db` does before talking to its database: add the audit columns, and check that the
//! input has the key and delete-flag columns the step names.

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::lit;
use weir_engine::StepContext;
use weir_spec::WriteDb;

/// The input, with `_weir_run_id` and `_weir_loaded_at` when the step asks for them.
pub fn with_audit_columns(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<DataFrame> {
    if !spec.audit_columns {
        return Ok(input);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let loaded_at = ScalarValue::TimestampMicrosecond(Some(now), Some("UTC".into()));
    input.with_column("_weir_run_id", lit(cx.run_id.clone()))?.with_column("_weir_loaded_at", lit(loaded_at))
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
