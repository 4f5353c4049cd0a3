//! `POST /hooks/{name}`: a webhook trigger, authenticated as its hook says, limited to its rate, and answered
//! once per delivery.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_spec::{StepKind, Webhook};

use super::api::{TriggerQuery, start, variables};
use super::{AppState, error, internal};
use crate::hooks::{Answer, Delivery, Refused, authenticate};
use crate::limit::Allowance;
use crate::runner::{Finished, TriggerError};

pub(super) async fn hook(
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
        Some((pipeline, webhook)) => checked(app.clone(), &name, pipeline, webhook, q.wait, &headers, body).await,
    };
    app.runner.metrics.hook(&name, response.status().as_u16());
    response
}

async fn checked(
    app: AppState,
    name: &str,
    pipeline: String,
    webhook: Webhook,
    wait: bool,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(limit) = webhook.rate_limit {
        let allowance = Allowance { events: limit.requests, per: limit.per.0 };
        if let Err(wait) = app.hook_requests.admit(name.to_string(), allowance) {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("hook `{name}` takes {} requests per {:?}", limit.requests, limit.per.0),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return response;
        }
    }
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    match authenticate(&webhook, header, &body, chrono::Utc::now()) {
        Err(refused @ Refused::TooLarge { .. }) => return error(StatusCode::PAYLOAD_TOO_LARGE, refused),
        Err(refused @ Refused::Unauthorized(_)) => return error(StatusCode::UNAUTHORIZED, refused),
        Err(refused @ Refused::Misconfigured(_)) => return internal(refused),
        Ok(()) => {}
    }
    let work = {
        let app = app.clone();
        async move { answer(deliver(&app, &pipeline, wait, &body).await).await }
    };
    let Some((delivery, window)) = delivery(name, &webhook, &header) else {
        return replayable(work.await, false);
    };
    let (answer, replayed) = app.replays.answer(delivery, window, work).await;
    replayable(answer, replayed)
}

/// What names this request's delivery, and for how long: its idempotency key, else a signature that covers a
/// timestamp (which the sender makes anew for each delivery). Other signatures and tokens are the same for
/// every request with the same body, so they cannot tell a replay from a second delivery.
fn delivery(
    name: &str,
    webhook: &Webhook,
    header: &impl Fn(&str) -> Option<String>,
) -> Option<(Delivery, std::time::Duration)> {
    if let Some(key) = header(&webhook.idempotency_header.to_ascii_lowercase()) {
        return Some((Delivery::new(name, "key", &key), webhook.replay_window.0));
    }
    let hmac = webhook.hmac.as_ref().filter(|h| h.timestamp_header.is_some())?;
    let signature = header(&hmac.header.to_ascii_lowercase())?;
    // A signature is accepted while its timestamp is within the tolerance either side of now.
    Some((Delivery::new(name, "signature", &signature), hmac.tolerance.0 * 2))
}

async fn answer(response: Response) -> Answer {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
    Answer { status, body }
}

fn replayable(answer: Answer, replayed: bool) -> Response {
    let mut response = (answer.status, [(header::CONTENT_TYPE, "application/json")], answer.body).into_response();
    if replayed {
        response.headers_mut().insert("weir-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Runs the hook's pipeline on the request: on its records if it reads them, else with its variables.
async fn deliver(app: &AppState, pipeline: &str, wait: bool, body: &[u8]) -> Response {
    if takes_records(app, pipeline) {
        return ingest(app, pipeline, body).await;
    }
    match variables(body) {
        Ok(variables) => start(app, pipeline, "webhook", variables, wait).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
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
