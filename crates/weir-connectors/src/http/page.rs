//! One page of an API's answer split into its records, as text, and the rest of the page, as a value.
//!
//! Where `records:` is a plain path of names (`$.data`, `$.result.items[*]`) and the paging paths (`has_more:`, a
//! cursor, a next link) lie outside it, the page is read once with serde's visitor: the records are only scanned
//! and kept as slices of the page, and only the rest of the page becomes a `Value`. Any other path is answered by
//! serde_json_path over the whole page as a tree, each record then written back out as text.

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use std::fmt;

use super::read::{not_an_array, not_json, objects, parse_body, select_values};

/// How the records of every page are found.
pub(super) enum RecordsAt {
    /// The page is the array of records; `tree`: a paging path reads the page, so it is parsed whole.
    Root { tree: bool },
    /// Under these names from the top of the page (`path` says the same, for a node `[*]` takes apart).
    Names { names: Vec<String>, each: bool, path: JsonPath },
    /// Anywhere a JSONPath says.
    Path(JsonPath),
}

impl RecordsAt {
    /// `records` (a JSONPath, if set), read as names where it is one and no other path of the page looks inside it.
    pub(super) fn new(records: Option<&str>, others: &[&str]) -> Result<Self, String> {
        let Some(records) = records else { return Ok(RecordsAt::Root { tree: !others.is_empty() }) };
        let path = JsonPath::parse(records).map_err(|e| format!("`{records}` is not a JSONPath: {e}"))?;
        let outside =
            |names: &[String]| others.iter().all(|o| names_of(o).is_some_and(|theirs| !theirs.starts_with(names)));
        Ok(match names(records) {
            Some((names, each)) if !names.is_empty() && outside(&names) => RecordsAt::Names { names, each, path },
            _ => RecordsAt::Path(path),
        })
    }

    /// The records of `body` (each one JSON object's text) and the page's other values, for its paging paths.
    pub(super) fn split(&self, body: &Bytes) -> Result<(Vec<Bytes>, Value), String> {
        match self {
            RecordsAt::Root { tree: false } if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') => {
                let raw: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| not_json(body, e))?;
                Ok((slices(body, raw)?, Value::Null))
            }
            RecordsAt::Root { .. } => {
                let tree = parse_body(body)?;
                if !tree.is_array() {
                    return Err(not_an_array(&tree));
                }
                Ok((texts(objects(select_values(&tree, None))?), tree))
            }
            RecordsAt::Names { names, each, path } => {
                let mut found = None;
                let mut input = serde_json::Deserializer::from_slice(body);
                let rest =
                    Skeleton { names, found: &mut found }.deserialize(&mut input).map_err(|e| not_json(body, e))?;
                input.end().map_err(|e| not_json(body, e))?;
                match found.map(|raw| (raw, raw.get().as_bytes()[0])) {
                    None => Ok((Vec::new(), rest)),
                    Some((raw, b'[')) => {
                        Ok((slices(body, serde_json::from_str(raw.get()).map_err(|e| not_json(body, e))?)?, rest))
                    }
                    // `[*]` takes an object apart into its values: rare enough to leave to serde_json_path.
                    Some(_) if *each => RecordsAt::Path(path.clone()).split(body),
                    Some((raw, _)) => Ok((slices(body, vec![raw])?, rest)),
                }
            }
            RecordsAt::Path(path) => {
                let tree = parse_body(body)?;
                Ok((texts(objects(select_values(&tree, Some(path)))?), tree))
            }
        }
    }
}

fn texts(records: Vec<&Value>) -> Vec<Bytes> {
    records.iter().map(|r| Bytes::from(r.to_string())).collect()
}

/// The names of a path made of names only, `$.a.b` or `$['a'].b`, and whether it ends in `[*]`; `None` for any
/// other path.
fn names(path: &str) -> Option<(Vec<String>, bool)> {
    let rest = path.trim().strip_prefix('$')?;
    match rest.strip_suffix("[*]") {
        Some(rest) => Some((names_of_rest(rest)?, true)),
        None => Some((names_of_rest(rest)?, false)),
    }
}

/// The names a paging path reads through, where it is made of names (a trailing `[*]` or index included).
fn names_of(path: &str) -> Option<Vec<String>> {
    let rest = path.trim().strip_prefix('$')?;
    let end = rest.find('[').filter(|&i| !rest[i..].starts_with("['")).unwrap_or(rest.len());
    names_of_rest(&rest[..end])
}

fn names_of_rest(mut rest: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix("['") {
            let (name, after) = quoted.split_once("']")?;
            names.push(name.to_string());
            rest = after;
        } else {
            let after = rest.strip_prefix('.')?;
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                return None;
            }
            names.push(name.to_string());
            rest = &after[end..];
        }
    }
    Some(names)
}

/// Each record as a slice of the page it was read from, if every one is an object.
fn slices(body: &Bytes, records: Vec<&RawValue>) -> Result<Vec<Bytes>, String> {
    records
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.get();
            if !text.starts_with('{') {
                let shown = weir_engine::truncate(text, 100);
                return Err(format!("record {} is not a JSON object but {shown}", i + 1));
            }
            Ok(body.slice_ref(text.as_bytes()))
        })
        .collect()
}

/// A page read down the names to its records: the node found there is kept as text, everything else becomes
/// the value returned (with `null` where the records were).
struct Skeleton<'a, 'de> {
    names: &'a [String],
    found: &'a mut Option<&'de RawValue>,
}

impl<'de> DeserializeSeed<'de> for Skeleton<'_, 'de> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<Value, D::Error> {
        input.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skeleton<'_, 'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut rest = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = match self.names.split_first() {
                Some((first, [])) if *first == name => {
                    *self.found = Some(map.next_value::<&RawValue>()?);
                    Value::Null
                }
                Some((first, deeper)) if *first == name => {
                    map.next_value_seed(Skeleton { names: deeper, found: &mut *self.found })?
                }
                _ => map.next_value::<Value>()?,
            };
            rest.insert(name, value);
        }
        Ok(Value::Object(rest))
    }

    // Anything but an object on the way to the records holds none of them: kept whole.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(records: &[Bytes]) -> Vec<String> {
        records.iter().map(|r| String::from_utf8(r.to_vec()).unwrap()).collect()
    }

    #[test]
    fn names_of_plain_paths() {
        assert_eq!(names("$.data"), Some((vec!["data".to_string()], false)));
        assert_eq!(names("$['my data'].items[*]"), Some((vec!["my data".to_string(), "items".to_string()], true)));
        assert_eq!(names("$"), Some((vec![], false)));
        assert_eq!(names("$..items"), None);
        assert_eq!(names("$.data[?@.ok]"), None);
        assert_eq!(names_of("$.data[-1].id"), Some(vec!["data".to_string()]));
        assert_eq!(names_of("$.meta.next"), Some(vec!["meta".to_string(), "next".to_string()]));
    }

    #[test]
    fn records_read_as_text_and_the_rest_as_a_value() {
        let at = RecordsAt::new(Some("$.result.items"), &["$.has_more", "$.result.cursor"]).unwrap();
        assert!(matches!(at, RecordsAt::Names { .. }));
        let body = Bytes::from(
            r#"{"result": {"items": [{"id": 1},
            {"id": 2, "s": "a\"b"}], "cursor": "c2"}, "has_more": true}"#,
        );
        let (records, rest) = at.split(&body).unwrap();
        assert_eq!(shown(&records), [r#"{"id": 1}"#, r#"{"id": 2, "s": "a\"b"}"#]);
        assert_eq!(rest, serde_json::json!({"result": {"items": null, "cursor": "c2"}, "has_more": true}));
    }

    #[test]
    fn a_paging_path_inside_the_records_reads_the_whole_tree() {
        let at = RecordsAt::new(Some("$.data"), &["$.data[-1].id"]).unwrap();
        assert!(matches!(at, RecordsAt::Path(_)));
        let (records, rest) = at.split(&Bytes::from(r#"{"data": [{"id": 7}]}"#)).unwrap();
        assert_eq!(shown(&records), [r#"{"id":7}"#]);
        assert_eq!(rest["data"][0]["id"], 7);
    }

    #[test]
    fn every_way_of_finding_records_agrees() {
        let body = Bytes::from(r#"{"data": [{"a": 1}, {"b": [2]}], "next": null}"#);
        for path in ["$.data", "$.data[*]", "$['data']"] {
            let fast = RecordsAt::new(Some(path), &[]).unwrap();
            let slow = RecordsAt::Path(JsonPath::parse(path).unwrap());
            let parse = |at: &RecordsAt| -> Vec<Value> {
                at.split(&body).unwrap().0.iter().map(|r| serde_json::from_slice(r).unwrap()).collect()
            };
            assert_eq!(parse(&fast), parse(&slow), "{path}");
        }
        let object = Bytes::from(r#"{"data": {"a": 1}}"#);
        assert_eq!(shown(&RecordsAt::new(Some("$.data"), &[]).unwrap().split(&object).unwrap().0), [r#"{"a": 1}"#]);
        let missing = RecordsAt::new(Some("$.nothing"), &[]).unwrap().split(&object).unwrap();
        assert!(missing.0.is_empty());
    }

    #[test]
    fn what_is_not_records_is_named() {
        let at = RecordsAt::new(Some("$.data"), &[]).unwrap();
        let err = at.split(&Bytes::from(r#"{"data": [1, 2]}"#)).unwrap_err();
        assert_eq!(err, "record 1 is not a JSON object but 1");
        let err = at.split(&Bytes::from("<html>")).unwrap_err();
        assert!(err.starts_with("the response is not JSON"), "{err}");
        let root = RecordsAt::new(None, &[]).unwrap();
        let err = root.split(&Bytes::from(r#"{"items": []}"#)).unwrap_err();
        assert!(err.contains("$.items"), "{err}");
        assert_eq!(shown(&root.split(&Bytes::from(r#"[{"x": 1}]"#)).unwrap().0), [r#"{"x": 1}"#]);
    }
}
