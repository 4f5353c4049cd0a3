//! `$name` placeholders in a database's own SQL, turned into that database's positional parameters.
//!
//! Values are always sent apart from the query text, so a value holding quotes or SQL stays data. Quoted strings,
//! quoted identifiers, comments and PostgreSQL dollar-quoted bodies are left alone.

use datafusion::error::DataFusionError;
use weir_engine::StepContext;
use weir_spec::TypedValue;

/// An identifier quoted as standard SQL quotes it (PostgreSQL, SQLite, DuckDB, ODBC): `"name"`, with inner
/// quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name as written, optionally schema-qualified (`sales.orders`), each part quoted by `quote`.
pub fn qualified(name: &str, quote: fn(&str) -> String) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

/// [`qualified`] with standard SQL quoting.
pub fn quote_table(name: &str) -> String {
    qualified(name, quote_ident)
}

/// How a database writes positional parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `$1`, `$2`, ...; a name used twice binds once.
    Dollar,
    /// `?` for each use; a name used twice binds twice.
    Question,
    /// `(SELECT p1 FROM weir_params)`, ...: a column of a one-row table sent beside the query (ClickHouse's
    /// external data, for servers without query parameters); a name used twice binds once.
    ExternalTable,
}

/// The table [`Style::ExternalTable`] placeholders read from.
pub const PARAMS_TABLE: &str = "weir_params";

/// The rewritten query and the parameter names in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub sql: String,
    pub names: Vec<String>,
}

/// Rewrites `$name` placeholders; `known` says which names exist.
pub fn bind_named(sql: &str, style: Style, known: &dyn Fn(&str) -> bool) -> Result<Bound, String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let skip_to = match c {
            b'\'' | b'"' | b'`' => Some(closing_quote(bytes, i)),
            b'-' if bytes.get(i + 1) == Some(&b'-') => Some(find(bytes, i, b"\n").map_or(bytes.len(), |e| e + 1)),
            b'/' if bytes.get(i + 1) == Some(&b'*') => Some(find(bytes, i + 2, b"*/").map_or(bytes.len(), |e| e + 2)),
            _ => None,
        };
        if let Some(end) = skip_to {
            out.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        if c == b'$' {
            let start = i + 1;
            let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
            let word = &sql[start..end];
            if bytes.get(end) == Some(&b'$') {
                // `$tag$ ... $tag$` (or `$$ ... $$`): a dollar-quoted string, copied as is.
                let tag = &sql[i..=end];
                let close = find(bytes, end + 1, tag.as_bytes()).map_or(bytes.len(), |e| e + tag.len());
                out.push_str(&sql[i..close]);
                i = close;
                continue;
            }
            if !word.is_empty() {
                if word.as_bytes()[0].is_ascii_digit() {
                    return Err(format!("`${word}`: write parameters by name, `$last_sync`, not by position"));
                }
                if !known(word) {
                    return Err(format!("`${word}` names no variable or state value"));
                }
                let mut position = || match names.iter().position(|n| n == word) {
                    Some(p) => p + 1,
                    None => {
                        names.push(word.to_string());
                        names.len()
                    }
                };
                match style {
                    Style::Dollar => {
                        let position = position();
                        out.push_str(&format!("${position}"));
                    }
                    Style::ExternalTable => {
                        let position = position();
                        out.push_str(&format!("(SELECT p{position} FROM {PARAMS_TABLE})"));
                    }
                    Style::Question => {
                        names.push(word.to_string());
                        out.push('?');
                    }
                }
                i = end;
                continue;
            }
        }
        let ch = sql[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    Ok(Bound { sql: out, names })
}

/// `sql` with its `$name`s as `style` placeholders, and the variable or state values to bind in placeholder
/// order, each converted by `convert` into the driver's value type.
pub fn bind_values<V>(
    sql: &str,
    style: Style,
    cx: &StepContext,
    convert: impl Fn(&TypedValue) -> Result<V, String>,
) -> Result<(String, Vec<V>), DataFusionError> {
    let bound = bind_named(sql, style, &|n| cx.value(n).is_some()).map_err(DataFusionError::Plan)?;
    let values = bound
        .names
        .iter()
        .map(|n| {
            convert(cx.value(n).expect("bind_named checked the name"))
                .map_err(|e| DataFusionError::Plan(format!("`${n}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((bound.sql, values))
}

/// The index just past the quote that closes the one at `start` (a doubled quote is an escaped one).
fn closing_quote(bytes: &[u8], start: usize) -> usize {
    let q = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == q {
            if bytes.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(sql: &str) -> Result<Bound, String> {
        bind_named(sql, Style::Dollar, &|n| ["last_sync", "region"].contains(&n))
    }

    #[test]
    fn numbers_names_in_order_and_reuses_them() {
        let b = bind("SELECT * FROM t WHERE a > $last_sync AND r = $region OR b > $last_sync").unwrap();
        assert_eq!(b.sql, "SELECT * FROM t WHERE a > $1 AND r = $2 OR b > $1");
        assert_eq!(b.names, ["last_sync", "region"]);
    }

    #[test]
    fn leaves_strings_identifiers_comments_and_dollar_quotes_alone() {
        let sql = "SELECT '$region', \"$x\", $$ $region $$, $f$ $x $f$ -- $nope\n/* $nope */ FROM t WHERE r = $region";
        let b = bind(sql).unwrap();
        assert_eq!(b.names, ["region"]);
        assert!(b.sql.ends_with("r = $1"));
        assert!(b.sql.contains("'$region'") && b.sql.contains("$f$ $x $f$"));
    }

    #[test]
    fn question_marks_bind_each_use() {
        let b = bind_named("a > $last_sync OR b > $last_sync AND c = '$region'", Style::Question, &|_| true).unwrap();
        assert_eq!(b.sql, "a > ? OR b > ? AND c = '$region'");
        assert_eq!(b.names, ["last_sync", "last_sync"]);
    }

    #[test]
    fn external_table_columns_bind_once() {
        let b =
            bind_named("a > $last_sync OR b > $last_sync AND c = $region", Style::ExternalTable, &|_| true).unwrap();
        assert_eq!(
            b.sql,
            "a > (SELECT p1 FROM weir_params) OR b > (SELECT p1 FROM weir_params) AND c = (SELECT p2 FROM weir_params)"
        );
        assert_eq!(b.names, ["last_sync", "region"]);
    }

    #[test]
    fn unknown_names_and_positional_parameters() {
        assert!(bind("WHERE a = $nope").unwrap_err().contains("$nope"));
        assert!(bind("WHERE a = $1").unwrap_err().contains("by name"));
    }
}
