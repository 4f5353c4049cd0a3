//! `alerts:`: a Slack message or a JSON webhook when a run fails or sets records aside. Delivery is retried a few
//! times; an alert that still cannot be delivered is logged and never changes the run's outcome.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Url};
use serde_json::json;
use tracing::{info, warn};
use weir_spec::{AlertOn, Pipeline, Retry, interpolate_env};

use super::auth::Auth;
use super::client::{Client, Request};

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
    pub duration_ms: u64,
}

/// Sends every alert of `pipeline` whose event `outcome` matches.
pub async fn send_alerts(pipeline: &Pipeline, outcome: &RunOutcome) {
    for (i, alert) in pipeline.alerts.iter().enumerate() {
        let event = match &outcome.error {
            Some(_) if alert.on.contains(&AlertOn::Failure) => "failure",
            None if alert.on.contains(&AlertOn::DeadLetters) && outcome.records_set_aside > alert.dead_letters_above => {
                "dead_letters"
            }
            _ => continue,
        };
        let (target, body) = match (&alert.slack, &alert.webhook) {
            (Some(url), _) => (url, json!({ "text": slack_text(pipeline.name(), event, outcome) })),
            (None, Some(url)) => (url, webhook_body(pipeline.name(), event, outcome)),
            (None, None) => continue,
        };
        let which = if alert.slack.is_some() { "Slack" } else { "webhook" };
        match deliver(&target.value, body).await {
            Ok(()) => info!(pipeline = pipeline.name(), event, "Sent {which} alert {}", i + 1),
            Err(why) => warn!(pipeline = pipeline.name(), event, "Could not send {which} alert {}: {why}", i + 1),
        }
    }
}

async fn deliver(url: &str, body: serde_json::Value) -> Result<(), String> {
    let url = interpolate_env(url, |var| std::env::var(var).ok()).map_err(|var| format!("environment variable `{var}` is not set"))?;
    let url = Url::parse(&url).map_err(|_| "the alert URL is not a URL".to_string())?;
    let retry = Retry { max_attempts: 3, delay: weir_spec::Duration(Duration::from_millis(200)), ..Retry::default() };
    // The URL of a Slack webhook is its secret.
    let client = Client::new(Auth::None, Duration::from_secs(10), retry, None).map_err(|e| e.to_string())?.hiding_urls();
    let request = Request {
        method: Method::POST,
        url,
        headers: Vec::new(),
        body: Some(Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))),
    };
    client.send(&request).await.map(drop).map_err(|e| e.to_string())
}

fn slack_text(pipeline: &str, event: &str, o: &RunOutcome) -> String {
    let processed = format!("Records processed: {} extracted, {} loaded, {} set aside.", o.records_extracted, o.records_loaded, o.records_set_aside);
    match event {
        "failure" => format!(
            ":red_circle: Pipeline *{pipeline}* failed{}.\nError: {}\n{processed}",
            o.stage.as_ref().map(|s| format!(" at step `{s}`")).unwrap_or_default(),
            o.error.as_deref().unwrap_or("unknown"),
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
        "duration_ms": o.duration_ms,
    })
}
