//! Nested values (lists, structs, maps: what JSON APIs return) into databases that keep them as JSON: each value
//! becomes its JSON text, the way Arrow's JSON writer writes it, for a `jsonb`, `JSON` or `TEXT` column.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};

/// Whether values of `ty` have parts: a list, a struct or a map.
pub fn is_nested(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// Each value of a nested `array` as JSON text; NULL stays NULL.
pub fn json_text(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let field = Arc::new(Field::new("value", array.data_type().clone(), true));
    let options = EncoderOptions::default();
    let mut encoder = make_encoder(&field, array.as_ref(), &options)?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 32);
    let mut text = Vec::new();
    for row in 0..array.len() {
        if array.is_null(row) {
            out.append_null();
            continue;
        }
        text.clear();
        encoder.encode(row, &mut text);
        out.append_value(std::str::from_utf8(&text).expect("Arrow's JSON encoder writes UTF-8"));
    }
    Ok(Arc::new(out.finish()))
}

/// `array` as the table's type `to`: nested values into a text column as their JSON, anything else by Arrow's cast.
pub fn cast_for_table(array: &ArrayRef, to: &DataType, options: &CastOptions) -> Result<ArrayRef, ArrowError> {
    if is_nested(array.data_type()) && matches!(to, DataType::Utf8) {
        return json_text(array);
    }
    cast_with_options(array, to, options)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, ListArray, StringArray, StructArray};
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;

    #[test]
    fn nested_values_become_their_json_and_null_stays_null() {
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]));
        let text = json_text(&list).unwrap();
        let text = text.as_string::<i32>();
        assert_eq!((text.value(0), text.is_null(1), text.value(2)), ("[1,null]", true, "[]"));

        let object: ArrayRef = Arc::new(StructArray::from(vec![
            (Arc::new(Field::new("n", DataType::Int64, true)), Arc::new(Int64Array::from(vec![7])) as ArrayRef),
            (Arc::new(Field::new("s", DataType::Utf8, true)), Arc::new(StringArray::from(vec!["a\"b"])) as ArrayRef),
        ]));
        assert_eq!(json_text(&object).unwrap().as_string::<i32>().value(0), r#"{"n":7,"s":"a\"b"}"#);
    }
}
