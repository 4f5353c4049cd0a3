//! The `read_webhook` step.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::OrderedMap;

/// The records of a request to the pipeline's webhook (`weir serve`, a `webhook` trigger), one row per record;
/// the request is answered only after the run's loads commit, with 422 and the reason when the run fails.
/// `weir run --payload body.json` feeds a file instead; without one the table is empty.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadWebhook {
    /// Column name to SQL type, in order: a request has no file to infer types from, and a record that does not
    /// fit them fails the request.
    pub schema: OrderedMap<String>,
    /// JSONPath of the records in the body; without it the body is an array of records or one record.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub records: Option<Spanned<String>>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// With `format: debezium`, also add each event's `op` (`c`, `u`, `d`, `r`) as column `_op`, which a load
    /// then creates in its table.
    #[serde(default)]
    pub keep_op: bool,
}

/// How a webhook record reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Each record is a row.
    #[default]
    Records,
    /// Each record is a Debezium change event (`op`, `before`, `after`, `source`, at the top or under `payload`):
    /// the row is the after image (the before image of a delete), with `_deleted` added, ready for `write_db` in
    /// upsert mode with `delete_when: _deleted` (which is not a column of the table). Events apply in the order
    /// sent. Tombstones (the `null` Debezium sends after a delete, for Kafka's compaction) are skipped and counted.
    Debezium,
}
