//! S3 and S3-compatible stores (MinIO, Ceph, R2), for `s3://bucket/key` paths, through object_store.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use reqwest::Url;
use weir_engine::Secret;
use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

use super::{CLIENT_OPTIONS, StoreKind, configured};

const OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("endpoint", OptionType::Url, "the store's URL, for S3-compatible servers").aliases(&[
        "aws_endpoint",
        "aws_endpoint_url",
        "endpoint_url",
    ]),
    ConnectionOption::new("region", OptionType::Text, "the bucket's region")
        .aliases(&["aws_region"])
        .default("us-east-1"),
    ConnectionOption::new(
        "access_key_id",
        OptionType::Secret,
        "the access key; without it, AWS_* variables or the instance's role",
    )
    .aliases(&["aws_access_key_id"]),
    ConnectionOption::new("secret_access_key", OptionType::Secret, "the secret key")
        .aliases(&["aws_secret_access_key"]),
    ConnectionOption::new("session_token", OptionType::Secret, "a temporary credential's token").aliases(&[
        "aws_session_token",
        "token",
        "aws_token",
    ]),
    ConnectionOption::new(
        "virtual_hosted_style_request",
        OptionType::Bool,
        "address buckets as hosts rather than paths",
    )
    .aliases(&["aws_virtual_hosted_style_request"]),
    ConnectionOption::new("skip_signature", OptionType::Bool, "send requests unsigned (public buckets)")
        .aliases(&["aws_skip_signature"]),
    ConnectionOption::new("role_arn", OptionType::Text, "a role to assume with a web identity token")
        .aliases(&["aws_role_arn"]),
    ConnectionOption::new("role_session_name", OptionType::Text, "the session name of an assumed role")
        .aliases(&["aws_role_session_name"]),
    ConnectionOption::new("web_identity_token_file", OptionType::Path, "the web identity token's file")
        .aliases(&["aws_web_identity_token_file"]),
    ConnectionOption::new("server_side_encryption", OptionType::Text, "`AES256`, `aws:kms` or `aws:kms:dsse`")
        .aliases(&["aws_server_side_encryption"]),
    ConnectionOption::new("sse_kms_key_id", OptionType::Text, "the KMS key of server-side encryption")
        .aliases(&["aws_sse_kms_key_id"]),
    ConnectionOption::new("unsigned_payload", OptionType::Bool, "leave request bodies out of signatures")
        .aliases(&["aws_unsigned_payload"]),
    ConnectionOption::new("checksum_algorithm", OptionType::Text, "`sha256` to send checksums of uploads")
        .aliases(&["aws_checksum_algorithm"]),
    ConnectionOption::new("conditional_put", OptionType::Text, "`etag` where the server supports conditional writes")
        .aliases(&["aws_conditional_put"]),
    ConnectionOption::new("disable_tagging", OptionType::Bool, "send no object tags").aliases(&["aws_disable_tagging"]),
    ConnectionOption::new("request_payer", OptionType::Bool, "accept the costs of requester-pays buckets")
        .aliases(&["aws_request_payer"]),
];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "s3",
    family: Family::ObjectStore,
    description: "S3 or an S3-compatible store (MinIO, Ceph, R2)",
    url: UrlUse::InSteps("s3://bucket/key"),
    option_groups: &[OPTIONS, CLIENT_OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: true, execute: false, dead_letters: false, checkpoints: false },
};

/// S3 as file steps use it.
pub struct S3;

impl StoreKind for S3 {
    fn schemes(&self) -> &'static [&'static str] {
        &["s3", "s3a"]
    }

    fn build(&self, url: &Url, options: &[(&str, Secret)]) -> Result<Arc<dyn ObjectStore>, String> {
        let builder = AmazonS3Builder::from_env().with_url(url.as_str());
        let builder = configured(builder, options, |b, key: AmazonS3ConfigKey, value| b.with_config(key, value))?;
        Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
    }
}

/// S3's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Store(&S3));

#[cfg(test)]
mod tests {
    #[test]
    fn every_option_is_a_key_object_store_knows() {
        super::super::assert_options_parse::<object_store::aws::AmazonS3ConfigKey>(&super::KIND);
    }
}
