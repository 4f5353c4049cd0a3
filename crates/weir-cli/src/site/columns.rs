//! Column-level lineage, where the step says it: each column a `map` makes and each column a `sql` step's
//! SELECT names, with the input columns its expression reads. A query whose FROM holds anything but step tables
//! (a subquery, a function), or that is a UNION, is not traced.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, TableFactor, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use weir_spec::{MapColumn, StepKind};

/// An output column and the `step.column`s it comes from (`step.*` for a wildcard).
pub type ColumnLineage = Vec<(String, Vec<String>)>;

/// The step's columns and where each comes from, when the step says it.
pub fn of(kind: &StepKind) -> Option<ColumnLineage> {
    match kind {
        StepKind::Map(map) => {
            let input = map.input.value.as_str();
            let tables = HashMap::from([(input.to_string(), input.to_string())]);
            let columns = map.columns.iter().map(|(name, column)| {
                let text = match column {
                    MapColumn::Expr(e) => e.as_str(),
                    MapColumn::Lookup(l) => l.lookup.as_str(),
                };
                let from = Parser::new(&GenericDialect {})
                    .try_with_sql(text)
                    .and_then(|mut p| p.parse_expr())
                    .map(|e| read_by(&e, &tables, Some(input)))
                    .unwrap_or_default();
                (name.to_string(), from)
            });
            Some(columns.collect())
        }
        StepKind::Sql(sql) => select_lineage(&sql.query.value),
        _ => None,
    }
}

fn select_lineage(query: &str) -> Option<ColumnLineage> {
    let statements = Parser::parse_sql(&GenericDialect {}, query).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else { return None };
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    // Table or alias name → step id.
    let mut tables = HashMap::new();
    for from in &select.from {
        for factor in std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation)) {
            let TableFactor::Table { name, alias, .. } = factor else { return None };
            let step = name.to_string();
            tables.insert(step.clone(), step.clone());
            if let Some(alias) = alias {
                tables.insert(alias.name.value.clone(), step);
            }
        }
    }
    let only = {
        let mut steps: Vec<&String> = tables.values().collect();
        steps.sort();
        steps.dedup();
        (steps.len() == 1).then(|| steps[0].clone())
    };
    let mut out = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                let name = match expr {
                    Expr::Identifier(i) => i.value.clone(),
                    Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()).unwrap_or_default(),
                    other => other.to_string(),
                };
                out.push((name, read_by(expr, &tables, only.as_deref())));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                out.push((alias.value.clone(), read_by(expr, &tables, only.as_deref())));
            }
            SelectItem::ExprWithAliases { expr, aliases } => {
                let from = read_by(expr, &tables, only.as_deref());
                out.extend(aliases.iter().map(|alias| (alias.value.clone(), from.clone())));
            }
            SelectItem::Wildcard(_) => {
                let mut steps: Vec<String> = tables.values().map(|t| format!("{t}.*")).collect();
                steps.sort();
                steps.dedup();
                out.push(("*".to_string(), steps));
            }
            SelectItem::QualifiedWildcard(..) => {
                let written = item.to_string();
                let qualifier = written.trim_end_matches(".*");
                let step = tables.get(qualifier).cloned().unwrap_or_else(|| qualifier.to_string());
                out.push(("*".to_string(), vec![format!("{step}.*")]));
            }
        }
    }
    Some(out)
}

/// The `step.column`s `expr` reads: qualified names through `tables`, bare ones from `only` (the one table read)
/// or, with several, as they are written.
fn read_by(expr: &Expr, tables: &HashMap<String, String>, only: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = visit_expressions(expr, |e| {
        let column = match e {
            Expr::Identifier(i) => Some(match only {
                Some(step) => format!("{step}.{}", i.value),
                None => i.value.clone(),
            }),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let qualifier = parts[parts.len() - 2].value.as_str();
                let step = tables.get(qualifier).map_or(qualifier, String::as_str);
                Some(format!("{step}.{}", parts[parts.len() - 1].value))
            }
            _ => None,
        };
        if let Some(c) = column
            && !out.contains(&c)
        {
            out.push(c);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_select_names_where_each_column_comes_from() {
        let lineage = select_lineage(
            "SELECT c.country, count(*) AS orders, sum(o.amount) AS revenue FROM web_orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.country",
        )
        .unwrap();
        assert_eq!(
            lineage,
            [
                ("country".to_string(), vec!["customers.country".to_string()]),
                ("orders".to_string(), vec![]),
                ("revenue".to_string(), vec!["web_orders.amount".to_string()]),
            ]
        );
        let lineage = select_lineage("SELECT *, amount * 2 AS double FROM orders WHERE status = 'paid'").unwrap();
        assert_eq!(lineage[0], ("*".to_string(), vec!["orders.*".to_string()]));
        assert_eq!(lineage[1], ("double".to_string(), vec!["orders.amount".to_string()]));
        assert_eq!(select_lineage("SELECT a FROM (SELECT 1 AS a) AS t"), None, "a subquery is not traced");
    }
}
