//! `write_db` on PostgreSQL. Everything happens in one transaction that commits only when the whole run succeeds
//! (or, with `settings.commit_every`, one per batch, which records its checkpoint in `weir_checkpoints`):
//! create or evolve the table, then binary COPY straight into it (`append`, `replace`) or into a temporary staging
//! table that one `INSERT … ON CONFLICT` / `DELETE … USING` applies (`upsert`, `delete`).
//!
//! With `on_error: dead_letter` (or `skip`), `append`, `replace` and `upsert` go through the staging table, and a
//! statement the database refuses for its rows (a constraint or a data error) is split in halves under savepoints
//! until the refused rows stand alone: they go to the step's dead letters with the database's reason, the rest load.

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tracing::info;
use weir_engine::{Batch, Patience, PendingLoad, RowChanges, StepContext};
use weir_spec::{DbWriteMode, OnError, WriteDb};

use super::types::{arrow_type, ddl_type};
use super::{checkpoint, connect, copy, pg_error, quote_ident, quote_table};
use crate::db::load as db_load;
use crate::db::schema_diff::{self, ColumnChange, TableColumn};

/// Loads `input` into the step's table inside a transaction left open for [`PendingLoad::commit`].
pub async fn write(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let conn = cx.connection(&spec.connection.value)?;
    let table = cx.render(&spec.table)?;
    let input = db_load::with_audit_columns(spec, cx, input)?;
    let client = connect(&conn, &Patience::of(cx, spec.retry.as_ref())).await?;
    if cx.batch.is_some() {
        checkpoint::create(&client, &conn.name).await?;
    }
    let target =
        Target { client: &client, name: table.clone(), quoted: quote_table(&table), connection: conn.name.clone() };
    target.run("BEGIN", "cannot start a transaction on").await?;
    let loaded = match load(spec, cx, &target, input, Batch::is_first(cx.batch)).await {
        Ok(loaded) => match cx.batch {
            Some(batch) => checkpoint::record(&client, cx, batch, loaded.rows, &conn.name).await.map(|()| loaded),
            None => Ok(loaded),
        },
        Err(e) => Err(e),
    };
    match loaded {
        Ok(Loaded { rows, changes }) => Ok(Box::new(PgPending { client, rows, changes, table, connection: conn.name })),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// The destination table and the client whose transaction writes it.
struct Target<'a> {
    client: &'a Client,
    name: String,
    quoted: String,
    connection: String,
}

impl Target<'_> {
    async fn run(&self, sql: &str, doing: &str) -> Result<u64> {
        self.client.execute(sql, &[]).await.map_err(|e| self.error(doing, &e))
    }

    fn error(&self, doing: &str, e: &tokio_postgres::Error) -> DataFusionError {
        pg_error(&format!("{doing} table `{}` on `{}`", self.name, self.connection), e)
    }

    /// The table's columns, or `None` when it does not exist.
    async fn columns(&self) -> Result<Option<Vec<(String, Type, i32)>>> {
        let exists: Option<String> = self
            .client
            .query_one("SELECT to_regclass($1)::text", &[&self.quoted])
            .await
            .map_err(|e| self.error("cannot look up", &e))?
            .get(0);
        if exists.is_none() {
            return Ok(None);
        }
        let statement = self
            .client
            .prepare(&format!("SELECT * FROM {} LIMIT 0", self.quoted))
            .await
            .map_err(|e| self.error("cannot describe", &e))?;
        Ok(Some(
            statement.columns().iter().map(|c| (c.name().to_string(), c.type_().clone(), c.type_modifier())).collect(),
        ))
    }
}

/// One column as it is loaded: its name, the table's type, and the Arrow type input values are cast to.
struct LoadColumn {
    name: String,
    pg: Type,
    arrow: DataType,
}

/// What a load wrote: its rows, and how they changed the table where that is known (an upsert that sets refused
/// rows aside applies them range by range and does not tell inserts from updates).
struct Loaded {
    rows: u64,
    changes: Option<RowChanges>,
}

impl Loaded {
    fn inserted(rows: u64) -> Self {
        Self { rows, changes: Some(RowChanges { inserted: rows, ..RowChanges::default() }) }
    }
}

/// Loads the input; `first` is false for the later batches of a batched load, which a `replace` must not empty
/// the table before.
async fn load(spec: &WriteDb, cx: &StepContext, target: &Target<'_>, input: DataFrame, first: bool) -> Result<Loaded> {
    let input_schema: SchemaRef = input.schema().inner().clone();
    let data_fields = db_load::data_fields(spec, &input_schema)?;

    let existing = match target.columns().await? {
        Some(columns) => columns,
        None => {
            // Concurrent first loads (webhook requests, say) would race to create the table: one takes this lock
            // and creates it, the others wait for its commit and then find the table.
            target
                .client
                .execute("SELECT pg_advisory_xact_lock(hashtext($1))::text", &[&target.quoted])
                .await
                .map_err(|e| target.error("cannot lock the creation of", &e))?;
            match target.columns().await? {
                Some(columns) => columns,
                None => {
                    create_table(spec, target, &data_fields).await?;
                    target.columns().await?.expect("the table was just created")
                }
            }
        }
    };
    let columns = reconcile(spec, target, &data_fields, &existing).await?;

    let names = |cols: &[&LoadColumn]| cols.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let all: Vec<&LoadColumn> = columns.iter().collect();
    let isolate = cx.on_error != OnError::Fail && spec.delete_when.is_none();
    let loaded = match spec.mode {
        DbWriteMode::Append | DbWriteMode::Replace if isolate => {
            if spec.mode == DbWriteMode::Replace && first {
                target.run(&format!("TRUNCATE {}", target.quoted), "cannot truncate").await?;
            }
            let insert = format!("INSERT INTO {} ({})", target.quoted, names(&all));
            Loaded::inserted(
                apply_isolating(spec, cx, target, &all, (&insert, ""), input, |e| target.error("cannot load into", e))
                    .await?,
            )
        }
        DbWriteMode::Append => {
            Loaded::inserted(copy_in(target, &format!("{} ({})", target.quoted, names(&all)), &all, None, input).await?)
        }
        DbWriteMode::Replace => {
            if first {
                target.run(&format!("TRUNCATE {}", target.quoted), "cannot truncate").await?;
            }
            Loaded::inserted(copy_in(target, &format!("{} ({})", target.quoted, names(&all)), &all, None, input).await?)
        }
        DbWriteMode::Upsert => upsert(spec, cx, target, &all, input).await?,
        DbWriteMode::Delete => {
            let keys: Vec<&LoadColumn> = columns.iter().filter(|c| spec.keys.contains(&c.name)).collect();
            stage(target, &keys, Staging::Rows).await?;
            let rows = copy_in(target, &format!("weir_stage ({})", names(&keys)), &keys, None, input).await?;
            let deleted = target
                .run(
                    &format!(
                        "DELETE FROM {} AS t USING weir_stage AS s WHERE {}",
                        target.quoted,
                        key_match(&spec.keys)
                    ),
                    "cannot delete from",
                )
                .await?;
            info!(table = %target.name, staged = rows, deleted, "Deleted {deleted} rows from {}", target.name);
            Loaded { rows, changes: Some(RowChanges { deleted, ..RowChanges::default() }) }
        }
    };
    Ok(loaded)
}

async fn create_table(spec: &WriteDb, target: &Target<'_>, fields: &[&Field]) -> Result<()> {
    let defs = db_load::column_definitions(spec, fields, "PostgreSQL", quote_ident, &|ty, _| ddl_type(ty))?;
    // IF NOT EXISTS: a concurrent load may have created it since this one looked, under the lock above.
    let ddl = format!("CREATE TABLE IF NOT EXISTS {} ({defs})", target.quoted);
    info!(table = %target.name, "Creating table: {ddl}");
    target.run(&ddl, "cannot create").await?;
    Ok(())
}

/// Matches the input's columns to the table's under the step's schema evolution policy, altering the table where
/// the policy allows. Returns the columns to load, in input order.
async fn reconcile(
    spec: &WriteDb,
    target: &Target<'_>,
    fields: &[&Field],
    existing: &[(String, Type, i32)],
) -> Result<Vec<LoadColumn>> {
    let described: Vec<TableColumn> = existing
        .iter()
        .map(|(name, pg, modifier)| TableColumn {
            name: name.clone(),
            arrow: arrow_type(pg, *modifier),
            db_type: pg.to_string(),
        })
        .collect();
    let can_widen = |column: &TableColumn, input: &DataType| {
        existing.iter().find(|(n, ..)| *n == column.name).is_some_and(|(_, pg, _)| widened(pg, input).is_some())
    };
    let planned = schema_diff::plan(spec.schema_evolution, &target.name, fields, &described, &can_widen)?;
    let mut changes = Vec::new();
    for (field, change) in &planned {
        let name = quote_ident(field.name());
        match change {
            ColumnChange::Fits => {}
            ColumnChange::Add => {
                let ty = db_load::column_type(field, false, "PostgreSQL", &|ty, _| ddl_type(ty))?;
                changes.push(format!("ADD COLUMN {name} {ty}"));
            }
            ColumnChange::Widen => {
                let (_, pg, _) =
                    existing.iter().find(|(n, ..)| n == field.name()).expect("only existing columns widen");
                let ty = widened(pg, field.data_type()).expect("plan checked can_widen");
                changes.push(format!("ALTER COLUMN {name} TYPE {ty}"));
            }
        }
    }
    let now = if changes.is_empty() {
        existing.to_vec()
    } else {
        let ddl = format!("ALTER TABLE {} {}", target.quoted, changes.join(", "));
        info!(table = %target.name, "Evolving table: {ddl}");
        target.run(&ddl, "cannot alter").await?;
        target.columns().await?.unwrap_or_default()
    };
    Ok(planned
        .iter()
        .map(|(field, _)| {
            let (_, pg, modifier) =
                now.iter().find(|(n, ..)| n == field.name()).expect("every planned column exists now");
            LoadColumn {
                name: field.name().clone(),
                pg: pg.clone(),
                arrow: arrow_type(pg, *modifier).expect("checked by plan"),
            }
        })
        .collect())
}

/// The wider column type that holds both the table's values and the input's, for `schema_evolution: evolve`.
fn widened(table: &Type, input: &DataType) -> Option<String> {
    use DataType::*;
    Some(match (table, input) {
        (&Type::INT2, Int32 | UInt16) => "integer".into(),
        (&Type::INT2 | &Type::INT4, Int64 | UInt32) => "bigint".into(),
        (&Type::FLOAT4, Float64 | Int32 | Int64) => "double precision".into(),
        _ => return None,
    })
}

/// What a staging table holds besides the rows' columns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Staging {
    Rows,
    /// `weir_seq`, the order rows arrived in, by which refused rows are found.
    Numbered,
    /// `weir_seq` and the `weir_delete` flag of change events, the last event per key winning.
    ChangeEvents,
}

/// A temporary table for the rows to apply, dropped at commit.
async fn stage(target: &Target<'_>, columns: &[&LoadColumn], staging: Staging) -> Result<()> {
    let names = columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let create =
        format!("CREATE TEMP TABLE weir_stage ON COMMIT DROP AS SELECT {names} FROM {} WITH NO DATA", target.quoted);
    let alter = match staging {
        Staging::Rows => "",
        Staging::Numbered => "; ALTER TABLE weir_stage ADD COLUMN weir_seq bigint GENERATED ALWAYS AS IDENTITY",
        Staging::ChangeEvents => {
            "; ALTER TABLE weir_stage ADD COLUMN weir_delete boolean, ADD COLUMN weir_seq bigint GENERATED ALWAYS AS IDENTITY"
        }
    };
    // One round trip for both statements.
    target
        .client
        .batch_execute(&format!("{create}{alter}"))
        .await
        .map_err(|e| target.error("cannot stage rows for", &e))
}

async fn upsert(
    spec: &WriteDb,
    cx: &StepContext,
    target: &Target<'_>,
    columns: &[&LoadColumn],
    input: DataFrame,
) -> Result<Loaded> {
    let names = columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    let flag = spec.delete_when.as_deref();
    let keys = spec.keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    if cx.on_error != OnError::Fail && flag.is_none() {
        let insert = format!("INSERT INTO {} AS t ({names})", target.quoted);
        let conflict = format!(" ON CONFLICT ({keys}) {}", conflict_action(spec, columns));
        let rows =
            apply_isolating(spec, cx, target, columns, (&insert, &conflict), input, |e| upsert_error(target, &keys, e))
                .await?;
        return Ok(Loaded { rows, changes: None });
    }
    stage(target, columns, if flag.is_some() { Staging::ChangeEvents } else { Staging::Rows }).await?;
    let copy_columns = if flag.is_some() { format!("{names}, weir_delete") } else { names.clone() };
    let rows = copy_in(target, &format!("weir_stage ({copy_columns})"), columns, flag, input).await?;

    // With deletes, several events per key are expected (a CDC stream): the last one wins.
    let mut deleted = 0;
    let source = if flag.is_some() {
        target
            .run(
                &format!(
                    "CREATE TEMP TABLE weir_latest ON COMMIT DROP AS \
                     SELECT DISTINCT ON ({keys}) * FROM weir_stage ORDER BY {keys}, weir_seq DESC"
                ),
                "cannot stage rows for",
            )
            .await?;
        deleted = target
            .run(
                &format!(
                    "DELETE FROM {} AS t USING weir_latest AS s WHERE {} AND s.weir_delete",
                    target.quoted,
                    key_match(&spec.keys)
                ),
                "cannot delete from",
            )
            .await?;
        info!(table = %target.name, deleted, "Deleted {deleted} rows from {}", target.name);
        "weir_latest WHERE NOT coalesce(weir_delete, false)"
    } else {
        "weir_stage"
    };
    let action = conflict_action(spec, columns);
    // A row the upsert inserted has no deleting transaction yet (`xmax = 0`); one it updated has this one's.
    let sql = format!(
        "WITH merged AS (INSERT INTO {} AS t ({names}) SELECT {names} FROM {source} ON CONFLICT ({keys}) {action} \
         RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged",
        target.quoted
    );
    info!(table = %target.name, "Merging: {sql}");
    let counts = target.client.query_one(&sql, &[]).await.map_err(|e| upsert_error(target, &keys, &e))?;
    let (inserted, updated) = (counts.get::<_, i64>(0) as u64, counts.get::<_, i64>(1) as u64);
    info!(table = %target.name, staged = rows, inserted, updated, "Upserted {rows} rows into {}: {inserted} inserted, {updated} updated", target.name);
    Ok(Loaded { rows, changes: Some(RowChanges { inserted, updated, deleted }) })
}

/// An upsert's failure, with a hint where the cause is common.
fn upsert_error(target: &Target<'_>, keys: &str, e: &tokio_postgres::Error) -> DataFusionError {
    let hint = match e.code() {
        Some(c) if *c == SqlState::INVALID_COLUMN_REFERENCE => {
            format!(". Upsert needs a primary key or unique index on ({keys}) of `{}`", target.name)
        }
        Some(c) if *c == SqlState::CARDINALITY_VIOLATION => {
            ". The input has several rows with the same key: add a dedup step before this one".to_string()
        }
        _ => return target.error("cannot upsert into", e),
    };
    DataFusionError::External(format!("{}{hint}", target.error("cannot upsert into", e)).into())
}

/// What an upsert does with a row whose key exists: update the other columns, only where they differ (fewer dead
/// tuples, and the changed count counts real changes).
fn conflict_action(spec: &WriteDb, columns: &[&LoadColumn]) -> String {
    let others: Vec<&&LoadColumn> = columns.iter().filter(|c| !spec.keys.contains(&c.name)).collect();
    if others.is_empty() {
        return "DO NOTHING".to_string();
    }
    let set = others.iter().map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name))).collect::<Vec<_>>().join(", ");
    let old = others.iter().map(|c| format!("t.{}", quote_ident(&c.name))).collect::<Vec<_>>().join(", ");
    let new = others.iter().map(|c| format!("EXCLUDED.{}", quote_ident(&c.name))).collect::<Vec<_>>().join(", ");
    format!("DO UPDATE SET {set} WHERE ({old}) IS DISTINCT FROM ({new})")
}

/// Stages the input, then applies it with `insert` (`INSERT INTO t (columns)`, followed by `SELECT … FROM
/// weir_stage` and the `ON CONFLICT` clause, if any) in ranges of staged rows: a range the database refuses for its
/// data is rolled back to its savepoint and split, down to single rows, which are handed to the step's `on_error`
/// with the reason. Any other failure is `fail`'s. Returns the rows loaded.
async fn apply_isolating(
    spec: &WriteDb,
    cx: &StepContext,
    target: &Target<'_>,
    columns: &[&LoadColumn],
    (insert, conflict): (&str, &str),
    input: DataFrame,
    fail: impl Fn(&tokio_postgres::Error) -> DataFusionError,
) -> Result<u64> {
    let names = columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
    stage(target, columns, Staging::Numbered).await?;
    let staged = copy_in(target, &format!("weir_stage ({names})"), columns, None, input).await?;
    // A dead letter holds the row as the step was given it, without the audit columns Weir added.
    let record_columns = columns
        .iter()
        .filter(|c| !(spec.audit_columns && db_load::AUDIT_COLUMNS.contains(&c.name.as_str())))
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let mut ranges = vec![(1i64, staged as i64)];
    let mut refused = Vec::new();
    while let Some((first, last)) = ranges.pop() {
        if first > last {
            continue;
        }
        target.run("SAVEPOINT weir_rows", "cannot set a savepoint on").await?;
        let sql =
            format!("{insert} SELECT {names} FROM weir_stage WHERE weir_seq BETWEEN {first} AND {last}{conflict}");
        match target.client.execute(&sql, &[]).await {
            Ok(_) => {
                target.run("RELEASE SAVEPOINT weir_rows", "cannot release a savepoint on").await?;
            }
            Err(e) if e.code().is_some_and(|c| matches!(&c.code()[..2], "22" | "23")) => {
                target.run("ROLLBACK TO SAVEPOINT weir_rows", "cannot roll back to a savepoint on").await?;
                target.run("RELEASE SAVEPOINT weir_rows", "cannot release a savepoint on").await?;
                if first < last {
                    let middle = first + (last - first) / 2;
                    ranges.push((middle + 1, last));
                    ranges.push((first, middle));
                    continue;
                }
                let record: String = target
                    .client
                    .query_one(&format!("SELECT row_to_json(r)::text FROM (SELECT {record_columns} FROM weir_stage WHERE weir_seq = $1) r"), &[&first])
                    .await
                    .map_err(|e| target.error("cannot read a refused row back from the staging of", &e))?
                    .get(0);
                let record = serde_json::from_str(&record).map_err(|e| DataFusionError::External(Box::new(e)))?;
                let why = super::pg_message(&e);
                refused.push(db_load::refused_letter(
                    cx,
                    record,
                    first as u64,
                    (&target.name, &target.connection),
                    &why,
                ));
            }
            Err(e) => return Err(fail(&e)),
        }
    }
    let loaded = staged - refused.len() as u64;
    if !refused.is_empty() {
        info!(table = %target.name, refused = refused.len(), "`{}` refused {} of {staged} rows; {loaded} loaded", target.name, refused.len());
    }
    cx.reject(refused)?;
    Ok(loaded)
}

fn key_match(keys: &[String]) -> String {
    keys.iter().map(|k| format!("t.{0} = s.{0}", quote_ident(k))).collect::<Vec<_>>().join(" AND ")
}

/// Streams the input through binary COPY into `into` (`table (columns)`), casting each column to the table's
/// type; with `delete_flag`, that input column follows as a boolean.
async fn copy_in(
    target: &Target<'_>,
    into: &str,
    columns: &[&LoadColumn],
    delete_flag: Option<&str>,
    input: DataFrame,
) -> Result<u64> {
    let mut pg_types: Vec<Type> = columns.iter().map(|c| c.pg.clone()).collect();
    let mut fields: Vec<Field> = columns.iter().map(|c| Field::new(&c.name, c.arrow.clone(), true)).collect();
    if let Some(flag) = delete_flag {
        pg_types.push(Type::BOOL);
        fields.push(Field::new(flag, DataType::Boolean, true));
    }
    let schema = std::sync::Arc::new(Schema::new(fields));

    let copy = format!("COPY {into} FROM STDIN (FORMAT binary)");
    info!(table = %target.name, "Loading: {copy}");
    let mut stream = input.execute_stream().await?;
    let sink = target.client.copy_in(&copy).await.map_err(|e| target.error("cannot start COPY into", &e))?;
    futures::pin_mut!(sink);
    let mut buf = copy::HEADER.to_vec();
    let mut rows_before = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = conform(&batch?, &schema)?;
        copy::encode(&batch, &pg_types, &mut buf).map_err(|e| {
            DataFusionError::Execution(format!(
                "cannot encode input row {} for `{}`: {e}",
                rows_before + 1,
                target.name
            ))
        })?;
        rows_before += batch.num_rows() as u64;
        sink.send(Bytes::from(std::mem::take(&mut buf))).await.map_err(|e| target.error("COPY failed into", &e))?;
    }
    buf.extend_from_slice(copy::TRAILER);
    sink.send(Bytes::from(buf)).await.map_err(|e| target.error("COPY failed into", &e))?;
    sink.as_mut().finish().await.map_err(|e| target.error("COPY failed into", &e))
}

/// The batch's columns in `schema`'s order and types.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let options = CastOptions { safe: false, ..Default::default() };
    let arrays: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| {
            let column = batch.column_by_name(f.name()).expect("columns were matched against the input's schema");
            crate::db::nested::cast_for_table(column, f.data_type(), &options).map_err(|e| {
                DataFusionError::Execution(format!(
                    "column `{}`: cannot convert {} to the table's {}: {e}",
                    f.name(),
                    column.data_type(),
                    f.data_type()
                ))
            })
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// A load whose transaction is open until the run commits.
struct PgPending {
    client: Client,
    rows: u64,
    changes: Option<RowChanges>,
    table: String,
    connection: String,
}

#[async_trait]
impl PendingLoad for PgPending {
    fn rows(&self) -> u64 {
        self.rows
    }

    fn changes(&self) -> Option<RowChanges> {
        self.changes
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(&format!("cannot commit the load of `{}` on `{}`", self.table, self.connection), &e))
    }

    async fn abort(self: Box<Self>) {
        let _ = self.client.batch_execute("ROLLBACK").await;
    }
}
