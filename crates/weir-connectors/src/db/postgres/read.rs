//! `read_db` on PostgreSQL: describes the table or query with a prepared statement, then each scan streams its
//! rows over the binary protocol with the variables bound as parameters.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;
use tokio_postgres::types::ToSql;
use weir_engine::{Patience, ResolvedConnection, StepContext};
use weir_spec::{ReadDb, Retry, TypedValue};

use super::types::{Decode, RawValue, arrow_type};
use super::{KIND, Param, connect, pg_error, quote_ident};
use crate::db::scan::{BatchSender, DbTable, Flavor, Query};
use crate::db::shipped::{ShippedConnection, ShippedQuery};
use crate::db::sql_params::Style;

static FLAVOR: Flavor = Flavor {
    system: "Postgres",
    dialect: &PostgreSqlDialect {},
    placeholders: Style::Dollar,
    quote: quote_ident,
    standard_sql: true,
};

/// Describes the step's relation on the server (no rows are read) and returns it as a table.
pub async fn table(spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let conn = cx.connection(&spec.connection.value)?;
    let (from, params) = FLAVOR.relation_with_values(spec, cx, |v| Ok(v.clone()))?;

    let patience = Patience::of(cx, None);
    let client = connect(&conn, &patience).await?;
    let statement = client
        .prepare(&format!("SELECT * FROM {from}"))
        .await
        .map_err(|e| pg_error(&format!("PostgreSQL `{}` cannot prepare the step's query", conn.name), &e))?;
    let mut fields = Vec::new();
    let mut decoders = Vec::new();
    for column in statement.columns() {
        let Some(arrow) = arrow_type(column.type_(), column.type_modifier()) else {
            return plan_err!(
                "column `{}` has PostgreSQL type `{}`, which Weir cannot read yet; cast it in a query, e.g. `{}::text`",
                column.name(),
                column.type_(),
                column.name()
            );
        };
        decoders.push(Decode::of(column.type_(), &arrow));
        fields.push(Field::new(column.name(), arrow, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let connection = conn.name.clone();
    let param_names = params.iter().map(|(n, _)| n.clone()).collect();
    let query = PgQuery {
        conn,
        patience,
        params,
        decoders: decoders.into_iter().zip(schema.fields().iter().map(|f| f.name().clone())).collect(),
    };
    Ok(Arc::new(DbTable {
        flavor: &FLAVOR,
        connection,
        params: param_names,
        query: Arc::new(query),
        from,
        schema,
        batch_size: cx.batch_size,
    }))
}

#[derive(Debug)]
struct PgQuery {
    conn: ResolvedConnection,
    patience: Patience,
    params: Vec<(String, TypedValue)>,
    /// Every column of the relation by name, with its decoder; a scan reads a subset.
    decoders: Vec<(Decode, String)>,
}

/// A [`PgQuery`] as it travels to a cluster.
#[derive(Serialize, Deserialize)]
struct Shipped {
    conn: ShippedConnection,
    retry: Retry,
    params: Vec<(String, TypedValue)>,
    decoders: Vec<(Decode, String)>,
}

/// A query another process shipped ([`Query::ship`]).
pub(super) fn rebuild(state: serde_json::Value) -> Result<(&'static Flavor, Arc<dyn Query>)> {
    let shipped: Shipped = ShippedQuery::state(state)?;
    let query = PgQuery {
        conn: shipped.conn.into(),
        patience: Patience::detached(shipped.retry),
        params: shipped.params,
        decoders: shipped.decoders,
    };
    Ok((&FLAVOR, Arc::new(query)))
}

#[async_trait]
impl Query for PgQuery {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        batch_size: usize,
        tx: Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let client = connect(&self.conn, &self.patience).await?;
        let params: Vec<Param> = self.params.iter().map(|(name, value)| Param { name, value }).collect();
        let rows = client
            .query_raw(sql, params.iter().map(|p| p as &dyn ToSql))
            .await
            .map_err(|e| pg_error(&format!("PostgreSQL `{}` rejected the query", self.conn.name), &e))?;
        futures::pin_mut!(rows);
        let decoders: Vec<Decode> = schema
            .fields()
            .iter()
            .map(|f| {
                self.decoders
                    .iter()
                    .find(|(_, n)| n == f.name())
                    .map(|(d, _)| d.clone())
                    .expect("scans project the relation")
            })
            .collect();
        let mut batches = BatchSender::new(schema, batch_size, tx);
        let read_error =
            |e: tokio_postgres::Error| pg_error(&format!("reading from PostgreSQL `{}`", self.conn.name), &e);
        while let Some(row) = rows.try_next().await.map_err(read_error)? {
            let more = batches
                .push(|i, column| match row.try_get::<_, Option<RawValue>>(i).map_err(|e| e.to_string())? {
                    Some(RawValue(raw)) => decoders[i].append(raw, column),
                    None => {
                        column.append_null();
                        Ok(())
                    }
                })
                .await?;
            if !more {
                return Ok(());
            }
        }
        batches.close().await
    }

    fn ship(&self) -> Option<ShippedQuery> {
        let shipped = Shipped {
            conn: (&self.conn).into(),
            retry: self.patience.retry().clone(),
            params: self.params.clone(),
            decoders: self.decoders.clone(),
        };
        ShippedQuery::of(KIND.name, &shipped)
    }
}
