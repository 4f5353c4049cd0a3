//! The retry policy applied: the waits between attempts, and a loop that retries what a policy covers.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use datafusion::error::{DataFusionError, Result};
use tracing::warn;
use weir_spec::{Backoff, Retry};

use crate::connector::{StepContext, Transient};
use crate::metrics::StepCounters;

/// The waits before each retry under `retry`: fixed, or doubling with jitter up to `max_delay`.
pub fn retry_delays(retry: &Retry) -> Box<dyn Iterator<Item = Duration> + Send> {
    match retry.backoff {
        Backoff::Fixed => Box::new(ConstantBuilder::default().with_delay(retry.delay.0).without_max_times().build()),
        Backoff::Exponential => Box::new(
            ExponentialBuilder::default()
                .with_min_delay(retry.delay.0)
                .with_max_delay(retry.max_delay.0)
                .with_jitter()
                .without_max_times()
                .build(),
        ),
    }
}

/// Runs `attempt` until it succeeds, fails in a way that is not [`Transient`] or that `retry` does not cover, or
/// runs out of attempts. Each retried failure is logged with its reason and counted in `counters`. The error comes
/// back named by `what`.
pub async fn with_retries<T, F, Fut>(retry: &Retry, what: &str, counters: &StepCounters, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_loop(retry, what, counters, attempt, true).await
}

/// [`with_retries`] for work whose own errors already say where they happened: an error on the first attempt that
/// is not retried comes back as it was.
pub async fn with_retries_unnamed<T, F, Fut>(
    retry: &Retry,
    what: &str,
    counters: &StepCounters,
    attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_loop(retry, what, counters, attempt, false).await
}

async fn retry_loop<T, F, Fut>(
    retry: &Retry,
    what: &str,
    counters: &StepCounters,
    mut attempt: F,
    name_first: bool,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delays = retry_delays(retry);
    let mut made = 1;
    loop {
        let err = match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let covered = Transient::find(&err).filter(|t| retry.retry_on.contains(&t.kind));
        match (covered, delays.next()) {
            (Some(t), Some(wait)) if made < retry.max_attempts => {
                warn!(attempt = made, wait_ms = wait.as_millis() as u64, "{what}: {}; retrying", t.message);
                counters.add_retry();
                tokio::time::sleep(wait).await;
                made += 1;
            }
            _ if made > 1 => {
                return Err(DataFusionError::Context(format!("{what} failed after {made} attempts"), Box::new(err)));
            }
            _ if name_first => return Err(DataFusionError::Context(what.to_string(), Box::new(err))),
            _ => return Err(err),
        }
    }
}

/// How a step waits out a database that refuses or drops connections for a moment: its retry policy, and the
/// counters its retries are counted in.
#[derive(Debug, Clone)]
pub struct Patience {
    retry: Retry,
    counters: std::sync::Arc<StepCounters>,
}

impl Patience {
    /// The step's own policy, else the pipeline's (`settings.retry`), else the default.
    pub fn of(cx: &StepContext, own: Option<&Retry>) -> Self {
        Self { retry: own.or(cx.retry.as_ref()).cloned().unwrap_or_default(), counters: cx.counters() }
    }

    /// `retry` with counters of its own: for a scan rebuilt on a cluster's executor, whose retries the run that
    /// sent it cannot count.
    pub fn detached(retry: Retry) -> Self {
        Self { retry, counters: Default::default() }
    }

    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// Opens something (a connection), retrying the failures the policy covers.
    pub async fn open<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        with_retries(&self.retry, what, &self.counters, attempt).await
    }
}
