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

mod database;
mod extract;
mod files;
mod lake;
mod transform;
mod webhook;

use crate::diagnostic::Pos;
pub use database::*;
pub use extract::*;
pub use files::*;
pub use lake::*;
pub use transform::*;
pub use webhook::*;

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
        "ai_extract" => AiExtract(Box<AiExtract>) [input]: "typed columns read out of free text by a language model, every answer checked; cached",
        "read_delta" => ReadDelta(ReadDelta): "a Delta Lake table, local or on object storage: as of a version or time, or its changes since a version",
        "read_iceberg" => ReadIceberg(ReadIceberg): "an Iceberg table through its REST catalog: its current snapshot or one by id or time",
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
        "write_delta" => WriteDelta(WriteDelta) [input]: "a Delta Lake table: append, overwrite (all or where), upsert by MERGE, delete; one version per run",
        "write_iceberg" => WriteIceberg(WriteIceberg) [input]: "append to an Iceberg table through its REST catalog, created and evolved; one snapshot per run",
        "write_api" => WriteApi(Box<WriteApi>) [input]: "records to an HTTP API, one per request or batched; concurrency, retries, idempotency key",
    }
    Action {
        "execute" => Execute(Execute): "one SQL statement on a database after the run's loads commit (ANALYZE, COPY INTO)",
        "maintain_delta" => MaintainDelta(MaintainDelta): "compact, vacuum or checkpoint a Delta Lake table after the run's loads commit",
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

/// Where an extract step reads or a load step writes, as the file says it (templates unrendered): for the docs
/// site and lineage events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// A path, glob or URL; a table; an API path; or what the step reads when it names nothing (`a query`).
    pub location: &'a str,
    /// The connection it goes through, if any.
    pub connection: Option<&'a str>,
    pub form: Form,
}

/// What an [`Endpoint`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Csv,
    Json,
    Parquet,
    /// A Delta Lake table.
    Delta,
    /// An Iceberg table.
    Iceberg,
    /// Files listed or copied.
    Files,
    Table,
    /// A database query (whose tables only the database knows).
    Query,
    Api,
    Model,
    Webhook,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Parquet => "parquet",
            Self::Delta => "delta",
            Self::Iceberg => "iceberg",
            Self::Files => "files",
            Self::Table => "table",
            Self::Query => "query",
            Self::Api => "api",
            Self::Model => "model",
            Self::Webhook => "webhook",
        })
    }
}

impl StepKind {
    /// Where the step reads (extract) or writes (load); `None` for transforms and actions.
    pub fn endpoint(&self) -> Option<Endpoint<'_>> {
        Some(match self.role() {
            Role::Extract(e) => match e {
                Extract::ReadCsv(s) => at(&s.path, s.connection.as_ref(), Form::Csv),
                Extract::ReadJson(s) => at(&s.path, s.connection.as_ref(), Form::Json),
                Extract::ReadParquet(s) => at(&s.path, s.connection.as_ref(), Form::Parquet),
                Extract::ListFiles(s) => at(&s.path, s.connection.as_ref(), Form::Files),
                Extract::ReadDb(s) => match &s.table {
                    Some(table) => at(table, Some(&s.connection), Form::Table),
                    None => Endpoint { location: "a query", connection: Some(&s.connection.value), form: Form::Query },
                },
                Extract::ReadApi(s) => at(&s.url, s.connection.as_ref(), Form::Api),
                Extract::EnrichApi(s) => at(&s.url, s.connection.as_ref(), Form::Api),
                Extract::AiExtract(s) => {
                    Endpoint { location: "a language model", connection: Some(&s.connection.value), form: Form::Model }
                }
                Extract::ReadDelta(s) => at(&s.path, s.connection.as_ref(), Form::Delta),
                Extract::ReadIceberg(s) => match s.source() {
                    Some(IcebergSource::Catalog { catalog, table }) => at(table, Some(catalog), Form::Iceberg),
                    Some(IcebergSource::Metadata(file)) => at(file, s.connection.as_ref(), Form::Iceberg),
                    None => Endpoint { location: "an Iceberg table", connection: None, form: Form::Iceberg },
                },
                Extract::ReadWebhook(_) => {
                    Endpoint { location: "webhook requests", connection: None, form: Form::Webhook }
                }
            },
            Role::Load(l) => match l {
                Load::WriteCsv(s) => at(&s.path, s.connection.as_ref(), Form::Csv),
                Load::WriteJson(s) => at(&s.path, s.connection.as_ref(), Form::Json),
                Load::WriteParquet(s) => at(&s.path, s.connection.as_ref(), Form::Parquet),
                Load::CopyFiles(s) => at(&s.to, None, Form::Files),
                Load::WriteDb(s) => at(&s.table, Some(&s.connection), Form::Table),
                Load::WriteDelta(s) => at(&s.path, s.connection.as_ref(), Form::Delta),
                Load::WriteIceberg(s) => at(&s.table, Some(&s.catalog), Form::Iceberg),
                Load::WriteApi(s) => at(&s.url, s.connection.as_ref(), Form::Api),
            },
            Role::Transform(_) | Role::Action(_) => return None,
        })
    }
}

fn at<'a>(location: &'a Spanned<String>, connection: Option<&'a Spanned<String>>, form: Form) -> Endpoint<'a> {
    Endpoint { location: &location.value, connection: connection.map(|c| c.value.as_str()), form }
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
