//! Fixed-window counters: sign-in failures per client address, requests per webhook.
//!
//! Written here rather than taken from a rate-limiting crate because sign-in needs to ask "is this address
//! blocked?" before checking a credential and to count only the failures; the crates count every check.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many events a key may have in each window of `per`.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub events: u32,
    pub per: Duration,
}

/// Events counted per key, each key's window starting at its first event.
#[derive(Debug)]
pub struct Windows<K> {
    counts: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Self { counts: Mutex::new(HashMap::new()) }
    }
}

/// Keys are forgotten once their window is over; the map is swept when it grows past this.
const SWEEP_AT: usize = 4096;

impl<K: Hash + Eq> Windows<K> {
    /// How long until `key` may have events again, if it has used its allowance.
    pub fn blocked(&self, key: &K, allowance: Allowance) -> Option<Duration> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = counts.get(key)?;
        let elapsed = start.elapsed();
        (elapsed < allowance.per && *n >= allowance.events).then(|| allowance.per - elapsed)
    }

    /// Counts one event of `key`.
    pub fn count(&self, key: K, allowance: Allowance) {
        let _ = self.counted(key, allowance, false);
    }

    /// Counts one event of `key` unless it has used its allowance; then says how long until it may again.
    pub fn admit(&self, key: K, allowance: Allowance) -> Result<(), Duration> {
        self.counted(key, allowance, true)
    }

    fn counted(&self, key: K, allowance: Allowance, refuse_over: bool) -> Result<(), Duration> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= SWEEP_AT {
            counts.retain(|_, (start, _)| start.elapsed() < allowance.per);
        }
        let (start, n) = counts.entry(key).or_insert((Instant::now(), 0));
        if start.elapsed() >= allowance.per {
            (*start, *n) = (Instant::now(), 0);
        }
        if refuse_over && *n >= allowance.events {
            return Err(allowance.per.saturating_sub(start.elapsed()));
        }
        *n += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_blocked_after_its_allowance_until_the_window_ends() {
        let windows = Windows::default();
        let allowance = Allowance { events: 2, per: Duration::from_millis(200) };
        assert!(windows.admit("a", allowance).is_ok());
        assert!(windows.admit("a", allowance).is_ok());
        assert!(windows.admit("a", allowance).is_err());
        assert!(windows.admit("b", allowance).is_ok(), "keys count apart");
        std::thread::sleep(Duration::from_millis(220));
        assert!(windows.blocked(&"a", allowance).is_none());
        assert!(windows.admit("a", allowance).is_ok());
    }
}
