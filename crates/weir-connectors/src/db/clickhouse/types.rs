//! ClickHouse's column types as Weir reads, writes and creates them.
//!
//! | ClickHouse                     | Arrow (read)                  | created for Arrow                       |
//! |--------------------------------|-------------------------------|-----------------------------------------|
//! | Int8 … Int64, UInt64           | the same                      | Int8 … Int64, UInt8 … UInt64; Boolean → Int8 |
//! | UInt8, UInt16, UInt32          | Int16, Int32, Int64 (widened) |                                         |
//! | Float32, Float64               | the same                      | Float16/32 → Float32, Float64           |
//! | Decimal(P, S), DecimalN(S)     | Decimal128(P, S)              | Decimal128(P, S)                        |
//! | String, FixedString(N)         | Utf8                          | Utf8, Binary                            |
//! | Date                           | Date32                        | Date32, Date64                          |
//! | DateTime, DateTime('tz')       | Timestamp(µs, UTC)            | Timestamp (whole seconds only)          |
//! | Nullable(T), LowCardinality(T) | T, nullable                   | Nullable(T) for nullable non-key columns |
//! | Array(T) of the above          | List(T)                       | lists of scalars (a NULL list: `[]`)    |
//! | (structs, maps: as JSON)       |                               | String holding the JSON                 |
//!
//! Other types (Enum, UUID, Tuple, nested arrays, …) are refused with a hint to cast them in the step's query.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

/// A column type Weir reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChType {
    pub base: Base,
    /// Whether the values (an array's elements, for an array) may be NULL.
    pub nullable: bool,
    /// An `Array` of values of `base`; ClickHouse arrays themselves are never NULL.
    pub array: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Int { bytes: u8, signed: bool },
    Float32,
    Float64,
    Decimal { precision: u8, scale: i8 },
    String,
    FixedString(usize),
    Date,
    DateTime,
}

impl ChType {
    /// The type ClickHouse names `name` (`Nullable(Decimal(12, 2))`), or `None` for one Weir does not handle.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        if let Some(inner) = unwrap(name, "Array") {
            let element = Self::parse(inner).filter(|e| !e.array)?;
            return Some(Self { array: true, ..element });
        }
        if let Some(inner) = unwrap(name, "Nullable") {
            return Some(Self { nullable: true, ..Self::parse(inner)? });
        }
        if let Some(inner) = unwrap(name, "LowCardinality") {
            return Self::parse(inner);
        }
        let int = |bytes, signed| Base::Int { bytes, signed };
        let base = match name {
            "Int8" => int(1, true),
            "Int16" => int(2, true),
            "Int32" => int(4, true),
            "Int64" => int(8, true),
            "UInt8" => int(1, false),
            "UInt16" => int(2, false),
            "UInt32" => int(4, false),
            "UInt64" => int(8, false),
            "Float32" => Base::Float32,
            "Float64" => Base::Float64,
            "String" => Base::String,
            "Date" => Base::Date,
            "DateTime" => Base::DateTime,
            _ if unwrap(name, "DateTime").is_some() => Base::DateTime,
            _ => {
                if let Some(n) = unwrap(name, "FixedString") {
                    Base::FixedString(n.trim().parse().ok()?)
                } else if let Some(args) = unwrap(name, "Decimal") {
                    let (p, s) = args.split_once(',')?;
                    Base::Decimal { precision: p.trim().parse().ok()?, scale: s.trim().parse().ok()? }
                } else {
                    let (precision, scale) = [("Decimal32", 9), ("Decimal64", 18), ("Decimal128", 38)]
                        .iter()
                        .find_map(|(family, p)| unwrap(name, family).map(|s| (*p, s)))?;
                    Base::Decimal { precision, scale: scale.trim().parse().ok()? }
                }
            }
        };
        Some(Self { base, nullable: false, array: false })
    }

    /// An array's element type; a scalar's own.
    pub fn element(&self) -> Self {
        Self { array: false, ..*self }
    }

    /// `element` as a list of it, for an array.
    fn listed(&self, element: DataType) -> DataType {
        match self.array {
            true => DataType::List(Arc::new(Field::new("item", element, self.nullable))),
            false => element,
        }
    }

    /// How values of this type read in Arrow. Unsigned types narrower than 64 bits widen to the next signed type.
    pub fn arrow(&self) -> DataType {
        self.listed(self.element_arrow())
    }

    fn element_arrow(&self) -> DataType {
        match self.base {
            Base::Int { bytes: 1, signed: true } => DataType::Int8,
            Base::Int { bytes: 1, signed: false } | Base::Int { bytes: 2, signed: true } => DataType::Int16,
            Base::Int { bytes: 2, signed: false } | Base::Int { bytes: 4, signed: true } => DataType::Int32,
            Base::Int { bytes: 8, signed: false } => DataType::UInt64,
            Base::Int { .. } => DataType::Int64,
            Base::Float32 => DataType::Float32,
            Base::Float64 => DataType::Float64,
            Base::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            Base::String | Base::FixedString(_) => DataType::Utf8,
            Base::Date => DataType::Date32,
            Base::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The Arrow type a column is cast to before its values are encoded: the exact width of the wire value, so an
    /// out-of-range value fails the cast instead of wrapping.
    pub fn wire_arrow(&self) -> DataType {
        self.listed(self.element_wire_arrow())
    }

    fn element_wire_arrow(&self) -> DataType {
        match self.base {
            Base::Int { bytes: 1, signed: true } => DataType::Int8,
            Base::Int { bytes: 2, signed: true } => DataType::Int16,
            Base::Int { bytes: 4, signed: true } => DataType::Int32,
            Base::Int { bytes: 8, signed: true } => DataType::Int64,
            Base::Int { bytes: 1, .. } => DataType::UInt8,
            Base::Int { bytes: 2, .. } => DataType::UInt16,
            Base::Int { bytes: 4, .. } => DataType::UInt32,
            Base::Int { .. } => DataType::UInt64,
            Base::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            _ => self.element_arrow(),
        }
    }
}

/// `inner` of `family(inner)`.
fn unwrap<'a>(name: &'a str, family: &str) -> Option<&'a str> {
    name.strip_prefix(family)?.strip_prefix('(')?.strip_suffix(')')
}

/// The ClickHouse type Weir gives a new column of Arrow type `ty`, `Nullable` unless `not_null`.
pub fn ddl_type(ty: &DataType, not_null: bool) -> Option<String> {
    if let DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) = ty
        && !crate::db::nested::is_nested(f.data_type())
    {
        // Arrays cannot be Nullable in ClickHouse; their elements can.
        return Some(format!("Array({})", ddl_type(f.data_type(), !f.is_nullable())?));
    }
    let base = match ty {
        DataType::Boolean | DataType::Int8 => "Int8".to_string(),
        DataType::Int16 => "Int16".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::UInt8 => "UInt8".into(),
        DataType::UInt16 => "UInt16".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Float16 | DataType::Float32 => "Float32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Decimal128(p, s) if *s >= 0 => format!("Decimal({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "String".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "String".into(),
        // Structs, maps and lists of them as JSON text.
        ty if crate::db::nested::is_nested(ty) => "String".into(),
        DataType::Date32 | DataType::Date64 => "Date".into(),
        DataType::Timestamp(..) => "DateTime".into(),
        _ => return None,
    };
    Some(if not_null { base } else { format!("Nullable({base})") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrapped_and_parameterized_types() {
        let t = ChType::parse("Nullable(Decimal(12, 2))").unwrap();
        assert!(t.nullable);
        assert_eq!(t.arrow(), DataType::Decimal128(12, 2));
        assert_eq!(ChType::parse("Decimal64(4)").unwrap().base, Base::Decimal { precision: 18, scale: 4 });
        assert_eq!(ChType::parse("DateTime('Europe/Berlin')").unwrap().base, Base::DateTime);
        assert_eq!(ChType::parse("LowCardinality(String)").unwrap().base, Base::String);
        assert_eq!(ChType::parse("FixedString(3)").unwrap().base, Base::FixedString(3));
        assert_eq!(ChType::parse("UInt32").unwrap().arrow(), DataType::Int64);
        let tags = ChType::parse("Array(Nullable(String))").unwrap();
        assert_eq!(tags.arrow(), DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))));
        assert_eq!(ddl_type(&tags.arrow(), false).as_deref(), Some("Array(Nullable(String))"));
        assert!(ChType::parse("Array(Array(Int8))").is_none() && ChType::parse("Enum8('a' = 1)").is_none());
    }

    #[test]
    fn created_types_read_back_as_what_was_written() {
        for ty in [
            DataType::Int8,
            DataType::Int64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Date32,
            DataType::Decimal128(10, 3),
        ] {
            let created = ChType::parse(&ddl_type(&ty, true).unwrap()).unwrap();
            assert_eq!(created.arrow(), ty);
        }
        assert_eq!(ddl_type(&DataType::Boolean, false).unwrap(), "Nullable(Int8)");
    }
}
