//! SQL type names in pipeline files (`schema:` of sources) to Arrow types.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use weir_spec::OrderedMap;

/// The Arrow schema a `schema:` mapping of column to SQL type declares.
pub fn declared_schema(columns: Option<&OrderedMap<String>>) -> Result<Option<SchemaRef>> {
    let Some(columns) = columns else { return Ok(None) };
    let fields = columns
        .iter()
        .map(|(name, ty)| {
            parse_sql_type(ty)
                .map(|t| Field::new(name, t, true))
                .map_err(|e| DataFusionError::Plan(format!("schema of column `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// Parses a SQL type name as written in a `schema:` block.
pub fn parse_sql_type(text: &str) -> Result<DataType, String> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(args) = t.strip_prefix("decimal").or_else(|| t.strip_prefix("numeric")) {
        let args = args.trim().trim_start_matches('(').trim_end_matches(')');
        let mut parts = args.split(',').map(|p| p.trim().parse::<i16>());
        return match (parts.next(), parts.next()) {
            (Some(Ok(p)), Some(Ok(s))) if (1..=38).contains(&p) && s <= p => Ok(DataType::Decimal128(p as u8, s as i8)),
            (Some(Ok(p)), None) if (1..=38).contains(&p) => Ok(DataType::Decimal128(p as u8, 0)),
            _ => Err(format!("`{text}`: write decimal(precision, scale) with precision 1..38")),
        };
    }
    Ok(match t.as_str() {
        "bigint" | "int8" | "long" | "int64" => DataType::Int64,
        "int" | "integer" | "int4" | "int32" => DataType::Int32,
        "smallint" | "int2" | "int16" => DataType::Int16,
        "double" | "float8" | "float" | "double precision" | "float64" => DataType::Float64,
        "real" | "float4" | "float32" => DataType::Float32,
        "text" | "varchar" | "string" | "char" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" | "timestamp with time zone" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => {
            return Err(format!(
                "unknown type `{text}`; use bigint, int, smallint, double, real, decimal(p,s), text, boolean, date, timestamp or timestamptz"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_names() {
        assert_eq!(parse_sql_type("BIGINT"), Ok(DataType::Int64));
        assert_eq!(parse_sql_type("decimal(12, 2)"), Ok(DataType::Decimal128(12, 2)));
        assert!(parse_sql_type("decimal(99,2)").is_err());
        assert!(parse_sql_type("blob").unwrap_err().contains("unknown type"));
    }
}
