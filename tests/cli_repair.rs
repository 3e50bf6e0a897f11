//! Random damage to packs, index files, snapshots and key files: `check` reports each as
//! damage (never a panic, never a hang), `repair index` rebuilds the index from the packs and
//! `repair snapshots` salvages everything still readable. Also: locks held by live, stopped
//! and killed processes, and `unlock`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::digest::*;
use common::e2e::*;
use common::*;
use serde_json::Value;

const SECOND_PASSWORD: &str = "second password";

/// A repository with two keys and two snapshots of `src`, and the digest of `src` as each
/// snapshot saw it.
struct Fixture {
    repo: TestRepo,
    src: PathBuf,
    digests: BTreeMap<String, Digest>,
    second_key: String,
}

fn fixture(seed: u64) -> Fixture {
    let (repo, src) = init_with_src();
    let keys_before = names_in(&repo.repo_path().join("keys"));
    let out = repo
        .cmd(["key", "add"])
        .env("STRATA_NEW_PASSWORD", SECOND_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let second_key = names_in(&repo.repo_path().join("keys"))
        .into_iter()
        .find(|k| !keys_before.contains(k))
        .unwrap();
    generate_small_tree(&src, seed, 150);
    for i in 0..3 {
        write_random_file(&src.join(format!("big{i}")), 3 << 20, seed + i);
    }
    let mut digests = BTreeMap::new();
    for round in 0..2 {
        if round == 1 {
            write_random_file(&src.join("big0"), 3 << 20, seed + 100);
            generate_small_tree(&src.join("more"), seed + 1, 40);
        }
        let v = repo.json([OsStr::new("backup"), src.as_os_str()]);
        digests.insert(field_str(&v, "snapshot_id").to_string(), digest_tree(&src));
    }
    Fixture {
        repo,
        src,
        digests,
        second_key,
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    list_files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Runs strata, failing the test if it takes over two minutes or dies of a panic or signal;
/// returns the output after checking the exit code is one of `codes`.
fn bounded(repo: &TestRepo, args: &[&str], codes: &[i32]) -> Output {
    bounded_with(repo.cmd(args), args, codes)
}

fn bounded_with(mut cmd: Command, args: &[&str], codes: &[i32]) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("strata {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "strata {args:?} panicked: {err}");
    assert!(
        codes.contains(&code(&out)),
        "strata {args:?}: exit {}: {err}",
        code(&out)
    );
    out
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The objects of the check report's damage list for `kind`.
fn damaged(report: &Value, kind: &str) -> Vec<String> {
    field_array(report, "errors")
        .iter()
        .filter(|p| field_str(p, "kind") == kind)
        .map(|p| field_str(p, "object").to_string())
        .collect()
}

/// Flips one byte at a random offset of each of `count` randomly chosen files in `dir`.
fn corrupt(dir: &Path, count: usize, rng: &mut Rng) -> Vec<String> {
    corrupt_among(list_files(dir), count, rng)
}

fn corrupt_among(mut files: Vec<PathBuf>, count: usize, rng: &mut Rng) -> Vec<String> {
    let mut chosen = Vec::new();
    for _ in 0..count {
        let f = files.remove(rng.below(files.len() as u64) as usize);
        let len = fs::metadata(&f).unwrap().len();
        flip_byte(&f, rng.below(len));
        chosen.push(f.file_name().unwrap().to_string_lossy().into_owned());
    }
    chosen
}

fn restore_digest(f: &Fixture, snap: &str) -> Digest {
    restored_digest(&f.repo, &f.src, snap)
}

fn restored_digest(repo: &TestRepo, src: &Path, snap: &str) -> Digest {
    let target = repo.scratch(&format!("restore-{snap}"));
    repo.ok(restore_args(snap, &target, &[]));
    let got = digest_tree(&restored_path(&target, src));
    fs::remove_dir_all(&target).unwrap();
    got
}

#[test]
fn damaged_packs_are_reported_and_everything_readable_is_salvaged() {
    let f = fixture(11);
    let mut rng = Rng::new(3);
    // Data packs (tree packs here are far smaller): damage to a tree pack loses whole
    // directories, which `repair`'s unit tests cover; here most files must survive.
    let mut packs = list_files(&f.repo.repo_path().join("data"));
    packs.retain(|p| fs::metadata(p).unwrap().len() > 256 << 10);
    let hit = corrupt_among(packs.clone(), packs.len().min(3), &mut rng);
    assert!(!hit.is_empty());

    let report = json_of(&bounded(&f.repo, &["check", "--read-data", "--json"], &[1]));
    let reported = damaged(&report, "pack");
    for pack in &hit {
        assert!(
            reported.contains(pack),
            "pack {pack} not reported: {report}"
        );
    }

    let out = bounded(
        &f.repo,
        &["repair", "index", "--read-data", "--json"],
        &[0, 3],
    );
    let rewritten = json_of(&out)["packs_rewritten"].clone();
    for pack in &hit {
        assert!(
            rewritten
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == pack.as_str()),
            "{rewritten}"
        );
    }
    let out = bounded(
        &f.repo,
        &["repair", "snapshots", "--forget", "--json"],
        &[0, 3],
    );
    let repair = json_of(&out);
    bounded(&f.repo, &["check", "--read-data"], &[0]);

    let salvaged = field_array(&repair, "salvaged");
    for (original, want) in &f.digests {
        let entry = salvaged
            .iter()
            .find(|s| field_str(s, "original") == original);
        let (snap, lost) = match entry {
            None => (original.clone(), Vec::new()),
            Some(s) => (field_str(s, "repaired").to_string(), lost_paths(s, &f.src)),
        };
        let expected: Digest = (want.iter())
            .filter(|(p, _)| !lost.iter().any(|l| p.starts_with(l)))
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect();
        assert!(
            expected.len() > want.len() / 2,
            "most files survive: {lost:?}"
        );
        assert_same_digest(&expected, &restore_digest(&f, &snap), &snap);
    }
}

#[test]
fn a_backup_after_a_pack_is_lost_stores_its_chunks_again_and_heals_every_snapshot() {
    let (repo, src) = init_with_src();
    generate_small_tree(&src, 13, 150);
    for i in 0..3 {
        write_random_file(&src.join(format!("big{i}")), 3 << 20, 13 + i);
    }
    let want = digest_tree(&src);
    let first = repo.json([OsStr::new("backup"), src.as_os_str()]);
    let mut packs = list_files(&repo.repo_path().join("data"));
    packs.retain(|p| fs::metadata(p).unwrap().len() > 256 << 10);
    fs::remove_file(&packs[0]).unwrap();
    bounded(&repo, &["repair", "index", "--json"], &[0, 3]);
    bounded(&repo, &["check", "--read-data"], &[1]);

    // Nothing changed on disk, but the files whose chunks were in the lost pack are no
    // longer "unchanged": their chunks are not indexed, so they are read and stored again.
    let second = repo.json([OsStr::new("backup"), src.as_os_str()]);
    let summary = &second["summary"];
    assert!(field_u64(summary, "files_changed") >= 1, "{second}");
    assert!(field_u64(summary, "files_unmodified") >= 1, "{second}");
    bounded(&repo, &["check", "--read-data"], &[0]);
    for v in [&first, &second] {
        let snap = field_str(v, "snapshot_id");
        assert_same_digest(&want, &restored_digest(&repo, &src, snap), snap);
    }
}

/// The lost paths of one `salvaged` entry, relative to `src`.
fn lost_paths(entry: &Value, src: &Path) -> Vec<PathBuf> {
    field_array(entry, "lost")
        .iter()
        .map(|l| PathBuf::from(l[0].as_str().unwrap()))
        .map(|p| p.strip_prefix(src).unwrap().to_path_buf())
        .collect()
}

#[test]
fn a_damaged_index_file_is_reported_and_rebuilt_from_the_packs() {
    let f = fixture(12);
    let mut rng = Rng::new(4);
    let hit = corrupt(&f.repo.repo_path().join("index"), 1, &mut rng);
    let report = json_of(&bounded(&f.repo, &["check", "--json"], &[1]));
    assert_eq!(damaged(&report, "index"), hit, "{report}");

    let out = bounded(&f.repo, &["repair", "index", "--json"], &[0]);
    assert!(field_u64(&json_of(&out), "index_files_written") >= 1);
    bounded(&f.repo, &["check", "--read-data"], &[0]);
    for (snap, want) in &f.digests {
        assert_same_digest(want, &restore_digest(&f, snap), snap);
    }
}

#[test]
fn a_damaged_snapshot_is_reported_and_the_others_stay_restorable() {
    let f = fixture(13);
    let (first, second) = {
        let mut ids = f.digests.keys();
        (ids.next().unwrap().clone(), ids.next().unwrap().clone())
    };
    flip_byte(&f.repo.repo_path().join("snapshots").join(&first), 40);
    let report = json_of(&bounded(&f.repo, &["check", "--json"], &[1]));
    assert_eq!(
        damaged(&report, "snapshot"),
        vec![first.clone()],
        "{report}"
    );
    assert_same_digest(&f.digests[&second], &restore_digest(&f, &second), &second);

    let out = bounded(&f.repo, &["repair", "snapshots", "--json"], &[3]);
    let unreadable = field_array(&json_of(&out), "unreadable").clone();
    assert_eq!(unreadable[0][0].as_str(), Some(first.as_str()));
    bounded(&f.repo, &["repair", "snapshots", "--forget"], &[3]);
    bounded(&f.repo, &["check"], &[0]);
    assert!(!f.repo.repo_path().join("snapshots").join(&first).exists());
}

#[test]
fn a_damaged_key_file_is_reported_and_locks_out_only_its_own_password() {
    let f = fixture(14);
    let mut rng = Rng::new(5);
    let key = f.repo.repo_path().join("keys").join(&f.second_key);
    for _ in 0..3 {
        let len = fs::metadata(&key).unwrap().len();
        flip_byte(&key, rng.below(len));
    }
    let report = json_of(&bounded(&f.repo, &["check", "--json"], &[1]));
    assert_eq!(
        damaged(&report, "key"),
        vec![f.second_key.clone()],
        "{report}"
    );

    let mut with_second = f.repo.cmd(["snapshots"]);
    with_second.env("STRATA_PASSWORD", SECOND_PASSWORD);
    let out = bounded_with(with_second, &["snapshots"], &[1]);
    let err = stderr(&out);
    assert!(
        err.contains("wrong password") || err.contains("damaged"),
        "{err}"
    );

    bounded(&f.repo, &["key", "remove", &f.second_key[..12]], &[0]);
    bounded(&f.repo, &["check"], &[0]);
}

/// Lock objects, not the temporary files they are written through (a process killed while
/// writing one leaves its temporary file behind).
fn lock_files(repo: &TestRepo) -> Vec<String> {
    let mut names = names_in(&repo.repo_path().join("locks"));
    names.retain(|n| !n.starts_with(".tmp-"));
    names
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn locks_of_live_processes_hold_and_those_of_dead_ones_do_not() {
    let (repo, src) = init_with_src();
    write_random_file(&src.join("big"), 96 << 20, 1);
    let spawn_backup = || {
        repo.cmd([OsStr::new("backup"), src.as_os_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_lock = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while lock_files(&repo).is_empty() {
            assert!(Instant::now() < deadline, "no lock appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    // A killed backup leaves a lock whose pid is gone: stale, so prune goes ahead.
    let mut killed = spawn_backup();
    wait_for_lock();
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(lock_files(&repo).len(), 1);
    bounded(&repo, &["prune"], &[0]);
    let out = bounded(&repo, &["unlock", "--json"], &[0]);
    assert_eq!(field_u64(&json_of(&out), "removed"), 1);
    assert!(lock_files(&repo).is_empty());

    // A stopped backup still holds its lock: prune is refused and unlock leaves it, until
    // --remove-all; the backup then notices its lock is gone and stops without a snapshot.
    let stopped = spawn_backup();
    wait_for_lock();
    signal(stopped.id(), "-STOP");
    let refused = bounded(&repo, &["prune"], &[1]);
    assert!(stderr(&refused).contains("locked by a shared lock of `backup`"));
    assert_eq!(
        field_u64(
            &json_of(&bounded(&repo, &["unlock", "--json"], &[0])),
            "removed"
        ),
        0
    );
    let out = bounded(&repo, &["unlock", "--remove-all", "--json"], &[0]);
    assert_eq!(field_u64(&json_of(&out), "removed"), 1);
    signal(stopped.id(), "-CONT");
    let out = stopped.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lock was removed"),
        "{}",
        stderr(&out)
    );
    assert!(repo.json(["snapshots"]).as_array().unwrap().is_empty());
    bounded(&repo, &["check"], &[0]);
}
