use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The type of a variable or state value. Dates and timestamps are kept as ISO-8601 text and checked on parse, so
/// that SQL receives them as typed parameters rather than strings to interpolate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    #[default]
    String,
    Integer,
    Float,
    Boolean,
    /// `YYYY-MM-DD`
    Date,
    /// RFC 3339, e.g. `2024-01-15T10:00:00Z`
    Timestamp,
}

/// A value that has been checked against its declared [`ValueType`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum TypedValue {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Date(String),
    Timestamp(String),
}

impl TypedValue {
    /// Parses text (from `--var k=v`, `weir state set`, or the state store) as `ty`.
    pub fn parse(ty: ValueType, text: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("`{text}` is not {what}");
        Ok(match ty {
            ValueType::String => Self::String(text.to_string()),
            ValueType::Integer => Self::Integer(text.trim().parse().map_err(|_| bad("an integer"))?),
            ValueType::Float => Self::Float(text.trim().parse().map_err(|_| bad("a number"))?),
            ValueType::Boolean => Self::Boolean(match text.trim() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => return Err(bad("a boolean (true/false)")),
            }),
            ValueType::Date => {
                if !is_iso_date(text.trim()) {
                    return Err(bad("a date (YYYY-MM-DD)"));
                }
                Self::Date(text.trim().to_string())
            }
            ValueType::Timestamp => {
                let t = text.trim();
                if !is_rfc3339(t) {
                    return Err(bad("a timestamp (RFC 3339, e.g. 2024-01-15T10:00:00Z)"));
                }
                Self::Timestamp(t.to_string())
            }
        })
    }

    /// Checks a YAML default (already a JSON value) against `ty`.
    pub fn from_json(ty: ValueType, value: &serde_json::Value) -> Result<Self, String> {
        match (ty, value) {
            (ValueType::Integer, serde_json::Value::Number(n)) => {
                n.as_i64().map(Self::Integer).ok_or_else(|| format!("`{n}` is not an integer"))
            }
            (ValueType::Float, serde_json::Value::Number(n)) => {
                n.as_f64().map(Self::Float).ok_or_else(|| format!("`{n}` is not a number"))
            }
            (ValueType::Boolean, serde_json::Value::Bool(b)) => Ok(Self::Boolean(*b)),
            (_, serde_json::Value::String(s)) => Self::parse(ty, s),
            (ValueType::String, serde_json::Value::Number(n)) => Ok(Self::String(n.to_string())),
            (_, other) => Err(format!("`{other}` is not {}", ty.article_name())),
        }
    }

    pub fn value_type(&self) -> ValueType {
        match self {
            Self::String(_) => ValueType::String,
            Self::Integer(_) => ValueType::Integer,
            Self::Float(_) => ValueType::Float,
            Self::Boolean(_) => ValueType::Boolean,
            Self::Date(_) => ValueType::Date,
            Self::Timestamp(_) => ValueType::Timestamp,
        }
    }
}

impl ValueType {
    fn article_name(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Float => "a number",
            Self::Boolean => "a boolean",
            Self::Date => "a date",
            Self::Timestamp => "a timestamp",
        }
    }
}

impl fmt::Display for TypedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(s) | Self::Date(s) | Self::Timestamp(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Boolean(b) => write!(f, "{b}"),
        }
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&s[5..7].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u8>().unwrap_or(0))
}

fn is_rfc3339(s: &str) -> bool {
    static RFC3339: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$")
            .expect("static regex")
    });
    s.len() >= 10 && is_iso_date(&s[..10]) && RFC3339.is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type_and_rejects_wrong_text() {
        assert_eq!(TypedValue::parse(ValueType::Integer, "42"), Ok(TypedValue::Integer(42)));
        assert!(TypedValue::parse(ValueType::Integer, "4x2").is_err());
        assert!(TypedValue::parse(ValueType::Date, "2024-13-01").is_err());
        assert!(TypedValue::parse(ValueType::Timestamp, "2024-01-15T10:00:00Z").is_ok());
        assert!(TypedValue::parse(ValueType::Timestamp, "yesterday").is_err());
        assert_eq!(TypedValue::parse(ValueType::Boolean, "no"), Ok(TypedValue::Boolean(false)));
    }

    #[test]
    fn json_defaults_are_checked() {
        assert!(TypedValue::from_json(ValueType::Integer, &serde_json::json!("ten")).is_err());
        assert_eq!(TypedValue::from_json(ValueType::Float, &serde_json::json!(1.5)), Ok(TypedValue::Float(1.5)));
    }
}
