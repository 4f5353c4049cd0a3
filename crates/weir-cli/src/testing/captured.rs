//! Captured destinations: what a load step writes in a test, kept in memory with the load's semantics (an upsert
//! replaces the rows of its keys, a `delete_when` row removes its key), so a later run of the same case sees what
//! the earlier ones loaded. Committed only when the run commits, like a real destination.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use weir_engine::{PendingLoad, StepContext};
use weir_spec::{DbWriteMode, DeltaWriteMode, StepKind, WriteMode};

/// How a load changes its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// The destination holds this run's rows (a file written whole, the requests of a `write_api`).
    Replace,
    Append,
    /// Replace the rows matching a SQL condition (`write_delta`'s `replace_where`).
    ReplaceWhere(String),
    Upsert {
        keys: Vec<String>,
        delete_when: Option<String>,
    },
    Delete {
        keys: Vec<String>,
    },
}

impl Write {
    pub fn of(kind: &StepKind, cx: &StepContext) -> Result<Self> {
        Ok(match kind {
            StepKind::WriteDb(db) => match db.mode {
                DbWriteMode::Append => Self::Append,
                DbWriteMode::Replace => Self::Replace,
                DbWriteMode::Upsert => Self::Upsert { keys: db.keys.clone(), delete_when: db.delete_when.clone() },
                DbWriteMode::Delete => Self::Delete { keys: db.keys.clone() },
            },
            StepKind::WriteDelta(delta) => match (delta.mode, &delta.replace_where) {
                (DeltaWriteMode::Append, _) => Self::Append,
                (DeltaWriteMode::Overwrite, None) => Self::Replace,
                (DeltaWriteMode::Overwrite, Some(predicate)) => Self::ReplaceWhere(cx.render(predicate)?),
                (DeltaWriteMode::Upsert, _) => {
                    Self::Upsert { keys: delta.keys.clone(), delete_when: delta.delete_when.clone() }
                }
                (DeltaWriteMode::Delete, _) => Self::Delete { keys: delta.keys.clone() },
            },
            StepKind::WriteIceberg(_) => Self::Append,
            other => match other.file_sink().map(|s| s.mode) {
                Some(WriteMode::Append) => Self::Append,
                _ => Self::Replace,
            },
        })
    }
}

/// One destination's rows.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Table {
    fn frame(&self, ctx: &SessionContext) -> Result<DataFrame> {
        ctx.read_table(Arc::new(MemTable::try_new(self.schema.clone(), vec![self.batches.clone()])?))
    }
}

/// The captured destinations of a case, by load step id.
pub type Destinations = Arc<Mutex<BTreeMap<String, Table>>>;

/// A load's rows, made visible in [`Destinations`] when the run commits.
pub struct CapturedLoad {
    pub step: String,
    pub write: Write,
    pub rows: Table,
    pub destinations: Destinations,
}

#[async_trait]
impl PendingLoad for CapturedLoad {
    fn rows(&self) -> u64 {
        self.rows.batches.iter().map(|b| b.num_rows() as u64).sum()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let before = self.destinations.lock().unwrap_or_else(|p| p.into_inner()).get(&self.step).cloned();
        let after = apply(before, &self.write, self.rows).await?;
        self.destinations.lock().unwrap_or_else(|p| p.into_inner()).insert(self.step, after);
        Ok(())
    }

    async fn abort(self: Box<Self>) {}
}

/// `before` after `write` of `rows`. Columns are matched by name; a column only one side has is NULL on the other.
async fn apply(before: Option<Table>, write: &Write, rows: Table) -> Result<Table> {
    let Some(before) = before.filter(|_| *write != Write::Replace) else {
        return match write {
            Write::Upsert { delete_when: Some(flag), .. } => collect(kept(&SessionContext::new(), &rows, flag)?).await,
            Write::Delete { .. } => Ok(Table { schema: rows.schema.clone(), batches: Vec::new() }),
            _ => Ok(rows),
        };
    };
    let ctx = SessionContext::new();
    let old = before.frame(&ctx)?;
    let merged = match write {
        Write::Replace => unreachable!("handled above"),
        Write::Append => old.union_by_name(rows.frame(&ctx)?)?,
        Write::ReplaceWhere(predicate) => {
            // Rows where the condition is NULL are not matched, so they stay.
            let matched = old.parse_sql_expr(predicate)?;
            let stays = datafusion::prelude::coalesce(vec![matched, datafusion::prelude::lit(false)]);
            old.filter(!stays)?.union_by_name(rows.frame(&ctx)?)?
        }
        Write::Upsert { keys, delete_when } => {
            let new = match delete_when {
                Some(flag) => kept(&ctx, &rows, flag)?,
                None => rows.frame(&ctx)?,
            };
            without_keys(&ctx, old, &rows, keys)?.union_by_name(new)?
        }
        Write::Delete { keys } => without_keys(&ctx, old, &rows, keys)?,
    };
    collect(merged).await
}

/// The rows of an upsert that are not deletes, without the flag column.
fn kept(ctx: &SessionContext, rows: &Table, flag: &str) -> Result<DataFrame> {
    use datafusion::prelude::{coalesce, col, lit};
    rows.frame(ctx)?.filter(!coalesce(vec![col(ident(flag)), lit(false)]))?.drop_columns(&[flag])
}

/// The rows of `old` whose keys are not among `rows`' keys.
fn without_keys(ctx: &SessionContext, old: DataFrame, rows: &Table, keys: &[String]) -> Result<DataFrame> {
    use datafusion::prelude::col;
    if keys.is_empty() {
        return Err(DataFusionError::Plan("an upsert or delete needs `keys`".into()));
    }
    let incoming = rows.frame(ctx)?.select_columns(&keys.iter().map(String::as_str).collect::<Vec<_>>())?;
    let incoming = incoming.with_column_renamed_all(keys, "__weir_new_")?;
    let on: Vec<_> = keys
        .iter()
        .map(|k| {
            let (old, new) = (col(ident(k)), col(ident(&format!("__weir_new_{k}"))));
            datafusion::logical_expr::binary_expr(old, datafusion::logical_expr::Operator::IsNotDistinctFrom, new)
        })
        .collect();
    old.join_on(incoming, datafusion::logical_expr::JoinType::LeftAnti, on)
}

/// A column reference that keeps the name's case and punctuation.
fn ident(name: &str) -> datafusion::common::Column {
    datafusion::common::Column::new_unqualified(name)
}

async fn collect(frame: DataFrame) -> Result<Table> {
    let planned: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    Ok(Table { schema: batches.first().map_or(planned, |b| b.schema()), batches })
}

/// Renames every column in `keys` with a prefix, so a join of a table with its own keys has distinct names.
trait RenameAll: Sized {
    fn with_column_renamed_all(self, keys: &[String], prefix: &str) -> Result<Self>;
}

impl RenameAll for DataFrame {
    fn with_column_renamed_all(self, keys: &[String], prefix: &str) -> Result<Self> {
        keys.iter().try_fold(self, |df, k| df.with_column_renamed(k, &format!("{prefix}{k}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;
    use serde_json::json;

    fn table(rows: &[serde_json::Value]) -> Table {
        let yaml: Vec<String> = rows.iter().map(|r| format!("- {r}")).collect();
        let batch = rows::from_json(&rows::tests::given(&yaml.join("\n"))).unwrap();
        Table { schema: batch.schema(), batches: vec![batch] }
    }

    async fn ids(table: &Table) -> Vec<String> {
        let mut out: Vec<String> =
            rows::to_json(&table.batches).unwrap().iter().map(|r| format!("{}={}", r["id"], r["v"])).collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn upserts_replace_their_keys_rows_and_delete_when_removes_them() {
        let first = table(&[json!({"id": 1, "v": "a"}), json!({"id": 2, "v": "b"}), json!({"id": 3, "v": "c"})]);
        let upsert = Write::Upsert { keys: vec!["id".into()], delete_when: Some("gone".into()) };
        let after = apply(None, &upsert, table(&[json!({"id": 1, "v": "a", "gone": false})])).await.unwrap();
        assert_eq!(ids(&after).await, ["1=\"a\""]);
        let after = apply(
            Some(first),
            &upsert,
            table(&[
                json!({"id": 2, "v": "B", "gone": false}),
                json!({"id": 3, "v": "c", "gone": true}),
                json!({"id": 4, "v": "d", "gone": null}),
            ]),
        )
        .await
        .unwrap();
        assert_eq!(ids(&after).await, ["1=\"a\"", "2=\"B\"", "4=\"d\""]);
        assert!(after.schema.field_with_name("gone").is_err());
        let after =
            apply(Some(after), &Write::Delete { keys: vec!["id".into()] }, table(&[json!({"id": 4})])).await.unwrap();
        assert_eq!(ids(&after).await, ["1=\"a\"", "2=\"B\""]);
        let after = apply(Some(after), &Write::Append, table(&[json!({"id": 1, "w": 1})])).await.unwrap();
        assert_eq!(ids(&after).await, ["1=\"a\"", "1=null", "2=\"B\""]);
    }
}
