//! Iceberg tables through iceberg-rust and a catalog: [`read`] registers a table (at a snapshot) as a DataFusion
//! table, [`write`] writes data files while the run loads and appends them as one snapshot when it commits.
//!
//! iceberg-rust is on arrow 58, Weir on 59: batches and schemas cross in [`bridge`] over Arrow's C data interface.
//! Its own DataFusion integration is on an older DataFusion, so the table provider here is Weir's. Files go through
//! [`storage`]: Weir's object stores and connections for buckets.

pub mod bridge;
pub mod read;
pub mod rest;
pub mod storage;
pub mod write;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use iceberg::{Catalog, ErrorKind, NamespaceIdent, TableIdent};
use weir_engine::{ResolvedConnection, StepContext};
use weir_spec::Spanned;

use crate::registry::{self, Connector};
use storage::FilesFactory;

/// A kind of Iceberg catalog (`kind: iceberg_rest`): opens the catalog a connection describes.
#[async_trait]
pub trait CatalogKind: Sync {
    /// The catalog of `conn`, opening table files through `files`.
    async fn connect(&self, conn: &ResolvedConnection, files: FilesFactory) -> Result<Arc<dyn Catalog>>;
}

/// A step's catalog and table, ready to use.
pub struct Opened {
    pub catalog: Arc<dyn Catalog>,
    pub ident: TableIdent,
    /// `namespace.table` as the step wrote it, for messages.
    pub shown: String,
}

impl Opened {
    /// The step's `catalog` connection opened, with its `table` parsed and its files through `connection`.
    pub async fn of(
        catalog: &Spanned<String>,
        table: &Spanned<String>,
        connection: Option<&Spanned<String>>,
        cx: &StepContext,
    ) -> Result<Self> {
        let conn = cx.connection(&catalog.value)?;
        let kind = match registry::connector(&conn.kind).map_err(DataFusionError::Plan)? {
            Connector::Catalog(kind) => kind,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "connection `{}` is of kind `{}`, not an Iceberg catalog",
                    conn.name, conn.kind
                )));
            }
        };
        let files = FilesFactory::new(connection.map(|c| cx.connection(&c.value)).transpose()?);
        let shown = cx.render(table)?;
        let ident = parse_ident(&shown)?;
        Ok(Self { catalog: kind.connect(&conn, files).await?, ident, shown })
    }

    /// An iceberg-rust error, said of this table.
    pub fn error(&self, e: iceberg::Error) -> DataFusionError {
        match e.kind() {
            ErrorKind::TableNotFound => DataFusionError::Plan(format!("Iceberg table `{}` does not exist", self.shown)),
            ErrorKind::NamespaceNotFound => DataFusionError::Plan(format!(
                "Iceberg table `{}`: its namespace `{}` does not exist",
                self.shown,
                self.ident.namespace().join(".")
            )),
            _ => DataFusionError::External(format!("Iceberg table `{}`: {e}", self.shown).into()),
        }
    }
}

/// `a.b.table`: the namespace `a.b`, the table `table`.
fn parse_ident(text: &str) -> Result<TableIdent> {
    let parts: Vec<&str> = text.split('.').map(str::trim).collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(DataFusionError::Plan(format!(
            "Iceberg table `{text}` needs its namespace: write it `namespace.table`"
        )));
    }
    let (name, namespace) = parts.split_last().expect("two parts or more");
    let namespace = NamespaceIdent::from_strs(namespace.iter()).map_err(|e| DataFusionError::Plan(e.to_string()))?;
    Ok(TableIdent::new(namespace, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_split_at_their_last_dot() {
        let ident = parse_ident("sales.eu.orders").unwrap();
        assert_eq!(ident.namespace().join("."), "sales.eu");
        assert_eq!(ident.name(), "orders");
        let bare = parse_ident("orders").unwrap_err().to_string();
        assert!(bare.contains("namespace.table"), "{bare}");
        assert!(parse_ident("sales..orders").is_err());
    }
}
