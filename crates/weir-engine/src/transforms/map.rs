use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, case, cast, lit};
use datafusion::prelude::ident;
use weir_spec::{Lookup, Map, MapColumn};

/// A `map` step: one projection with an expression per output column.
pub fn map(input: DataFrame, spec: &Map, params: &ParamValues) -> Result<DataFrame> {
    let mut exprs = Vec::with_capacity(spec.columns.len());
    for (name, column) in spec.columns.iter() {
        let expr = match column {
            MapColumn::Expr(sql) => input.parse_sql_expr(sql)?,
            MapColumn::Lookup(lookup) => lookup_expr(&input, lookup)?,
        };
        exprs.push(expr.alias(name));
    }
    if spec.keep_others {
        let mapped: Vec<&str> = spec.columns.iter().map(|(name, _)| name).collect();
        for field in input.schema().fields() {
            if !mapped.contains(&field.name().as_str()) {
                exprs.push(ident(field.name()));
            }
        }
    }
    input.select(exprs)?.with_param_values(params.clone())
}

/// `CASE CAST(x AS VARCHAR) WHEN 'A' THEN 'active' ... ELSE default END`; keys compare as text so a lookup table
/// written in YAML works for numeric codes too.
fn lookup_expr(input: &DataFrame, lookup: &Lookup) -> Result<Expr> {
    let key = cast(input.parse_sql_expr(&lookup.lookup)?, DataType::Utf8);
    let mut values = lookup.values.iter();
    let Some((first_key, first_label)) = values.next() else {
        return Ok(lit(ScalarValue::Utf8(lookup.default.clone())));
    };
    let mut builder = case(key).when(lit(first_key), lit(first_label.as_str()));
    for (k, label) in values {
        builder = builder.when(lit(k), lit(label.as_str()));
    }
    builder.otherwise(lit(ScalarValue::Utf8(lookup.default.clone())))
}

/// A `filter` step.
pub fn filter(input: DataFrame, condition: &str, params: &ParamValues) -> Result<DataFrame> {
    let predicate = input.parse_sql_expr(condition)?;
    input.filter(predicate)?.with_param_values(params.clone())
}
