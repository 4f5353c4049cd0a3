use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::common::ParamValues;
use datafusion::config::Dialect;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::visit_relations;

/// The step ids a query reads, once per mention (a self-join reads twice). CTE names are not steps.
pub fn sql_inputs(ctx: &SessionContext, query: &str) -> Result<Vec<String>> {
    let state = ctx.state();
    let statement = state.sql_to_statement(query, &Dialect::Generic)?;
    let tables: HashSet<String> =
        state.resolve_table_references(&statement)?.iter().map(|t| t.table().to_string()).collect();
    let mut mentions = Vec::new();
    if let Statement::Statement(inner) = &statement {
        let _ = visit_relations(inner.as_ref(), |relation| {
            let name = relation.0.last().map(|part| part.to_string().trim_matches('"').to_string());
            if let Some(name) = name.filter(|n| tables.contains(n)) {
                mentions.push(name);
            }
            ControlFlow::<()>::Continue(())
        });
    }
    Ok(mentions)
}

/// Plans a `sql` step: a read-only query, with variables and state bound as `$name` parameters.
pub async fn plan_sql(ctx: &SessionContext, query: &str, params: &ParamValues) -> Result<DataFrame> {
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = ctx.sql_with_options(query, options).await?;
    df.with_param_values(params.clone())
}
