//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature): the pure parts of the readers, called on
//! arbitrary bytes. The readers as a whole are fuzzed through the engine, as a pipeline runs them.

use std::io::Cursor;

use crate::files::json::split::Records;

/// Selects the records at the JSONPath `path` in the JSON document `body`, as `read_api` and `read_webhook` do;
/// how many there are, or why there are none.
pub fn select_records(path: &str, body: &[u8]) -> Result<usize, String> {
    let path = crate::http::parse_path(path).map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    crate::http::objects(crate::http::select_values(&body, Some(&path))).map(|records| records.len())
}

/// Splits a JSON document into its records, as `read_json` does; how many, or why it is not records.
pub fn split_records(document: &[u8]) -> Result<usize, String> {
    let mut records = Records::new(Cursor::new(document)).map_err(|e| e.to_string())?;
    let mut count = 0;
    while let Some(record) = records.next_record().map_err(|e| e.to_string())? {
        serde_json::from_slice::<serde_json::Value>(&record.bytes).map_err(|e| format!("line {}: {e}", record.line))?;
        count += 1;
    }
    Ok(count)
}
