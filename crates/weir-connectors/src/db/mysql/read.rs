//! `read_db` on MySQL/MariaDB: describes the table or query by preparing it, then each scan streams its rows
//! over the binary protocol with the variables bound as parameters.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::plan_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::unparser::dialect::MySqlDialect;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;
use weir_engine::{Patience, ResolvedConnection, StepContext};
use weir_spec::{ReadDb, Retry, TypedValue};

use super::types::{append, arrow_type, param};
use super::{KIND, connect, my_error, quote_ident};
use crate::db::scan::{BatchSender, DbTable, Flavor, Query};
use crate::db::shipped::{ShippedConnection, ShippedQuery};
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
    // The values are checked here and converted for each scan, so a scan can travel with them as they were typed.
    let (from, params) = FLAVOR.relation_with_values(spec, cx, |v| param(v).map(|_| v.clone()))?;

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
    params: Vec<(String, TypedValue)>,
}

/// A [`MyQuery`] as it travels to a cluster.
#[derive(Serialize, Deserialize)]
struct Shipped {
    conn: ShippedConnection,
    retry: Retry,
    params: Vec<(String, TypedValue)>,
}

/// A query another process shipped ([`Query::ship`]).
pub(super) fn rebuild(state: serde_json::Value) -> Result<(&'static Flavor, Arc<dyn Query>)> {
    let shipped: Shipped = ShippedQuery::state(state)?;
    let query =
        MyQuery { conn: shipped.conn.into(), patience: Patience::detached(shipped.retry), params: shipped.params };
    Ok((&FLAVOR, Arc::new(query)))
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
            let values = self
                .params
                .iter()
                .map(|(name, v)| param(v).map_err(|e| DataFusionError::Plan(format!("`${name}`: {e}"))));
            Params::Positional(values.collect::<Result<_>>()?)
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

    fn ship(&self) -> Option<ShippedQuery> {
        let shipped =
            Shipped { conn: (&self.conn).into(), retry: self.patience.retry().clone(), params: self.params.clone() };
        ShippedQuery::of(KIND.name, &shipped)
    }
}
