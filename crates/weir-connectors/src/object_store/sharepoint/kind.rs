//! The `sharepoint` connection kind as `weir validate`, `weir schema` and `weir list` describe it.

use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

const OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("site", OptionType::Text, "the site: a Graph site id, or `host.sharepoint.com:/sites/Name`"),
    ConnectionOption::new("tenant_id", OptionType::Text, "the Entra ID tenant the app is registered in"),
    ConnectionOption::new("client_id", OptionType::Text, "the app's client id (client-credentials sign-in)"),
    ConnectionOption::new("client_secret", OptionType::Secret, "the app's secret"),
    ConnectionOption::new("token_url", OptionType::Url, "the token endpoint, instead of the tenant's"),
    ConnectionOption::new("scope", OptionType::Text, "the token's scope")
        .default("https://graph.microsoft.com/.default"),
    ConnectionOption::new("bearer_token", OptionType::Secret, "a ready token instead of client credentials"),
    ConnectionOption::new("graph_url", OptionType::Url, "Microsoft Graph's base URL")
        .default("https://graph.microsoft.com/v1.0"),
];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "sharepoint",
    family: Family::ObjectStore,
    description: "a document library of a SharePoint site, through Microsoft Graph",
    url: UrlUse::InSteps("sharepoint://Documents/exports/orders.csv"),
    option_groups: &[OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};
