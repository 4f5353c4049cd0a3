//! File steps: `read_csv`, `read_json`, `read_parquet`, the file writers, `list_files` and `copy_files`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::OrderedMap;

/// Declares a file-reading step: `path` and `hive_partitioning` first, then the format's own fields. Fields are
/// spelled out rather than `#[serde(flatten)]`ed so that every value keeps its line and column.
macro_rules! file_source {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// A file, a glob (`data/*.csv`, `logs/**/*.json.gz`) or a directory (read recursively). Relative to the
            /// pipeline file; `{{ var.x }}` templating.
            #[schemars(with = "String")]
            pub path: Spanned<String>,
            /// Turn `key=value` directories into string columns named `key`.
            #[serde(default)]
            pub hive_partitioning: bool,
            /// For `s3://`, `az://`, `gs://` and `http(s)://` paths: a connection of that kind holding the endpoint
            /// and credentials. Without one, the standard environment variables (`AWS_*`, `AZURE_*`, ...) apply.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub connection: Option<Spanned<String>>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            pub fn source(&self) -> FileSource<'_> {
                FileSource { path: &self.path, hive_partitioning: self.hive_partitioning, connection: self.connection.as_ref() }
            }
        }
    };
}

/// Declares a file-writing step: `input`, `path`, `mode`, `partition_by`, then the format's own fields.
macro_rules! file_sink {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[schemars(with = "String")]
            pub input: Spanned<String>,
            /// A file (`out/orders.parquet`) or, ending in `/` or with `partition_by` or `mode: append`, a
            /// directory. Relative to the pipeline file; `{{ var.x }}` templating.
            #[schemars(with = "String")]
            pub path: Spanned<String>,
            #[serde(default)]
            pub mode: WriteMode,
            /// Columns whose values name `column=value` subdirectories.
            #[serde(default)]
            pub partition_by: Vec<String>,
            /// For `s3://`, `az://` and `gs://` paths: a connection of that kind holding the endpoint and
            /// credentials. Without one, the standard environment variables (`AWS_*`, `AZURE_*`, ...) apply.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub connection: Option<Spanned<String>>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            pub fn sink(&self) -> FileSink<'_> {
                FileSink {
                    input: &self.input,
                    path: &self.path,
                    mode: self.mode,
                    partition_by: &self.partition_by,
                    connection: self.connection.as_ref(),
                }
            }
        }
    };
}

/// The location part of any file-reading step.
#[derive(Debug, Clone, Copy)]
pub struct FileSource<'a> {
    pub path: &'a Spanned<String>,
    pub hive_partitioning: bool,
    pub connection: Option<&'a Spanned<String>>,
}

/// The location part of any file-writing step.
#[derive(Debug, Clone, Copy)]
pub struct FileSink<'a> {
    pub input: &'a Spanned<String>,
    pub path: &'a Spanned<String>,
    pub mode: WriteMode,
    pub partition_by: &'a [String],
    pub connection: Option<&'a Spanned<String>>,
}

impl FileSink<'_> {
    /// A sink writes a directory of files when appending, partitioning, or when the path says so.
    pub fn is_directory(&self) -> bool {
        self.mode == WriteMode::Append || !self.partition_by.is_empty() || self.path.value.ends_with('/')
    }
}

/// Compression of input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// By file extension: `.gz` is gzip, `.zst` is zstd, anything else is plain.
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

file_source! {
    /// Read CSV files.
    pub struct ReadCsv {
        /// Whether the first line holds column names.
        #[serde(default = "yes")]
        pub header: bool,
        #[serde(default = "comma")]
        pub delimiter: char,
        #[serde(default = "double_quote")]
        pub quote: char,
        /// Unquoted field values read as NULL. A quoted value is always text (`""` is the empty string), as
        /// PostgreSQL's `COPY … CSV` and Polars read it; see `quoted_nulls`.
        #[serde(default = "default_null_values")]
        pub null_values: Vec<String>,
        /// Let quoted values match `null_values` too, so `""` reads as NULL (DuckDB's and Spark's reading).
        #[serde(default)]
        pub quoted_nulls: bool,
        #[serde(default)]
        pub compression: Compression,
        /// Set when quoted values contain line breaks. Large uncompressed files are otherwise split at line breaks
        /// and read in parallel; with this set, each file is read by one thread from its start.
        #[serde(default)]
        pub newlines_in_values: bool,
        /// Column name to SQL type (`bigint`, `double`, `text`, `date`, `timestamp`, `boolean`, `decimal(12,2)`), in file
        /// order. Without it the types are inferred from the first `infer_rows` rows.
        #[serde(default)]
        pub schema: Option<OrderedMap<String>>,
        #[serde(default = "default_infer_rows")]
        pub infer_rows: usize,
    }
}

file_source! {
    /// Read JSON (one array of objects) or NDJSON (one object per line) files.
    pub struct ReadJson {
        /// Turn nested objects into `parent.child` columns instead of structs.
        #[serde(default)]
        pub flatten: bool,
        #[serde(default)]
        pub compression: Compression,
        /// Column name to SQL type; without it the types are inferred from the first `infer_rows` records.
        #[serde(default)]
        pub schema: Option<OrderedMap<String>>,
        #[serde(default = "default_infer_rows")]
        pub infer_rows: usize,
    }
}

file_source! {
    /// Read Parquet files.
    pub struct ReadParquet {}
}

/// How a load treats what is already at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Replace the file or directory as a whole, atomically.
    #[default]
    Overwrite,
    /// Add new files to a directory; existing files stay.
    Append,
}

file_sink! {
    /// Write CSV.
    pub struct WriteCsv {
        #[serde(default = "yes")]
        pub header: bool,
        #[serde(default = "comma")]
        pub delimiter: char,
    }
}

file_sink! {
    /// Write newline-delimited JSON.
    pub struct WriteJson {}
}

file_sink! {
    /// Write Parquet.
    pub struct WriteParquet {
        /// `zstd(3)`, `snappy`, `gzip(6)`, `lz4`, `uncompressed`.
        #[serde(default = "default_parquet_compression")]
        pub compression: String,
        /// Rows per row group.
        #[serde(default = "default_row_group_size")]
        pub row_group_size: usize,
    }
}

/// List the files a path names: a table of `path` (to read or copy), `name` (relative to the listed directory),
/// `size` and `last_modified` (UTC). With `since` and a state cursor (`update: { max: step.last_modified }`) it
/// picks up only new files on each run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFiles {
    /// A file, a glob or a directory, local or `s3://`, `az://`, `gs://`; `{{ var.x }}` templating.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// The connection of an object-storage path (endpoint and credentials).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    /// Only files modified at or after this instant: an ISO timestamp, usually `"{{ state.last_pickup }}"`. "At"
    /// because stores that keep whole seconds would otherwise hide a file landing in the cursor's second; the files
    /// at the boundary are listed again (copying one again overwrites it with itself).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub since: Option<Spanned<String>>,
}

/// Copy the files a `list_files` step lists (its `path` and `name` columns) into a directory or bucket prefix,
/// under their relative names, when the run commits: download, upload, or between two stores. Each file appears
/// whole at its destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyFiles {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// The connection of the listed files' store, when they are on object storage.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub from_connection: Option<Spanned<String>>,
    /// The destination directory: a local path, or `s3://bucket/prefix/`, `az://…`, `gs://…`.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    /// The destination's connection, when it is on object storage.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}
fn comma() -> char {
    ','
}
fn double_quote() -> char {
    '"'
}
fn default_null_values() -> Vec<String> {
    vec![String::new()]
}
fn default_infer_rows() -> usize {
    1000
}
fn default_parquet_compression() -> String {
    "zstd(3)".to_string()
}
fn default_row_group_size() -> usize {
    1_000_000
}
