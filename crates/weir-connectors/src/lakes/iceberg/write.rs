//! `write_iceberg`: data files written while the run loads, appended as one snapshot when it commits.
//!
//! A table Weir creates is created (empty) when the load starts: its field ids come from the catalog, and the
//! data files must carry them. New input columns (`schema_evolution: evolve`) are added by a schema update at
//! commit, just before the append; the files are written with the ids that update assigns, and the append is
//! refused if a concurrent schema change gave them other ids.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use iceberg::arrow::{
    RecordBatchPartitionSplitter, arrow_schema_to_schema_auto_assign_ids, arrow_type_to_type, schema_to_arrow_schema,
};
use iceberg::spec::{
    DataFile, DataFileFormat, NestedField, Schema as IcebergSchema, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{DefaultFileNameGenerator, DefaultLocationGenerator};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, TableCreation};
use tracing::{info, warn};
use weir_engine::{PendingLoad, StepContext};
use weir_spec::{SchemaEvolution, WriteIceberg};

use super::Opened;
use super::bridge::{batch_to_iceberg, schema_from_iceberg, schema_to_iceberg};
use crate::lakes::refused;

type FileWriterBuilder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

pub async fn write(spec: &WriteIceberg, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let opened = Opened::of(&spec.catalog, &spec.table, spec.connection.as_ref(), cx).await?;
    let catalog = &opened.catalog;
    let exists = catalog.table_exists(&opened.ident).await.map_err(|e| opened.error(e))?;
    if !exists && cx.dry_run {
        let rows = input.count().await? as u64;
        info!(step = %cx.step, "Dry run: would create Iceberg table {} with {rows} rows", opened.shown);
        return Ok(Box::new(PendingIceberg::nothing(opened, rows)));
    }
    let table = match exists {
        true => catalog.load_table(&opened.ident).await.map_err(|e| opened.error(e))?,
        false => create(spec, &opened, input.schema().as_arrow()).await?,
    };
    let current = table.metadata().current_schema().clone();
    let (input, added) = conform(spec, &opened, &current, input)?;
    let schema = Arc::new(with_columns(&current, &added, table.metadata().last_column_id())?);
    let target = Arc::new(schema_to_arrow_schema(&schema).map_err(|e| opened.error(e))?);
    let converted = schema_from_iceberg(&target)?;
    let input = arrange(input, &converted)?;
    info!(step = %cx.step, "Starting load into Iceberg table {} (append)", opened.shown);

    let mut writer = Writer::new(&table, schema.clone(), cx).await.map_err(|e| opened.error(e))?;
    let mut rows = 0u64;
    let mut batches = input.execute_stream().await?;
    let mut failure = None;
    while let Some(batch) = batches.next().await {
        let written = match batch.and_then(|b| batch_to_iceberg(refused::conform(&b, &converted, cx)?, &target)) {
            Ok(batch) => {
                rows += batch.num_rows() as u64;
                writer.write(batch).await.map_err(|e| opened.error(e))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            failure = Some(e);
            break;
        }
    }
    let files = writer.close().await.map_err(|e| opened.error(e));
    if let Some(e) = failure {
        // The files the writer finished before the failure are named by no snapshot: remove them now.
        remove(&table, &files.unwrap_or_default()).await;
        return Err(e);
    }
    let files = files?;
    info!(
        step = %cx.step,
        "Wrote {rows} rows to Iceberg table {} in {} files: a new snapshot when the run commits",
        opened.shown,
        files.len()
    );
    let summary = HashMap::from(crate::lakes::run_metadata(cx));
    Ok(Box::new(PendingIceberg { opened, table: Some(table), added, files, rows, summary }))
}

/// Creates the table (and its namespace) with the input's columns in Iceberg's types.
async fn create(spec: &WriteIceberg, opened: &Opened, input: &Schema) -> Result<Table> {
    let catalog = &opened.catalog;
    let namespace = opened.ident.namespace();
    if !catalog.namespace_exists(namespace).await.map_err(|e| opened.error(e))? {
        catalog.create_namespace(namespace, HashMap::new()).await.map_err(|e| opened.error(e))?;
    }
    let fields: Vec<Field> =
        input.fields().iter().map(|f| Field::new(f.name(), iceberg_type(f.data_type()), f.is_nullable())).collect();
    let schema = arrow_schema_to_schema_auto_assign_ids(&schema_to_iceberg(&Schema::new(fields))?)
        .map_err(|e| opened.error(e))?;
    let mut partitions = UnboundPartitionSpec::builder();
    for name in &spec.partition_by {
        let field = schema.field_by_name(name).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "`partition_by` names `{name}`, which the input to Iceberg table `{}` does not have",
                opened.shown
            ))
        })?;
        partitions =
            partitions.add_partition_field(field.id, name, Transform::Identity).map_err(|e| opened.error(e))?;
    }
    let creation = TableCreation::builder()
        .name(opened.ident.name().to_string())
        .schema(schema)
        .partition_spec(partitions.build())
        .properties(spec.properties.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .build();
    let table = catalog.create_table(namespace, creation).await.map_err(|e| opened.error(e))?;
    info!("Created Iceberg table {} at {}", opened.shown, table.metadata().location());
    Ok(table)
}

/// The type Iceberg keeps for an input column's type: strings, binaries and lists in their plain forms, small and
/// unsigned integers widened, times and timestamps in microseconds (timestamps with a zone in UTC).
fn iceberg_type(ty: &DataType) -> DataType {
    match ty {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Null => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time64(TimeUnit::Microsecond),
        DataType::Timestamp(_, zone) => {
            DataType::Timestamp(TimeUnit::Microsecond, zone.as_ref().map(|_| "+00:00".into()))
        }
        DataType::Dictionary(_, value) => iceberg_type(value),
        DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) | DataType::LargeListView(item) => {
            DataType::List(Arc::new(Field::new(item.name(), iceberg_type(item.data_type()), item.is_nullable())))
        }
        DataType::Struct(fields) => DataType::Struct(Fields::from_iter(
            fields.iter().map(|f| Field::new(f.name(), iceberg_type(f.data_type()), f.is_nullable())),
        )),
        other => other.clone(),
    }
}

/// A column the load adds to the table: its name, type and the field id the schema update gives it.
#[derive(Debug, Clone)]
struct Added {
    name: String,
    ty: Type,
    id: i32,
}

/// The input limited to the table's columns (or with the new ones `evolve` adds), per `schema_evolution`.
fn conform(
    spec: &WriteIceberg,
    opened: &Opened,
    table: &IcebergSchema,
    input: DataFrame,
) -> Result<(DataFrame, Vec<Added>)> {
    let new: Vec<Field> = input
        .schema()
        .fields()
        .iter()
        .filter(|f| table.field_by_name(f.name()).is_none())
        .map(|f| f.as_ref().clone())
        .collect();
    if new.is_empty() {
        return Ok((input, Vec::new()));
    }
    let listed = new.iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ");
    match spec.schema_evolution {
        SchemaEvolution::Freeze => Err(DataFusionError::Plan(format!(
            "Iceberg table `{}` has no column {listed} and `schema_evolution: freeze` keeps its columns; set \
             `schema_evolution: evolve` to add them or `discard` to drop them",
            opened.shown
        ))),
        SchemaEvolution::Discard => {
            let keep: Vec<Expr> = input
                .schema()
                .fields()
                .iter()
                .filter(|f| table.field_by_name(f.name()).is_some())
                .map(|f| col(Column::new_unqualified(f.name())))
                .collect();
            Ok((input.select(keep)?, Vec::new()))
        }
        SchemaEvolution::Evolve => {
            let mut next = 0;
            let added = new
                .iter()
                .map(|f| {
                    let arrow =
                        schema_to_iceberg(&Schema::new(vec![Field::new(f.name(), iceberg_type(f.data_type()), true)]))?;
                    let ty = arrow_type_to_type(arrow.field(0).data_type()).map_err(|e| opened.error(e))?;
                    if !ty.is_primitive() {
                        return Err(DataFusionError::Plan(format!(
                            "Iceberg table `{}`: new column `{}` is a {ty}; Weir adds only columns of primitive types \
                             to an existing table (set `schema_evolution: discard` to drop it)",
                            opened.shown,
                            f.name()
                        )));
                    }
                    next += 1;
                    Ok(Added { name: f.name().clone(), ty, id: next })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((input, added))
        }
    }
}

/// The table's schema with the added columns, numbered after the table's last field id as a schema update
/// numbers them.
fn with_columns(schema: &IcebergSchema, added: &[Added], last_column_id: i32) -> Result<IcebergSchema> {
    if added.is_empty() {
        return Ok(schema.clone());
    }
    let fields = schema
        .as_struct()
        .fields()
        .iter()
        .cloned()
        .chain(added.iter().map(|a| Arc::new(NestedField::optional(last_column_id + a.id, &a.name, a.ty.clone()))));
    IcebergSchema::builder()
        .with_schema_id(schema.schema_id() + 1)
        .with_fields(fields)
        .build()
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The input with the table's columns, in its order; a column the input lacks is null (in the table's type). The
/// values keep the input's types: [`refused::conform`] casts them batch by batch, setting aside what cannot be.
fn arrange(input: DataFrame, target: &Schema) -> Result<DataFrame> {
    let present: Vec<String> = input.schema().fields().iter().map(|f| f.name().clone()).collect();
    let columns: Vec<Expr> = target
        .fields()
        .iter()
        .map(|f| match present.contains(f.name()) {
            true => Ok(col(Column::new_unqualified(f.name()))),
            false if f.is_nullable() => Ok(cast(lit(ScalarValue::Null), f.data_type().clone()).alias(f.name())),
            false => Err(DataFusionError::Plan(format!(
                "the input has no column `{}`, which the Iceberg table requires",
                f.name()
            ))),
        })
        .collect::<Result<_>>()?;
    input.select(columns)
}

/// Data files of one table, one writer per partition for a partitioned table.
enum Writer {
    Unpartitioned(Box<DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>>),
    Partitioned(Box<FanoutWriter<FileWriterBuilder>>, Box<RecordBatchPartitionSplitter>),
}

impl Writer {
    async fn new(table: &Table, schema: Arc<IcebergSchema>, cx: &StepContext) -> iceberg::Result<Self> {
        let metadata = table.metadata();
        let parquet = ParquetWriterBuilder::from_table_properties(&metadata.table_properties()?, schema.clone());
        // Files named by the run, so a killed run's files are recognisable in the table's data directory.
        let names = DefaultFileNameGenerator::new(format!("weir-{}", cx.run_id), None, DataFileFormat::Parquet);
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            parquet,
            table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            names,
        );
        let files = DataFileWriterBuilder::new(rolling);
        let spec = metadata.default_partition_spec();
        Ok(match spec.is_unpartitioned() {
            true => Self::Unpartitioned(Box::new(files.build(None).await?)),
            false => {
                let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec.clone())?;
                Self::Partitioned(Box::new(FanoutWriter::new(files)), Box::new(splitter))
            }
        })
    }

    async fn write(&mut self, batch: arrow58::array::RecordBatch) -> iceberg::Result<()> {
        match self {
            Self::Unpartitioned(writer) => writer.write(batch).await,
            Self::Partitioned(writer, splitter) => {
                for (key, part) in splitter.split(&batch)? {
                    writer.write(key, part).await?;
                }
                Ok(())
            }
        }
    }

    async fn close(self) -> iceberg::Result<Vec<DataFile>> {
        match self {
            Self::Unpartitioned(mut writer) => writer.close().await,
            Self::Partitioned(writer, _) => writer.close().await,
        }
    }
}

/// Data files waiting for the run's commit.
struct PendingIceberg {
    opened: Opened,
    /// `None` for a dry run's table that does not exist.
    table: Option<Table>,
    added: Vec<Added>,
    files: Vec<DataFile>,
    rows: u64,
    summary: HashMap<String, String>,
}

impl PendingIceberg {
    fn nothing(opened: Opened, rows: u64) -> Self {
        Self { opened, table: None, added: Vec::new(), files: Vec::new(), rows, summary: HashMap::new() }
    }

    /// Adds the new columns, checking that they got the field ids the files were written with.
    async fn add_columns(&self, table: Table) -> iceberg::Result<Table> {
        let before = table.metadata().last_column_id();
        let mut update = Transaction::new(&table).update_schema();
        for column in &self.added {
            update = update.add_column(AddColumn::optional(&column.name, column.ty.clone()));
        }
        let table = update.apply(Transaction::new(&table))?.commit(self.opened.catalog.as_ref()).await?;
        let schema = table.metadata().current_schema();
        for column in &self.added {
            let id = schema.field_by_name(&column.name).map(|f| f.id);
            if id != Some(before + column.id) {
                return Err(iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    format!(
                        "another writer changed the table's columns during the load (column `{}` got field id {id:?}, \
                         not {}); nothing was appended, run the pipeline again",
                        column.name,
                        before + column.id
                    ),
                ));
            }
        }
        Ok(table)
    }
}

#[async_trait]
impl PendingLoad for PendingIceberg {
    fn rows(&self) -> u64 {
        self.rows
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let Some(mut table) = self.table.take() else { return Ok(()) };
        if self.files.is_empty() && self.added.is_empty() {
            return Ok(());
        }
        if !self.added.is_empty() {
            table = self.add_columns(table).await.map_err(|e| self.opened.error(e))?;
        }
        let files = std::mem::take(&mut self.files);
        let append =
            Transaction::new(&table).fast_append().add_data_files(files).set_snapshot_properties(self.summary.clone());
        let catalog: &dyn Catalog = self.opened.catalog.as_ref();
        let committed = append
            .apply(Transaction::new(&table))
            .map_err(|e| self.opened.error(e))?
            .commit(catalog)
            .await
            .map_err(|e| self.opened.error(e))?;
        let snapshot = committed.metadata().current_snapshot().map(|s| s.snapshot_id()).unwrap_or_default();
        info!(snapshot, "Committed {} rows to Iceberg table {} as snapshot {snapshot}", self.rows, self.opened.shown);
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        if let Some(table) = &self.table {
            remove(table, &self.files).await;
        }
    }
}

/// Removes data files no snapshot will name, saying which could not go.
async fn remove(table: &Table, files: &[DataFile]) {
    for file in files {
        if let Err(e) = table.file_io().delete(file.file_path()).await {
            warn!("Cannot remove {} after the load failed: {e}", file.file_path());
        }
    }
}
