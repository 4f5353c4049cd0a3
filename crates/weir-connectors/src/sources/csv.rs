//! `read_csv`: Weir's own streaming CSV reader rather than DataFusion's, because a bad record must name its file
//! and line and be routable to the dead-letter store while the good ones go on. Records are split by the `csv`
//! crate; typing is vectorized: every column is read as text and cast with Arrow's kernels, and the rows a cast
//! rejects are the invalid ones.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter};
use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use tracing::info;
use weir_engine::{NewDeadLetter, StepContext};
use weir_spec::ReadCsv;

use crate::common::files::{self, InputFile};
use crate::common::types::parse_sql_type;

/// The table of a `read_csv` step.
pub async fn table(session: &SessionContext, spec: &ReadCsv, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let path = cx.path(&spec.path)?;
    let inputs = files::list(&path, spec.hive_partitioning)?;
    info!(step = %cx.step, files = inputs.len(), "Starting extract from {path}");
    let file_schema = match &spec.schema {
        Some(columns) => Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, ty)| {
                    parse_sql_type(ty)
                        .map(|t| Field::new(name, t, true))
                        .map_err(|e| DataFusionError::Plan(format!("schema of column `{name}`: {e}")))
                })
                .collect::<Result<Vec<_>>>()?,
        )),
        None => infer(&inputs[0].path, spec)?,
    };
    let mut fields: Vec<Field> = file_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(inputs[0].partitions.iter().map(|(k, _)| Field::new(k, DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(fields));

    let groups = session.copied_config().target_partitions().clamp(1, inputs.len());
    let mut partitions: Vec<Arc<dyn PartitionStream>> = Vec::with_capacity(groups);
    for g in 0..groups {
        let files: Vec<InputFile> = inputs.iter().skip(g).step_by(groups).cloned().collect();
        partitions.push(Arc::new(CsvPartition {
            files,
            schema: schema.clone(),
            file_schema: file_schema.clone(),
            spec: Arc::new(spec.clone()),
            cx: cx.clone(),
        }));
    }
    Ok(Arc::new(StreamingTable::try_new(schema, partitions)?))
}

fn null_regex(spec: &ReadCsv) -> Result<regex::Regex> {
    let alternatives: Vec<String> = spec.null_values.iter().map(|v| regex::escape(v)).collect();
    regex::Regex::new(&format!("^(?:{})$", alternatives.join("|"))).map_err(|e| DataFusionError::Plan(e.to_string()))
}

fn infer(path: &Path, spec: &ReadCsv) -> Result<SchemaRef> {
    let format = Format::default()
        .with_header(spec.header)
        .with_delimiter(byte(spec.delimiter, "delimiter")?)
        .with_quote(byte(spec.quote, "quote")?)
        .with_null_regex(null_regex(spec)?);
    let reader = files::open(path, spec.compression)?;
    let (schema, _) = format
        .infer_schema(reader, Some(spec.infer_rows))
        .map_err(|e| DataFusionError::Plan(format!("cannot infer the columns of {}: {e}", path.display())))?;
    Ok(Arc::new(schema))
}

fn byte(c: char, what: &str) -> Result<u8> {
    u8::try_from(c).map_err(|_| DataFusionError::Plan(format!("the CSV {what} must be a single-byte character, not `{c}`")))
}

#[derive(Debug)]
struct CsvPartition {
    files: Vec<InputFile>,
    schema: SchemaRef,
    file_schema: SchemaRef,
    spec: Arc<ReadCsv>,
    cx: StepContext,
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        let (files, schema, file_schema, spec, cx) =
            (self.files.clone(), self.schema.clone(), self.file_schema.clone(), self.spec.clone(), self.cx.clone());
        builder.spawn_blocking(move || {
            for file in &files {
                let mut reader = FileReader::new(file, &schema, &file_schema, &spec, &cx)?;
                if !reader.read(|batch| tx.blocking_send(Ok(batch)).is_ok())? {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// Reads one file into batches.
struct FileReader<'a> {
    file: &'a InputFile,
    schema: &'a SchemaRef,
    file_schema: &'a SchemaRef,
    spec: &'a ReadCsv,
    cx: &'a StepContext,
    nulls: regex::Regex,
    builders: Vec<StringBuilder>,
    lines: Vec<u64>,
    rejected: Vec<NewDeadLetter>,
}

impl<'a> FileReader<'a> {
    fn new(
        file: &'a InputFile,
        schema: &'a SchemaRef,
        file_schema: &'a SchemaRef,
        spec: &'a ReadCsv,
        cx: &'a StepContext,
    ) -> Result<Self> {
        Ok(Self {
            file,
            schema,
            file_schema,
            spec,
            cx,
            nulls: null_regex(spec)?,
            builders: (0..file_schema.fields().len()).map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
            rejected: Vec::new(),
        })
    }

    fn origin(&self, line: u64) -> String {
        format!("{}:{line}", self.file.path.display())
    }

    /// Streams the file to `emit`; returns false when the reader downstream has gone away.
    fn read(&mut self, mut emit: impl FnMut(RecordBatch) -> bool) -> Result<bool> {
        let input = files::open(&self.file.path, self.spec.compression)?;
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(byte(self.spec.delimiter, "delimiter")?)
            .quote(byte(self.spec.quote, "quote")?)
            .from_reader(input);
        let mut record = csv::ByteRecord::new();
        let width = self.file_schema.fields().len();
        let mut header_pending = self.spec.header;
        loop {
            match csv.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return Err(DataFusionError::Execution(format!("{}: {e}", self.origin(line))));
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            if header_pending {
                header_pending = false;
                self.check_header(&record, line)?;
                continue;
            }
            if std::str::from_utf8(record.as_slice()).is_err() {
                self.reject_raw(&record, line, "the record is not valid UTF-8".to_string());
                continue;
            }
            if record.len() != width {
                let reason = format!("expected {width} fields, found {}", record.len());
                self.reject_raw(&record, line, reason);
                continue;
            }
            for (i, field) in record.iter().enumerate() {
                let value = std::str::from_utf8(field).expect("the whole record is UTF-8");
                if self.nulls.is_match(value) {
                    self.builders[i].append_null();
                } else {
                    self.builders[i].append_value(value);
                }
            }
            self.lines.push(line);
            if self.lines.len() >= self.cx.batch_size {
                let batch = self.flush()?;
                if batch.num_rows() > 0 && !emit(batch) {
                    return Ok(false);
                }
            }
        }
        let batch = self.flush()?;
        Ok(batch.num_rows() == 0 || emit(batch))
    }

    fn check_header(&self, record: &csv::ByteRecord, line: u64) -> Result<()> {
        if self.spec.schema.is_none() {
            return Ok(());
        }
        let names: Vec<String> = record.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect();
        let expected: Vec<&String> = self.file_schema.fields().iter().map(|f| f.name()).collect();
        if names.len() != expected.len() || names.iter().zip(&expected).any(|(a, b)| a != *b) {
            return Err(DataFusionError::Execution(format!(
                "{}: the header [{}] does not match the declared schema [{}]",
                self.origin(line),
                names.join(", "),
                expected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    fn reject_raw(&mut self, record: &csv::ByteRecord, line: u64, reason: String) {
        let fields: Vec<serde_json::Value> =
            record.iter().map(|f| serde_json::Value::String(String::from_utf8_lossy(f).into_owned())).collect();
        self.rejected.push(NewDeadLetter {
            step: self.cx.step.clone(),
            record: serde_json::json!({ "fields": fields }),
            error: reason,
            origin: Some(self.origin(line)),
        });
    }

    /// Types the buffered rows; rows whose text does not fit a column's type are rejected with the reason.
    fn flush(&mut self) -> Result<RecordBatch> {
        let text: Vec<StringArray> = self.builders.iter_mut().map(|b| b.finish()).collect();
        let lines = std::mem::take(&mut self.lines);
        let rows = lines.len();
        let options = CastOptions { safe: true, ..Default::default() };
        let mut typed: Vec<ArrayRef> = Vec::with_capacity(text.len());
        let mut bad: Vec<Option<String>> = vec![None; rows];
        for (field, column) in self.file_schema.fields().iter().zip(&text) {
            let array = cast_with_options(column, field.data_type(), &options)?;
            if array.null_count() > column.null_count() {
                for row in 0..rows {
                    if array.is_null(row) && !column.is_null(row) && bad[row].is_none() {
                        bad[row] = Some(format!(
                            "column `{}`: `{}` is not {}",
                            field.name(),
                            column.value(row),
                            field.data_type()
                        ));
                    }
                }
            }
            typed.push(array);
        }
        if bad.iter().any(Option::is_some) {
            let keep = BooleanArray::from(bad.iter().map(Option::is_none).collect::<Vec<_>>());
            for (row, reason) in bad.iter().enumerate() {
                if let Some(reason) = reason {
                    let record: serde_json::Map<String, serde_json::Value> = self
                        .file_schema
                        .fields()
                        .iter()
                        .zip(&text)
                        .map(|(f, c)| {
                            let v = if c.is_null(row) { serde_json::Value::Null } else { c.value(row).into() };
                            (f.name().clone(), v)
                        })
                        .collect();
                    let hint = if self.spec.schema.is_none() { " (type inferred; declare `schema:` to change it)" } else { "" };
                    self.rejected.push(NewDeadLetter {
                        step: self.cx.step.clone(),
                        record: record.into(),
                        error: format!("{reason}{hint}"),
                        origin: Some(self.origin(lines[row])),
                    });
                }
            }
            typed = typed.iter().map(|a| filter(a, &keep)).collect::<Result<_, _>>()?;
        }
        let rejected = std::mem::take(&mut self.rejected);
        self.cx.reject(rejected)?;
        let kept = typed.first().map_or(0, |a| a.len());
        for (_, value) in &self.file.partitions {
            typed.push(Arc::new(StringArray::from(vec![value.as_str(); kept])));
        }
        if typed.len() < self.schema.fields().len() {
            return Err(DataFusionError::Execution(format!(
                "{}: not under the same partition directories as the first file",
                self.file.path.display()
            )));
        }
        let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(kept));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), typed, &options)?)
    }
}
