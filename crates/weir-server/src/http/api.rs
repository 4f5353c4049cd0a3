//! The JSON API's routes; who may call each is decided in the router.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_engine::DeadLetterFilter;
use weir_spec::{Pipeline, TypedValue};

use super::{AppState, error, internal};
use crate::runner::TriggerError;

/// Every pipeline: definition summary, triggers, next scheduled run, last run, runs going.
pub(super) async fn pipelines(State(app): State<AppState>) -> Response {
    let project = app.runner.project().clone();
    let store = app.runner.store();
    let next_fires = app.scheduler.lock().unwrap_or_else(|p| p.into_inner()).next_fires();
    let mut out = Vec::new();
    for (name, entry) in &project.pipelines {
        let p = &entry.pipeline;
        let last = match store.runs(Some(name), 1) {
            Ok(runs) => runs.into_iter().next(),
            Err(e) => return internal(e),
        };
        let triggers: Vec<Value> = p
            .triggers
            .iter()
            .map(|t| {
                json!({
                    "cron": t.cron.as_ref().map(|c| &c.value),
                    "timezone": t.timezone.as_ref().map(|z| &z.value),
                    "every": t.every.map(|d| format!("{}s", d.0.as_secs_f64())),
                    "after": t.after.iter().map(|a| &a.value).collect::<Vec<_>>(),
                    "webhook": t.webhook.as_ref().map(|w| &w.name.value),
                })
            })
            .collect();
        let next = next_fires.get(name);
        out.push(json!({
            "name": name,
            "file": entry.path.display().to_string(),
            "description": p.description,
            "owner": p.owner,
            "contacts": p.contacts,
            "steps": steps(p),
            "triggers": triggers,
            "next_run": next,
            "running": app.runner.running(name),
            "last_run": last,
        }));
    }
    let broken: BTreeMap<String, &Vec<String>> =
        project.broken.iter().map(|(k, v)| (k.display().to_string(), v)).collect();
    axum::Json(json!({ "pipelines": out, "broken": broken })).into_response()
}

#[derive(Deserialize)]
pub(super) struct RunsQuery {
    pipeline: Option<String>,
    status: Option<RunStatus>,
    #[serde(default = "default_limit")]
    limit: usize,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RunStatus {
    Running,
    Success,
    Failed,
}

impl RunStatus {
    fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
        }
    }
}

fn default_limit() -> usize {
    50
}

pub(super) async fn runs(State(app): State<AppState>, Query(q): Query<RunsQuery>) -> Response {
    match app.runner.store().runs(q.pipeline.as_deref(), q.limit) {
        Ok(runs) => axum::Json(json!({ "runs": runs.into_iter().filter(|r| q.status.is_none_or(|s| s.name() == r.status)).collect::<Vec<_>>() })).into_response(),
        Err(e) => internal(e),
    }
}

/// One run with its per-step metrics and checks.
pub(super) async fn run(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let store = app.runner.store();
    let detail = (|| {
        let Some(run) = store.run(&id)? else { return Ok(None) };
        Ok::<_, weir_engine::state_store::StateError>(Some(json!({
            "run": run,
            "steps": store.step_metrics(&id)?,
            "checks": store.checks(&id)?,
            "logs": store.run_logs(&id)?,
        })))
    })();
    match detail {
        Ok(Some(detail)) => axum::Json(detail).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => internal(e),
    }
}

/// `POST /api/runs/{id}/cancel`: stops a run going in this instance; its open batch rolls back and it is recorded
/// failed ("cancelled"). Batches it committed stay (`commit_every`), and it is not resumed on its own.
pub(super) async fn cancel(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    if app.runner.cancel(&id) {
        return (StatusCode::ACCEPTED, axum::Json(json!({ "run_id": id, "status": "cancelling" }))).into_response();
    }
    match app.runner.store().run(&id) {
        Ok(Some(run)) if run.status == "running" => {
            error(StatusCode::CONFLICT, format!("run {id} is going in another process or instance; cancel it there"))
        }
        Ok(Some(run)) => error(StatusCode::CONFLICT, format!("run {id} is not running: it is {}", run.status)),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/pipelines/{name}/state`: each declared state value, stored or its default, with when it was saved.
pub(super) async fn pipeline_state(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(entry) = app.runner.project().pipelines.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("no pipeline `{name}` in this project"));
    };
    let stored = match app.runner.store().state(&name) {
        Ok(stored) => stored,
        Err(e) => return internal(e),
    };
    let values: BTreeMap<&String, Value> = entry
        .pipeline
        .state
        .iter()
        .map(|(key, declared)| {
            let value = match stored.get(key) {
                Some(v) => json!({ "value": v.to_string(), "default": false }),
                None => json!({ "value": declared.value.default.value.to_string(), "default": true }),
            };
            (key, value)
        })
        .collect();
    axum::Json(json!({ "pipeline": name, "state": values })).into_response()
}

#[derive(Deserialize)]
pub(super) struct DeadLetterQuery {
    pipeline: String,
    run: Option<String>,
    step: Option<String>,
}

pub(super) async fn dead_letters(State(app): State<AppState>, Query(q): Query<DeadLetterQuery>) -> Response {
    let filter = DeadLetterFilter { run_id: q.run, step: q.step, id: None };
    let letters = app
        .runner
        .dead_letters(&q.pipeline)
        .and_then(|store| store.matching(&q.pipeline, &filter).map_err(anyhow::Error::from_boxed));
    match letters {
        Ok(letters) => axum::Json(json!({ "dead_letters": letters })).into_response(),
        Err(e) => refused(e),
    }
}

/// 404 for a pipeline this project lacks, else 400 with why the request cannot be done.
fn refused(e: anyhow::Error) -> Response {
    match e.downcast_ref::<TriggerError>() {
        Some(unknown @ TriggerError::Unknown(_)) => error(StatusCode::NOT_FOUND, unknown),
        _ => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct TriggerQuery {
    /// Answer when the run has ended, with its outcome, instead of at once.
    #[serde(default)]
    pub(super) wait: bool,
}

/// `POST /api/pipelines/{name}/runs` with an optional JSON object of variables.
pub(super) async fn trigger(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<TriggerQuery>,
    body: Bytes,
) -> Response {
    let variables = match variables(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    start(&app, &name, "api", variables, q.wait).await
}

pub(super) async fn start(
    app: &AppState,
    pipeline: &str,
    trigger: &str,
    variables: BTreeMap<String, String>,
    wait: bool,
) -> Response {
    // Variables are checked here, so a bad request gets a 400 rather than a run that fails.
    let declared = app.runner.project().pipelines.get(pipeline).map(|e| e.pipeline.clone());
    if let Some(declared) = declared
        && let Err(e) = weir_engine::resolve_variables(&declared, &variables)
    {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let handle = match app.runner.trigger(pipeline, trigger, variables, None) {
        Ok(handle) => handle,
        Err(e @ TriggerError::Unknown(_)) => return error(StatusCode::NOT_FOUND, e),
        Err(e @ TriggerError::Busy { .. }) => return error(StatusCode::CONFLICT, e),
    };
    if !wait {
        return (StatusCode::ACCEPTED, axum::Json(json!({ "pipeline": pipeline, "status": "started" })))
            .into_response();
    }
    match handle.await {
        Ok(finished) => match finished.result {
            Ok(report) => axum::Json(
                json!({ "pipeline": pipeline, "status": "success", "run_id": report.run_id, "steps": report.steps }),
            )
            .into_response(),
            Err(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({ "pipeline": pipeline, "status": "failed", "error": message })),
            )
                .into_response(),
        },
        Err(e) => internal(e),
    }
}

/// A JSON object body as `--var` values (strings as they are, other values as JSON text); an empty body is none.
pub(super) fn variables(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(fields) = value else { return Err("the body must be a JSON object of variables".into()) };
    Ok(fields
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// The steps with what each reads, for drawing the DAG (a self-join's input once).
fn steps(pipeline: &Pipeline) -> Vec<Value> {
    let dag = weir_engine::step_graph(pipeline).ok();
    pipeline
        .steps
        .iter()
        .map(|s| {
            let inputs: BTreeSet<&String> =
                dag.as_ref().and_then(|d| d.inputs.get(s.id())).into_iter().flatten().collect();
            json!({ "id": s.id(), "kind": s.kind.name(), "inputs": inputs })
        })
        .collect()
}

#[derive(Deserialize)]
pub(super) struct ReplayQuery {
    pipeline: String,
    step: String,
}

/// `POST /api/dead-letters/replay?pipeline=&step=`: as `weir dlq replay --step`.
pub(super) async fn replay(State(app): State<AppState>, Query(q): Query<ReplayQuery>) -> Response {
    let has_step =
        app.runner.project().pipelines.get(&q.pipeline).map(|e| e.pipeline.steps.iter().any(|s| s.id() == q.step));
    if has_step == Some(false) {
        return error(StatusCode::NOT_FOUND, format!("no step `{}` in pipeline `{}`", q.step, q.pipeline));
    }
    match app.runner.replay(&q.pipeline, &q.step).await {
        Ok(report) => {
            let status = if report.error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
            let body = json!({
                "run_id": report.run_id,
                "replayed": report.replayed,
                "skipped": report.skipped,
                "passed": report.passed,
                "failed_again": report.failed_again,
                "error": report.error.map(|e| e.to_string()),
            });
            (status, axum::Json(body)).into_response()
        }
        Err(e) => refused(e),
    }
}

/// The API's OpenAPI document: written by hand beside the routes, with what every guarded operation shares
/// added here (its security schemes, and the answers for a missing or weak token, too many failures, a query or
/// body that does not parse, and a change sent cross-site or not as JSON).
pub(super) async fn openapi() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut document: Value = serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json is JSON");
        let error = json!({ "$ref": "#/components/responses/Error" });
        for operations in document["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
            for (method, operation) in operations.as_object_mut().into_iter().flatten() {
                let guarded = operation.get("x-weir-role").is_some();
                let takes_input = operation.get("parameters").is_some() || operation.get("requestBody").is_some();
                let responses = operation["responses"].as_object_mut().expect("every operation has responses");
                let mut shared: Vec<&str> = Vec::new();
                if guarded {
                    shared.extend(["401", "403", "429"]);
                }
                if takes_input {
                    shared.push("400");
                }
                if method != "get" {
                    shared.extend(["403", "415"]);
                }
                for status in shared {
                    responses.entry(status).or_insert_with(|| error.clone());
                }
                if guarded {
                    operation["security"] = json!([{ "token": [] }, { "session": [] }]);
                }
            }
        }
        document.to_string()
    });
    ([("content-type", "application/json")], DOCUMENT.as_str()).into_response()
}

pub(super) async fn metrics(State(app): State<AppState>) -> Response {
    let queue = app.runner.queue();
    let oldest = queue.first().map_or(0.0, |q| q.waited().as_secs_f64());
    ([("content-type", "text/plain; version=0.0.4")], app.runner.metrics.render(queue.len(), oldest)).into_response()
}

/// The runs waiting for a server-wide slot, longest waiting first, and the slots.
pub(super) async fn queue(State(app): State<AppState>) -> Response {
    let queue = app.runner.queue();
    let (max_runs, free) = app.runner.slots();
    let waiting: Vec<serde_json::Value> = queue
        .iter()
        .map(|q| json!({ "run_id": q.run_id, "pipeline": q.pipeline, "trigger": q.trigger, "queued_at": q.queued_at, "waited_seconds": q.waited().as_secs_f64() }))
        .collect();
    axum::Json(json!({ "max_runs": max_runs, "free_slots": free, "depth": waiting.len(), "waiting": waiting }))
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct PurgeQuery {
    pipeline: String,
    run: Option<String>,
    step: Option<String>,
    id: Option<i64>,
    #[serde(default)]
    all: bool,
}

/// `DELETE /api/dead-letters?pipeline=&(run=|step=|id=|all=true)`: as `weir dlq purge`.
pub(super) async fn purge(State(app): State<AppState>, Query(q): Query<PurgeQuery>) -> Response {
    let filter = DeadLetterFilter { run_id: q.run, step: q.step, id: q.id };
    if !q.all && filter.run_id.is_none() && filter.step.is_none() && filter.id.is_none() {
        return error(StatusCode::BAD_REQUEST, "say which dead letters to delete: run=, step=, id= or all=true");
    }
    let purged = app
        .runner
        .dead_letters(&q.pipeline)
        .and_then(|store| weir_engine::purge(&*store, &q.pipeline, &filter).map_err(anyhow::Error::from_boxed));
    match purged {
        Ok(purged) => axum::Json(json!({ "pipeline": q.pipeline, "purged": purged })).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
pub(super) struct NewValue {
    value: String,
}

/// `PUT /api/pipelines/{name}/state/{key}` with `{"value": "…"}`: as `weir state set`.
pub(super) async fn set_state(
    State(app): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(NewValue { value }) = serde_json::from_slice(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be {\"value\": \"…\"}");
    };
    let declared = match declared_state(&app, &name, &key) {
        Ok(ty) => ty,
        Err(missing) => return error(StatusCode::NOT_FOUND, missing),
    };
    let value = match TypedValue::parse(declared, &value) {
        Ok(value) => value,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match app.runner.store().set_state(&name, &key, &value) {
        Ok(()) => axum::Json(json!({ "pipeline": name, "name": key, "value": value.to_string() })).into_response(),
        Err(e) => internal(e),
    }
}

/// `DELETE /api/pipelines/{name}/state/{key}`: as `weir state reset`; the declared default applies next run.
pub(super) async fn reset_state(State(app): State<AppState>, Path((name, key)): Path<(String, String)>) -> Response {
    if let Err(missing) = declared_state(&app, &name, &key) {
        return error(StatusCode::NOT_FOUND, missing);
    }
    match app.runner.store().reset_state(&name, Some(&key)) {
        Ok(removed) => axum::Json(json!({ "pipeline": name, "name": key, "reset": removed })).into_response(),
        Err(e) => internal(e),
    }
}

/// The declared type of state value `key` of pipeline `name`, or why there is none (a 404).
fn declared_state(app: &AppState, name: &str, key: &str) -> Result<weir_spec::ValueType, String> {
    let project = app.runner.project();
    let entry = project.pipelines.get(name).ok_or_else(|| format!("no pipeline `{name}`"))?;
    let declared = entry.pipeline.state.get(key).ok_or_else(|| format!("`{key}` is not a state value of `{name}`"))?;
    Ok(declared.value.ty)
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

/// `GET /api/audit`: the latest state-changing calls, newest first.
pub(super) async fn audit(State(app): State<AppState>, Query(q): Query<AuditQuery>) -> Response {
    match app.runner.store().audit_log(q.limit) {
        Ok(entries) => axum::Json(json!({ "audit": entries })).into_response(),
        Err(e) => internal(e),
    }
}
