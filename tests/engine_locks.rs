//! Repository locks as values (issue 14, item 2): one process holds several at once (two
//! backups, a backup and a restore, two repositories) and the repository stays whole; a
//! lock whose object someone else removed vouches for nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::digest::{Digest, assert_same_digest, digest_tree};
use common::e2e::restored_path;
use common::generate_small_tree;
use strata::backend::Kind;
use strata::backend::local::LocalBackend;
use strata::cancel::Cancel;
use strata::observer::Quiet;
use strata::ops::archiver::{self, BackupOptions, ParentChoice};
use strata::ops::checker::{self, ReadData};
use strata::ops::restorer::{self, RestoreOptions};
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::id::SnapshotId;
use strata::repo::key::KdfParams;
use strata::repo::lock::{LockError, LockMode};
use strata::repo::locked::Locked;
use strata::repo::repository::{IndexedRepo, RepoError, Repository};
use strata::select::filter::Patterns;

fn repository(dir: &Path) -> IndexedRepo {
    let backend = Arc::new(LocalBackend::new(dir.join("repo")));
    let config = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
    let repo = Repository::init(backend, b"pw", config, KdfParams::new(64, 1)).unwrap();
    repo.open_index(None).unwrap()
}

fn lock<'r>(repo: &'r IndexedRepo, mode: LockMode, command: &str) -> Locked<'r, IndexedRepo> {
    repo.lock(mode, command, Duration::ZERO, None)
        .expect("no conflicting lock")
}

/// A source tree of `files` files under `dir/name`, and its digest.
fn source(dir: &Path, name: &str, seed: u64, files: usize) -> (PathBuf, Digest) {
    let src = dir.join(name);
    generate_small_tree(&src, seed, files);
    let digest = digest_tree(&src);
    (src, digest)
}

fn options(src: &Path) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        exclude: Patterns::new::<&str>(&[]).unwrap(),
        one_file_system: false,
        parent: ParentChoice::None,
        tags: Vec::new(),
        host: "engine-locks".into(),
        dry_run: false,
        time: None,
        cancel: Cancel::default(),
    }
}

fn backup(lock: &Locked<'_, IndexedRepo>, src: &Path) -> SnapshotId {
    let result = archiver::backup(lock, &options(src), &Quiet).unwrap();
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    result.id.expect("a snapshot")
}

/// Restores the snapshot `id` into `target` and checks `src` came back bit-exact.
fn restore(repo: &IndexedRepo, id: SnapshotId, src: &Path, want: &Digest, target: &Path) {
    let snap = repo.load_snapshot(id).unwrap();
    let budget = strata::walk::entry_budget(&snap);
    let opts = RestoreOptions::new(target);
    let report = restorer::restore(repo, snap.tree, &opts, budget, &Quiet).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let got = digest_tree(&restored_path(target, src));
    assert_same_digest(want, &got, "restored snapshot");
}

fn assert_clean(repo: &IndexedRepo) {
    repo.sync_index().unwrap();
    let report = checker::check(repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
}

fn lock_objects(repo: &Repository) -> usize {
    repo.backend().list(Kind::Lock).unwrap().len()
}

/// Runs `one` and `two` on two threads, each under a lock it takes first; both start
/// only once both locks are held (which the main thread checks).
fn both_at_once<A: Send, B: Send>(
    repo: &IndexedRepo,
    one: (
        LockMode,
        &str,
        impl FnOnce(&Locked<'_, IndexedRepo>) -> A + Send,
    ),
    two: (
        LockMode,
        &str,
        impl FnOnce(&Locked<'_, IndexedRepo>) -> B + Send,
    ),
) -> (A, B) {
    let (held, go) = (Barrier::new(3), Barrier::new(3));
    std::thread::scope(|s| {
        let (held, go) = (&held, &go);
        let a = s.spawn(move || {
            let l = lock(repo, one.0, one.1);
            held.wait();
            go.wait();
            (one.2)(&l)
        });
        let b = s.spawn(move || {
            let l = lock(repo, two.0, two.1);
            held.wait();
            go.wait();
            (two.2)(&l)
        });
        held.wait();
        assert_eq!(lock_objects(repo), 2, "both locks held at once");
        go.wait();
        (a.join().unwrap(), b.join().unwrap())
    })
}

#[test]
fn two_backups_at_once_each_under_its_own_shared_lock() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let (a, want_a) = source(dir.path(), "a", 1, 300);
    let (b, want_b) = source(dir.path(), "b", 2, 300);
    let (id_a, id_b) = both_at_once(
        &repo,
        (LockMode::Shared, "backup", |l| backup(l, &a)),
        (LockMode::Shared, "backup", |l| backup(l, &b)),
    );
    assert_eq!(lock_objects(&repo), 0, "both locks released");
    assert_clean(&repo);
    restore(&repo, id_a, &a, &want_a, &dir.path().join("out-a"));
    restore(&repo, id_b, &b, &want_b, &dir.path().join("out-b"));
}

#[test]
fn a_backup_and_a_restore_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let (a, want_a) = source(dir.path(), "a", 3, 300);
    let (b, want_b) = source(dir.path(), "b", 4, 300);
    let id_a = backup(&lock(&repo, LockMode::Shared, "backup"), &a);
    let out_a = dir.path().join("out-a");
    let (id_b, ()) = both_at_once(
        &repo,
        (LockMode::Shared, "backup", |l| backup(l, &b)),
        (LockMode::Shared, "restore", |l| {
            restore(l, id_a, &a, &want_a, &out_a)
        }),
    );
    assert_clean(&repo);
    restore(&repo, id_b, &b, &want_b, &dir.path().join("out-b"));
}

#[test]
fn one_process_holds_locks_on_two_repositories_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (from, to) = (repository(&one), repository(&two));
    let (src, want) = source(dir.path(), "src", 5, 100);
    let reading = lock(&from, LockMode::Shared, "copy");
    let writing = lock(&to, LockMode::Exclusive, "copy");
    let id = backup(&reading, &src);
    let snapshots = from.snapshots().unwrap().0;
    let report = strata::ops::copy::copy(&from, &writing, &snapshots, &Cancel::default(), &Quiet);
    assert_eq!(report.unwrap().snapshots_copied, 1);
    assert!(
        to.lock(LockMode::Shared, "other", Duration::ZERO, None)
            .is_err(),
        "the exclusive lock on the second holds"
    );
    reading.ensure_valid().unwrap();
    writing.ensure_valid().unwrap();
    drop((reading, writing));
    assert_clean(&from);
    assert_clean(&to);
    restore(&from, id, &src, &want, &one.join("out"));
    let (copied, _) = to.find_snapshot("latest").unwrap();
    restore(&to, copied, &src, &want, &two.join("out"));
}

#[test]
fn a_lock_whose_object_was_removed_vouches_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let (src, _) = source(dir.path(), "src", 6, 10);
    let held = lock(&repo, LockMode::Shared, "backup");
    held.ensure_valid().unwrap();
    // Removed by `unlock --remove-all` elsewhere.
    for found in repo.backend().list(Kind::Lock).unwrap() {
        repo.backend().remove(Kind::Lock, &found.name).unwrap();
    }
    let lost = |r: Result<(), RepoError>| matches!(r, Err(RepoError::Lock(LockError::Lost(_))));
    assert!(lost(held.ensure_valid()), "no vacuous success");
    let result = archiver::backup(&held, &options(&src), &Quiet);
    let err = result.err().expect("the lock is gone");
    assert!(err.to_string().contains("lock was removed"), "{err}");
    assert!(
        repo.snapshot_ids().unwrap().is_empty(),
        "no snapshot written"
    );
}
