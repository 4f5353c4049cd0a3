//! OpenLineage run events (START, then COMPLETE or FAIL) for data catalogs such as Marquez, DataHub or
//! OpenMetadata: the pipeline is the job, its extract steps' sources the inputs and its loads' destinations the
//! outputs. Configured as OpenLineage's own clients are, from the environment:
//!
//! - `OPENLINEAGE_URL`: `http(s)://…` posts each event (to `/api/v1/lineage` when the URL has no path);
//!   `file:///path/events.ndjson` appends one event a line.
//! - `OPENLINEAGE_API_KEY`: sent as `Authorization: Bearer …`.
//! - `OPENLINEAGE_NAMESPACE`: the jobs' namespace (default `weir`).
//!
//! An event that cannot be sent is logged and the run goes on: lineage never fails a pipeline.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use weir_spec::{Form, Pipeline};

const SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const ERROR_FACET: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const DOCUMENTATION_FACET: &str =
    "https://openlineage.io/spec/facets/1-0-1/DocumentationJobFacet.json#/$defs/DocumentationJobFacet";
const PRODUCER: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/tree/v", env!("CARGO_PKG_VERSION"));

/// Where events go.
pub struct Lineage {
    target: Target,
    api_key: Option<String>,
    namespace: String,
}

enum Target {
    Http(String),
    File(PathBuf),
}

/// How a run ended, for its last event.
pub enum Ending<'a> {
    Complete,
    Fail(&'a str),
}

impl Lineage {
    /// The configured destination of events, if `OPENLINEAGE_URL` is set.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("OPENLINEAGE_URL").ok().filter(|u| !u.trim().is_empty())?;
        let target = match url.strip_prefix("file://") {
            Some(path) => Target::File(PathBuf::from(path)),
            None => {
                let bare = url.trim_end_matches('/');
                let has_path = bare.split_once("://").is_some_and(|(_, rest)| rest.contains('/'));
                Target::Http(if has_path { bare.to_string() } else { format!("{bare}/api/v1/lineage") })
            }
        };
        Some(Self {
            target,
            api_key: std::env::var("OPENLINEAGE_API_KEY").ok().filter(|k| !k.is_empty()),
            namespace: std::env::var("OPENLINEAGE_NAMESPACE").unwrap_or_else(|_| "weir".into()),
        })
    }

    pub async fn start(&self, pipeline: &Pipeline, base_dir: &Path, run_id: &str) {
        self.send(event(&self.namespace, "START", pipeline, base_dir, run_id, None)).await;
    }

    pub async fn end(&self, pipeline: &Pipeline, base_dir: &Path, run_id: &str, ending: Ending<'_>) {
        let (kind, error) = match ending {
            Ending::Complete => ("COMPLETE", None),
            Ending::Fail(message) => ("FAIL", Some(message)),
        };
        self.send(event(&self.namespace, kind, pipeline, base_dir, run_id, error)).await;
    }

    async fn send(&self, event: Value) {
        let sent = match &self.target {
            Target::File(path) => append(path, &event).map_err(|e| format!("{}: {e}", path.display())),
            Target::Http(url) => {
                let client = reqwest::Client::new();
                let mut request = client
                    .post(url)
                    .timeout(std::time::Duration::from_secs(10))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(event.to_string());
                if let Some(key) = &self.api_key {
                    request = request.bearer_auth(key);
                }
                match request.send().await {
                    Ok(reply) if reply.status().is_success() => Ok(()),
                    Ok(reply) => Err(format!("the lineage server answered {}", reply.status())),
                    Err(e) => Err(format!("cannot reach the lineage server: {e}")),
                }
            }
        };
        if let Err(e) = sent {
            tracing::warn!("OpenLineage {} event not sent: {e}", event["eventType"].as_str().unwrap_or("?"));
        }
    }
}

fn append(path: &Path, event: &Value) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{event}")
}

fn event(
    namespace: &str,
    kind: &str,
    pipeline: &Pipeline,
    base_dir: &Path,
    run_id: &str,
    error: Option<&str>,
) -> Value {
    let mut run_facets = serde_json::Map::new();
    if let Some(message) = error {
        run_facets.insert(
            "errorMessage".into(),
            json!({ "_producer": PRODUCER, "_schemaURL": ERROR_FACET, "message": message, "programmingLanguage": "Rust" }),
        );
    }
    let mut job_facets = serde_json::Map::new();
    if let Some(description) = &pipeline.description {
        job_facets.insert(
            "documentation".into(),
            json!({ "_producer": PRODUCER, "_schemaURL": DOCUMENTATION_FACET, "description": description }),
        );
    }
    let datasets = |load: bool| -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for step in pipeline.steps.iter() {
            let is_load = step.kind.category() == weir_spec::Category::Load;
            if is_load != load || step.kind.category() == weir_spec::Category::Transform {
                continue;
            }
            if let Some(dataset) = dataset(pipeline, step, base_dir)
                && !out.contains(&dataset)
            {
                out.push(dataset);
            }
        }
        out
    };
    json!({
        "eventType": kind,
        "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "run": { "runId": run_id, "facets": run_facets },
        "job": { "namespace": namespace, "name": pipeline.name(), "facets": job_facets },
        "inputs": datasets(false),
        "outputs": datasets(true),
        "producer": PRODUCER,
        "schemaURL": SCHEMA,
    })
}

/// A step's source or destination named as OpenLineage's dataset naming says: `file` and an absolute path for
/// local files, `s3://bucket` and a key, `postgres://host:port` and a table. A connection's credentials never
/// appear: only its scheme, host and port.
fn dataset(pipeline: &Pipeline, step: &weir_spec::Step, base_dir: &Path) -> Option<Value> {
    let at = step.kind.endpoint()?;
    if matches!(at.form, Form::Webhook | Form::Model | Form::Query) {
        return None;
    }
    if let Some((scheme, rest)) = at.location.split_once("://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        return Some(json!({ "namespace": format!("{scheme}://{bucket}"), "name": key }));
    }
    let Some(name) = at.connection else {
        let path = base_dir.join(at.location);
        let path = std::path::absolute(&path).unwrap_or(path);
        return Some(json!({ "namespace": "file", "name": path.display().to_string() }));
    };
    let conn = pipeline.connections.get(name)?;
    let url = conn.url.as_ref().and_then(|u| weir_spec::interpolate_env(&u.value, |v| std::env::var(v).ok()).ok());
    let parsed = url.as_deref().and_then(|u| reqwest::Url::parse(u).ok());
    let namespace = match parsed.as_ref().and_then(|u| u.host_str().map(|h| (u, h))) {
        Some((u, host)) => match u.port() {
            Some(port) => format!("{}://{host}:{port}", u.scheme()),
            None => format!("{}://{host}", u.scheme()),
        },
        None => format!("{}://{name}", conn.kind.value),
    };
    let database =
        parsed.as_ref().map(|u| u.path().trim_matches('/').to_string()).filter(|d| !d.is_empty() && !d.contains('/'));
    let name = match (at.form, database) {
        (Form::Table, Some(db)) => format!("{db}.{}", at.location),
        _ => at.location.to_string(),
    };
    Some(json!({ "namespace": namespace, "name": name }))
}
