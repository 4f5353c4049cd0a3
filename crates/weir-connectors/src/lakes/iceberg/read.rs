//! `read_iceberg`: an Iceberg table (through its catalog, or straight from a metadata file), at its current
//! snapshot or an older one, as a DataFusion table. Scans pass
//! the needed columns and the filters iceberg-rust can evaluate to its planner, which skips data files by their
//! partition values and column statistics; `weir explain` shows the predicate and how many files are left.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use iceberg::Runtime;
use iceberg::TableIdent;
use iceberg::arrow::ArrowReaderBuilder;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::expr::{Predicate, Reference};
use iceberg::io::FileIO;
use iceberg::io::FileIOBuilder;
use iceberg::scan::FileScanTask;
use iceberg::spec::Datum;
use iceberg::table::{StaticTable, Table};
use tracing::info;
use weir_engine::StepContext;
use weir_spec::{IcebergSource, ReadIceberg, Spanned};

use super::Opened;
use super::bridge::{batch_from_iceberg, schema_from_iceberg};
use super::storage::FilesFactory;
use crate::object_store::remote;

pub async fn table(spec: &ReadIceberg, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let (table, shown) = match spec.source() {
        Some(IcebergSource::Catalog { catalog, table }) => {
            let opened = Opened::of(catalog, table, spec.connection.as_ref(), cx).await?;
            let table = opened.catalog.load_table(&opened.ident).await.map_err(|e| opened.error(e))?;
            (table, opened.shown)
        }
        Some(IcebergSource::Metadata(file)) => from_metadata_file(file, spec.connection.as_ref(), cx).await?,
        None => {
            return Err(DataFusionError::Plan("a read_iceberg step needs `catalog` and `table`, or `metadata`".into()));
        }
    };
    let error = |e: iceberg::Error| DataFusionError::External(format!("Iceberg table `{shown}`: {e}").into());
    let metadata = table.metadata();
    let snapshot = match (&spec.snapshot_id, &spec.timestamp) {
        (Some(id), _) => Some(
            metadata
                .snapshot_by_id(id.value)
                .ok_or_else(|| DataFusionError::Plan(format!("Iceberg table `{shown}` has no snapshot {}", id.value)))?
                .clone(),
        ),
        (None, Some(timestamp)) => {
            let instant = instant(&cx.render(timestamp)?)?;
            let log = metadata.history().iter().rev().find(|entry| entry.timestamp_ms <= instant.timestamp_millis());
            let log = log.ok_or_else(|| {
                DataFusionError::Plan(format!("Iceberg table `{shown}` had no snapshot yet at {instant}"))
            })?;
            metadata.snapshot_by_id(log.snapshot_id).cloned()
        }
        (None, None) => metadata.current_snapshot().cloned(),
    };
    // An old snapshot is read with the schema it was written with.
    let schema = snapshot
        .as_ref()
        .and_then(|s| s.schema_id())
        .and_then(|id| metadata.schema_by_id(id))
        .unwrap_or_else(|| metadata.current_schema());
    let schema = schema_from_iceberg(&schema_to_arrow_schema(schema).map_err(error)?)?;
    let snapshot_id = snapshot.map(|s| s.snapshot_id());
    match snapshot_id {
        Some(id) => info!(step = %cx.step, snapshot = id, "Starting extract from Iceberg table {shown}"),
        None => info!(step = %cx.step, "Starting extract from Iceberg table {shown}: it has no snapshot yet"),
    }
    Ok(Arc::new(IcebergTable { table, shown, snapshot_id, schema, batch_size: cx.batch_size }))
}

/// The table a metadata file describes, read-only, with its files through `connection`; and the file as shown.
async fn from_metadata_file(
    file: &Spanned<String>,
    connection: Option<&Spanned<String>>,
    cx: &StepContext,
) -> Result<(Table, String)> {
    let rendered = cx.path(file)?;
    let location = match remote::is_remote(&rendered) {
        true => rendered.clone(),
        false => std::path::absolute(&rendered)
            .map_err(|e| DataFusionError::Plan(format!("{rendered}: {e}")))?
            .display()
            .to_string(),
    };
    let files = FilesFactory::new(connection.map(|c| cx.connection(&c.value)).transpose()?);
    let file_io = FileIOBuilder::new(Arc::new(files)).build();
    // A metadata file names no table; the scan only needs an identifier to say.
    let ident = TableIdent::from_strs(["metadata", "file"]).expect("two names are an identifier");
    let table = StaticTable::from_metadata_file(&location, ident, file_io)
        .await
        .map_err(|e| DataFusionError::Plan(format!("cannot read Iceberg metadata file {rendered}: {e}")))?;
    Ok((table.into_table(), rendered))
}

/// An instant as `timestamp` may write it: RFC 3339, or a date (its midnight UTC).
fn instant(text: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| {
            DataFusionError::Plan(format!("`timestamp` is `{text}`, not an instant such as 2024-01-15T00:00:00Z"))
        })
}

/// One snapshot of an Iceberg table (or none, for a table never written).
#[derive(Debug)]
struct IcebergTable {
    table: Table,
    shown: String,
    snapshot_id: Option<i64>,
    schema: SchemaRef,
    batch_size: usize,
}

#[async_trait]
impl TableProvider for IcebergTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: iceberg-rust skips files and row groups; DataFusion still applies each filter to the rows.
        Ok(filters
            .iter()
            .map(|f| match predicate(f) {
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
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(columns) => Arc::new(self.schema.project(columns)?),
            None => self.schema.clone(),
        };
        let pushed = filters.iter().filter_map(predicate).reduce(Predicate::and);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let mut scan = IcebergScan {
            shown: self.shown.clone(),
            snapshot_id: self.snapshot_id,
            predicate: None,
            tasks: Vec::new(),
            total_files: None,
            file_io: self.table.file_io().clone(),
            batch_size: self.batch_size,
            schema,
            properties,
        };
        let Some(snapshot_id) = self.snapshot_id else { return Ok(Arc::new(scan)) };
        let columns: Vec<String> = scan.schema.fields().iter().map(|f| f.name().clone()).collect();
        let build = |predicate: Option<&Predicate>| {
            let mut builder = self.table.scan().snapshot_id(snapshot_id).select(columns.clone());
            if let Some(predicate) = predicate {
                builder = builder.with_filter(predicate.clone());
            }
            builder.build()
        };
        // A predicate iceberg-rust cannot bind (a literal of another type than its column) only loses the skipping.
        let (planned, predicate) = match build(pushed.as_ref()) {
            Ok(planned) => (planned, pushed),
            Err(_) => (build(None).map_err(|e| self.error(e))?, None),
        };
        // The files are planned once, here, so `weir explain` can say how many are left; the scan reads them.
        scan.tasks =
            planned.plan_files().await.map_err(|e| self.error(e))?.try_collect().await.map_err(|e| self.error(e))?;
        scan.predicate = predicate;
        scan.total_files = planned
            .snapshot()
            .and_then(|s| s.summary().additional_properties.get("total-data-files"))
            .and_then(|n| n.parse().ok());
        Ok(Arc::new(scan))
    }
}

impl IcebergTable {
    fn error(&self, e: iceberg::Error) -> DataFusionError {
        DataFusionError::External(format!("Iceberg table `{}`: {e}", self.shown).into())
    }
}

/// The scan of one snapshot: the data files its filters leave, read by iceberg-rust and handed on as Weir's
/// batches.
struct IcebergScan {
    shown: String,
    /// `None` for a table with no snapshot: no files, no rows.
    snapshot_id: Option<i64>,
    predicate: Option<Predicate>,
    tasks: Vec<FileScanTask>,
    /// The snapshot's data files, where its summary says.
    total_files: Option<usize>,
    file_io: FileIO,
    batch_size: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for IcebergScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DisplayAs::fmt_as(self, DisplayFormatType::Default, f)
    }
}

impl DisplayAs for IcebergScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "IcebergScan: table={}", self.shown)?;
        if let Some(snapshot) = self.snapshot_id {
            write!(f, ", snapshot={snapshot}")?;
        }
        let columns: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        write!(f, ", columns=[{}]", columns.join(", "))?;
        if let Some(predicate) = &self.predicate {
            write!(f, ", predicate={predicate}")?;
        }
        write!(f, ", files={}", self.tasks.len())?;
        match self.total_files {
            Some(total) => write!(f, " of {total}"),
            None => Ok(()),
        }
    }
}

impl ExecutionPlan for IcebergScan {
    fn name(&self) -> &str {
        "IcebergScan"
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
        let shown = self.shown.clone();
        let error = move |e: iceberg::Error| DataFusionError::External(format!("Iceberg table `{shown}`: {e}").into());
        let runtime = Runtime::try_current().map_err(&error)?;
        let tasks = futures::stream::iter(self.tasks.clone().into_iter().map(Ok)).boxed();
        let reader = ArrowReaderBuilder::new(self.file_io.clone(), runtime).with_batch_size(self.batch_size).build();
        let batches = reader.read(tasks).map_err(&error)?.stream();
        let schema = self.schema.clone();
        let converted = schema.clone();
        let batches = batches.map(move |batch| batch_from_iceberg(batch.map_err(&error)?, &converted));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// A DataFusion filter as an Iceberg predicate, when it is one iceberg-rust can evaluate on file statistics.
fn predicate(expr: &Expr) -> Option<Predicate> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            Some(predicate(left)?.and(predicate(right)?))
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => Some(predicate(left)?.or(predicate(right)?)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
                (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
                _ => return None,
            };
            let column = Reference::new(column.name.clone());
            let value = datum(value)?;
            Some(match op {
                Operator::Eq => column.equal_to(value),
                Operator::NotEq => column.not_equal_to(value),
                Operator::Lt => column.less_than(value),
                Operator::LtEq => column.less_than_or_equal_to(value),
                Operator::Gt => column.greater_than(value),
                Operator::GtEq => column.greater_than_or_equal_to(value),
                _ => return None,
            })
        }
        Expr::Not(inner) => Some(predicate(inner)?.negate()),
        Expr::IsNull(inner) => Some(reference(inner)?.is_null()),
        Expr::IsNotNull(inner) => Some(reference(inner)?.is_not_null()),
        Expr::InList(list) => {
            let values = list
                .list
                .iter()
                .map(|v| match v {
                    Expr::Literal(v, _) => datum(v),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            let column = reference(&list.expr)?;
            Some(if list.negated { column.is_not_in(values) } else { column.is_in(values) })
        }
        _ => None,
    }
}

fn reference(expr: &Expr) -> Option<Reference> {
    match expr {
        Expr::Column(c) => Some(Reference::new(c.name.clone())),
        _ => None,
    }
}

/// A literal as an Iceberg value; `None` for NULL and for types without a plain Iceberg counterpart.
fn datum(value: &ScalarValue) -> Option<Datum> {
    Some(match value {
        ScalarValue::Boolean(Some(v)) => Datum::bool(*v),
        ScalarValue::Int32(Some(v)) => Datum::int(*v),
        ScalarValue::Int64(Some(v)) => Datum::long(*v),
        ScalarValue::Float32(Some(v)) => Datum::float(*v),
        ScalarValue::Float64(Some(v)) => Datum::double(*v),
        ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v)) | ScalarValue::LargeUtf8(Some(v)) => {
            Datum::string(v)
        }
        ScalarValue::Date32(Some(v)) => Datum::date(*v),
        ScalarValue::TimestampMicrosecond(Some(v), None) => Datum::timestamp_micros(*v),
        ScalarValue::TimestampMicrosecond(Some(v), Some(_)) => Datum::timestamptz_micros(*v),
        _ => return None,
    })
}
