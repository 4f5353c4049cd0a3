//! Matching a load's input columns to an existing table's under the step's `schema_evolution` policy. Each
//! database turns the plan into its own DDL.

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::DataFusionError;
use weir_spec::{SchemaEvolution, WriteDb};

/// A column of the destination table as the database describes it.
pub struct TableColumn {
    pub name: String,
    /// How its values read in Arrow; `None` for a type Weir cannot write.
    pub arrow: Option<DataType>,
    /// The database's own type name, for messages.
    pub db_type: String,
}

/// What happens to one input column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnChange {
    /// The table's column takes the values as they are.
    Fits,
    /// The table gets a new column of the input's type.
    Add,
    /// The table's column is widened to hold the input's type.
    Widen,
}

/// The input columns to load, in input order, with what each needs. Columns the policy discards are left out; any
/// difference the policy does not allow fails, listing every one.
pub fn plan(
    policy: SchemaEvolution,
    table: &str,
    fields: &[&Field],
    existing: &[TableColumn],
    can_widen: &dyn Fn(&TableColumn, &DataType) -> bool,
) -> Result<Vec<(Field, ColumnChange)>, DataFusionError> {
    let mut planned = Vec::new();
    let mut differences = Vec::new();
    for field in fields {
        let input = field.data_type();
        let Some(column) = existing.iter().find(|c| c.name == *field.name()) else {
            match policy {
                SchemaEvolution::Discard => {}
                SchemaEvolution::Freeze => differences.push(format!("new column `{}` ({input})", field.name())),
                SchemaEvolution::Evolve => planned.push(((*field).clone(), ColumnChange::Add)),
            }
            continue;
        };
        let Some(table_type) = &column.arrow else {
            return Err(DataFusionError::Plan(format!(
                "column `{}` of `{table}` has type `{}`, which Weir cannot write yet",
                field.name(),
                column.db_type
            )));
        };
        if fits(input, table_type) {
            planned.push(((*field).clone(), ColumnChange::Fits));
        } else if policy == SchemaEvolution::Evolve && can_widen(column, input) {
            planned.push(((*field).clone(), ColumnChange::Widen));
        } else {
            differences.push(format!(
                "column `{}`: the input has {input}, the table has {}",
                field.name(),
                column.db_type
            ));
        }
    }
    if differences.is_empty() {
        return Ok(planned);
    }
    let why = match policy {
        SchemaEvolution::Freeze => "its schema is frozen (`schema_evolution: freeze`)",
        _ => "these types cannot be converted safely",
    };
    Err(DataFusionError::Plan(format!(
        "the input does not fit table `{table}`: {why}: {}. Cast in a sql step, change the table, or set `schema_evolution`",
        differences.join("; ")
    )))
}

/// The DDL of a database whose tables Weir creates and only ever widens by new columns (SQLite, DuckDB): standard
/// SQL, with its own column types.
pub struct AddOnly {
    /// The system's name, for messages.
    pub system: &'static str,
    pub ddl_type: fn(&DataType) -> Option<String>,
    pub quote: fn(&str) -> String,
}

impl AddOnly {
    /// `CREATE TABLE` for `fields` under the name `quoted`, the keys `NOT NULL` and the primary key.
    pub fn create(&self, spec: &WriteDb, quoted: &str, fields: &[&Field]) -> Result<String, DataFusionError> {
        let defs =
            crate::db::load::column_definitions(spec, fields, self.system, self.quote, &|ty, _| (self.ddl_type)(ty))?;
        Ok(format!("CREATE TABLE {quoted} ({defs})"))
    }

    /// The input columns to load under the step's policy, and the `ALTER TABLE … ADD COLUMN` statements they need.
    pub fn evolve(
        &self,
        spec: &WriteDb,
        (name, quoted): (&str, &str),
        fields: &[&Field],
        existing: &[TableColumn],
    ) -> Result<(Vec<Field>, Vec<String>), DataFusionError> {
        let planned = plan(spec.schema_evolution, name, fields, existing, &|_, _| false)?;
        let mut alters = Vec::new();
        for (field, change) in &planned {
            if *change == ColumnChange::Add {
                let ty = crate::db::load::column_type(field, false, self.system, &|ty, _| (self.ddl_type)(ty))?;
                alters.push(format!("ALTER TABLE {quoted} ADD COLUMN {} {ty}", (self.quote)(field.name())));
            }
        }
        Ok((planned.into_iter().map(|(f, _)| f).collect(), alters))
    }
}

/// Whether every value of `input` converts to the table's type without loss.
pub fn fits(input: &DataType, table: &DataType) -> bool {
    use DataType::*;
    let int_width = |t: &DataType| match t {
        Int8 | UInt8 => Some(1),
        Int16 => Some(2),
        UInt16 | Int32 => Some(4),
        UInt32 | Int64 => Some(8),
        _ => None,
    };
    match (input, table) {
        (a, b) if a == b => true,
        (Null, _) => true,
        (Boolean, Int8) => true,
        // Nested values into text (PostgreSQL's `jsonb`, MySQL's `JSON`, SQLite's `TEXT`) as their JSON.
        (_, Utf8) => !matches!(input, Binary | LargeBinary | BinaryView),
        (a, Int8 | Int16 | Int32 | Int64) => matches!((int_width(a), int_width(table)), (Some(x), Some(y)) if x <= y),
        (a, UInt64) => matches!(a, UInt8 | UInt16 | UInt32),
        (Int8 | UInt8 | Int16 | Float16 | Float32, Float32) => true,
        (a, Float64) => int_width(a).is_some() || matches!(a, Float16 | Float32),
        (Decimal128(p, s), Decimal128(tp, ts)) => s <= ts && (*p as i16 - *s as i16) <= (*tp as i16 - *ts as i16),
        // Floats into decimals: the common case of inferred doubles into money columns; out-of-range values fail.
        (a, Decimal128(tp, ts)) => {
            let integer_digits = *tp as i16 - *ts as i16;
            // The decimal digits of each integer type's largest value.
            let needed = match a {
                Int8 | UInt8 => Some(3),
                Int16 | UInt16 => Some(5),
                Int32 | UInt32 => Some(10),
                Int64 => Some(19),
                UInt64 => Some(20),
                _ => None,
            };
            matches!(a, Float32 | Float64) || needed.is_some_and(|n| integer_digits >= n)
        }
        (Date32 | Date64 | Timestamp(..), Timestamp(..)) => true,
        (LargeBinary | BinaryView, Binary) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_conversions_fit_and_narrowing_does_not() {
        assert!(fits(&DataType::Int32, &DataType::Int64));
        assert!(!fits(&DataType::Int64, &DataType::Int32));
        assert!(fits(&DataType::Decimal128(10, 2), &DataType::Decimal128(12, 2)));
        assert!(!fits(&DataType::Decimal128(12, 4), &DataType::Decimal128(12, 2)));
        assert!(!fits(&DataType::Utf8, &DataType::Float64));
        assert!(fits(&DataType::Int64, &DataType::Utf8));
        assert!(fits(&DataType::UInt64, &DataType::Decimal128(20, 0)), "what PostgreSQL's UInt64 columns are");
        assert!(!fits(&DataType::UInt64, &DataType::Decimal128(19, 0)));
    }
}
