//! `write_db` on ClickHouse, which has no transactions: the input is streamed (RowBinary, a few MiB per request)
//! into a staging table beside the destination, and made visible when the run commits, by set-based statements
//! on the server:
//!
//! - `append`: `INSERT … SELECT` from the staging table.
//! - `upsert`: the destination must be a `ReplacingMergeTree` ordered by the keys (Weir creates it so): the last
//!   row of each key is inserted and the engine keeps the newest row per key (reads see one row per key with
//!   `FINAL`, or once parts merge). Keys whose last row has the `delete_when` flag are removed by a mutation.
//! - `delete`: a mutation, `ALTER TABLE … DELETE WHERE (keys) IN (SELECT keys FROM staging)`.
//! - `replace`: the rows load into a new table (`CREATE TABLE … AS` the destination) that a single `RENAME`
//!   swaps in at commit: readers see the old rows or the new, never an empty table.
//!
//! Mutations run in the background on the server; commit waits until they are done. A failed run drops its
//! staging table and leaves the destination as it was. The one gap: a crash between a commit's `INSERT … SELECT`
//! and the run's own commit re-appends on the next run; upserts absorb that, appends do not.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use tracing::{info, warn};
use weir_engine::{NothingToLoad, Patience, PendingLoad, StepContext};
use weir_spec::{DbWriteMode, TypedValue, WriteDb};

use super::rowbinary::encode;
use super::types::{ChType, ddl_type};
use super::{Param, Server, quote_ident};
use crate::db::load as db_load;
use crate::db::schema_diff::{self, ColumnChange, TableColumn, fits};

/// RowBinary bytes sent per request: large enough that requests are few, small enough to hold in memory.
const REQUEST_BYTES: usize = 8 << 20;
/// The staging table's row-number column, which keeps the input's order for "last row per key".
const ROW_NUMBER: &str = "_weir_row";

/// Stages `input` for the step's table; the rows become visible at [`PendingLoad::commit`].
pub async fn write(spec: &WriteDb, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let conn = cx.connection(&spec.connection.value)?;
    db_load::refuse_row_by_row_errors(cx, "ClickHouse")?;
    let server = Server::connect(&conn, &Patience::of(cx, spec.retry.as_ref())).await?;
    let target = Target::new(&server, &cx.render(&spec.table)?);
    let input = db_load::with_audit_columns(spec, cx, input)?;
    let schema = input.schema().inner().clone();
    let fields = db_load::data_fields(spec, &schema)?;

    let existing = target.columns(&server).await?;
    let create = create_table_sql(spec, &fields)?;
    if existing.is_none() && cx.dry_run {
        info!(table = %target.name, "Dry run: would create the table, then load: CREATE TABLE {} {create}", target.quoted);
        return Ok(Box::new(NothingToLoad));
    }
    if existing.is_none() && spec.mode != DbWriteMode::Replace {
        target.run(&server, &format!("CREATE TABLE {} {create}", target.quoted), "cannot create").await?;
    }
    let columns = match &existing {
        Some(existing) => evolve(spec, &server, &target, &fields, existing, cx.dry_run).await?,
        None => new_columns(spec, &fields),
    };
    if matches!(spec.mode, DbWriteMode::Upsert | DbWriteMode::Delete) {
        target.check_engine(&server, spec).await?;
    }
    let (staging, ddl) = Staging::plan(spec, cx, &target, &columns, existing.is_some(), &create);
    let commit = commit_statements(spec, &target, &staging, &columns, existing.is_some());
    if cx.dry_run {
        let statements: Vec<&str> = commit.iter().map(Statement::sql).collect();
        info!(table = %target.name, "Dry run: would stage the rows ({ddl}), then commit: {}", statements.join("; "));
        return Ok(Box::new(NothingToLoad));
    }
    staging.create(&server, &ddl).await?;
    match staging.load(&target, &server, &columns, input).await {
        Ok(rows) => {
            info!(table = %target.name, rows, "Staged {rows} rows for {} in {}", target.name, staging.name);
            Ok(Box::new(ClickHousePending { server, target, staging, rows, commit }))
        }
        Err(e) => {
            staging.drop_table(&server).await;
            Err(e)
        }
    }
}

/// The destination: `db.table`, or `table` in the connection's database.
struct Target {
    database: String,
    name: String,
    quoted: String,
}

impl Target {
    fn new(server: &Server, table: &str) -> Self {
        let (database, name) = table.split_once('.').unwrap_or((&server.database, table));
        Self {
            database: database.into(),
            name: table.into(),
            quoted: format!("{}.{}", quote_ident(database), quote_ident(name)),
        }
    }

    fn unqualified(&self) -> &str {
        self.name.rsplit_once('.').map_or(&self.name, |(_, n)| n)
    }

    /// A table beside the destination, named after it.
    fn sibling(&self, suffix: &str) -> (String, String) {
        let name = format!("{}__weir_{suffix}", self.unqualified());
        let quoted = format!("{}.{}", quote_ident(&self.database), quote_ident(&name));
        (name, quoted)
    }

    /// The database and table name as bound values `p1` and `p2`.
    fn names(&self) -> [Param; 2] {
        let text = |s: &str| Param::of(&TypedValue::String(s.to_string())).expect("strings always bind");
        [text(&self.database), text(self.unqualified())]
    }

    async fn run(&self, server: &Server, sql: &str, doing: &str) -> Result<()> {
        server.query(sql, &[], &format!("{doing} table `{}`", self.name)).await.map(drop)
    }

    /// Rows of a `FORMAT JSONCompact` query about this table, which reads `p1` (database) and `p2` (table).
    async fn describe(&self, server: &Server, sql: &str) -> Result<Vec<Vec<serde_json::Value>>> {
        let json = server.json(sql, &self.names(), &format!("cannot look up table `{}`", self.name)).await?;
        Ok(json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| row.as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// The table's columns, or `None` when it does not exist.
    async fn columns(&self, server: &Server) -> Result<Option<Vec<TableColumn>>> {
        let rows = self
            .describe(
                server,
                "SELECT name, type FROM system.columns \
                 WHERE database = (SELECT p1 FROM weir_params) AND table = (SELECT p2 FROM weir_params)",
            )
            .await?;
        let columns: Vec<TableColumn> = rows
            .iter()
            .map(|row| {
                let (name, db_type) = (row[0].as_str().unwrap_or_default(), row[1].as_str().unwrap_or_default());
                TableColumn {
                    name: name.into(),
                    arrow: ChType::parse(db_type).map(|t| t.arrow()),
                    db_type: db_type.into(),
                }
            })
            .collect();
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// Upserts need a ReplacingMergeTree ordered by exactly the keys, deletes a MergeTree (mutations).
    async fn check_engine(&self, server: &Server, spec: &WriteDb) -> Result<()> {
        let rows = self
            .describe(
                server,
                "SELECT engine, sorting_key FROM system.tables \
                 WHERE database = (SELECT p1 FROM weir_params) AND name = (SELECT p2 FROM weir_params)",
            )
            .await?;
        let (engine, sorting_key) = match rows.first() {
            Some(row) => {
                (row[0].as_str().unwrap_or_default().to_string(), row[1].as_str().unwrap_or_default().to_string())
            }
            None => return Err(DataFusionError::Plan(format!("table `{}` is gone", self.name))),
        };
        let sorted_by: Vec<String> =
            sorting_key.split(',').map(|k| k.trim().trim_matches('`').to_string()).filter(|k| !k.is_empty()).collect();
        let deletes = spec.mode == DbWriteMode::Delete || spec.delete_when.is_some();
        if spec.mode == DbWriteMode::Upsert && (engine != "ReplacingMergeTree" || sorted_by != spec.keys) {
            return Err(DataFusionError::Plan(format!(
                "upsert into ClickHouse needs a ReplacingMergeTree ordered by the keys ({}); `{}` is {engine} ordered by ({sorting_key}), \
                 where rows of the same key would stay side by side",
                spec.keys.join(", "),
                self.name
            )));
        }
        if deletes && !engine.ends_with("MergeTree") {
            return Err(DataFusionError::Plan(format!(
                "deleting from ClickHouse needs a MergeTree table (deletes are mutations); `{}` is {engine}",
                self.name
            )));
        }
        Ok(())
    }

    /// Waits until the table's mutations are done.
    async fn wait_for_mutations(&self, server: &Server) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            let rows = self
                .describe(
                    server,
                    "SELECT count() FROM system.mutations \
                     WHERE database = (SELECT p1 FROM weir_params) AND table = (SELECT p2 FROM weir_params) AND is_done = 0",
                )
                .await?;
            let running = rows
                .first()
                .and_then(|r| r[0].as_str().and_then(|s| s.parse::<u64>().ok()).or(r[0].as_u64()))
                .unwrap_or(0);
            if running == 0 {
                return Ok(());
            }
            if started.elapsed() > std::time::Duration::from_secs(600) {
                return Err(DataFusionError::Execution(format!(
                    "the delete on `{}` is still running on the server after 10 minutes; see `system.mutations`",
                    self.name
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// `(columns) ENGINE = …` for a new table of `fields`: a ReplacingMergeTree ordered by the keys when the step has
/// keys (so upserts keep one row per key), else a MergeTree.
fn create_table_sql(spec: &WriteDb, fields: &[&Field]) -> Result<String> {
    let defs = fields
        .iter()
        .map(|f| {
            let ty = db_load::column_type(f, spec.keys.contains(f.name()), "ClickHouse", &|ty, is_key| {
                ddl_type(ty, is_key)
            })?;
            Ok(format!("{} {ty}", quote_ident(f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    let engine = match spec.keys.is_empty() {
        true => "MergeTree() ORDER BY tuple()".to_string(),
        false => format!(
            "ReplacingMergeTree() ORDER BY ({})",
            spec.keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
        ),
    };
    Ok(format!("({}) ENGINE = {engine}", defs.join(", ")))
}

/// The columns of a table about to be created for `fields`, as [`create_table_sql`] creates them.
fn new_columns(spec: &WriteDb, fields: &[&Field]) -> Vec<(String, ChType)> {
    let created =
        |f: &Field| ddl_type(f.data_type(), spec.keys.contains(f.name())).expect("create_table_sql checked the type");
    fields.iter().map(|f| (f.name().clone(), ChType::parse(&created(f)).expect("a type Weir names"))).collect()
}

/// Applies the schema evolution policy to an existing table (a dry run only logs the DDL); returns the columns to
/// load in input order.
async fn evolve(
    spec: &WriteDb,
    server: &Server,
    target: &Target,
    fields: &[&Field],
    existing: &[TableColumn],
    dry_run: bool,
) -> Result<Vec<(String, ChType)>> {
    let numeric = |t: &DataType| t.is_integer() || t.is_floating();
    let can_widen = |column: &TableColumn, input: &DataType| {
        column.arrow.as_ref().is_some_and(|t| numeric(t) && numeric(input) && fits(t, input))
            && ddl_type(input, true).is_some()
    };
    let planned = schema_diff::plan(spec.schema_evolution, &target.name, fields, existing, &can_widen)?;
    let mut changes = Vec::new();
    let mut columns = Vec::new();
    for (field, change) in &planned {
        let current = existing.iter().find(|c| c.name == *field.name()).and_then(|c| ChType::parse(&c.db_type));
        let not_null = match (change, &current) {
            (ColumnChange::Fits, Some(current)) => {
                columns.push((field.name().clone(), *current));
                continue;
            }
            (ColumnChange::Widen, Some(current)) => !current.nullable,
            _ => false,
        };
        let new_type = db_load::column_type(field, not_null, "ClickHouse", &ddl_type)?;
        let verb = if *change == ColumnChange::Add { "ADD" } else { "MODIFY" };
        changes.push(format!("{verb} COLUMN {} {new_type}", quote_ident(field.name())));
        columns.push((field.name().clone(), ChType::parse(&new_type).expect("a type Weir names")));
    }
    if !changes.is_empty() {
        let ddl = format!("ALTER TABLE {} {}", target.quoted, changes.join(", "));
        if dry_run {
            info!(table = %target.name, "Dry run: would evolve the table: {ddl}");
        } else {
            info!(table = %target.name, "Evolving table: {ddl}");
            target.run(server, &ddl, "cannot alter").await?;
        }
    }
    Ok(columns)
}

/// Where the rows wait for the commit: a Log table with a row number (and the delete flag), or for `replace` the
/// new table that will take the destination's name.
struct Staging {
    name: String,
    quoted: String,
    /// The columns sent, in order: the data columns, then the flag for `delete_when`.
    sent: Vec<(String, ChType)>,
    numbered: bool,
}

impl Staging {
    /// The staging table of this load and the DDL that creates it.
    fn plan(
        spec: &WriteDb,
        cx: &StepContext,
        target: &Target,
        columns: &[(String, ChType)],
        exists: bool,
        create: &str,
    ) -> (Self, String) {
        let run: String = cx.run_id.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
        let mut sent = columns.to_vec();
        if spec.mode == DbWriteMode::Replace {
            let (name, quoted) = target.sibling(&format!("new_{run}"));
            let ddl = match exists {
                true => format!("CREATE TABLE {quoted} AS {}", target.quoted),
                false => format!("CREATE TABLE {quoted} {create}"),
            };
            (Self { name, quoted, sent, numbered: false }, ddl)
        } else {
            let (name, quoted) = target.sibling(&format!("stage_{run}"));
            if let Some(flag) = &spec.delete_when {
                sent.push((flag.clone(), ChType::parse("Nullable(UInt8)").expect("a known type")));
            }
            let mut defs: Vec<String> =
                sent.iter().map(|(n, t)| format!("{} {}", quote_ident(n), type_name(t))).collect();
            defs.push(format!("{} UInt64", quote_ident(ROW_NUMBER)));
            (
                Self { name, quoted: quoted.clone(), sent, numbered: true },
                format!("CREATE TABLE {quoted} ({}) ENGINE = Log", defs.join(", ")),
            )
        }
    }

    async fn create(&self, server: &Server, ddl: &str) -> Result<()> {
        // A table of the same name is the leftover of a crashed attempt of this run.
        self.drop_table(server).await;
        server.query(ddl, &[], &format!("cannot create the staging table `{}`", self.name)).await.map(drop)
    }

    /// Streams the input into the staging table; returns the rows sent.
    async fn load(
        &self,
        target: &Target,
        server: &Server,
        columns: &[(String, ChType)],
        input: DataFrame,
    ) -> Result<u64> {
        let names: Vec<&str> = self.sent.iter().map(|(n, _)| n.as_str()).collect();
        let types: Vec<ChType> = self.sent.iter().map(|(_, t)| *t).collect();
        let mut into_columns: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        if self.numbered {
            into_columns.push(quote_ident(ROW_NUMBER));
        }
        let into = format!("{} ({})", self.quoted, into_columns.join(", "));
        let doing = format!("cannot stage rows in `{}`", self.name);
        let mut stream = input.execute_stream().await?;
        let (mut rows, mut buf) = (0u64, Vec::new());
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let mut arrays = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let array = batch.column_by_name(name).expect("data_fields checked the columns").clone();
                let is_flag = i >= columns.len();
                arrays.push(match is_flag {
                    true => cast(&array, &DataType::Boolean)?,
                    // Nested values go into `String` columns as their JSON.
                    false if crate::db::nested::is_nested(array.data_type()) && !types[i].array => {
                        crate::db::nested::json_text(&array)?
                    }
                    false => array,
                });
            }
            let fields: Vec<Field> =
                names.iter().zip(&arrays).map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
            let batch =
                RecordBatch::try_new(std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields)), arrays)?;
            encode(&batch, &types, &names, rows, self.numbered, &mut buf)
                .map_err(|e| DataFusionError::Execution(format!("cannot load table `{}`: {e}", target.name)))?;
            rows += batch.num_rows() as u64;
            if buf.len() >= REQUEST_BYTES {
                server.insert(&into, std::mem::take(&mut buf), &doing).await?;
            }
        }
        if !buf.is_empty() {
            server.insert(&into, buf, &doing).await?;
        }
        Ok(rows)
    }

    async fn drop_table(&self, server: &Server) {
        if let Err(e) =
            server.query(&format!("DROP TABLE IF EXISTS {}", self.quoted), &[], "cannot drop a staging table").await
        {
            warn!("{e}");
        }
    }
}

/// A type as ClickHouse spells it.
fn type_name(ty: &ChType) -> String {
    use super::types::Base;
    let base = match ty.base {
        Base::Int { bytes, signed } => format!("{}Int{}", if signed { "" } else { "U" }, bytes * 8),
        Base::Float32 => "Float32".into(),
        Base::Float64 => "Float64".into(),
        Base::Decimal { precision, scale } => format!("Decimal({precision}, {scale})"),
        Base::String => "String".into(),
        Base::FixedString(n) => format!("FixedString({n})"),
        Base::Date => "Date".into(),
        Base::DateTime => "DateTime".into(),
    };
    let value = if ty.nullable { format!("Nullable({base})") } else { base };
    if ty.array { format!("Array({value})") } else { value }
}

/// A statement of the commit.
enum Statement {
    Sql(String),
    /// A mutation, which the server runs in the background: the commit waits for it.
    Mutation(String),
}

impl Statement {
    fn sql(&self) -> &str {
        let (Self::Sql(sql) | Self::Mutation(sql)) = self;
        sql
    }
}

fn commit_statements(
    spec: &WriteDb,
    target: &Target,
    staging: &Staging,
    columns: &[(String, ChType)],
    existed: bool,
) -> Vec<Statement> {
    let names = columns.iter().map(|(n, _)| quote_ident(n)).collect::<Vec<_>>().join(", ");
    let keys = spec.keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    let (t, s) = (&target.quoted, &staging.quoted);
    let last_per_key = format!("{ROW_NUMBER} IN (SELECT max({ROW_NUMBER}) FROM {s} GROUP BY {keys})");
    let flagged = spec.delete_when.as_ref().map(|f| format!("coalesce({}, 0) = 1", quote_ident(f)));
    match spec.mode {
        DbWriteMode::Append => {
            vec![Statement::Sql(format!("INSERT INTO {t} ({names}) SELECT {names} FROM {s} ORDER BY {ROW_NUMBER}"))]
        }
        DbWriteMode::Upsert => {
            let mut statements = Vec::new();
            let mut kept = last_per_key.clone();
            if let Some(flagged) = &flagged {
                statements.push(Statement::Mutation(format!(
                    "ALTER TABLE {t} DELETE WHERE ({keys}) IN (SELECT {keys} FROM {s} WHERE {last_per_key} AND {flagged})"
                )));
                kept = format!("{kept} AND NOT ({flagged})");
            }
            statements.push(Statement::Sql(format!(
                "INSERT INTO {t} ({names}) SELECT {names} FROM {s} WHERE {kept} ORDER BY {ROW_NUMBER}"
            )));
            statements
        }
        DbWriteMode::Delete => {
            vec![Statement::Mutation(format!("ALTER TABLE {t} DELETE WHERE ({keys}) IN (SELECT {keys} FROM {s})"))]
        }
        DbWriteMode::Replace => {
            let (_, old) = target.sibling("old");
            match existed {
                true => vec![
                    Statement::Sql(format!("DROP TABLE IF EXISTS {old}")),
                    Statement::Sql(format!("RENAME TABLE {t} TO {old}, {s} TO {t}")),
                    Statement::Sql(format!("DROP TABLE {old}")),
                ],
                false => vec![Statement::Sql(format!("RENAME TABLE {s} TO {t}"))],
            }
        }
    }
}

/// Rows staged on the server, made visible by [`PendingLoad::commit`].
struct ClickHousePending {
    server: Server,
    target: Target,
    staging: Staging,
    rows: u64,
    commit: Vec<Statement>,
}

#[async_trait]
impl PendingLoad for ClickHousePending {
    fn rows(&self) -> u64 {
        self.rows
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        for statement in &self.commit {
            self.target.run(&self.server, statement.sql(), "cannot load").await?;
            if let Statement::Mutation(_) = statement {
                self.target.wait_for_mutations(&self.server).await?;
            }
        }
        self.staging.drop_table(&self.server).await;
        info!(table = %self.target.name, rows = self.rows, "Wrote {} rows to {}", self.rows, self.target.name);
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        self.staging.drop_table(&self.server).await;
    }
}
