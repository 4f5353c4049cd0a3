//! PostgreSQL types and Arrow types, both ways, and their binary wire formats.
//!
//! Weir reads and writes PostgreSQL's binary format itself rather than through per-type `FromSql`/`ToSql`
//! conversions: values go straight between the wire and Arrow buffers, and `numeric` maps to `Decimal128` exactly.
//! The type list below is the documented mapping (README, "PostgreSQL types").

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use tokio_postgres::types::{FromSql, Kind, Type};

use crate::db::column_builder::ColumnBuilder;

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Scale given to `numeric` columns declared without one.
const UNCONSTRAINED_NUMERIC_SCALE: i8 = 10;

/// The Arrow type a PostgreSQL column reads as; `None` for types Weir cannot read yet.
pub fn arrow_type(ty: &Type, type_modifier: i32) -> Option<DataType> {
    Some(match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => match numeric_modifier(type_modifier) {
            Some((precision, scale)) => DataType::Decimal128(precision, scale),
            None => DataType::Decimal128(38, UNCONSTRAINED_NUMERIC_SCALE),
        },
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::JSONB | Type::UUID => {
            DataType::Utf8
        }
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::BYTEA => DataType::Binary,
        _ => match ty.kind() {
            Kind::Array(element) => DataType::List(Arc::new(Field::new("item", arrow_type(element, -1)?, true))),
            _ => return None,
        },
    })
}

/// `numeric(p, s)` from a column's type modifier.
fn numeric_modifier(type_modifier: i32) -> Option<(u8, i8)> {
    if type_modifier < 4 {
        return None;
    }
    let m = type_modifier - 4;
    let (precision, scale) = ((m >> 16) & 0xffff, m & 0xffff);
    (1..=38).contains(&precision).then_some((precision as u8, scale as i8))
}

/// The column type Weir creates for an Arrow type.
pub fn ddl_type(ty: &DataType) -> Option<String> {
    Some(match ty {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "text".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        // A list of scalars is an array of their type; other nested values are JSON.
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if !crate::db::nested::is_nested(f.data_type()) =>
        {
            format!("{}[]", ddl_type(f.data_type())?)
        }
        ty if crate::db::nested::is_nested(ty) => "jsonb".into(),
        _ => return None,
    })
}

/// A column value as PostgreSQL sent it, in binary format.
pub struct RawValue<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// How one column's binary values decode into a [`ColumnBuilder`] of the column's Arrow type. It serializes for a
/// scan sent to a cluster's executors.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Decode {
    /// A one-dimensional array, into a list of its elements' type.
    Array(Box<Decode>),
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric(i8),
    Text,
    Jsonb,
    Uuid,
    Date,
    Timestamp,
    Bytes,
}

impl Decode {
    /// The decoder for a column of PostgreSQL type `ty` read as `arrow` (from [`arrow_type`]).
    pub fn of(ty: &Type, arrow: &DataType) -> Self {
        match (ty, arrow) {
            (&Type::BOOL, _) => Self::Bool,
            (&Type::INT2, _) => Self::Int2,
            (&Type::INT4, _) => Self::Int4,
            (&Type::INT8, _) => Self::Int8,
            (&Type::FLOAT4, _) => Self::Float4,
            (&Type::FLOAT8, _) => Self::Float8,
            (&Type::NUMERIC, DataType::Decimal128(_, s)) => Self::Numeric(*s),
            (&Type::JSONB, _) => Self::Jsonb,
            (&Type::UUID, _) => Self::Uuid,
            (&Type::DATE, _) => Self::Date,
            (&Type::TIMESTAMP | &Type::TIMESTAMPTZ, _) => Self::Timestamp,
            (&Type::BYTEA, _) => Self::Bytes,
            (ty, DataType::List(element)) => match ty.kind() {
                Kind::Array(of) => Self::Array(Box::new(Self::of(of, element.data_type()))),
                _ => Self::Text,
            },
            _ => Self::Text,
        }
    }

    pub fn append(&self, raw: &[u8], out: &mut ColumnBuilder) -> Result<(), String> {
        match *self {
            Self::Array(ref element) => decode_array(raw, element, out),
            Self::Bool => out.append_i64(raw.first().map_or(0, |v| *v as i64)),
            Self::Int2 => out.append_i64(i16::from_be_bytes(fixed(raw)?) as i64),
            Self::Int4 => out.append_i64(i32::from_be_bytes(fixed(raw)?) as i64),
            Self::Int8 => out.append_i64(i64::from_be_bytes(fixed(raw)?)),
            Self::Float4 => out.append_f64(f32::from_be_bytes(fixed(raw)?) as f64),
            Self::Float8 => out.append_f64(f64::from_be_bytes(fixed(raw)?)),
            Self::Numeric(scale) => out.append_decimal(decode_numeric(raw, scale)?),
            Self::Text => out.append_bytes(raw),
            Self::Jsonb => out.append_bytes(raw.get(1..).unwrap_or_default()),
            Self::Uuid => out.append_str(&format_uuid(&fixed::<16>(raw)?)),
            Self::Date => out.append_days(i32::from_be_bytes(fixed(raw)?).saturating_add(PG_EPOCH_DAYS)),
            Self::Timestamp => out.append_micros(i64::from_be_bytes(fixed(raw)?).saturating_add(PG_EPOCH_MICROS)),
            Self::Bytes => out.append_bytes(raw),
        }
    }
}

/// PostgreSQL's binary array (dimensions, a null flag, the element type, each dimension's size and lower bound, then
/// each element as a length and its bytes, -1 for NULL) as one list value.
fn decode_array(raw: &[u8], element: &Decode, out: &mut ColumnBuilder) -> Result<(), String> {
    let int = |at: usize| {
        raw.get(at..at + 4).map(|b| i32::from_be_bytes(b.try_into().expect("four bytes"))).ok_or("truncated array")
    };
    match int(0)? {
        0 => return out.append_list(|_| Ok(0)),
        1 => {}
        n => return Err(format!("a {n}-dimensional array; Weir reads arrays of one dimension")),
    }
    let count = int(12)?.max(0) as usize;
    let mut at = 20;
    out.append_list(|values| {
        for _ in 0..count {
            let len = int(at)?;
            at += 4;
            if len < 0 {
                values.append_null();
                continue;
            }
            let bytes = raw.get(at..at + len as usize).ok_or("truncated array element")?;
            element.append(bytes, values)?;
            at += len as usize;
        }
        Ok(count)
    })
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into().map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Parses a hyphenated (or plain) hex UUID.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|c| *c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

const NUMERIC_NEG: u16 = 0x4000;

/// PostgreSQL's binary `numeric` (base-10000 digits with a weight) as an Arrow decimal of `scale`. Digits beyond
/// the scale are truncated; a value too large for 38 digits is an error.
pub fn decode_numeric(raw: &[u8], scale: i8) -> Result<i128, String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    if sign != 0 && sign != NUMERIC_NEG {
        return Err("NaN or infinity does not fit a decimal column".into());
    }
    let overflow = || format!("numeric value does not fit 38 digits at scale {scale}");
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let digit = word(4 + i)? as i128;
        let exponent = (weight - i as i32) * 4 + scale as i32;
        let term = if exponent >= 0 {
            10i128.checked_pow(exponent as u32).and_then(|p| digit.checked_mul(p)).ok_or_else(overflow)?
        } else {
            match 10i128.checked_pow((-exponent) as u32) {
                Some(p) => digit / p,
                None => 0,
            }
        };
        acc = acc.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(if sign == NUMERIC_NEG { -acc } else { acc })
}

/// An Arrow decimal (`value` × 10^-`scale`) in PostgreSQL's binary `numeric` format.
pub fn encode_numeric(value: i128, scale: i8, out: &mut Vec<u8>) {
    let (value, scale) =
        if scale < 0 { (value * 10i128.pow(scale.unsigned_abs() as u32), 0u32) } else { (value, scale as u32) };
    let negative = value < 0;
    let abs = value.unsigned_abs();
    let pow = 10u128.pow(scale);
    let (mut int, frac) = (abs / pow, abs % pow);

    let mut groups: Vec<u16> = Vec::new();
    while int > 0 {
        groups.push((int % 10_000) as u16);
        int /= 10_000;
    }
    groups.reverse();
    let mut weight = groups.len() as i32 - 1;
    let frac_groups = scale.div_ceil(4);
    let padded = frac * 10u128.pow(frac_groups * 4 - scale);
    for k in (0..frac_groups).rev() {
        groups.push(((padded / 10_000u128.pow(k)) % 10_000) as u16);
    }
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if negative { NUMERIC_NEG } else { 0 }).to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// Converts Arrow's day and microsecond counts to PostgreSQL's epoch.
pub fn pg_days(arrow_days: i32) -> i32 {
    arrow_days - PG_EPOCH_DAYS
}

pub fn pg_micros(arrow_micros: i64) -> i64 {
    arrow_micros - PG_EPOCH_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trips() {
        for (value, scale) in
            [(0i128, 2i8), (12345, 2), (-12345, 2), (1, 4), (100_000_000, 0), (123_456_789_012, 5), (-7, 1)]
        {
            let mut buf = Vec::new();
            encode_numeric(value, scale, &mut buf);
            assert_eq!(decode_numeric(&buf, scale), Ok(value), "{value} scale {scale}");
        }
        let mut buf = Vec::new();
        encode_numeric(12345, 2, &mut buf);
        assert_eq!(decode_numeric(&buf, 4), Ok(1_234_500), "rescaled on read");
    }

    #[test]
    fn numeric_modifier_decodes_precision_and_scale() {
        assert_eq!(numeric_modifier(((12 << 16) | 2) + 4), Some((12, 2)));
        assert_eq!(numeric_modifier(-1), None);
    }

    #[test]
    fn uuid_text_round_trips() {
        let text = "0190f3b2-7c1e-7a3b-9d4e-5f6a7b8c9d0e";
        assert_eq!(format_uuid(&parse_uuid(text).unwrap()), text);
    }
}
