//! Arrow batches in PostgreSQL's binary COPY format (`COPY ... FROM STDIN (FORMAT binary)`): the fastest way into
//! a table, with no text parsing on the server. Each batch must already hold the Arrow types
//! [`super::types::arrow_type`] gives for the destination columns.

use datafusion::arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType,
};
use tokio_postgres::types::{Kind, Type};

use super::types::{encode_numeric, parse_uuid, pg_days, pg_micros};

/// The file header: signature, flags, header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end-of-data marker.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// One destination column as the encoder writes it.
enum Column<'a> {
    Bool(&'a BooleanArray),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Numeric(&'a Decimal128Array, i8),
    Text(&'a StringArray),
    Jsonb(&'a StringArray),
    Uuid(&'a StringArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
    Bytes(&'a BinaryArray),
    /// A list into a one-dimensional array of elements of type `oid`.
    Array {
        lists: &'a ListArray,
        elements: Box<Column<'a>>,
        oid: u32,
    },
}

/// Appends every row of `batch` to `out`; `types` are the destination columns' types, in batch order. An error
/// names the row (1-based within the batch) and column.
pub fn encode(batch: &RecordBatch, types: &[Type], out: &mut Vec<u8>) -> Result<(), String> {
    let schema = batch.schema();
    let columns: Vec<Column> =
        batch.columns().iter().zip(types).map(|(array, ty)| column(ty, array.as_ref())).collect::<Result<_, _>>()?;

    let field_count = (columns.len() as i16).to_be_bytes();
    let mut scratch = Vec::new();
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&field_count);
        for (c, column) in columns.iter().enumerate() {
            write_value(column, row, out, &mut scratch)
                .map_err(|e| format!("row {}, column `{}`: {e}", row + 1, schema.field(c).name()))?;
        }
    }
    Ok(())
}

/// How `array` is written into a column of type `ty`.
fn column<'a>(ty: &Type, array: &'a dyn Array) -> Result<Column<'a>, String> {
    Ok(match (ty, array.data_type()) {
        (&Type::BOOL, DataType::Boolean) => Column::Bool(array.as_boolean()),
        (&Type::INT2, DataType::Int16) => Column::Int16(array.as_primitive::<Int16Type>()),
        (&Type::INT4, DataType::Int32) => Column::Int32(array.as_primitive::<Int32Type>()),
        (&Type::INT8, DataType::Int64) => Column::Int64(array.as_primitive::<Int64Type>()),
        (&Type::FLOAT4, DataType::Float32) => Column::Float32(array.as_primitive::<Float32Type>()),
        (&Type::FLOAT8, DataType::Float64) => Column::Float64(array.as_primitive::<Float64Type>()),
        (&Type::NUMERIC, DataType::Decimal128(_, s)) => Column::Numeric(array.as_primitive::<Decimal128Type>(), *s),
        (&Type::JSONB, DataType::Utf8) => Column::Jsonb(array.as_string::<i32>()),
        (&Type::UUID, DataType::Utf8) => Column::Uuid(array.as_string::<i32>()),
        (_, DataType::Utf8) => Column::Text(array.as_string::<i32>()),
        (&Type::DATE, DataType::Date32) => Column::Date(array.as_primitive::<Date32Type>()),
        (&Type::TIMESTAMP | &Type::TIMESTAMPTZ, DataType::Timestamp(..)) => {
            Column::Timestamp(array.as_primitive::<TimestampMicrosecondType>())
        }
        (&Type::BYTEA, DataType::Binary) => Column::Bytes(array.as_binary::<i32>()),
        (ty, DataType::List(_)) if matches!(ty.kind(), Kind::Array(_)) => {
            let Kind::Array(element) = ty.kind() else { unreachable!("matched above") };
            let lists = array.as_list::<i32>();
            Column::Array { lists, elements: Box::new(column(element, lists.values().as_ref())?), oid: element.oid() }
        }
        (ty, arrow) => return Err(format!("cannot encode Arrow {arrow} as PostgreSQL {ty}")),
    })
}

fn write_value(column: &Column, row: usize, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Result<(), String> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let is_null = match column {
        Column::Bool(a) => a.is_null(row),
        Column::Int16(a) => a.is_null(row),
        Column::Int32(a) => a.is_null(row),
        Column::Int64(a) => a.is_null(row),
        Column::Float32(a) => a.is_null(row),
        Column::Float64(a) => a.is_null(row),
        Column::Numeric(a, _) => a.is_null(row),
        Column::Text(a) | Column::Jsonb(a) | Column::Uuid(a) => a.is_null(row),
        Column::Date(a) => a.is_null(row),
        Column::Timestamp(a) => a.is_null(row),
        Column::Bytes(a) => a.is_null(row),
        Column::Array { lists, .. } => lists.is_null(row),
    };
    if is_null {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    match column {
        Column::Bool(a) => put(out, &[a.value(row) as u8]),
        Column::Int16(a) => put(out, &a.value(row).to_be_bytes()),
        Column::Int32(a) => put(out, &a.value(row).to_be_bytes()),
        Column::Int64(a) => put(out, &a.value(row).to_be_bytes()),
        Column::Float32(a) => put(out, &a.value(row).to_be_bytes()),
        Column::Float64(a) => put(out, &a.value(row).to_be_bytes()),
        Column::Numeric(a, scale) => {
            scratch.clear();
            encode_numeric(a.value(row), *scale, scratch);
            put(out, scratch);
        }
        Column::Text(a) => put(out, a.value(row).as_bytes()),
        Column::Jsonb(a) => {
            let text = a.value(row).as_bytes();
            out.extend_from_slice(&(text.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(text);
        }
        Column::Uuid(a) => {
            let text = a.value(row);
            put(out, &parse_uuid(text).ok_or_else(|| format!("`{text}` is not a UUID"))?);
        }
        Column::Date(a) => put(out, &pg_days(a.value(row)).to_be_bytes()),
        Column::Timestamp(a) => put(out, &pg_micros(a.value(row)).to_be_bytes()),
        Column::Bytes(a) => put(out, a.value(row)),
        Column::Array { lists, elements, oid } => {
            let (start, end) = (lists.value_offsets()[row] as usize, lists.value_offsets()[row + 1] as usize);
            let has_nulls = (start..end).any(|i| lists.values().is_null(i));
            let mut array = Vec::with_capacity(20 + (end - start) * 12);
            let dimensions: i32 = if end > start { 1 } else { 0 };
            for int in [dimensions, has_nulls as i32, *oid as i32] {
                array.extend_from_slice(&int.to_be_bytes());
            }
            if end > start {
                array.extend_from_slice(&((end - start) as i32).to_be_bytes());
                array.extend_from_slice(&1i32.to_be_bytes());
                for i in start..end {
                    write_value(elements, i, &mut array, scratch)?;
                }
            }
            put(out, &array);
        }
    }
    Ok(())
}
