//! A mocked API for a case: an HTTP server on 127.0.0.1 that answers an API step's requests with the responses the
//! case gives, in order, and notes every request that did not fit (a wrong path or query, one more than given).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use weir_spec::MockResponse;

/// A running mock; it stops when dropped.
pub struct MockApi {
    pub base_url: String,
    state: Arc<Mutex<Served>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Served {
    responses: Vec<MockResponse>,
    next: usize,
    problems: Vec<String>,
}

impl MockApi {
    pub async fn start(responses: Vec<MockResponse>) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(Served { responses, ..Served::default() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(answer).with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { base_url, state, _stop: stop })
    }

    /// What went wrong so far: requests that did not fit, and (once the run is over) responses never asked for.
    pub fn problems(&self, finished: bool) -> Vec<String> {
        let served = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = served.problems.clone();
        if finished && served.next < served.responses.len() {
            out.push(format!(
                "{} of the {} responses given were never asked for (the step made {} requests)",
                served.responses.len() - served.next,
                served.responses.len(),
                served.next
            ));
        }
        out
    }
}

async fn answer(State(state): State<Arc<Mutex<Served>>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let shown = match request.uri().query() {
        Some(q) => format!("{} {path}?{q}", request.method()),
        None => format!("{} {path}", request.method()),
    };
    let mut served = state.lock().unwrap_or_else(|p| p.into_inner());
    let index = served.next;
    let Some(response) = served.responses.get(index).cloned() else {
        let message =
            format!("request {} ({shown}) came after the {} responses given", index + 1, served.responses.len());
        served.problems.push(message.clone());
        served.next += 1;
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    served.next += 1;
    if let Some(want) = response.path.as_deref().filter(|want| *want != path) {
        served.problems.push(format!("request {} ({shown}) should have had path {want}", index + 1));
    }
    for (name, want) in &response.query {
        if query.get(name) != Some(want) {
            let got = query.get(name).map_or("none".to_string(), |v| format!("`{v}`"));
            served.problems.push(format!("request {} ({shown}) should have had {name}=`{want}`, not {got}", index + 1));
        }
    }
    drop(served);
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = match &response.body {
        Some(body) => (status, axum::Json(body.clone())).into_response(),
        None => status.into_response(),
    };
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            reply.headers_mut().insert(name, value);
        }
    }
    reply
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}
