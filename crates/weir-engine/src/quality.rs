//! Data-quality checks (`checks:`): counting queries over the checked step's table, run after every load is
//! prepared and before any commits: one pass counts rows, NULLs per column and rows breaking the condition
//! together; uniqueness needs a grouping of its own. A checked step that a load also reads is materialized
//! once (as a fan-out), so checking never runs a step twice.

use datafusion::arrow::array::Int64Array;
use datafusion::common::ParamValues;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use tracing::{info, warn};
use weir_spec::{Check, Pipeline, Severity};

use crate::transforms::plan_sql;

/// How one check went.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub step: String,
    pub severity: Severity,
    /// What failed, one line per failed assertion; empty when the check passed.
    pub failures: Vec<String>,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn message(&self) -> String {
        match self.passed() {
            true => "passed".to_string(),
            false => self.failures.join("; "),
        }
    }
}

/// Runs the checks of `pipeline` whose step is registered in `ctx` (a replay plans only part of the pipeline).
pub async fn run_checks(pipeline: &Pipeline, ctx: &SessionContext, params: &ParamValues) -> Result<Vec<CheckResult>> {
    let mut results = Vec::new();
    for (name, check) in &pipeline.checks {
        if !ctx.table_exist(check.step.value.as_str())? {
            continue;
        }
        let failures = failures(check, ctx, params)
            .await
            .map_err(|e| DataFusionError::Context(format!("check `{name}`"), Box::new(e)))?;
        let result =
            CheckResult { name: name.clone(), step: check.step.value.clone(), severity: check.severity, failures };
        if result.passed() {
            info!(check = %name, step = %result.step, "Check `{name}` on `{}` passed", result.step);
        } else {
            warn!(check = %name, step = %result.step, "Check `{name}` on `{}` failed: {}", result.step, result.message());
        }
        results.push(result);
    }
    Ok(results)
}

async fn failures(check: &Check, ctx: &SessionContext, params: &ParamValues) -> Result<Vec<String>> {
    let table = quote(&check.step.value);
    // One scan: the row count, then the NULLs of each `not_null` column, then the rows breaking `condition`.
    let mut counted = vec!["count(*)".to_string()];
    counted.extend(check.not_null.iter().map(|column| format!("count(*) FILTER (WHERE {} IS NULL)", quote(column))));
    counted.extend(check.condition.iter().map(|condition| format!("count(*) FILTER (WHERE NOT ({condition}))")));
    let tally = counts(ctx, &format!("SELECT {} FROM {table}", counted.join(", ")), params).await?;
    let (rows, nulls, violating) = (tally[0], &tally[1..=check.not_null.len()], tally.get(check.not_null.len() + 1));

    let mut failures = Vec::new();
    if let Some(min) = check.min_rows.filter(|min| rows < *min) {
        failures.push(format!("{rows} rows, fewer than min_rows {min}"));
    }
    if let Some(max) = check.max_rows.filter(|max| rows > *max) {
        failures.push(format!("{rows} rows, more than max_rows {max}"));
    }
    if !check.unique.is_empty() {
        let columns = check.unique.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {columns} HAVING count(*) > 1)");
        let repeated = counts(ctx, &sql, params).await?[0];
        if repeated > 0 {
            failures.push(format!("{repeated} values of ({}) appear more than once", check.unique.join(", ")));
        }
    }
    for (column, nulls) in check.not_null.iter().zip(nulls).filter(|(_, n)| **n > 0) {
        failures.push(format!("{nulls} rows with `{column}` NULL"));
    }
    if let (Some(condition), Some(violating)) = (&check.condition, violating.filter(|v| **v > 0)) {
        failures.push(format!("{violating} rows where `{condition}` is false"));
    }
    Ok(failures)
}

/// The counts in the one row `sql` returns, in its column order.
async fn counts(ctx: &SessionContext, sql: &str, params: &ParamValues) -> Result<Vec<u64>> {
    let batches = plan_sql(ctx, sql, params).await?.collect().await?;
    let Some(row) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err(DataFusionError::Internal(format!("`{sql}` returned no row")));
    };
    row.columns()
        .iter()
        .map(|column| {
            column
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0) as u64)
                .ok_or_else(|| DataFusionError::Internal(format!("`{sql}` returned a {} count", column.data_type())))
        })
        .collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
