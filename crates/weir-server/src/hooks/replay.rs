//! Replayed webhook deliveries: a request carrying an idempotency key, or a timestamped signature, seen before
//! within its window is answered as the first was, and starts nothing. The first request's work runs in its own
//! task, so a sender that gives up and retries gets the answer of the run already going rather than a second run.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sha2::{Digest, Sha256};

/// One delivery: a hook and the SHA-256 of what names the delivery (the key, or the signature).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    hook: String,
    id: [u8; 32],
}

impl Delivery {
    pub fn new(hook: &str, kind: &str, value: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        Self { hook: hook.to_string(), id: hasher.finalize().into() }
    }
}

/// A finished answer: what the first request was told.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

type Pending = Shared<BoxFuture<'static, Answer>>;

#[derive(Default)]
pub struct Replays {
    seen: Mutex<HashMap<Delivery, (Instant, Pending)>>,
}

impl Replays {
    /// The answer for `delivery`: the first request's, if one came within `window`, else `work`'s, remembered for
    /// `window` (an answer of a server error is forgotten, so a retry can succeed). The flag says it is a replay.
    pub async fn answer<F>(&self, delivery: Delivery, window: Duration, work: F) -> (Answer, bool)
    where
        F: Future<Output = Answer> + Send + 'static,
    {
        let (pending, replayed) = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, (until, _)| *until > Instant::now());
            match seen.get(&delivery) {
                Some((_, pending)) => (pending.clone(), true),
                None => {
                    let task = tokio::spawn(work);
                    let pending = async move {
                        task.await.unwrap_or_else(|e| Answer {
                            status: StatusCode::INTERNAL_SERVER_ERROR,
                            body: Bytes::from(serde_json::json!({ "error": e.to_string() }).to_string()),
                        })
                    }
                    .boxed()
                    .shared();
                    seen.insert(delivery.clone(), (Instant::now() + window, pending.clone()));
                    (pending, false)
                }
            }
        };
        let answer = pending.await;
        if answer.status.is_server_error() && !replayed {
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&delivery);
        }
        (answer, replayed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_delivery_runs_once_and_every_copy_gets_its_answer() {
        let replays = Arc::new(Replays::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let work = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Answer { status: StatusCode::OK, body: Bytes::from_static(b"{\"run\":1}") }
        };
        let window = Duration::from_secs(60);
        let first = tokio::spawn({
            let (replays, runs) = (replays.clone(), runs.clone());
            async move { replays.answer(Delivery::new("h", "key", "abc"), window, work(runs)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (copy, replayed) = replays.answer(Delivery::new("h", "key", "abc"), window, work(runs.clone())).await;
        let (original, first_replayed) = first.await.unwrap();
        assert_eq!((replayed, first_replayed), (true, false));
        assert_eq!((copy.status, copy.body), (original.status, original.body));
        let (_, other) = replays.answer(Delivery::new("other", "key", "abc"), window, work(runs.clone())).await;
        assert!(!other, "another hook's key is another delivery");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
