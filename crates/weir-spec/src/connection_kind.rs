//! What Weir knows of each kind of connection: its options with their types and docs, its URL, what it can do and
//! the cargo feature that brings it. The list itself lives with the connectors (each system's folder describes its
//! own kind); the checks, the JSON Schema and `weir list` read it through [`crate::Environment`].

use serde_json::{Value, json};

/// One kind of connection (`kind: postgres`).
#[derive(Debug)]
pub struct ConnectionKind {
    pub name: &'static str,
    pub family: Family,
    /// One line for `weir list` and the JSON Schema.
    pub description: &'static str,
    pub url: UrlUse,
    /// The options, in groups: the kind's own, then any it shares with other kinds (the HTTP client settings of
    /// every object store, say).
    pub option_groups: &'static [&'static [ConnectionOption]],
    /// The cargo feature a build needs for this kind; `None` for kinds every build has.
    pub feature: Option<&'static str>,
    pub can: Capabilities,
}

/// The family a kind belongs to, which decides the steps that may name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `read_db`, `write_db`, `execute`; perhaps a dead-letter table.
    Database,
    /// Files: the `connection` of file steps, `list_files` and `copy_files`.
    ObjectStore,
    /// A REST API: `read_api`, `enrich_api`, `write_api`, and `https://` file reads.
    Http,
    /// A language model behind an OpenAI-compatible chat endpoint: `ai_extract`.
    Model,
    /// A catalog of lake tables: the `catalog` of `read_iceberg` and `write_iceberg`.
    Catalog,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::ObjectStore => "object store",
            Self::Http => "http",
            Self::Model => "model",
            Self::Catalog => "catalog",
        }
    }
}

/// Whether a kind's connections take a `url`.
#[derive(Debug, Clone, Copy)]
pub enum UrlUse {
    /// A `url` is required; the text is an example.
    Required(&'static str),
    /// The steps carry the location (`s3://bucket/key`); the text is an example of such a path.
    InSteps(&'static str),
}

/// What connections of a kind can be used for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    pub read: bool,
    pub write: bool,
    /// `execute` steps.
    pub execute: bool,
    /// `settings.dead_letters: { connection, table }`.
    pub dead_letters: bool,
    /// Loads that commit batch by batch with a checkpoint beside the data (`settings.commit_every`, `--resume`).
    pub checkpoints: bool,
}

impl Capabilities {
    /// The capabilities' names, for `weir list`.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.read, "read"),
            (self.write, "write"),
            (self.execute, "execute"),
            (self.dead_letters, "dead-letters"),
            (self.checkpoints, "checkpoints"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
}

/// One entry of a connection's `options`.
#[derive(Debug)]
pub struct ConnectionOption {
    pub name: &'static str,
    /// Other spellings the connector accepts for the same option.
    pub aliases: &'static [&'static str],
    pub ty: OptionType,
    /// The value when the option is not given, as a user would write it.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl ConnectionOption {
    pub const fn new(name: &'static str, ty: OptionType, doc: &'static str) -> Self {
        Self { name, aliases: &[], ty, default: None, doc }
    }

    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }

    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// Whether `key` names this option.
    pub fn is_named(&self, key: &str) -> bool {
        self.name == key || self.aliases.contains(&key)
    }
}

/// The type of an option's value. Values are YAML strings (they may hold `${SECRET}` references); the type says
/// what the text must be once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    Text,
    /// A credential: never printed; best given as `${ENV_VAR}`.
    Secret,
    Bool,
    Integer,
    /// `30s`, `5m`, `1h`.
    Duration,
    /// A local file, relative to the pipeline file.
    Path,
    Url,
}

impl OptionType {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Secret => "secret",
            Self::Bool => "boolean",
            Self::Integer => "integer",
            Self::Duration => "duration",
            Self::Path => "path",
            Self::Url => "URL",
        }
    }

    /// Why `value` is not of this type, if it is not. Values with `${...}` references are checked at run time.
    pub fn mismatch(self, value: &str) -> Option<String> {
        if value.contains("${") {
            return None;
        }
        let ok = match self {
            Self::Bool => matches!(value.to_ascii_lowercase().as_str(), "true" | "false"),
            Self::Integer => value.parse::<i64>().is_ok(),
            Self::Duration => humantime::parse_duration(value).is_ok(),
            Self::Url => value.contains("://"),
            Self::Text | Self::Secret | Self::Path => true,
        };
        (!ok).then(|| match self {
            Self::Duration => format!("`{value}` is not a duration such as 30s or 5m"),
            other => format!("`{value}` is not a {}", other.name()),
        })
    }
}

impl ConnectionKind {
    /// Every option, the kind's own first.
    pub fn options(&self) -> impl Iterator<Item = &'static ConnectionOption> + Clone {
        self.option_groups.iter().flat_map(|group| group.iter())
    }

    /// The option `key` names, if any.
    pub fn option(&self, key: &str) -> Option<&'static ConnectionOption> {
        self.options().find(|o| o.is_named(key))
    }

    /// The JSON Schema of a connection of this kind: `kind` fixed, `url` as the kind uses it, `options` by name.
    pub fn json_schema(&self) -> Value {
        let options: serde_json::Map<String, Value> = self
            .options()
            .flat_map(|o| {
                let mut doc = format!("{} ({})", o.doc, o.ty.name());
                if let Some(default) = o.default {
                    doc.push_str(&format!("; default `{default}`"));
                }
                let mut schema = json!({ "type": "string", "description": doc });
                if let Some(default) = o.default {
                    schema["default"] = json!(default);
                }
                let aliases = o.aliases.iter().map(move |a| {
                    (a.to_string(), json!({ "type": "string", "description": format!("same as `{}`", o.name) }))
                });
                std::iter::once((o.name.to_string(), schema)).chain(aliases)
            })
            .collect();
        let url = match self.url {
            UrlUse::Required(example) => {
                json!({ "type": "string", "description": format!("e.g. `{example}`; may hold `${{SECRET}}` references") })
            }
            UrlUse::InSteps(example) => {
                json!({ "type": "string", "description": format!("not used: steps name the location, e.g. `{example}`") })
            }
        };
        let mut description = self.description.to_string();
        if let Some(feature) = self.feature {
            description.push_str(&format!(" (needs a build with the `{feature}` feature)"));
        }
        let mut schema = json!({
            "type": "object",
            "description": description,
            "properties": {
                "kind": { "const": self.name },
                "url": url,
                "options": { "type": "object", "properties": options, "additionalProperties": false },
            },
            "required": ["kind"],
            "additionalProperties": false,
        });
        if let UrlUse::Required(_) = self.url {
            schema["required"] = json!(["kind", "url"]);
        }
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_are_checked_unless_they_come_from_the_environment() {
        assert!(OptionType::Bool.mismatch("yes").is_some());
        assert!(OptionType::Bool.mismatch("TRUE").is_none());
        assert!(OptionType::Duration.mismatch("30 seconds").is_none());
        assert!(OptionType::Duration.mismatch("soon").is_some());
        assert!(OptionType::Integer.mismatch("${PORT}").is_none());
    }
}
