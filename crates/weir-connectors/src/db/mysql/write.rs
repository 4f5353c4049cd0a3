//! `write_db` on MySQL/MariaDB. The table is created or evolved first, because MySQL commits DDL implicitly; the
//! rows then go in one transaction (InnoDB) that commits only when the whole run succeeds, as multi-row
//! `INSERT` (`append`, `replace` after `DELETE`), `INSERT … ON DUPLICATE KEY UPDATE` (`upsert`) and
//! `DELETE … WHERE (keys) IN (…)` (`delete`, and `delete_when` rows of an upsert), in input order.

use std::ops::Range;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};
use tracing::info;
use weir_engine::{Batch, Patience, PendingLoad, RowChanges, StepContext};
use weir_spec::{DbWriteMode, OnError, WriteDb};

use super::types::{arrow_type, ddl_type, values};
use super::{connect, my_error, quote_ident, quote_table};
use crate::db::load::{self as db_load, canonical};
use crate::db::schema_diff::{self, ColumnChange, TableColumn};

/// Rows per statement: large enough to amortize round trips, small enough for any `max_allowed_packet`.
const ROWS_PER_STATEMENT: usize = 1000;
/// MySQL's limit on placeholders in one statement.
const MAX_PARAMS: usize = 65_535;

/// Loads `input` into the step's table inside a transaction left open for [`PendingLoad::commit`].
pub async fn write(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let conn = cx.connection(&spec.connection.value)?;
    let table = cx.render(&spec.table)?;
    let input = db_load::with_audit_columns(spec, cx, input)?;
    let schema = input.schema().inner().clone();
    let fields = db_load::data_fields(spec, &schema)?;
    let mut client = connect(&conn, &Patience::of(cx, spec.retry.as_ref())).await?;
    let target = Target { name: table.clone(), quoted: quote_table(&table), connection: conn.name.clone() };

    let Some(columns) = prepare_table(spec, &mut client, &target, &fields, cx.dry_run).await? else {
        return Ok(Box::new(MyPending { client, rows: 0, changes: None, table, connection: conn.name }));
    };
    if cx.batch.is_some() {
        // Before the transaction: MySQL commits DDL at once.
        client
            .query_drop(CHECKPOINTS)
            .await
            .map_err(|e| my_error(&format!("cannot create weir_checkpoints on `{}`", conn.name), e))?;
    }
    target.run(&mut client, "START TRANSACTION", "cannot start a transaction on").await?;
    let loaded = match load(spec, cx, &mut client, &target, &columns, input).await {
        Ok((rows, changes)) => match cx.batch {
            Some(batch) => record_checkpoint(&mut client, cx, batch, rows, &conn.name).await.map(|()| (rows, changes)),
            None => Ok((rows, changes)),
        },
        Err(e) => Err(e),
    };
    match loaded {
        Ok((rows, changes)) => Ok(Box::new(MyPending { client, rows, changes, table, connection: conn.name })),
        Err(e) => {
            let _ = client.query_drop("ROLLBACK").await;
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
    async fn run(&self, client: &mut Conn, sql: &str, doing: &str) -> Result<()> {
        client.query_drop(sql).await.map_err(|e| self.error(doing, e))
    }

    fn error(&self, doing: &str, e: mysql_async::Error) -> DataFusionError {
        my_error(&format!("{doing} table `{}` on `{}`", self.name, self.connection), e)
    }

    /// `(schema or NULL for the current database, table)` for information_schema lookups.
    fn schema_and_name(&self) -> (Value, Value) {
        match self.name.rsplit_once('.') {
            Some((db, t)) => (Value::from(db), Value::from(t)),
            None => (Value::NULL, Value::from(self.name.as_str())),
        }
    }

    /// The table's columns, or `None` when it does not exist.
    async fn columns(&self, client: &mut Conn) -> Result<Option<Vec<TableColumn>>> {
        let (db, name) = self.schema_and_name();
        let exists: Option<i64> = client
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
                (db, name),
            )
            .await
            .map_err(|e| self.error("cannot look up", e))?;
        if exists.unwrap_or(0) == 0 {
            return Ok(None);
        }
        let statement = client
            .prep(format!("SELECT * FROM {} LIMIT 0", self.quoted))
            .await
            .map_err(|e| self.error("cannot describe", e))?;
        Ok(Some(
            statement
                .columns()
                .iter()
                .map(|c| TableColumn {
                    name: c.name_str().into_owned(),
                    arrow: arrow_type(c),
                    db_type: format!("{:?}", c.column_type()).trim_start_matches("MYSQL_TYPE_").to_lowercase(),
                })
                .collect(),
        ))
    }

    /// What `MODIFY COLUMN` must restate of `column` besides its type: ` NOT NULL`, ` DEFAULT …`, ` AUTO_INCREMENT`.
    async fn column_attributes(&self, client: &mut Conn, column: &str) -> Result<String> {
        let (db, name) = self.schema_and_name();
        let found: Option<(String, Option<String>, String)> = client
            .exec_first(
                "SELECT is_nullable, column_default, extra FROM information_schema.columns
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND column_name = ?",
                (db, name, column),
            )
            .await
            .map_err(|e| self.error("cannot describe", e))?;
        let Some((nullable, default, extra)) = found else { return Ok(String::new()) };
        let mut kept = String::from(if nullable == "NO" { " NOT NULL" } else { " NULL" });
        // MariaDB keeps a default as an expression (`NULL` when there is none); MySQL as its value.
        if let Some(default) = default.filter(|d| d != "NULL") {
            kept.push_str(&format!(" DEFAULT {default}"));
        }
        if extra.to_lowercase().contains("auto_increment") {
            kept.push_str(" AUTO_INCREMENT");
        }
        Ok(kept)
    }

    /// Whether a primary key or unique index covers exactly `keys`, which `ON DUPLICATE KEY UPDATE` needs.
    async fn has_unique_key(&self, client: &mut Conn, keys: &[String]) -> Result<bool> {
        let (db, name) = self.schema_and_name();
        let indexes: Vec<String> = client
            .exec(
                "SELECT GROUP_CONCAT(column_name ORDER BY column_name SEPARATOR ',') FROM information_schema.statistics \
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND non_unique = 0 GROUP BY index_name",
                (db, name),
            )
            .await
            .map_err(|e| self.error("cannot read the indexes of", e))?;
        let mut wanted = keys.to_vec();
        wanted.sort();
        Ok(indexes.iter().any(|i| i.split(',').map(str::to_string).collect::<Vec<_>>() == wanted))
    }
}

/// Creates the table when missing and applies the schema evolution policy; returns the columns to load. MySQL
/// commits DDL at once, so a dry run only logs the DDL it would run, and returns `None` when there is any: the
/// rows cannot be tried against a table that does not exist yet.
async fn prepare_table(
    spec: &WriteDb,
    client: &mut Conn,
    target: &Target,
    fields: &[&Field],
    dry_run: bool,
) -> Result<Option<Vec<Field>>> {
    let existing = match target.columns(client).await? {
        Some(columns) => columns,
        None => {
            let ddl = create_table(spec, target, fields)?;
            if dry_run {
                info!(table = %target.name, "Dry run: would create the table, then load: {ddl}");
                return Ok(None);
            }
            info!(table = %target.name, "Creating table: {ddl}");
            target.run(client, &ddl, "cannot create").await?;
            target.columns(client).await?.expect("the table was just created")
        }
    };
    let can_widen =
        |column: &TableColumn, input: &DataType| column.arrow.as_ref().is_some_and(|t| widened(t, input).is_some());
    let planned = schema_diff::plan(spec.schema_evolution, &target.name, fields, &existing, &can_widen)?;
    let mut changes = Vec::new();
    for (f, change) in &planned {
        match change {
            ColumnChange::Fits => {}
            ColumnChange::Add => {
                let ty = db_load::column_type(f, false, "MySQL", &ddl_type)?;
                changes.push(format!("ADD COLUMN {} {ty}", quote_ident(f.name())));
            }
            ColumnChange::Widen => {
                let table = existing
                    .iter()
                    .find(|c| c.name == *f.name())
                    .and_then(|c| c.arrow.as_ref())
                    .expect("only existing columns widen");
                let ty = widened(table, f.data_type()).expect("plan checked can_widen");
                // MODIFY restates the whole column: keep its NULL, default and auto-increment as they are.
                let kept = target.column_attributes(client, f.name()).await?;
                changes.push(format!("MODIFY COLUMN {} {ty}{kept}", quote_ident(f.name())));
            }
        }
    }
    if !changes.is_empty() {
        let ddl = format!("ALTER TABLE {} {}", target.quoted, changes.join(", "));
        if dry_run {
            info!(table = %target.name, "Dry run: would evolve the table, then load: {ddl}");
            return Ok(None);
        }
        info!(table = %target.name, "Evolving table: {ddl}");
        target.run(client, &ddl, "cannot alter").await?;
    }
    if spec.mode == DbWriteMode::Upsert && !target.has_unique_key(client, &spec.keys).await? {
        return Err(DataFusionError::Plan(format!(
            "upsert needs a primary key or unique index on ({}) of `{}`; without one MySQL would insert duplicates",
            spec.keys.join(", "),
            target.name
        )));
    }
    Ok(Some(planned.into_iter().map(|(f, _)| f).collect()))
}

/// The wider column type that holds both the table's values and the input's, for `schema_evolution: evolve`.
fn widened(table: &DataType, input: &DataType) -> Option<&'static str> {
    use DataType::*;
    Some(match (table, input) {
        (Int8 | Int16, Int32 | UInt8 | UInt16) => "INT",
        (Int8 | Int16 | Int32, Int64 | UInt32) => "BIGINT",
        (Float32, Float64 | Int32 | Int64) => "DOUBLE",
        _ => return None,
    })
}

/// The `CREATE TABLE` statement for the input's columns.
fn create_table(spec: &WriteDb, target: &Target, fields: &[&Field]) -> Result<String> {
    let defs = db_load::column_definitions(spec, fields, "MySQL", quote_ident, &ddl_type)?;
    Ok(format!("CREATE TABLE {} ({defs}) ENGINE=InnoDB", target.quoted))
}

/// Loads the input; `first` is false for the later batches of a batched load, which a `replace` must not empty
/// the table before.
async fn load(
    spec: &WriteDb,
    cx: &StepContext,
    client: &mut Conn,
    target: &Target,
    columns: &[Field],
    input: DataFrame,
) -> Result<(u64, Option<RowChanges>)> {
    if spec.mode == DbWriteMode::Replace && Batch::is_first(cx.batch) {
        // Not TRUNCATE: MySQL commits it at once, and readers would see an empty table.
        target.run(client, &format!("DELETE FROM {}", target.quoted), "cannot empty").await?;
    }
    let names: Vec<String> = columns.iter().map(|c| c.name().clone()).collect();
    let key_indices: Vec<usize> = spec
        .keys
        .iter()
        .map(|k| names.iter().position(|n| n == k).expect("keys were checked against the input"))
        .collect();
    let statement =
        Statement { target, names: &names, key_indices: &key_indices, isolate: cx.on_error != OnError::Fail };
    let mut stream = input.execute_stream().await?;
    let (mut rows, mut deleted, mut refused_rows) = (0u64, 0u64, 0u64);
    let mut changes = Some(RowChanges::default());
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
        let n = batch.num_rows();
        let mut refused = Vec::new();
        match spec.mode {
            DbWriteMode::Append | DbWriteMode::Replace => {
                refused = statement.insert(client, &values, 0..n, false, &mut changes).await?
            }
            DbWriteMode::Delete => deleted += statement.delete(client, &values, 0..n).await?,
            DbWriteMode::Upsert => {
                // Runs of rows with the same delete flag, applied in input order so the last event per key wins.
                let flags = delete_flags(spec, &batch)?;
                let mut start = 0;
                while start < n {
                    let flagged = flags.as_ref().is_some_and(|f| f[start]);
                    let end = (start..n).find(|&i| flags.as_ref().is_some_and(|f| f[i]) != flagged).unwrap_or(n);
                    if flagged {
                        deleted += statement.delete(client, &values, start..end).await?;
                    } else {
                        refused.extend(statement.insert(client, &values, start..end, true, &mut changes).await?);
                    }
                    start = end;
                }
            }
        }
        refused_rows += db_load::reject_refused(cx, &batch, &refused, rows, (&target.name, &target.connection))?;
        rows += n as u64;
    }
    let loaded = rows - refused_rows;
    info!(table = %target.name, rows, deleted, refused = refused_rows, "Wrote {loaded} of {rows} rows to {} ({deleted} deleted)", target.name);
    Ok((loaded, changes.map(|c| RowChanges { deleted, ..c })))
}

/// The `delete_when` column as booleans (NULL is false), if the step has one.
fn delete_flags(spec: &WriteDb, batch: &RecordBatch) -> Result<Option<Vec<bool>>> {
    let Some(flag) = &spec.delete_when else { return Ok(None) };
    let column = batch.column_by_name(flag).expect("delete_when was checked against the input");
    let flags = cast(column, &DataType::Boolean)
        .map_err(|e| DataFusionError::Execution(format!("`delete_when: {flag}` is not a true/false column: {e}")))?;
    let flags = flags.as_boolean();
    Ok(Some((0..flags.len()).map(|i| flags.is_valid(i) && flags.value(i)).collect()))
}

/// Builds and runs the multi-row statements of one table.
struct Statement<'a> {
    target: &'a Target,
    names: &'a [String],
    key_indices: &'a [usize],
    /// Whether rows the database refuses are handed back (`on_error` other than `fail`) rather than failing the load.
    isolate: bool,
}

impl Statement<'_> {
    fn rows_per_statement(&self, columns: usize) -> usize {
        ROWS_PER_STATEMENT.min(MAX_PARAMS / columns.max(1)).max(1)
    }

    /// Inserts `rows` of the batch, counting them into `changes`; returns the rows the database refused for their
    /// data, with its reason, when isolating. InnoDB undoes only a failed statement, so a refused statement is split
    /// in halves until the refused rows stand alone.
    async fn insert(
        &self,
        client: &mut Conn,
        values: &[Vec<Value>],
        rows: Range<usize>,
        upsert: bool,
        changes: &mut Option<RowChanges>,
    ) -> Result<Vec<(usize, String)>> {
        let columns = self.names.iter().map(|n| quote_ident(n)).collect::<Vec<_>>().join(", ");
        let row = format!("({})", vec!["?"; self.names.len()].join(", "));
        let on_duplicate = if upsert {
            let others: Vec<String> = (0..self.names.len())
                .filter(|i| !self.key_indices.contains(i))
                .map(|i| format!("{0} = VALUES({0})", quote_ident(&self.names[i])))
                .collect();
            let set = if others.is_empty() {
                format!("{0} = {0}", quote_ident(&self.names[self.key_indices[0]]))
            } else {
                others.join(", ")
            };
            format!(" ON DUPLICATE KEY UPDATE {set}")
        } else {
            String::new()
        };
        let step = self.rows_per_statement(self.names.len());
        let mut pending: Vec<Range<usize>> =
            rows.clone().step_by(step).map(|start| start..(start + step).min(rows.end)).rev().collect();
        let mut refused = Vec::new();
        while let Some(Range { start, end }) = pending.pop() {
            let sql = format!(
                "INSERT INTO {} ({columns}) VALUES {}{on_duplicate}",
                self.target.quoted,
                vec![row.as_str(); end - start].join(", ")
            );
            let params: Vec<Value> = (start..end).flat_map(|r| values.iter().map(move |c| c[r].clone())).collect();
            match client.exec_drop(sql, Params::Positional(params)).await {
                Ok(()) => {
                    let counted = match upsert {
                        false => Some(RowChanges { inserted: client.affected_rows(), ..RowChanges::default() }),
                        true => upserted(end - start, client.affected_rows(), &client.info()),
                    };
                    *changes = changes.zip(counted).map(|(a, b)| a + b);
                }
                Err(mysql_async::Error::Server(e)) if self.isolate && matches!(&e.state[..2], "22" | "23") => {
                    if end - start > 1 {
                        let middle = start + (end - start) / 2;
                        pending.push(middle..end);
                        pending.push(start..middle);
                    } else {
                        refused.push((start, format!("{} (error {}, SQLSTATE {})", e.message, e.code, e.state)));
                    }
                }
                Err(e) => return Err(self.rows_error("cannot insert into", start, end, e)),
            }
        }
        Ok(refused)
    }

    /// Deletes the rows whose keys appear in `rows` of the input; returns how many were deleted.
    async fn delete(&self, client: &mut Conn, values: &[Vec<Value>], rows: Range<usize>) -> Result<u64> {
        let keys = self.key_indices.iter().map(|i| quote_ident(&self.names[*i])).collect::<Vec<_>>().join(", ");
        let tuple = format!("({})", vec!["?"; self.key_indices.len()].join(", "));
        let step = self.rows_per_statement(self.key_indices.len());
        let mut deleted = 0;
        for start in rows.clone().step_by(step) {
            let end = (start + step).min(rows.end);
            let sql = format!(
                "DELETE FROM {} WHERE ({keys}) IN ({})",
                self.target.quoted,
                vec![tuple.as_str(); end - start].join(", ")
            );
            let params: Vec<Value> =
                (start..end).flat_map(|r| self.key_indices.iter().map(move |k| values[*k][r].clone())).collect();
            client
                .exec_drop(sql, Params::Positional(params))
                .await
                .map_err(|e| self.rows_error("cannot delete from", start, end, e))?;
            deleted += client.affected_rows();
        }
        Ok(deleted)
    }

    fn rows_error(&self, doing: &str, start: usize, end: usize, e: mysql_async::Error) -> DataFusionError {
        let e = self.target.error(doing, e);
        DataFusionError::External(format!("{e} (rows {}..{} of the batch)", start + 1, end).into())
    }
}

const CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS weir_checkpoints (
    pipeline VARCHAR(255) NOT NULL, step VARCHAR(255) NOT NULL, run_id VARCHAR(64) NOT NULL, batches BIGINT NOT NULL,
    `rows` BIGINT NOT NULL, committed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (pipeline, step)
) ENGINE=InnoDB";

/// Records `batch` as committed in `weir_checkpoints`, inside the transaction that commits its rows.
async fn record_checkpoint(
    client: &mut Conn,
    cx: &StepContext,
    batch: Batch,
    rows: u64,
    connection: &str,
) -> Result<()> {
    client
        .exec_drop(
            "INSERT INTO weir_checkpoints (pipeline, step, run_id, batches, `rows`) VALUES (?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE run_id = VALUES(run_id), batches = VALUES(batches), `rows` = VALUES(`rows`),
                 committed_at = CURRENT_TIMESTAMP(6)",
            (&cx.pipeline, &cx.step, &cx.run_id, batch.index + 1, batch.rows_before + rows),
        )
        .await
        .map_err(|e| my_error(&format!("cannot record the checkpoint of `{}` on `{connection}`", cx.step), e))
}

/// The batches of run `cx.run_id` that a batch-loading `write_db` on MySQL has committed.
pub async fn committed_batches(spec: &WriteDb, cx: &StepContext) -> Result<u64> {
    let conn = cx.connection(&spec.connection.value)?;
    let mut client = connect(&conn, &Patience::of(cx, spec.retry.as_ref())).await?;
    let failed = |e| my_error(&format!("cannot read the checkpoint of `{}` on `{}`", cx.step, conn.name), e);
    let exists: Option<u64> = client
        .query_first("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'weir_checkpoints'")
        .await
        .map_err(failed)?;
    let batches: Option<u64> = match exists {
        Some(_) => client
            .exec_first(
                "SELECT batches FROM weir_checkpoints WHERE pipeline = ? AND step = ? AND run_id = ?",
                (&cx.pipeline, &cx.step, &cx.run_id),
            )
            .await
            .map_err(failed)?,
        None => None,
    };
    let _ = client.disconnect().await;
    Ok(batches.unwrap_or(0))
}

/// What an `INSERT … ON DUPLICATE KEY UPDATE` of `rows` rows did, from what the server answered: each insert counts
/// one affected row and each update two (an unchanged row none), and a statement of several rows says how many
/// met an existing key (`Records: 3  Duplicates: 1  Warnings: 0`).
fn upserted(rows: usize, affected: u64, info: &str) -> Option<RowChanges> {
    let rows = rows as u64;
    let duplicates = match rows {
        1 => u64::from(affected != 1),
        _ => info.split("Duplicates:").nth(1)?.split_whitespace().next()?.parse().ok()?,
    };
    let inserted = rows.checked_sub(duplicates)?;
    Some(RowChanges { inserted, updated: affected.checked_sub(inserted)? / 2, deleted: 0 })
}

/// A load whose transaction is open until the run commits.
struct MyPending {
    client: Conn,
    rows: u64,
    changes: Option<RowChanges>,
    table: String,
    connection: String,
}

#[async_trait]
impl PendingLoad for MyPending {
    fn rows(&self) -> u64 {
        self.rows
    }

    fn changes(&self) -> Option<RowChanges> {
        self.changes
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let context = format!("cannot commit the load of `{}` on `{}`", self.table, self.connection);
        self.client.query_drop("COMMIT").await.map_err(|e| my_error(&context, e))?;
        let _ = self.client.disconnect().await;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        let _ = self.client.query_drop("ROLLBACK").await;
        let _ = self.client.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upserts_inserts_and_updates_come_from_the_servers_answer() {
        let changes = |inserted, updated| Some(RowChanges { inserted, updated, deleted: 0 });
        assert_eq!(upserted(3, 4, "Records: 3  Duplicates: 2  Warnings: 0"), changes(1, 1), "one unchanged row");
        assert_eq!(upserted(1, 1, ""), changes(1, 0));
        assert_eq!(upserted(1, 2, ""), changes(0, 1));
        assert_eq!(upserted(1, 0, ""), changes(0, 0));
        assert_eq!(upserted(2, 2, ""), None, "no count of duplicates: cannot tell");
    }
}
