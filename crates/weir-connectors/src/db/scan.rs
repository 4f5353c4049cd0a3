//! `read_db` for any database: the step's table or query becomes a DataFusion table whose scans send
//! `SELECT <needed columns> FROM <relation> WHERE <pushed-down filters>` and stream the rows back in batches.
//! A database module supplies a [`Query`]: how to quote, which SQL dialect, and how to run a statement.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::Dialect;
use tokio::sync::mpsc::Sender;
use weir_engine::StepContext;
use weir_spec::{DbRelation, ReadDb, TypedValue};

use super::column_builder::ColumnBuilder;
use super::sql_params::{Style, bind_named};

/// How a database spells SQL.
pub struct Flavor {
    /// The system's name in plans: `PostgresScan`, `MySqlScan`.
    pub system: &'static str,
    /// The dialect pushed-down filters are written in.
    pub dialect: &'static (dyn Dialect + Sync),
    pub placeholders: Style,
    /// Quotes one identifier.
    pub quote: fn(&str) -> String,
    /// Whether the database reads standard SQL's casts and date, time and boolean literals, as the unparser
    /// writes them; filters with them stay in DataFusion where it does not (ClickHouse 18).
    pub standard_sql: bool,
}

impl fmt::Debug for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.system)
    }
}

impl Flavor {
    /// `schema.table` with each part quoted, as written.
    pub fn quote_table(&self, name: &str) -> String {
        super::sql_params::qualified(name, self.quote)
    }

    /// What a `read_db` step reads, as a `FROM` item: the quoted table, or the query as a subquery with its
    /// `$name`s turned into placeholders. Returns it with the bound names in placeholder order.
    pub fn relation(&self, spec: &ReadDb, cx: &StepContext) -> Result<(String, Vec<String>)> {
        match spec.relation() {
            Some(DbRelation::Table(table)) => Ok((self.quote_table(&cx.render(table)?), Vec::new())),
            Some(DbRelation::Query(query)) => {
                let bound =
                    bind_named(query.value.trim().trim_end_matches(';'), self.placeholders, &|n| cx.value(n).is_some())
                        .map_err(|e| {
                            DataFusionError::Plan(format!("{e}; declared: {}", cx.value_names().join(", ")))
                        })?;
                Ok((format!("({}) weir_q", bound.sql), bound.names))
            }
            None => plan_err!("a read_db step needs exactly one of `table` and `query`"),
        }
    }

    /// [`Flavor::relation`] with the bound values, each converted for the database's driver.
    pub fn relation_with_values<V>(
        &self,
        spec: &ReadDb,
        cx: &StepContext,
        convert: impl Fn(&TypedValue) -> std::result::Result<V, String>,
    ) -> Result<(String, Vec<(String, V)>)> {
        let (from, names) = self.relation(spec, cx)?;
        let values = names
            .into_iter()
            .map(|name| {
                let value = convert(cx.value(&name).expect("bind_named checked the name"));
                value.map(|v| (name.clone(), v)).map_err(|e| DataFusionError::Plan(format!("`${name}`: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok((from, values))
    }
}

/// A database's side of a scan.
#[async_trait]
pub trait Query: fmt::Debug + Send + Sync + 'static {
    /// Runs `sql` (with the bound parameters) and sends its rows as batches of `schema` until the rows end or
    /// `tx` closes.
    async fn run(&self, sql: &str, schema: SchemaRef, batch_size: usize, tx: Sender<Result<RecordBatch>>)
    -> Result<()>;

    /// What another process of a cluster needs to run this query ([`super::Database::rebuild_query`] reads it
    /// back), connection secrets included; `None` for a database whose scans must run where the pipeline runs.
    fn ship(&self) -> Option<super::shipped::ShippedQuery> {
        None
    }
}

/// A table or query of a database; `from` comes from [`Flavor::relation`].
#[derive(Debug)]
pub struct DbTable {
    pub flavor: &'static Flavor,
    /// The connection's name under `connections:` (never its URL), for plans.
    pub connection: String,
    /// The bound variables, in placeholder order, for plans.
    pub params: Vec<String>,
    pub query: Arc<dyn Query>,
    pub from: String,
    pub schema: SchemaRef,
    pub batch_size: usize,
}

#[async_trait]
impl TableProvider for DbTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: DataFusion still applies each filter, so a difference in semantics can only cost speed.
        Ok(filters
            .iter()
            .map(|f| match filter_sql(f, self.flavor) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&indices)?);
        let columns = if indices.is_empty() {
            "1".to_string()
        } else {
            indices.iter().map(|i| (self.flavor.quote)(self.schema.field(*i).name())).collect::<Vec<_>>().join(", ")
        };
        let mut sql = format!("SELECT {columns} FROM {}", self.from);
        let pushed: Vec<String> = filters.iter().filter_map(|f| filter_sql(f, self.flavor)).collect();
        if !pushed.is_empty() {
            sql.push_str(&format!(" WHERE {}", pushed.join(" AND ")));
        }
        if let Some(n) = limit.filter(|_| pushed.len() == filters.len()) {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let params: Vec<String> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, name)| match self.flavor.placeholders {
                Style::Dollar => format!("${}=${name}", i + 1),
                Style::Question => format!("?=${name}"),
                Style::ExternalTable => format!("p{}=${name}", i + 1),
            })
            .collect();
        Ok(Arc::new(DbScanExec::new(
            self.flavor,
            self.connection.clone(),
            params.join(", "),
            self.query.clone(),
            sql,
            schema,
            self.batch_size,
        )))
    }
}

/// A filter in the database's SQL, if it uses only what both engines mean the same by: columns, literals,
/// comparisons, AND/OR/NOT, IS NULL, IN, BETWEEN, LIKE and (where the flavor allows) casts.
fn filter_sql(filter: &Expr, flavor: &Flavor) -> Option<String> {
    let portable = !filter
        .exists(|e| {
            Ok(!match e {
                Expr::Literal(value, _) => {
                    let ty = value.data_type();
                    flavor.standard_sql || !(ty.is_temporal() || ty == DataType::Boolean)
                }
                Expr::Column(_) | Expr::Not(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => true,
                Expr::Between(_) | Expr::InList(_) | Expr::Like(_) => true,
                Expr::Cast(_) => flavor.standard_sql,
                Expr::BinaryExpr(b) => matches!(
                    b.op,
                    Operator::Eq
                        | Operator::NotEq
                        | Operator::Lt
                        | Operator::LtEq
                        | Operator::Gt
                        | Operator::GtEq
                        | Operator::And
                        | Operator::Or
                ),
                _ => false,
            })
        })
        .ok()?;
    if !portable {
        return None;
    }
    // The step's table is named by its step id in DataFusion; on the server the columns stand alone.
    let unqualified = filter
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    let sql = Unparser::new(flavor.dialect).with_pretty(true).expr_to_sql(&unqualified).ok()?;
    Some(format!("({sql})"))
}

/// Runs one query on the server and streams its rows as batches.
#[derive(Debug, Clone)]
pub(super) struct DbScanExec {
    pub(super) flavor: &'static Flavor,
    pub(super) connection: String,
    /// `$1=$last_sync, ...`
    pub(super) params: Arc<String>,
    pub(super) query: Arc<dyn Query>,
    pub(super) sql: Arc<String>,
    pub(super) schema: SchemaRef,
    pub(super) batch_size: usize,
    properties: Arc<PlanProperties>,
}

impl DbScanExec {
    pub(super) fn new(
        flavor: &'static Flavor,
        connection: String,
        params: String,
        query: Arc<dyn Query>,
        sql: String,
        schema: SchemaRef,
        batch_size: usize,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        let (params, sql, properties) = (Arc::new(params), Arc::new(sql), Arc::new(properties));
        Self { flavor, connection, params, query, sql, schema, batch_size, properties }
    }
}

impl DisplayAs for DbScanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Scan: connection={}, sql={}", self.flavor.system, self.connection, self.sql)?;
        if !self.params.is_empty() {
            write!(f, ", params=[{}]", self.params)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DbScanExec {
    fn name(&self) -> &str {
        "DbScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        tracing::debug!(connection = %self.connection, "{} scan: {}", self.flavor.system, self.sql);
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        let this = self.clone();
        builder.spawn(async move { this.query.run(&this.sql, this.schema.clone(), this.batch_size, tx).await });
        Ok(builder.build())
    }
}

/// Rows collected column by column, sent on as batches of `batch_size`.
pub struct BatchSender {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    batch_size: usize,
    row_number: u64,
    tx: Sender<Result<RecordBatch>>,
}

impl BatchSender {
    pub fn new(schema: SchemaRef, batch_size: usize, tx: Sender<Result<RecordBatch>>) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                ColumnBuilder::new(f.data_type(), batch_size).expect("database sources only map to buildable types")
            })
            .collect();
        Self { schema, columns, rows: 0, batch_size, row_number: 0, tx }
    }

    /// Appends one row, column by column through `fill`. Returns false once nobody reads the batches any more.
    pub async fn push(
        &mut self,
        mut fill: impl FnMut(usize, &mut ColumnBuilder) -> Result<(), String>,
    ) -> Result<bool> {
        self.row_number += 1;
        for (i, column) in self.columns.iter_mut().enumerate() {
            fill(i, column).map_err(|e| {
                DataFusionError::Execution(format!(
                    "row {}, column `{}`: {e}",
                    self.row_number,
                    self.schema.field(i).name()
                ))
            })?;
        }
        self.rows += 1;
        if self.rows < self.batch_size {
            return Ok(true);
        }
        let batch = self.finish()?;
        Ok(self.tx.send(Ok(batch)).await.is_ok())
    }

    /// Sends the rows collected since the last batch.
    pub async fn close(mut self) -> Result<()> {
        if self.rows > 0 {
            let batch = self.finish()?;
            let _ = self.tx.send(Ok(batch)).await;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?)
    }
}
