//! `read_db` on DuckDB: describes the table or query by running it with `LIMIT 0`, then each scan streams its
//! result chunk by chunk (DuckDB's streaming result, not a materialized one) on a blocking thread.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use duckdb::params_from_iter;
use duckdb::types::Value;
use tokio::sync::mpsc::Sender;
use weir_engine::{ResolvedConnection, StepContext};
use weir_spec::ReadDb;

use super::connection::{db_path, duckdb_error, from_duckdb, open, param, schema_from_duckdb, schema_to_duckdb};
use crate::db::scan::{DbTable, Flavor, Query};
use crate::db::sql_params::Style;
use crate::db::sql_params::quote_ident;

/// DuckDB's SQL takes PostgreSQL's spelling of the filters DataFusion pushes down, and `$1` placeholders.
static FLAVOR: Flavor = Flavor {
    system: "DuckDb",
    dialect: &PostgreSqlDialect {},
    placeholders: Style::Dollar,
    quote: quote_ident,
    standard_sql: true,
};

/// Describes the step's relation and returns it as a table.
pub async fn table(spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let conn = cx.connection(&spec.connection.value)?;
    let (from, params) = FLAVOR.relation_with_values(spec, cx, param)?;
    let path = db_path(&conn, cx);
    let db = open(&conn.name, &path)?;
    let describe_error = |e| duckdb_error(&format!("DuckDB `{}` cannot prepare the step's query", conn.name), e);
    let mut statement = db.prepare(&format!("SELECT * FROM {from} LIMIT 0")).map_err(describe_error)?;
    let described =
        statement.query_arrow(params_from_iter(params.iter().map(|(_, v)| v))).map_err(describe_error)?.get_schema();
    let described = schema_from_duckdb(&described)?;
    // Nullable throughout: a pushed-down query's columns may be NULL where the table's are not (outer joins).
    let fields: Vec<_> = described.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let (connection, param_names) = (conn.name.clone(), params.iter().map(|(n, _)| n.clone()).collect());
    Ok(Arc::new(DbTable {
        flavor: &FLAVOR,
        connection,
        params: param_names,
        query: Arc::new(DuckDbQuery { conn, path, params }),
        from,
        schema: Arc::new(Schema::new(fields)),
        batch_size: cx.batch_size,
    }))
}

#[derive(Debug)]
struct DuckDbQuery {
    conn: ResolvedConnection,
    path: PathBuf,
    /// One entry per `$n`, in order.
    params: Vec<(String, Value)>,
}

#[async_trait]
impl Query for DuckDbQuery {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        _batch_size: usize,
        tx: Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let db = open(&self.conn.name, &self.path)?;
        let (sql, params, name) = (sql.to_string(), self.params.clone(), self.conn.name.clone());
        tokio::task::spawn_blocking(move || {
            let read_error = |e| duckdb_error(&format!("reading from DuckDB `{name}`"), e);
            let mut statement = db.prepare(&sql).map_err(read_error)?;
            // A scan that needs no column (`count(*)`) selects `1`: DuckDB sends that column, the batch drops it.
            let counting = schema.fields().is_empty();
            let sent = match counting {
                true => Schema::new(vec![Field::new("1", DataType::Int32, true)]),
                false => schema.as_ref().clone(),
            };
            let values = || params_from_iter(params.iter().map(|(_, v)| v));
            let chunks = statement.stream_arrow(values(), schema_to_duckdb(&sent)?);
            let mut streamed = 0;
            for chunk in chunks.map_err(read_error)? {
                let batch = from_duckdb(chunk.into())?;
                let columns = if counting { Vec::new() } else { batch.columns().to_vec() };
                let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                let batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
                streamed += batch.num_rows();
                if tx.blocking_send(Ok(batch)).is_err() {
                    return Ok(());
                }
            }
            // duckdb-rs ends a streamed result at an error as if it were complete (a cast that fails on row five
            // million), so the rows are counted again: a short stream is an error, with DuckDB's message when a
            // materialized run of the query gives one.
            let expected: i64 = db
                .query_row(&format!("SELECT count(*) FROM ({sql}) weir_n"), values(), |r| r.get(0))
                .map_err(read_error)?;
            if streamed as i64 != expected {
                statement.execute(values()).map_err(read_error)?;
                return Err(DataFusionError::Execution(format!(
                    "reading from DuckDB `{name}`: the result ended after {streamed} of {expected} rows"
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
    }
}
