//! Azure Blob Storage (and Azurite, its emulator), for `az://container/key` paths, through object_store.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use reqwest::Url;
use weir_engine::Secret;
use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

use super::{CLIENT_OPTIONS, StoreKind, configured};

const OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("account_name", OptionType::Text, "the storage account")
        .aliases(&["azure_storage_account_name"]),
    ConnectionOption::new("access_key", OptionType::Secret, "the account's key").aliases(&[
        "account_key",
        "azure_storage_account_key",
        "azure_storage_access_key",
        "master_key",
    ]),
    ConnectionOption::new("sas_token", OptionType::Secret, "a shared access signature instead of the key").aliases(&[
        "sas_key",
        "azure_storage_sas_token",
        "azure_storage_sas_key",
    ]),
    ConnectionOption::new("bearer_token", OptionType::Secret, "an OAuth token instead of the key")
        .aliases(&["token", "azure_storage_token"]),
    ConnectionOption::new("client_id", OptionType::Text, "a service principal's client id")
        .aliases(&["azure_client_id", "azure_storage_client_id"]),
    ConnectionOption::new("client_secret", OptionType::Secret, "a service principal's secret")
        .aliases(&["azure_client_secret", "azure_storage_client_secret"]),
    ConnectionOption::new("tenant_id", OptionType::Text, "a service principal's tenant").aliases(&[
        "authority_id",
        "azure_tenant_id",
        "azure_storage_tenant_id",
    ]),
    ConnectionOption::new("use_emulator", OptionType::Bool, "talk to Azurite on its default address")
        .aliases(&["azure_storage_use_emulator"])
        .default("false"),
    ConnectionOption::new("endpoint", OptionType::Url, "the Blob service's URL, for emulators and sovereign clouds")
        .aliases(&["azure_endpoint", "azure_storage_endpoint"]),
    ConnectionOption::new("use_azure_cli", OptionType::Bool, "take credentials from the Azure CLI")
        .aliases(&["azure_use_azure_cli"]),
    ConnectionOption::new("federated_token_file", OptionType::Path, "a workload identity's token file")
        .aliases(&["azure_federated_token_file"]),
    ConnectionOption::new("skip_signature", OptionType::Bool, "send requests unsigned (public containers)")
        .aliases(&["azure_skip_signature"]),
    ConnectionOption::new("disable_tagging", OptionType::Bool, "send no blob tags").aliases(&["azure_disable_tagging"]),
];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "azure",
    family: Family::ObjectStore,
    description: "Azure Blob Storage or Azurite",
    url: UrlUse::InSteps("az://container/key"),
    option_groups: &[OPTIONS, CLIENT_OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};

/// Azure Blob Storage as file steps use it.
pub struct Azure;

impl StoreKind for Azure {
    fn schemes(&self) -> &'static [&'static str] {
        &["az", "azure", "abfs", "abfss"]
    }

    fn build(&self, url: &Url, options: &[(&str, Secret)]) -> Result<Arc<dyn ObjectStore>, String> {
        let builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
        let builder = configured(builder, options, |b, key: AzureConfigKey, value| b.with_config(key, value))?;
        Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
    }
}

/// Azure's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Store(&Azure));

#[cfg(test)]
mod tests {
    #[test]
    fn every_option_is_a_key_object_store_knows() {
        super::super::assert_options_parse::<object_store::azure::AzureConfigKey>(&super::KIND);
    }
}
