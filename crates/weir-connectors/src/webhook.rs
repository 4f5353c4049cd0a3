//! `read_webhook`: the records of the request that started the run, decoded with the step's declared schema. A
//! record that does not fit fails the run (and so the request, with its position and reason).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result};
use serde_json::{Map, Value};
use weir_engine::{StepContext, records_table};
use weir_spec::{ReadWebhook, WebhookFormat};

use crate::files::json::declared_schema;
use crate::http::{parse_path, select_records};

pub fn table(spec: &ReadWebhook, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let declared = declared_schema(Some(&spec.schema))?.expect("the schema is required");
    let schema: SchemaRef = match spec.format {
        WebhookFormat::Records => declared,
        WebhookFormat::Debezium => {
            let mut fields: Vec<Field> = declared.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("_op", DataType::Utf8, false));
            fields.push(Field::new("_deleted", DataType::Boolean, false));
            Arc::new(Schema::new(fields))
        }
    };
    let Some(body) = cx.payload.as_deref() else {
        if !cx.planning {
            tracing::info!(step = %cx.step, "No webhook request: `{}` is empty (weir serve feeds it; `weir run --payload` too)", cx.step);
        }
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    };
    let path = spec.records.as_ref().map(|p| parse_path(&p.value)).transpose()?;
    let records = select_records(body, path.as_ref()).map_err(DataFusionError::Execution)?;
    let rows = records
        .into_iter()
        .enumerate()
        .map(|(i, record)| match spec.format {
            WebhookFormat::Records => Ok(record.clone()),
            WebhookFormat::Debezium => {
                change_row(record).map_err(|e| DataFusionError::Execution(format!("record {}: {e}", i + 1)))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let table = records_table(schema, &rows).map_err(|bad| DataFusionError::Execution(bad.to_string()))?;
    Ok(Arc::new(table))
}

/// A Debezium change event as a row: its after image (before image for a delete), `_op` and `_deleted`.
fn change_row(event: &Value) -> std::result::Result<Value, String> {
    let event = event.get("payload").filter(|p| p.get("op").is_some()).unwrap_or(event);
    let op = event.get("op").and_then(Value::as_str).ok_or("a change event needs `op` (c, u, d or r)")?;
    let image = match op {
        "c" | "u" | "r" => "after",
        "d" => "before",
        other => return Err(format!("unknown change event op `{other}`; expected c, u, d or r")),
    };
    let mut row: Map<String, Value> = match event.get(image) {
        Some(Value::Object(fields)) => fields.clone(),
        _ => return Err(format!("a `{op}` event needs its `{image}` image")),
    };
    row.insert("_op".into(), Value::String(op.into()));
    row.insert("_deleted".into(), Value::Bool(op == "d"));
    Ok(Value::Object(row))
}
