//! Finding 4 of issue 12: whether another's lock is stale is judged from what this machine
//! saw (a lock unchanged for the stale time on the boot clock), not from the holder's
//! clock; a date in the future cannot keep a lock alive; and a dead pid only frees a lock
//! written on this boot of this machine.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use strata::backend::local::LocalBackend;
use strata::repo::lock::{self, LockInfo, LockMode};
use strata::repo::repository::Repository;

use common::e2e::*;
use common::*;

fn open(repo: &TestRepo) -> Repository {
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    Repository::open(backend, repo.password.as_bytes()).expect("open repository")
}

/// An exclusive lock of another machine's `backup`, last written at `dated` by its clock;
/// `edit` changes it further. Returns the object's name.
fn plant(repo: &TestRepo, dated: DateTime<Utc>, edit: impl FnOnce(&mut LockInfo)) -> String {
    let mut info = LockInfo {
        mode: LockMode::Exclusive,
        created: dated,
        refreshed: dated,
        host: "elsewhere".into(),
        pid: 1,
        username: "someone".into(),
        command: "backup".into(),
        boot: "another machine".into(),
    };
    edit(&mut info);
    let r = open(repo);
    lock::write(r.backend(), r.key(), &info).expect("write lock")
}

fn sightings_file(repo: &TestRepo) -> PathBuf {
    open(repo)
        .lock_sightings(Some(&repo.cache_path()))
        .expect("a cache is given")
}

/// Moves every sighting this machine recorded `minutes` into the past, as if it had seen
/// the locks that much earlier.
fn age_sightings(repo: &TestRepo, minutes: i64) {
    let file = sightings_file(repo);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let seen = v["seen"].as_object_mut().expect("sightings");
    assert!(!seen.is_empty(), "no sightings recorded in {file:?}");
    for s in seen.values_mut() {
        s["first_ms"] = (s["first_ms"].as_i64().unwrap() - minutes * 60_000).into();
    }
    std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn unlock(repo: &TestRepo) -> (u64, usize) {
    let v = repo.json(["unlock"]);
    (field_u64(&v, "removed"), field_array(&v, "remaining").len())
}

fn assert_locked(repo: &TestRepo, why: &str) {
    let refused = repo.fail(["prune"]);
    let err = stderr(&refused);
    assert!(
        err.contains("locked by an exclusive lock of `backup`"),
        "{why}: {err}"
    );
}

#[test]
fn lock_of_a_holder_25_minutes_behind_is_not_judged_stale_while_it_keeps_changing() {
    let repo = fast_repo();
    let behind = chrono::Duration::minutes(25);
    // Refreshed five minutes ago by a clock 25 minutes behind ours: dated 30 minutes ago.
    let first = plant(
        &repo,
        Utc::now() - behind - chrono::Duration::minutes(5),
        |_| {},
    );
    assert_locked(&repo, "a refreshed lock dated 30 minutes ago");
    // Twenty-nine minutes later by our boot clock it has been refreshed: a new object.
    age_sightings(&repo, 29);
    let r = open(&repo);
    r.backend()
        .remove(strata::backend::Kind::Lock, &first)
        .unwrap();
    plant(&repo, Utc::now() - behind, |_| {});
    age_sightings(&repo, 0);
    assert_locked(&repo, "the refreshed object is new");
    assert_eq!(unlock(&repo), (0, 1), "unlock leaves a live lock");
}

#[test]
fn lock_dated_9999_can_be_removed_by_unlock_once_seen_unchanged_for_the_stale_time() {
    let repo = fast_repo();
    let year_9999: DateTime<Utc> = "9999-12-31T23:59:59Z".parse().unwrap();
    plant(&repo, year_9999, |_| {});
    assert_eq!(unlock(&repo), (0, 1), "first seen now: not stale yet");
    assert_locked(&repo, "seen for less than the stale time");
    age_sightings(&repo, 29);
    assert_eq!(unlock(&repo), (0, 1), "seen unchanged for 29 minutes");
    age_sightings(&repo, 1);
    assert_eq!(
        unlock(&repo),
        (1, 0),
        "seen unchanged for 30 minutes: stale"
    );
    repo.ok(["prune"]);
}

#[test]
fn dead_process_shortcut_needs_the_same_machine_and_boot_id() {
    let repo = fast_repo();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let host = strata::sysinfo::hostname();
    plant(&repo, Utc::now(), |i| {
        (i.host, i.pid) = (host.clone(), dead);
        i.boot = "same host name, another boot".into();
    });
    assert_locked(&repo, "a dead pid of another boot proves nothing");
    assert_eq!(unlock(&repo), (0, 1));
    plant(&repo, Utc::now(), |i| {
        (i.host, i.pid) = (host.clone(), dead);
        i.boot = strata::sysinfo::boot_identity().into();
    });
    assert_eq!(unlock(&repo), (1, 1), "this boot's dead holder is gone");
}
