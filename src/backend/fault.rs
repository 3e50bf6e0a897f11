//! A fault and latency injector around any backend, for tests and drills
//! (`-o fault.latency-ms=30 -o fault.transient=0.05 ...`): every request waits a fixed
//! plus a random delay, a share of requests fail transiently, and the N-th write can fail
//! for good. It sits inside [`super::retry::Retry`], so its transient failures are retried
//! like real ones. A transient fault of a write is injected after the write half of the
//! time, as a lost answer, so that retried writes meet their own first attempt.
use super::{Backend, BackendError, Entry, Kind, Request, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to inject; the default injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Faults {
    /// Added to every request.
    pub latency: Duration,
    /// A further delay drawn uniformly from zero to this.
    pub jitter: Duration,
    /// The share of requests (0 to 1) that fail transiently.
    pub transient: f64,
    /// The write (`put` or `replace`, counted from 1) that fails for good.
    pub fail_write: Option<u64>,
    /// Seeds the random choices, so that a run can be repeated.
    pub seed: u64,
}

impl Faults {
    /// Whether anything is injected at all (the seed alone injects nothing).
    pub(crate) fn any(&self) -> bool {
        !self.latency.is_zero()
            || !self.jitter.is_zero()
            || self.transient > 0.0
            || self.fail_write.is_some()
    }
}

pub(crate) struct Faulty {
    inner: Arc<dyn Backend>,
    faults: Faults,
    /// splitmix64 state.
    rng: Mutex<u64>,
    writes: AtomicU64,
}

/// Whether a transient fault is injected before the request, after it, or not at all.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    Before,
    After,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<dyn Backend>, faults: Faults) -> Faulty {
        let rng = Mutex::new(faults.seed);
        Faulty {
            inner,
            faults,
            rng,
            writes: AtomicU64::new(0),
        }
    }

    /// A uniform random number in [0, 1).
    fn random(&self) -> f64 {
        let mut state = self.rng.lock().expect("rng");
        *state = state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Waits as configured and draws this request's fault.
    fn delay_and_draw(&self, write: bool) -> Fault {
        let extra = self.faults.jitter.mul_f64(self.random());
        let wait = self.faults.latency + extra;
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        match (self.random() < self.faults.transient, write) {
            (false, _) => Fault::None,
            (true, true) if self.random() < 0.5 => Fault::After,
            (true, _) => Fault::Before,
        }
    }

    fn injected(&self, op: &'static str, kind: Kind, name: &str) -> BackendError {
        BackendError::Transient(Box::new(Request {
            location: self.inner.location(),
            op,
            path: format!("{kind} {name}"),
            detail: "injected fault".into(),
        }))
    }

    fn request<T>(
        &self,
        op: &'static str,
        kind: Kind,
        name: &str,
        write: bool,
        call: impl FnOnce(&dyn Backend) -> Result<T>,
    ) -> Result<T> {
        let fault = self.delay_and_draw(write);
        if fault == Fault::Before {
            return Err(self.injected(op, kind, name));
        }
        let done = call(self.inner.as_ref())?;
        match fault {
            Fault::After => Err(self.injected(op, kind, name)),
            _ => Ok(done),
        }
    }

    /// Counts a write, failing it for good if it is the chosen one.
    fn count_write(&self, op: &'static str, kind: Kind, name: &str) -> Result<()> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        match self.faults.fail_write == Some(n) {
            true => Err(BackendError::Failed(Box::new(Request {
                location: self.inner.location(),
                op,
                path: format!("{kind} {name}"),
                detail: format!("injected failure of write {n}"),
            }))),
            false => Ok(()),
        }
    }
}

impl Backend for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.request("create", Kind::Config, "config", false, |b| b.create())
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.count_write("write", kind, name)?;
        self.request("write", kind, name, true, |b| b.put(kind, name, data))
    }

    fn replace(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.count_write("replace", kind, name)?;
        self.request("replace", kind, name, true, |b| b.replace(kind, name, data))
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.request("read", kind, name, false, |b| b.get(kind, name))
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.request("read", kind, name, false, |b| {
            b.get_range(kind, name, offset, len)
        })
    }

    fn head(&self, kind: Kind, name: &str) -> Result<u64> {
        self.request("stat", kind, name, false, |b| b.head(kind, name))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Entry>> {
        self.request("list", kind, "", false, |b| b.list(kind))
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        self.request("remove", kind, name, true, |b| b.remove(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::super::object::ObjectBackend;
    use super::super::retry::{Backoff, Retry};
    use super::*;

    fn faulty(faults: Faults) -> Faulty {
        Faulty::new(Arc::new(ObjectBackend::memory()), faults)
    }

    fn quick(attempts: u32) -> Backoff {
        Backoff {
            attempts,
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    #[test]
    fn retried_faults_still_meet_the_contract() {
        let faults = Faults {
            transient: 0.3,
            seed: 7,
            ..Faults::default()
        };
        let b = Retry::new(Arc::new(faulty(faults)), quick(30));
        super::super::contract::run(&b);
    }

    #[test]
    fn a_share_of_requests_fails_transiently_and_the_same_seed_repeats_it() {
        let outcomes = |seed| {
            let b = faulty(Faults {
                transient: 0.25,
                seed,
                ..Faults::default()
            });
            (0..400)
                .map(|_| b.list(Kind::Snapshot).is_ok())
                .collect::<Vec<_>>()
        };
        let first = outcomes(1);
        let failed = first.iter().filter(|ok| !**ok).count();
        assert!((60..140).contains(&failed), "{failed} of 400 failed");
        assert_eq!(first, outcomes(1));
        assert_ne!(first, outcomes(2));
    }

    #[test]
    fn without_retries_to_spare_a_transient_fault_reaches_the_caller() {
        let always = Faults {
            transient: 1.0,
            ..Faults::default()
        };
        let b = Retry::new(Arc::new(faulty(always)), quick(3));
        let err = b.get(Kind::Key, "0a").unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("injected fault"), "{err}");
    }

    #[test]
    fn the_chosen_write_fails_for_good_and_is_not_retried() {
        let third = Faults {
            fail_write: Some(3),
            ..Faults::default()
        };
        let b = Retry::new(Arc::new(faulty(third)), quick(5));
        b.put(Kind::Snapshot, "01", b"1").unwrap();
        b.put(Kind::Snapshot, "02", b"2").unwrap();
        let err = b.put(Kind::Snapshot, "03", b"3").unwrap_err();
        assert!(matches!(err, BackendError::Failed(_)), "{err}");
        b.put(Kind::Snapshot, "03", b"3").unwrap();
        assert_eq!(b.list(Kind::Snapshot).unwrap().len(), 3);
    }

    #[test]
    fn latency_is_added_to_every_request() {
        let slow = faulty(Faults {
            latency: Duration::from_millis(20),
            ..Faults::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..5 {
            slow.list(Kind::Lock).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
