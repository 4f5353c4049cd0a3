//! ODBC connections through arrow-odbc: reads, appends and statements.

use std::sync::Arc;

use arrow_odbc::odbc_api::parameter::InputParameter;
use arrow_odbc::odbc_api::{Connection, ConnectionOptions, IntoParameter, environment};
use arrow_odbc::{OdbcReaderBuilder, OdbcWriter, arrow_schema_from};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::plan_err;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::unparser::dialect::DefaultDialect;
use futures::StreamExt;
use tokio::sync::mpsc::Sender;
use tracing::info;
use weir_engine::{PendingLoad, ResolvedConnection, RowChanges, StepContext};
use weir_spec::{DbWriteMode, Execute, ReadDb, SchemaEvolution, TypedValue, WriteDb};

use crate::db::load as db_load;
use crate::db::scan::{DbTable, Flavor, Query};
use crate::db::sql_params::{Style, bind_values, quote_ident, quote_table};

fn connect(conn: &ResolvedConnection) -> Result<Connection<'static>> {
    let env = environment().map_err(|e| odbc_error("cannot set up ODBC", e))?;
    env.connect_with_connection_string(conn.url.expose(), ConnectionOptions::default())
        .map_err(|e| odbc_error(&format!("cannot connect to `{}`", conn.name), e))
}

fn odbc_error(context: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(format!("{context}: {e}").into())
}

/// Runs blocking ODBC work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| DataFusionError::External(Box::new(e)))?
}

/// A variable or state value as an ODBC parameter; dates and timestamps as ISO text the driver converts.
fn param(value: &TypedValue) -> Box<dyn InputParameter> {
    match value {
        TypedValue::Integer(i) => Box::new(*i),
        TypedValue::Float(f) => Box::new(*f),
        TypedValue::Timestamp(t) => Box::new(t.replace('T', " ").trim_end_matches('Z').to_string().into_parameter()),
        other => Box::new(other.to_string().into_parameter()),
    }
}

static FLAVOR: Flavor = Flavor {
    system: "Odbc",
    dialect: &DefaultDialect {},
    placeholders: Style::Question,
    quote: quote_ident,
    standard_sql: true,
};

/// An `execute` step: one statement with `$name` parameters. ODBC drivers do not all report affected rows, so it
/// returns 0.
pub(super) async fn execute(spec: &Execute, cx: &StepContext) -> Result<u64> {
    let conn = cx.connection(&spec.connection.value)?;
    let (sql, values) = bind_values(&spec.sql.value, Style::Question, cx, |v| Ok(v.clone()))?;
    blocking(move || {
        let connection = connect(&conn)?;
        let params: Vec<Box<dyn InputParameter>> = values.iter().map(param).collect();
        connection
            .execute(&sql, &params[..], None)
            .map_err(|e| odbc_error(&format!("ODBC `{}` failed the statement", conn.name), e))?;
        info!(connection = %conn.name, "Executed on `{}`: {sql}", conn.name);
        Ok(0)
    })
    .await
}

/// Describes the step's relation by preparing it (no rows are read) and returns it as a table.
pub(super) async fn table(spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let conn = cx.connection(&spec.connection.value)?;
    let (from, params) = FLAVOR.relation_with_values(spec, cx, |v| Ok(v.clone()))?;
    let (describe_conn, sql) = (conn.clone(), format!("SELECT * FROM {from}"));
    let schema = blocking(move || {
        let connection = connect(&describe_conn)?;
        let context = format!("ODBC `{}` cannot prepare the step's query", describe_conn.name);
        let mut prepared = connection.prepare(&sql).map_err(|e| odbc_error(&context, e))?;
        let schema = arrow_schema_from(&mut prepared, None, false).map_err(|e| odbc_error(&context, e))?;
        // Nullability as the driver reports it is not always right for expressions; every column may be NULL.
        Ok(Schema::new(
            schema.fields().iter().map(|f| Field::new(f.name(), f.data_type().clone(), true)).collect::<Vec<_>>(),
        ))
    })
    .await?;
    let (connection, param_names) = (conn.name.clone(), params.iter().map(|(n, _)| n.clone()).collect());
    Ok(Arc::new(DbTable {
        flavor: &FLAVOR,
        connection,
        params: param_names,
        query: Arc::new(OdbcQuery { conn, params }),
        from,
        schema: Arc::new(schema),
        batch_size: cx.batch_size,
    }))
}

#[derive(Debug)]
struct OdbcQuery {
    conn: ResolvedConnection,
    /// One entry per `?`, in order.
    params: Vec<(String, TypedValue)>,
}

#[async_trait]
impl Query for OdbcQuery {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        batch_size: usize,
        tx: Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let (conn, sql, params) = (self.conn.clone(), sql.to_string(), self.params.clone());
        blocking(move || {
            let connection = connect(&conn)?;
            let read_error = |e: &dyn std::fmt::Display| odbc_error(&format!("reading from ODBC `{}`", conn.name), e);
            let params: Vec<Box<dyn InputParameter>> = params.iter().map(|(_, v)| param(v)).collect();
            let Some(cursor) = connection.execute(&sql, &params[..], None).map_err(|e| read_error(&e))? else {
                return Ok(());
            };
            let reader = OdbcReaderBuilder::new()
                .with_max_num_rows_per_batch(batch_size)
                .with_schema(schema)
                .build(cursor)
                .map_err(|e| read_error(&e))?;
            for batch in reader {
                let batch = batch.map_err(|e| read_error(&e))?;
                if tx.blocking_send(Ok(batch)).is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await
    }
}

/// Appends (or replaces) the input in one transaction left open for [`PendingLoad::commit`].
pub(super) async fn write(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    if !matches!(spec.mode, DbWriteMode::Append | DbWriteMode::Replace) || spec.delete_when.is_some() {
        return plan_err!(
            "over ODBC, write_db supports `mode: append` and `mode: replace`; upserts and deletes need a native connector"
        );
    }
    let conn = cx.connection(&spec.connection.value)?;
    let table = cx.render(&spec.table)?;
    let input = db_load::with_audit_columns(spec, cx, input)?;
    let input_schema = input.schema().inner().clone();

    let quoted = quote_table(&table);
    let (describe_conn, describe_table) = (conn.clone(), quoted.clone());
    let (connection, columns) = blocking(move || {
        let connection = connect(&describe_conn)?;
        let context = format!("table `{table}` on `{}` (Weir does not create tables over ODBC)", describe_conn.name);
        let mut prepared = connection
            .prepare(&format!("SELECT * FROM {describe_table} WHERE 1 = 0"))
            .map_err(|e| odbc_error(&context, e))?;
        let existing = arrow_schema_from(&mut prepared, None, false).map_err(|e| odbc_error(&context, e))?;
        drop(prepared);
        Ok((connection, existing.fields().iter().map(|f| f.name().to_lowercase()).collect::<Vec<_>>()))
    })
    .await?;
    let missing: Vec<&str> = input_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !columns.contains(&n.to_lowercase()))
        .collect();
    if !missing.is_empty() && spec.schema_evolution != SchemaEvolution::Discard {
        return plan_err!(
            "table `{}` has no column {}; Weir does not alter tables over ODBC: add them, or set `schema_evolution: discard`",
            spec.table.value,
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        );
    }
    let kept: Vec<usize> = (0..input_schema.fields().len())
        .filter(|i| columns.contains(&input_schema.field(*i).name().to_lowercase()))
        .collect();
    let schema = Arc::new(input_schema.project(&kept)?);

    let (batches, mut received) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let (replace, writer_schema, name) = (spec.mode == DbWriteMode::Replace, schema.clone(), conn.name.clone());
    let worker = blocking(move || {
        let write_error = |e: &dyn std::fmt::Display| odbc_error(&format!("cannot write `{quoted}` on `{name}`"), e);
        let written = (|| {
            connection.set_autocommit(false).map_err(|e| write_error(&e))?;
            if replace {
                connection.execute(&format!("DELETE FROM {quoted}"), (), None).map_err(|e| write_error(&e))?;
            }
            let mut writer =
                OdbcWriter::with_connection(&connection, &writer_schema, &quoted, 1000).map_err(|e| write_error(&e))?;
            let mut rows = 0u64;
            while let Some(batch) = received.blocking_recv() {
                writer.write_batch(&batch).map_err(|e| write_error(&e))?;
                rows += batch.num_rows() as u64;
            }
            writer.flush().map_err(|e| write_error(&e))?;
            Ok(rows)
        })();
        match written {
            Ok(rows) => Ok((connection, rows)),
            Err(e) => {
                let _ = connection.rollback();
                Err(e)
            }
        }
    });
    let send = async {
        let mut stream = input.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?.project(&kept)?;
            if batches.send(batch).await.is_err() {
                break;
            }
        }
        drop(batches);
        Ok::<_, DataFusionError>(())
    };
    let (sent, written) = futures::join!(send, worker);
    let (connection, rows) = written?;
    if let Err(e) = sent {
        let _ = blocking(move || connection.rollback().map_err(|e| odbc_error("rollback", e))).await;
        return Err(e);
    }
    info!(table = %spec.table.value, rows, "Wrote {rows} rows over ODBC");
    Ok(Box::new(OdbcPending {
        connection: Some(connection),
        rows,
        table: spec.table.value.clone(),
        connection_name: conn.name,
    }))
}

/// A load whose transaction is open until the run commits.
struct OdbcPending {
    connection: Option<Connection<'static>>,
    rows: u64,
    table: String,
    connection_name: String,
}

#[async_trait]
impl PendingLoad for OdbcPending {
    fn rows(&self) -> u64 {
        self.rows
    }

    /// Loads over ODBC only append (after a `DELETE`, for `replace`).
    fn changes(&self) -> Option<RowChanges> {
        Some(RowChanges { inserted: self.rows, ..RowChanges::default() })
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let connection = self.connection.take().expect("a pending load holds its connection");
        let context = format!("cannot commit the load of `{}` on `{}`", self.table, self.connection_name);
        blocking(move || connection.commit().map_err(|e| odbc_error(&context, e))).await
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(connection) = self.connection.take() {
            let _ = blocking(move || connection.rollback().map_err(|e| odbc_error("rollback", e))).await;
        }
    }
}
