//! The fields an `ai_extract` step asks for: the JSON Schema the model is held to, their lines in the prompt, the
//! check of every answer in Weir, and their Arrow columns.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Map, Value, json};
use weir_spec::{ExtractField, FieldType};

/// The fields, in output order.
#[derive(Debug, Clone)]
pub struct Fields(Vec<(String, ExtractField)>);

/// The name of the id each record of a batched answer carries.
pub const ID: &str = "id";

impl Fields {
    pub fn new(fields: Vec<(String, ExtractField)>) -> Self {
        Self(fields)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }

    /// The JSON Schema of one answer, in the form strict structured output accepts: every property required and
    /// no others, an optional field being nullable instead. With `id`, the record also carries its integer id.
    pub fn record_schema(&self, id: bool) -> Value {
        let mut properties = Map::new();
        if id {
            properties.insert(ID.into(), json!({ "type": "integer" }));
        }
        for (name, field) in &self.0 {
            let mut property = Map::new();
            property.insert(
                "type".into(),
                if field.required { json!(field.ty.name()) } else { json!([field.ty.name(), "null"]) },
            );
            if let Some(description) = &field.description {
                property.insert("description".into(), json!(description));
            }
            if !field.allowed.is_empty() {
                let mut allowed = field.allowed.clone();
                if !field.required {
                    allowed.push(Value::Null);
                }
                property.insert("enum".into(), Value::Array(allowed));
            }
            properties.insert(name.clone(), Value::Object(property));
        }
        let required: Vec<&String> = properties.keys().collect();
        json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
    }

    /// The schema of an answer about several texts: `{"records": [{"id": 1, …}, …]}`.
    pub fn batch_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": { "records": { "type": "array", "items": self.record_schema(true) } },
            "required": ["records"],
            "additionalProperties": false,
        })
    }

    /// One line per field for the prompt: name, type, whether it may be null, allowed values, description.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (name, field) in &self.0 {
            out.push_str(&format!("- {name} ({}", field.ty.name()));
            if !field.required {
                out.push_str(", null when the text does not say");
            }
            out.push(')');
            if !field.allowed.is_empty() {
                let allowed: Vec<String> = field.allowed.iter().map(Value::to_string).collect();
                out.push_str(&format!(", one of {}", allowed.join(", ")));
            }
            if let Some(description) = &field.description {
                out.push_str(&format!(": {description}"));
            }
            out.push('\n');
        }
        out
    }

    /// The answer's fields, typed, when it fits: every required field present and not null, each of its type and
    /// among its allowed values. Fields the step did not ask for are dropped. `Err` says the first misfit.
    pub fn check(&self, answer: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        for (name, field) in &self.0 {
            let value = match answer.get(name) {
                None | Some(Value::Null) if field.required => {
                    return Err(format!("`{name}` is required but the answer has none"));
                }
                None | Some(Value::Null) => Value::Null,
                Some(value) => typed(value, field.ty).ok_or_else(|| {
                    format!("`{name}` should be of type {}, but the answer has {value}", field.ty.name())
                })?,
            };
            if !value.is_null() && !field.allowed.is_empty() && !field.allowed.contains(&value) {
                let allowed: Vec<String> = field.allowed.iter().map(Value::to_string).collect();
                return Err(format!("`{name}` is {value}, which is not one of {}", allowed.join(", ")));
            }
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// The new columns, named with `prefix`.
    pub fn arrow_fields(&self, prefix: &str) -> Vec<Field> {
        self.0.iter().map(|(name, field)| Field::new(format!("{prefix}{name}"), arrow_type(field.ty), true)).collect()
    }

    /// The answers' table as the step spills it: the text, then each field under its own name.
    pub fn answers_schema(&self, text_column: &str) -> SchemaRef {
        let mut fields = vec![Field::new(text_column, DataType::Utf8, false)];
        fields.extend(self.arrow_fields(""));
        Arc::new(Schema::new(fields))
    }
}

fn arrow_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::String => DataType::Utf8,
        FieldType::Integer => DataType::Int64,
        FieldType::Number => DataType::Float64,
        FieldType::Boolean => DataType::Boolean,
    }
}

/// `value` as a value of type `ty`, if it is one. A whole number written as `3.0` is an integer; nothing else is
/// converted (a number in a string field does not fit: the schema said string).
fn typed(value: &Value, ty: FieldType) -> Option<Value> {
    match (ty, value) {
        (FieldType::String, Value::String(_)) | (FieldType::Boolean, Value::Bool(_)) => Some(value.clone()),
        (FieldType::Number, Value::Number(_)) => Some(value.clone()),
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(value.clone()),
        (FieldType::Integer, Value::Number(n)) => {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then(|| json!(f as i64))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        let field = |v: Value| serde_json::from_value::<ExtractField>(v).unwrap();
        Fields::new(vec![
            ("city".into(), field(json!({ "description": "the town" }))),
            ("zip".into(), field(json!({ "type": "integer", "required": false }))),
            ("country".into(), field(json!({ "enum": ["US", "CA"] }))),
        ])
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn answers_that_fit_are_typed_and_trimmed_to_the_fields() {
        let checked = fields().check(&object(json!({"city": "Oslo", "zip": 150.0, "country": "CA", "x": 1}))).unwrap();
        assert_eq!(Value::Object(checked), json!({"city": "Oslo", "zip": 150, "country": "CA"}));
        let checked = fields().check(&object(json!({"city": "Oslo", "country": "US"}))).unwrap();
        assert_eq!(checked["zip"], Value::Null);
    }

    #[test]
    fn misfits_say_which_field_and_why() {
        let f = fields();
        assert!(f.check(&object(json!({"zip": 1, "country": "US"}))).unwrap_err().contains("`city` is required"));
        let wrong_type = f.check(&object(json!({"city": "Oslo", "zip": "0150", "country": "US"}))).unwrap_err();
        assert!(wrong_type.contains("`zip` should be of type integer"), "{wrong_type}");
        let not_allowed = f.check(&object(json!({"city": "Oslo", "country": "NO"}))).unwrap_err();
        assert!(not_allowed.contains(r#"not one of "US", "CA""#), "{not_allowed}");
        assert!(f.check(&object(json!({"city": "Oslo", "zip": 1.5, "country": "US"}))).is_err());
    }

    #[test]
    fn the_strict_schema_requires_every_property_and_makes_optional_ones_nullable() {
        let schema = fields().record_schema(true);
        let mut required: Vec<&str> =
            schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        required.sort();
        assert_eq!(required, ["city", "country", "id", "zip"]);
        assert_eq!(schema["properties"]["zip"]["type"], json!(["integer", "null"]));
        assert_eq!(schema["properties"]["country"]["enum"], json!(["US", "CA"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert!(fields().describe().contains("- zip (integer, null when the text does not say)"));
    }
}
