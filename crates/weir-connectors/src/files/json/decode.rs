//! JSON records into Arrow batches of a schema, with Arrow's JSON decoder. A record that does not fit (a field of
//! another type than the schema's, a value that is not JSON) is set aside by the step's `on_error` with where it
//! came from, the field, and what it was instead; the other records of its batch go on.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use serde_json::Value;
use weir_engine::{NewDeadLetter, StepContext, truncate};

/// Where a record came from, told by the line (or number) it starts at: `data/a.json:12`, `page 3, record 7`.
pub type Origin = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// Records waiting to be decoded into the next batch.
pub struct RecordDecoder<'a> {
    schema: SchemaRef,
    /// The schema was inferred from the first records, not declared: said in the reason of a misfit.
    inferred: Option<usize>,
    cx: &'a StepContext,
    origin: Origin,
    pending: Vec<(u64, Vec<u8>)>,
}

impl<'a> RecordDecoder<'a> {
    /// `inferred` is the number of records the schema was inferred from, if it was not declared.
    pub fn new(schema: SchemaRef, inferred: Option<usize>, cx: &'a StepContext, origin: Origin) -> Self {
        Self { schema, inferred, cx, origin, pending: Vec::new() }
    }

    /// Adds a record (a JSON object's bytes) that starts at `line`.
    pub fn push(&mut self, line: u64, bytes: Vec<u8>) {
        self.pending.push((line, bytes));
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Decodes the records pushed since the last flush. The decoder reports a misfit without its record, so a
    /// batch that fails is decoded again one record at a time to find the ones that do not fit.
    pub fn flush(&mut self) -> Result<RecordBatch> {
        let pending = std::mem::take(&mut self.pending);
        let all: Vec<&[u8]> = pending.iter().map(|(_, b)| b.as_slice()).collect();
        if let Ok(batch) = decode(&self.schema, &all) {
            return Ok(batch);
        }
        let mut fitting = Vec::with_capacity(pending.len());
        let mut letters = Vec::new();
        for (line, bytes) in &pending {
            match decode(&self.schema, &[bytes.as_slice()]) {
                Ok(_) => fitting.push(bytes.as_slice()),
                Err(e) => letters.push(self.letter(*line, bytes, &e)),
            }
        }
        self.cx.reject(letters)?;
        Ok(decode(&self.schema, &fitting)?)
    }

    fn letter(&self, line: u64, bytes: &[u8], error: &ArrowError) -> NewDeadLetter {
        let record = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| serde_json::json!({ "text": String::from_utf8_lossy(bytes) }));
        let hint = match self.inferred {
            Some(n) => format!(" (the type was inferred from the first {n} records; declare `schema:` to change it)"),
            None => String::new(),
        };
        NewDeadLetter {
            step: self.cx.step.clone(),
            error: format!("{}{hint}", misfit(&self.schema, &record, error)),
            record,
            origin: Some((self.origin)(line)),
        }
    }
}

/// Records as one batch of `schema`. Numbers and booleans read into text columns as their JSON text.
fn decode(schema: &SchemaRef, records: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(records.len().max(1))
        .with_coerce_primitive(true)
        .build_decoder()?;
    for bytes in records {
        decoder.decode(bytes)?;
        decoder.decode(b"\n")?;
    }
    Ok(decoder.flush()?.unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// Why `record` does not fit `schema`, from the decoder's `error`: the field's path, the JSON it holds and the type
/// the schema has, where the error names a field.
fn misfit(schema: &SchemaRef, record: &Value, error: &ArrowError) -> String {
    let text = error.to_string();
    let mut rest = text.strip_prefix("Json error: ").unwrap_or(&text);
    let mut path = Vec::new();
    while let Some(after) = rest.strip_prefix("whilst decoding field '")
        && let Some((name, tail)) = after.split_once("': ")
    {
        path.push(name);
        rest = tail;
    }
    if path.is_empty() {
        return format!("the record is not valid JSON for its columns: {rest}");
    }
    let shown = path.join(".");
    let expected = field_type(schema, &path);
    let found = path.iter().try_fold(record, |value, name| value.get(name));
    match (expected, found) {
        (Some(expected), Some(found)) => {
            let value = truncate(&found.to_string(), 80);
            format!("field `{shown}` is {} ({value}), where the column is {expected}", json_type(found))
        }
        _ => format!("field `{shown}`: {rest}"),
    }
}

/// The type of the field at `path` (through structs).
fn field_type(schema: &SchemaRef, path: &[&str]) -> Option<DataType> {
    let (first, inner) = path.split_first()?;
    let mut ty = schema.field_with_name(first).ok()?.data_type().clone();
    for name in inner {
        let DataType::Struct(fields) = &ty else { return None };
        ty = fields.iter().find(|f| f.name() == name)?.data_type().clone();
    }
    Some(ty)
}

/// What a JSON value is, for messages: `a string`, `an array`.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Fields, Schema};

    use super::*;

    #[test]
    fn a_misfit_names_the_field_what_it_holds_and_the_columns_type() {
        let nested = Fields::from(vec![Field::new("n", DataType::Int64, true)]);
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Struct(nested), true)]));
        let record = serde_json::json!({ "a": { "n": "many" } });
        let error = decode(&schema, &[record.to_string().as_bytes()]).unwrap_err();
        assert_eq!(misfit(&schema, &record, &error), "field `a.n` is a string (\"many\"), where the column is Int64");
    }
}
