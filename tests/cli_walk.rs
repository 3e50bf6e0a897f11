//! Finding 8 of issue 12: tree walks. Every walk is iterative (a 30,000-level snapshot
//! lists, a genuine 2,030-level directory scans clean, `repair snapshots` rewrites below
//! 1,024 levels), bounded by the entries the snapshot records (a forged 40-level tree DAG
//! with 2^40 paths is refused by ls, find, diff, stats, check and scan), one bad snapshot
//! does not stop `find` searching the others, and backups record their entry count.
//!
//! The 30,000-level tree and the DAG are forged in the repository through the library:
//! a 30,000-level directory cannot be read by path (PATH_MAX), and a DAG is not something a
//! file system can hold.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::e2e::*;
use common::*;
use strata::backend::local::LocalBackend;
use strata::repo::blob::BlobType;
use strata::repo::id::TreeId;
use strata::repo::lock::LockMode;
use strata::repo::repository::{IndexedRepo, Repository};
use strata::repo::snapshot::{Snapshot, Summary};
use strata::repo::tree::{ChunkRef, Node, NodeKind, Tree};
use strata::write::packer::Packer;

/// A hung command (the old code expanding a DAG forever) is killed after this long.
const HANG: Duration = Duration::from_secs(120);

/// A node named `name` with the metadata of the library's root node (mode 0755, owned by
/// root, no times).
fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        ..strata::vfs::root_node(TreeId::default())
    }
}

fn dir(name: &[u8], subtree: TreeId) -> Node {
    node(name, NodeKind::Dir { subtree })
}

fn file(name: &[u8]) -> Node {
    node(name, NodeKind::File { content: vec![] })
}

/// Saves a snapshot whose root tree `build` writes through the packer, recording `entries`
/// (None: a snapshot from before entries were recorded, that says it holds one file).
fn forge(
    repo: &TestRepo,
    time: &str,
    entries: Option<u64>,
    build: impl FnOnce(&dyn Fn(Tree) -> TreeId) -> TreeId,
) {
    forge_with(repo, time, entries, |packer| {
        let save = |t: Tree| packer.save_tree(&t).expect("save tree").0;
        build(&save)
    });
}

/// [`forge`], with the packer itself given to `build` (to save data blobs too).
fn forge_with(
    repo: &TestRepo,
    time: &str,
    entries: Option<u64>,
    build: impl FnOnce(&Packer) -> TreeId,
) {
    let indexed = open_indexed(repo);
    let lock = indexed
        .lock(LockMode::Shared, "test", Duration::ZERO, None)
        .expect("lock");
    let packer = Packer::new(&lock, false);
    let tree = build(&packer);
    packer.flush().expect("flush");
    let snap = Snapshot {
        time: time.parse().unwrap(),
        host: "forged".into(),
        username: String::new(),
        uid: 0,
        gid: 0,
        paths: vec!["/forged".into()],
        tags: Vec::new(),
        parent: None,
        original: None,
        tree,
        sources: Vec::new(),
        summary: Summary {
            total_files: 1,
            entries,
            ..Summary::default()
        },
        program_version: "test".into(),
    };
    lock.save_snapshot(&snap).expect("save snapshot");
}

fn open_indexed(repo: &TestRepo) -> IndexedRepo {
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let opened = Repository::open(backend, repo.password.as_bytes()).expect("open repository");
    opened.open_index(None).expect("load index")
}

/// A chain of `depth` directories named `d` with the file `f` at the bottom.
fn chain(save: &dyn Fn(Tree) -> TreeId, depth: usize) -> TreeId {
    let mut id = save(Tree::new(vec![file(b"f")]));
    for _ in 0..depth {
        id = save(Tree::new(vec![dir(b"d", id)]));
    }
    id
}

/// 40 levels of a tree listing the next one twice (`a` and `b`): 2^41 paths.
fn dag(save: &dyn Fn(Tree) -> TreeId) -> TreeId {
    let mut id = save(Tree::new(vec![file(b"f")]));
    for _ in 0..40 {
        id = save(Tree::new(vec![dir(b"a", id), dir(b"b", id)]));
    }
    id
}

/// What a bounded run of strata printed: stdout's line count, byte count and last line
/// (read as it streams, never held whole), stderr, and the exit code.
struct Streamed {
    lines: u64,
    bytes: u64,
    last: Vec<u8>,
    stderr: String,
    code: i32,
}

/// Runs `args`, reading stdout as it streams; a run longer than [`HANG`] is killed and fails
/// the test (the old code never finished on a forged DAG).
fn streamed(repo: &TestRepo, args: &[&str]) -> Streamed {
    let mut child = repo
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    let reader = std::thread::spawn({
        let out = child.stdout.take().unwrap();
        move || count_lines(out)
    });
    let mut stderr = String::new();
    let err_reader = std::thread::spawn({
        let mut err = child.stderr.take().unwrap();
        move || {
            err.read_to_string(&mut stderr).unwrap();
            stderr
        }
    });
    let status = wait_bounded(&mut child, args);
    let (lines, bytes, last) = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let code = status.unwrap_or_else(|| panic!("strata {args:?} was killed by a signal: {stderr}"));
    Streamed {
        lines,
        bytes,
        last,
        stderr,
        code,
    }
}

fn count_lines(out: impl Read) -> (u64, u64, Vec<u8>) {
    let mut reader = BufReader::with_capacity(1 << 20, out);
    let (mut lines, mut bytes, mut line) = (0u64, 0u64, Vec::new());
    let mut last = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).unwrap();
        if n == 0 {
            return (lines, bytes, last);
        }
        lines += 1;
        bytes += n as u64;
        std::mem::swap(&mut last, &mut line);
    }
}

/// The exit code (None: killed by a signal); panics when the run outlasts [`HANG`].
fn wait_bounded(child: &mut Child, args: &[&str]) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > HANG {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("strata {args:?} did not finish within {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn snapshot_ids(repo: &TestRepo) -> Vec<(String, String)> {
    let list = repo.json(["snapshots"]);
    let mut ids: Vec<(String, String)> = (list.as_array().unwrap().iter())
        .map(|s| {
            (
                field_str(s, "time").to_string(),
                field_str(s, "id").to_string(),
            )
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn finding_8_ls_r_lists_a_30000_level_snapshot() {
    let repo = fast_repo();
    let depth = 30_000;
    forge(
        &repo,
        "2020-01-01T00:00:00Z",
        Some(depth as u64 + 1),
        |save| chain(save, depth),
    );
    let out = streamed(&repo, &["ls", "-R", "latest"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.lines, depth as u64 + 1);
    // Line k (1-based) of the chain is `/d` k times plus a newline; the file adds `/f`.
    let chain_bytes: u64 = (1..=depth as u64).map(|k| 2 * k + 1).sum();
    assert_eq!(out.bytes, chain_bytes + 2 * depth as u64 + 3);
    let want = [b"/d".repeat(depth), b"/f\n".to_vec()].concat();
    assert!(
        out.last == want,
        "the deepest entry is listed last, in full"
    );
}

#[test]
fn finding_8_a_forged_tree_dag_is_refused_by_ls_find_diff_stats_and_check() {
    let repo = fast_repo();
    forge(&repo, "2020-01-01T00:00:00Z", Some(2), |save| {
        let f = save(Tree::new(vec![file(b"wanted.txt")]));
        save(Tree::new(vec![dir(b"g", f)]))
    });
    // It claims 1,000 entries: the walks stop there instead of expanding 2^41 paths.
    forge(&repo, "2021-01-01T00:00:00Z", Some(1_000), dag);
    let ids = snapshot_ids(&repo);
    let (genuine, forged) = (ids[0].1.as_str(), ids[1].1.as_str());
    let refused = "entries the snapshot allows";

    let ls = streamed(&repo, &["ls", "-R", forged]);
    assert_eq!(ls.code, 1, "ls -R refuses: {}", ls.stderr);
    assert!(ls.stderr.contains(refused), "{}", ls.stderr);
    assert!(
        ls.lines <= 1_000,
        "it stops at the budget: {} lines",
        ls.lines
    );

    let find = streamed(&repo, &["find", "wanted.txt"]);
    assert_eq!(
        find.code, 3,
        "find goes on with the other snapshot: {}",
        find.stderr
    );
    let skipped = format!("snapshot {} is skipped", &forged[..8]);
    assert!(
        find.stderr.contains(&skipped) && find.stderr.contains(refused),
        "{}",
        find.stderr
    );
    let (_, found) = json_expect(&repo, ["find", "wanted.txt"], 3);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(field_str(&found[0], "path"), "/g/wanted.txt");

    for args in [["diff", genuine, forged], ["diff", forged, genuine]] {
        let diff = streamed(&repo, &args);
        assert_eq!(diff.code, 1, "{args:?}: {}", diff.stderr);
        assert!(diff.stderr.contains(refused), "{}", diff.stderr);
    }

    let stats = streamed(&repo, &["stats"]);
    assert_eq!(stats.code, 3, "{}", stats.stderr);
    assert!(
        stats.stderr.contains(&skipped) && stats.stderr.contains(refused),
        "{}",
        stats.stderr
    );
    let check = repo.run(["check"]);
    let said = stdout(&check) + &stderr(&check);
    assert_eq!(code(&check), 1, "check reports the forged snapshot: {said}");
    assert!(
        said.contains(&forged[..8]) && said.contains(refused),
        "{said}"
    );
    let (_, st) = json_expect(&repo, ["stats"], 3);
    assert_eq!(
        (field_u64(&st, "snapshots"), field_u64(&st, "files")),
        (1, 1)
    );
}

#[test]
fn finding_8_find_searches_past_a_deep_snapshot() {
    let repo = fast_repo();
    forge(&repo, "2020-01-01T00:00:00Z", Some(2_001), |save| {
        chain(save, 2_000)
    });
    forge(&repo, "2021-01-01T00:00:00Z", Some(2), |save| {
        let f = save(Tree::new(vec![file(b"f")]));
        save(Tree::new(vec![dir(b"top", f)]))
    });
    let (_, found) = json_expect(&repo, ["find", "f"], 0);
    let paths: Vec<&str> = (found.as_array().unwrap().iter())
        .map(|f| field_str(f, "path"))
        .collect();
    let deep = format!("{}/f", "/d".repeat(2_000));
    assert_eq!(paths, vec![deep.as_str(), "/top/f"]);
}

/// A directory `levels` deep below `base` (names `d`), made relative to each parent's fd
/// (one mkdir per level, not a path lookup per level); a file `f` at the bottom.
fn deep_dir(base: &Path, levels: usize) {
    use rustix::fs::{Mode, OFlags, mkdirat, openat};
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut fd: OwnedFd = openat(rustix::fs::CWD, base, flags, Mode::empty()).unwrap();
    for _ in 0..levels {
        mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = openat(&fd, "d", flags, Mode::empty()).unwrap();
    }
    let f = openat(
        &fd,
        "f",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    );
    rustix::io::write(f.unwrap(), b"bottom").unwrap();
}

/// Backs up a genuine directory `levels` deep (plus a symlink `link` beside it) in a new
/// temporary directory, and checks that the snapshot records its entry count (every path of
/// it): the repository, the directory, and the count.
fn back_up_deep(levels: usize) -> (TestRepo, tempfile::TempDir, u64) {
    let repo = fast_repo();
    // Below /tmp, so that the deepest path fits in PATH_MAX.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    assert!(src.as_os_str().len() + 2 * levels + 2 < 4096, "{src:?}");
    deep_dir(src, levels);
    std::os::unix::fs::symlink("d", src.join("link")).unwrap();
    let (_, backup) = json_expect(&repo, [Path::new("backup").as_os_str(), src.as_os_str()], 0);
    let entries = field_u64(&backup["summary"], "entries");
    let ancestors = src.components().count() - 1;
    let want = ancestors + levels + 2;
    assert_eq!(
        entries, want as u64,
        "the path to src, the chain, f and link"
    );
    (repo, tmp, entries)
}

/// Backs up a genuine directory `levels` deep, then checks that `ls -R` and `find` walk all
/// of it.
fn back_up_and_list_deep(levels: usize) {
    let (repo, tmp, entries) = back_up_deep(levels);
    let src = tmp.path();
    let snapshots = repo.json(["snapshots"]);
    let recorded = field_u64(&snapshots[0]["summary"], "entries");
    assert_eq!(recorded, entries, "snapshots --json shows the count");

    let listed = streamed(&repo, &["ls", "-R", "latest"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(
        listed.lines, entries,
        "the count is every path of the snapshot"
    );
    let last = String::from_utf8_lossy(&listed.last);
    let want = format!("{}/link\n", src.display());
    assert_eq!(last, want, "depth first, in name order");
    let (_, found) = json_expect(&repo, ["find", "f"], 0);
    let deepest = format!("{}{}/f", src.display(), "/d".repeat(levels));
    assert_eq!(field_str(&found[0], "path"), deepest);
}

#[test]
fn finding_8_backups_record_their_entries_and_deep_directories_list() {
    back_up_and_list_deep(300);
}

#[test]
fn finding_8_a_2030_level_directory_backs_up_and_lists() {
    back_up_and_list_deep(2_030);
}

#[test]
fn finding_8_diff_walks_deep_snapshots() {
    let repo = fast_repo();
    forge(&repo, "2020-01-01T00:00:00Z", Some(3_001), |save| {
        chain(save, 3_000)
    });
    forge(&repo, "2021-01-01T00:00:00Z", Some(1), |save| {
        save(Tree::new(vec![file(b"only")]))
    });
    let ids = snapshot_ids(&repo);
    let (_, diff) = json_expect(&repo, ["diff", &ids[0].1, &ids[1].1], 0);
    let summary = &diff["summary"];
    assert_eq!(field_u64(summary, "dirs_removed"), 3_000);
    assert_eq!(field_u64(summary, "files_removed"), 1);
    assert_eq!(field_u64(summary, "files_added"), 1);
}

#[test]
fn finding_8_scan_compares_a_2030_level_directory() {
    let (repo, _tmp, _) = back_up_deep(2_030);
    let (_, report) = json_expect(&repo, ["scan"], 0);
    for list in ["missing", "modified", "new", "errors"] {
        assert_eq!(report[list], serde_json::json!([]), "{list}: {report}");
    }
    assert_eq!(field_u64(&report, "unchanged"), 2, "f and link: {report}");
}

#[test]
fn finding_8_scan_refuses_a_forged_tree_dag() {
    let repo = fast_repo();
    assert!(!Path::new("/forged").exists());
    // The snapshot's path /forged holds the DAG; it is missing on disk, so every one of its
    // 2^41 paths would be reported missing.
    forge(&repo, "2020-01-01T00:00:00Z", Some(1_000), |save| {
        let forged = dag(save);
        save(Tree::new(vec![dir(b"forged", forged)]))
    });
    let id = snapshot_ids(&repo)[0].1.clone();
    let scan = streamed(&repo, &["scan", "--snapshot", &id]);
    assert_eq!(scan.code, 1, "scan refuses: {}", scan.stderr);
    assert!(
        scan.stderr.contains("the 1000 entries the snapshot allows"),
        "{}",
        scan.stderr
    );
}

#[test]
fn finding_8_repair_rewrites_a_snapshot_deeper_than_1024_levels() {
    let repo = fast_repo();
    let depth = 1_100;
    let mut blob = None;
    forge_with(&repo, "2020-01-01T00:00:00Z", Some(depth + 2), |packer| {
        let (id, _) = packer.save(BlobType::Data, b"bottom").expect("save blob");
        blob = Some(id);
        let mut damaged = file(b"f");
        damaged.kind = NodeKind::File {
            content: vec![ChunkRef { id, len: 6 }],
        };
        damaged.size = 6;
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let mut tree = save(Tree::new(vec![damaged, file(b"g")]));
        for _ in 0..depth {
            tree = save(Tree::new(vec![dir(b"d", tree)]));
        }
        tree
    });
    let indexed = open_indexed(&repo);
    let at = indexed.locate(&blob.unwrap()).expect("the blob is indexed");
    let hex = at.pack.0.to_hex();
    let pack = repo.repo_path().join("data").join(&hex[..2]).join(&hex);
    flip_byte(&pack, at.entry.offset as u64 + 2);

    let (_, report) = json_expect(&repo, ["repair", "snapshots", "--read-data"], 3);
    let salvaged = &report["salvaged"][0];
    let deep = "/d".repeat(depth as usize);
    let lost = &salvaged["lost"];
    assert_eq!(lost.as_array().unwrap().len(), 1, "{lost}");
    assert_eq!(
        lost[0][0],
        format!("{deep}/f"),
        "only the damaged file: {lost}"
    );
    let repaired = field_str(salvaged, "repaired");
    let listed = streamed(&repo, &["ls", "-R", repaired]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.lines, depth + 1, "the chain and g");
    assert_eq!(String::from_utf8_lossy(&listed.last), format!("{deep}/g\n"));
}
