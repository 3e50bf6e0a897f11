//! End-to-end tests of backups racing a local user who swaps entries of the source while it
//! is read (issue 12, finding 1): an entry exchanged with a symlink to a file the backup must
//! not read (afterwards every blob of the repository is decrypted and searched for the
//! file's bytes), and one exchanged with a FIFO. Each backup runs the real binary under a time
//! bound; the swapper runs until the backups are done, bounded in count too.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{CWD, FileType, Mode, RenameFlags, mknodat, renameat_with};

use strata::backend::local::LocalBackend;
use strata::repo::repository::Repository;

use common::TestRepo;
use common::e2e::*;

/// Bytes that only the file the backup must not read holds.
const SECRET: &[u8] = b"strata-race-secret-7f3a9c1e5b2d4806-do-not-store";

/// How long one backup may take before it counts as hung.
const BACKUP_BOUND: Duration = Duration::from_secs(30);

/// Swaps two names with `renameat2(RENAME_EXCHANGE)` until stopped (or a bound on swaps).
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Swapper {
    fn start(a: PathBuf, b: PathBuf) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) && swaps < 100_000_000 {
                renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).expect("exchange");
                swaps += 1;
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops swapping; the number of swaps made.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("swapper")
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `cmd`, killing it and failing the test if it runs longer than `bound`.
fn run_bounded(mut cmd: Command, bound: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > bound {
            child.kill().expect("kill");
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{what} did not finish within {bound:?} (killed)\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// `backup src --json` under the time bound: the errors it reported.
fn bounded_backup(repo: &TestRepo, src: &Path, round: usize) -> Vec<String> {
    let cmd = repo.cmd([
        "backup".as_ref(),
        src.as_os_str(),
        "--json".as_ref(),
        "--host".as_ref(),
        "race".as_ref(),
    ]);
    let out = run_bounded(cmd, BACKUP_BOUND, &format!("backup {round}"));
    let status = code(&out);
    assert!(
        status == 0 || status == 3,
        "backup {round}: exit {status}\n{}",
        common::stderr(&out)
    );
    let report = common::stdout_json(&out, format!("backup {round}"));
    let errors = field_array(&report, "errors")
        .iter()
        .map(|e| field_str(e, "error").to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        status == 3,
        !errors.is_empty(),
        "exit 3 exactly when errors"
    );
    assert!(
        is_hex_id(field_str(&report, "snapshot_id")),
        "backup {round} saved"
    );
    errors
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How many blobs of the repository, of every snapshot and type, hold the secret: each is
/// decrypted and searched.
fn blobs_holding_the_secret(repo: &TestRepo) -> usize {
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let indexed = Repository::open(backend, repo.password.as_bytes())
        .unwrap()
        .open_index(None)
        .unwrap();
    let mut locations = Vec::new();
    indexed.index().for_each(|loc| locations.push(loc)).unwrap();
    assert!(!locations.is_empty(), "the repository holds blobs");
    locations
        .iter()
        .filter(|loc| contains(&indexed.read_blob_at(loc).unwrap(), SECRET))
        .count()
}

/// A source `src` with `entry` (a regular file) and `other`, plus the secret outside it.
fn race_setup(repo: &TestRepo) -> (PathBuf, PathBuf) {
    let src = repo.scratch("src");
    let secret = repo.scratch("private").join("secret");
    fs::write(&secret, SECRET).unwrap();
    fs::write(src.join("entry"), b"an ordinary file of the user").unwrap();
    fs::write(src.join("plain"), b"a file nobody swaps").unwrap();
    (src, secret)
}

#[test]
fn backup_never_reads_through_an_entry_swapped_for_a_symlink() {
    const BACKUPS: usize = 200;
    let repo = fast_repo();
    let (src, secret) = race_setup(&repo);
    symlink(&secret, src.join("link")).unwrap();
    let swapper = Swapper::start(src.join("entry"), src.join("link"));
    let mut errors = Vec::new();
    for round in 0..BACKUPS {
        errors.extend(bounded_backup(&repo, &src, round));
    }
    let swaps = swapper.stop();
    assert!(swaps > 0, "the swapper ran");
    let leaks = blobs_holding_the_secret(&repo);
    assert_eq!(
        leaks, 0,
        "the secret was stored; errors reported: {errors:?}"
    );
    let other: Vec<_> = errors
        .iter()
        .filter(|e| !e.contains("changed during backup"))
        .collect();
    assert!(other.is_empty(), "errors besides 'changed': {other:?}");
    let changed = errors.len();
    eprintln!("{BACKUPS} backups, {swaps} swaps, {changed} entries reported as changed");
}

#[test]
fn backup_does_not_hang_on_a_fifo_swapped_in() {
    const BACKUPS: usize = 100;
    let repo = fast_repo();
    let (src, _) = race_setup(&repo);
    let fifo = src.join("fifo");
    mknodat(CWD, &fifo, FileType::Fifo, Mode::from(0o600), 0).unwrap();
    let swapper = Swapper::start(src.join("entry"), fifo);
    let locks = repo.repo_path().join("locks");
    let mut changed = 0;
    for round in 0..BACKUPS {
        let errors = bounded_backup(&repo, &src, round);
        for e in &errors {
            assert!(e.contains("changed during backup"), "backup {round}: {e}");
        }
        changed += errors.len();
        let left: Vec<_> = fs::read_dir(&locks).into_iter().flatten().collect();
        assert!(left.is_empty(), "backup {round} left its lock: {left:?}");
    }
    let swaps = swapper.stop();
    assert!(swaps > 0, "the swapper ran");
    eprintln!("{BACKUPS} backups, {swaps} swaps, {changed} entries reported as changed");
}

/// Reading fd-relative has no path-length limit: a tree deeper than `PATH_MAX` (4096 bytes of
/// path) backs up whole, where lookups by full path failed with "File name too long".
#[test]
fn backup_reads_a_tree_deeper_than_path_max() {
    const DEPTH: usize = 2100;
    let repo = fast_repo();
    let src = repo.scratch("src");
    let mut dir = rustix::fs::open(&src, rustix::fs::OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..DEPTH {
        rustix::fs::mkdirat(&dir, "d", Mode::from(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, "d", rustix::fs::OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
    let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE;
    let leaf = rustix::fs::openat(&dir, "leaf", flags, Mode::from(0o644)).unwrap();
    rustix::io::write(&leaf, b"at the bottom").unwrap();
    let report = repo.json([OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(field_array(&report, "errors").len(), 0, "{report}");
    assert_eq!(field_u64(&report["summary"], "total_files"), 1, "{report}");
    // One tree per level, plus the root's and one per component of `src`.
    assert_eq!(
        field_u64(&report["summary"], "dirs_new"),
        DEPTH as u64 + src.components().count() as u64,
        "{report}"
    );
}
