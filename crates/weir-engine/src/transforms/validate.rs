//! The `validate` step: rules compile to boolean DataFusion expressions evaluated batch by batch; rows failing any
//! rule leave the stream through [`StepContext::reject`] with every failed rule named.
//!
//! The same guard stands before a `map` whose `on_error` is not `fail`: a batch on which its expressions evaluate
//! passes whole; in one on which some fail (a date that does not parse, a cast that overflows), each row is tried
//! alone and those that fail leave the stream with the column and the error.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::boolean::{not, or};
use datafusion::arrow::compute::{filter_record_batch, prep_null_mask_filter};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::json::ArrayWriter;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, exec_err};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions::expr_fn::{btrim, regexp_like};
use datafusion::logical_expr::{Expr, TableType, cast, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::ident;
use futures::StreamExt;
use weir_spec::{MaxInvalid, Rule, Validate};

use crate::connector::StepContext;
use crate::state_store::NewDeadLetter;

/// A rule as a boolean expression: the row passes unless it is false.
#[derive(Debug, Clone)]
struct NamedRule {
    name: String,
    expr: Expr,
}

/// What a row must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// Every rule is true or NULL (`validate`).
    Rules,
    /// Every expression evaluates (the guard of a `map`).
    Evaluates,
}

/// The valid rows of a `validate` step's input, or the rows a `map`'s expressions evaluate on.
#[derive(Debug)]
pub struct ValidateTable {
    input: DataFrame,
    rules: Vec<NamedRule>,
    test: Test,
    max_invalid: Option<MaxInvalid>,
    cx: StepContext,
}

impl ValidateTable {
    pub fn try_new(input: DataFrame, spec: &Validate, cx: StepContext) -> Result<Self> {
        let rules = spec
            .rules
            .iter()
            .map(|(name, rule)| Ok(NamedRule { name: name.to_string(), expr: rule_expr(&input, rule)? }))
            .collect::<Result<_>>()?;
        Ok(Self { input, rules, test: Test::Rules, max_invalid: spec.max_invalid, cx })
    }

    /// The rows of `input` on which every `(output column, expression)` evaluates; the others go to `cx`'s
    /// `on_error`.
    pub fn rows_that_evaluate(input: DataFrame, exprs: Vec<(String, Expr)>, cx: StepContext) -> Self {
        let rules = exprs.into_iter().map(|(name, expr)| NamedRule { name, expr }).collect();
        Self { input, rules, test: Test::Evaluates, max_invalid: None, cx }
    }
}

fn rule_expr(input: &DataFrame, rule: &Rule) -> Result<Expr> {
    let column = |name: &str| -> Result<Expr> {
        input.schema().field_with_unqualified_name(name)?;
        Ok(ident(name))
    };
    Ok(match rule {
        Rule::Regex { column: c, pattern } => {
            regexp_like(cast(column(c)?, DataType::Utf8), lit(pattern.as_str()), None)
        }
        Rule::Positive(c) => column(c)?.gt(lit(0)),
        Rule::Required(columns) => {
            let mut all: Option<Expr> = None;
            for c in columns {
                let field = input.schema().field_with_unqualified_name(c)?;
                let mut present = column(c)?.is_not_null();
                if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                    // NULL when the value is NULL, so the IS NOT NULL half decides then.
                    present = present.and(btrim(vec![column(c)?]).not_eq(lit("")).is_not_false());
                }
                all = Some(match all {
                    Some(a) => a.and(present),
                    None => present,
                });
            }
            all.unwrap_or(lit(true))
        }
        Rule::Expr(sql) => input.parse_sql_expr(sql)?,
    })
}

#[async_trait]
impl TableProvider for ValidateTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.input.schema().inner())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(self.input.logical_plan()).await?;
        let df_schema: &DFSchema = self.input.schema();
        let rules = self
            .rules
            .iter()
            .map(|r| Ok((r.name.clone(), state.create_physical_expr(r.expr.clone(), df_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let exec: Arc<dyn ExecutionPlan> = Arc::new(ValidateExec {
            input,
            rules: Arc::new(rules),
            test: self.test,
            max_invalid: self.max_invalid,
            cx: self.cx.clone(),
        });
        match projection {
            None => Ok(exec),
            Some(p) => {
                let schema = exec.schema();
                let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = p
                    .iter()
                    .map(|&i| {
                        let name = schema.field(i).name().clone();
                        let col: Arc<dyn PhysicalExpr> =
                            Arc::new(datafusion::physical_expr::expressions::Column::new(&name, i));
                        (col, name)
                    })
                    .collect();
                Ok(Arc::new(ProjectionExec::try_new(exprs, exec)?))
            }
        }
    }
}

type CompiledRules = Arc<Vec<(String, Arc<dyn PhysicalExpr>)>>;

/// Passes valid rows on and hands the others to the step's error policy.
#[derive(Debug, Clone)]
struct ValidateExec {
    input: Arc<dyn ExecutionPlan>,
    rules: CompiledRules,
    test: Test,
    max_invalid: Option<MaxInvalid>,
    cx: StepContext,
}

impl DisplayAs for ValidateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|(n, _)| n.as_str()).collect();
        let what = match self.test {
            Test::Rules => "rules",
            Test::Evaluates => "evaluates",
        };
        write!(f, "WeirValidate: {what}=[{}], on_error={:?}", names.join(", "), self.cx.on_error)
    }
}

impl ExecutionPlan for ValidateExec {
    fn name(&self) -> &str {
        "WeirValidate"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for (_, expr) in self.rules.iter() {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self { input: children.swap_remove(0), ..(*self).clone() }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let this = self.clone();
        let checked = stream.map(move |batch| match this.test {
            Test::Rules => this.check(batch?),
            Test::Evaluates => this.evaluates(batch?),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, checked)))
    }
}

impl ValidateExec {
    fn check(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let mut failed_by_rule = Vec::with_capacity(self.rules.len());
        let mut any_failed: Option<BooleanArray> = None;
        for (name, expr) in self.rules.iter() {
            let value = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
            let Some(passed) = value.as_any().downcast_ref::<BooleanArray>() else {
                return exec_err!("rule `{name}` is not a true/false expression (it gives {})", value.data_type());
            };
            // NULL passes, as in a SQL CHECK constraint.
            let failed = not(passed)?;
            let failed = if failed.null_count() > 0 { prep_null_mask_filter(&failed) } else { failed };
            any_failed = Some(match any_failed {
                Some(acc) => or(&acc, &failed)?,
                None => failed.clone(),
            });
            failed_by_rule.push((name, failed));
        }
        let Some(any_failed) = any_failed.filter(|f| f.true_count() > 0) else { return Ok(batch) };

        let invalid = filter_record_batch(&batch, &any_failed)?;
        let records = rows_as_json(&invalid)?;
        let letters = (0..batch.num_rows())
            .filter(|&row| any_failed.value(row))
            .zip(records)
            .map(|(row, record)| {
                let reasons: Vec<&str> =
                    failed_by_rule.iter().filter(|(_, f)| f.value(row)).map(|(n, _)| n.as_str()).collect();
                NewDeadLetter {
                    step: self.cx.step.clone(),
                    record,
                    error: format!("failed rules: {}", reasons.join(", ")),
                    origin: None,
                }
            })
            .collect();
        self.cx.reject(letters)?;
        if let Some(MaxInvalid::Count(max)) = self.max_invalid
            && self.cx.counters.invalid() > max
        {
            return Err(DataFusionError::Execution(format!(
                "more than {max} invalid rows (max_invalid); see `weir dlq list` for the reasons"
            )));
        }
        Ok(filter_record_batch(&batch, &not(&any_failed)?)?)
    }
}

impl ValidateExec {
    /// The rows of `batch` on which every expression evaluates: all of them when the batch does, else those that
    /// do alone; the others are handed to the step's error policy with the column and the error.
    fn evaluates(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let evaluate = |rows: &RecordBatch| -> Vec<String> {
            self.rules
                .iter()
                .filter_map(|(name, expr)| {
                    expr.evaluate(rows)
                        .and_then(|v| v.into_array(rows.num_rows()))
                        .err()
                        .map(|e| format!("`{name}`: {e}"))
                })
                .collect()
        };
        let whole = evaluate(&batch);
        if whole.is_empty() {
            return Ok(batch);
        }
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut letters = Vec::new();
        for row in 0..batch.num_rows() {
            let one = batch.slice(row, 1);
            let errors = evaluate(&one);
            keep.push(errors.is_empty());
            if !errors.is_empty() {
                let record = rows_as_json(&one)?.pop().unwrap_or_default();
                letters.push(NewDeadLetter {
                    step: self.cx.step.clone(),
                    record,
                    error: errors.join("; "),
                    origin: None,
                });
            }
        }
        if letters.is_empty() {
            // No row fails alone: the failure is the batch's, not a record's.
            return exec_err!("{}", whole.join("; "));
        }
        self.cx.reject(letters)?;
        Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?)
    }
}

/// Rows of a batch as JSON objects, for dead letters.
pub fn rows_as_json(batch: &RecordBatch) -> Result<Vec<serde_json::Value>> {
    let mut writer = ArrayWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(match value {
        serde_json::Value::Array(rows) => rows,
        other => vec![other],
    })
}
