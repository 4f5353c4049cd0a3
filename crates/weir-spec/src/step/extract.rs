//! `ai_extract`: typed columns read out of free text by a language model, every answer checked against the fields.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::OrderedMap;
use crate::api::{Duration, Retry};

/// Read typed fields out of free text with a language model behind an OpenAI-compatible chat endpoint (an
/// `openai` connection). One request per distinct text (or per `batch_size` of them); every answer is checked
/// against `fields` in Weir and the rows it fits get the new columns. A row whose answer does not parse or does not
/// fit follows `on_error`: with `dead_letter`, the row is kept with the reason and the model's raw answer, and `weir
/// dlq replay` sends it back through after a prompt fix. Answers are cached in the state store by model, prompt,
/// fields and text, so a re-run, a replay or a backfill pays only for texts it has not seen.
///
/// ```yaml
/// addresses:
///   ai_extract:
///     input: customers
///     connection: model
///     text: raw_address
///     instructions: Split the postal address into its parts.
///     fields:
///       street: { type: string, description: street and house number }
///       city: { type: string }
///       zip: { type: string, required: false }
///       country: { type: string, enum: [US, CA, GB] }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiExtract {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// An `openai` connection: the endpoint, the model and its settings.
    #[schemars(with = "String")]
    pub connection: Spanned<String>,
    /// The input column that holds the text to read. Exactly one of `text` and `template`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub text: Option<Spanned<String>>,
    /// The text to read made of several columns, `{column}` standing for each value: `"{name}, {street}, {city}"`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub template: Option<Spanned<String>>,
    /// What the model is asked to do, sent as the system message before the fields' descriptions.
    #[serde(default)]
    pub instructions: Option<String>,
    /// The fields to produce, in output order. Exactly one of `fields` and `json_schema`.
    #[serde(default)]
    pub fields: Option<OrderedMap<ExtractField>>,
    /// The fields as a JSON Schema of an object with flat properties (`type` string, integer, number or boolean,
    /// `enum`, `description`, `required`), as another tool may already have it.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub json_schema: Option<serde_json::Value>,
    /// Worked examples sent before each text (few-shot prompting).
    #[serde(default)]
    pub examples: Vec<ExtractExample>,
    /// Prepended to every new column, to keep them apart from the input's.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Texts sent in one request, each with an id the answer must give back; 1 sends each text alone.
    #[serde(default = "one")]
    pub batch_size: usize,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// At most this many tokens (prompt and answer, as the server counts them) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Keep answers in the state store and reuse them.
    #[serde(default = "yes")]
    pub cache: bool,
    /// Time allowed for one request; the connection's `timeout` when not set here.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// This step's retry policy; without one, `settings.retry`, else 5 attempts with exponential backoff on
    /// timeouts, lost connections, 429 (waiting as `Retry-After` says) and 5xx.
    #[serde(default)]
    pub retry: Option<Retry>,
}

/// One field to extract.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractField {
    #[serde(rename = "type", default)]
    pub ty: FieldType,
    /// What the field holds, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// An answer without this field (or with null) does not fit.
    #[serde(default = "yes")]
    pub required: bool,
    /// The only values allowed.
    #[serde(rename = "enum", default)]
    pub allowed: Vec<serde_json::Value>,
}

/// The type of an extracted field, and of its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

impl FieldType {
    /// The JSON Schema type name.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }

    /// The type a JSON Schema names, if Weir can extract it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }
}

/// A worked example: a text and the answer expected for it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractExample {
    pub text: String,
    #[schemars(with = "serde_json::Value")]
    pub answer: serde_json::Map<String, serde_json::Value>,
}

impl AiExtract {
    /// The fields, from `fields` or `json_schema`; `Err` says why they cannot be read.
    pub fn field_list(&self) -> Result<Vec<(String, ExtractField)>, String> {
        match (&self.fields, &self.json_schema) {
            (Some(fields), None) => Ok(fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()),
            (None, Some(schema)) => fields_of_schema(schema),
            (Some(_), Some(_)) => Err("give `fields` or `json_schema`, not both".into()),
            (None, None) => Err("an ai_extract step needs `fields` (or `json_schema`): what to extract".into()),
        }
    }
}

/// The fields of a JSON Schema of a flat object.
fn fields_of_schema(schema: &serde_json::Value) -> Result<Vec<(String, ExtractField)>, String> {
    let properties = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .ok_or("`json_schema` needs `properties`: an object schema whose properties are the fields")?;
    let required: Vec<&str> =
        schema.get("required").and_then(|r| r.as_array()).into_iter().flatten().filter_map(|v| v.as_str()).collect();
    properties
        .iter()
        .map(|(name, property)| {
            let type_name = match property.get("type") {
                Some(serde_json::Value::String(t)) => t.as_str(),
                None if property.get("enum").is_some() => "string",
                _ => return Err(format!("`json_schema` property `{name}` needs a `type`")),
            };
            let ty = FieldType::from_name(type_name).ok_or_else(|| {
                format!("`json_schema` property `{name}` is of type `{type_name}`; fields are string, integer, number or boolean")
            })?;
            Ok((
                name.clone(),
                ExtractField {
                    ty,
                    description: property.get("description").and_then(|d| d.as_str()).map(str::to_string),
                    required: required.contains(&name.as_str()),
                    allowed: property.get("enum").and_then(|e| e.as_array()).cloned().unwrap_or_default(),
                },
            ))
        })
        .collect()
}

fn default_concurrency() -> usize {
    4
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_schema_gives_the_same_fields() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "city": { "type": "string", "description": "the town" },
                "zip": { "type": "integer" },
                "country": { "enum": ["US", "CA"] },
            },
            "required": ["city", "country"],
        });
        let mut fields = fields_of_schema(&schema).unwrap();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<(&str, FieldType, bool)> = fields.iter().map(|(n, f)| (n.as_str(), f.ty, f.required)).collect();
        assert_eq!(
            names,
            [
                ("city", FieldType::String, true),
                ("country", FieldType::String, true),
                ("zip", FieldType::Integer, false)
            ]
        );
        assert_eq!(fields[1].1.allowed.len(), 2);
        let nested = serde_json::json!({ "properties": { "parts": { "type": "array" } } });
        assert!(fields_of_schema(&nested).unwrap_err().contains("string, integer, number or boolean"));
    }
}
