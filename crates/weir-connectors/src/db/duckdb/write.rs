//! `write_db` on DuckDB: the input is staged as a Parquet file in the run's scratch directory (streamed, bounded
//! memory), then loaded by set-based statements over `read_parquet` inside one transaction that commits with the
//! run: `INSERT … SELECT` (`append`; `replace` after `DELETE`), `INSERT … ON CONFLICT (keys) DO UPDATE` (`upsert`,
//! on the last row of each key in input order), `DELETE … USING` (`delete`, and the `delete_when` rows of an
//! upsert). This is DuckDB's fastest path in (it reads Parquet in parallel, vectorized) and keeps every type
//! conversion in DuckDB's Parquet reader.

use async_trait::async_trait;
use datafusion::arrow::datatypes::Field;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::error::{DataFusionError, Result};
use duckdb::{Connection, OptionalExt};
use tracing::info;
use weir_engine::{Batch, PendingLoad, RowChanges, StepContext};
use weir_spec::{DbWriteMode, WriteDb};

use super::connection::{arrow_type, db_path, ddl_type, duckdb_error, open};
use crate::db::schema_diff::{AddOnly, TableColumn};
use crate::db::sql_params::{quote_ident, quote_table};
use crate::db::{checkpoints, load as db_load};
use crate::files::paths;

/// Loads `input` into the step's table inside a transaction left open for [`PendingLoad::commit`].
pub async fn write(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let conn = cx.connection(&spec.connection.value)?;
    db_load::refuse_row_by_row_errors(cx, "DuckDB")?;
    let table = cx.render(&spec.table)?;
    let input = db_load::with_audit_columns(spec, cx, input)?;
    let schema = input.schema().inner().clone();
    let fields = db_load::data_fields(spec, &schema)?;
    let staged = cx.scratch_dir.join(format!("{}.duckdb-{}.parquet", cx.step, cx.batch.map_or(0, |b| b.index)));
    let staged_path = staged.to_string_lossy().into_owned();
    let written =
        input.write_parquet(&staged_path, DataFrameWriteOptions::new().with_single_file_output(true), None).await?;
    let rows = paths::rows_written(&written);
    let db = open(&conn.name, &db_path(&conn, cx))?;
    let target = Target { name: table.clone(), quoted: quote_table(&table), connection: conn.name.clone() };
    let loaded = tokio::task::block_in_place(|| -> Result<RowChanges> {
        db.execute_batch("BEGIN TRANSACTION").map_err(|e| target.error("cannot start a transaction on", e))?;
        let columns = prepare_table(spec, &db, &target, &fields)?;
        let changes = load(spec, cx, &db, &target, &columns, &staged_path, rows)?;
        if let Some(batch) = cx.batch {
            record_checkpoint(&db, cx, batch, rows, &conn.name)?;
        }
        Ok(changes)
    });
    let _ = std::fs::remove_file(&staged);
    match loaded {
        Ok(changes) => Ok(Box::new(DuckDbPending { db, rows, changes, table, connection: conn.name })),
        Err(e) => {
            let _ = db.execute_batch("ROLLBACK");
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
    fn error(&self, doing: &str, e: duckdb::Error) -> DataFusionError {
        duckdb_error(&format!("{doing} table `{}` on `{}`", self.name, self.connection), e)
    }

    /// The table's columns, or `None` when it does not exist.
    fn columns(&self, db: &Connection) -> Result<Option<Vec<TableColumn>>> {
        let (schema, name) = self.name.rsplit_once('.').unwrap_or(("main", &self.name));
        let mut statement = db
            .prepare(
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            )
            .map_err(|e| self.error("cannot look up", e))?;
        let columns = statement
            .query_map([schema, name], |row| {
                let (name, db_type): (String, String) = (row.get(0)?, row.get(1)?);
                Ok(TableColumn { name, arrow: arrow_type(&db_type), db_type })
            })
            .and_then(Iterator::collect::<duckdb::Result<Vec<_>>>)
            .map_err(|e| self.error("cannot describe", e))?;
        Ok((!columns.is_empty()).then_some(columns))
    }
}

/// How Weir creates and evolves DuckDB tables.
static DDL: AddOnly = AddOnly { system: "DuckDB", ddl_type, quote: quote_ident };

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

/// Loads the staged file of `rows` rows.
fn load(
    spec: &WriteDb,
    cx: &StepContext,
    db: &Connection,
    target: &Target,
    columns: &[Field],
    staged: &str,
    rows: u64,
) -> Result<RowChanges> {
    let file = format!("read_parquet('{}', file_row_number = true)", staged.replace('\'', "''"));
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name())).collect();
    let names = names.join(", ");
    let keys: Vec<String> = spec.keys.iter().map(|k| quote_ident(k)).collect();
    let on_keys = keys.iter().map(|k| format!("{0}.{k} = s.{k}", target.quoted)).collect::<Vec<_>>().join(" AND ");
    let deleting = |of: &str| {
        spec.delete_when.as_ref().map(|f| format!("coalesce(CAST({of}{} AS BOOLEAN), false)", quote_ident(f)))
    };
    let mut statements = Vec::new();
    match spec.mode {
        DbWriteMode::Append => statements
            .push((format!("INSERT INTO {} ({names}) SELECT {names} FROM {file}", target.quoted), Effect::Inserts)),
        DbWriteMode::Replace => {
            if Batch::is_first(cx.batch) {
                statements.push((format!("DELETE FROM {}", target.quoted), Effect::Deletes));
            }
            statements
                .push((format!("INSERT INTO {} ({names}) SELECT {names} FROM {file}", target.quoted), Effect::Inserts));
        }
        DbWriteMode::Upsert => {
            // The last row of each key in input order: an upsert's outcome is the key's final state, as on the
            // other databases, where rows apply one after another.
            let last = format!(
                "(SELECT * FROM {file} QUALIFY row_number() OVER (PARTITION BY {} ORDER BY file_row_number DESC) = 1)",
                keys.join(", ")
            );
            if let Some(deleting) = deleting("s.") {
                statements.push((
                    format!("DELETE FROM {} USING {last} s WHERE {on_keys} AND {deleting}", target.quoted),
                    Effect::Deletes,
                ));
            }
            let others: Vec<String> = columns
                .iter()
                .filter(|c| !spec.keys.contains(c.name()))
                .map(|c| format!("{0} = excluded.{0}", quote_ident(c.name())))
                .collect();
            let action = if others.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", others.join(", "))
            };
            let kept = deleting("").map_or(String::new(), |d| format!(" WHERE NOT {d}"));
            // The rows whose key is in the table when the insert runs are the ones it updates.
            let existing = format!(
                "SELECT count(*) FROM {last} s WHERE {} EXISTS (SELECT 1 FROM {} WHERE {on_keys})",
                deleting("s.").map_or(String::new(), |d| format!("NOT {d} AND")),
                target.quoted
            );
            statements.push((
                format!(
                    "INSERT INTO {} ({names}) SELECT {names} FROM {last}{kept} ON CONFLICT ({}) {action}",
                    target.quoted,
                    keys.join(", ")
                ),
                Effect::Upserts { existing, updates: !others.is_empty() },
            ));
        }
        DbWriteMode::Delete => {
            statements.push((
                format!(
                    "DELETE FROM {} USING (SELECT DISTINCT {} FROM {file}) s WHERE {on_keys}",
                    target.quoted,
                    keys.join(", ")
                ),
                Effect::Deletes,
            ));
        }
    }
    let mut changes = RowChanges::default();
    for (sql, effect) in &statements {
        let existing = match effect {
            Effect::Upserts { existing, .. } => {
                db.query_row(existing, [], |r| r.get::<_, i64>(0))
                    .map_err(|e| target.error("cannot look up keys in", e))? as u64
            }
            _ => 0,
        };
        let affected = db.execute(sql, []).map_err(|e| target.error("cannot load", e))? as u64;
        match effect {
            Effect::Inserts => changes.inserted += affected,
            Effect::Deletes => changes.deleted += affected,
            Effect::Upserts { updates: true, .. } => {
                changes.updated += existing;
                changes.inserted += affected.saturating_sub(existing);
            }
            Effect::Upserts { updates: false, .. } => changes.inserted += affected,
        }
    }
    info!(table = %target.name, rows, inserted = changes.inserted, updated = changes.updated, deleted = changes.deleted, "Wrote {rows} rows to {}", target.name);
    Ok(changes)
}

/// What a load statement's count of affected rows counts.
enum Effect {
    Inserts,
    Deletes,
    /// An `INSERT … ON CONFLICT`, whose count is its inserts plus its updates (if it `updates`); `existing` counts
    /// the rows whose key the table already has.
    Upserts {
        existing: String,
        updates: bool,
    },
}

const CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS weir_checkpoints (
    pipeline VARCHAR NOT NULL, step VARCHAR NOT NULL, run_id VARCHAR NOT NULL, batches BIGINT NOT NULL, rows BIGINT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp, PRIMARY KEY (pipeline, step))";

/// Records `batch` as committed in `weir_checkpoints`, inside the transaction that commits its rows.
fn record_checkpoint(db: &Connection, cx: &StepContext, batch: Batch, rows: u64, connection: &str) -> Result<()> {
    let failed = |e| duckdb_error(&format!("cannot record the checkpoint of `{}` on `{connection}`", cx.step), e);
    db.execute_batch(CHECKPOINTS).map_err(failed)?;
    let (pipeline, step, run_id, batches, rows) = checkpoints::values(cx, batch, rows);
    db.execute(checkpoints::RECORD, duckdb::params![pipeline, step, run_id, batches, rows]).map_err(failed)?;
    Ok(())
}

/// The batches of run `cx.run_id` that a batch-loading `write_db` on DuckDB has committed.
pub fn committed_batches(spec: &WriteDb, cx: &StepContext) -> Result<u64> {
    let conn = cx.connection(&spec.connection.value)?;
    let db = open(&conn.name, &db_path(&conn, cx))?;
    let failed = |e| duckdb_error(&format!("cannot read the checkpoint of `{}` on `{}`", cx.step, conn.name), e);
    let exists: i64 = db
        .query_row("SELECT count(*) FROM information_schema.tables WHERE table_name = 'weir_checkpoints'", [], |r| {
            r.get(0)
        })
        .map_err(failed)?;
    if exists == 0 {
        return Ok(0);
    }
    let batches: Option<i64> = db
        .query_row(checkpoints::LOOKUP, duckdb::params![cx.pipeline, cx.step, cx.run_id], |r| r.get(0))
        .optional()
        .map_err(failed)?;
    Ok(batches.unwrap_or(0) as u64)
}

/// A load whose transaction is open until the run commits.
struct DuckDbPending {
    db: Connection,
    rows: u64,
    changes: RowChanges,
    table: String,
    connection: String,
}

#[async_trait]
impl PendingLoad for DuckDbPending {
    fn rows(&self) -> u64 {
        self.rows
    }

    fn changes(&self) -> Option<RowChanges> {
        Some(self.changes)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.db.execute_batch("COMMIT").map_err(|e| {
            duckdb_error(&format!("cannot commit the load of `{}` on `{}`", self.table, self.connection), e)
        })
    }

    async fn abort(self: Box<Self>) {
        let _ = self.db.execute_batch("ROLLBACK");
    }
}
