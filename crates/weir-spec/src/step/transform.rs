//! Transform steps: `sql`, `map`, `filter`, `validate`, `dedup`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_saphyr::Spanned;

use super::OrderedMap;

/// A DataFusion SQL query over earlier steps, by id. Variables and state are bound parameters: `$last_sync`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sql {
    #[schemars(with = "String")]
    pub query: Spanned<String>,
}

/// Compute columns with SQL expressions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Map {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// Output column to expression, e.g. `email: lower(trim(email))`, in output order.
    pub columns: OrderedMap<MapColumn>,
    /// Keep the input's other columns after the mapped ones (a mapped name replaces the input column).
    #[serde(default)]
    pub keep_others: bool,
}

/// An output column of a `map` step: an expression, or a lookup of codes to labels.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MapColumn {
    /// A SQL expression over the input's columns.
    Expr(String),
    /// `{ lookup: status, values: { A: active, I: inactive }, default: unknown }`
    Lookup(Lookup),
}

/// Map the values of a column to labels.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// The input column (or expression) to look up.
    pub lookup: String,
    pub values: OrderedMap<String>,
    /// Label for values not listed; NULL when absent.
    #[serde(default)]
    pub default: Option<String>,
}

/// Keep rows where a SQL condition holds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    #[serde(rename = "where")]
    #[schemars(with = "String")]
    pub condition: Spanned<String>,
}

/// Check rows against named rules. A rule fails only when it is false; NULL passes (as in a SQL CHECK), so use
/// `required` for presence.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    pub rules: OrderedMap<Rule>,
    /// Fail the run when more rows than this are invalid: a count (`100`) or a share of the rows (`"5%"`).
    #[serde(default)]
    pub max_invalid: Option<MaxInvalid>,
}

/// A validation rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// The column's text matches a regular expression.
    Regex { column: String, pattern: String },
    /// The column is a number greater than zero.
    Positive(String),
    /// Each column is present: not NULL, and for text not blank.
    Required(Vec<String>),
    /// A SQL boolean expression.
    Expr(String),
}

/// An invalid-row budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxInvalid {
    Count(u64),
    /// A fraction in 0..=1.
    Ratio(f64),
}

impl<'de> Deserialize<'de> for MaxInvalid {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaxVisitor;
        impl Visitor<'_> for MaxVisitor {
            type Value = MaxInvalid;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row count such as 100, or a percentage such as \"5%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxInvalid, E> {
                Ok(MaxInvalid::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxInvalid, E> {
                u64::try_from(v).map(MaxInvalid::Count).map_err(|_| E::custom("max_invalid cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxInvalid, E> {
                let pct = v
                    .trim()
                    .strip_suffix('%')
                    .ok_or_else(|| E::custom(format!("`{v}`: write a percentage as \"5%\"")))?;
                let pct: f64 = pct.trim().parse().map_err(|_| E::custom(format!("`{v}` is not a percentage")))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(E::custom(format!("`{v}` is outside 0%..100%")));
                }
                Ok(MaxInvalid::Ratio(pct / 100.0))
            }
        }
        deserializer.deserialize_any(MaxVisitor)
    }
}

impl JsonSchema for MaxInvalid {
    fn schema_name() -> Cow<'static, str> {
        "MaxInvalid".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "oneOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^[0-9.]+%$" } ] })
    }
}

/// Keep one row per key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dedup {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// Columns that identify a record.
    pub keys: Vec<String>,
    /// SQL ordering within a key, e.g. `created_at DESC`; `keep` picks the first or last row in this order (the
    /// "most recent per email" is `order_by: created_at DESC`, `keep: first`).
    #[serde(default)]
    pub order_by: Option<String>,
    #[serde(default)]
    pub keep: Keep,
}

/// Which row of each key a `dedup` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The first row in `order_by` (in arrival order without one).
    #[default]
    First,
    /// The last row in `order_by` (in arrival order without one).
    Last,
}
