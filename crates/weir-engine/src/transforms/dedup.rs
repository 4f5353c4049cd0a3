use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::{first_value, last_value};
use datafusion::logical_expr::{AggregateUDF, Expr, ExprSchemable, SortExpr, cast};
use datafusion::prelude::ident;
use weir_spec::{Dedup, Keep};

use super::pick::{Order, Pick, ranks_as_int64};

/// A `dedup` step: one row per key, the first (or last) in `order_by`, as
/// `SELECT key, first_value(c ORDER BY …) AS c, … GROUP BY key` in the input's column order. This is what
/// `DISTINCT ON` becomes in DataFusion, minus the sort of the whole output by key that `DISTINCT ON ... ORDER BY`
/// implies and a pipeline step does not need. The grouped aggregate spills under memory pressure.
///
/// The common case, one ordering column of integers, dates or timestamps, uses Weir's [`Pick`] aggregate instead
/// of `first_value`, which holds each group's ordering far more cheaply.
pub fn dedup(input: DataFrame, spec: &Dedup) -> Result<DataFrame> {
    let order: Vec<SortExpr> = match &spec.order_by {
        Some(order_by) => parse_order_by(&input, order_by)?,
        None => Vec::new(),
    };
    let fields: Vec<String> = input.schema().fields().iter().map(|f| f.name().clone()).collect();
    let keys: Vec<Expr> = spec.keys.iter().map(ident).collect();
    let pick = match order.as_slice() {
        [only] if ranks_as_int64(&only.expr.get_type(input.schema())?) => {
            // `keep: last` takes the row that comes first in the reversed order.
            let first = spec.keep == Keep::First;
            let order = Order { descending: only.asc != first, nulls_first: only.nulls_first == first };
            Some((AggregateUDF::from(Pick::new(order)), cast(only.expr.clone(), DataType::Int64)))
        }
        _ => None,
    };
    let values: Vec<Expr> = fields
        .iter()
        .filter(|f| !spec.keys.contains(f))
        .map(|f| match (&pick, spec.keep) {
            (Some((pick, rank)), _) => pick.call(vec![ident(f), rank.clone()]).alias(f),
            (None, Keep::First) => first_value(ident(f), order.clone()).alias(f),
            (None, Keep::Last) => last_value(ident(f), order.clone()).alias(f),
        })
        .collect();
    input.aggregate(keys, values)?.select(fields.iter().map(ident).collect::<Vec<_>>())
}

/// Parses `a DESC, b` into sort expressions (`ASC`/`DESC`, `NULLS FIRST`/`NULLS LAST`).
fn parse_order_by(input: &DataFrame, order_by: &str) -> Result<Vec<SortExpr>> {
    order_by
        .split(',')
        .map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
            let modifier_start =
                upper.iter().position(|w| matches!(w.as_str(), "ASC" | "DESC" | "NULLS")).unwrap_or(words.len());
            let expr = input.parse_sql_expr(&words[..modifier_start].join(" "))?;
            let asc = !upper.contains(&"DESC".to_string());
            let nulls_first = match upper.iter().position(|w| w == "NULLS") {
                Some(i) => upper.get(i + 1).map(String::as_str) == Some("FIRST"),
                None => !asc,
            };
            Ok(expr.sort(asc, nulls_first))
        })
        .collect()
}
