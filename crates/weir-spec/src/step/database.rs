//! Database steps: `read_db`, `write_db`, `execute`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

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
