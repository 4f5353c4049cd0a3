use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::logical_expr::SortExpr;
use datafusion::prelude::ident;
use weir_spec::Dedup;

/// A `dedup` step as `SELECT DISTINCT ON (keys) * ... ORDER BY keys, order_by`: one row per key, the first in the
/// given order. DataFusion plans it as a grouped aggregate, which spills under memory pressure.
pub fn dedup(input: DataFrame, spec: &Dedup) -> Result<DataFrame> {
    let keys: Vec<_> = spec.keys.iter().map(ident).collect();
    let select: Vec<_> = input.schema().fields().iter().map(|f| ident(f.name())).collect();
    let mut sort: Vec<SortExpr> = keys.iter().map(|k| k.clone().sort(true, false)).collect();
    if let Some(order_by) = &spec.order_by {
        sort.extend(parse_order_by(&input, order_by)?);
    }
    input.distinct_on(keys, select, Some(sort))
}

/// Parses `a DESC, b` into sort expressions (`ASC`/`DESC`, `NULLS FIRST`/`NULLS LAST`).
fn parse_order_by(input: &DataFrame, order_by: &str) -> Result<Vec<SortExpr>> {
    order_by
        .split(',')
        .map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
            let modifier_start = upper
                .iter()
                .position(|w| matches!(w.as_str(), "ASC" | "DESC" | "NULLS"))
                .unwrap_or(words.len());
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
