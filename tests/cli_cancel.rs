//! Cancelling long operations (issue 14): the first Ctrl-C (SIGINT) or SIGTERM stops a
//! backup (of files or of MongoDB), restore (of files or of MongoDB), prune,
//! `check --read-data`, `scan --deep` or `repair index --read-data` within 2 s with exit
//! code 130, releases its lock, and leaves the
//! repository consistent: `check` is clean and earlier snapshots restore. `mongo follow`,
//! which runs until stopped, stops the same way.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::e2e::*;
use common::*;

/// One counter of /proc/PID/io (`rchar`: bytes read from files; `wchar`: bytes written).
fn io_counter(child: &Child, name: &str) -> u64 {
    let io = fs::read_to_string(format!("/proc/{}/io", child.id())).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `strata ARGS`, waits until it has read `after` bytes, sends SIGINT, and returns
/// its exit code and stderr once it stops, asserting it stopped within 2 s of the signal.
fn interrupt<I, S>(repo: &TestRepo, args: I, after: u64) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    interrupt_once(repo, args, "rchar", after)
}

/// As [`interrupt`], once the `/proc/PID/io` counter `counter` has reached `after`.
fn interrupt_once<I, S>(repo: &TestRepo, args: I, counter: &str, after: u64) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let what = format!("{counter} reached {after}");
    interrupt_when(repo, args, &what, |child| {
        io_counter(child, counter) >= after
    })
}

/// As [`interrupt`], once `ready` says so.
fn interrupt_when<I, S>(
    repo: &TestRepo,
    args: I,
    what: &str,
    ready: impl Fn(&Child) -> bool,
) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = repo
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(&child) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "finished ({status}) before it could be interrupted: make the data larger\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let signalled = Instant::now();
    let stopped = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after the signal"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        took < Duration::from_secs(2),
        "stopped {took:?} after the signal: {err}"
    );
    (stopped.code().unwrap_or(-1), err)
}

fn assert_released_and_consistent(repo: &TestRepo) {
    let locks = fs::read_dir(repo.repo_path().join("locks"))
        .unwrap()
        .count();
    assert_eq!(locks, 0, "the lock is released");
    repo.ok(["check"]);
}

/// A repository with a small first snapshot (restorable throughout) and `big/` beside it.
fn setup() -> (TestRepo, std::path::PathBuf, String) {
    let (repo, src) = init_with_src();
    let first = src.join("first");
    fs::create_dir_all(&first).unwrap();
    fs::write(first.join("a.txt"), b"kept whatever happens").unwrap();
    let out = repo.json([OsStr::new("backup"), first.as_os_str()]);
    let id = field_str(&out, "snapshot_id").to_string();
    write_big(&src.join("big"), 6, 64);
    (repo, src, id)
}

fn first_restores(repo: &TestRepo, id: &str, src: &Path) {
    let target = repo.scratch("first-restore");
    repo.ok(restore_args(id, &target, &[]));
    assert_trees_equal(
        &src.join("first"),
        &restored_path(&target, &src.join("first")),
    );
}

#[test]
fn a_cancelled_backup_stops_writes_no_snapshot_and_releases_its_lock() {
    let (repo, src, first) = setup();
    let big = src.join("big");
    let (code, err) = interrupt(&repo, [OsStr::new("backup"), big.as_os_str()], 64 << 20);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_released_and_consistent(&repo);
    let snaps = repo.json(["snapshots"]);
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "no snapshot of the cancelled backup"
    );
    first_restores(&repo, &first, &src);
    // A new backup after the cancelled one completes and restores.
    let out = repo.json([OsStr::new("backup"), big.as_os_str()]);
    let id = field_str(&out, "snapshot_id").to_string();
    let target = repo.scratch("big-restore");
    repo.ok(restore_args(&id, &target, &[]));
    assert_trees_equal(&big, &restored_path(&target, &big));
}

#[test]
fn a_cancelled_restore_and_check_stop_and_release_their_locks() {
    let (repo, src, first) = setup();
    let big = src.join("big");
    let out = repo.json([OsStr::new("backup"), big.as_os_str()]);
    let id = field_str(&out, "snapshot_id").to_string();

    let target = repo.scratch("interrupted");
    let (code, err) = interrupt(&repo, restore_args(&id, &target, &[]), 64 << 20);
    assert_eq!(code, 130, "{err}");
    assert_released_and_consistent(&repo);

    let (code, err) = interrupt(&repo, ["check", "--read-data"], 64 << 20);
    assert_eq!(code, 130, "{err}");
    assert_released_and_consistent(&repo);
    first_restores(&repo, &first, &src);
}

#[test]
fn a_cancelled_scan_and_repair_stop_and_release_their_locks() {
    let (repo, src, first) = setup();
    let big = src.join("big");
    repo.ok([OsStr::new("backup"), big.as_os_str()]);

    let (code, err) = interrupt(
        &repo,
        [OsStr::new("scan"), OsStr::new("--deep"), big.as_os_str()],
        64 << 20,
    );
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_released_and_consistent(&repo);

    // Repair holds the exclusive lock: a cancelled one must give it back.
    let (code, err) = interrupt(&repo, ["repair", "index", "--read-data"], 64 << 20);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_released_and_consistent(&repo);
    first_restores(&repo, &first, &src);
}

#[test]
fn a_cancelled_prune_removes_nothing_still_used_and_releases_its_lock() {
    let (repo, src, first) = setup();
    // Files kept and files dropped alternate, so every pack holds both and prune must
    // repack (read) all of them.
    let mixed = src.join("mixed");
    write_big(&mixed, 96, 4);
    let both = repo.json([OsStr::new("backup"), mixed.as_os_str()]);
    for f in (0..96).step_by(2) {
        fs::remove_file(mixed.join(format!("big-{f}.bin"))).unwrap();
    }
    let out = repo.json([OsStr::new("backup"), mixed.as_os_str()]);
    let kept = field_str(&out, "snapshot_id").to_string();
    repo.ok(["forget", field_str(&both, "snapshot_id")]);

    let (code, err) = interrupt(&repo, ["prune", "--max-unused", "0"], 64 << 20);
    assert_eq!(code, 130, "{err}");
    assert_released_and_consistent(&repo);
    first_restores(&repo, &first, &src);
    let restore = |name: &str| {
        let target = repo.scratch(name);
        repo.ok(restore_args(&kept, &target, &[]));
        assert_trees_equal(&mixed, &restored_path(&target, &mixed));
    };
    restore("kept-after-cancel");
    // The prune run again to the end frees the dropped half and keeps the rest.
    let done = repo.json(["prune", "--max-unused", "0"]);
    assert!(field_u64(&done, "bytes_freed") > 150 << 20, "{done}");
    repo.ok(["check", "--read-data"]);
    restore("kept-after-prune");
}

#[test]
fn a_cancelled_mongodb_backup_stops_and_writes_no_snapshot() {
    use common::mongo::{Mongo, shared, unique_db};
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("cancel");
    big_database(&m, &db);
    let (repo, src, first) = setup();
    // Documents arrive over a socket, which `rchar` does not count: wait for the first
    // pack written instead (16 MiB of the 48).
    let args = ["backup", "--mongo", uri, "--mongo-db", &db];
    let (code, err) = interrupt_once(&repo, args, "wchar", 8 << 20);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_released_and_consistent(&repo);
    assert_eq!(repo.json(["snapshots"]).as_array().unwrap().len(), 1);
    first_restores(&repo, &first, &src);
}

/// A MongoDB database `db` holding 48 MiB of incompressible documents (16 KiB of random
/// bytes each), inserted in batches.
fn big_database(m: &common::mongo::Mongo, db: &str) {
    let mut rng = Rng::new(5);
    for batch in 0..24 {
        let docs = (0..128)
            .map(|i| {
                let bytes: Vec<u8> = (0..2048)
                    .flat_map(|_| rng.next_u64().to_le_bytes())
                    .collect();
                let pad = bson::Binary {
                    subtype: bson::spec::BinarySubtype::Generic,
                    bytes,
                };
                bson::doc! {"_id": batch * 128 + i, "pad": pad}
            })
            .collect();
        m.insert(db, "big", docs);
    }
}

#[test]
fn a_cancelled_mongodb_restore_stops_and_releases_its_lock() {
    use common::mongo::{Mongo, renamed_restore, shared, unique_db};
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("cancel_restore");
    big_database(&m, &db);
    let (repo, src, first) = setup();
    repo.ok(["backup", "--mongo", uri, "--mongo-db", &db]);
    // The restore reads the dump's packs from the repository: `rchar` counts them.
    let args = renamed_restore(uri, &db, &unique_db("cancel_target"));
    let (code, err) = interrupt(&repo, args, 8 << 20);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_released_and_consistent(&repo);
    first_restores(&repo, &first, &src);
}

#[test]
fn a_cancelled_mongo_follow_stops_and_releases_its_lock() {
    // `mongo follow` runs until stopped: the first Ctrl-C ends its wait for new oplog
    // entries, saves the slice it was writing, and releases its lock.
    let uri = common::mongo::shared();
    let repo = fast_repo();
    let locks = repo.repo_path().join("locks");
    let holds_lock = |_: &Child| {
        fs::read_dir(&locks)
            .map(|d| {
                d.flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
            })
            .unwrap_or(false)
    };
    let args = ["mongo", "follow", uri, "--slice", "1h"];
    let (code, err) = interrupt_when(&repo, args, "took its lock", holds_lock);
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_released_and_consistent(&repo);
}
