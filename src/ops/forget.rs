//! Forgetting snapshots: which ones go (those named, or those a retention policy does not
//! keep, with the MongoDB oplog slices no kept snapshot needs) and removing them while the
//! repository's lock is still valid. Only snapshot objects are removed, never packs.
use crate::cancel::Cancel;
use crate::repo::id::SnapshotId;
use crate::repo::locked::Locked;
use crate::repo::repository::{RepoError, Repository};
use crate::select::policy::{self, Entry, Group, GroupBy, Policy, PolicyError, Span};
use crate::sources::mongodb::retention::{self, SliceVerdict};
use chrono::{DateTime, TimeZone, Utc};

/// What `forget` removes, and why it keeps the rest.
pub struct Plan<'a> {
    /// Per group of snapshots, what the policy keeps (and why) and removes; empty when
    /// snapshots were named.
    pub groups: Vec<Group<'a>>,
    /// Every oplog slice, kept or not, with the reasons.
    pub slices: Vec<SliceVerdict>,
    pub remove: Vec<&'a Entry>,
}

impl<'a> Plan<'a> {
    /// Removing exactly the snapshots `chosen`.
    pub fn named(chosen: &'a [Entry]) -> Plan<'a> {
        Plan {
            groups: Vec::new(),
            slices: Vec::new(),
            remove: chosen.iter().collect(),
        }
    }

    /// What `policy` (applied per group `by`) removes of `all`, the repository's readable
    /// snapshots, and the oplog slices that go with them or are older than
    /// `oplog_within`; with only `oplog_within`, every backup is kept. Calendar buckets are
    /// those of `tz`.
    pub fn by_policy<Tz: TimeZone>(
        all: &'a [Entry],
        policy: &Policy,
        oplog_within: Option<Span>,
        by: GroupBy,
        tz: &Tz,
        now: DateTime<Utc>,
    ) -> Result<Plan<'a>, PolicyError> {
        let groups = match policy.is_empty() && oplog_within.is_some() {
            true => Vec::new(),
            false => policy::apply(all, policy, by, tz, now)?,
        };
        let mut remove: Vec<&Entry> = groups.iter().flat_map(|g| g.remove.clone()).collect();
        let gone: Vec<SnapshotId> = remove.iter().map(|e| e.0).collect();
        let slices = retention::decide(all, &gone, oplog_within, tz, now);
        let dropped = slices.iter().filter(|v| !v.keep).map(|v| v.slice.id);
        remove.extend(dropped.filter_map(|id| all.iter().find(|e| e.0 == id)));
        Ok(Plan {
            groups,
            slices,
            remove,
        })
    }
}

/// The snapshots `specs` name (id prefixes or `latest`), each once, in the order given.
pub fn resolve(repo: &Repository, specs: &[String]) -> Result<Vec<Entry>, RepoError> {
    let mut chosen: Vec<Entry> = Vec::new();
    for spec in specs {
        let entry = repo.find_snapshot(spec)?;
        if chosen.iter().all(|(id, _)| *id != entry.0) {
            chosen.push(entry);
        }
    }
    Ok(chosen)
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub removed: Vec<SnapshotId>,
    /// Snapshots whose object could not be removed, with the error.
    pub failed: Vec<(SnapshotId, String)>,
}

/// Removes the plan's snapshots. Before each removal the repository's lock must still be
/// valid (`Locked::ensure_valid`): a forget that was suspended past the lock's lifetime, or
/// whose lock was removed, stops with an error before removing anything more, as does one
/// that is cancelled (with `RepoError::Cancelled`).
pub fn apply<R: AsRef<Repository>>(
    lock: &Locked<'_, R>,
    plan: &Plan,
    cancel: &Cancel,
) -> Result<Applied, RepoError> {
    let mut applied = Applied::default();
    for (id, _) in &plan.remove {
        cancel.check()?;
        match lock.remove_snapshot(*id) {
            Ok(()) => applied.removed.push(*id),
            Err(RepoError::Backend(e)) => applied.failed.push((*id, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Kind;
    use crate::repo::lock::LockMode;
    use crate::repo::repository::tests::test_repo;
    use crate::select::policy::tests::snap;
    use std::time::Duration;

    #[test]
    fn a_forget_whose_lock_is_no_longer_valid_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let lock = repo
            .lock(LockMode::Exclusive, "forget", Duration::ZERO, None)
            .unwrap();
        for nr in 1..=3 {
            let (_, s) = snap(nr, "2024-05-01T12:00:00Z", "h", &["/data"]);
            lock.save_snapshot(&s).unwrap();
        }
        let all = repo.snapshots().unwrap().0;
        let plan = Plan::named(&all);
        // The lock is removed (`unlock --remove-all` elsewhere) while forget is suspended.
        for found in repo.backend().list(Kind::Lock).unwrap() {
            repo.backend().remove(Kind::Lock, &found.name).unwrap();
        }
        let never = Cancel::default();
        let err = apply(&lock, &plan, &never).expect_err("the lock is gone");
        assert!(matches!(err, RepoError::Lock(_)), "{err}");
        assert_eq!(repo.snapshot_ids().unwrap().len(), 3, "nothing removed");
        drop(lock);

        let lock = repo
            .lock(LockMode::Exclusive, "forget", Duration::ZERO, None)
            .unwrap();
        let cancelled = Cancel::default();
        cancelled.cancel();
        let err = apply(&lock, &plan, &cancelled).expect_err("cancelled");
        assert!(matches!(err, RepoError::Cancelled(_)), "{err}");
        assert_eq!(repo.snapshot_ids().unwrap().len(), 3, "nothing removed");
        let applied = apply(&lock, &plan, &never).unwrap();
        assert_eq!(applied.removed.len(), 3);
        assert!(applied.failed.is_empty());
        assert!(repo.snapshot_ids().unwrap().is_empty());
    }
}
