//! Variables and state as the run sees them: typed values resolved from the file, `--var` and the state store,
//! bound into SQL as parameters and rendered into templates as text.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::common::{ParamValues, ScalarValue};
use weir_spec::{Pipeline, TypedValue};

/// Resolves every declared variable from `--var` overrides and defaults.
pub fn resolve_variables(
    pipeline: &Pipeline,
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, TypedValue>, String> {
    if let Some(unknown) = overrides.keys().find(|k| !pipeline.variables.contains_key(*k)) {
        let declared: Vec<&str> = pipeline.variables.keys().map(String::as_str).collect();
        return Err(format!("`--var {unknown}=…` names no variable; declared: {}", list_or_none(&declared)));
    }
    let mut out = BTreeMap::new();
    for (name, var) in &pipeline.variables {
        let value = match (overrides.get(name), &var.value.default) {
            (Some(text), _) => TypedValue::parse(var.value.ty, text).map_err(|e| format!("--var {name}: {e}"))?,
            (None, Some(default)) => {
                TypedValue::from_json(var.value.ty, &default.value).map_err(|e| format!("variable `{name}`: {e}"))?
            }
            (None, None) => return Err(format!("variable `{name}` has no default; pass `--var {name}=…`")),
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Resolves every declared state value: stored if the store has one of the declared type, else the default.
pub fn resolve_state(
    pipeline: &Pipeline,
    stored: &BTreeMap<String, TypedValue>,
) -> Result<BTreeMap<String, TypedValue>, String> {
    let mut out = BTreeMap::new();
    for (name, decl) in &pipeline.state {
        let value = match stored.get(name) {
            Some(v) if v.value_type() == decl.value.ty => v.clone(),
            _ => TypedValue::from_json(decl.value.ty, &decl.value.default.value)
                .map_err(|e| format!("state `{name}`: {e}"))?,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

/// The SQL parameter a value binds as.
pub fn to_scalar(value: &TypedValue) -> ScalarValue {
    match value {
        TypedValue::String(s) => ScalarValue::Utf8(Some(s.clone())),
        TypedValue::Integer(i) => ScalarValue::Int64(Some(*i)),
        TypedValue::Float(f) => ScalarValue::Float64(Some(*f)),
        TypedValue::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        TypedValue::Date(d) => {
            let days = NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(|date| (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32)
                .ok();
            ScalarValue::Date32(days)
        }
        TypedValue::Timestamp(t) => ScalarValue::TimestampMicrosecond(timestamp_micros(t), None),
    }
}

/// Microseconds since the epoch in UTC; a timestamp without a zone is taken as UTC.
pub fn timestamp_micros(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// Variables and state bound by name, for `$name` in SQL.
pub fn sql_params(variables: &BTreeMap<String, TypedValue>, state: &BTreeMap<String, TypedValue>) -> ParamValues {
    ParamValues::Map(variables.iter().chain(state.iter()).map(|(k, v)| (k.clone(), to_scalar(v).into())).collect())
}

/// The text a state value becomes after `update: max`, from whatever scalar type the column had.
pub fn typed_from_scalar(ty: weir_spec::ValueType, scalar: &ScalarValue) -> Result<TypedValue, String> {
    // Arrow's cast renders timestamps and dates as ISO-8601, unlike `Display` of some timestamp units.
    let text = match scalar.cast_to(&datafusion::arrow::datatypes::DataType::Utf8) {
        Ok(ScalarValue::Utf8(Some(t))) => t,
        _ => scalar.to_string(),
    };
    TypedValue::parse(ty, &text).map_err(|e| format!("cannot store max value as {ty:?}: {e}"))
}
