//! The registry of connection kinds: one line per kind, naming the description in the system's folder (`KIND`)
//! and what this build has of it (`CONNECTOR`, `None` when a cargo feature left it out). `weir validate`, `weir
//! schema` and `weir list` read the descriptions; steps find their database or store here.

use weir_spec::{ConnectionKind, KnownKind};

use crate::db::Database;
use crate::lakes::iceberg::CatalogKind;
use crate::models::ModelKind;
use crate::object_store::StoreKind;
use crate::{db, http, lakes, models, object_store};

/// What a build has of a connection kind.
#[derive(Clone, Copy)]
pub enum Connector {
    Database(&'static dyn Database),
    Store(&'static dyn StoreKind),
    Model(&'static dyn ModelKind),
    Catalog(&'static dyn CatalogKind),
}

struct Entry {
    kind: &'static ConnectionKind,
    connector: Option<Connector>,
}

/// Every connection kind Weir knows, in the order `weir list` shows them.
static ENTRIES: &[Entry] = &[
    Entry { kind: &db::postgres::KIND, connector: db::postgres::CONNECTOR },
    Entry { kind: &db::mysql::KIND, connector: db::mysql::CONNECTOR },
    Entry { kind: &db::sqlite::KIND, connector: db::sqlite::CONNECTOR },
    Entry { kind: &db::duckdb::KIND, connector: db::duckdb::CONNECTOR },
    Entry { kind: &db::clickhouse::KIND, connector: db::clickhouse::CONNECTOR },
    Entry { kind: &db::odbc::KIND, connector: db::odbc::CONNECTOR },
    Entry { kind: &http::KIND, connector: http::CONNECTOR },
    Entry { kind: &object_store::s3::KIND, connector: object_store::s3::CONNECTOR },
    Entry { kind: &object_store::azure::KIND, connector: object_store::azure::CONNECTOR },
    Entry { kind: &object_store::gcs::KIND, connector: object_store::gcs::CONNECTOR },
    Entry { kind: &object_store::sftp::KIND, connector: object_store::sftp::CONNECTOR },
    Entry { kind: &object_store::sharepoint::KIND, connector: object_store::sharepoint::CONNECTOR },
    Entry { kind: &models::openai::KIND, connector: models::openai::CONNECTOR },
    Entry { kind: &lakes::iceberg::rest::KIND, connector: lakes::iceberg::rest::CONNECTOR },
];

/// Every connection kind, and whether this build has it: for the checks (`weir_spec::Environment::with_kinds`).
pub fn kinds() -> impl Iterator<Item = KnownKind> {
    ENTRIES.iter().map(|e| KnownKind { kind: e.kind, built: e.connector.is_some() })
}

/// The environment pipelines are checked in: this process's variables and every connection kind.
pub fn environment() -> weir_spec::Environment {
    weir_spec::Environment::from_process().with_kinds(kinds())
}

/// What this build has of kind `name`: `Err` says why it has nothing (unknown, or left out by a feature).
pub fn connector(name: &str) -> Result<Connector, String> {
    let entry =
        ENTRIES.iter().find(|e| e.kind.name == name).ok_or_else(|| format!("there is no connection kind `{name}`"))?;
    entry.connector.ok_or_else(|| {
        format!("`{name}` connections need a build of weir with `--features {}`", entry.kind.feature.unwrap_or(name))
    })
}

/// Whether loads into connections of kind `name` commit batch by batch with a checkpoint (a kind this build has,
/// and one that can).
pub fn checkpoints(name: &str) -> bool {
    ENTRIES.iter().any(|e| e.kind.name == name && e.connector.is_some() && e.kind.can.checkpoints)
}

/// The database system of kind `name`.
pub fn database(name: &str) -> Result<&'static dyn Database, String> {
    match connector(name)? {
        Connector::Database(db) => Ok(db),
        _ => Err(format!("`{name}` is not a database")),
    }
}

/// The language-model endpoint of kind `name`.
pub fn model(name: &str) -> Result<&'static dyn ModelKind, String> {
    match connector(name)? {
        Connector::Model(model) => Ok(model),
        _ => Err(format!("`{name}` is not a language model; ai_extract needs an `openai` connection")),
    }
}

/// The store whose kind holds paths of URL scheme `scheme`.
pub fn store_for_scheme(scheme: &str) -> Option<&'static dyn StoreKind> {
    ENTRIES.iter().find_map(|e| match e.connector {
        Some(Connector::Store(store)) if store.schemes().contains(&scheme) => Some(store),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_match_what_the_connectors_implement() {
        for entry in ENTRIES {
            match entry.connector {
                Some(Connector::Database(_)) => assert!(entry.kind.can.execute, "{}", entry.kind.name),
                Some(Connector::Store(_) | Connector::Model(_) | Connector::Catalog(_)) => {
                    assert!(!entry.kind.can.execute && !entry.kind.can.checkpoints, "{}", entry.kind.name)
                }
                None => assert!(
                    entry.kind.feature.is_some(),
                    "{} is missing without a feature to bring it",
                    entry.kind.name
                ),
            }
        }
    }
}
