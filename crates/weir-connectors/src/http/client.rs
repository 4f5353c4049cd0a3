//! One request, tried as the step's retry policy says, paced by its rate limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use tokio::time::MissedTickBehavior;
use tracing::warn;
use weir_engine::{StepCounters, truncate};
use weir_spec::{Retry, RetryOn};

use super::auth::Auth;

/// A request to send, kept as parts so every attempt can rebuild it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

/// A successful response, read whole: one page.
pub struct Page {
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Client {
    http: reqwest::Client,
    auth: Auth,
    retry: Retry,
    pacing: Option<tokio::sync::Mutex<tokio::time::Interval>>,
    /// The URL itself is a secret (a Slack webhook): logs and errors show its scheme, host and port only.
    hide_urls: bool,
    /// Where retried attempts are counted: the step's counters.
    retries: Option<Arc<StepCounters>>,
}

/// Why one attempt failed.
enum Failure {
    Timeout(String),
    Connection(String),
    Status { status: StatusCode, retry_after: Option<Duration>, body: String },
}

impl Failure {
    fn retryable(&self, policy: &[RetryOn]) -> bool {
        match self {
            Failure::Timeout(_) => policy.contains(&RetryOn::Timeout),
            Failure::Connection(_) => policy.contains(&RetryOn::Connection),
            Failure::Status { status, .. } => policy.iter().any(|r| r.matches_status(status.as_u16())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Failure::Timeout(e) => format!("timed out ({e})"),
            Failure::Connection(e) => format!("connection failed ({e})"),
            Failure::Status { status, body, .. } if body.is_empty() => format!("HTTP {status}"),
            Failure::Status { status, body, .. } => format!("HTTP {status}: {}", truncate(body, 300)),
        }
    }
}

impl Client {
    pub fn new(auth: Auth, timeout: Duration, retry: Retry, requests_per_second: Option<f64>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DataFusionError::Plan(format!("HTTP client: {e}")))?;
        let pacing = requests_per_second.map(|rps| {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tokio::sync::Mutex::new(interval)
        });
        Ok(Self { http, auth, retry, pacing, hide_urls: false, retries: None })
    }

    /// Treats request URLs as secrets in logs and errors.
    pub fn hiding_urls(mut self) -> Self {
        self.hide_urls = true;
        self
    }

    /// Counts every retried attempt in `counters`.
    pub fn counting_retries(mut self, counters: Arc<StepCounters>) -> Self {
        self.retries = Some(counters);
        self
    }

    fn shown(&self, url: &reqwest::Url) -> String {
        match self.hide_urls {
            true => format!("{}/***", url.origin().ascii_serialization()),
            false => url.to_string(),
        }
    }

    /// Sends `request` until it succeeds, fails in a way the policy does not retry, or runs out of attempts.
    pub async fn send(&self, request: &Request) -> Result<Page> {
        Ok(self.send_expecting(request, &[]).await?.expect("no status is expected"))
    }

    /// As [`Client::send`], but a response with one of the `expected` failure statuses (a 404 that means "no such
    /// file") is an answer: returned at once, never retried.
    pub async fn send_expecting(
        &self,
        request: &Request,
        expected: &[StatusCode],
    ) -> Result<std::result::Result<Page, StatusCode>> {
        let mut delays = weir_engine::retry_delays(&self.retry);
        let mut attempt = 1;
        loop {
            if let Some(pacing) = &self.pacing {
                pacing.lock().await.tick().await;
            }
            let failure = match self.attempt(request).await? {
                Ok(page) => return Ok(Ok(page)),
                Err(Failure::Status { status, .. }) if expected.contains(&status) => return Ok(Err(status)),
                Err(failure) => failure,
            };
            let unauthorized =
                matches!(&failure, Failure::Status { status, .. } if *status == StatusCode::UNAUTHORIZED);
            let retry =
                if unauthorized { self.auth.on_unauthorized().await } else { failure.retryable(&self.retry.retry_on) };
            let wait = match &failure {
                Failure::Status { retry_after: Some(after), .. } => Some(*after.min(&self.retry.max_delay.0)),
                _ => delays.next(),
            };
            let url = self.shown(&request.url);
            match wait {
                Some(wait) if retry && attempt < self.retry.max_attempts => {
                    warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "{} {url}: {}; retrying",
                        request.method,
                        failure.describe()
                    );
                    if let Some(counters) = &self.retries {
                        counters.add_retry();
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => {
                    let tries = if attempt == 1 { "1 attempt".to_string() } else { format!("{attempt} attempts") };
                    let why = if retry { "" } else { " (not retried: the retry policy does not cover it)" };
                    return Err(DataFusionError::Execution(format!(
                        "{} {url} failed after {tries}: {}{why}",
                        request.method,
                        failure.describe()
                    )));
                }
            }
        }
    }

    /// One attempt. The outer error is a mistake of ours (a request that cannot be built); the inner one a failure
    /// of the server or network, which may be retried.
    async fn attempt(&self, request: &Request) -> Result<std::result::Result<Page, Failure>> {
        let mut builder = self.http.request(request.method.clone(), request.url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            if !request.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
                builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            builder = builder.body(body.clone());
        }
        let builder = self.auth.apply(&self.http, builder).await?;
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => return Ok(Err(classify(e))),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return Ok(Err(classify(e))),
        };
        if status.is_success() {
            return Ok(Ok(Page { headers, body }));
        }
        let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        Ok(Err(Failure::Status { status, retry_after, body: String::from_utf8_lossy(&body).into_owned() }))
    }
}

fn classify(e: reqwest::Error) -> Failure {
    let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
    let timeout = e.is_timeout();
    let text = format!("{}{cause}", e.without_url());
    if timeout { Failure::Timeout(text) } else { Failure::Connection(text) }
}

/// `Retry-After` is either seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = when.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or_default();
    Some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn pacing_spaces_requests() {
        let client = Client::new(Auth::None, Duration::from_secs(1), Retry::default(), Some(20.0)).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..5 {
            client.pacing.as_ref().unwrap().lock().await.tick().await;
        }
        // The first tick is immediate, then one every 50 ms.
        assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
    }
}
