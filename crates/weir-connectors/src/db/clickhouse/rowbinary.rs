//! ClickHouse's `RowBinary` format: row after row, each column's value little-endian at its type's width,
//! strings as a LEB128 length and the bytes, `Nullable` values behind a byte that is 1 for NULL. Dates are days
//! since 1970 (UInt16), times Unix seconds (UInt32), decimals scaled integers of 4, 8 or 16 bytes by precision;
//! an array is a LEB128 count and its elements.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use super::types::{Base, ChType};
use crate::db::column_builder::ColumnBuilder;

/// The length of the whole row of `types` at the start of `buf`, or `None` when `buf` ends inside it.
pub fn row_len(buf: &[u8], types: &[ChType]) -> Option<usize> {
    let mut pos = 0;
    for ty in types {
        let count = match ty.array {
            true => {
                let (count, used) = varint(buf.get(pos..)?)?;
                pos += used;
                count
            }
            false => 1,
        };
        for _ in 0..count {
            value_len(buf, &ty.element(), &mut pos)?;
        }
    }
    Some(pos)
}

/// Moves `pos` past the scalar value of `ty` there, or `None` when `buf` ends inside it.
fn value_len(buf: &[u8], ty: &ChType, pos: &mut usize) -> Option<()> {
    if ty.nullable {
        let null = *buf.get(*pos)? == 1;
        *pos += 1;
        if null {
            return Some(());
        }
    }
    *pos += match ty.base {
        Base::String => {
            let (len, used) = varint(buf.get(*pos..)?)?;
            used + usize::try_from(len).ok()?
        }
        base => fixed_width(base),
    };
    (*pos <= buf.len()).then_some(())
}

fn fixed_width(base: Base) -> usize {
    match base {
        Base::Int { bytes, .. } => bytes as usize,
        Base::Float32 | Base::DateTime => 4,
        Base::Float64 => 8,
        Base::Decimal { precision, .. } => decimal_width(precision),
        Base::FixedString(n) => n,
        Base::Date => 2,
        Base::String => unreachable!("strings have no fixed width"),
    }
}

fn decimal_width(precision: u8) -> usize {
    match precision {
        0..=9 => 4,
        10..=18 => 8,
        _ => 16,
    }
}

/// A LEB128 number and the bytes it took.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends the value of `ty` at `buf[*pos..]` to `out` and moves `pos` past it; the row is whole ([`row_len`]).
pub fn read_value(ty: &ChType, buf: &[u8], pos: &mut usize, out: &mut ColumnBuilder) -> Result<(), String> {
    if ty.array {
        let (count, used) = varint(&buf[*pos..]).expect("row_len checked the row");
        *pos += used;
        let element = ty.element();
        return out.append_list(|values| {
            for _ in 0..count {
                read_value(&element, buf, pos, values)?;
            }
            Ok(count as usize)
        });
    }
    if ty.nullable {
        *pos += 1;
        if buf[*pos - 1] == 1 {
            out.append_null();
            return Ok(());
        }
    }
    let width = match ty.base {
        Base::String => {
            let (len, used) = varint(&buf[*pos..]).expect("row_len checked the row");
            *pos += used;
            len as usize
        }
        base => fixed_width(base),
    };
    let bytes = &buf[*pos..*pos + width];
    *pos += width;
    let le = |n: usize| -> [u8; 16] {
        let mut wide = [0u8; 16];
        wide[..n].copy_from_slice(&bytes[..n]);
        wide
    };
    let signed = |n: usize| -> i128 {
        let shift = 128 - 8 * n as u32;
        (i128::from_le_bytes(le(n)) << shift) >> shift
    };
    match ty.base {
        Base::Int { bytes: 8, signed: false } => {
            out.append_u64(u64::from_le_bytes(le(8)[..8].try_into().expect("8 bytes")))
        }
        Base::Int { bytes: n, signed: true } => out.append_i64(signed(n as usize) as i64),
        Base::Int { bytes: n, signed: false } => out.append_i64(i128::from_le_bytes(le(n as usize)) as i64),
        Base::Float32 => out.append_f64(f64::from(f32::from_le_bytes(bytes.try_into().expect("4 bytes")))),
        Base::Float64 => out.append_f64(f64::from_le_bytes(bytes.try_into().expect("8 bytes"))),
        Base::Decimal { .. } => out.append_decimal(signed(width)),
        Base::String => out.append_str(std::str::from_utf8(bytes).map_err(|_| not_text())?),
        Base::FixedString(_) => {
            let text = std::str::from_utf8(bytes).map_err(|_| not_text())?;
            out.append_str(text.trim_end_matches('\0'))
        }
        Base::Date => out.append_days(i32::from(u16::from_le_bytes(le(2)[..2].try_into().expect("2 bytes")))),
        Base::DateTime => {
            out.append_micros(i64::from(u32::from_le_bytes(le(4)[..4].try_into().expect("4 bytes"))) * 1_000_000)
        }
    }
}

fn not_text() -> String {
    "the bytes are not UTF-8 text; select `hex(column)` or `base64Encode(column)` in the step's query".into()
}

/// A batch's columns as RowBinary rows of `types`, each followed, when `numbered`, by its UInt64 row number in the
/// load. `before` rows of the load came before the batch; errors name the row by that count and the column by
/// `names`.
pub fn encode(
    batch: &RecordBatch,
    types: &[ChType],
    names: &[&str],
    before: u64,
    numbered: bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let columns = batch
        .columns()
        .iter()
        .zip(types)
        .zip(names)
        .map(|((array, ty), name)| Wire::of(array, ty).map_err(|e| format!("column `{name}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for row in 0..batch.num_rows() {
        for ((column, ty), name) in columns.iter().zip(types).zip(names) {
            if ty.array {
                column
                    .write(row, ty, out)
                    .map_err(|e| format!("row {}, column `{name}`: {e}", before + row as u64 + 1))?;
                continue;
            }
            let null = column.array().is_null(row);
            if ty.nullable {
                out.push(u8::from(null));
            } else if null {
                return Err(format!(
                    "row {}, column `{name}`: NULL, and the ClickHouse column is not Nullable",
                    before + row as u64 + 1
                ));
            }
            if !null {
                column
                    .write(row, ty, out)
                    .map_err(|e| format!("row {}, column `{name}`: {e}", before + row as u64 + 1))?;
            }
        }
        if numbered {
            out.extend_from_slice(&(before + row as u64).to_le_bytes());
        }
    }
    Ok(())
}

/// A column cast to the Arrow type of its wire values.
enum Wire {
    Cast(ArrayRef),
    /// Bytes for a String column, sent as they are.
    Bytes(ArrayRef),
}

impl Wire {
    fn of(array: &ArrayRef, ty: &ChType) -> Result<Self, String> {
        let options = CastOptions { safe: false, ..Default::default() };
        let cast = |to: &DataType| cast_with_options(array, to, &options).map_err(|e| e.to_string());
        let is_bytes = matches!(array.data_type(), DataType::Binary | DataType::LargeBinary | DataType::BinaryView);
        if is_bytes && matches!(ty.base, Base::String | Base::FixedString(_)) {
            return Ok(Self::Bytes(cast(&DataType::Binary)?));
        }
        // An instant keeps its time zone through the cast: casting it away would shift it to that zone's wall clock.
        if let (Base::DateTime, DataType::Timestamp(_, Some(tz))) = (ty.base, array.data_type()) {
            return Ok(Self::Cast(cast(&DataType::Timestamp(TimeUnit::Microsecond, Some(tz.clone())))?));
        }
        Ok(Self::Cast(cast(&ty.wire_arrow())?))
    }

    fn array(&self) -> &ArrayRef {
        match self {
            Self::Cast(a) | Self::Bytes(a) => a,
        }
    }

    fn write(&self, row: usize, ty: &ChType, out: &mut Vec<u8>) -> Result<(), String> {
        let a = match self {
            Self::Bytes(a) => return write_bytes(a.as_binary::<i32>().value(row), ty, out),
            Self::Cast(a) => a,
        };
        if ty.array {
            // A NULL list is the empty array: ClickHouse arrays cannot be NULL.
            if a.is_null(row) {
                put_varint(0, out);
                return Ok(());
            }
            let lists = a.as_list::<i32>();
            let (start, end) = (lists.value_offsets()[row] as usize, lists.value_offsets()[row + 1] as usize);
            let (values, element) = (Self::Cast(lists.values().clone()), ty.element());
            put_varint((end - start) as u64, out);
            for i in start..end {
                let null = values.array().is_null(i);
                match (element.nullable, null) {
                    (true, _) => out.push(u8::from(null)),
                    (false, true) => return Err("a NULL element, and the array's elements are not Nullable".into()),
                    (false, false) => {}
                }
                if !null {
                    values.write(i, &element, out)?;
                }
            }
            return Ok(());
        }
        match ty.base {
            Base::Int { bytes: 1, signed: true } => {
                out.extend_from_slice(&a.as_primitive::<Int8Type>().value(row).to_le_bytes())
            }
            Base::Int { bytes: 2, signed: true } => {
                out.extend_from_slice(&a.as_primitive::<Int16Type>().value(row).to_le_bytes())
            }
            Base::Int { bytes: 4, signed: true } => {
                out.extend_from_slice(&a.as_primitive::<Int32Type>().value(row).to_le_bytes())
            }
            Base::Int { bytes: 8, signed: true } => {
                out.extend_from_slice(&a.as_primitive::<Int64Type>().value(row).to_le_bytes())
            }
            Base::Int { bytes: 1, .. } => out.push(a.as_primitive::<UInt8Type>().value(row)),
            Base::Int { bytes: 2, .. } => {
                out.extend_from_slice(&a.as_primitive::<UInt16Type>().value(row).to_le_bytes())
            }
            Base::Int { bytes: 4, .. } => {
                out.extend_from_slice(&a.as_primitive::<UInt32Type>().value(row).to_le_bytes())
            }
            Base::Int { .. } => out.extend_from_slice(&a.as_primitive::<UInt64Type>().value(row).to_le_bytes()),
            Base::Float32 => out.extend_from_slice(&a.as_primitive::<Float32Type>().value(row).to_le_bytes()),
            Base::Float64 => out.extend_from_slice(&a.as_primitive::<Float64Type>().value(row).to_le_bytes()),
            Base::Decimal { precision, .. } => {
                let width = decimal_width(precision);
                out.extend_from_slice(&a.as_primitive::<Decimal128Type>().value(row).to_le_bytes()[..width]);
            }
            Base::String | Base::FixedString(_) => {
                return write_bytes(a.as_string::<i32>().value(row).as_bytes(), ty, out);
            }
            Base::Date => {
                let days = a.as_primitive::<Date32Type>().value(row);
                let days = u16::try_from(days)
                    .map_err(|_| format!("day {days} is outside ClickHouse's Date (1970-01-01 to 2149-06-06)"))?;
                out.extend_from_slice(&days.to_le_bytes());
            }
            Base::DateTime => {
                let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
                if micros % 1_000_000 != 0 {
                    return Err("has a fraction of a second, which ClickHouse's DateTime cannot hold; \
                                round it in a sql step (`date_trunc('second', column)`)"
                        .into());
                }
                let seconds = u32::try_from(micros / 1_000_000)
                    .map_err(|_| "is outside ClickHouse's DateTime (1970-01-01 to 2106-02-07)".to_string())?;
                out.extend_from_slice(&seconds.to_le_bytes());
            }
        }
        Ok(())
    }
}

fn write_bytes(bytes: &[u8], ty: &ChType, out: &mut Vec<u8>) -> Result<(), String> {
    match ty.base {
        Base::FixedString(n) => {
            if bytes.len() > n {
                return Err(format!("{} bytes do not fit FixedString({n})", bytes.len()));
            }
            out.extend_from_slice(bytes);
            out.resize(out.len() + n - bytes.len(), 0);
        }
        _ => {
            put_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

/// `n` as LEB128.
fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn ty(name: &str) -> ChType {
        ChType::parse(name).unwrap()
    }

    #[test]
    fn rows_round_trip_through_the_decoder() {
        let types = [ty("Int64"), ty("Nullable(String)"), ty("Decimal(12, 2)"), ty("DateTime")];
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]);
        let long = "é".repeat(100);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![-1, 2])),
                Arc::new(StringArray::from(vec![Some(long.as_str()), None])),
                Arc::new(Decimal128Array::from(vec![1234, -5]).with_precision_and_scale(12, 2).unwrap()),
                Arc::new(TimestampMicrosecondArray::from(vec![1_704_164_645_000_000, 0])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        encode(&batch, &types, &["id", "name", "amount", "at"], 0, false, &mut out).unwrap();
        let first = row_len(&out, &types).unwrap();
        assert_eq!(first, 8 + 1 + 2 + 200 + 8 + 4);
        assert_eq!(row_len(&out[..first - 1], &types), None);
        let mut builders: Vec<ColumnBuilder> =
            types.iter().map(|t| ColumnBuilder::new(&t.arrow(), 2).unwrap()).collect();
        let mut pos = 0;
        for _ in 0..2 {
            for (t, b) in types.iter().zip(&mut builders) {
                read_value(t, &out, &mut pos, b).unwrap();
            }
        }
        assert_eq!(pos, out.len());
        let names = builders[1].finish();
        assert_eq!(names.as_string::<i32>().value(0), long);
        assert!(names.is_null(1));
        assert_eq!(builders[0].finish().as_primitive::<Int64Type>().value(0), -1);
        assert_eq!(builders[2].finish().as_primitive::<Decimal128Type>().value(1), -5);
    }

    #[test]
    fn values_that_do_not_fit_fail_naming_row_and_column() {
        let schema = Schema::new(vec![Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true)]);
        let batch =
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(TimestampMicrosecondArray::from(vec![0, 1_500_000]))])
                .unwrap();
        let err = encode(&batch, &[ty("DateTime")], &["at"], 0, false, &mut Vec::new()).unwrap_err();
        assert!(err.starts_with("row 2, column `at`: has a fraction of a second"), "{err}");
        // In a later batch of the same load, the row is counted from the load's start.
        let err = encode(&batch, &[ty("DateTime")], &["at"], 8192, true, &mut Vec::new()).unwrap_err();
        assert!(err.starts_with("row 8194, column `at`"), "{err}");
        let err = encode(&batch, &[ty("Int8")], &["at"], 0, false, &mut Vec::new()).unwrap_err();
        assert!(err.contains("column `at`"), "{err}");
    }
}
