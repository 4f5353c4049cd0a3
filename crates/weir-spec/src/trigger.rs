//! `triggers:`: what starts a pipeline under `weir serve`. A manual run (`weir run`, the API) always can.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::api::Duration;
use crate::diagnostic::{Diagnostic, Pos};

/// One way a pipeline starts. Give exactly one of `cron`, `every`, `after` and `webhook`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// A cron expression: five fields (minute hour day month weekday), or six with seconds first. Common
    /// schedules: `*/15 * * * *` (every 15 minutes), `0 3 * * *` (daily at 3:00 AM), `0 6 * * MON` (weekly on
    /// Monday at 6:00 AM), `0 0 1 * *` (monthly on the 1st); `@hourly`, `@daily`, `@weekly`, `@monthly` too.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cron: Option<Spanned<String>>,
    /// The time zone a cron expression reads in, as an IANA name (`Europe/Paris`); UTC when absent.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// A fixed interval between runs, e.g. `15m`.
    #[serde(default)]
    pub every: Option<Duration>,
    /// What a schedule does about the fires it missed while `weir serve` was down.
    #[serde(default)]
    pub misfire: Misfire,
    /// Run once every listed pipeline has succeeded since this one last started: `after: [b, c]` waits for both.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub after: Vec<Spanned<String>>,
    /// `POST /hooks/{name}` starts a run; the fields of a JSON object body set variables.
    #[serde(default)]
    pub webhook: Option<Webhook>,
}

/// What a schedule does about fires missed while no `weir serve` ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Forget them; the next fire is the next one due.
    #[default]
    Skip,
    /// Run once at start-up to catch up, however many were missed.
    RunOnce,
}

/// A webhook trigger: its path and how a request proves it may start a run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The path segment in `POST /hooks/{name}`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// A bearer token the request carries in `Authorization: Bearer …`, usually `${HOOK_TOKEN}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token: Option<Spanned<String>>,
    /// Or an HMAC signature of the body in a header.
    #[serde(default)]
    pub hmac: Option<HmacAuth>,
    /// The largest body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// At most this many requests in each `per` (429 beyond, with `Retry-After`), e.g. `{ requests: 60, per: 1m }`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A request header naming each delivery (`Idempotency-Key`, GitHub's `X-GitHub-Delivery`). A request whose
    /// key was seen within `replay_window` is answered as the first was, without starting a second run.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// How long an idempotency key is remembered.
    #[serde(default = "default_replay_window")]
    pub replay_window: Duration,
}

/// A hook's request allowance.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

fn default_replay_window() -> Duration {
    Duration(std::time::Duration::from_secs(24 * 3600))
}

fn default_max_body() -> usize {
    1 << 20
}

/// An HMAC signature over the body (or `{timestamp}.{body}` with a timestamp header), hex-encoded, optionally
/// prefixed `sha256=` as GitHub sends it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The shared secret, usually `${HOOK_SECRET}`.
    #[schemars(with = "String")]
    pub secret: Spanned<String>,
    /// The header holding the signature.
    #[serde(default = "default_signature_header")]
    pub header: String,
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// A header holding the request's Unix time in seconds. With it the signature covers `{timestamp}.{body}` and a
    /// request older or newer than `tolerance` is refused, so a captured request cannot be replayed later.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default = "default_tolerance")]
    pub tolerance: Duration,
}

fn default_signature_header() -> String {
    "X-Signature".into()
}

fn default_tolerance() -> Duration {
    Duration(std::time::Duration::from_secs(300))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

/// A parsed cron expression with its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub cron: croner::Cron,
    pub timezone: chrono_tz::Tz,
}

impl CronSchedule {
    /// Parses `expression` (seconds optional) read in `timezone` (UTC when `None`).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Self, String> {
        let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Optional).build();
        let cron = parser.parse(expression).map_err(|e| format!("`{expression}` is not a cron expression: {e}"))?;
        let timezone = match timezone {
            Some(name) => {
                name.parse().map_err(|_| format!("`{name}` is not a time zone; use an IANA name like Europe/Paris"))?
            }
            None => chrono_tz::UTC,
        };
        Ok(Self { cron, timezone })
    }

    /// The first fire strictly after `after`.
    pub fn next_after(&self, after: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&chrono::Utc))
    }
}

impl Trigger {
    /// The mistakes in one trigger, for `check`.
    pub(crate) fn check(&self, index: usize, out: &mut Vec<Diagnostic>) {
        let at = self
            .cron
            .as_ref()
            .map(Pos::of)
            .or_else(|| self.after.first().map(Pos::of))
            .or_else(|| self.webhook.as_ref().map(|w| Pos::of(&w.name)))
            .unwrap_or_default();
        let kinds = [self.cron.is_some(), self.every.is_some(), !self.after.is_empty(), self.webhook.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            out.push(Diagnostic::new(
                at,
                format!("trigger {}: give exactly one of `cron`, `every`, `after` and `webhook`", index + 1),
            ));
        }
        if let Some(cron) = &self.cron
            && let Err(e) = CronSchedule::parse(&cron.value, self.timezone.as_ref().map(|t| t.value.as_str()))
        {
            let pos = match self.timezone.as_ref() {
                Some(tz) if e.contains("time zone") => Pos::of(tz),
                _ => Pos::of(cron),
            };
            out.push(Diagnostic::new(pos, format!("trigger {}: {e}", index + 1)));
        }
        if self.every.is_some_and(|d| d.0.is_zero()) {
            out.push(Diagnostic::new(at, format!("trigger {}: `every` must be longer than zero", index + 1)));
        }
        if let Some(hook) = &self.webhook
            && hook.token.is_some() == hook.hmac.is_some()
        {
            out.push(Diagnostic::at(
                &hook.name,
                format!("webhook `{}`: give exactly one of `token` and `hmac`", hook.name.value),
            ));
        }
        if let Some(limit) = self.webhook.as_ref().and_then(|h| h.rate_limit)
            && (limit.requests == 0 || limit.per.0.is_zero())
        {
            out.push(Diagnostic::new(
                at,
                format!("trigger {}: `rate_limit` needs requests and per above zero", index + 1),
            ));
        }
    }

    /// The values that may hold `${ENV}` references (secrets).
    pub fn secrets(&self) -> Vec<&Spanned<String>> {
        let Some(hook) = &self.webhook else { return Vec::new() };
        hook.token.iter().chain(hook.hmac.as_ref().map(|h| &h.secret)).collect()
    }
}
