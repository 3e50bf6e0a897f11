//! `strata migrate`: upgrades a version 1 or 2 repository in place to version 3, crash-safe
//! like prune. Data packs are not rewritten. Every new object is written before `config` is
//! replaced (the commit point); the old objects are removed after it. Objects of the two eras
//! are told apart by the associated data they open with, so a rerun after a crash at any point
//! finishes the job: before the commit it drops the new objects of the crashed run and starts
//! over, after it it removes what is left of the old era.
use crate::backend::Kind;
use crate::cancel::Cancel;
use crate::repo::config::{BOUND_OBJECTS_VERSION, FORMAT_VERSION};
use crate::repo::crypto::{MasterKey, ObjectKind};
use crate::repo::id::{Id, SnapshotId};
use crate::repo::indexfile;
use crate::repo::key::KeyFile;
use crate::repo::lock::{self, LockGuard, LockMode};
use crate::repo::locked::Locked;
use crate::repo::repository::{RepoError, Repository, Result, seal_config};
use crate::repo::snapshot::Snapshot;
use std::collections::HashMap;
use std::time::Duration;

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrateReport {
    /// The version the repository had when this run started.
    pub from: u32,
    pub snapshots: usize,
    pub index_files: usize,
    pub key_files: usize,
    /// Old-era objects (and a crashed run's new ones) removed.
    pub removed: usize,
}

/// How a migration runs.
#[derive(Default)]
pub struct MigrateOptions<'a> {
    /// How long to wait for the other era's exclusive lock.
    pub wait: Duration,
    /// Stops the migration (with `RepoError::Cancelled`) at the end of the step running when
    /// it is cancelled; a later run finishes the job, as after a crash.
    pub cancel: Cancel,
    /// Told each step's name as it ends (the CLI's failpoint for crash tests).
    pub step: Option<&'a dyn Fn(&str)>,
}

impl MigrateOptions<'_> {
    /// The end of step `name`: the hook is told, then a cancelled migration stops.
    fn done(&self, name: &str) -> Result<()> {
        if let Some(step) = self.step {
            step(name);
        }
        Ok(self.cancel.check()?)
    }
}

/// Which era's associated data an object opens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Era {
    Old,
    New,
    /// Both (nothing about it changes with the version) or neither (damaged).
    Same,
}

/// The repository's key as it reads old objects and as it writes new ones.
struct Keys {
    old: MasterKey,
    new: MasterKey,
}

impl Keys {
    fn era(&self, opens: impl Fn(&MasterKey) -> bool) -> Era {
        match (opens(&self.old), opens(&self.new)) {
            (true, false) => Era::Old,
            (false, true) => Era::New,
            _ => Era::Same,
        }
    }
}

/// Upgrades the repository to version 3 (or finishes an interrupted upgrade), holding an
/// exclusive lock that clients of both versions see: the caller's `repo`, an exclusive lock
/// in the repository's current encryption, and one this takes (waiting up to `wait`) in the
/// other era's.
pub fn migrate(repo: &Locked<'_>, opts: &MigrateOptions) -> Result<MigrateReport> {
    let old_version = repo.version().min(BOUND_OBJECTS_VERSION - 1);
    let keys = Keys {
        old: repo.key().for_repository(old_version, repo.config().keys),
        new: repo
            .key()
            .for_repository(FORMAT_VERSION, repo.config().keys),
    };
    let _other = other_era_lock(repo, &keys, opts.wait)?;
    let mut report = MigrateReport {
        from: repo.version(),
        ..MigrateReport::default()
    };
    if repo.version() < BOUND_OBJECTS_VERSION {
        write_new_era(repo, &keys, &mut report, opts)?;
        commit(repo, &keys.new)?;
        opts.done("config")?;
    }
    remove_old_era(repo, &keys, &mut report, opts)?;
    Ok(report)
}

/// An exclusive lock in the encryption of the era the repository is not in: old clients
/// see one in the old era's, new ones (which count an unreadable lock as stale) one in the
/// new era's, before and after the switch; `repo`'s own lock is the other.
fn other_era_lock(repo: &Repository, keys: &Keys, wait: Duration) -> Result<LockGuard> {
    let other = match repo.version() < BOUND_OBJECTS_VERSION {
        true => &keys.new,
        false => &keys.old,
    };
    Ok(LockGuard::acquire(
        repo.shared_backend(),
        other,
        LockMode::Exclusive,
        "migrate",
        wait,
        None,
    )?)
}

/// Everything version 3 needs, beside the old objects: snapshots and index files in the new
/// encryption, a MAC on every key file.
fn write_new_era(
    repo: &Locked<'_>,
    keys: &Keys,
    report: &mut MigrateReport,
    opts: &MigrateOptions,
) -> Result<()> {
    lock::remove_stale(repo.backend(), &keys.old, false, None)?;
    report.removed += remove_era(repo, keys, Era::New)?;
    report.key_files = sign_key_files(repo)?;
    opts.done("keys")?;
    report.index_files = rewrite_index_files(repo, keys)?;
    opts.done("index")?;
    report.snapshots = rewrite_snapshots(repo, keys, opts)?;
    Ok(())
}

/// Replaces `config` with its version 3 form: the commit point. The key derivation stays,
/// so existing data keeps deduplicating.
fn commit(repo: &Repository, new: &MasterKey) -> Result<()> {
    let mut config = repo.config().clone();
    config.version = FORMAT_VERSION;
    config.validate().map_err(RepoError::Config)?;
    let sealed = seal_config(new, &config);
    Ok(repo.backend().replace(Kind::Config, "config", &sealed)?)
}

fn remove_old_era(
    repo: &Locked<'_>,
    keys: &Keys,
    report: &mut MigrateReport,
    opts: &MigrateOptions,
) -> Result<()> {
    report.removed += remove_era(repo, keys, Era::Old)?;
    opts.done("removed")?;
    report.key_files = mark_key_files(repo)?;
    Ok(())
}

/// Removes the snapshots and index files of `era`.
fn remove_era(repo: &Locked<'_>, keys: &Keys, era: Era) -> Result<usize> {
    let mut removed = 0;
    for kind in [Kind::Snapshot, Kind::Index] {
        for e in repo.backend().list(kind)? {
            let sealed = repo.backend().get(kind, &e.name)?;
            if era_of(keys, kind, &sealed) == era {
                repo.remove(kind, &e.name)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn era_of(keys: &Keys, kind: Kind, sealed: &[u8]) -> Era {
    match kind {
        Kind::Index => keys.era(|k| indexfile::decode(k, k.format(), sealed).is_ok()),
        _ => keys.era(|k| k.decrypt(&k.aad(ObjectKind::Snapshot, b""), sealed).is_ok()),
    }
}

/// Adds a MAC (over the version 2 fields, which clients of both versions check) to every
/// key file without one; returns how many.
fn sign_key_files(repo: &Repository) -> Result<usize> {
    update_key_files(repo, |f| !f.has_mac(), |_| {})
}

/// Marks every key file as belonging to a version 3 repository (signed with the version);
/// returns how many.
fn mark_key_files(repo: &Repository) -> Result<usize> {
    update_key_files(
        repo,
        |f| f.version < FORMAT_VERSION,
        |f| f.version = FORMAT_VERSION,
    )
}

/// Rewrites (atomically, in place) the key files `select` picks after `change`, re-signed
/// with the master key. Key files of other repositories' keys are left alone.
fn update_key_files(
    repo: &Repository,
    select: impl Fn(&KeyFile) -> bool,
    change: impl Fn(&mut KeyFile),
) -> Result<usize> {
    let mut updated = 0;
    for (id, file) in repo.list_keys()? {
        let Ok(mut file) = file else { continue };
        if !select(&file) || file.verify(repo.key()).is_err() {
            continue;
        }
        change(&mut file);
        file.sign(repo.key());
        repo.backend()
            .replace(Kind::Key, &id.0.to_hex(), &file.to_bytes())?;
        updated += 1;
    }
    Ok(updated)
}

/// Writes every old index file's packs again in the new encryption; returns how many.
fn rewrite_index_files(repo: &Locked<'_>, keys: &Keys) -> Result<usize> {
    let mut written = 0;
    for e in repo.backend().list(Kind::Index)? {
        let sealed = repo.backend().get(Kind::Index, &e.name)?;
        if era_of(keys, Kind::Index, &sealed) != Era::Old {
            continue;
        }
        let packs = indexfile::decode(&keys.old, keys.old.format(), &sealed)
            .map_err(|e| damaged(Kind::Index, e))?;
        let new = indexfile::encode(&keys.new, keys.new.format(), &packs);
        repo.put(Kind::Index, &Id::hash_of(&new).to_hex(), &new)?;
        written += 1;
    }
    Ok(written)
}

fn damaged(kind: Kind, e: impl ToString) -> RepoError {
    RepoError::Config(format!(
        "cannot migrate a damaged {kind}: {}",
        e.to_string()
    ))
}

/// Writes every old snapshot again in the new encryption, parents first, with `parent`
/// pointing at the parent's new id; returns how many.
fn rewrite_snapshots(repo: &Locked<'_>, keys: &Keys, opts: &MigrateOptions) -> Result<usize> {
    let mut pending = old_snapshots(repo, keys)?;
    let mut renamed: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    let total = pending.len();
    while !pending.is_empty() {
        let ready = |s: &Snapshot| s.parent.is_none_or(|p| !pending.contains_key(&p));
        let next: Vec<SnapshotId> = (pending.iter())
            .filter(|(_, s)| ready(s))
            .map(|(id, _)| *id)
            .collect();
        if next.is_empty() {
            return Err(damaged(Kind::Snapshot, "parent links form a cycle"));
        }
        for old in next {
            let mut snap = pending.remove(&old).expect("listed as pending");
            snap.parent = snap.parent.map(|p| *renamed.get(&p).unwrap_or(&p));
            renamed.insert(old, save_snapshot(repo, &keys.new, &snap)?);
            opts.done(&format!("snapshot-{}", renamed.len()))?;
        }
    }
    Ok(total)
}

/// The old era's snapshots by id. Parent links cannot form a cycle (an id is the hash of
/// content naming its parent's id), so every round of [`rewrite_snapshots`] finds one ready.
fn old_snapshots(repo: &Repository, keys: &Keys) -> Result<HashMap<SnapshotId, Snapshot>> {
    let mut found = HashMap::new();
    for e in repo.backend().list(Kind::Snapshot)? {
        let sealed = repo.backend().get(Kind::Snapshot, &e.name)?;
        let Some(id) = Id::from_hex(&e.name) else {
            continue;
        };
        let aad = keys.old.aad(ObjectKind::Snapshot, b"");
        let Ok(plain) = keys.old.decrypt(&aad, &sealed) else {
            continue;
        };
        let snap: Snapshot =
            serde_json::from_slice(&plain).map_err(|e| damaged(Kind::Snapshot, e))?;
        found.insert(SnapshotId(id), snap);
    }
    Ok(found)
}

fn save_snapshot(repo: &Locked<'_>, new: &MasterKey, snap: &Snapshot) -> Result<SnapshotId> {
    let plain = serde_json::to_vec(snap).expect("snapshot serializes");
    let sealed = new.encrypt(&new.aad(ObjectKind::Snapshot, b""), &plain);
    let id = Id::hash_of(&sealed);
    repo.put(Kind::Snapshot, &id.to_hex(), &sealed)?;
    Ok(SnapshotId(id))
}
