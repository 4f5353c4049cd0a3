//! `read_db` on SQLite: describes the table or query by preparing it (and peeking at one row for columns that
//! declare no type), then each scan reads its rows on a blocking thread and streams them as batches.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::unparser::dialect::SqliteDialect;
use rusqlite::params_from_iter;
use rusqlite::types::Value;
use tokio::sync::mpsc::Sender;
use weir_engine::{ResolvedConnection, StepContext};
use weir_spec::ReadDb;

use super::{append, arrow_type, db_path, open, param, quote_ident, sqlite_error};
use crate::db::scan::{BatchSender, DbTable, Flavor, Query};
use crate::db::sql_params::Style;

static FLAVOR: Flavor = Flavor {
    system: "Sqlite",
    dialect: &SqliteDialect {},
    placeholders: Style::Question,
    quote: quote_ident,
    standard_sql: true,
};

/// Describes the step's relation (reading at most one row) and returns it as a table.
pub async fn table(spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let conn = cx.connection(&spec.connection.value)?;
    let (from, params) = FLAVOR.relation_with_values(spec, cx, param)?;
    let path = db_path(&conn, cx);
    let db = open(&conn, &path)?;
    let describe_error = |e| sqlite_error(&format!("SQLite `{}` cannot prepare the step's query", conn.name), e);
    let mut statement = db.prepare(&format!("SELECT * FROM {from} LIMIT 1")).map_err(describe_error)?;
    let declared: Vec<(String, Option<String>)> =
        statement.columns().iter().map(|c| (c.name().to_string(), c.decl_type().map(str::to_string))).collect();
    let mut rows = statement.query(params_from_iter(params.iter().map(|(_, v)| v))).map_err(describe_error)?;
    let first = rows.next().map_err(describe_error)?;
    let fields: Vec<Field> = declared
        .iter()
        .enumerate()
        .map(|(i, (name, decl))| {
            let sample = first.and_then(|row| row.get_ref(i).ok());
            Field::new(name, arrow_type(decl.as_deref(), sample), true)
        })
        .collect();
    let (connection, param_names) = (conn.name.clone(), params.iter().map(|(n, _)| n.clone()).collect());
    Ok(Arc::new(DbTable {
        flavor: &FLAVOR,
        connection,
        params: param_names,
        query: Arc::new(SqliteQuery { conn, path, params }),
        from,
        schema: Arc::new(Schema::new(fields)),
        batch_size: cx.batch_size,
    }))
}

#[derive(Debug)]
struct SqliteQuery {
    conn: ResolvedConnection,
    path: PathBuf,
    /// One entry per `?`, in order.
    params: Vec<(String, Value)>,
}

#[async_trait]
impl Query for SqliteQuery {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        batch_size: usize,
        tx: Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let db = open(&self.conn, &self.path)?;
        let (sql, params, name) = (sql.to_string(), self.params.clone(), self.conn.name.clone());
        tokio::task::spawn_blocking(move || {
            let read_error = |e| sqlite_error(&format!("reading from SQLite `{name}`"), e);
            let mut statement = db.prepare(&sql).map_err(read_error)?;
            let mut rows = statement.query(params_from_iter(params.iter().map(|(_, v)| v))).map_err(read_error)?;
            let mut batches = BatchSender::new(schema, batch_size, tx);
            while let Some(row) = rows.next().map_err(read_error)? {
                let push = batches.push(|i, column| append(row.get_ref(i).map_err(|e| e.to_string())?, column));
                if !futures::executor::block_on(push)? {
                    return Ok(());
                }
            }
            futures::executor::block_on(batches.close())
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
    }
}
