//! `alerts:`: a Slack message, a JSON webhook or an email when a run fails, sets records aside or fails a `warn`
//! data-quality check. Delivery is
//! retried a few times; an alert that still cannot be delivered is logged and never changes the run's outcome.

use std::time::Duration;

use bytes::Bytes;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::{Method, Url};
use serde_json::json;
use tracing::{info, warn};
use weir_engine::{EngineError, RunMetrics, RunReport, StepCounters};
use weir_spec::{AlertOn, Category, EmailAlert, Pipeline, Retry, interpolate_env};

use crate::http::auth::Auth;
use crate::http::client::{Client, Request};

/// What a run did, as alerts report it.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: Option<String>,
    /// The error of a failed run.
    pub error: Option<String>,
    /// The step it failed in.
    pub stage: Option<String>,
    pub records_extracted: u64,
    pub records_loaded: u64,
    /// Records skipped or dead-lettered.
    pub records_set_aside: u64,
    /// Failed `warn` data-quality checks, `name: what failed`.
    pub failed_checks: Vec<String>,
    pub duration_ms: u64,
}

impl RunOutcome {
    /// What the alerts report of a run: its error and failed step, and the records its steps counted.
    pub fn of(
        pipeline: &Pipeline,
        metrics: &RunMetrics,
        result: &Result<RunReport, EngineError>,
        duration_ms: u64,
    ) -> Self {
        let total = |category: Option<Category>, count: fn(&StepCounters) -> u64| -> u64 {
            let steps = pipeline.steps.iter().filter(|s| category.is_none_or(|c| s.kind.category() == c));
            steps.filter_map(|s| metrics.get(s.id())).map(|c| count(&c)).sum()
        };
        Self {
            run_id: result.as_ref().ok().map(|r| r.run_id.clone()),
            error: result.as_ref().err().map(ToString::to_string),
            stage: result.as_ref().err().and_then(EngineError::step).map(str::to_string),
            records_extracted: total(Some(Category::Extract), StepCounters::rows),
            records_loaded: total(Some(Category::Load), StepCounters::rows),
            records_set_aside: total(None, StepCounters::invalid),
            failed_checks: result.as_ref().map(|r| r.failed_checks.clone()).unwrap_or_default(),
            duration_ms,
        }
    }
}

/// Sends every alert of `pipeline` whose event `outcome` matches.
pub async fn send_alerts(pipeline: &Pipeline, outcome: &RunOutcome) {
    for (i, alert) in pipeline.alerts.iter().enumerate() {
        let event = match &outcome.error {
            Some(_) if alert.on.contains(&AlertOn::Failure) => "failure",
            None if alert.on.contains(&AlertOn::Check) && !outcome.failed_checks.is_empty() => "check",
            None if alert.on.contains(&AlertOn::DeadLetters)
                && outcome.records_set_aside > alert.dead_letters_above =>
            {
                "dead_letters"
            }
            _ => continue,
        };
        let (which, sent) = match (&alert.slack, &alert.webhook, &alert.email) {
            (Some(url), ..) => {
                ("Slack", post(&url.value, json!({ "text": slack_text(pipeline.name(), event, outcome) })).await)
            }
            (None, Some(url), _) => ("webhook", post(&url.value, webhook_body(pipeline.name(), event, outcome)).await),
            (None, None, Some(email)) => ("email", mail(email, pipeline.name(), event, outcome).await),
            (None, None, None) => continue,
        };
        match sent {
            Ok(()) => info!(pipeline = pipeline.name(), event, "Sent {which} alert {}", i + 1),
            Err(why) => warn!(pipeline = pipeline.name(), event, "Could not send {which} alert {}: {why}", i + 1),
        }
    }
}

async fn post(url: &str, body: serde_json::Value) -> Result<(), String> {
    let url = from_env(url)?;
    let url = Url::parse(&url).map_err(|_| "the alert URL is not a URL".to_string())?;
    let retry = Retry { max_attempts: 3, delay: weir_spec::Duration(Duration::from_millis(200)), ..Retry::default() };
    // The URL of a Slack webhook is its secret.
    let client =
        Client::new(Auth::None, Duration::from_secs(10), retry, None).map_err(|e| e.to_string())?.hiding_urls();
    let request = Request {
        method: Method::POST,
        url,
        headers: Vec::new(),
        body: Some(Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))),
    };
    client.send(&request).await.map(drop).map_err(|e| e.to_string())
}

/// Sends the alert as an email, tried up to three times. Errors never show the SMTP URL (it may hold a password).
async fn mail(email: &EmailAlert, pipeline: &str, event: &str, outcome: &RunOutcome) -> Result<(), String> {
    let smtp = from_env(&email.smtp.value)?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp)
        .map_err(|e| format!("bad `smtp` URL: {}", e.to_string().replace(&smtp, "***")))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let subject = match event {
        "failure" => format!("[weir] {pipeline} failed"),
        "check" => format!("[weir] {pipeline} failed {} data-quality checks", outcome.failed_checks.len()),
        _ => format!("[weir] {pipeline} set {} records aside", outcome.records_set_aside),
    };
    let mut message = Message::builder().from(email.from.parse().map_err(|e| format!("`from`: {e}"))?).subject(subject);
    for to in &email.to {
        message = message.to(to.parse().map_err(|e| format!("`to` {to}: {e}"))?);
    }
    let message = message.body(slack_text(pipeline, event, outcome)).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 1..=3u64 {
        match transport.send(message.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
    Err(format!("after 3 attempts: {last}"))
}

fn from_env(text: &str) -> Result<String, String> {
    interpolate_env(text, |var| std::env::var(var).ok())
        .map_err(|var| format!("environment variable `{var}` is not set"))
}

fn slack_text(pipeline: &str, event: &str, o: &RunOutcome) -> String {
    let processed = format!(
        "Records processed: {} extracted, {} loaded, {} set aside.",
        o.records_extracted, o.records_loaded, o.records_set_aside
    );
    match event {
        "failure" => format!(
            ":red_circle: Pipeline *{pipeline}* failed{}.\nError: {}\n{processed}",
            o.stage.as_ref().map(|s| format!(" at step `{s}`")).unwrap_or_default(),
            o.error.as_deref().unwrap_or("unknown"),
        ),
        "check" => format!(
            ":warning: Pipeline *{pipeline}* finished, but data-quality checks failed:\n{}\n{processed}",
            o.failed_checks.iter().map(|c| format!("• {c}")).collect::<Vec<_>>().join("\n")
        ),
        _ => format!(
            ":warning: Pipeline *{pipeline}* finished but set {} records aside (see `weir dlq list`).\n{processed}",
            o.records_set_aside
        ),
    }
}

fn webhook_body(pipeline: &str, event: &str, o: &RunOutcome) -> serde_json::Value {
    json!({
        "pipeline": pipeline,
        "event": event,
        "status": if o.error.is_some() { "failed" } else { "succeeded" },
        "run_id": o.run_id,
        "error": o.error,
        "failed_step": o.stage,
        "records_extracted": o.records_extracted,
        "records_loaded": o.records_loaded,
        "records_set_aside": o.records_set_aside,
        "failed_checks": o.failed_checks,
        "duration_ms": o.duration_ms,
    })
}
