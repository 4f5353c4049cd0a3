//! `read_db` scans that travel to a cluster: a step's table ([`DbTable`]) as the scheduler plans it, and its scan
//! ([`DbScanExec`]) as an executor runs it, each as bytes and back. The database's query travels as its system
//! ships it ([`Query::ship`]), connection and bound values included, and is rebuilt by the same system in the
//! other process ([`super::Database::rebuild_query`]), found by connection kind in the registry; a system whose
//! queries do not ship keeps its steps on the machine that runs the pipeline.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use weir_engine::{ResolvedConnection, Secret};

use super::scan::{DbScanExec, DbTable, Flavor, Query};

/// A query as its database ships it: the connection kind that rebuilds it, and what that kind needs to.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShippedQuery {
    kind: String,
    state: serde_json::Value,
}

impl ShippedQuery {
    /// `state`, for connection kind `kind` to read back with [`ShippedQuery::state`].
    pub fn of(kind: &str, state: &impl Serialize) -> Option<Self> {
        Some(Self { kind: kind.to_string(), state: serde_json::to_value(state).ok()? })
    }

    /// What [`ShippedQuery::of`] was given.
    pub fn state<T: serde::de::DeserializeOwned>(state: serde_json::Value) -> Result<T> {
        serde_json::from_value(state)
            .map_err(|e| DataFusionError::Internal(format!("a database query sent by the cluster does not read: {e}")))
    }
}

/// A connection as a shipped query carries it: in the clear, since the executor that runs the scan opens the
/// connection itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShippedConnection {
    name: String,
    kind: String,
    url: String,
    options: BTreeMap<String, String>,
}

impl From<&ResolvedConnection> for ShippedConnection {
    fn from(conn: &ResolvedConnection) -> Self {
        Self {
            name: conn.name.clone(),
            kind: conn.kind.clone(),
            url: conn.url.expose().to_string(),
            options: conn.options.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
        }
    }
}

impl From<ShippedConnection> for ResolvedConnection {
    fn from(conn: ShippedConnection) -> Self {
        Self {
            name: conn.name,
            kind: conn.kind,
            url: Secret::new(conn.url),
            options: conn.options.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
        }
    }
}

/// What a table and a scan share on the wire.
#[derive(Serialize, Deserialize)]
struct Shipped {
    query: ShippedQuery,
    connection: String,
    /// Arrow IPC: the table's columns, or the scan's projection of them.
    schema: Vec<u8>,
    batch_size: usize,
    what: What,
}

#[derive(Serialize, Deserialize)]
enum What {
    Table { from: String, params: Vec<String> },
    Scan { sql: String, params: String },
}

/// `provider` as bytes, when it is a database's table: `None` for any other table, an error for a database whose
/// scans do not ship.
pub fn encode_table(provider: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
    let table = (provider as &dyn std::any::Any).downcast_ref::<DbTable>()?;
    let what = What::Table { from: table.from.clone(), params: table.params.clone() };
    Some(encode(table.flavor, table.query.as_ref(), &table.connection, &table.schema, table.batch_size, what))
}

/// `plan` as bytes, when it is a database scan: `None` for any other plan.
pub fn encode_scan(plan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
    let scan = plan.downcast_ref::<DbScanExec>()?;
    let what = What::Scan { sql: scan.sql.to_string(), params: scan.params.to_string() };
    Some(encode(scan.flavor, scan.query.as_ref(), &scan.connection, &scan.schema, scan.batch_size, what))
}

fn encode(
    flavor: &Flavor,
    query: &dyn Query,
    connection: &str,
    schema: &SchemaRef,
    batch_size: usize,
    what: What,
) -> Result<Vec<u8>> {
    let query = query.ship().ok_or_else(|| {
        DataFusionError::NotImplemented(format!(
            "a {} scan runs only on the machine that runs the pipeline",
            flavor.system
        ))
    })?;
    let schema = schema_bytes(schema)?;
    let shipped = Shipped { query, connection: connection.to_string(), schema, batch_size, what };
    serde_json::to_vec(&shipped).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// A table or a scan from [`encode_table`] or [`encode_scan`].
pub enum Decoded {
    Table(Arc<dyn TableProvider>),
    Scan(Arc<dyn ExecutionPlan>),
}

pub fn decode(bytes: &[u8]) -> Result<Decoded> {
    let shipped: Shipped = serde_json::from_slice(bytes)
        .map_err(|e| DataFusionError::Internal(format!("a database scan sent by the cluster does not read: {e}")))?;
    let database = crate::registry::database(&shipped.query.kind).map_err(DataFusionError::Plan)?;
    let (flavor, query) = database.rebuild_query(shipped.query.state)?;
    let schema = schema_from(&shipped.schema)?;
    Ok(match shipped.what {
        What::Table { from, params } => Decoded::Table(Arc::new(DbTable {
            flavor,
            connection: shipped.connection,
            params,
            query,
            from,
            schema,
            batch_size: shipped.batch_size,
        })),
        What::Scan { sql, params } => Decoded::Scan(Arc::new(DbScanExec::new(
            flavor,
            shipped.connection,
            params,
            query,
            sql,
            schema,
            shipped.batch_size,
        ))),
    })
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    StreamWriter::try_new(&mut bytes, schema)?.finish()?;
    Ok(bytes)
}

fn schema_from(bytes: &[u8]) -> Result<SchemaRef> {
    Ok(StreamReader::try_new(Cursor::new(bytes), None)?.schema())
}
