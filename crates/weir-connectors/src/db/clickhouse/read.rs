//! `read_db` on ClickHouse: the relation is described by running it with `LIMIT 0` (`FORMAT JSONCompact` names
//! each column's type), then each scan streams `FORMAT RowBinary` and decodes whole rows as they arrive.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::unparser::dialect::MySqlDialect;
use tokio::sync::mpsc::Sender;
use weir_engine::{Patience, StepContext};
use weir_spec::ReadDb;

use super::rowbinary::{read_value, row_len};
use super::types::ChType;
use super::{Param, Server, quote_ident};
use crate::db::scan::{BatchSender, DbTable, Flavor, Query};
use crate::db::sql_params::Style;

/// ClickHouse quotes identifiers in backquotes, as MySQL does; its older releases take neither standard casts nor
/// boolean literals, so filters with them stay in DataFusion.
static FLAVOR: Flavor = Flavor {
    system: "ClickHouse",
    dialect: &MySqlDialect {},
    placeholders: Style::ExternalTable,
    quote: quote_ident,
    standard_sql: false,
};

/// Describes the step's relation and returns it as a table.
pub async fn table(spec: &ReadDb, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let conn = cx.connection(&spec.connection.value)?;
    let (from, params) = FLAVOR.relation_with_values(spec, cx, Param::of)?;
    let server = Server::connect(&conn, &Patience::of(cx, None)).await?;
    let values: Vec<Param> = params.iter().map(|(_, v)| v.clone()).collect();
    let described =
        server.json(&format!("SELECT * FROM {from} LIMIT 0"), &values, "cannot describe the step's relation").await?;
    let mut fields = Vec::new();
    let mut types = HashMap::new();
    for column in described["meta"].as_array().into_iter().flatten() {
        let (name, db_type) =
            (column["name"].as_str().unwrap_or_default(), column["type"].as_str().unwrap_or_default());
        let ty = ChType::parse(db_type).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "column `{name}` of the step's relation is ClickHouse `{db_type}`, which Weir does not read yet; \
                 select it as text in a `query` (`toString({name}) AS {name}`)"
            ))
        })?;
        // Nullable throughout: a pushed-down query's columns may be NULL where the table's are not (outer joins).
        fields.push(Field::new(name, ty.arrow(), true));
        types.insert(name.to_string(), ty);
    }
    Ok(Arc::new(DbTable {
        flavor: &FLAVOR,
        connection: conn.name.clone(),
        params: params.into_iter().map(|(n, _)| n).collect(),
        query: Arc::new(ClickHouseQuery { server, params: values, types }),
        from,
        schema: Arc::new(Schema::new(fields)),
        batch_size: cx.batch_size,
    }))
}

#[derive(Debug)]
struct ClickHouseQuery {
    server: Server,
    params: Vec<Param>,
    /// Every column of the relation by name.
    types: HashMap<String, ChType>,
}

#[async_trait]
impl Query for ClickHouseQuery {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        batch_size: usize,
        tx: Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        // A scan that needs no column (`count(*)`) selects `1`, a UInt8 per row that the batch drops.
        let counting = schema.fields().is_empty();
        let types: Vec<ChType> = match counting {
            true => vec![ChType::parse("UInt8").expect("a known type")],
            false => schema.fields().iter().map(|f| self.types[f.name()]).collect(),
        };
        let mut response =
            self.server.query(&format!("{sql} FORMAT RowBinary"), &self.params, "failed the read").await?;
        let mut sender = BatchSender::new(schema, batch_size, tx);
        let mut buf: Vec<u8> = Vec::new();
        let mut start = 0;
        let read_error = |e: reqwest::Error| {
            DataFusionError::External(
                format!("reading from ClickHouse `{}`: {}", self.server.name, super::without_url(&e)).into(),
            )
        };
        loop {
            while let Some(len) = row_len(&buf[start..], &types) {
                let row = &buf[start..start + len];
                let mut pos = 0;
                let open = match counting {
                    true => sender.push(|_, _| Ok(())).await?,
                    false => sender.push(|i, column| read_value(&types[i], row, &mut pos, column)).await?,
                };
                if !open {
                    return Ok(());
                }
                start += len;
            }
            match response.chunk().await.map_err(read_error)? {
                Some(chunk) => {
                    buf.drain(..start);
                    start = 0;
                    buf.extend_from_slice(&chunk);
                }
                None if start == buf.len() => return sender.close().await,
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "reading from ClickHouse `{}`: the result ended inside a row",
                        self.server.name
                    )));
                }
            }
        }
    }
}
