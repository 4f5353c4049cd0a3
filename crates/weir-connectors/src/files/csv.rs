//! `read_csv`: Weir's own streaming CSV reader rather than DataFusion's, because a bad record must name its file
//! and line and be routable to the dead-letter store while the good ones go on. Records are split by the `csv`
//! crate; typing is vectorized: every column is read as text and cast with Arrow's kernels, and the rows a cast
//! rejects are the invalid ones. The `csv` crate does not say which fields were quoted, and a quoted `""` is the
//! empty string where an unquoted empty field is NULL: the bytes read are kept until their record is done, and a
//! record with a value that reads as NULL is looked at again to tell (see [`quoted_fields`]).

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

use crate::db::types::declared_schema;
use crate::files::paths::{self, InputFile};
use crate::object_store::download as arriving;
use crate::object_store::remote::{self, Arrival};

/// The table of a `read_csv` step.
pub async fn table(session: &SessionContext, spec: &ReadCsv, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let rendered = cx.path(&spec.path)?;
    let path = remote::localize(rendered.clone(), spec.connection.as_ref(), cx, Arrival::Streamed).await?;
    let inputs = paths::list(&path, spec.hive_partitioning)?;
    info!(step = %cx.step, files = inputs.len(), "Starting extract from {path}");
    let file_schema = match declared_schema(spec.schema.as_ref())? {
        Some(schema) => schema,
        None => {
            // A download is named by its URL, not by its scratch copy.
            let first = inputs[0].path.display().to_string();
            infer(&inputs[0].path, if remote::is_remote(&rendered) { &rendered } else { &first }, spec)?
        }
    };
    let mut fields: Vec<Field> = file_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(inputs[0].partitions.iter().map(|(k, _)| Field::new(k, DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(fields));

    let units = work_units(&inputs, spec)?;
    let groups = session.copied_config().target_partitions().clamp(1, units.len());
    let mut partitions: Vec<Arc<dyn PartitionStream>> = Vec::with_capacity(groups);
    for g in 0..groups {
        let units: Vec<WorkUnit> = units.iter().skip(g).step_by(groups).cloned().collect();
        partitions.push(Arc::new(CsvPartition {
            units,
            schema: schema.clone(),
            file_schema: file_schema.clone(),
            spec: Arc::new(spec.clone()),
            cx: cx.clone(),
        }));
    }
    Ok(Arc::new(StreamingTable::try_new(schema, partitions)?))
}

/// Large files are split into chunks of this size, read in parallel. `WEIR_CSV_CHUNK_BYTES` overrides it (for
/// tuning, and for tests that need chunk boundaries in small files).
fn chunk_bytes() -> u64 {
    std::env::var("WEIR_CSV_CHUNK_BYTES").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(32 << 20)
}

/// A file, or the lines that start within a byte range of it.
#[derive(Debug, Clone)]
struct WorkUnit {
    file: InputFile,
    range: Option<(u64, u64)>,
}

/// Splits large uncompressed files into chunks whose boundaries are found at read time (a chunk owns the lines that
/// start inside it), unless quoted values may hold line breaks.
fn work_units(inputs: &[InputFile], spec: &ReadCsv) -> Result<Vec<WorkUnit>> {
    let chunk = chunk_bytes();
    let mut units = Vec::new();
    for file in inputs {
        let size = arriving::size(&file.path)?;
        let plain = paths::compression_of(&file.path, spec.compression) == weir_spec::Compression::None;
        if !plain || spec.newlines_in_values || size < 2 * chunk {
            units.push(WorkUnit { file: file.clone(), range: None });
            continue;
        }
        let mut start = 0;
        while start < size {
            let end = (start + chunk).min(size);
            units.push(WorkUnit { file: file.clone(), range: Some((start, end)) });
            start = end;
        }
    }
    Ok(units)
}

fn null_regex(spec: &ReadCsv) -> Result<regex::Regex> {
    let alternatives: Vec<String> = spec.null_values.iter().map(|v| regex::escape(v)).collect();
    regex::Regex::new(&format!("^(?:{})$", alternatives.join("|"))).map_err(|e| DataFusionError::Plan(e.to_string()))
}

/// The columns of the file at `path`, which messages call `name`.
fn infer(path: &Path, name: &str, spec: &ReadCsv) -> Result<SchemaRef> {
    let format = Format::default()
        .with_header(spec.header)
        .with_delimiter(byte(spec.delimiter, "delimiter")?)
        .with_quote(byte(spec.quote, "quote")?)
        .with_null_regex(null_regex(spec)?);
    let reader = paths::open(path, spec.compression)?;
    let (schema, _) = format
        .infer_schema(reader, Some(spec.infer_rows))
        .map_err(|e| DataFusionError::Plan(format!("cannot infer the columns of {name}: {e}")))?;
    Ok(Arc::new(schema))
}

/// Line breaks in the first `bytes` of a file.
fn count_lines(path: &Path, bytes: u64) -> std::io::Result<u64> {
    use std::io::Read;
    let mut reader = arriving::open(path)?.take(bytes);
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// The bytes a reader has read and not yet forgotten, and the offset in the input of the first of them.
#[derive(Default, Clone)]
struct Raw(std::rc::Rc<std::cell::RefCell<(u64, Vec<u8>)>>);

impl Raw {
    /// Lets go of the bytes before `offset`: the records there are done. They are dropped once they are most of
    /// what is kept, so that each byte is moved about once.
    fn forget_before(&self, offset: u64) {
        let mut raw = self.0.borrow_mut();
        let (base, bytes) = &mut *raw;
        let done = (offset.saturating_sub(*base) as usize).min(bytes.len());
        if done > bytes.len() / 2 {
            bytes.drain(..done);
            *base += done as u64;
        }
    }

    /// Calls `f` with the bytes from `offset` on (the record there and what was read after it).
    fn with_record<T>(&self, offset: u64, f: impl FnOnce(&[u8]) -> T) -> T {
        let raw = self.0.borrow();
        let start = (offset.saturating_sub(raw.0) as usize).min(raw.1.len());
        f(&raw.1[start..])
    }
}

/// An input that keeps a copy of what is read from it in [`Raw`].
struct Tee<R> {
    input: R,
    raw: Raw,
}

impl<R: std::io::Read> std::io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.raw.0.borrow_mut().1.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Which of the first `fields` fields of the record at the start of `bytes` are quoted.
fn quoted_fields(bytes: &[u8], delimiter: u8, quote: u8, fields: usize) -> Vec<bool> {
    let mut quoted = Vec::with_capacity(fields);
    let mut at = 0;
    while quoted.len() < fields && at <= bytes.len() {
        let is_quoted = bytes.get(at) == Some(&quote);
        quoted.push(is_quoted);
        if is_quoted {
            // To the closing quote: a doubled quote is one quote of the value.
            at += 1;
            while at < bytes.len() {
                if bytes[at] == quote {
                    if bytes.get(at + 1) == Some(&quote) {
                        at += 2;
                        continue;
                    }
                    break;
                }
                at += 1;
            }
        }
        while at < bytes.len() && bytes[at] != delimiter && bytes[at] != b'\n' && bytes[at] != b'\r' {
            at += 1;
        }
        if bytes.get(at) != Some(&delimiter) {
            break;
        }
        at += 1;
    }
    quoted
}

fn byte(c: char, what: &str) -> Result<u8> {
    u8::try_from(c)
        .map_err(|_| DataFusionError::Plan(format!("the CSV {what} must be a single-byte character, not `{c}`")))
}

#[derive(Debug)]
struct CsvPartition {
    units: Vec<WorkUnit>,
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
        let (units, schema, file_schema, spec, cx) =
            (self.units.clone(), self.schema.clone(), self.file_schema.clone(), self.spec.clone(), self.cx.clone());
        builder.spawn_blocking(move || {
            for unit in &units {
                let mut reader = FileReader::new(unit, &schema, &file_schema, &spec, &cx)?;
                if !reader.read(|batch| tx.blocking_send(Ok(batch)).is_ok())? {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// Reads one file, or one chunk of it, into batches.
struct FileReader<'a> {
    file: &'a InputFile,
    range: Option<(u64, u64)>,
    /// Where the CSV reader started in the file, and how many lines come before it (counted only when an error
    /// needs a line number).
    base: u64,
    lines_before: std::cell::OnceCell<u64>,
    schema: &'a SchemaRef,
    file_schema: &'a SchemaRef,
    spec: &'a ReadCsv,
    cx: &'a StepContext,
    builders: Vec<StringBuilder>,
    lines: Vec<u64>,
    rejected: Vec<NewDeadLetter>,
}

impl<'a> FileReader<'a> {
    fn new(
        unit: &'a WorkUnit,
        schema: &'a SchemaRef,
        file_schema: &'a SchemaRef,
        spec: &'a ReadCsv,
        cx: &'a StepContext,
    ) -> Result<Self> {
        Ok(Self {
            file: &unit.file,
            range: unit.range,
            base: 0,
            lines_before: std::cell::OnceCell::new(),
            schema,
            file_schema,
            spec,
            cx,
            builders: (0..file_schema.fields().len()).map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
            rejected: Vec::new(),
        })
    }

    /// `file:line` of a line number counted from where this reader started.
    fn origin(&self, line: u64) -> String {
        let before = *self.lines_before.get_or_init(|| count_lines(&self.file.path, self.base).unwrap_or(0));
        format!("{}:{}", self.file.path.display(), before + line)
    }

    /// Opens the input positioned at the first line this reader owns.
    fn open(&mut self) -> Result<Box<dyn std::io::Read + Send>> {
        let Some((start, _)) = self.range.filter(|(start, _)| *start > 0) else {
            return paths::open(&self.file.path, self.spec.compression);
        };
        use std::io::{BufRead, Seek};
        let mut file = std::io::BufReader::with_capacity(1 << 20, arriving::open(&self.file.path)?);
        file.seek(std::io::SeekFrom::Start(start - 1))?;
        let mut partial = Vec::new();
        let skipped = file.read_until(b'\n', &mut partial)? as u64;
        self.base = start - 1 + skipped;
        Ok(Box::new(file))
    }

    /// Streams the file to `emit`; returns false when the reader downstream has gone away.
    fn read(&mut self, mut emit: impl FnMut(RecordBatch) -> bool) -> Result<bool> {
        let raw = Raw::default();
        let input = Tee { input: self.open()?, raw: raw.clone() };
        let end = self.range.map(|(_, end)| end);
        let (delimiter, quote) = (byte(self.spec.delimiter, "delimiter")?, byte(self.spec.quote, "quote")?);
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .quote(quote)
            .from_reader(input);
        let mut record = csv::ByteRecord::new();
        let width = self.file_schema.fields().len();
        let mut header_pending = self.spec.header && self.base == 0;
        loop {
            match csv.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return Err(DataFusionError::Execution(format!("{}: {e}", self.origin(line))));
                }
            }
            let position = record.position().expect("records read from a reader have a position").clone();
            if end.is_some_and(|end| self.base + position.byte() >= end) {
                break;
            }
            let line = position.line();
            if header_pending {
                header_pending = false;
                self.check_header(&record, line)?;
                continue;
            }
            if record.len() != width {
                let reason = format!("expected {width} fields, found {}", record.len());
                self.reject_raw(&record, line, reason);
                continue;
            }
            // Validates the UTF-8 of the whole record once, reusing its buffer.
            let text = match csv::StringRecord::from_byte_record(std::mem::take(&mut record)) {
                Ok(text) => text,
                Err(e) => {
                    record = e.into_byte_record();
                    self.reject_raw(&record, line, "the record is not valid UTF-8".to_string());
                    continue;
                }
            };
            raw.forget_before(position.byte());
            let is_null = |value: &str| self.spec.null_values.iter().any(|n| n == value);
            let quoted = if self.spec.quoted_nulls || !text.iter().any(is_null) {
                Vec::new()
            } else {
                raw.with_record(position.byte(), |bytes| quoted_fields(bytes, delimiter, quote, text.len()))
            };
            for (i, value) in text.iter().enumerate() {
                if is_null(value) && !quoted.get(i).copied().unwrap_or(false) {
                    self.builders[i].append_null();
                } else {
                    self.builders[i].append_value(value);
                }
            }
            record = text.into_byte_record();
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
                for (row, reason) in bad.iter_mut().enumerate() {
                    if array.is_null(row) && !column.is_null(row) && reason.is_none() {
                        *reason = Some(format!(
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
                    let hint = if self.spec.schema.is_none() {
                        " (type inferred; declare `schema:` to change it)"
                    } else {
                        ""
                    };
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
        paths::with_partitions(self.schema, typed, kept, self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::quoted_fields;

    #[test]
    fn quoted_fields_are_told_from_unquoted_ones() {
        let fields = |line: &str, n| quoted_fields(line.as_bytes(), b',', b'"', n);
        assert_eq!(fields("1,\"\",,\"a\"\"b,\r\nc\"\n2,x\n", 4), [false, true, false, true]);
        assert_eq!(fields("\"\"\r\n", 1), [true]);
        assert_eq!(fields(",", 2), [false, false]);
    }
}
