//! Data-lake steps: `read_delta`, `write_delta` and `maintain_delta`, Delta Lake tables on local disk or object
//! storage; `read_iceberg` and `write_iceberg`, Iceberg tables through their catalog.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{OrderedMap, SchemaEvolution};
use crate::api::Duration;

/// Read a Delta Lake table: its current version, an older one (time travel), or only the rows that changed since
/// a version (its change data feed). Later steps' filters and columns are pushed into the scan, so partitions and
/// files whose statistics rule them out are never read (`weir explain` shows the pushed filters).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadDelta {
    /// The table's directory: a local path (relative to the pipeline file) or `s3://bucket/prefix`, `az://…`,
    /// `gs://…`; `{{ var.x }}` templating.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// For object storage: a connection of that kind holding the endpoint and credentials. Without one, the
    /// standard environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`) apply.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    /// Read the table as of this version (time travel). At most one of `version`, `timestamp` and
    /// `changes_since`.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub version: Option<Spanned<u64>>,
    /// Read the table as it was at this instant (ISO 8601, `2024-01-15T00:00:00Z`): the last version committed at
    /// or before it. `{{ var.x }}` templating.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timestamp: Option<Spanned<String>>,
    /// Read only the changes committed after this version, from the table's change data feed (the table needs
    /// `delta.enableChangeDataFeed: "true"`), usually `"{{ state.delta_version }}"` with the state updated by
    /// `max: STEP._commit_version`. Rows carry `_change_type` (`insert`, `update_preimage`, `update_postimage`,
    /// `delete`), `_commit_version` and `_commit_timestamp`. An empty or negative value (a state's `default: -1`) reads every change from version 0.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub changes_since: Option<Spanned<String>>,
}

/// Write a Delta Lake table, created from the input's columns when missing. The data files are written while the
/// run loads; the load becomes one new table version when the run commits, so a failed or killed run adds no
/// version and readers never see part of a load.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteDelta {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// The table's directory: a local path (relative to the pipeline file) or `s3://bucket/prefix`, `az://…`,
    /// `gs://…`; `{{ var.x }}` templating.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// For object storage: a connection of that kind holding the endpoint and credentials.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    #[serde(default)]
    pub mode: DeltaWriteMode,
    /// Columns that identify a row: the match of `upsert` (a Delta MERGE) and of `delete`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// For `upsert`: a boolean input column; rows where it is true delete their key's row instead (CDC deletes).
    /// The column itself is not written.
    #[serde(default)]
    pub delete_when: Option<String>,
    /// For `overwrite`: replace only the rows matching this SQL condition over the table's columns (usually its
    /// partitions, `order_date >= '2024-01-01'`); every input row must match it. Without it the whole table is
    /// replaced.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub replace_where: Option<Spanned<String>>,
    /// Partition columns of a table Weir creates (an existing table keeps its own).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// What to do when the input's columns differ from the table's: `evolve` adds new columns, `freeze` fails
    /// naming them, `discard` drops them.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Table properties of a table Weir creates (`delta.enableChangeDataFeed: "true"`,
    /// `delta.appendOnly: "true"`, ...).
    #[serde(default)]
    pub properties: OrderedMap<String>,
}

/// How a `write_delta` step treats the rows already in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeltaWriteMode {
    /// Add every input row.
    #[default]
    Append,
    /// Make the table (or the rows `replace_where` names) hold exactly the input.
    Overwrite,
    /// Update rows whose keys match an input row, insert the rest (a Delta MERGE).
    Upsert,
    /// Delete the rows whose keys appear in the input.
    Delete,
}

/// Maintain a Delta Lake table after the run's loads commit (actions run in file order, so after the loads into
/// the table): compact small files, remove files no version needs, write a checkpoint. Each is an operation of
/// delta-rs; compaction and vacuum are table versions of their own. The step's figure is the files it touched.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintainDelta {
    /// The table's directory or URL, as for `write_delta`.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// For object storage: a connection of that kind holding the endpoint and credentials.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    /// Compact small files (many small loads make many small files) into files of about 100 MB, partition by
    /// partition; readers see the same rows.
    #[serde(default)]
    pub optimize: bool,
    /// Remove files that no version younger than this span names (files replaced by later loads, and files no
    /// version ever named, from runs that failed or were killed before their commit): `168h` keeps a week of time
    /// travel. Versions older than the span can no longer be read. A span shorter than the table's own
    /// `delta.deletedFileRetentionDuration` (a week unless set) is taken as asked.
    #[serde(default)]
    pub vacuum: Option<Duration>,
    /// Write a checkpoint of the table's log, so readers replay one file instead of every commit since the last.
    #[serde(default)]
    pub checkpoint: bool,
}

/// Read an Iceberg table through its catalog, or from its metadata file: its current snapshot or an older one
/// (time travel). Later steps' filters and columns are pushed into the scan, so data files whose partition or
/// column statistics rule them out are never read (`weir explain` shows the pushed predicate and the files left).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadIceberg {
    /// An `iceberg_rest` connection: the catalog that knows the table. With `table`; or `metadata` instead.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub catalog: Option<Spanned<String>>,
    /// The table as the catalog names it, `namespace.table` (a nested namespace as `a.b.table`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub table: Option<Spanned<String>>,
    /// Without a catalog: the table's metadata file (`…/metadata/00002-….metadata.json`, the `metadata_location`
    /// tools print), a local path (relative to the pipeline file) or `s3://…`, `az://…`, `gs://…`; `{{ var.x }}`
    /// templating. The table is read as that file describes it, however far its catalog has moved on.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub metadata: Option<Spanned<String>>,
    /// For a table whose files are on object storage: a connection of that kind holding the endpoint and
    /// credentials. Without one, the standard environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`) apply.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    /// Read the table as of this snapshot (time travel). At most one of `snapshot_id` and `timestamp`.
    #[serde(default)]
    #[schemars(with = "Option<i64>")]
    pub snapshot_id: Option<Spanned<i64>>,
    /// Read the table as it was at this instant (ISO 8601, `2024-01-15T00:00:00Z`): the snapshot that was
    /// current then. `{{ var.x }}` templating.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timestamp: Option<Spanned<String>>,
}

/// Append to an Iceberg table through its catalog, created from the input's columns when missing. The data files
/// are written while the run loads; they become one new snapshot when the run commits, so a failed or killed run
/// adds no snapshot and readers never see part of a load.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteIceberg {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// An `iceberg_rest` connection: the catalog that knows (or will know) the table.
    #[schemars(with = "String")]
    pub catalog: Spanned<String>,
    /// The table, `namespace.table`; a missing namespace is created with it.
    #[schemars(with = "String")]
    pub table: Spanned<String>,
    /// For a table whose files are on object storage: a connection of that kind.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    #[serde(default)]
    pub mode: IcebergWriteMode,
    /// Partition columns (identity partitions) of a table Weir creates; an existing table keeps its own spec.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// What to do when the input's columns differ from the table's: `evolve` adds new columns (a schema update
    /// committed with the snapshot), `freeze` fails naming them, `discard` drops them.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Table properties of a table Weir creates (`write.parquet.compression-codec: zstd`, ...).
    #[serde(default)]
    pub properties: OrderedMap<String>,
}

/// How a `write_iceberg` step treats the rows already in its table. Only appends: the Iceberg library Weir uses
/// commits new data files, but not overwrites, row-level deletes or merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum IcebergWriteMode {
    /// Add every input row.
    #[default]
    Append,
}

/// Where a `read_iceberg` step finds its table.
#[derive(Debug, Clone, Copy)]
pub enum IcebergSource<'a> {
    Catalog { catalog: &'a Spanned<String>, table: &'a Spanned<String> },
    Metadata(&'a Spanned<String>),
}

impl ReadIceberg {
    /// The step's table: `catalog` with `table`, or `metadata`; `None` when it names neither or both (which the
    /// checks report).
    pub fn source(&self) -> Option<IcebergSource<'_>> {
        match (&self.catalog, &self.table, &self.metadata) {
            (Some(catalog), Some(table), None) => Some(IcebergSource::Catalog { catalog, table }),
            (None, None, Some(metadata)) => Some(IcebergSource::Metadata(metadata)),
            _ => None,
        }
    }
}
