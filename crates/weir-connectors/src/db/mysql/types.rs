//! MySQL/MariaDB column types and Arrow types, both ways, and values between the binary protocol and Arrow.
//! The type list below is the documented mapping (README, "MySQL and MariaDB types").

use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use mysql_async::Column;
use mysql_async::Value;
use mysql_async::consts::{ColumnFlags, ColumnType};

use crate::db::column_builder::ColumnBuilder;

/// The character set number MySQL gives binary strings and blobs.
const BINARY_CHARSET: u16 = 63;

/// The Arrow type a column reads as; `None` for types Weir cannot read yet.
pub fn arrow_type(column: &Column) -> Option<DataType> {
    use ColumnType::*;
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = column.character_set() == BINARY_CHARSET;
    Some(match column.column_type() {
        // MySQL's BOOLEAN is TINYINT(1).
        MYSQL_TYPE_TINY if column.column_length() == 1 && !unsigned => DataType::Boolean,
        MYSQL_TYPE_TINY => {
            if unsigned {
                DataType::Int16
            } else {
                DataType::Int8
            }
        }
        MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => {
            if unsigned {
                DataType::Int32
            } else {
                DataType::Int16
            }
        }
        MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG => {
            if unsigned {
                DataType::Int64
            } else {
                DataType::Int32
            }
        }
        MYSQL_TYPE_LONGLONG => {
            if unsigned {
                DataType::UInt64
            } else {
                DataType::Int64
            }
        }
        MYSQL_TYPE_FLOAT => DataType::Float32,
        MYSQL_TYPE_DOUBLE => DataType::Float64,
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => {
            // The display width counts the digits, a sign unless unsigned, and a point when there is a scale.
            let scale = column.decimals();
            let width = column.column_length() as i64 - i64::from(!unsigned) - i64::from(scale > 0);
            let precision = width.clamp(scale.max(1) as i64, 38) as u8;
            DataType::Decimal128(precision, scale.min(38) as i8)
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => DataType::Date32,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => DataType::Timestamp(TimeUnit::Microsecond, None),
        // TIMESTAMP values are instants; Weir's sessions use UTC, so they read as UTC.
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB => {
            if binary {
                DataType::Binary
            } else {
                DataType::Utf8
            }
        }
        MYSQL_TYPE_ENUM | MYSQL_TYPE_SET | MYSQL_TYPE_JSON | MYSQL_TYPE_NULL => DataType::Utf8,
        _ => return None,
    })
}

/// The column type Weir creates for an Arrow type. Key columns need a bounded length to be indexed.
pub fn ddl_type(ty: &DataType, is_key: bool) -> Option<String> {
    Some(match ty {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 | DataType::UInt8 => "SMALLINT".into(),
        DataType::Int32 | DataType::UInt16 => "INT".into(),
        DataType::Int64 | DataType::UInt32 => "BIGINT".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        ty if crate::db::nested::is_nested(ty) => "JSON".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            if is_key {
                "VARCHAR(255)".into()
            } else {
                "LONGTEXT".into()
            }
        }
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(..) => "DATETIME(6)".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            if is_key {
                "VARBINARY(255)".into()
            } else {
                "LONGBLOB".into()
            }
        }
        _ => return None,
    })
}

/// Appends one value of the binary protocol.
pub fn append(value: &Value, out: &mut ColumnBuilder) -> Result<(), String> {
    match value {
        Value::NULL => {
            out.append_null();
            Ok(())
        }
        Value::Int(v) => out.append_i64(*v),
        Value::UInt(v) => out.append_u64(*v),
        Value::Float(v) => out.append_f64(*v as f64),
        Value::Double(v) => out.append_f64(*v),
        Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => out.append_decimal_text(text),
            Err(_) => out.append_bytes(bytes),
        },
        Value::Date(y, m, d, h, mi, s, us) => {
            let date = NaiveDate::from_ymd_opt(*y as i32, *m as u32, *d as u32)
                .ok_or_else(|| format!("{y:04}-{m:02}-{d:02} is not a date (MySQL's zero date?)"))?;
            let time = date
                .and_hms_micro_opt(*h as u32, *mi as u32, *s as u32, *us)
                .ok_or_else(|| format!("{h:02}:{mi:02}:{s:02}.{us:06} is not a time of day"))?;
            match out.append_micros(time.and_utc().timestamp_micros()) {
                Ok(()) => Ok(()),
                Err(_) => out.append_days((date - DateTime::UNIX_EPOCH.date_naive()).num_days() as i32),
            }
        }
        Value::Time(..) => Err("TIME values cannot be read yet; cast them in the query, e.g. `CAST(t AS CHAR)`".into()),
    }
}

/// One column of a batch as values for the binary protocol; `array` already has its
/// [`crate::db::load::canonical_type`].
pub fn values(array: &ArrayRef) -> Result<Vec<Value>, String> {
    let n = array.len();
    let null = |i: usize| array.is_null(i);
    Ok(match array.data_type() {
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..n).map(|i| if null(i) { Value::NULL } else { Value::Int(a.value(i) as i64) }).collect()
        }
        DataType::Int64 => {
            let a = array.as_primitive::<Int64Type>();
            (0..n).map(|i| if null(i) { Value::NULL } else { Value::Int(a.value(i)) }).collect()
        }
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            (0..n).map(|i| if null(i) { Value::NULL } else { Value::UInt(a.value(i)) }).collect()
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            (0..n).map(|i| if null(i) { Value::NULL } else { Value::Double(a.value(i)) }).collect()
        }
        DataType::Decimal128(..) => {
            let a = array.as_primitive::<Decimal128Type>();
            (0..n)
                .map(|i| if null(i) { Value::NULL } else { Value::Bytes(a.value_as_string(i).into_bytes()) })
                .collect()
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..n).map(|i| if null(i) { Value::NULL } else { Value::Bytes(a.value(i).as_bytes().to_vec()) }).collect()
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            (0..n).map(|i| if null(i) { Value::NULL } else { Value::Bytes(a.value(i).to_vec()) }).collect()
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            (0..n)
                .map(|i| if null(i) { Ok(Value::NULL) } else { datetime(a.value(i) as i64 * 86_400_000_000) })
                .collect::<Result<_, _>>()?
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = array.as_primitive::<TimestampMicrosecondType>();
            (0..n).map(|i| if null(i) { Ok(Value::NULL) } else { datetime(a.value(i)) }).collect::<Result<_, _>>()?
        }
        other => return Err(format!("cannot send Arrow {other} to MySQL")),
    })
}

fn datetime(micros: i64) -> Result<Value, String> {
    let t = DateTime::from_timestamp_micros(micros).ok_or_else(|| format!("{micros} µs is out of range"))?.naive_utc();
    Ok(Value::Date(
        u16::try_from(t.year()).map_err(|_| format!("year {} is out of MySQL's range", t.year()))?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.and_utc().timestamp_subsec_micros(),
    ))
}

/// A variable or state value as a bound parameter.
pub fn param(value: &weir_spec::TypedValue) -> Result<Value, String> {
    use weir_spec::TypedValue as V;
    Ok(match value {
        V::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        V::Integer(i) => Value::Int(*i),
        V::Float(f) => Value::Double(*f),
        V::Boolean(b) => Value::Int(*b as i64),
        V::Date(d) => datetime(
            weir_engine::timestamp_micros(&format!("{d}T00:00:00Z")).ok_or_else(|| format!("`{d}` is not a date"))?,
        )?,
        V::Timestamp(t) => {
            datetime(weir_engine::timestamp_micros(t).ok_or_else(|| format!("`{t}` is not a timestamp"))?)?
        }
    })
}
