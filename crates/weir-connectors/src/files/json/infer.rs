//! Columns inferred from JSON records as they stream past, without building a tree of each one.
//!
//! arrow-json's `infer_json_schema_from_iterator` takes one `serde_json::Value` per record: every string and every
//! object allocated, only to look at their types. For an API of a million records that tree was most of the CPU
//! time of a run (issue 24). [`Inference`] visits a record's text once with serde's visitor, allocating only for
//! a field name not seen before, and follows the same rules, so the columns are those arrow-json would infer:
//! integers and floats make `Float64`, other mixes of scalars `Utf8`, a scalar and a list of scalars a list, and
//! an object where another record has a scalar (or the other way round) is an error. New fields of a record are
//! added in the order of their names, as arrow-json sees them in a `Value`'s sorted map.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The columns of the records added so far.
#[derive(Debug, Default)]
pub struct Inference {
    fields: Object,
    records: usize,
}

impl Inference {
    /// Adds one record: the text of a JSON object. The error says whether the text is not JSON or its types
    /// conflict with earlier records'.
    pub fn add(&mut self, record: &[u8]) -> Result<(), String> {
        let mut input = serde_json::Deserializer::from_slice(record);
        input.deserialize_map(ObjectVisitor(&mut self.fields)).and_then(|()| input.end()).map_err(|e| {
            if e.is_data() {
                format!("cannot infer the columns: {e}")
            } else {
                format!("the record is not valid JSON: {e}")
            }
        })?;
        self.records += 1;
        Ok(())
    }

    /// How many records were added.
    pub fn records(&self) -> usize {
        self.records
    }

    pub fn schema(&self) -> Schema {
        Schema::new(fields(&self.fields))
    }
}

/// The fields of an object, in the order they were first seen.
type Object = IndexMap<String, Inferred>;

/// What the values of one field have been so far (arrow-json's `InferredType`).
#[derive(Debug, Clone)]
enum Inferred {
    /// Only nulls, or nothing yet.
    Any,
    Scalar(Scalars),
    Array(Box<Inferred>),
    Object(Object),
}

/// The kinds of scalar seen, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scalars(u8);

impl Scalars {
    const BOOLEAN: Scalars = Scalars(1);
    const INTEGER: Scalars = Scalars(2);
    const FLOAT: Scalars = Scalars(4);
    const TEXT: Scalars = Scalars(8);

    fn data_type(self) -> DataType {
        match self.0 {
            1 => DataType::Boolean,
            2 => DataType::Int64,
            4 | 6 => DataType::Float64,
            // No kind at all (a list of nulls) is text too, as in arrow-json.
            _ => DataType::Utf8,
        }
    }
}

impl Inferred {
    fn merge(&mut self, other: Inferred) -> Result<(), String> {
        match (&mut *self, other) {
            (Inferred::Array(mine), Inferred::Array(theirs)) => mine.merge(*theirs)?,
            (Inferred::Scalar(mine), Inferred::Scalar(theirs)) => mine.0 |= theirs.0,
            (Inferred::Object(mine), Inferred::Object(theirs)) => {
                for (name, value) in theirs {
                    mine.entry(name).or_insert(Inferred::Any).merge(value)?;
                }
            }
            (Inferred::Any, other) => *self = other,
            (_, Inferred::Any) => {}
            // A scalar where a list was: a list of scalars.
            (Inferred::Array(mine), scalar @ Inferred::Scalar(_)) => mine.merge(scalar)?,
            (Inferred::Scalar(_), Inferred::Array(mut theirs)) => {
                theirs.merge(self.clone())?;
                *self = Inferred::Array(theirs);
            }
            (mine, theirs) => {
                return Err(format!("{} in one record and {} in another", mine.describe(), theirs.describe()));
            }
        }
        Ok(())
    }

    /// A scalar value of a field.
    fn add_scalar(&mut self, kind: Scalars) -> Result<(), String> {
        if matches!(self, Inferred::Any) {
            *self = Inferred::Scalar(Scalars::default());
        }
        match self {
            Inferred::Scalar(kinds) => kinds.0 |= kind.0,
            Inferred::Array(_) => self.merge(Inferred::Scalar(kind))?,
            other => return Err(format!("a scalar in one record and {} in another", other.describe())),
        }
        Ok(())
    }

    /// A list value of a field, whose elements are `elements`.
    fn add_array(&mut self, elements: Inferred) -> Result<(), String> {
        if matches!(self, Inferred::Any) {
            *self = Inferred::Array(Box::new(match elements {
                Inferred::Scalar(_) => Inferred::Scalar(Scalars::default()),
                Inferred::Object(_) => Inferred::Object(Object::new()),
                Inferred::Any | Inferred::Array(_) => Inferred::Any,
            }));
        }
        match self {
            Inferred::Array(inner) => inner.merge(elements),
            Inferred::Scalar(_) => {
                self.merge(elements)?;
                *self = Inferred::Array(Box::new(self.clone()));
                Ok(())
            }
            other => Err(format!("a list in one record and {} in another", other.describe())),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Inferred::Any => "null",
            Inferred::Scalar(_) => "a scalar",
            Inferred::Array(_) => "a list",
            Inferred::Object(_) => "an object",
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Inferred::Any => DataType::Null,
            Inferred::Scalar(kinds) => kinds.data_type(),
            Inferred::Array(inner) => DataType::List(Arc::new(Field::new_list_field(inner.data_type(), true))),
            Inferred::Object(object) => DataType::Struct(fields(object)),
        }
    }
}

fn fields(object: &Object) -> Fields {
    object.iter().map(|(name, value)| Field::new(name, value.data_type(), true)).collect()
}

/// Adds the fields of one object to `Object`.
struct ObjectVisitor<'a>(&'a mut Object);

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // New fields wait for the end of the object, to be added in the order of their names.
        let mut new: Vec<(String, Inferred)> = Vec::new();
        while let Some(name) = map.next_key_seed(Name)? {
            match self.0.get_mut(name.as_ref()) {
                Some(field) => map.next_value_seed(FieldValue { field, name: &name })?,
                None => {
                    let mut field = Inferred::Any;
                    map.next_value_seed(FieldValue { field: &mut field, name: &name })?;
                    new.push((name.into_owned(), field));
                }
            }
        }
        new.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.extend(new);
        Ok(())
    }
}

/// A field name, borrowed from the input unless it has escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<Self::Value, D::Error> {
        input.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_owned()))
    }
}

/// A visitor's methods for scalars, the same for a field's value and a list's element: each adds its kind through
/// the visitor's own `scalar`. A `u64` too large for `Int64` is a float, as arrow-json's `Number::is_i64` has it.
macro_rules! scalar_visits {
    () => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            self.scalar(Scalars::BOOLEAN)
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            self.scalar(Scalars::INTEGER)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
            self.scalar(if i64::try_from(n).is_ok() { Scalars::INTEGER } else { Scalars::FLOAT })
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            self.scalar(Scalars::FLOAT)
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            self.scalar(Scalars::TEXT)
        }
    };
}

/// The value of one field, added to what the field has been.
struct FieldValue<'a> {
    field: &'a mut Inferred,
    name: &'a str,
}

impl FieldValue<'_> {
    fn scalar<E: de::Error>(self, kind: Scalars) -> Result<(), E> {
        self.field.add_scalar(kind).map_err(|e| field_error(self.name, e))
    }
}

fn field_error<E: de::Error>(name: &str, why: String) -> E {
    E::custom(format!("field `{name}` is {why}"))
}

impl<'de> DeserializeSeed<'de> for FieldValue<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<(), D::Error> {
        input.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldValue<'_> {
    type Value = ();

    scalar_visits!();

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let elements = elements(seq)?;
        self.field.add_array(elements).map_err(|e| field_error(self.name, e))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if matches!(self.field, Inferred::Any) {
            *self.field = Inferred::Object(Object::new());
        }
        match self.field {
            Inferred::Object(object) => ObjectVisitor(object).visit_map(map),
            other => {
                Err(field_error(self.name, format!("an object in one record and {} in another", other.describe())))
            }
        }
    }
}

/// What the elements of one list are; the first one decides which kind all must be.
enum Elements {
    Empty,
    Lists(Inferred),
    Objects(Object),
    Scalars(Scalars),
}

fn elements<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Inferred, A::Error> {
    let mut elements = Elements::Empty;
    while seq.next_element_seed(Element(&mut elements))?.is_some() {}
    Ok(match elements {
        Elements::Empty => Inferred::Any,
        Elements::Lists(inner) => Inferred::Array(Box::new(inner)),
        Elements::Objects(object) => Inferred::Object(object),
        Elements::Scalars(kinds) => Inferred::Scalar(kinds),
    })
}

struct Element<'a>(&'a mut Elements);

impl Element<'_> {
    fn scalar<E: de::Error>(self, kind: Scalars) -> Result<(), E> {
        match self.0 {
            Elements::Empty => *self.0 = Elements::Scalars(kind),
            Elements::Scalars(kinds) => kinds.0 |= kind.0,
            Elements::Lists(_) => return Err(E::custom("a list mixes lists and scalars")),
            Elements::Objects(_) => return Err(E::custom("a list mixes objects and scalars")),
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<(), D::Error> {
        input.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    scalar_visits!();

    /// A null element counts as a scalar one (it makes a list of scalars if it comes first) of no kind.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalars::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        if matches!(self.0, Elements::Empty) {
            *self.0 = Elements::Lists(Inferred::Any);
        }
        match self.0 {
            Elements::Lists(inner) => {
                let elements = elements(seq)?;
                inner.merge(elements).map_err(de::Error::custom)
            }
            _ => Err(de::Error::custom("a list mixes lists and other values")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if matches!(self.0, Elements::Empty) {
            *self.0 = Elements::Objects(Object::new());
        }
        match self.0 {
            Elements::Objects(object) => ObjectVisitor(object).visit_map(map),
            _ => Err(de::Error::custom("a list mixes objects and other values")),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
    use serde_json::{Value, json};

    use super::*;

    /// Ours, and arrow-json's over `serde_json::Value`s: the same columns, or both an error.
    fn both(records: &[Value]) -> (Result<Schema, String>, Result<Schema, String>) {
        let mut ours = Inference::default();
        let mine = records.iter().try_for_each(|r| ours.add(r.to_string().as_bytes())).map(|()| ours.schema());
        let arrows = infer_json_schema_from_iterator(records.iter().map(Ok)).map_err(|e| e.to_string());
        (mine, arrows)
    }

    fn same(records: &[Value]) {
        match both(records) {
            (Ok(mine), Ok(arrows)) => assert_eq!(mine, arrows, "{records:?}"),
            (Err(_), Err(_)) => {}
            (mine, arrows) => panic!("{records:?}: ours {mine:?}, arrow-json's {arrows:?}"),
        }
    }

    #[test]
    fn the_columns_arrow_json_infers() {
        same(&[json!({"b": 1, "a": "x", "c": null}), json!({"d": 2.5, "b": 1.5, "a": true, "c": [1, 2]})]);
        same(&[json!({"n": 1}), json!({"n": [2, 3.5]}), json!({"n": "x"})]);
        same(&[json!({"l": [null]}), json!({"e": []}), json!({"e": [[1], [2.5, 3]]})]);
        same(&[json!({"o": {"z": 1, "y": {"q": null}}}), json!({"o": {"a": [{"k": 1}, {"j": "v"}]}})]);
        same(&[json!({"s": [{"b": 1}, {"a": 2}]}), json!({"s": {"c": true}})]);
        same(&[json!({"m": 1}), json!({"m": [[1]]})]);
        same(&[json!({"big": 18446744073709551615u64, "neg": -3})]);
        same(&[json!({"k": "\u{e9}t\u{e9}", "esc\"aped": 1})]);
    }

    #[test]
    fn conflicts_are_errors_as_in_arrow_json() {
        for records in [
            vec![json!({"o": {"a": 1}}), json!({"o": 5})],
            vec![json!({"o": 5}), json!({"o": {"a": 1}})],
            vec![json!({"l": [1, {"a": 1}]})],
            vec![json!({"l": [{"a": 1}, 1]})],
            vec![json!({"l": [[1], 2]})],
            vec![json!({"l": [null, {"a": 1}]})],
            vec![json!({"l": [1]}), json!({"l": {"a": 1}})],
        ] {
            let (mine, arrows) = both(&records);
            assert!(mine.is_err() && arrows.is_err(), "{records:?}: ours {mine:?}, arrow-json's {arrows:?}");
        }
        let (mine, _) = both(&[json!({"o": {"a": 1}}), json!({"o": 5})]);
        assert!(mine.unwrap_err().contains("field `o` is a scalar in one record and an object in another"));
    }

    /// Records of random shapes, from a seeded generator: every one gives arrow-json's columns.
    #[test]
    fn random_records_give_arrow_jsons_columns() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn value(next: &mut impl FnMut(u64) -> u64, depth: u32) -> Value {
            match next(if depth > 2 { 5 } else { 8 }) {
                0 => Value::Null,
                1 => json!(next(2) == 0),
                2 => json!(next(1000) as i64 - 500),
                3 => json!(next(1000) as f64 / 7.0),
                4 => json!(format!("t{}", next(10))),
                5 | 6 => Value::Array((0..next(3)).map(|_| value(next, depth + 1)).collect()),
                _ => object(next, depth + 1),
            }
        }
        fn object(next: &mut impl FnMut(u64) -> u64, depth: u32) -> Value {
            let names = ["a", "b", "c", "d", "e"];
            Value::Object((0..next(4)).map(|_| (names[next(5) as usize].to_string(), value(next, depth))).collect())
        }
        let mut agreed = 0;
        for _ in 0..2000 {
            let records: Vec<Value> = (0..1 + next(4)).map(|_| object(&mut next, 0)).collect();
            if let (Ok(_), Ok(_)) = both(&records) {
                agreed += 1;
            }
            same(&records);
        }
        assert!(agreed > 200, "too few random cases inferred without conflict: {agreed}");
    }
}
