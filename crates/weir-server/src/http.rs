//! The HTTP side of `weir serve`: the JSON API, webhook triggers and `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_engine::DeadLetterFilter;
use weir_spec::{Pipeline, StepKind};

use crate::hooks::{Refused, authenticate};
use crate::runner::{Finished, Runner, TriggerError};
use crate::schedule::Scheduler;

#[derive(Clone)]
pub struct AppState {
    pub runner: Arc<Runner>,
    pub scheduler: Arc<Mutex<Scheduler>>,
}

/// Bodies above this are refused before any hook looks at them; each hook has its own, smaller, `max_body`.
const BODY_CEILING: usize = 64 << 20;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}/runs", post(trigger))
        .route("/api/runs", get(runs))
        .route("/api/pipelines/{name}/state", get(pipeline_state))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/dead-letters", get(dead_letters))
        .route("/hooks/{name}", post(hook))
        .route("/api/dead-letters/replay", post(replay))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .layer(DefaultBodyLimit::max(BODY_CEILING))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

/// Every pipeline: definition summary, triggers, next scheduled run, last run, runs going.
async fn pipelines(State(app): State<AppState>) -> Response {
    let project = app.runner.project().clone();
    let store = app.runner.store();
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
        let next = app.scheduler.lock().unwrap_or_else(|p| p.into_inner()).next_fire(name);
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
struct RunsQuery {
    pipeline: Option<String>,
    status: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

async fn runs(State(app): State<AppState>, Query(q): Query<RunsQuery>) -> Response {
    match app.runner.store().runs(q.pipeline.as_deref(), q.limit) {
        Ok(runs) => axum::Json(json!({ "runs": runs.into_iter().filter(|r| q.status.as_ref().is_none_or(|s| *s == r.status)).collect::<Vec<_>>() })).into_response(),
        Err(e) => internal(e),
    }
}

/// One run with its per-step metrics and checks.
async fn run(State(app): State<AppState>, Path(id): Path<String>) -> Response {
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
async fn cancel(State(app): State<AppState>, Path(id): Path<String>) -> Response {
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
async fn pipeline_state(State(app): State<AppState>, Path(name): Path<String>) -> Response {
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
struct DeadLetterQuery {
    pipeline: String,
    run: Option<String>,
    step: Option<String>,
}

async fn dead_letters(State(app): State<AppState>, Query(q): Query<DeadLetterQuery>) -> Response {
    let filter = DeadLetterFilter { run_id: q.run, step: q.step, id: None };
    let letters = app
        .runner
        .dead_letters(&q.pipeline)
        .and_then(|store| store.matching(&q.pipeline, &filter).map_err(anyhow::Error::from_boxed));
    match letters {
        Ok(letters) => axum::Json(json!({ "dead_letters": letters })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize, Default)]
struct TriggerQuery {
    /// Answer when the run has ended, with its outcome, instead of at once.
    #[serde(default)]
    wait: bool,
}

/// `POST /api/pipelines/{name}/runs` with an optional JSON object of variables.
async fn trigger(
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

/// `POST /hooks/{name}`: the webhook trigger whose `name` matches, authenticated as it says.
async fn hook(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<TriggerQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let found = app.runner.project().pipelines.iter().find_map(|(pipeline, entry)| {
        entry
            .pipeline
            .triggers
            .iter()
            .find_map(|t| t.webhook.clone().filter(|w| w.name.value == name))
            .map(|w| (pipeline.clone(), w))
    });
    let response = match found {
        None => error(StatusCode::NOT_FOUND, format!("no webhook `{name}`")),
        Some((pipeline, webhook)) => {
            let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
            match authenticate(&webhook, header, &body, chrono::Utc::now()) {
                Err(refused @ Refused::TooLarge { .. }) => error(StatusCode::PAYLOAD_TOO_LARGE, refused),
                Err(refused @ Refused::Unauthorized(_)) => error(StatusCode::UNAUTHORIZED, refused),
                Err(refused @ Refused::Misconfigured(_)) => internal(refused),
                Ok(()) if takes_records(&app, &pipeline) => ingest(&app, &pipeline, &body).await,
                Ok(()) => match variables(&body) {
                    Ok(variables) => start(&app, &pipeline, "webhook", variables, q.wait).await,
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                },
            }
        }
    };
    app.runner.metrics.hook(&name, response.status().as_u16());
    response
}

/// Whether `pipeline` reads its webhook's body as records (a `read_webhook` step) rather than as variables.
fn takes_records(app: &AppState, pipeline: &str) -> bool {
    let project = app.runner.project();
    project
        .pipelines
        .get(pipeline)
        .is_some_and(|e| e.pipeline.steps.iter().any(|s| matches!(s.kind, StepKind::ReadWebhook(_))))
}

/// Runs `pipeline` on the request's records and answers once its loads have committed: 200 with the run and the
/// records taken, or 422 with why nothing was loaded. A request that finds the pipeline busy waits its turn.
async fn ingest(app: &AppState, pipeline: &str, body: &[u8]) -> Response {
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let payload = Arc::new(payload);
    let handle = loop {
        match app.runner.trigger(pipeline, "webhook", BTreeMap::new(), Some(payload.clone())) {
            Ok(handle) => break handle,
            Err(TriggerError::Busy { .. }) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            Err(e) => return error(StatusCode::NOT_FOUND, e),
        }
    };
    match handle.await {
        Ok(Finished { result: Ok(report), .. }) => {
            let records: u64 = report.steps.iter().filter(|s| s.kind == "read_webhook").map(|s| s.rows_out).sum();
            axum::Json(json!({ "status": "committed", "run_id": report.run_id, "records": records })).into_response()
        }
        Ok(Finished { result: Err(message), .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({ "status": "rejected", "error": message })))
                .into_response()
        }
        Err(e) => internal(e),
    }
}

async fn start(
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
fn variables(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
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
struct ReplayQuery {
    pipeline: String,
    step: String,
}

/// `POST /api/dead-letters/replay?pipeline=&step=`: as `weir dlq replay --step`.
async fn replay(State(app): State<AppState>, Query(q): Query<ReplayQuery>) -> Response {
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
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// The API's OpenAPI document, written by hand beside the routes above.
async fn openapi() -> Response {
    ([("content-type", "application/json")], include_str!("openapi.json")).into_response()
}

/// The dashboard: one page over the JSON API.
async fn dashboard() -> Response {
    axum::response::Html(include_str!("dashboard.html")).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], app.runner.metrics.render()).into_response()
}
