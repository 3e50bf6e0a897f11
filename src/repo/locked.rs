//! A repository under a held lock: [`Locked`] owns its [`LockGuard`] (refreshed in the
//! background, removed on drop) and lends the repository for reading. Every write to the
//! repository (packs, index files, snapshots, dictionaries, and their removal) is a method
//! of `Locked` or takes one, so no write can happen without a lock, and
//! [`Locked::ensure_valid`] always has a lock to check.
use crate::backend::{BackendError, Kind};
use crate::repo::id::{Id, IndexId, SnapshotId};
use crate::repo::indexfile::{self, PackEntries};
use crate::repo::lock::{LockError, LockGuard, LockMode};
use crate::repo::repository::{IndexedRepo, Repository, Result};
use crate::repo::snapshot::Snapshot;
use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

/// `repo` (a [`Repository`] or an [`IndexedRepo`]) while this value holds a lock on it.
pub struct Locked<'a, R = Repository> {
    repo: &'a R,
    guard: LockGuard,
}

impl<R> Deref for Locked<'_, R> {
    type Target = R;
    fn deref(&self) -> &R {
        self.repo
    }
}

impl<'a, R: AsRef<Repository>> Locked<'a, R> {
    /// Takes a lock on `repo` for `command`, waiting up to `wait` for conflicting holders.
    /// `cache`: the local cache directory, where what this machine saw of others' locks is
    /// kept.
    pub(crate) fn take(
        repo: &'a R,
        mode: LockMode,
        command: &str,
        wait: Duration,
        cache: Option<&Path>,
    ) -> Result<Locked<'a, R>> {
        let guard = repo.as_ref().acquire_lock(mode, command, wait, cache)?;
        Locked::new(repo, guard)
    }

    /// `repo` under `guard`, a lock taken on it before (say, before its index was loaded);
    /// a guard taken on another repository is refused.
    pub fn new(repo: &'a R, guard: LockGuard) -> Result<Locked<'a, R>> {
        match guard.is_on(&repo.as_ref().shared_backend()) {
            true => Ok(Locked { repo, guard }),
            false => Err(LockError::OtherRepository.into()),
        }
    }

    /// The locked repository, for as long as it is borrowed.
    pub(crate) fn repo(&self) -> &'a R {
        self.repo
    }

    /// Fails unless this build writes the repository's format and the lock can still be
    /// trusted (see `LockGuard::ensure_valid`). Called before every write others must be
    /// able to rely on.
    pub fn ensure_valid(&self) -> Result<()> {
        self.base().ensure_writable()?;
        Ok(self.guard.ensure_valid()?)
    }

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        self.ensure_valid()?;
        self.base().save_json(Kind::Snapshot, snap).map(SnapshotId)
    }

    /// Removes a snapshot, once the lock is checked still valid: a command suspended past
    /// its lock's lifetime must not remove what others may now rely on.
    pub(crate) fn remove_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.ensure_valid()?;
        Ok(self.remove(Kind::Snapshot, &id.0.to_hex())?)
    }

    /// Stores an object (a pack, a dictionary, an object rewritten by `migrate`).
    pub(crate) fn put(
        &self,
        kind: Kind,
        name: &str,
        bytes: &[u8],
    ) -> std::result::Result<(), BackendError> {
        self.base().backend().put(kind, name, bytes)
    }

    /// Removes an object (a snapshot, index file, pack or dictionary).
    pub(crate) fn remove(&self, kind: Kind, name: &str) -> std::result::Result<(), BackendError> {
        self.base().backend().remove(kind, name)
    }

    fn base(&self) -> &'a Repository {
        self.repo.as_ref()
    }
}

impl Locked<'_, IndexedRepo> {
    /// Writes an index file for packs already stored, then records it in the local index.
    pub(crate) fn save_index_file(&self, packs: &[PackEntries]) -> Result<IndexId> {
        self.ensure_valid()?;
        let sealed = indexfile::encode(self.key(), self.config().version, packs);
        let id = Id::hash_of(&sealed);
        self.put(Kind::Index, &id.to_hex(), &sealed)?;
        self.index().add_file(&id.to_hex(), packs)?;
        Ok(IndexId(id))
    }
}

/// An exclusive lock on `repo`, for tests that write to a repository.
#[cfg(test)]
pub(crate) fn exclusive<R: AsRef<Repository>>(repo: &R) -> Locked<'_, R> {
    Locked::take(repo, LockMode::Exclusive, "test", Duration::ZERO, None).expect("test lock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::repository::RepoError;
    use crate::repo::repository::tests::test_repo;

    #[test]
    fn a_guard_vouches_only_for_the_repository_it_was_taken_on() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (test_repo(one.path()), test_repo(two.path()));
        let guard = a.acquire_lock(LockMode::Shared, "t", Duration::ZERO, None);
        let refused = Locked::new(&b, guard.unwrap());
        assert!(matches!(
            refused,
            Err(RepoError::Lock(LockError::OtherRepository))
        ));
        let guard = a.acquire_lock(LockMode::Shared, "t", Duration::ZERO, None);
        Locked::new(&a, guard.unwrap())
            .unwrap()
            .ensure_valid()
            .unwrap();
    }

    #[test]
    fn ensure_valid_fails_once_the_lock_object_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let lock = exclusive(&repo);
        lock.ensure_valid().unwrap();
        for found in repo.backend().list(Kind::Lock).unwrap() {
            repo.backend().remove(Kind::Lock, &found.name).unwrap();
        }
        let lost = |r: Result<()>| matches!(r, Err(RepoError::Lock(LockError::Lost(_))));
        assert!(lost(lock.ensure_valid()));
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/x"], "tree": "00".repeat(32),
            "program_version": "t"});
        let snap: Snapshot = serde_json::from_value(json).unwrap();
        assert!(lost(lock.save_snapshot(&snap).map(|_| ())));
        assert!(repo.snapshot_ids().unwrap().is_empty());
    }
}
