//! A bounded in-memory cache of decoded blobs (file chunks or trees) for the mount: the least
//! recently used entries go once the total weight passes the budget, and concurrent requests
//! for one blob share a single fetch.
use crate::repo::id::BlobId;
use crate::repo::repository::RepoError;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// A fetch's result, shared by everyone who waited for it.
pub(super) type Fetched<V> = Result<V, Arc<RepoError>>;

type Flight<V> = Arc<OnceLock<Fetched<V>>>;

pub(super) struct Cache<V> {
    budget: u64,
    weigh: fn(&V) -> u64,
    lru: Mutex<Lru<V>>,
    flights: Mutex<HashMap<BlobId, Flight<V>>>,
}

struct Lru<V> {
    entries: HashMap<BlobId, Held<V>>,
    /// Entries by last use, oldest first.
    order: BTreeMap<u64, BlobId>,
    clock: u64,
    weight: u64,
}

struct Held<V> {
    value: V,
    weight: u64,
    used: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<V: Clone> Cache<V> {
    /// A cache holding up to `budget` bytes as measured by `weigh` (but always the newest entry).
    pub(super) fn new(budget: u64, weigh: fn(&V) -> u64) -> Cache<V> {
        Cache {
            budget,
            weigh,
            lru: Mutex::new(Lru {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                clock: 0,
                weight: 0,
            }),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value of `id`, or the result of `fetch` (run once however many threads ask
    /// at the same time). Errors are handed to the waiting callers but not cached.
    pub(super) fn get(
        &self,
        id: BlobId,
        fetch: impl FnOnce() -> Result<V, RepoError>,
    ) -> Fetched<V> {
        if let Some(v) = lock(&self.lru).touch(&id) {
            return Ok(v);
        }
        let flight = lock(&self.flights).entry(id).or_default().clone();
        let result = flight
            .get_or_init(|| {
                let fetched = fetch().map_err(Arc::new);
                if let Ok(v) = &fetched {
                    self.insert(id, v.clone());
                }
                fetched
            })
            .clone();
        let mut flights = lock(&self.flights);
        if flights.get(&id).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&id);
        }
        result
    }

    /// Whether `id` is cached or being fetched.
    pub(super) fn has(&self, id: &BlobId) -> bool {
        lock(&self.lru).entries.contains_key(id) || lock(&self.flights).contains_key(id)
    }

    /// Total weight of the cached entries.
    #[cfg(test)]
    pub(super) fn weight(&self) -> u64 {
        lock(&self.lru).weight
    }

    fn insert(&self, id: BlobId, value: V) {
        let weight = (self.weigh)(&value);
        let mut lru = lock(&self.lru);
        lru.add(id, value, weight);
        while lru.weight > self.budget && lru.entries.len() > 1 {
            lru.evict_oldest();
        }
    }
}

impl<V: Clone> Lru<V> {
    fn touch(&mut self, id: &BlobId) -> Option<V> {
        self.clock += 1;
        let held = self.entries.get_mut(id)?;
        self.order.remove(&held.used);
        held.used = self.clock;
        self.order.insert(held.used, *id);
        Some(held.value.clone())
    }

    fn add(&mut self, id: BlobId, value: V, weight: u64) {
        if self.entries.contains_key(&id) {
            return;
        }
        self.clock += 1;
        self.order.insert(self.clock, id);
        self.weight += weight;
        let used = self.clock;
        self.entries.insert(
            id,
            Held {
                value,
                weight,
                used,
            },
        );
    }

    fn evict_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_first()
            && let Some(held) = self.entries.remove(&id)
        {
            self.weight -= held.weight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn id(n: u8) -> BlobId {
        BlobId(Id([n; 32]))
    }

    fn bytes(v: &Arc<Vec<u8>>) -> u64 {
        v.len() as u64
    }

    fn value(len: usize) -> Result<Arc<Vec<u8>>, RepoError> {
        Ok(Arc::new(vec![7u8; len]))
    }

    #[test]
    fn least_recently_used_entries_leave_once_over_budget() {
        let cache = Cache::new(300, bytes);
        for n in 0..3 {
            cache.get(id(n), || value(100)).unwrap();
        }
        cache.get(id(0), || panic!("cached")).unwrap();
        cache.get(id(3), || value(100)).unwrap();
        assert_eq!(cache.weight(), 300);
        assert!(cache.has(&id(0)) && cache.has(&id(2)) && cache.has(&id(3)));
        assert!(!cache.has(&id(1)), "the least recently used entry went");
        cache.get(id(9), || value(1000)).unwrap();
        assert_eq!(cache.weight(), 1000, "an entry over budget stays alone");
    }

    #[test]
    fn concurrent_requests_share_one_fetch_and_errors_are_not_kept() {
        let cache = Cache::new(1 << 20, bytes);
        let fetches = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let v = cache.get(id(1), || {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        value(10)
                    });
                    assert_eq!(v.unwrap().len(), 10);
                });
            }
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let err = cache.get(id(2), || Err(RepoError::MissingBlob(id(2))));
        let err = err.expect_err("the fetch failed");
        assert!(matches!(*err, RepoError::MissingBlob(_)));
        assert!(!cache.has(&id(2)));
        assert_eq!(cache.get(id(2), || value(5)).unwrap().len(), 5);
    }
}
