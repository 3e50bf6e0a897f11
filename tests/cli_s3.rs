//! Repositories on S3 (issue 15), against a moto server of each test: the round trip
//! through the binary (init, backup, restore bit-exact, check, forget --prune), one-line
//! errors for a missing bucket, an unreachable endpoint and bad credentials (moto checks
//! them only when asked to), conditional creates deciding racing inits and locks, every
//! command through injected faults, copy from S3, and the backend contract that the local
//! and memory backends also run.

mod common;

use common::digest::write_random_file;
use common::e2e::{
    FAST_INIT, assert_one_of_racing_inits_wins, code, fails_in_one_line, one_line,
    restores_exactly, restores_exactly_with, snapshot_ids,
};
use common::s3::{CREDENTIALS, Moto, free_port};
use common::server::{credentials_in_env, round_trip};
use common::{generate_small_tree, stderr};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use strata::backend::{self, Backend, Kind};
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::key::KdfParams;
use strata::repo::lock::{LockGuard, LockMode};
use strata::repo::repository::Repository;

#[test]
fn init_backup_restore_check_and_prune_round_trip_on_s3() {
    credentials_in_env(&CREDENTIALS);
    let moto = Moto::start();
    moto.create_bucket("strata");
    let repo = moto.repo("strata", "hosts/one");
    round_trip(&repo, |prefix| {
        backend::open(&moto.location("strata", prefix), &[]).unwrap()
    });
}

#[test]
fn a_missing_bucket_and_an_unreachable_endpoint_fail_in_one_line() {
    let moto = Moto::start();
    let repo = moto.repo("no-such-bucket", "r");
    let location = moto.location("no-such-bucket", "r");

    let out = repo.fail(["snapshots"]);
    assert_eq!(code(&out), 1);
    let line = one_line(&out);
    assert!(line.contains(&location), "{line}");

    let out = repo.fail(FAST_INIT);
    assert_eq!(code(&out), 1);
    let line = one_line(&out);
    assert!(
        line.contains(&location) && line.contains("NoSuchBucket"),
        "{line}"
    );

    let mut nowhere = moto.repo("bucket", "r");
    let location = format!("s3:http://127.0.0.1:{}/bucket/r", free_port());
    nowhere.location = Some(location.clone());
    let started = std::time::Instant::now();
    let out = nowhere.fail(["-o", "retries=2", "-o", "timeout=5s", "snapshots"]);
    assert_eq!(code(&out), 1);
    let line = one_line(&out);
    assert!(
        line.contains(&location) && line.contains("temporary failure"),
        "{line}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    let out = repo.fail(["-o", "s3.colour=red", "snapshots"]);
    assert!(one_line(&out).contains("unknown option"));
    let out = repo.fail(["-r", "s3:http://127.0.0.1:1/UPPER", "snapshots"]);
    assert!(one_line(&out).contains("invalid bucket"));
}

#[test]
fn bad_credentials_fail_in_one_line() {
    let moto = Moto::checking_credentials();
    moto.create_bucket("guarded");
    let repo = moto.repo("guarded", "r");
    let out = repo.fail(FAST_INIT);
    fails_in_one_line(&out, &[&moto.location("guarded", "r"), "permission denied"]);
}

#[test]
fn missing_credentials_say_which_variables_to_set() {
    let moto = Moto::start();
    moto.create_bucket("unsigned");
    let mut repo = moto.repo("unsigned", "r");
    repo.env.clear();
    let mut cmd = repo.cmd(["snapshots"]);
    for (name, _) in CREDENTIALS {
        cmd.env_remove(name);
    }
    let out = cmd.output().expect("run strata");
    assert_eq!(code(&out), 1);
    let line = one_line(&out);
    assert!(line.contains(&moto.location("unsigned", "r")), "{line}");
    assert!(
        line.contains("permission denied: no credentials found: set AWS_ACCESS_KEY_ID"),
        "{line}"
    );
}

#[test]
fn of_racing_inits_on_one_prefix_exactly_one_wins() {
    let moto = Moto::start();
    moto.create_bucket("race");
    assert_one_of_racing_inits_wins(|| moto.repo("race", "shared"));
}

#[test]
fn exclusive_locks_on_s3_are_held_by_one_taker_at_a_time() {
    credentials_in_env(&CREDENTIALS);
    let moto = Moto::start();
    moto.create_bucket("locks");
    let store = backend::open(&moto.location("locks", "r"), &[]).unwrap();
    let config = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
    let repo = Repository::init(store.clone(), b"pw", config, KdfParams::new(64, 1)).unwrap();
    let key = repo.key().clone();
    let (holding, most, took) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..3 {
                    let wait = Duration::from_secs(60);
                    let guard = LockGuard::acquire(
                        store.clone(),
                        &key,
                        LockMode::Exclusive,
                        "t",
                        wait,
                        None,
                    )
                    .expect("the lock is taken within a minute");
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    holding.fetch_sub(1, Ordering::SeqCst);
                    took.fetch_add(1, Ordering::SeqCst);
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(took.load(Ordering::SeqCst), 12);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two takers held the lock at once"
    );
    assert!(store.list(Kind::Lock).unwrap().is_empty());
}

/// 5% of requests fail transiently (half of the failed writes after writing: a lost
/// answer), and every request waits 30 ms more.
const FAULTS: [&str; 6] = [
    "-o",
    "fault.transient=0.05",
    "-o",
    "fault.latency-ms=30",
    "-o",
    "fault.seed=5",
];

/// A repository's whole life through injected faults: init, two backups (the second
/// replacing a file), restore, forget --prune and check --read-data each complete by
/// retrying, the restore is exact and the prune frees the replaced file. A write that
/// fails for good fails the backup, naming it.
#[test]
fn every_command_completes_through_injected_faults_by_retrying() {
    let moto = Moto::start();
    moto.create_bucket("faults");
    let repo = moto.repo("faults", "");
    fn faulty<'a>(args: &[&'a OsStr]) -> Vec<&'a OsStr> {
        [args, &FAULTS.map(OsStr::new)].concat()
    }
    repo.ok(faulty(&FAST_INIT.map(OsStr::new)));
    let src = repo.scratch("src");
    generate_small_tree(&src, 16, 200);
    let backup = [OsStr::new("backup"), src.as_os_str()];
    let mut ids = Vec::new();
    for seed in [1, 2] {
        write_random_file(&src.join("replaced.bin"), 3 << 20, seed);
        let report = repo.json(faulty(&backup));
        ids.push(report["snapshot_id"].as_str().expect("an id").to_string());
    }
    restores_exactly_with(&repo, &ids[1], &src, "target", &FAULTS);

    let forget = ["forget", "--keep-last", "1", "--prune"].map(OsStr::new);
    let report = repo.json(faulty(&forget));
    assert_eq!(report["removed"], serde_json::json!([ids[0]]), "{report}");
    let freed = report["prune"]["bytes_freed"]
        .as_u64()
        .expect("bytes freed");
    assert!(freed >= 3 << 20, "{report}");
    repo.ok(faulty(&["check", "--read-data"].map(OsStr::new)));
    assert_eq!(snapshot_ids(&repo), vec![ids[1].clone()]);

    let every_write_fails = ["-o", "fault.fail-write=1"].map(OsStr::new);
    let out = repo.fail([&backup[..], &every_write_fails].concat());
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("injected failure of write 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_s3_backend_meets_the_contract() {
    credentials_in_env(&CREDENTIALS);
    let moto = Moto::start();
    moto.create_bucket("contract");
    let store: Arc<dyn Backend> = backend::open(&moto.location("contract", "c"), &[]).unwrap();
    backend::contract::run(store.as_ref());
}

#[test]
fn copy_takes_snapshots_from_an_s3_repository_into_a_local_one() {
    let moto = Moto::start();
    moto.create_bucket("source");
    let mut from = moto.repo("source", "r");
    from.password = "source password".into();
    from.ok(FAST_INIT);
    let src = from.scratch("src");
    generate_small_tree(&src, 17, 50);
    from.ok([OsStr::new("backup"), src.as_os_str()]);

    let mut to = moto.repo("unused", "");
    to.location = None;
    to.ok(FAST_INIT);
    let mut cmd = to.cmd(["copy", "--from-repo", from.location.as_deref().unwrap()]);
    cmd.env("STRATA_FROM_PASSWORD", &from.password);
    let out = cmd.output().expect("run strata copy");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    restores_exactly(&to, "latest", &src, "target");
}
