//! Uploading packs: a bounded pool of threads puts finished packs to the backend while the
//! chunking threads go on, and hands back each pack's listing only once the pack is
//! durable, so an index file written from those listings never names a pack that is not
//! stored. Memory is bounded by the pool: a pack is handed to a free upload thread or its
//! sender waits, so at most one pack per connection is in flight, plus one per waiting
//! sender.
use crate::backend::{Backend, BackendError, Kind, Request};
use crate::repo::indexfile::PackEntries;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// A sealed pack on its way to the backend.
struct Job {
    bytes: Vec<u8>,
    listing: PackEntries,
}

/// Whether an upload has failed, and whether a caller has been told.
#[derive(Default)]
enum Failure {
    #[default]
    None,
    Untold(BackendError),
    Told,
}

#[derive(Default)]
struct Progress {
    /// Listings of packs stored since they were last taken.
    stored: Vec<PackEntries>,
    /// Packs handed over and neither stored nor failed yet.
    pending: usize,
    failure: Failure,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    /// Signalled whenever an upload ends.
    settled: Condvar,
}

impl Shared {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().expect("upload lock")
    }
}

/// A pool of `connections` upload threads for one backend. Dropping it waits for the
/// uploads in flight (their packs are stored but not indexed, as after a crash).
pub(crate) struct Uploader {
    jobs: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    location: String,
}

impl Uploader {
    pub(crate) fn start(backend: Arc<dyn Backend>, connections: usize) -> Uploader {
        let (jobs, queue) = sync_channel::<Job>(0);
        let queue = Arc::new(Mutex::new(queue));
        let shared = Arc::new(Shared::default());
        let threads = (0..connections.max(1))
            .map(|i| {
                let (queue, shared, backend) = (queue.clone(), shared.clone(), backend.clone());
                std::thread::Builder::new()
                    .name(format!("strata-upload-{i}"))
                    .spawn(move || upload(&*backend, &queue, &shared))
                    .expect("spawn an upload thread")
            })
            .collect();
        Uploader {
            jobs: Some(jobs),
            shared,
            threads,
            location: backend.location(),
        }
    }

    /// Hands `bytes`, the pack `listing` describes, to a free upload thread, waiting while
    /// every one is busy. Fails with an earlier upload's failure instead.
    pub(crate) fn submit(&self, bytes: Vec<u8>, listing: PackEntries) -> Result<(), BackendError> {
        {
            let mut progress = self.shared.progress();
            self.failure(&mut progress)?;
            progress.pending += 1;
        }
        let jobs = self.jobs.as_ref().expect("the pool is open until dropped");
        jobs.send(Job { bytes, listing })
            .expect("upload threads live as long as the pool");
        Ok(())
    }

    /// The listings of packs stored since the last call, in no particular order.
    pub(crate) fn take_stored(&self) -> Vec<PackEntries> {
        std::mem::take(&mut self.shared.progress().stored)
    }

    /// Waits until every pack handed over is stored, then returns the listings not taken
    /// yet; or the first failure.
    pub(crate) fn finish(&self) -> Result<Vec<PackEntries>, BackendError> {
        let mut progress = self.shared.progress();
        while progress.pending > 0 {
            progress = self.shared.settled.wait(progress).expect("upload lock");
        }
        self.failure(&mut progress)?;
        Ok(std::mem::take(&mut progress.stored))
    }

    /// The first failure, to the first caller; a short reference to it to later ones.
    fn failure(&self, progress: &mut Progress) -> Result<(), BackendError> {
        match std::mem::replace(&mut progress.failure, Failure::Told) {
            Failure::None => {
                progress.failure = Failure::None;
                Ok(())
            }
            Failure::Untold(e) => Err(e),
            Failure::Told => Err(BackendError::Failed(Box::new(Request {
                location: self.location.clone(),
                op: "put",
                path: Kind::Pack.dir().to_string(),
                detail: "an earlier pack upload failed".into(),
            }))),
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One upload thread: stores packs until the pool closes.
fn upload(backend: &dyn Backend, queue: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        let job = queue.lock().expect("upload queue lock").recv();
        let Ok(Job { bytes, listing }) = job else {
            return;
        };
        let result = backend.put(Kind::Pack, &listing.pack.0.to_hex(), &bytes);
        drop(bytes);
        let mut progress = shared.progress();
        match result {
            Ok(()) => progress.stored.push(listing),
            Err(e) => {
                if let Failure::None = progress.failure {
                    progress.failure = Failure::Untold(e);
                }
            }
        }
        progress.pending -= 1;
        shared.settled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::open;
    use crate::repo::id::{Id, PackId};
    use crate::repo::pack::PackFormat;

    fn listing(i: u8) -> PackEntries {
        PackEntries {
            pack: PackId(Id::hash_of(&[i])),
            format: PackFormat::for_version(3),
            length: None,
            blobs: Vec::new(),
        }
    }

    #[test]
    fn every_pack_handed_over_is_stored_before_finish_returns_its_listing() {
        let slow = [("fault.latency-ms".to_string(), "5".to_string())];
        let backend = open("memory:", &slow).unwrap();
        let uploader = Uploader::start(backend.clone(), 4);
        let mut listed = Vec::new();
        for i in 0..20u8 {
            uploader.submit(vec![i; 100], listing(i)).unwrap();
            listed.extend(uploader.take_stored());
        }
        listed.extend(uploader.finish().unwrap());
        assert_eq!(listed.len(), 20);
        for l in &listed {
            let name = l.pack.0.to_hex();
            assert_eq!(backend.head(Kind::Pack, &name).unwrap(), 100);
        }
        assert!(uploader.finish().unwrap().is_empty());
    }

    #[test]
    fn a_failed_upload_fails_finish_and_later_submits_and_its_pack_is_never_listed() {
        let third = [("fault.fail-write".to_string(), "3".to_string())];
        let backend = open("memory:", &third).unwrap();
        let uploader = Uploader::start(backend.clone(), 1);
        for i in 0..3u8 {
            uploader.submit(vec![i], listing(i)).unwrap();
        }
        let err = uploader.finish().unwrap_err();
        assert!(err.to_string().contains("memory:"), "{err}");
        assert!(uploader.submit(vec![9], listing(9)).is_err());
        assert!(uploader.finish().is_err());
        let stored: Vec<_> = uploader.take_stored();
        assert_eq!(stored.len(), 2, "the two stored packs stay listed");
        let failed = listing(2).pack.0.to_hex();
        assert!(
            backend
                .head(Kind::Pack, &failed)
                .unwrap_err()
                .is_not_found()
        );
    }
}
