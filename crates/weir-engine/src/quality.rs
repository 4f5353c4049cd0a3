//! Data-quality checks (`checks:`): each assertion of a check is one counting query over the checked step's table,
//! run after every load is prepared and before any commits. A checked step that a load also reads is materialized
//! once (as a fan-out), so checking never runs a step twice.

use datafusion::arrow::array::{Array, Int64Array};
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
        let result = CheckResult { name: name.clone(), step: check.step.value.clone(), severity: check.severity, failures };
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
    let mut failures = Vec::new();
    if check.min_rows.is_some() || check.max_rows.is_some() {
        let rows = count(ctx, &format!("SELECT count(*) FROM {table}"), params).await?;
        if let Some(min) = check.min_rows.filter(|min| rows < *min) {
            failures.push(format!("{rows} rows, fewer than min_rows {min}"));
        }
        if let Some(max) = check.max_rows.filter(|max| rows > *max) {
            failures.push(format!("{rows} rows, more than max_rows {max}"));
        }
    }
    if !check.unique.is_empty() {
        let columns = check.unique.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {columns} HAVING count(*) > 1)");
        let repeated = count(ctx, &sql, params).await?;
        if repeated > 0 {
            failures.push(format!("{repeated} values of ({}) appear more than once", check.unique.join(", ")));
        }
    }
    for column in &check.not_null {
        let nulls = count(ctx, &format!("SELECT count(*) FROM {table} WHERE {} IS NULL", quote(column)), params).await?;
        if nulls > 0 {
            failures.push(format!("{nulls} rows with `{column}` NULL"));
        }
    }
    if let Some(condition) = &check.condition {
        let violating = count(ctx, &format!("SELECT count(*) FROM {table} WHERE NOT ({condition})"), params).await?;
        if violating > 0 {
            failures.push(format!("{violating} rows where `{condition}` is false"));
        }
    }
    Ok(failures)
}

async fn count(ctx: &SessionContext, sql: &str, params: &ParamValues) -> Result<u64> {
    let batches = plan_sql(ctx, sql, params).await?.collect().await?;
    let value = batches
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().filter(|a| !a.is_empty()).map(|a| a.value(0)))
        .unwrap_or(0);
    Ok(value as u64)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
