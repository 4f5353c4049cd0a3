//! `read_db` on MySQL/MariaDB: describes the table or query by preparing it, then each scan streams its rows
//! over the binary protocol with the variables bound as parameters.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::sql::unparser::dialect::MySqlDialect;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use tokio::sync::mpsc::Sender;
use weir_engine::{Patience, ResolvedConnection, StepContext};
use weir_spec::ReadDb;

use super::types::{append, arrow_type, param};
use super::{connect, my_error, quote_ident};
use crate::db::scan::{BatchSender, DbTable, Flavor, Query};
use crate::db::sql_params::Style;

static FLAVOR: Flavor = Flavor {
    system: "MySql",
    dialect: &MySqlDialect {},
    placeholders: Style::Question,
    quote: quote_ident,
    standard_sql: true,
};

/// Describes the step's relation on the server (no rows are read) and returns it as a table.
pub async fn table(spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let conn = cx.connection(&spec.connection.value)?;
    let (from, params) = FLAVOR.relation_with_values(spec, cx, param)?;

    let patience = Patience::of(cx, None);
    let mut client = connect(&conn, &patience).await?;
    let statement = client
        .prep(format!("SELECT * FROM {from}"))
        .await
        .map_err(|e| my_error(&format!("MySQL `{}` cannot prepare the step's query", conn.name), e))?;
    let mut fields = Vec::new();
    for column in statement.columns().iter() {
        let name = column.name_str();
        let Some(arrow) = arrow_type(column) else {
            return plan_err!(
                "column `{name}` has MySQL type {:?}, which Weir cannot read yet; cast it in a query, e.g. `CAST({name} AS CHAR)`",
                column.column_type()
            );
        };
        fields.push(Field::new(name, arrow, true));
    }
    let _ = client.disconnect().await;
    let (connection, param_names) = (conn.name.clone(), params.iter().map(|(n, _)| n.clone()).collect());
    Ok(Arc::new(DbTable {
        flavor: &FLAVOR,
        connection,
        params: param_names,
        query: Arc::new(MyQuery { conn, patience, params }),
        from,
        schema: Arc::new(Schema::new(fields)),
        batch_size: cx.batch_size,
    }))
}

#[derive(Debug)]
struct MyQuery {
    conn: ResolvedConnection,
    patience: Patience,
    /// One entry per `?`, in order (a name used twice appears twice).
    params: Vec<(String, Value)>,
}

#[async_trait]
impl Query for MyQuery {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        batch_size: usize,
        tx: Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let mut client = connect(&self.conn, &self.patience).await?;
        let params = if self.params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(self.params.iter().map(|(_, v)| v.clone()).collect())
        };
        let read_error = |e| my_error(&format!("reading from MySQL `{}`", self.conn.name), e);
        let mut result = client.exec_iter(sql, params).await.map_err(read_error)?;
        let mut batches = BatchSender::new(schema, batch_size, tx);
        while let Some(row) = result.next().await.map_err(read_error)? {
            if !batches.push(|i, column| append(row.as_ref(i).unwrap_or(&Value::NULL), column)).await? {
                return Ok(());
            }
        }
        batches.close().await
    }
}
