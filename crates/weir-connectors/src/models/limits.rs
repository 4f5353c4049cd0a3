//! Requests-per-minute and tokens-per-minute limits, as providers set them: each a bucket that holds a minute's
//! allowance and refills evenly, so a run starts at full speed and then keeps to the rate. A request takes its
//! estimated tokens before it is sent and settles the difference once the server has counted them; a bucket may go
//! into debt, which the next requests wait out.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// One allowance per minute.
#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    /// What may be spent now; below zero after an estimate fell short.
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: f64) -> Self {
        Self { per_minute, level: per_minute, at: Instant::now() }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.level = (self.level + earned).min(self.per_minute);
        self.at = now;
    }

    /// How long until `amount` (at most a minute's allowance) can be spent.
    fn wait_for(&mut self, amount: f64) -> Duration {
        self.refill();
        let amount = amount.min(self.per_minute);
        if self.level >= amount {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((amount - self.level) * 60.0 / self.per_minute)
    }
}

/// The limits of one step.
#[derive(Debug)]
pub struct Limits {
    requests: Option<Mutex<Bucket>>,
    tokens: Option<Mutex<Bucket>>,
}

impl Limits {
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Self {
        Self {
            requests: requests_per_minute.map(|n| Mutex::new(Bucket::new(f64::from(n)))),
            tokens: tokens_per_minute.map(|n| Mutex::new(Bucket::new(n as f64))),
        }
    }

    /// Waits until a request estimated at `tokens` may be sent, and takes its share.
    pub async fn admit(&self, tokens: u64) {
        for (bucket, amount) in [(&self.requests, 1.0), (&self.tokens, tokens as f64)] {
            let Some(bucket) = bucket else { continue };
            // Holding the lock while waiting keeps requests in the order they asked.
            let mut bucket = bucket.lock().await;
            loop {
                let wait = bucket.wait_for(amount);
                if wait.is_zero() {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
            bucket.level -= amount;
        }
    }

    /// Settles a request's tokens once counted: `estimated` was taken, `used` is what the server counted.
    pub async fn settle(&self, estimated: u64, used: u64) {
        if let Some(bucket) = &self.tokens {
            bucket.lock().await.level += estimated as f64 - used as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_minutes_allowance_goes_at_once_then_at_the_rate() {
        // 1,200 a minute is one every 50 ms once the first 1,200 are spent.
        let limits = Limits::new(Some(1200), None);
        let start = std::time::Instant::now();
        for _ in 0..1200 {
            limits.admit(0).await;
        }
        assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
        for _ in 0..4 {
            limits.admit(0).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(190), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn tokens_spent_beyond_the_estimate_are_waited_out() {
        let limits = Limits::new(None, Some(6000));
        limits.admit(100).await;
        // The server counted 6,000, a minute's allowance: the next 100 tokens take a second to earn.
        limits.settle(100, 6000).await;
        let start = std::time::Instant::now();
        limits.admit(100).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "{waited:?}");
    }
}
