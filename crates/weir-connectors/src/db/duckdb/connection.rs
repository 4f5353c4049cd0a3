//! Opening DuckDB files, its errors, its types and the bridge between its arrow and Weir's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::{RecordBatch, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::DataFusionError;
use duckdb::Connection;
use duckdb::types::Value;
use tracing::info;
use weir_engine::{ResolvedConnection, StepContext, timestamp_micros};
use weir_spec::{Execute, TypedValue};

use crate::db::sql_params::{Style, bind_values, quote_ident};

/// An `execute` step: one statement with `$name` parameters; returns the rows it affected.
pub(super) async fn execute(spec: &Execute, cx: &StepContext) -> Result<u64, DataFusionError> {
    let conn = cx.connection(&spec.connection.value)?;
    let (sql, params) = bind_values(&spec.sql.value, Style::Question, cx, param)?;
    let db = open(&conn.name, &db_path(&conn, cx))?;
    let rows = tokio::task::block_in_place(|| db.execute(&sql, duckdb::params_from_iter(params.iter())))
        .map_err(|e| duckdb_error(&format!("DuckDB `{}` failed the statement", conn.name), e))?;
    info!(connection = %conn.name, rows, "Executed on `{}`: {sql}", conn.name);
    Ok(rows as u64)
}

/// The database file of a connection: `url: duckdb://data/app.duckdb` (relative to the pipeline file) or
/// `duckdb:///var/lib/app.duckdb`.
pub(super) fn db_path(conn: &ResolvedConnection, cx: &StepContext) -> PathBuf {
    crate::files::paths::database_file(conn.url.expose(), "duckdb", &cx.base_dir)
}

/// A connection to the database in `path`. DuckDB lets one process open a file once: every connection of this
/// process to the same file is a clone of the first, so reads and a load of the same run can share it.
pub(super) fn open(connection: &str, path: &Path) -> Result<Connection, DataFusionError> {
    static OPEN: LazyLock<Mutex<HashMap<PathBuf, Connection>>> = LazyLock::new(Default::default);
    let mut open = OPEN.lock().expect("DuckDB connections lock");
    let failed = |e| duckdb_error(&format!("cannot open `{connection}` ({})", path.display()), e);
    if let Some(db) = open.get(path) {
        return db.try_clone().map_err(failed);
    }
    let db = Connection::open(path).map_err(failed)?;
    let clone = db.try_clone().map_err(failed)?;
    open.insert(path.to_path_buf(), db);
    Ok(clone)
}

pub(super) fn duckdb_error(context: &str, e: duckdb::Error) -> DataFusionError {
    DataFusionError::External(format!("{context}: {e}").into())
}

/// A variable or state value as a bound parameter.
pub(super) fn param(value: &TypedValue) -> Result<Value, String> {
    Ok(match value {
        TypedValue::String(s) | TypedValue::Date(s) => Value::Text(s.clone()),
        TypedValue::Integer(i) => Value::BigInt(*i),
        TypedValue::Float(f) => Value::Double(*f),
        TypedValue::Boolean(b) => Value::Boolean(*b),
        TypedValue::Timestamp(t) => Value::Timestamp(
            duckdb::types::TimeUnit::Microsecond,
            timestamp_micros(t).ok_or_else(|| format!("`{t}` is not a timestamp"))?,
        ),
    })
}

/// The DuckDB type Weir gives a new column.
pub(super) fn ddl_type(ty: &DataType) -> Option<String> {
    Some(match ty {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", ddl_type(f.data_type())?)
        }
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| Some(format!("{} {}", quote_ident(f.name()), ddl_type(f.data_type())?)))
                .collect::<Option<Vec<_>>>()?;
            format!("STRUCT({})", fields.join(", "))
        }
        _ => return None,
    })
}

/// How a column of DuckDB's type (as `information_schema` names it) reads in Arrow.
pub(super) fn arrow_type(db_type: &str) -> Option<DataType> {
    let t = db_type.trim().to_ascii_uppercase();
    if let Some(element) = db_type.trim().strip_suffix("[]") {
        return Some(DataType::List(Arc::new(Field::new("item", arrow_type(element)?, true))));
    }
    if t.starts_with("STRUCT(") && t.ends_with(')') {
        let inner = &db_type.trim()[7..db_type.trim().len() - 1];
        let fields = top_level(inner)
            .into_iter()
            .map(|field| {
                let (name, ty) = field_name(field.trim())?;
                Some(Field::new(name, arrow_type(ty)?, true))
            })
            .collect::<Option<Vec<Field>>>()?;
        return Some(DataType::Struct(fields.into()));
    }
    if let Some(args) = t.strip_prefix("DECIMAL(") {
        let (p, s) = args.trim_end_matches(')').split_once(',')?;
        return Some(DataType::Decimal128(p.trim().parse().ok()?, s.trim().parse().ok()?));
    }
    Some(match t.as_str() {
        "BOOLEAN" => DataType::Boolean,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "UTINYINT" => DataType::UInt8,
        "USMALLINT" => DataType::UInt16,
        "UINTEGER" => DataType::UInt32,
        "UBIGINT" => DataType::UInt64,
        "FLOAT" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "VARCHAR" => DataType::Utf8,
        "BLOB" => DataType::Binary,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "TIMESTAMP WITH TIME ZONE" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

/// `text` split at the commas outside parentheses and quotes: the fields of a `STRUCT(…)`.
fn top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A struct field's name (quoted or not) and the rest, its type.
fn field_name(field: &str) -> Option<(String, &str)> {
    if let Some(rest) = field.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' if rest[i + 1..].starts_with('"') => {
                    name.push('"');
                    chars.next();
                }
                '"' => return Some((name, rest[i + 1..].trim())),
                c => name.push(c),
            }
        }
        return None;
    }
    let (name, ty) = field.split_once(' ')?;
    Some((name.to_string(), ty.trim()))
}

/// A batch of DuckDB's arrow as one of Weir's.
pub(super) fn from_duckdb(batch: duckdb::arrow::array::StructArray) -> Result<RecordBatch, DataFusionError> {
    use duckdb::arrow::array::Array;
    let (array, schema) =
        duckdb::arrow::ffi::to_ffi(&batch.to_data()).map_err(|e| DataFusionError::External(Box::new(e)))?;
    // SAFETY: `FFI_ArrowArray` and `FFI_ArrowSchema` are `#[repr(C)]` structs of the Arrow C data interface in arrow
    // 58 and 59 alike; the release callbacks move with them, so the buffers are freed once, by the importer.
    let array = unsafe { std::mem::transmute::<duckdb::arrow::ffi::FFI_ArrowArray, arrow::ffi::FFI_ArrowArray>(array) };
    // SAFETY: as above.
    let schema =
        unsafe { std::mem::transmute::<duckdb::arrow::ffi::FFI_ArrowSchema, arrow::ffi::FFI_ArrowSchema>(schema) };
    // SAFETY: both structs were just exported by arrow and describe each other.
    let data = unsafe { arrow::ffi::from_ffi(array, &schema) }?;
    Ok(RecordBatch::from(StructArray::from(data)))
}

/// A schema of Weir's as one of DuckDB's arrow.
pub(super) fn schema_to_duckdb(schema: &Schema) -> Result<duckdb::arrow::datatypes::SchemaRef, DataFusionError> {
    let exported = arrow::ffi::FFI_ArrowSchema::try_from(schema)?;
    // SAFETY: as in `from_duckdb`: the same C struct in both versions; the release callback moves with it.
    let exported =
        unsafe { std::mem::transmute::<arrow::ffi::FFI_ArrowSchema, duckdb::arrow::ffi::FFI_ArrowSchema>(exported) };
    let schema =
        duckdb::arrow::datatypes::Schema::try_from(&exported).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(Arc::new(schema))
}

/// A schema of DuckDB's arrow as one of Weir's.
pub(super) fn schema_from_duckdb(schema: &duckdb::arrow::datatypes::Schema) -> Result<SchemaRef, DataFusionError> {
    let exported =
        duckdb::arrow::ffi::FFI_ArrowSchema::try_from(schema).map_err(|e| DataFusionError::External(Box::new(e)))?;
    // SAFETY: as in `from_duckdb`.
    let exported =
        unsafe { std::mem::transmute::<duckdb::arrow::ffi::FFI_ArrowSchema, arrow::ffi::FFI_ArrowSchema>(exported) };
    Ok(Arc::new(Schema::try_from(&exported)?))
}
