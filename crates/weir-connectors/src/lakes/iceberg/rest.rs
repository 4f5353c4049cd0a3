//! `iceberg_rest` connections: an Iceberg REST catalog (Polaris, Lakekeeper, Gravitino, Nessie, Unity Catalog,
//! AWS Glue's and S3 Tables' REST endpoints, Tabular), by iceberg-rust's REST client.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::{REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder};
use weir_engine::ResolvedConnection;
use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

use super::CatalogKind;
use super::storage::FilesFactory;

const OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("warehouse", OptionType::Text, "the warehouse to open, where the catalog serves several"),
    ConnectionOption::new("token", OptionType::Secret, "a bearer token for the catalog; best `${ICEBERG_TOKEN}`"),
    ConnectionOption::new(
        "credential",
        OptionType::Secret,
        "`client_id:client_secret`, exchanged for a token at the catalog's OAuth2 endpoint",
    ),
    ConnectionOption::new("scope", OptionType::Text, "the OAuth2 scope asked for").default("catalog"),
    ConnectionOption::new("oauth2_server_uri", OptionType::Url, "the OAuth2 token endpoint, if not the catalog's"),
];

/// The REST client's property for an option.
fn property(option: &str) -> &str {
    match option {
        "warehouse" => REST_CATALOG_PROP_WAREHOUSE,
        "oauth2_server_uri" => "oauth2-server-uri",
        other => other,
    }
}

pub const KIND: ConnectionKind = ConnectionKind {
    name: "iceberg_rest",
    family: Family::Catalog,
    description: "an Iceberg REST catalog, for read_iceberg and write_iceberg",
    url: UrlUse::Required("http://localhost:8181"),
    option_groups: &[OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};

/// The `iceberg_rest` kind's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Catalog(&RestKind));

struct RestKind;

#[async_trait]
impl CatalogKind for RestKind {
    async fn connect(&self, conn: &ResolvedConnection, files: FilesFactory) -> Result<Arc<dyn Catalog>> {
        let mut props = HashMap::from([(REST_CATALOG_PROP_URI.to_string(), conn.url.expose().to_string())]);
        // `weir validate` (run before every run) refuses options the kind does not list.
        props.extend(conn.options.iter().map(|(key, value)| (property(key).to_string(), value.expose().to_string())));
        let catalog = RestCatalogBuilder::default()
            .with_storage_factory(Arc::new(files))
            .load(conn.name.clone(), props)
            .await
            .map_err(|e| DataFusionError::Plan(format!("connection `{}`: {e}", conn.name)))?;
        Ok(Arc::new(catalog))
    }
}
