//! Rows as a test sees them: Arrow batches turned into JSON objects (and given JSON rows into batches), and the
//! comparison of expected rows with actual ones that says what differs.

use std::sync::{Arc, LazyLock};

use anyhow::{Context, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::json::{ArrayWriter, ReaderBuilder, WriterBuilder, reader::infer_json_schema_from_iterator};
use regex::Regex;
use serde_json::{Map, Value};
use weir_spec::OrderedMap;

pub type Row = Map<String, Value>;

/// The rows of `batches` as JSON objects, NULLs written out (so a missing column and a NULL look alike to nobody).
pub fn to_json(batches: &[RecordBatch]) -> anyhow::Result<Vec<Row>> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Value> = serde_json::from_slice(&bytes)?;
    Ok(rows.into_iter().filter_map(|r| if let Value::Object(m) = r { Some(m) } else { None }).collect())
}

static DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}$").expect("static regex"));
static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(?<zone>Z|[+-]\d{2}:?\d{2})?$")
        .expect("static regex")
});

/// Given rows as one batch. Types are inferred from the values; a text column whose every value is a date
/// (`2024-01-15`) or a timestamp (`2024-01-15T10:00:00Z`) becomes one, as the step it stands in for would give it.
/// Columns come in the order the rows first name them.
pub fn from_json(given: &[OrderedMap<Value>]) -> anyhow::Result<RecordBatch> {
    if given.is_empty() {
        bail!("`rows` is empty, and column types come from the rows: give a CSV `file` with a header instead");
    }
    let mut order: Vec<&str> = Vec::new();
    for (name, _) in given.iter().flat_map(OrderedMap::iter) {
        if !order.contains(&name) {
            order.push(name);
        }
    }
    let rows: Vec<Value> =
        given.iter().map(|r| Value::Object(r.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())).collect();
    let inferred = infer_json_schema_from_iterator(rows.iter().map(|r| Ok(r.clone())))?;
    let schema = Schema::new(
        order.iter().map(|name| inferred.field_with_name(name).cloned()).collect::<Result<Vec<Field>, _>>()?,
    );
    let mut decoder = ReaderBuilder::new(Arc::new(schema.clone())).build_decoder()?;
    decoder.serialize(&rows)?;
    let batch = decoder.flush()?.context("no rows decoded")?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let texts: Vec<&str> = rows.iter().filter_map(|r| r.get(field.name()).and_then(Value::as_str)).collect();
        let temporal = match field.data_type() {
            DataType::Utf8 if !texts.is_empty() && texts.iter().all(|t| DATE.is_match(t)) => Some(DataType::Date32),
            DataType::Utf8 if !texts.is_empty() && texts.iter().all(|t| TIMESTAMP.is_match(t)) => {
                let zoned = texts.iter().any(|t| TIMESTAMP.captures(t).is_some_and(|c| c.name("zone").is_some()));
                Some(DataType::Timestamp(TimeUnit::Microsecond, zoned.then(|| "UTC".into())))
            }
            _ => None,
        };
        match temporal.and_then(|ty| cast(column, &ty).ok().map(|c| (ty, c))) {
            Some((ty, cast)) => {
                fields.push(Field::new(field.name(), ty, true));
                columns.push(cast);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Whether an actual value is the expected one: numbers by value (`1` is `1.0`, and a decimal written as text is
/// its number), timestamps by instant, anything else exactly.
pub fn same(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(e), Value::Number(a)) => numbers_equal(e.as_f64(), a.as_f64()),
        (Value::Number(e), Value::String(a)) | (Value::String(a), Value::Number(e)) => {
            numbers_equal(e.as_f64(), a.parse().ok())
        }
        (Value::String(e), Value::String(a)) => e == a || instant(e).is_some_and(|e| instant(a) == Some(e)),
        _ => expected == actual,
    }
}

fn numbers_equal(e: Option<f64>, a: Option<f64>) -> bool {
    match (e, a) {
        (Some(e), Some(a)) => e == a || (e - a).abs() <= 1e-9 * e.abs().max(a.abs()),
        _ => false,
    }
}

/// A timestamp's instant (text without a zone is taken as UTC, as Weir writes zone-less timestamps).
fn instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

/// Whether `actual` has every value `expected` names (a missing value is NULL).
pub fn matches<'a>(mut expected: impl Iterator<Item = (&'a str, &'a Value)>, actual: &Row) -> bool {
    expected.all(|(k, e)| same(e, actual.get(k).unwrap_or(&Value::Null)))
}

/// The columns of the expected rows, in the order they first name them.
pub fn columns_of(expected: &[OrderedMap<Value>]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for (name, _) in expected.iter().flat_map(OrderedMap::iter) {
        if !seen.iter().any(|s| s == name) {
            seen.push(name.to_string());
        }
    }
    seen
}

/// `row`'s values of `columns` as a JSON object, in that order (NULL where it has none).
pub fn shown(row: &Row, columns: &[String]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|c| format!("{}:{}", Value::String(c.clone()), row.get(c).unwrap_or(&Value::Null)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// What differs between expected and actual rows, or `None` when they match. Only the columns the expected rows
/// name are compared (and shown; all of `actual_columns` when they name none); `ordered` compares row by row, else
/// as multisets.
pub fn differences(
    expected: &[OrderedMap<Value>],
    actual: &[Row],
    actual_columns: &[String],
    ordered: bool,
) -> Option<String> {
    let named = columns_of(expected);
    let columns = if named.is_empty() { actual_columns.to_vec() } else { named };
    let fits = |e: &OrderedMap<Value>, a: &Row| matches(e.iter(), a);
    let (missing, extra): (Vec<&OrderedMap<Value>>, Vec<&Row>) = if ordered {
        match expected.iter().zip(actual).position(|(e, a)| !fits(e, a)) {
            Some(i) => (vec![&expected[i]], vec![&actual[i]]),
            None if expected.len() == actual.len() => return None,
            None => (expected.iter().skip(actual.len()).collect(), actual.iter().skip(expected.len()).collect()),
        }
    } else {
        let mut used = vec![false; actual.len()];
        let mut missing = Vec::new();
        for e in expected {
            match (0..actual.len()).find(|&i| !used[i] && fits(e, &actual[i])) {
                Some(i) => used[i] = true,
                None => missing.push(e),
            }
        }
        let extra: Vec<&Row> = actual.iter().zip(&used).filter(|(_, u)| !**u).map(|(a, _)| a).collect();
        if missing.is_empty() && extra.is_empty() {
            return None;
        }
        (missing, extra)
    };
    let mut out = format!("expected {} rows, got {}", expected.len(), actual.len());
    if ordered {
        out.push_str(" (in order)");
    }
    let left: Vec<String> =
        missing.iter().map(|r| shown(&r.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(), &columns)).collect();
    let right: Vec<String> = extra.iter().map(|r| shown(r, &columns)).collect();
    let width = left.iter().map(|s| s.chars().count()).max().unwrap_or(0).clamp(8, 60);
    out.push_str(&format!("\n      {:<width$} | {}", "expected, not produced", "produced, not expected"));
    for i in 0..left.len().max(right.len()).min(10) {
        let l = left.get(i).map_or("", String::as_str);
        let r = right.get(i).map_or("", String::as_str);
        out.push_str(&format!("\n      {l:<width$} | {r}"));
    }
    if left.len().max(right.len()) > 10 {
        out.push_str(&format!("\n      … and {} more", left.len().max(right.len()) - 10));
    }
    Some(out)
}

/// `batches` as a JSON array text, for SQL assertion messages.
pub fn preview(batches: &[RecordBatch]) -> String {
    let mut writer = ArrayWriter::new(Vec::new());
    let written = batches.iter().try_for_each(|b| writer.write(b)).and_then(|()| writer.finish());
    match written {
        Ok(()) => weir_engine::truncate(&String::from_utf8_lossy(&writer.into_inner()), 300),
        Err(e) => format!("(cannot show: {e})"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// Rows as a test file gives them, in YAML.
    pub fn given(yaml: &str) -> Vec<OrderedMap<Value>> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn given_rows_get_dates_and_timestamps() {
        let batch = from_json(&given(
            "- { id: 1, day: 2024-01-15, at: 2024-01-15T10:00:00Z, note: x }\n- { id: 2, day: 2024-01-16, at: 2024-01-16T11:30:00Z, note: null }\n",
        ))
        .unwrap();
        let types: Vec<String> = batch.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
        assert_eq!(types, ["Int64", "Date32", "Timestamp(µs, \"UTC\")", "Utf8"]);
        let back = to_json(&[batch]).unwrap();
        assert_eq!(back[1]["note"], Value::Null);
        assert!(same(&json!("2024-01-16T11:30:00Z"), &back[1]["at"]), "{}", back[1]["at"]);
    }

    #[test]
    fn differences_name_the_rows_on_each_side() {
        let actual: Vec<Row> = [json!({"id": 1, "v": 1.0, "x": 9}), json!({"id": 2, "v": "2.50"})]
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect();
        let columns = ["id".to_string(), "v".to_string(), "x".to_string()];
        assert_eq!(differences(&given("[{ v: 2.5, id: 2 }, { id: 1, v: 1 }]"), &actual, &columns, false), None);
        let diff = differences(&given("[{ v: 1, id: 1 }, { v: 3, id: 3 }]"), &actual, &columns, false).unwrap();
        assert!(diff.contains("expected 2 rows, got 2"), "{diff}");
        assert!(
            diff.contains(r#"{"v":3,"id":3} | {"v":"2.50","id":2}"#),
            "columns in the order the case names them: {diff}"
        );
        let diff = differences(&given("[{ id: 2 }, { id: 1 }]"), &actual, &columns, true).unwrap();
        assert!(diff.contains("(in order)"), "{diff}");
        let diff = differences(&[], &actual, &columns, false).unwrap();
        assert!(diff.contains(r#"| {"id":1,"v":1.0,"x":9}"#), "{diff}");
    }
}
