//! One Arrow array built value by value, for sources that receive rows (database drivers). Each driver decodes
//! its own wire values and appends them with the typed method that matches; the builder checks ranges, so a value
//! that does not fit its column is an error, never a silent wrap.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, NullBufferBuilder, StringBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, FieldRef, TimeUnit};
use weir_engine::timestamp_micros;

pub enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    /// A list of `values`: where each list ends in them, and which lists are NULL.
    List {
        field: FieldRef,
        values: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl ColumnBuilder {
    /// A builder for `ty`, or `None` for a type no database source produces.
    pub fn new(ty: &DataType, capacity: usize) -> Option<Self> {
        Some(match ty {
            DataType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(capacity)),
            DataType::Int8 => Self::Int8(Int8Builder::with_capacity(capacity)),
            DataType::Int16 => Self::Int16(Int16Builder::with_capacity(capacity)),
            DataType::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            DataType::UInt64 => Self::UInt64(UInt64Builder::with_capacity(capacity)),
            DataType::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Decimal128(p, s) if *s >= 0 => {
                Self::Decimal(Decimal128Builder::with_capacity(capacity).with_precision_and_scale(*p, *s).ok()?, *s)
            }
            DataType::Utf8 => Self::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Binary => Self::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Date32 => Self::Date32(Date32Builder::with_capacity(capacity)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), tz.clone())
            }
            DataType::List(field) => Self::List {
                field: field.clone(),
                values: Box::new(Self::new(field.data_type(), capacity)?),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(capacity),
            },
            _ => return None,
        })
    }

    pub fn append_null(&mut self) {
        match self {
            Self::Boolean(b) => b.append_null(),
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::UInt64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Decimal(b, _) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
            Self::Binary(b) => b.append_null(),
            Self::Date32(b) => b.append_null(),
            Self::Timestamp(b, _) => b.append_null(),
            Self::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("offsets start with 0"));
                nulls.append_null();
            }
        }
    }

    /// A list into a list column: `fill` appends its elements to the values and says how many.
    pub fn append_list(
        &mut self,
        fill: impl FnOnce(&mut ColumnBuilder) -> Result<usize, String>,
    ) -> Result<(), String> {
        let Self::List { values, offsets, nulls, .. } = self else {
            return Err(format!("a list cannot go into a {} column", self.type_name()));
        };
        let added = i32::try_from(fill(values)?).map_err(|_| "a list of more than 2^31 values".to_string())?;
        let end =
            offsets.last().expect("offsets start with 0").checked_add(added).ok_or("lists too long for a batch")?;
        offsets.push(end);
        nulls.append_non_null();
        Ok(())
    }

    /// An integer into an integer, boolean (non-zero is true), float or decimal column.
    pub fn append_i64(&mut self, v: i64) -> Result<(), String> {
        let name = self.type_name();
        let range = || format!("{v} is out of range for {name}");
        match self {
            Self::Boolean(b) => b.append_value(v != 0),
            Self::Int8(b) => b.append_value(i8::try_from(v).map_err(|_| range())?),
            Self::Int16(b) => b.append_value(i16::try_from(v).map_err(|_| range())?),
            Self::Int32(b) => b.append_value(i32::try_from(v).map_err(|_| range())?),
            Self::Int64(b) => b.append_value(v),
            Self::UInt64(b) => b.append_value(u64::try_from(v).map_err(|_| range())?),
            Self::Float32(b) => b.append_value(v as f32),
            Self::Float64(b) => b.append_value(v as f64),
            Self::Decimal(b, s) => {
                let scaled =
                    10i128.checked_pow(*s as u32).and_then(|p| (v as i128).checked_mul(p)).ok_or_else(range)?;
                b.append_value(scaled)
            }
            _ => return Err(format!("an integer cannot go into a {} column", self.type_name())),
        }
        Ok(())
    }

    pub fn append_u64(&mut self, v: u64) -> Result<(), String> {
        match self {
            Self::UInt64(b) => {
                b.append_value(v);
                Ok(())
            }
            _ => {
                self.append_i64(i64::try_from(v).map_err(|_| format!("{v} is out of range for {}", self.type_name()))?)
            }
        }
    }

    pub fn append_f64(&mut self, v: f64) -> Result<(), String> {
        match self {
            Self::Float32(b) => b.append_value(v as f32),
            Self::Float64(b) => b.append_value(v),
            _ => return Err(format!("a float cannot go into a {} column", self.type_name())),
        }
        Ok(())
    }

    /// A decimal already at this column's scale.
    pub fn append_decimal(&mut self, unscaled: i128) -> Result<(), String> {
        match self {
            Self::Decimal(b, _) => {
                b.append_value(unscaled);
                Ok(())
            }
            _ => Err(format!("a decimal cannot go into a {} column", self.type_name())),
        }
    }

    /// A decimal sent as text (`-12.345`), into a decimal column at its scale (extra digits are cut) or a
    /// float column.
    pub fn append_decimal_text(&mut self, text: &str) -> Result<(), String> {
        let bad = || format!("`{text}` is not a decimal number");
        match self {
            Self::Decimal(b, scale) => {
                let t = text.trim();
                let (int, frac) = t.split_once('.').unwrap_or((t, ""));
                let scale = *scale as usize;
                let frac: String = frac.chars().chain(std::iter::repeat('0')).take(scale).collect();
                let digits = format!("{int}{frac}");
                b.append_value(digits.parse::<i128>().map_err(|_| bad())?);
                Ok(())
            }
            Self::Float32(_) | Self::Float64(_) => self.append_f64(text.trim().parse().map_err(|_| bad())?),
            _ => self.append_str(text),
        }
    }

    /// A date (`2024-01-15`) or timestamp (`2024-01-15 10:00:00`, RFC 3339) sent as text, into a date or
    /// timestamp column; other columns take the text as it is.
    pub fn append_temporal_text(&mut self, text: &str) -> Result<(), String> {
        let bad = |what: &str| format!("`{text}` is not {what}");
        match self {
            Self::Date32(_) => {
                let micros = timestamp_micros(&format!("{}T00:00:00Z", text.get(..10).unwrap_or(text)))
                    .ok_or_else(|| bad("a date"))?;
                self.append_days(micros.div_euclid(86_400_000_000) as i32)
            }
            Self::Timestamp(..) => self.append_micros(timestamp_micros(text.trim()).ok_or_else(|| bad("a timestamp"))?),
            _ => self.append_decimal_text(text),
        }
    }

    pub fn append_str(&mut self, v: &str) -> Result<(), String> {
        match self {
            Self::Utf8(b) => b.append_value(v),
            Self::Binary(b) => b.append_value(v.as_bytes()),
            _ => return Err(format!("text cannot go into a {} column", self.type_name())),
        }
        Ok(())
    }

    /// Bytes into a binary column, or checked UTF-8 into a text column.
    pub fn append_bytes(&mut self, v: &[u8]) -> Result<(), String> {
        match self {
            Self::Binary(b) => {
                b.append_value(v);
                Ok(())
            }
            _ => self.append_str(std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8: {e}"))?),
        }
    }

    /// Days since 1970-01-01.
    pub fn append_days(&mut self, days: i32) -> Result<(), String> {
        match self {
            Self::Date32(b) => b.append_value(days),
            Self::Timestamp(b, _) => b.append_value(days as i64 * 86_400_000_000),
            _ => return Err(format!("a date cannot go into a {} column", self.type_name())),
        }
        Ok(())
    }

    /// Microseconds since 1970-01-01 UTC.
    pub fn append_micros(&mut self, micros: i64) -> Result<(), String> {
        match self {
            Self::Timestamp(b, _) => {
                b.append_value(micros);
                Ok(())
            }
            _ => Err(format!("a timestamp cannot go into a {} column", self.type_name())),
        }
    }

    /// The array of everything appended so far; the builder starts over.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            Self::Boolean(b) => ArrayBuilder::finish(b),
            Self::Int8(b) => ArrayBuilder::finish(b),
            Self::Int16(b) => ArrayBuilder::finish(b),
            Self::Int32(b) => ArrayBuilder::finish(b),
            Self::Int64(b) => ArrayBuilder::finish(b),
            Self::UInt64(b) => ArrayBuilder::finish(b),
            Self::Float32(b) => ArrayBuilder::finish(b),
            Self::Float64(b) => ArrayBuilder::finish(b),
            Self::Decimal(b, _) => ArrayBuilder::finish(b),
            Self::Utf8(b) => ArrayBuilder::finish(b),
            Self::Binary(b) => ArrayBuilder::finish(b),
            Self::Date32(b) => ArrayBuilder::finish(b),
            Self::List { field, values, offsets, nulls } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::new(field.clone(), offsets, values.finish(), nulls.finish()))
            }
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::Boolean(_) => "boolean",
            Self::Int8(_) => "tinyint",
            Self::Int16(_) => "smallint",
            Self::Int32(_) => "integer",
            Self::Int64(_) => "bigint",
            Self::UInt64(_) => "unsigned bigint",
            Self::Float32(_) => "real",
            Self::Float64(_) => "double",
            Self::Decimal(..) => "decimal",
            Self::Utf8(_) => "text",
            Self::Binary(_) => "binary",
            Self::Date32(_) => "date",
            Self::Timestamp(..) => "timestamp",
            Self::List { .. } => "array",
        }
    }
}
