//! The HTTP side of `weir serve`: the JSON API and the dashboard (behind tokens, refusing cross-site changes,
//! audited), webhook triggers (each with its own authentication), and `/metrics`.

mod api;
mod hooks;
mod pages;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::json;

use crate::access::{Access, Caller, Denied, Role, check_same_site};
use crate::hooks::Replays;
use crate::limit::Windows;
use crate::runner::Runner;
use crate::schedule::Scheduler;

#[derive(Clone)]
pub struct AppState {
    pub runner: Arc<Runner>,
    pub scheduler: Arc<Mutex<Scheduler>>,
    pub access: Arc<Access>,
    pub replays: Arc<Replays>,
    /// Requests per hook, for hooks with a `rate_limit`.
    pub hook_requests: Arc<Windows<String>>,
}

/// Bodies above this are refused before any hook looks at them; each hook has its own, smaller, `max_body`.
const BODY_CEILING: usize = 64 << 20;

/// The API, the dashboard and `/metrics`, with the webhooks too unless they have a listener of their own.
pub fn router(state: AppState, with_hooks: bool) -> Router {
    let guarded = |role: Role, route: MethodRouter<AppState>| {
        route.route_layer(from_fn_with_state((state.clone(), role), authorize))
    };
    let metrics = if state.access.open_metrics { get(api::metrics) } else { guarded(Role::Metrics, get(api::metrics)) };
    let api = Router::new()
        .route("/api/pipelines", guarded(Role::Read, get(api::pipelines)))
        .route("/api/pipelines/{name}/runs", guarded(Role::Operate, post(api::trigger)))
        .route("/api/pipelines/{name}/state", guarded(Role::Read, get(api::pipeline_state)))
        .route("/api/pipelines/{name}/state/{key}", guarded(Role::Admin, put(api::set_state).delete(api::reset_state)))
        .route("/api/runs", guarded(Role::Read, get(api::runs)))
        .route("/api/queue", guarded(Role::Read, get(api::queue)))
        .route("/api/runs/{id}", guarded(Role::Read, get(api::run)))
        .route("/api/runs/{id}/cancel", guarded(Role::Operate, post(api::cancel)))
        .route(
            "/api/dead-letters",
            guarded(Role::Operate, get(api::dead_letters)).merge(guarded(Role::Admin, delete(api::purge))),
        )
        .route("/api/dead-letters/replay", guarded(Role::Operate, post(api::replay)))
        .route("/api/audit", guarded(Role::Admin, get(api::audit)))
        .route("/api/openapi.json", guarded(Role::Read, get(api::openapi)))
        .route(
            "/api/session",
            post(pages::sign_in).delete(pages::sign_out).merge(guarded(Role::Metrics, get(pages::session))),
        )
        .route("/metrics", metrics)
        .route("/", get(pages::dashboard))
        .route("/signin", get(pages::sign_in_page))
        .route("/assets/{file}", get(pages::asset))
        .layer(from_fn(same_site))
        .layer(from_fn_with_state(state.clone(), audit));
    let app = if with_hooks { api.merge(hooks_routes()) } else { api };
    finish(app, state)
}

/// The webhooks alone, for `--hooks-listen`.
pub fn hooks_router(state: AppState) -> Router {
    finish(hooks_routes(), state)
}

fn hooks_routes() -> Router<AppState> {
    Router::new().route("/hooks/{name}", post(hooks::hook))
}

fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .layer(map_response(json_errors))
        .layer(map_response(pages::security_headers))
        .layer(DefaultBodyLimit::max(BODY_CEILING))
        .with_state(state)
}

/// The router's own refusals (a query or path that does not parse, a method a route lacks) are plain text; every
/// answer of the API is JSON, so they are given as `{"error": …}` too.
async fn json_errors(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.to_str().is_ok_and(|t| t.starts_with("text/plain")));
    if !response.status().is_client_error() || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut json = error(parts.status, String::from_utf8_lossy(&text));
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

/// The address a request came from (unspecified when served without connection info, as in unit tests).
fn peer(request: &Request) -> IpAddr {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Lets a request through to its route if its caller has the role `needs`; the caller goes along in the
/// request's and the response's extensions (for the route, and for the audit log).
async fn authorize(State((app, needs)): State<(AppState, Role)>, mut request: Request, next: Next) -> Response {
    match app.access.authorize(request.headers(), peer(&request), needs) {
        Ok(caller) => {
            request.extensions_mut().insert(caller.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(caller);
            response
        }
        Err(denied) => {
            // A known token with too weak a role is named in the audit log.
            let known = match &denied {
                Denied::Insufficient { name, has, .. } => Some(Caller { name: name.clone(), role: *has }),
                _ => None,
            };
            let mut response = refusal(denied);
            if let Some(caller) = known {
                response.extensions_mut().insert(caller);
            }
            response
        }
    }
}

fn refusal(denied: Denied) -> Response {
    let status = match &denied {
        Denied::Missing | Denied::Wrong => StatusCode::UNAUTHORIZED,
        Denied::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        Denied::Insufficient { .. } => StatusCode::FORBIDDEN,
    };
    let mut response = error(status, &denied);
    let headers = response.headers_mut();
    match denied {
        Denied::TooMany(wait) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        }
        Denied::Missing | Denied::Wrong => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Denied::Insufficient { .. } => {}
    }
    response
}

/// Refuses cross-site and non-JSON requests that would change something (see [`check_same_site`]).
async fn same_site(request: Request, next: Next) -> Response {
    match check_same_site(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e @ crate::access::CrossSite::Forged(_)) => error(StatusCode::FORBIDDEN, e),
        Err(e @ crate::access::CrossSite::NotJson) => error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e),
    }
}

/// Records every API call that would change something, allowed or not, with its caller's token name.
async fn audit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let changes = !request.method().is_safe() && request.uri().path().starts_with("/api/");
    if !changes {
        return next.run(request).await;
    }
    let action = format!("{} {}", request.method(), request.uri().path_and_query().map_or("", |p| p.as_str()));
    let address = peer(&request).to_string();
    let response = next.run(request).await;
    let actor = response.extensions().get::<Caller>().map_or("-", |c| c.name.as_str());
    if let Err(e) = app.runner.store().add_audit(actor, &address, &action, response.status().as_u16()) {
        tracing::warn!("Cannot write the audit log: {e}");
    }
    response
}
