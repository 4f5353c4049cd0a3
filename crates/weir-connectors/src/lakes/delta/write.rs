//! `write_delta`: delta-rs's write (append, overwrite, overwrite where), merge (upsert, with CDC deletes) and
//! delete-by-keys merge, each run to the point of committing while the run loads, and committed through its
//! [`Gate`] when the run commits: one new table version per load, none for a failed run.
//!
//! The schema policy is Weir's (`schema_evolution`, as `write_db` has it) on delta-rs's terms: `evolve` lets
//! delta-rs merge new columns into the table's schema, `freeze` fails naming the columns the table lacks, and
//! `discard` drops them from the input.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::ident;
use deltalake_core::delta_datafusion::DeltaColumn;
use deltalake_core::delta_datafusion::planner::DeltaPlanner;
use deltalake_core::operations::write::SchemaMode;
use deltalake_core::protocol::SaveMode;
use deltalake_core::{DeltaResult, DeltaTable, DeltaTableError};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;
use weir_engine::{NothingToLoad, PendingLoad, RowChanges, StepContext};
use weir_spec::{DeltaWriteMode, SchemaEvolution, WriteDelta};

use super::gate::{Decision, Gate};
use super::{Location, commit_properties};
use crate::lakes::refused;

pub async fn write(spec: &WriteDelta, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let location = Location::of(&spec.path, spec.connection.as_ref(), cx, true)?;
    let (gate, ready, decide) = Gate::new(location.log_store()?);
    let mut table = DeltaTable::new(gate);
    let exists = match table.load().await {
        Ok(()) => true,
        Err(DeltaTableError::NotATable(_)) => false,
        Err(e) => return Err(location.error(e)),
    };
    let schema = match exists {
        true => Some(table_schema(&table).map_err(|e| location.error(e))?),
        false => None,
    };
    let columns: Option<Vec<String>> = schema.as_ref().map(|s| s.fields().iter().map(|f| f.name().clone()).collect());
    if spec.mode == DeltaWriteMode::Delete && !exists {
        info!(step = %cx.step, "Delta table {} does not exist yet: nothing to delete", location.shown());
        return Ok(Box::new(NothingToLoad));
    }
    let input = conform(spec, columns.as_deref(), input, &location)?;
    // Rows an existing table cannot hold go to the step's `on_error` here, before delta-rs sees them.
    let input = match &schema {
        Some(table) => refused::filtered(input, table, cx).await?,
        None => input,
    };
    let mode = format!("{:?}", spec.mode).to_lowercase();
    info!(step = %cx.step, "Starting load into Delta table {} (mode {mode})", location.shown());
    let operation = operation(spec, cx, table, exists, input)?;
    let mut task = tokio::spawn(operation);
    let held = tokio::select! {
        held = ready => held.ok(),
        finished = &mut task => return ended(finished, &location),
    };
    // The gate went without reporting a commit: the operation ended before reaching one.
    let Some(held) = held else { return ended(task.await, &location) };
    let metrics = commit_metrics(held.log.as_deref());
    info!(
        step = %cx.step,
        version = held.version,
        "Wrote {} rows to Delta table {}: version {} when the run commits",
        metrics.rows,
        location.shown(),
        held.version
    );
    Ok(Box::new(PendingDelta { shown: location.shown(), metrics, decide, task }))
}

/// The load for an operation that ended without reaching its commit: it failed, or had nothing to commit.
fn ended(
    finished: std::result::Result<DeltaResult<DeltaTable>, tokio::task::JoinError>,
    location: &Location,
) -> Result<Box<dyn PendingLoad>> {
    let outcome = finished.map_err(|e| DataFusionError::External(Box::new(e)))?;
    outcome.map_err(|e| location.error(e))?;
    Ok(Box::new(NothingToLoad))
}

/// What delta-rs reported in the commit it is about to make (`operationMetrics` of its `commitInfo`).
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    rows: u64,
    changes: Option<RowChanges>,
}

fn commit_metrics(log: Option<&[u8]>) -> Metrics {
    let info = log.into_iter().flat_map(|bytes| bytes.split(|b| *b == b'\n')).find_map(|line| {
        let value: Value = serde_json::from_slice(line).ok()?;
        value.get("commitInfo")?.get("operationMetrics").cloned()
    });
    let Some(info) = info else { return Metrics::default() };
    let number = |name: &str| info.get(name).and_then(Value::as_u64);
    match number("num_source_rows") {
        Some(source) => Metrics {
            rows: source,
            changes: Some(RowChanges {
                inserted: number("num_target_rows_inserted").unwrap_or_default(),
                updated: number("num_target_rows_updated").unwrap_or_default(),
                deleted: number("num_target_rows_deleted").unwrap_or_default(),
            }),
        },
        None => {
            let added = number("num_added_rows").unwrap_or_default();
            Metrics { rows: added, changes: Some(RowChanges { inserted: added, ..RowChanges::default() }) }
        }
    }
}

/// A load whose operation waits at its commit.
struct PendingDelta {
    shown: String,
    metrics: Metrics,
    decide: oneshot::Sender<Decision>,
    task: JoinHandle<DeltaResult<DeltaTable>>,
}

#[async_trait]
impl PendingLoad for PendingDelta {
    fn rows(&self) -> u64 {
        self.metrics.rows
    }

    fn changes(&self) -> Option<RowChanges> {
        self.metrics.changes
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let _ = self.decide.send(Decision::Commit);
        let table =
            self.task.await.map_err(|e| DataFusionError::External(Box::new(e)))?.map_err(|e| {
                DataFusionError::External(format!("Delta table {}: commit failed: {e}", self.shown).into())
            })?;
        let version = table.version().unwrap_or_default();
        info!(version, "Committed version {version} of Delta table {}", self.shown);
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        let _ = self.decide.send(Decision::Abort);
        // The operation fails at its commit; its files stay unreferenced.
        let _ = self.task.await;
    }
}

/// The delta-rs operation for the step's mode, ready to spawn.
fn operation(
    spec: &WriteDelta,
    cx: &StepContext,
    table: DeltaTable,
    exists: bool,
    input: DataFrame,
) -> Result<BoxFuture<'static, DeltaResult<DeltaTable>>> {
    let properties = commit_properties(cx);
    let delete_when = spec.delete_when.as_deref();
    match (spec.mode, exists) {
        (DeltaWriteMode::Append | DeltaWriteMode::Overwrite, _) | (DeltaWriteMode::Upsert, false) => {
            // Upserting into a table that does not exist yet inserts every row that is not a delete.
            let input = match (spec.mode, delete_when) {
                (DeltaWriteMode::Upsert, Some(flag)) => {
                    input.filter(ident(flag).is_not_true())?.drop_columns(&[flag])?
                }
                _ => input,
            };
            let save = match spec.mode {
                DeltaWriteMode::Overwrite => SaveMode::Overwrite,
                _ => SaveMode::Append,
            };
            let (state, plan) = input.into_parts();
            let mut write = table
                .write(Vec::new())
                .with_input_plan(plan)
                .with_session_state(delta_session(state))
                .with_save_mode(save)
                .with_commit_properties(properties);
            if spec.schema_evolution == SchemaEvolution::Evolve {
                write = write.with_schema_mode(match spec.mode {
                    DeltaWriteMode::Overwrite if spec.replace_where.is_none() => SchemaMode::Overwrite,
                    _ => SchemaMode::Merge,
                });
            }
            if let Some(predicate) = &spec.replace_where {
                write = write.with_replace_where(cx.render(predicate)?);
            }
            if !exists {
                write = write.with_partition_columns(spec.partition_by.clone()).with_configuration(
                    spec.properties.iter().map(|(k, v)| (k.to_string(), Some(v.clone()))).collect::<HashMap<_, _>>(),
                );
            }
            Ok(Box::pin(write.into_future()))
        }
        // (A delete from a table that does not exist returned before: nothing to delete.)
        (DeltaWriteMode::Upsert, true) | (DeltaWriteMode::Delete, _) => {
            let on = spec
                .keys
                .iter()
                .map(|k| qualified("target", k).eq(qualified("source", k)))
                .reduce(Expr::and)
                .expect("upsert and delete have keys (weir validate checks)");
            let state = delta_session(input.clone().into_parts().0);
            let mut merge = table
                .merge(input.clone(), on)
                .with_session_state(state)
                .with_source_alias("source")
                .with_target_alias("target")
                .with_streaming(true)
                .with_commit_properties(properties)
                .with_merge_schema(spec.schema_evolution == SchemaEvolution::Evolve);
            let columns: Vec<String> = input
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|name| Some(name.as_str()) != delete_when)
                .collect();
            merge = match spec.mode {
                DeltaWriteMode::Delete => merge.when_matched_delete(|d| d),
                _ => {
                    let upsert = match delete_when {
                        Some(flag) => {
                            merge.when_matched_delete(|d| d.predicate(qualified("source", flag).is_true()))?
                        }
                        None => merge,
                    };
                    let keep = delete_when.map_or(lit(true), |f| qualified("source", f).is_not_true());
                    upsert
                        .when_matched_update(|mut u| {
                            u = u.predicate(keep.clone());
                            for name in &columns {
                                u = u.update(
                                    DeltaColumn::from(Column::new_unqualified(name)),
                                    qualified("source", name),
                                );
                            }
                            u
                        })?
                        .when_not_matched_insert(|mut i| {
                            i = i.predicate(keep.clone());
                            for name in &columns {
                                i = i.set(DeltaColumn::from(Column::new_unqualified(name)), qualified("source", name));
                            }
                            i
                        })
                }
            }
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
            Ok(Box::pin(async move { merge.await.map(|(table, _)| table) }))
        }
    }
}

/// The run's session (its memory pool, object stores and functions) planning with delta-rs's planner, which
/// lowers the plan nodes delta-rs adds (its row counters, its merge's barrier) to execution plans.
fn delta_session(state: SessionState) -> Arc<SessionState> {
    Arc::new(SessionStateBuilder::new_from_existing(state).with_query_planner(DeltaPlanner::new()).build())
}

fn qualified(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), name))
}

/// The table's column names, in order.
fn table_schema(table: &DeltaTable) -> DeltaResult<SchemaRef> {
    Ok(table.snapshot()?.snapshot().arrow_schema())
}

/// The input as the schema policy wants it, against the table's columns when it exists.
fn conform(spec: &WriteDelta, table: Option<&[String]>, input: DataFrame, location: &Location) -> Result<DataFrame> {
    let Some(table) = table else { return Ok(input) };
    let own = |name: &str| Some(name) == spec.delete_when.as_deref();
    let new: Vec<String> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| !own(name) && !table.contains(name))
        .collect();
    if new.is_empty() {
        return Ok(input);
    }
    match spec.schema_evolution {
        SchemaEvolution::Evolve => Ok(input),
        SchemaEvolution::Freeze => Err(DataFusionError::Plan(format!(
            "Delta table {} has no column {} and `schema_evolution: freeze` keeps its columns; set \
             `schema_evolution: evolve` to add them or `discard` to drop them",
            location.shown(),
            new.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        ))),
        SchemaEvolution::Discard => {
            let keep: Vec<Expr> = input
                .schema()
                .fields()
                .iter()
                .filter(|f| !new.contains(f.name()))
                .map(|f| col(Column::new_unqualified(f.name())))
                .collect();
            input.select(keep)
        }
    }
}
