//! `{{ scope.name }}` templates in paths and messages, and `${ENV}` references in connection settings.
//!
//! Templates are for text that is not SQL. SQL gets variables and state as bound parameters (`$name`), so a value
//! can never change the meaning of a query.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z_]+)\.([A-Za-z0-9_]+)\s*\}\}").expect("static regex"));
static ENV_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("static regex"));

/// The scopes a template may name.
pub const SCOPES: &[&str] = &["var", "state", "run", "pipeline"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template scope `{scope}` in `{{{{ {scope}.{name} }}}}`; use one of var, state, run, pipeline")]
    UnknownScope { scope: String, name: String },
    #[error("`{{{{ {scope}.{name} }}}}` names nothing: there is no {scope} `{name}`")]
    UnknownName { scope: String, name: String },
}

/// A text with `{{ scope.name }}` placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Template<'a>(pub &'a str);

impl<'a> Template<'a> {
    /// The `(scope, name)` pairs the template refers to.
    pub fn references(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        PLACEHOLDER.captures_iter(self.0).map(|c| {
            let scope = c.get(1).expect("group 1").as_str();
            let name = c.get(2).expect("group 2").as_str();
            (scope, name)
        })
    }

    /// Replaces every placeholder with its value from `values[scope][name]`.
    pub fn render(&self, values: &HashMap<&str, HashMap<String, String>>) -> Result<String, TemplateError> {
        let mut error = None;
        let out = PLACEHOLDER.replace_all(self.0, |c: &regex::Captures| {
            let (scope, name) = (&c[1], &c[2]);
            let found = values.get(scope).map(|names| names.get(name));
            match found {
                Some(Some(v)) => v.clone(),
                Some(None) => {
                    error.get_or_insert(TemplateError::UnknownName { scope: scope.into(), name: name.into() });
                    String::new()
                }
                None => {
                    error.get_or_insert(TemplateError::UnknownScope { scope: scope.into(), name: name.into() });
                    String::new()
                }
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(out.into_owned()),
        }
    }
}

/// Replaces `${NAME}` with the environment's value; `Err` names the first variable that is not set.
pub fn interpolate_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut missing = None;
    let out = ENV_REF.replace_all(text, |c: &regex::Captures| {
        lookup(&c[1]).unwrap_or_else(|| {
            missing.get_or_insert_with(|| c[1].to_string());
            String::new()
        })
    });
    match missing {
        Some(name) => Err(name),
        None => Ok(out.into_owned()),
    }
}

/// The names of the environment variables a text refers to.
pub fn env_references(text: &str) -> impl Iterator<Item = &str> {
    ENV_REF.captures_iter(text).map(|c| c.get(1).expect("group 1").as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_and_rejects_unknown() {
        let mut values = HashMap::new();
        values.insert("var", HashMap::from([("day".to_string(), "2024-01-15".to_string())]));
        let t = Template("out/{{ var.day }}/x.csv");
        assert_eq!(t.render(&values).unwrap(), "out/2024-01-15/x.csv");
        assert!(matches!(Template("{{ var.nope }}").render(&values), Err(TemplateError::UnknownName { .. })));
        assert!(matches!(Template("{{ nope.x }}").render(&values), Err(TemplateError::UnknownScope { .. })));
    }

    #[test]
    fn env_interpolation_names_the_missing_variable() {
        let lookup = |k: &str| (k == "HOST").then(|| "db".to_string());
        assert_eq!(interpolate_env("postgres://${HOST}/x", lookup).unwrap(), "postgres://db/x");
        assert_eq!(interpolate_env("${HOST}:${PASSWORD}", lookup).unwrap_err(), "PASSWORD");
    }
}
