//! Crash safety and concurrency, end to end: backups killed with SIGKILL at random moments,
//! two backups at once, prune started during a backup, four hosts backing up into one
//! repository at once before a fifth forgets and prunes, and a repository whose disk fills
//! up. After each, `check` passes and every snapshot restores bit-exact. All but the full
//! disk run against a local directory (`local::`) and an S3 server (`s3::`, moto).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata::backend::Kind;

use common::digest::*;
use common::e2e::*;
use common::store::{Store, locks, objects};
use common::*;

const MIB: usize = 1 << 20;

on_every_store!(
    backups_killed_at_random_moments_leave_every_snapshot_restorable,
    two_backups_started_at_the_same_moment_both_land,
    prune_started_during_a_backup_waits_for_it_and_loses_nothing,
    hosts_backing_up_at_once_into_one_repository_keep_their_newest_through_forget,
);

/// Four incompressible files of `big` bytes and `small` small ones.
fn big_tree(src: &Path, seed: u64, big: usize, small: u64) {
    for i in 0..4 {
        write_random_file(&src.join(format!("big{i}")), big, seed * 100 + i);
    }
    small_files(src, seed, 0..small);
}

fn small_files(src: &Path, seed: u64, range: std::ops::Range<u64>) {
    let dir = src.join("small");
    fs::create_dir_all(&dir).unwrap();
    for i in range {
        let size = (Rng::new(seed ^ i).below(64 * 1024)) as usize;
        write_random_file(&dir.join(format!("f{i}")), size, seed * 1000 + i);
    }
}

fn backup(repo: &TestRepo, src: &Path) -> String {
    let v = repo.json([OsStr::new("backup"), src.as_os_str()]);
    field_str(&v, "snapshot_id").to_string()
}

fn spawn(repo: &TestRepo, args: &[&OsStr]) -> Child {
    repo.cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata")
}

/// A scratch directory on tmpfs when there is one (restores are then not slowed by disk
/// writeback), else below the repository's temporary directory.
fn restore_root(repo: &TestRepo) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = match shm.is_dir() {
        true => shm.to_path_buf(),
        false => repo.path().to_path_buf(),
    };
    tempfile::Builder::new()
        .prefix("strata-restore-")
        .tempdir_in(base)
        .unwrap()
}

/// Restores every `(snapshot, digest of src when it was taken)` (four at a time) and
/// compares each with its digest.
fn assert_all_restore(repo: &TestRepo, src: &Path, history: &[(String, Digest)]) {
    let root = restore_root(repo);
    for group in history.chunks(4) {
        std::thread::scope(|s| {
            for (i, (snap, want)) in group.iter().enumerate() {
                let target = root.path().join(format!("{i}"));
                s.spawn(move || {
                    repo.ok(restore_args(snap, &target, &[]));
                    let got = digest_tree(&restored_path(&target, src));
                    assert_same_digest(want, &got, &format!("snapshot {snap}"));
                    fs::remove_dir_all(&target).unwrap();
                });
            }
        });
    }
}

/// Edits the tree for round `round`: one big file rewritten (`big` bytes), ten small files
/// added, one removed.
fn mutate(src: &Path, round: u64, big: usize) {
    write_random_file(&src.join(format!("big{}", round % 4)), big, 7000 + round);
    small_files(src, 500 + round, 300 + round * 10..310 + round * 10);
    let _ = fs::remove_file(src.join("small").join(format!("f{round}")));
}

fn check_passes(repo: &TestRepo) -> String {
    stdout(&repo.ok(["check"])).to_string()
}

/// The kill loop's size: rounds, the tree's big and small files, the size of packs, and
/// how long it may take before it counts as hung (ten times what it takes on an idle
/// machine of two cores).
struct KillLoop {
    rounds: u64,
    big: usize,
    small: u64,
    pack_size_mib: &'static str,
    bound: Duration,
}

impl KillLoop {
    /// Twenty rounds of 48 MiB files and 300 small ones in 16 MiB packs on a local disk.
    /// Moto (an S3 server in Python) answers a few hundred requests a second, and every
    /// round restores all earlier snapshots (a request per small file), so there six
    /// rounds of 8 MiB files and 100 small ones; in 2 MiB packs, so that each backup still
    /// writes several packs before its index and snapshot, and kills can fall between them.
    fn on(store: &Store) -> KillLoop {
        match store.is_local() {
            true => KillLoop {
                rounds: 20,
                big: 48 * MIB,
                small: 300,
                pack_size_mib: "16",
                bound: Duration::from_secs(1800),
            },
            false => KillLoop {
                rounds: 6,
                big: 8 * MIB,
                small: 100,
                pack_size_mib: "2",
                bound: Duration::from_secs(300),
            },
        }
    }
}

/// Backups killed with SIGKILL: every other one as soon as its first pack is stored, the
/// others after a random delay (up to the time a backup of the same change took). After every kill: no earlier object is gone or changed, `check` passes,
/// every earlier snapshot restores bit-exact, and the next backup succeeds.
fn backups_killed_at_random_moments_leave_every_snapshot_restorable(store: &Store) {
    let KillLoop {
        rounds,
        big,
        small,
        pack_size_mib,
        bound,
    } = KillLoop::on(store);
    let started = Instant::now();
    let repo = store.repo();
    repo.ok([&FAST_INIT[..], &["--pack-size-mib", pack_size_mib]].concat());
    let src = repo.scratch("src");
    big_tree(&src, 1, big, small);
    let mut history = vec![(backup(&repo, &src), digest_tree(&src))];
    let mut rng = Rng::new(20261125);
    let mut typical = Duration::from_millis(1500);
    let (mut killed, mut unused_seen) = (0, false);
    for round in 0..rounds {
        assert!(
            started.elapsed() < bound,
            "round {round} started after {bound:?}: hung?"
        );
        mutate(&src, round, big);
        let before = objects(&repo);
        let mut child = spawn(&repo, &[OsStr::new("backup"), src.as_os_str()]);
        // Every other round is killed as soon as its first pack is stored, before the index
        // that lists it can be: the kill that must leave unused data, however fast the
        // machine; the others after a random delay.
        match round % 2 {
            1 => wait_for_a_new_pack(&repo, &before, &mut child, typical * 4),
            _ => std::thread::sleep(Duration::from_millis(
                rng.below(typical.as_millis() as u64 + 1),
            )),
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();

        let after = objects(&repo);
        assert!(
            before.iter().all(|o| after.contains(o)),
            "round {round}: an object changed"
        );
        unused_seen |= check_passes(&repo).contains("unused data");
        assert_all_restore(&repo, &src, &history);
        let backup_started = Instant::now();
        history.push((backup(&repo, &src), digest_tree(&src)));
        typical = backup_started.elapsed();
    }
    assert!(
        killed * 2 >= rounds,
        "only {killed} of {rounds} backups were still running when killed"
    );
    assert!(
        unused_seen,
        "no kill ever left unused data behind: the kills came too late"
    );
    repo.ok(["check", "--read-data"]);
}

/// Returns once `repo` holds a pack that `before` does not, `child` has exited, or `limit`
/// has passed.
fn wait_for_a_new_pack(
    repo: &TestRepo,
    before: &[(String, String, u64)],
    child: &mut Child,
    limit: Duration,
) {
    let started = Instant::now();
    while started.elapsed() < limit && child.try_wait().unwrap().is_none() {
        let stored = objects(repo);
        if (stored.iter()).any(|o| o.0 == Kind::Pack.to_string() && !before.contains(o)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn two_backups_started_at_the_same_moment_both_land(store: &Store) {
    let repo = store.fast_repo();
    let (a, b) = (repo.scratch("a"), repo.scratch("b"));
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        write_random_file(&dir.join("big"), 40 * MIB, seed);
        small_files(dir, seed, 0..200);
    }
    let children: Vec<Child> = [&a, &b]
        .iter()
        .map(|d| {
            spawn(
                &repo,
                &[OsStr::new("backup"), d.as_os_str(), OsStr::new("--json")],
            )
        })
        .collect();
    let ids: Vec<String> = children.into_iter().map(snapshot_of).collect();
    let history: Vec<(String, Digest)> = ids
        .iter()
        .zip([&a, &b])
        .map(|(id, d)| (id.clone(), digest_tree(d)))
        .collect();
    for ((id, want), dir) in history.iter().zip([&a, &b]) {
        assert_all_restore(&repo, dir, &[(id.clone(), want.clone())]);
    }
    repo.ok(["check", "--read-data"]);
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn prune_started_during_a_backup_waits_for_it_and_loses_nothing(store: &Store) {
    let repo = store.fast_repo();
    let src = repo.scratch("src");
    write_random_file(&src.join("kept"), 20 * MIB, 1);
    let kept = (backup(&repo, &src), digest_tree(&src));
    write_random_file(&src.join("dropped"), 20 * MIB, 2);
    let dropped = backup(&repo, &src);
    fs::remove_file(src.join("dropped")).unwrap();
    repo.ok(["forget", &dropped]);
    big_tree(&src, 3, 48 * MIB, 300);

    let mut backup_run = spawn(&repo, &[OsStr::new("backup"), src.as_os_str()]);
    wait_for("the backup's lock", || !locks(&repo).is_empty());
    let before = (objects(&repo), locks(&repo));
    let refused = run_expect(&repo, ["prune"], 1);
    assert!(
        stderr(&refused).contains("locked by a shared lock of `backup`"),
        "{}",
        stderr(&refused)
    );
    let prune = spawn(
        &repo,
        &[
            OsStr::new("prune"),
            OsStr::new("--retry-lock"),
            OsStr::new("10m"),
            OsStr::new("--json"),
        ],
    );
    assert!(
        backup_run.try_wait().unwrap().is_none(),
        "the backup ended before prune started"
    );
    let after = (objects(&repo), locks(&repo));
    let gone: Vec<_> = (before.0.iter())
        .filter(|o| !after.0.contains(o))
        .map(|o| format!("{o:?}"))
        .chain(before.1.iter().filter(|l| !after.1.contains(l)).cloned())
        .collect();
    assert!(gone.is_empty(), "the refused prune removed {gone:?}");

    let backed = backup_run.wait_with_output().unwrap();
    assert_eq!(code(&backed), 0, "{}", stderr(&backed));
    let pruned = prune.wait_with_output().unwrap();
    assert_eq!(code(&pruned), 0, "{}", stderr(&pruned));
    let report: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    assert!(field_u64(&report, "packs_deleted") > 0, "{report}");
    assert!(
        field_u64(&report, "bytes_freed") >= 20 * MIB as u64,
        "{report}"
    );

    repo.ok(["check", "--read-data"]);
    let latest = (latest_id(&repo), digest_tree(&src));
    assert_all_restore(&repo, &src, &[kept, latest]);
}

/// Four hosts (each a client with a cache of its own) back up their own trees into one
/// repository at the same moment, twice: the second time after changing every tree. The
/// trees share one file, which the first round's hosts all upload at once. Then a fifth
/// client forgets all but the newest snapshot of each host (`forget` groups by host and
/// paths) and prunes. Afterwards `check --read-data` passes, each host's newest snapshot
/// restores exactly, and the first round's snapshots are gone, with the data only they used.
fn hosts_backing_up_at_once_into_one_repository_keep_their_newest_through_forget(store: &Store) {
    const HOSTS: u64 = 4;
    const OWN: usize = 6 * MIB;
    let admin = store.fast_repo();
    let hosts: Vec<TestRepo> = (0..HOSTS).map(|_| admin.another_client()).collect();
    let srcs: Vec<PathBuf> = (hosts.iter().zip(0..))
        .map(|(host, i)| {
            let src = host.scratch("src");
            generate_small_tree(&src, 10 + i, 200);
            write_random_file(&src.join("shared.bin"), 6 * MIB, 99);
            write_random_file(&src.join("own.bin"), OWN, i);
            src
        })
        .collect();
    let first = backups_at_once(&hosts, &srcs);
    for (src, i) in srcs.iter().zip(0..) {
        write_random_file(&src.join("own.bin"), OWN, 100 + i);
        fs::write(src.join("added.txt"), format!("host {i}, second round")).unwrap();
        fs::remove_file(src.join("d1/e0/f00001.txt")).unwrap();
    }
    let second = backups_at_once(&hosts, &srcs);

    let report = admin.json(["forget", "--keep-last", "1", "--prune"]);
    let mut removed: Vec<&str> = (field_array(&report, "removed").iter())
        .map(|id| id.as_str().expect("an id"))
        .collect();
    removed.sort();
    let mut want_removed: Vec<&str> = first.iter().map(String::as_str).collect();
    want_removed.sort();
    assert_eq!(removed, want_removed, "{report}");
    let pruned = &report["prune"];
    let packs_gone = field_u64(pruned, "packs_deleted") + field_u64(pruned, "packs_repacked");
    assert!(packs_gone >= HOSTS, "{pruned}");
    let only_first = HOSTS * OWN as u64;
    assert!(field_u64(pruned, "bytes_freed") >= only_first, "{pruned}");

    admin.ok(["check", "--read-data"]);
    let listed = admin.json(["snapshots"]);
    let mut kept: Vec<(String, String)> = (listed.as_array().expect("an array").iter())
        .map(|s| {
            (
                field_str(s, "id").to_string(),
                field_str(s, "host").to_string(),
            )
        })
        .collect();
    kept.sort();
    let mut want_kept: Vec<(String, String)> = (second.iter().zip(0..))
        .map(|(id, i)| (id.clone(), format!("host{i}")))
        .collect();
    want_kept.sort();
    assert_eq!(kept, want_kept);
    for ((host, src), id) in hosts.iter().zip(&srcs).zip(&second) {
        restores_exactly(host, id, src, "restored");
    }
    let gone = run_expect(
        &admin,
        restore_args(&first[0], &admin.scratch("gone"), &[]),
        1,
    );
    assert!(stderr(&gone).contains("no snapshot"), "{}", stderr(&gone));
}

/// Each of `hosts` (`host0`, `host1`...) backs up its `srcs` at the same moment: the ids of
/// their snapshots.
fn backups_at_once(hosts: &[TestRepo], srcs: &[PathBuf]) -> Vec<String> {
    let children: Vec<Child> = (hosts.iter().zip(srcs).enumerate())
        .map(|(i, (host, src))| {
            let name = format!("host{i}");
            let args = ["backup", "--host", &name, "--json"].map(OsStr::new);
            spawn(host, &[&args[..], &[src.as_os_str()]].concat())
        })
        .collect();
    children.into_iter().map(snapshot_of).collect()
}

/// The snapshot a spawned `backup --json` saved, once it succeeded.
fn snapshot_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = stdout_json(&out, "backup");
    field_str(&v, "snapshot_id").to_string()
}

fn latest_id(repo: &TestRepo) -> String {
    let list = repo.json(["snapshots"]);
    let last = list.as_array().unwrap().last().unwrap().clone();
    field_str(&last, "id").to_string()
}

/// A tmpfs mounted at `path` for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(path.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_the_next_backup_succeeds_once_there_is_space() {
    let repo = TestRepo::new();
    let disk = Tmpfs::mount(&repo.repo_path(), "40m");
    init_fast(&repo);
    let src = repo.scratch("src");
    small_files(&src, 1, 0..20);
    let first = (backup(&repo, &src), digest_tree(&src));
    write_random_file(&src.join("big"), 64 * MIB, 2);

    let out = repo.run([OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert_eq!(repo.json(["snapshots"]).as_array().unwrap().len(), 1);
    check_passes(&repo);
    assert_all_restore(&repo, &src, std::slice::from_ref(&first));

    disk.resize("200m");
    let second = (backup(&repo, &src), digest_tree(&src));
    repo.ok(["check", "--read-data"]);
    assert_all_restore(&repo, &src, &[first, second]);
}
