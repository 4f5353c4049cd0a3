//! The dashboard, its sign-in page and their files, the session routes, and the headers every answer carries.

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, error, peer, refusal};
use crate::access::{Caller, Denied, Role};

/// Scripts and styles only from the server's own files (none inline), nothing framed, nothing sent elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `GET /`: the dashboard for a caller who may read, else the way to the sign-in page.
pub async fn dashboard(State(app): State<AppState>, request: Request) -> Response {
    match app.access.authorize(request.headers(), peer(&request), Role::Read) {
        Ok(_) => html(include_str!("../dashboard/index.html")),
        Err(Denied::Missing | Denied::Wrong) => Redirect::to("/signin").into_response(),
        Err(denied) => refusal(denied),
    }
}

pub async fn sign_in_page() -> Response {
    html(include_str!("../dashboard/signin.html"))
}

fn html(text: &'static str) -> Response {
    axum::response::Html(text).into_response()
}

/// The dashboard's scripts and style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (kind, text) = match file.as_str() {
        "dashboard.js" => ("text/javascript", include_str!("../dashboard/dashboard.js")),
        "signin.js" => ("text/javascript", include_str!("../dashboard/signin.js")),
        "weir.css" => ("text/css", include_str!("../dashboard/weir.css")),
        _ => return error(StatusCode::NOT_FOUND, format!("no file {file}")),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], text).into_response()
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /api/session` with `{"token": "…"}`: opens a dashboard session, kept in an HttpOnly cookie.
pub async fn sign_in(State(app): State<AppState>, request: Request) -> Response {
    let peer = peer(&request);
    let body = match axum::body::to_bytes(request.into_body(), 64 << 10).await {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Ok(SignIn { token }) = serde_json::from_slice::<SignIn>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be {\"token\": \"…\"}");
    };
    match app.access.sign_in(&token, peer) {
        Ok((caller, cookie)) => {
            let mut response =
                ([(header::SET_COOKIE, cookie)], axum::Json(json!({ "name": caller.name, "role": caller.role })))
                    .into_response();
            response.extensions_mut().insert(caller);
            response
        }
        Err(denied) => refusal(denied),
    }
}

/// `DELETE /api/session`: signs out.
pub async fn sign_out(State(app): State<AppState>, request: Request) -> Response {
    let cookie = app.access.sign_out(request.headers());
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}

/// `GET /api/session`: who the caller is, and whether this server asks for tokens at all.
pub async fn session(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    axum::Json(json!({ "name": caller.name, "role": caller.role, "tokens": app.access.requires_tokens() }))
        .into_response()
}
