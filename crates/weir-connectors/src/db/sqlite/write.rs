//! `write_db` on SQLite: one `BEGIN IMMEDIATE` transaction per file holds the DDL and every row of the run's loads
//! into it, committed only when the whole run succeeds. Rows go through cached prepared statements in input order: `INSERT` (`append`, `replace`
//! after `DELETE`), `INSERT … ON CONFLICT (keys) DO UPDATE` (`upsert`), `DELETE … WHERE keys = …` (`delete` and the
//! `delete_when` rows of an upsert). With `on_error: dead_letter` (or `skip`), a row the database refuses (a
//! constraint) goes to the step's dead letters and the rest load: SQLite undoes only the refused statement.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type,
};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use tracing::info;
use weir_engine::{Batch, PendingLoad, RowChanges, StepContext};
use weir_spec::{DbWriteMode, OnError, WriteDb};

use super::{arrow_type, datetime_text, db_path, ddl_type, open, quote_ident, quote_table, shared, sqlite_error};
use crate::db::checkpoints;
use crate::db::load::{self as db_load, canonical};
use crate::db::schema_diff::{AddOnly, TableColumn};

/// Loads `input` into the step's table inside the run's transaction on the file (see [`shared`]), left open for
/// [`PendingLoad::commit`].
pub async fn write(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let conn = cx.connection(&spec.connection.value)?;
    let table = cx.render(&spec.table)?;
    let input = db_load::with_audit_columns(spec, cx, input)?;
    let schema = input.schema().inner().clone();
    let fields = db_load::data_fields(spec, &schema)?;
    let target = Target { name: table.clone(), quoted: quote_table(&table), connection: conn.name.clone() };
    // Beginning may wait (up to `busy_timeout`) for another process's lock.
    let tx = tokio::task::block_in_place(|| shared::join(cx, &conn, &db_path(&conn, cx)))?;
    let mut db = tx.db.lock().await;
    db.execute_batch("SAVEPOINT weir_load").map_err(|e| target.error("cannot start the load of", e))?;
    let loaded = match prepare_table(spec, &db, &target, &fields) {
        Ok(columns) => load(spec, cx, &mut db, &target, &columns, input).await,
        Err(e) => Err(e),
    };
    let loaded = match (loaded, cx.batch) {
        (Ok((rows, changes)), Some(batch)) => {
            record_checkpoint(&db, cx, batch, rows, &conn.name).map(|()| (rows, changes))
        }
        (other, _) => other,
    };
    let loaded = loaded.and_then(|loaded| {
        db.execute_batch("RELEASE weir_load").map_err(|e| target.error("cannot finish the load of", e))?;
        Ok(loaded)
    });
    match loaded {
        Ok((rows, changes)) => {
            drop(db);
            tx.loaded();
            Ok(Box::new(SqlitePending { tx, rows, changes, table }))
        }
        Err(e) => {
            let _ = db.execute_batch("ROLLBACK TO weir_load; RELEASE weir_load");
            Err(e)
        }
    }
}

struct Target {
    name: String,
    quoted: String,
    connection: String,
}

impl Target {
    fn error(&self, doing: &str, e: rusqlite::Error) -> DataFusionError {
        sqlite_error(&format!("{doing} table `{}` on `{}`", self.name, self.connection), e)
    }

    /// The table's columns, or `None` when it does not exist.
    fn columns(&self, db: &Connection) -> Result<Option<Vec<TableColumn>>> {
        let (schema, name) = self.name.rsplit_once('.').unwrap_or(("main", &self.name));
        let exists: i64 = db
            .query_row(
                &format!(
                    "SELECT count(*) FROM {}.sqlite_master WHERE type = 'table' AND name = ?1",
                    quote_ident(schema)
                ),
                [name],
                |row| row.get(0),
            )
            .map_err(|e| self.error("cannot look up", e))?;
        if exists == 0 {
            return Ok(None);
        }
        let statement =
            db.prepare(&format!("SELECT * FROM {}", self.quoted)).map_err(|e| self.error("cannot describe", e))?;
        Ok(Some(
            statement
                .columns()
                .iter()
                .map(|c| TableColumn {
                    name: c.name().to_string(),
                    arrow: Some(arrow_type(c.decl_type(), None)),
                    db_type: c.decl_type().unwrap_or("(none)").to_string(),
                })
                .collect(),
        ))
    }
}

/// How Weir creates and evolves SQLite tables.
static DDL: AddOnly = AddOnly { system: "SQLite", ddl_type, quote: quote_ident };

/// Creates the table when missing and applies the schema evolution policy; returns the columns to load.
fn prepare_table(spec: &WriteDb, db: &Connection, target: &Target, fields: &[&Field]) -> Result<Vec<Field>> {
    let existing = match target.columns(db)? {
        Some(columns) => columns,
        None => {
            let ddl = DDL.create(spec, &target.quoted, fields)?;
            info!(table = %target.name, "Creating table: {ddl}");
            db.execute_batch(&ddl).map_err(|e| target.error("cannot create", e))?;
            target.columns(db)?.expect("the table was just created")
        }
    };
    let (columns, alters) = DDL.evolve(spec, (&target.name, &target.quoted), fields, &existing)?;
    for ddl in alters {
        info!(table = %target.name, "Evolving table: {ddl}");
        db.execute_batch(&ddl).map_err(|e| target.error("cannot alter", e))?;
    }
    Ok(columns)
}

/// Loads the input; returns the rows loaded and how they changed the table (an upsert looks its key up first to
/// tell an insert from an update; SQLite updates a row even when nothing in it changes).
async fn load(
    spec: &WriteDb,
    cx: &StepContext,
    db: &mut Connection,
    target: &Target,
    columns: &[Field],
    input: DataFrame,
) -> Result<(u64, RowChanges)> {
    if spec.mode == DbWriteMode::Replace && Batch::is_first(cx.batch) {
        db.execute_batch(&format!("DELETE FROM {}", target.quoted)).map_err(|e| target.error("cannot empty", e))?;
    }
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name())).collect();
    let key_indices: Vec<usize> = spec
        .keys
        .iter()
        .map(|k| columns.iter().position(|c| c.name() == k).expect("keys were checked against the input"))
        .collect();
    let placeholders = vec!["?"; names.len()].join(", ");
    let insert = format!("INSERT INTO {} ({}) VALUES ({placeholders})", target.quoted, names.join(", "));
    let upsert = {
        let others: Vec<String> = (0..names.len())
            .filter(|i| !key_indices.contains(i))
            .map(|i| format!("{0} = excluded.{0}", names[i]))
            .collect();
        let keys: Vec<&str> = key_indices.iter().map(|i| names[*i].as_str()).collect();
        let action =
            if others.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", others.join(", ")) };
        format!("{insert} ON CONFLICT ({}) {action}", keys.join(", "))
    };
    let delete = format!(
        "DELETE FROM {} WHERE {}",
        target.quoted,
        key_indices.iter().map(|i| format!("{} = ?", names[*i])).collect::<Vec<_>>().join(" AND ")
    );

    let exists = format!(
        "SELECT 1 FROM {} WHERE {}",
        target.quoted,
        key_indices.iter().map(|i| format!("{} = ?", names[*i])).collect::<Vec<_>>().join(" AND ")
    );
    let isolate = cx.on_error != OnError::Fail;
    let mut stream = input.execute_stream().await?;
    let (mut rows, mut deleted, mut refused_rows) = (0u64, 0usize, 0u64);
    let mut changes = RowChanges::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let values = columns
            .iter()
            .map(|c| {
                let column = batch.column_by_name(c.name()).expect("columns were matched against the input's schema");
                canonical(column).and_then(|a| values(&a)).map_err(|e| {
                    DataFusionError::Execution(format!("column `{}` for `{}`: {e}", c.name(), target.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let flags = match &spec.delete_when {
            Some(flag) => {
                let column = batch.column_by_name(flag).expect("delete_when was checked against the input");
                let flags = cast(column, &DataType::Boolean).map_err(|e| {
                    DataFusionError::Execution(format!("`delete_when: {flag}` is not a true/false column: {e}"))
                })?;
                let flags = flags.as_boolean();
                Some((0..flags.len()).map(|i| flags.is_valid(i) && flags.value(i)).collect::<Vec<bool>>())
            }
            None => None,
        };
        let written = rows;
        let mut refused = Vec::new();
        // SQLite calls block; they run on this worker while the other workers go on.
        tokio::task::block_in_place(|| -> Result<()> {
            let mut insert = db
                .prepare_cached(if spec.mode == DbWriteMode::Upsert { &upsert } else { &insert })
                .map_err(|e| target.error("cannot prepare the insert into", e))?;
            let mut exists = match spec.mode {
                DbWriteMode::Upsert if !key_indices.is_empty() => {
                    Some(db.prepare_cached(&exists).map_err(|e| target.error("cannot prepare a key lookup in", e))?)
                }
                _ => None,
            };
            let mut delete = match spec.mode {
                DbWriteMode::Upsert | DbWriteMode::Delete if !key_indices.is_empty() => {
                    Some(db.prepare_cached(&delete).map_err(|e| target.error("cannot prepare the delete from", e))?)
                }
                _ => None,
            };
            for r in 0..batch.num_rows() {
                let row_error = |e| {
                    let e = target.error("cannot write to", e);
                    DataFusionError::External(format!("{e} (input row {})", written + r as u64 + 1).into())
                };
                let deleting = spec.mode == DbWriteMode::Delete || flags.as_ref().is_some_and(|f| f[r]);
                let existed = match (&mut exists, deleting) {
                    (Some(statement), false) => statement
                        .exists(params_from_iter(key_indices.iter().map(|k| &values[*k][r])))
                        .map_err(row_error)?,
                    _ => false,
                };
                match (&mut delete, deleting) {
                    (Some(statement), true) => {
                        deleted += statement
                            .execute(params_from_iter(key_indices.iter().map(|k| &values[*k][r])))
                            .map_err(row_error)?;
                    }
                    _ => match insert.execute(params_from_iter(values.iter().map(|c| &c[r]))) {
                        Ok(0) => {}
                        Ok(_) if existed => changes.updated += 1,
                        Ok(_) => changes.inserted += 1,
                        Err(e)
                            if isolate && e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                        {
                            refused.push((r, e.to_string()));
                        }
                        Err(e) => return Err(row_error(e)),
                    },
                }
            }
            Ok(())
        })?;
        refused_rows += db_load::reject_refused(cx, &batch, &refused, written, (&target.name, &target.connection))?;
        rows += batch.num_rows() as u64;
    }
    let loaded = rows - refused_rows;
    changes.deleted = deleted as u64;
    info!(table = %target.name, rows, deleted, refused = refused_rows, "Wrote {loaded} of {rows} rows to {} ({deleted} deleted)", target.name);
    Ok((loaded, changes))
}

/// One column of a batch as SQLite values; `array` already has its [`db_load::canonical_type`].
fn values(array: &ArrayRef) -> std::result::Result<Vec<Value>, String> {
    let n = array.len();
    let null = |i: usize| array.is_null(i);
    let each = |f: &dyn Fn(usize) -> std::result::Result<Value, String>| -> std::result::Result<Vec<Value>, String> {
        (0..n).map(|i| if null(i) { Ok(Value::Null) } else { f(i) }).collect()
    };
    match array.data_type() {
        DataType::Boolean => each(&|i| Ok(Value::Integer(array.as_boolean().value(i) as i64))),
        DataType::Int64 => each(&|i| Ok(Value::Integer(array.as_primitive::<Int64Type>().value(i)))),
        DataType::UInt64 => each(&|i| Ok(Value::Text(array.as_primitive::<UInt64Type>().value(i).to_string()))),
        DataType::Float64 => each(&|i| Ok(Value::Real(array.as_primitive::<Float64Type>().value(i)))),
        DataType::Decimal128(..) => {
            each(&|i| Ok(Value::Text(array.as_primitive::<Decimal128Type>().value_as_string(i))))
        }
        DataType::Utf8 => each(&|i| Ok(Value::Text(array.as_string::<i32>().value(i).to_string()))),
        DataType::Binary => each(&|i| Ok(Value::Blob(array.as_binary::<i32>().value(i).to_vec()))),
        DataType::Date32 => each(&|i| {
            Ok(Value::Text(
                datetime_text(array.as_primitive::<Date32Type>().value(i) as i64 * 86_400_000_000)?[..10].to_string(),
            ))
        }),
        DataType::Timestamp(..) => {
            each(&|i| Ok(Value::Text(datetime_text(array.as_primitive::<TimestampMicrosecondType>().value(i))?)))
        }
        other => Err(format!("cannot send Arrow {other} to SQLite")),
    }
}

const CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS weir_checkpoints (
    pipeline TEXT NOT NULL, step TEXT NOT NULL, run_id TEXT NOT NULL, batches INTEGER NOT NULL, rows INTEGER NOT NULL,
    committed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), PRIMARY KEY (pipeline, step))";

/// Records `batch` as committed in `weir_checkpoints`, inside the transaction that commits its rows.
fn record_checkpoint(db: &Connection, cx: &StepContext, batch: Batch, rows: u64, connection: &str) -> Result<()> {
    let failed = |e| sqlite_error(&format!("cannot record the checkpoint of `{}` on `{connection}`", cx.step), e);
    db.execute_batch(CHECKPOINTS).map_err(failed)?;
    db.execute(checkpoints::RECORD, checkpoints::values(cx, batch, rows)).map_err(failed)?;
    Ok(())
}

/// The batches of run `cx.run_id` that a batch-loading `write_db` on SQLite has committed.
pub fn committed_batches(spec: &WriteDb, cx: &StepContext) -> Result<u64> {
    let conn = cx.connection(&spec.connection.value)?;
    let db = open(&conn, &db_path(&conn, cx))?;
    let failed = |e| sqlite_error(&format!("cannot read the checkpoint of `{}` on `{}`", cx.step, conn.name), e);
    let exists: i64 = db
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'weir_checkpoints'", [], |r| {
            r.get(0)
        })
        .map_err(failed)?;
    if exists == 0 {
        return Ok(0);
    }
    let batches: Option<i64> = db
        .query_row(checkpoints::LOOKUP, rusqlite::params![cx.pipeline, cx.step, cx.run_id], |r| r.get(0))
        .optional()
        .map_err(failed)?;
    Ok(batches.unwrap_or(0) as u64)
}

/// A load whose transaction is open until the run commits.
struct SqlitePending {
    tx: std::sync::Arc<shared::Transaction>,
    rows: u64,
    changes: RowChanges,
    table: String,
}

#[async_trait]
impl PendingLoad for SqlitePending {
    fn rows(&self) -> u64 {
        self.rows
    }

    fn changes(&self) -> Option<RowChanges> {
        Some(self.changes)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit(&self.table).await
    }

    async fn abort(self: Box<Self>) {
        self.tx.abort().await
    }
}
