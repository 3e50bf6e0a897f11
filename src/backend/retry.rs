//! Repeats requests that failed transiently ([`BackendError::is_transient`]: timeouts,
//! dropped connections, throttling, 5xx answers, injected faults), after a jittered
//! exponential back-off, and no other failure. Every remote backend is wrapped in it, with
//! the fault injector (if any) inside, so injected faults take the same path as real ones.
//! Repeating is safe because every request is idempotent: `put` accepts an object that its
//! own earlier attempt created (see the contract in [`super::Backend`]).
use super::{Backend, Entry, Kind, Result};
use rand_core::{OsRng, RngCore};
use std::sync::Arc;
use std::time::Duration;

/// How often and how long to wait: attempt `n` (from 1) after a failure waits a random time
/// between half and all of `min(first * 2^(n-1), max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            attempts: 8,
            first: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The pause after failed attempt `attempt` (from 1), with `random` drawn uniformly.
    fn pause(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let half = ceiling / 2;
        let spread = half.as_micros().max(1) as u64;
        half + Duration::from_micros(random % spread)
    }
}

pub(crate) struct Retry {
    inner: Arc<dyn Backend>,
    backoff: Backoff,
}

impl Retry {
    pub(crate) fn new(inner: Arc<dyn Backend>, backoff: Backoff) -> Retry {
        Retry { inner, backoff }
    }

    fn again<T>(&self, request: impl Fn(&dyn Backend) -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            match request(self.inner.as_ref()) {
                Err(e) if e.is_transient() && attempt < self.backoff.attempts.max(1) => {
                    std::thread::sleep(self.backoff.pause(attempt, OsRng.next_u64()));
                    attempt += 1;
                }
                done => return done,
            }
        }
    }
}

impl Backend for Retry {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.again(|b| b.create())
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.again(|b| b.put(kind, name, data))
    }

    fn replace(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.again(|b| b.replace(kind, name, data))
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.again(|b| b.get(kind, name))
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.again(|b| b.get_range(kind, name, offset, len))
    }

    fn head(&self, kind: Kind, name: &str) -> Result<u64> {
        self.again(|b| b.head(kind, name))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Entry>> {
        self.again(|b| b.list(kind))
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        self.again(|b| b.remove(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_exponentially_with_jitter_up_to_the_ceiling() {
        let b = Backoff {
            attempts: 5,
            first: Duration::from_millis(100),
            max: Duration::from_millis(700),
        };
        assert_eq!(b.pause(1, 0), Duration::from_millis(50));
        assert_eq!(
            b.pause(1, u64::MAX),
            Duration::from_micros(50_000 + u64::MAX % 50_000)
        );
        assert!(b.pause(2, 7) >= Duration::from_millis(100));
        assert!(b.pause(2, u64::MAX) < Duration::from_millis(200));
        assert!(b.pause(30, u64::MAX) < Duration::from_millis(700));
        assert!(b.pause(30, 0) >= Duration::from_millis(350));
    }
}
