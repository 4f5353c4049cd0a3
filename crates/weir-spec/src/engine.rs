//! Where a pipeline's queries run: on this machine (the default) or on a cluster.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, de};

/// A cluster that runs a pipeline's queries, written `ballista://host:port`: the scheduler of an Apache DataFusion
/// Ballista cluster whose executors are `weir executor` processes. Only Ballista exists today, so the type is a
/// scheduler address; the scheme stays in the text so that another engine can be told apart later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEngine {
    pub host: String,
    pub port: u16,
}

impl ClusterEngine {
    /// The scheduler's gRPC address, `http://host:port`.
    pub fn scheduler_url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for ClusterEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ballista://{}:{}", self.host, self.port)
    }
}

impl FromStr for ClusterEngine {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "write the scheduler as ballista://host:port, e.g. ballista://127.0.0.1:50050";
        let rest = text.trim().strip_prefix("ballista://").ok_or_else(|| format!("`{text}`: {usage}"))?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("`{text}` has no port: {usage}"))?;
        let port = port.trim_end_matches('/').parse().map_err(|_| format!("`{text}` has no valid port: {usage}"))?;
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{text}` has no host: {usage}"));
        }
        Ok(Self { host: host.to_string(), port })
    }
}

impl<'de> Deserialize<'de> for ClusterEngine {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for ClusterEngine {
    fn schema_name() -> Cow<'static, str> {
        "ClusterEngine".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^ballista://[^/:]+:[0-9]+/?$", "examples": ["ballista://127.0.0.1:50050"] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_address_parses_and_mistakes_say_how_to_write_it() {
        let engine: ClusterEngine = "ballista://10.0.0.5:50050".parse().unwrap();
        assert_eq!(engine, ClusterEngine { host: "10.0.0.5".into(), port: 50050 });
        assert_eq!(engine.scheduler_url(), "http://10.0.0.5:50050");
        assert_eq!(engine.to_string(), "ballista://10.0.0.5:50050");
        for wrong in ["spark://h:1", "ballista://h", "ballista://:50050", "ballista://h:port", "ballista://h:99999"] {
            let err = wrong.parse::<ClusterEngine>().unwrap_err();
            assert!(err.contains("ballista://host:port"), "{wrong}: {err}");
        }
    }
}
