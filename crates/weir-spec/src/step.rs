//! Steps: one YAML key per step id, whose value names the step kind as its single key:
//!
//! ```yaml
//! steps:
//!   orders:                    # the step id, and the name of its output table
//!     read_csv: { path: data/orders.csv }
//!   big_orders:
//!     on_error: dead_letter    # keys shared by every kind sit beside the kind
//!     filter: { input: orders, where: "amount > 100" }
//! ```
//!
//! Steps are parsed by hand rather than with `#[serde(tag = ...)]`/`flatten`, because those buffer values and lose
//! the line and column that `weir validate` reports.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::api::{EnrichApi, ReadApi, WriteApi};
use crate::diagnostic::Pos;

/// Whether a kind reads, transforms or writes data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Extract,
    Transform,
    Load,
    /// Runs after every load of the run has committed; has no output.
    Action,
}

/// Declares every step kind once: its YAML name, its variant and settings type, whether it reads one `input`
/// step, and its line for `weir list`. From this list come [`StepKind`], its names, categories and inputs,
/// [`STEP_KINDS`], the parser and the JSON Schema, and one enum per category ([`Extract`], [`Transform`],
/// [`Load`], [`Action`]) that connectors match on exhaustively: a new load kind without a sink does not compile.
macro_rules! step_kinds {
    ($($category:ident {
        $($name:literal => $variant:ident($ty:ty) $([$input:ident])?: $doc:literal,)*
    })*) => {
        /// The kind of a step and its settings.
        #[derive(Debug, Clone)]
        pub enum StepKind {
            $($($variant($ty),)*)*
        }

        /// Every step kind compiled in, in the order `weir list` shows them.
        pub const STEP_KINDS: &[(&str, Category, &str)] = &[$($(($name, Category::$category, $doc),)*)*];

        $(
            #[doc = concat!("The ", stringify!($category), " kinds, for an exhaustive match.")]
            #[derive(Debug, Clone, Copy)]
            #[allow(clippy::borrowed_box)]
            pub enum $category<'a> {
                $($variant(&'a $ty),)*
            }
        )*

        /// A step kind seen through its category.
        #[derive(Debug, Clone, Copy)]
        pub enum Role<'a> {
            $($category($category<'a>),)*
        }

        impl StepKind {
            pub fn name(&self) -> &'static str {
                match self {
                    $($(Self::$variant(_) => $name,)*)*
                }
            }

            pub fn category(&self) -> Category {
                match self {
                    $($(Self::$variant(_) => Category::$category,)*)*
                }
            }

            /// The kind as one of its category's, for connectors and the engine to match on.
            pub fn role(&self) -> Role<'_> {
                match self {
                    $($(Self::$variant(s) => Role::$category($category::$variant(s)),)*)*
                }
            }

            /// The single input of a transform, load or `enrich_api`; `None` for sources and SQL (whose inputs
            /// are its table names).
            pub fn input(&self) -> Option<&Spanned<String>> {
                match self {
                    $($(Self::$variant(_s) => step_kinds!(@input _s $($input)?),)*)*
                }
            }
        }

        fn deserialize_kind<'de, A: MapAccess<'de>>(name: &str, map: &mut A) -> Result<Option<StepKind>, A::Error> {
            Ok(Some(match name {
                $($($name => StepKind::$variant(map.next_value::<$ty>()?),)*)*
                _ => return Ok(None),
            }))
        }

        fn kind_schemas(generator: &mut SchemaGenerator) -> Vec<(&'static str, &'static str, Schema)> {
            vec![$($(($name, $doc, generator.subschema_for::<$ty>()),)*)*]
        }
    };
    (@input $s:ident) => { None };
    (@input $s:ident input) => { Some(&$s.input) };
}

step_kinds! {
    Extract {
        "read_csv" => ReadCsv(ReadCsv): "CSV files: local path, glob or Hive-partitioned directory; gzip/zstd",
        "read_json" => ReadJson(ReadJson): "JSON array or NDJSON files; nested objects as structs, optional flatten",
        "read_parquet" => ReadParquet(ReadParquet): "Parquet files: local path, glob or Hive-partitioned directory",
        "list_files" => ListFiles(ListFiles): "the files a path or glob names (local or object storage), with size and modification time",
        "read_db" => ReadDb(ReadDb): "a table or query of a database connection, with bound parameters and pushdown",
        "read_api" => ReadApi(Box<ReadApi>): "JSON records from a REST API: auth, pagination, rate limit, retries",
        "enrich_api" => EnrichApi(Box<EnrichApi>) [input]: "an API lookup per distinct key of an input, joined back as new columns",
        "read_webhook" => ReadWebhook(ReadWebhook): "records posted to the pipeline's webhook under weir serve, acknowledged after commit; Debezium events",
    }
    Transform {
        "sql" => Sql(Sql): "DataFusion SQL over any earlier step by its id",
        "map" => Map(Map) [input]: "new columns from SQL expressions: trim, lower, parse dates, code labels",
        "filter" => Filter(Filter) [input]: "keep rows where a SQL condition holds",
        "validate" => Validate(Validate) [input]: "named rules; failing rows go to the dead-letter store with every reason",
        "dedup" => Dedup(Dedup) [input]: "one row per key, first or last by an ordering",
    }
    Load {
        "write_csv" => WriteCsv(WriteCsv) [input]: "CSV file or directory, atomic, optionally partitioned",
        "write_json" => WriteJson(WriteJson) [input]: "NDJSON file or directory, atomic, optionally partitioned",
        "write_parquet" => WriteParquet(WriteParquet) [input]: "Parquet file or directory, atomic, compression and row-group size",
        "copy_files" => CopyFiles(CopyFiles) [input]: "copy the files a list_files step lists to a directory or bucket prefix, at commit",
        "write_db" => WriteDb(WriteDb) [input]: "a database table: append, replace, upsert or delete by keys; created and evolved",
        "write_api" => WriteApi(Box<WriteApi>) [input]: "records to an HTTP API, one per request or batched; concurrency, retries, idempotency key",
    }
    Action {
        "execute" => Execute(Execute): "one SQL statement on a database after the run's loads commit (ANALYZE, COPY INTO)",
    }
}

/// A map that keeps the file's order and the position of each key.
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<V> OrderedMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.value.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k.value == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "object", "additionalProperties": generator.subschema_for::<V>() })
    }
}

/// What to do with a record that cannot be processed (decoded, validated, written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop the run with an error naming the record.
    #[default]
    Fail,
    /// Drop the record, counting it.
    Skip,
    /// Keep the record in the dead-letter store with the reason, and go on.
    DeadLetter,
}

/// One step of a pipeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step id: its key in `steps`, and the name of its output table.
    pub id: Spanned<String>,
    /// Where the kind key stands.
    pub kind_pos: Pos,
    pub description: Option<String>,
    /// `None` means "the kind's default" (see [`StepKind::default_on_error`]).
    pub on_error: Option<OnError>,
    pub kind: StepKind,
}

impl Step {
    pub fn id(&self) -> &str {
        &self.id.value
    }

    pub fn on_error(&self) -> OnError {
        self.on_error.unwrap_or(self.kind.default_on_error())
    }
}

impl StepKind {
    /// Validation exists to route bad rows aside; everything else stops on the first bad record unless told.
    pub fn default_on_error(&self) -> OnError {
        match self {
            Self::Validate(_) => OnError::DeadLetter,
            _ => OnError::Fail,
        }
    }

    pub fn file_sink(&self) -> Option<FileSink<'_>> {
        match self {
            Self::WriteCsv(s) => Some(s.sink()),
            Self::WriteJson(s) => Some(s.sink()),
            Self::WriteParquet(s) => Some(s.sink()),
            _ => None,
        }
    }

    pub fn file_source(&self) -> Option<FileSource<'_>> {
        match self {
            Self::ReadCsv(s) => Some(s.source()),
            Self::ReadJson(s) => Some(s.source()),
            Self::ReadParquet(s) => Some(s.source()),
            _ => None,
        }
    }
}

/// A step before its id (the map key) is known.
#[derive(Debug, Clone)]
pub struct StepBody {
    kind_pos: Pos,
    description: Option<String>,
    on_error: Option<OnError>,
    kind: StepKind,
}

impl<'de> Deserialize<'de> for StepBody {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = StepBody;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a step: a mapping with one step kind (e.g. `read_csv:`) and optional `description`, `on_error`",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepBody, A::Error> {
                let (mut description, mut on_error, mut kind) = (None, None, None);
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.value.as_str() {
                        "description" => description = Some(map.next_value()?),
                        "on_error" => on_error = Some(map.next_value()?),
                        name => {
                            if let Some((_, previous)) = &kind {
                                return Err(de::Error::custom(format!(
                                    "a step has exactly one kind, but this one has `{}` and `{name}`",
                                    StepKind::name(previous)
                                )));
                            }
                            match deserialize_kind(name, &mut map)? {
                                Some(k) => kind = Some((Pos::of(&key), k)),
                                None => {
                                    let known: Vec<&str> = STEP_KINDS.iter().map(|(n, ..)| *n).collect();
                                    return Err(de::Error::custom(format!(
                                        "unknown step kind `{name}`; expected one of {}, or `description`, `on_error`",
                                        known.join(", ")
                                    )));
                                }
                            }
                        }
                    }
                }
                let Some((kind_pos, kind)) = kind else {
                    return Err(de::Error::custom(
                        "this step names no kind (e.g. `read_csv:`, `sql:`, `write_parquet:`)",
                    ));
                };
                Ok(StepBody { kind_pos, description, on_error, kind })
            }
        }
        deserializer.deserialize_map(StepVisitor)
    }
}

/// The steps of a pipeline in file order.
#[derive(Debug, Clone, Default)]
pub struct Steps(pub Vec<Step>);

impl Steps {
    pub fn iter(&self) -> std::slice::Iter<'_, Step> {
        self.0.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Step> {
        self.0.iter().find(|s| s.id() == id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Steps {
    type Item = &'a Step;
    type IntoIter = std::slice::Iter<'a, Step>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bodies = OrderedMap::<StepBody>::deserialize(deserializer)?;
        Ok(Steps(
            bodies
                .0
                .into_iter()
                .map(|(id, b)| Step {
                    id,
                    kind_pos: b.kind_pos,
                    description: b.description,
                    on_error: b.on_error,
                    kind: b.kind,
                })
                .collect(),
        ))
    }
}

impl JsonSchema for Steps {
    fn schema_name() -> Cow<'static, str> {
        "Steps".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let on_error = generator.subschema_for::<OnError>();
        let variants: Vec<serde_json::Value> = kind_schemas(generator)
            .into_iter()
            .map(|(name, description, schema)| {
                serde_json::json!({
                    "type": "object",
                    "description": description,
                    "properties": {
                        "description": { "type": "string", "description": "What this step does and why." },
                        "on_error": on_error,
                        name: schema,
                    },
                    "required": [name],
                    "additionalProperties": false,
                })
            })
            .collect();
        json_schema!({
            "type": "object",
            "description": "Steps keyed by id; each output is a table named by the id.",
            "additionalProperties": { "oneOf": variants },
        })
    }
}

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
        /// Field values read as NULL.
        #[serde(default = "default_null_values")]
        pub null_values: Vec<String>,
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

/// A DataFusion SQL query over earlier steps, by id. Variables and state are bound parameters: `$last_sync`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sql {
    #[schemars(with = "String")]
    pub query: Spanned<String>,
}

/// Compute columns with SQL expressions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Map {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// Output column to expression, e.g. `email: lower(trim(email))`, in output order.
    pub columns: OrderedMap<MapColumn>,
    /// Keep the input's other columns after the mapped ones (a mapped name replaces the input column).
    #[serde(default)]
    pub keep_others: bool,
}

/// An output column of a `map` step: an expression, or a lookup of codes to labels.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MapColumn {
    /// A SQL expression over the input's columns.
    Expr(String),
    /// `{ lookup: status, values: { A: active, I: inactive }, default: unknown }`
    Lookup(Lookup),
}

/// Map the values of a column to labels.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// The input column (or expression) to look up.
    pub lookup: String,
    pub values: OrderedMap<String>,
    /// Label for values not listed; NULL when absent.
    #[serde(default)]
    pub default: Option<String>,
}

/// Keep rows where a SQL condition holds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    #[serde(rename = "where")]
    #[schemars(with = "String")]
    pub condition: Spanned<String>,
}

/// Check rows against named rules. A rule fails only when it is false; NULL passes (as in a SQL CHECK), so use
/// `required` for presence.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    pub rules: OrderedMap<Rule>,
    /// Fail the run when more rows than this are invalid: a count (`100`) or a share of the rows (`"5%"`).
    #[serde(default)]
    pub max_invalid: Option<MaxInvalid>,
}

/// A validation rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// The column's text matches a regular expression.
    Regex { column: String, pattern: String },
    /// The column is a number greater than zero.
    Positive(String),
    /// Each column is present: not NULL, and for text not blank.
    Required(Vec<String>),
    /// A SQL boolean expression.
    Expr(String),
}

/// An invalid-row budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxInvalid {
    Count(u64),
    /// A fraction in 0..=1.
    Ratio(f64),
}

impl<'de> Deserialize<'de> for MaxInvalid {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaxVisitor;
        impl Visitor<'_> for MaxVisitor {
            type Value = MaxInvalid;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row count such as 100, or a percentage such as \"5%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxInvalid, E> {
                Ok(MaxInvalid::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxInvalid, E> {
                u64::try_from(v).map(MaxInvalid::Count).map_err(|_| E::custom("max_invalid cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxInvalid, E> {
                let pct = v
                    .trim()
                    .strip_suffix('%')
                    .ok_or_else(|| E::custom(format!("`{v}`: write a percentage as \"5%\"")))?;
                let pct: f64 = pct.trim().parse().map_err(|_| E::custom(format!("`{v}` is not a percentage")))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(E::custom(format!("`{v}` is outside 0%..100%")));
                }
                Ok(MaxInvalid::Ratio(pct / 100.0))
            }
        }
        deserializer.deserialize_any(MaxVisitor)
    }
}

impl JsonSchema for MaxInvalid {
    fn schema_name() -> Cow<'static, str> {
        "MaxInvalid".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "oneOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^[0-9.]+%$" } ] })
    }
}

/// Keep one row per key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dedup {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// Columns that identify a record.
    pub keys: Vec<String>,
    /// SQL ordering within a key, e.g. `created_at DESC`; `keep` picks the first or last row in this order (the
    /// "most recent per email" is `order_by: created_at DESC`, `keep: first`).
    #[serde(default)]
    pub order_by: Option<String>,
    #[serde(default)]
    pub keep: Keep,
}

/// Which row of each key a `dedup` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The first row in `order_by` (in arrival order without one).
    #[default]
    First,
    /// The last row in `order_by` (in arrival order without one).
    Last,
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
}

/// How a webhook record reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Each record is a row.
    #[default]
    Records,
    /// Each record is a Debezium change event (`op`, `before`, `after`, `source`, at the top or under `payload`):
    /// the row is the after image (the before image of a delete), with `_op` (`c`, `u`, `d`, `r`) and `_deleted`
    /// added, ready for `write_db` in upsert mode with `delete_when: _deleted`. Events apply in the order sent.
    Debezium,
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

/// Read from a database connection: a whole table, or a query. Either way the result is a table later steps
/// read by this step's id, and DataFusion pushes projections and filters into the database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadDb {
    /// The name of a connection under `connections:`.
    #[schemars(with = "String")]
    pub connection: Spanned<String>,
    /// A table, optionally schema-qualified (`public.customers`). Give this or `query`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub table: Option<Spanned<String>>,
    /// A query in the database's own SQL. Variables and state are bound parameters, written `$name`
    /// (`WHERE updated_at > $last_sync`): a value can never change the query's meaning.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub query: Option<Spanned<String>>,
}

impl ReadDb {
    /// What to read: exactly one of `table` and `query`, as `weir validate` checks.
    pub fn relation(&self) -> Option<DbRelation<'_>> {
        match (&self.table, &self.query) {
            (Some(table), None) => Some(DbRelation::Table(table)),
            (None, Some(query)) => Some(DbRelation::Query(query)),
            _ => None,
        }
    }
}

/// What a `read_db` step reads.
#[derive(Debug, Clone, Copy)]
pub enum DbRelation<'a> {
    Table(&'a Spanned<String>),
    Query(&'a Spanned<String>),
}

/// Write to a database table, in one transaction that commits only when the whole run succeeds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteDb {
    #[schemars(with = "String")]
    pub input: Spanned<String>,
    /// The name of a connection under `connections:`.
    #[schemars(with = "String")]
    pub connection: Spanned<String>,
    /// The destination table, optionally schema-qualified. Created from the input's columns when missing.
    #[schemars(with = "String")]
    pub table: Spanned<String>,
    #[serde(default)]
    pub mode: DbWriteMode,
    /// Columns that identify a row: the conflict target of `upsert`, the match of `delete`, and the primary key of
    /// a table Weir creates.
    #[serde(default)]
    pub keys: Vec<String>,
    /// For `upsert`: a boolean input column; rows where it is true delete their key's row instead (CDC deletes).
    /// The column itself is not written.
    #[serde(default)]
    pub delete_when: Option<String>,
    /// What to do when the input's columns differ from the table's.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Add `_weir_run_id` and `_weir_loaded_at` columns, so every row says which run loaded it and when.
    #[serde(default)]
    pub audit_columns: bool,
    /// How a batch (`settings.commit_every`) that meets a lost connection, a serialization failure or a deadlock is
    /// tried again; `settings.retry` when absent.
    #[serde(default)]
    pub retry: Option<crate::api::Retry>,
}

/// One SQL statement on a database connection, run after every load of the run has committed (so it sees what
/// they wrote) and before the run's state is saved: maintenance (`ANALYZE`), a warehouse `COPY INTO` of files a
/// load staged, a refresh. Execute steps run in file order. Variables and state bind as `$name`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Execute {
    /// The name of a connection under `connections:`.
    #[schemars(with = "String")]
    pub connection: Spanned<String>,
    /// One statement in the database's own SQL.
    #[schemars(with = "String")]
    pub sql: Spanned<String>,
}

/// How a `write_db` step treats the rows already in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum DbWriteMode {
    /// Insert every input row.
    #[default]
    Append,
    /// Make the table hold exactly the input, in one transaction: readers see the old rows until the commit.
    Replace,
    /// Insert rows with new keys, update rows whose key exists (only the columns that changed).
    Upsert,
    /// Delete the rows whose keys appear in the input.
    Delete,
}

/// What a `write_db` step does when the input's columns differ from the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchemaEvolution {
    /// Add new columns; widen a column when the input needs it (integer to bigint, real to double).
    #[default]
    Evolve,
    /// Fail, naming every difference.
    Freeze,
    /// Drop input columns the table does not have.
    Discard,
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
