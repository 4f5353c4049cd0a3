//! Google Cloud Storage, for `gs://bucket/key` paths, through object_store.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use reqwest::Url;
use weir_engine::Secret;
use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

use super::{CLIENT_OPTIONS, StoreKind, configured};

const OPTIONS: &[ConnectionOption] =
    &[
        ConnectionOption::new("service_account_path", OptionType::Path, "a service account's JSON key file")
            .aliases(&["service_account", "google_service_account", "google_service_account_path"]),
        ConnectionOption::new("service_account_key", OptionType::Secret, "a service account's JSON key, inline")
            .aliases(&["google_service_account_key"]),
        ConnectionOption::new("application_credentials", OptionType::Path, "application default credentials' file")
            .aliases(&["google_application_credentials"]),
        ConnectionOption::new("base_url", OptionType::Url, "the service's URL, for emulators")
            .aliases(&["google_base_url"]),
        ConnectionOption::new("skip_signature", OptionType::Bool, "send requests unsigned (public buckets)")
            .aliases(&["google_skip_signature"]),
    ];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "gcs",
    family: Family::ObjectStore,
    description: "Google Cloud Storage",
    url: UrlUse::InSteps("gs://bucket/key"),
    option_groups: &[OPTIONS, CLIENT_OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};

/// Google Cloud Storage as file steps use it.
pub struct Gcs;

impl StoreKind for Gcs {
    fn schemes(&self) -> &'static [&'static str] {
        &["gs"]
    }

    fn build(&self, url: &Url, options: &[(&str, Secret)]) -> Result<Arc<dyn ObjectStore>, String> {
        let builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
        let builder = configured(builder, options, |b, key: GoogleConfigKey, value| b.with_config(key, value))?;
        Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
    }
}

/// GCS's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Store(&Gcs));

#[cfg(test)]
mod tests {
    #[test]
    fn every_option_is_a_key_object_store_knows() {
        super::super::assert_options_parse::<object_store::gcp::GoogleConfigKey>(&super::KIND);
    }
}
