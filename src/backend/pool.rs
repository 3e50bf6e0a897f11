//! Threads for requests: parallel reads of many small objects (index files, snapshots,
//! trees) run on a thread pool with as many threads as the store has connections when the
//! store is remote, so that many requests are in flight rather than one per core; on a local
//! disk they run on the current pool.
use super::Backend;
use std::sync::{Arc, Mutex};

/// The pool to run parallel requests on (the current one by default).
#[derive(Default)]
pub(crate) struct IoPool {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl IoPool {
    /// For `backend`: a pool of its connections' size if it is remote and that is more
    /// threads than the current pool has. Pools are built once per size and process, so the
    /// many parallel reads of one command (key files, locks, index files, snapshots, trees)
    /// share their threads rather than each starting its own.
    pub(crate) fn for_backend(backend: &dyn Backend) -> IoPool {
        let threads = backend.connections();
        if !backend.is_remote() || threads <= rayon::current_num_threads() {
            return IoPool::default();
        }
        static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == threads) {
            return IoPool {
                pool: Some(pool.clone()),
            };
        }
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("strata-io-{i}"))
            .build();
        let pool = built.ok().map(Arc::new);
        if let Some(pool) = &pool {
            pools.push((threads, pool.clone()));
        }
        IoPool { pool }
    }

    /// Runs `f` on this pool in the background.
    pub(crate) fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        match &self.pool {
            Some(pool) => pool.spawn(f),
            None => rayon::spawn(f),
        }
    }

    /// Runs `f` (whose parallel iterators then use this pool).
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_stores_get_a_pool_of_their_connections_and_local_ones_the_current_pool() {
        let remote = super::super::open("memory:", &[("connections".into(), "9".into())]);
        let pool = IoPool::for_backend(&*remote.unwrap());
        assert_eq!(pool.install(rayon::current_num_threads), 9);
        let dir = tempfile::tempdir().unwrap();
        let local = super::super::local::LocalBackend::new(dir.path()).with_connections(9);
        let pool = IoPool::for_backend(&local);
        let current = rayon::current_num_threads();
        assert_eq!(pool.install(rayon::current_num_threads), current);
    }
}
