//! JSON records as a table of a declared schema, for records that arrive whole rather than from a file: the dead
//! letters a replay sends back.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::catalog::MemTable;

/// A record that does not fit the schema: its 1-based position (when it could be told) and why.
#[derive(Debug, thiserror::Error)]
#[error("{}does not fit the declared schema: {reason}", .position.map(|p| format!("record {p} ")).unwrap_or_default())]
pub struct BadRecord {
    pub position: Option<usize>,
    pub reason: String,
}

/// `records` (JSON objects) as one table of `schema`.
pub fn records_table(schema: SchemaRef, records: &[serde_json::Value]) -> Result<MemTable, BadRecord> {
    let lines: Vec<String> = records.iter().map(ToString::to_string).collect();
    let batch = match decode(&schema, &lines) {
        Ok(batch) => batch,
        // The decoder reports a bad value without its record: find it, one record at a time.
        Err(e) => {
            let position =
                lines.iter().position(|line| decode(&schema, std::slice::from_ref(line)).is_err()).map(|i| i + 1);
            return Err(BadRecord { position, reason: e.to_string() });
        }
    };
    MemTable::try_new(schema, vec![batch.into_iter().collect()])
        .map_err(|e| BadRecord { position: None, reason: e.to_string() })
}

/// NDJSON lines as one batch of `schema`.
fn decode(schema: &SchemaRef, lines: &[String]) -> Result<Option<RecordBatch>, ArrowError> {
    let mut decoder = ReaderBuilder::new(schema.clone()).with_batch_size(lines.len().max(1)).build_decoder()?;
    for line in lines {
        decoder.decode(line.as_bytes())?;
        decoder.decode(b"\n")?;
    }
    decoder.flush()
}
