//! `read_webhook`: the records of the request that started the run, decoded with the step's declared schema. A
//! record that does not fit is set aside by the step's `on_error` with its position (by default it fails the run,
//! and so the request, with its position and reason).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result};
use serde_json::{Map, Value};
use tracing::info;
use weir_engine::StepContext;
use weir_spec::{ReadWebhook, WebhookFormat};

use crate::db::types::declared_schema;
use crate::files::json::{Origin, RecordDecoder};
use crate::http::{objects, parse_path, select_values};

pub fn table(spec: &ReadWebhook, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let declared = declared_schema(Some(&spec.schema))?.expect("the schema is required");
    let schema: SchemaRef = match spec.format {
        WebhookFormat::Records => declared,
        WebhookFormat::Debezium => {
            let mut fields: Vec<Field> = declared.fields().iter().map(|f| f.as_ref().clone()).collect();
            if spec.keep_op {
                fields.push(Field::new("_op", DataType::Utf8, false));
            }
            fields.push(Field::new("_deleted", DataType::Boolean, false));
            Arc::new(Schema::new(fields))
        }
    };
    let Some(body) = cx.payload.as_deref() else {
        if !cx.planning {
            info!(step = %cx.step, "No webhook request: `{}` is empty (weir serve feeds it; `weir run --payload` too)", cx.step);
        }
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    };
    let path = spec.records.as_ref().map(|p| parse_path(&p.value)).transpose()?;
    let mut values = select_values(body, path.as_ref());
    if spec.format == WebhookFormat::Debezium {
        let before = values.len();
        values.retain(|v| !v.is_null());
        let tombstones = before - values.len();
        if tombstones > 0 {
            cx.counters().add_skipped(tombstones as u64);
            info!(step = %cx.step, tombstones, "Skipped {tombstones} tombstones (the null after each delete)");
        }
    }
    let records = objects(values).map_err(DataFusionError::Execution)?;
    let origin: Origin = Arc::new(|n| format!("record {n} of the request"));
    let mut decoder = RecordDecoder::new(schema.clone(), None, cx, origin);
    for (i, record) in records.into_iter().enumerate() {
        let row = match spec.format {
            WebhookFormat::Records => record.clone(),
            WebhookFormat::Debezium => change_row(record, spec.keep_op)
                .map_err(|e| DataFusionError::Execution(format!("record {}: {e}", i + 1)))?,
        };
        let bytes = serde_json::to_vec(&row).map_err(|e| DataFusionError::External(Box::new(e)))?;
        decoder.push(i as u64 + 1, bytes);
    }
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![decoder.flush()?]])?))
}

/// A Debezium change event as a row: its after image (before image for a delete), `_deleted`, and `_op` if kept.
fn change_row(event: &Value, keep_op: bool) -> std::result::Result<Value, String> {
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
    if keep_op {
        row.insert("_op".into(), Value::String(op.into()));
    }
    row.insert("_deleted".into(), Value::Bool(op == "d"));
    Ok(Value::Object(row))
}
