//! End-to-end tests of `strata scan`: lost-file detection after known mutations of a
//! backed-up tree, the printed restore commands (run through a shell), `--restore-missing`,
//! and the search for an intact version in older snapshots.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use strata::backend::local::LocalBackend;
use strata::repo::id::{BlobId, Id, TreeId};
use strata::repo::lock::LockMode;
use strata::repo::repository::{IndexedRepo, Repository};
use strata::repo::tree::{ChunkRef, NodeKind};
use strata::write::packer::Packer;

use common::e2e::*;
use common::*;

/// Exit code of `scan` when something is missing or modified.
const DIFFERENCES: i32 = 4;

/// Writes `src/rel` (and its parents) with `bytes`.
fn write(src: &Path, rel: &str, bytes: &[u8]) {
    let path = src.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
}

/// `scan ARGS --json` expecting exit code `want`.
fn scan(repo: &TestRepo, args: &[&str], want: i32) -> Value {
    let mut all = vec!["scan"];
    all.extend(args);
    json_expect(repo, &all, want).1
}

/// The paths (relative to `src`) of a list in the scan report, with `field` of each.
fn listed(report: &Value, list: &str, src: &Path, field: &str) -> Vec<(String, Value)> {
    let prefix = src.to_str().unwrap();
    field_array(report, list)
        .iter()
        .map(|e| {
            let path = field_str(e, "path");
            let rel = path.strip_prefix(prefix).expect("below src");
            (rel.to_string(), e[field].clone())
        })
        .collect()
}

fn rels(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter()
        .map(|(p, v)| (p.to_string(), v.clone()))
        .collect()
}

/// The entry of `list` for `src/rel`.
fn entry<'a>(report: &'a Value, list: &str, src: &Path, rel: &str) -> &'a Value {
    let path = format!("{}{rel}", src.display());
    field_array(report, list)
        .iter()
        .find(|e| e["path"] == path.as_str())
        .unwrap_or_else(|| panic!("{path} is not {list} in {report:#}"))
}

fn contents(src: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    dir_contents(src)
}

#[test]
fn scan_finds_exactly_what_was_lost_and_brings_it_back() {
    let (repo, src) = init_with_src();
    write(&src, "gone.txt", b"deleted file");
    write(&src, "dir/a.txt", b"a in a deleted directory");
    write(&src, "dir/sub/b.txt", b"b in a deleted directory");
    write(&src, "grown.txt", b"size changes");
    write(&src, "silent.bin", &[5u8; 4096]);
    write(&src, "touched.txt", b"only the mtime changes");
    write(&src, "same.txt", b"unchanged");
    write(&src, "we*ird [1].txt", b"glob characters in the name");
    std::os::unix::fs::symlink("same.txt", src.join("link")).unwrap();
    let backup = repo.json(os_args!["backup", &src]);
    let snap = field_str(&backup, "snapshot_id").to_string();
    let before = contents(&src);
    assert_eq!(scan(&repo, &[], 0)["missing"], serde_json::json!([]));

    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::remove_file(src.join("we*ird [1].txt")).unwrap();
    fs::remove_dir_all(src.join("dir")).unwrap();
    write(&src, "grown.txt", b"size changes: longer now");
    let silent = src.join("silent.bin");
    let mtime = mtime_of(&silent);
    flip_byte(&silent, 1000);
    set_mtime(&silent, mtime.0, mtime.1);
    set_mtime(&src.join("touched.txt"), 1_000_000_000, 0);
    write(&src, "fresh.txt", b"new file");
    write(&src, "freshdir/inner.txt", b"new directory");
    let mutated = contents(&src);

    let report = scan(&repo, &[], DIFFERENCES);
    assert_eq!(field_str(&report, "snapshot"), snap);
    let missing = listed(&report, "missing", &src, "size");
    let want = [
        ("/dir/a.txt", 24.into()),
        ("/dir/sub/b.txt", 24.into()),
        ("/gone.txt", 12.into()),
        ("/we*ird [1].txt", 27.into()),
    ];
    assert_eq!(missing, rels(&want));
    let modified = listed(&report, "modified", &src, "reason");
    let want = [
        ("/grown.txt", "size".into()),
        ("/touched.txt", "mtime".into()),
    ];
    assert_eq!(modified, rels(&want), "silent.bin is only found by --deep");
    let new = listed(&report, "new", &src, "type");
    assert_eq!(
        new,
        rels(&[("/fresh.txt", "file".into()), ("/freshdir", "dir".into())])
    );
    assert_eq!(
        field_u64(&report, "unchanged"),
        3,
        "same.txt, link, silent.bin"
    );
    for lost in field_array(&report, "missing") {
        assert_eq!(field_str(&lost["source"], "snapshot"), snap);
    }

    let deep = scan(&repo, &["--deep"], DIFFERENCES);
    let modified = listed(&deep, "modified", &src, "reason");
    let want = [
        ("/grown.txt", "size".into()),
        ("/silent.bin", "content".into()),
        ("/touched.txt", "mtime".into()),
    ];
    assert_eq!(modified, rels(&want));
    assert_eq!(field_u64(&deep, "unchanged"), 2);

    // The printed commands work: a missing file comes back in place (with its metadata),
    // the earlier version of a modified one beside it.
    let command = field_str(
        entry(&report, "missing", &src, "/we*ird [1].txt"),
        "restore_command",
    );
    run_printed(&repo, command);
    let weird = PathBuf::from("we*ird [1].txt");
    assert_eq!(fs::read(src.join(&weird)).unwrap(), before[&weird]);
    let command = field_str(
        entry(&deep, "modified", &src, "/silent.bin"),
        "restore_command",
    );
    run_printed(&repo, command);
    assert_eq!(
        fs::read(src.join("silent.bin.strata-restored")).unwrap(),
        before[Path::new("silent.bin")]
    );
    assert_eq!(fs::read(&silent).unwrap(), mutated[Path::new("silent.bin")]);
    fs::remove_file(src.join("silent.bin.strata-restored")).unwrap();

    // --restore-missing brings back the missing files only.
    let text = stdout(&run_expect(
        &repo,
        ["scan", "--restore-missing"],
        DIFFERENCES,
    ));
    assert!(text.contains("restored 3 files"), "{text}");
    let mut want = mutated.clone();
    for rel in ["dir/a.txt", "dir/sub/b.txt", "gone.txt", "we*ird [1].txt"] {
        want.insert(rel.into(), before[Path::new(rel)].clone());
    }
    assert_eq!(contents(&src), want, "only missing files were written");
    assert_eq!(
        mtime_of(&src.join("gone.txt")),
        mtime_of_in(&repo, &snap, &src, "gone.txt")
    );
    let after = scan(&repo, &[], DIFFERENCES);
    assert_eq!(after["missing"], serde_json::json!([]));
    assert_eq!(field_array(&after, "modified").len(), 2);
}

/// The mtime `ls --json` reports for `src/rel` in `snap`, as (seconds, nanoseconds).
fn mtime_of_in(repo: &TestRepo, snap: &str, src: &Path, rel: &str) -> (i64, i64) {
    let path = src.join(rel);
    let listing = stdout_json(&repo.ok(os_args!["ls", snap, &path, "--json"]), "ls --json");
    let text = field_str(&listing[0], "mtime");
    let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    (t.timestamp(), t.timestamp_subsec_nanos() as i64)
}

#[test]
fn scan_paths_must_lie_inside_the_snapshot() {
    let (repo, src) = init_with_src();
    write(&src, "keep/a.txt", b"a");
    write(&src, "lose/b.txt", b"b");
    repo.ok(os_args!["backup", &src]);
    fs::remove_dir_all(src.join("lose")).unwrap();

    let outside = repo.scratch("elsewhere");
    let out = run_expect(&repo, os_args!["scan", &outside, "--snapshot", "latest"], 1);
    let err = stderr(&out);
    assert!(err.contains("is not inside the snapshot's paths"), "{err}");
    assert!(err.contains(outside.to_str().unwrap()), "{err}");
    let out = run_expect(&repo, os_args!["scan", &outside], 1);
    assert!(
        stderr(&out).contains("choose one with --snapshot"),
        "{}",
        stderr(&out)
    );

    let keep = src.join("keep");
    let clean = scan(&repo, &[keep.to_str().unwrap()], 0);
    assert_eq!(field_array(&clean, "paths").len(), 1);
    assert_eq!(field_u64(&clean, "unchanged"), 1);
    let lose = src.join("lose");
    let report = scan(&repo, &[lose.to_str().unwrap()], DIFFERENCES);
    assert_eq!(
        listed(&report, "missing", &src, "size"),
        rels(&[("/lose/b.txt", 1.into())])
    );
    let text = stdout(&run_expect(&repo, os_args!["scan", &lose], DIFFERENCES));
    assert!(
        text.contains(&format!("missing   {}/b.txt (1 B)", lose.display())),
        "{text}"
    );
    assert!(text.contains("--on-conflict skip"), "{text}");
}

/// Replaces the content of the file at `path` below `tree` with a chunk that is not
/// stored, saving the changed trees; returns the new root tree.
fn with_lost_chunk(repo: &IndexedRepo, packer: &Packer, tree: TreeId, path: &[&[u8]]) -> TreeId {
    let mut t = repo.load_tree(&tree).unwrap();
    let node = t.nodes.iter_mut().find(|n| n.name == path[0]).unwrap();
    node.kind = match path.len() {
        1 => NodeKind::File {
            content: vec![ChunkRef {
                id: BlobId(Id::hash_of(b"a chunk that was never stored")),
                len: node.size as u32,
            }],
        },
        _ => NodeKind::Dir {
            subtree: with_lost_chunk(repo, packer, node.subtree().unwrap(), &path[1..]),
        },
    };
    packer.save_tree(&t).unwrap().0
}

#[test]
fn scan_names_the_newest_snapshot_with_an_intact_version() {
    let (repo, src) = init_with_src();
    write(&src, "doc.txt", b"version one");
    repo.ok(os_args!["backup", &src, "--time", "2024-01-01T00:00:00Z"]);
    write(&src, "doc.txt", b"version two!");
    let second = repo.json(os_args!["backup", &src, "--time", "2024-01-02T00:00:00Z"]);
    let second = field_str(&second, "snapshot_id").to_string();

    // A newer snapshot whose doc.txt refers to a chunk the index does not have.
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let indexed = Repository::open(backend, repo.password.as_bytes())
        .unwrap()
        .open_index(None)
        .unwrap();
    let (_, mut snap) = indexed.find_snapshot(&second).unwrap();
    let lock = (indexed.lock(LockMode::Shared, "test", Duration::ZERO, None)).unwrap();
    let packer = Packer::new(&lock, false);
    let doc = src.join("doc.txt");
    let comps = strata::vfs::components(doc.to_str().unwrap().as_bytes());
    snap.tree = with_lost_chunk(&indexed, &packer, snap.tree, &comps);
    packer.flush().unwrap();
    snap.time = "2024-01-03T00:00:00Z".parse().unwrap();
    let damaged = lock.save_snapshot(&snap).unwrap().0.to_hex();

    fs::remove_file(&doc).unwrap();
    let report = scan(&repo, &[], DIFFERENCES);
    assert_eq!(
        field_str(&report, "snapshot"),
        damaged,
        "the newest snapshot is scanned"
    );
    let lost = entry(&report, "missing", &src, "/doc.txt");
    assert_eq!(
        field_str(&lost["source"], "snapshot"),
        second,
        "the newest intact version"
    );
    run_printed(&repo, field_str(lost, "restore_command"));
    assert_eq!(fs::read(&doc).unwrap(), b"version two!");
}
