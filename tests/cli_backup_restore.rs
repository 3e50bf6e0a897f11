//! End-to-end tests of the `strata` binary: backup, restore, inspection,
//! incremental backups, passwords and usage errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::e2e::*;
use common::tree::*;
use common::*;

const KIB64: u64 = 64 * 1024;

/// `src` joined with a relative path, as the UTF-8 string the CLI takes.
fn snap_path(src: &Path, rel: impl AsRef<Path>) -> String {
    src.join(rel)
        .to_str()
        .expect("test paths are UTF-8")
        .to_string()
}

/// The differences `compare_trees(src, restored)` must report when exactly
/// the entries of `src` for which `keep` is true were restored (and `keep`
/// is closed under ancestors): one "only in a" line per top-most dropped
/// entry.
fn expected_dropped(src: &Path, keep: impl Fn(&Path, &fs::Metadata) -> bool) -> Vec<String> {
    let all = dir_entries(src);
    let kept: BTreeSet<&PathBuf> = all
        .iter()
        .filter(|(p, m)| keep(p, m))
        .map(|(p, _)| p)
        .collect();
    for p in &kept {
        if let Some(parent) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
            assert!(
                kept.contains(&parent.to_path_buf()),
                "test bug: keep() is not closed under ancestors at {p:?}"
            );
        }
    }
    let mut out: Vec<String> = all
        .iter()
        .filter(|(p, _)| !kept.contains(p))
        .filter(|(p, _)| {
            let parent = p.parent().unwrap();
            parent.as_os_str().is_empty() || kept.contains(&parent.to_path_buf())
        })
        .map(|(p, m)| format!("only in a: {p:?} ({})", kind_name(m)))
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn name_ends_with(p: &Path, suffix: &[u8]) -> bool {
    p.file_name()
        .is_some_and(|n| n.as_bytes().ends_with(suffix))
}

// ---------------------------------------------------------------------------
// 1–3: round trip, incremental backups, snapshots/ls/cat

#[test]
fn round_trip_incremental_backups_and_inspection() {
    let (repo, src, b1) = backed_up_tree(11);
    let files = regular_files(&src);
    let total_bytes: u64 = files.values().sum();

    // --- first backup
    let id1 = field_str(&b1, "snapshot_id").to_string();
    assert!(is_hex_id(&id1), "snapshot_id {id1:?}");
    assert_eq!(b1["parent"], Value::Null, "{b1:#}");
    assert_eq!(b1["errors"].as_array().map(Vec::len), Some(0), "{b1:#}");
    let s1 = &b1["summary"];
    assert!(field_u64(s1, "files_new") > 0, "{s1:#}");
    assert_eq!(field_u64(s1, "files_new"), files.len() as u64, "{s1:#}");
    assert_eq!(field_u64(s1, "total_files"), files.len() as u64, "{s1:#}");
    assert_eq!(field_u64(s1, "total_bytes"), total_bytes, "{s1:#}");
    assert_eq!(field_u64(s1, "bytes_read"), total_bytes, "{s1:#}");
    assert_eq!(field_u64(s1, "errors"), 0, "{s1:#}");
    assert!(field_u64(s1, "data_blobs_added") > 0, "{s1:#}");

    // --- full restore: bytes and metadata
    let target = repo.scratch("restore-full");
    repo.ok(restore_args("latest", &target, &[]));
    let restored = restored_path(&target, &src);
    assert!(restored.is_dir(), "{restored:?} was not restored");
    assert_trees_equal_with(
        &src,
        &restored,
        CompareOpts {
            owner: true,
            ..CompareOpts::default()
        },
    );
    let first = src.components().nth(1).unwrap().as_os_str().to_owned();
    let top: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![first], "only the backed-up path is restored");

    // --- stats: sizes and deduplication of the three identical files
    let st = repo.json(["stats"]);
    assert_eq!(field_u64(&st, "snapshots"), 1, "{st:#}");
    assert_eq!(field_u64(&st, "files"), files.len() as u64, "{st:#}");
    let logical = field_u64(&st, "logical_size");
    assert_eq!(logical, total_bytes, "{st:#}");
    let dedup = field_f64(&st, "dedup_ratio");
    assert!(
        dedup > 1.0,
        "dedup_ratio {dedup} must show deduplication: {st:#}"
    );
    let unique_data = logical as f64 / dedup;
    assert!(
        logical as f64 - unique_data >= (2 * DUP_SIZE) as f64 - 4096.0,
        "unique data {unique_data} should be at least 2 x 3 MiB below logical {logical}: {st:#}"
    );
    assert!(
        field_u64(&st, "unique_raw_size") < logical,
        "unique size must be below the logical size: {st:#}"
    );
    assert!(field_f64(&st, "compression_ratio") > 1.0, "{st:#}");
    assert_eq!(
        field_u64(&st, "repository_size"),
        dir_size(&repo.repo_path()),
        "{st:#}"
    );

    // --- second backup of the unchanged tree
    let size_before = dir_size(&repo.repo_path());
    let b2 = repo.json(os_args!["backup", &src]);
    let id2 = field_str(&b2, "snapshot_id").to_string();
    assert_ne!(id2, id1);
    assert_eq!(field_str(&b2, "parent"), id1, "{b2:#}");
    let s2 = &b2["summary"];
    assert_eq!(field_u64(s2, "bytes_read"), 0, "{s2:#}");
    assert_eq!(
        field_u64(s2, "files_unmodified"),
        files.len() as u64,
        "{s2:#}"
    );
    assert_eq!(field_u64(s2, "total_files"), files.len() as u64, "{s2:#}");
    assert_eq!(field_u64(s2, "files_new"), 0, "{s2:#}");
    assert_eq!(field_u64(s2, "files_changed"), 0, "{s2:#}");
    assert_eq!(field_u64(s2, "data_blobs_added"), 0, "{s2:#}");
    assert!(field_u64(s2, "bytes_added") < KIB64, "{s2:#}");
    let grown = dir_size(&repo.repo_path()) - size_before;
    assert!(grown < KIB64, "repository grew by {grown} bytes");

    // --- a backup after changing one file reads only that file
    let changed_rel = SIZED_FILES[3].0;
    let changed = src.join(changed_rel);
    let original = fs::read(&changed).unwrap();
    mutate_file(&changed, 3);
    let mutated = fs::read(&changed).unwrap();
    assert_ne!(original, mutated);
    let b3 = repo.json(os_args!["backup", &src]);
    let id3 = field_str(&b3, "snapshot_id").to_string();
    assert_eq!(field_str(&b3, "parent"), id2, "{b3:#}");
    let s3 = &b3["summary"];
    assert_eq!(field_u64(s3, "files_changed"), 1, "{s3:#}");
    assert_eq!(field_u64(s3, "files_new"), 0, "{s3:#}");
    assert_eq!(
        field_u64(s3, "files_unmodified"),
        files.len() as u64 - 1,
        "{s3:#}"
    );
    assert_eq!(field_u64(s3, "bytes_read"), original.len() as u64, "{s3:#}");
    assert!(field_u64(s3, "data_blobs_added") >= 1, "{s3:#}");

    // --- snapshots
    let snaps = repo.json(["snapshots"]);
    let list = snaps.as_array().expect("snapshots --json is an array");
    let ids: BTreeSet<&str> = list.iter().map(|x| field_str(x, "id")).collect();
    assert_eq!(
        ids,
        BTreeSet::from([id1.as_str(), id2.as_str(), id3.as_str()]),
        "{snaps:#}"
    );
    let src_str = src.to_str().unwrap();
    for x in list {
        assert_eq!(x["paths"], serde_json::json!([src_str]), "{x:#}");
        assert!(
            field_str(x, "id").starts_with(field_str(x, "short_id")),
            "{x:#}"
        );
        let want_parent = match field_str(x, "id") {
            i if i == id1 => Value::Null,
            i if i == id2 => Value::String(id1.clone()),
            _ => Value::String(id2.clone()),
        };
        assert_eq!(x["parent"], want_parent, "{x:#}");
    }

    // --- ls --recursive --json lists exactly the tree, special names included
    let ls = repo.json(["ls", "latest", src_str, "--recursive"]);
    let ls = ls.as_array().expect("ls --json is an array");
    let by_path: BTreeMap<String, &Value> = ls
        .iter()
        .map(|e| (field_str(e, "path").to_string(), e))
        .collect();
    assert_eq!(by_path.len(), ls.len(), "duplicate paths in ls output");
    let want: BTreeSet<String> = dir_entries(&src)
        .keys()
        .map(|rel| String::from_utf8_lossy(src.join(rel).as_os_str().as_bytes()).into_owned())
        .collect();
    let got: BTreeSet<String> = by_path.keys().cloned().collect();
    assert_eq!(
        got.symmetric_difference(&want).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "ls paths differ from the source tree"
    );
    let entry = |rel: &str| -> &Value {
        let key = snap_path(&src, rel);
        by_path
            .get(&key)
            .unwrap_or_else(|| panic!("ls lacks {key:?}"))
    };
    for rel in [SPACE_NAME, NEWLINE_NAME, UNICODE_NAME] {
        assert_eq!(field_str(entry(rel), "type"), "file", "{rel:?}");
    }
    let bad =
        String::from_utf8_lossy(src.join(non_utf8_name()).as_os_str().as_bytes()).into_owned();
    assert_eq!(field_str(by_path[&bad], "type"), "file", "non-UTF-8 name");
    assert_eq!(field_u64(entry(BIG_FILE), "size"), BIG_SIZE);
    assert_eq!(field_u64(entry(EXEC_FILE), "mode"), 0o755);
    assert_eq!(field_u64(entry(PRIVATE_DIR), "mode"), 0o700);
    for (rel, target) in [
        (SYMLINK_REL, SYMLINK_REL_TARGET),
        (SYMLINK_ABS, SYMLINK_ABS_TARGET),
        (SYMLINK_DANGLING, SYMLINK_DANGLING_TARGET),
        (SYMLINK_DIR, SYMLINK_DIR_TARGET),
    ] {
        assert_eq!(field_str(entry(rel), "type"), "symlink", "{rel}");
        assert_eq!(field_str(entry(rel), "link_target"), target, "{rel}");
    }
    for rel in EMPTY_DIRS {
        assert_eq!(field_str(entry(rel), "type"), "dir", "{rel}");
    }
    let nanos = field_str(entry(NANOS_FILE), "mtime");
    assert!(
        nanos.contains(".123456789"),
        "mtime of {NANOS_FILE}: {nanos}"
    );
    let old = field_str(entry(PRE1970_FILE), "mtime");
    assert!(old.starts_with("1966-"), "mtime of {PRE1970_FILE}: {old}");

    // --- cat prints exact bytes (small, unicode-named, 50 MiB; old and new versions)
    for rel in [HELLO_FILE, UNICODE_NAME, BIG_FILE] {
        let out = repo.ok(["cat", "latest", &snap_path(&src, rel)]);
        let want = fs::read(src.join(rel)).unwrap();
        assert!(
            out.stdout == want,
            "cat {rel}: {} bytes, expected {} bytes",
            out.stdout.len(),
            want.len()
        );
    }
    let out = repo.ok(["cat", "latest", &snap_path(&src, changed_rel)]);
    assert!(out.stdout == mutated, "cat latest shows the changed file");
    let out = repo.ok(["cat", &id1[..8], &snap_path(&src, changed_rel)]);
    assert!(
        out.stdout == original,
        "cat of the first snapshot shows the old content"
    );
}

// ---------------------------------------------------------------------------
// 4: subpath, include/exclude, conflicts, dry run, verify

/// A fresh `scratch/conflict-<name>` holding a local copy of `l1/side.txt`.
fn conflict_target(repo: &TestRepo, name: &str) -> PathBuf {
    let dir = repo.scratch(&format!("conflict-{name}"));
    fs::create_dir_all(dir.join("l1")).unwrap();
    set_mode(&dir.join("l1"), 0o755);
    fs::write(dir.join("l1/side.txt"), b"locally modified copy\n").unwrap();
    dir
}

#[test]
fn restore_subpaths_filters_conflicts_dry_run_and_verify() {
    let (repo, src, b) = backed_up_tree(22);
    let id = field_str(&b, "snapshot_id").to_string();
    let snap_sub = |rel: &str| format!("{}:{}", &id[..12], snap_path(&src, rel));
    let restore_deep = |t: &Path, extra: &[&str]| restore_args(&snap_sub("deep"), t, extra);
    // `restore latest` with `filters` into scratch/<name>: where <src> lands.
    let restore_filtered = |name: &str, filters: &[&str]| {
        let t = repo.scratch(name);
        repo.ok(restore_args("latest", &t, filters));
        restored_path(&t, &src)
    };

    // --- subpath: the contents of <src>/deep go directly into the target
    let t = repo.scratch("sub-deep");
    repo.ok(restore_deep(&t, &[]));
    assert_trees_equal(&src.join("deep"), &t);

    // --- subpath naming a single file
    let t = repo.scratch("sub-file");
    repo.ok(restore_args(&snap_sub(HELLO_FILE), &t, &[]));
    assert_eq!(rel_files(&t), vec![PathBuf::from("hello.txt")]);
    assert_eq!(
        fs::read(t.join("hello.txt")).unwrap(),
        fs::read(src.join(HELLO_FILE)).unwrap()
    );

    // --- --include: *.txt names anywhere plus the whole <src>/dup directory
    let dup_pattern = snap_path(&src, "dup");
    let restored = restore_filtered(
        "include",
        &["--include", "*.txt", "--include", &dup_pattern],
    );
    let included = |p: &Path, m: &fs::Metadata| -> bool {
        (!m.is_dir() && name_ends_with(p, b".txt")) || p.starts_with("dup")
    };
    let all = dir_entries(&src);
    let kept: BTreeSet<PathBuf> = all
        .iter()
        .filter(|(p, m)| included(p, m))
        .flat_map(|(p, _)| p.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    assert!(kept.contains(&PathBuf::from(DEEP_FILE)));
    assert!(kept.contains(&PathBuf::from(NEWLINE_NAME)));
    let diffs = compare_trees(&src, &restored, CompareOpts::default());
    assert_eq!(
        sorted(diffs),
        expected_dropped(&src, |p, _| kept.contains(p)),
        "--include *.txt --include {dup_pattern}"
    );
    assert!(
        !restored.join("empty").exists(),
        "unmatched empty dir restored"
    );

    // --- --exclude: *.bin names anywhere and the <src>/names directory
    let names_pattern = snap_path(&src, "names");
    let restored = restore_filtered(
        "exclude",
        &["--exclude", "*.bin", "--exclude", &names_pattern],
    );
    let diffs = compare_trees(&src, &restored, CompareOpts::default());
    let want = expected_dropped(&src, |p, _| {
        !p.starts_with("names") && !name_ends_with(p, b".bin")
    });
    assert!(want.contains(&"only in a: \"names\" (dir)".to_string()));
    assert!(want.contains(&format!("only in a: {:?} (file)", Path::new(BIG_FILE))));
    assert_eq!(
        sorted(diffs),
        want,
        "--exclude *.bin --exclude {names_pattern}"
    );

    // --- conflicts: the target holds a modified copy of deep/l1/side.txt
    let deep = src.join("deep");
    let side_src = fs::read(deep.join("l1/side.txt")).unwrap();
    let local = b"locally modified copy\n".to_vec();

    // fail (the default): exit 1, nothing written
    let t = conflict_target(&repo, "fail");
    let before = dir_contents(&t);
    let before_listing = dir_listing(&t);
    let out = run_expect(&repo, restore_deep(&t, &[]), 1);
    assert!(
        stderr(&out).contains("side.txt"),
        "the conflict is named: {}",
        stderr(&out)
    );
    assert_eq!(dir_listing(&t), before_listing, "fail must write nothing");
    assert_eq!(dir_contents(&t), before);
    assert!(!t.join("l1/l2").exists());
    let out = run_expect(&repo, restore_deep(&t, &["--on-conflict", "fail"]), 1);
    assert!(stderr(&out).contains("side.txt"), "{}", stderr(&out));
    assert_eq!(dir_listing(&t), before_listing, "fail must write nothing");

    // skip: the existing file is kept, the rest restored
    let t = conflict_target(&repo, "skip");
    let (_, rep) = json_expect(&repo, restore_deep(&t, &["--on-conflict", "skip"]), 0);
    assert_eq!(fs::read(t.join("l1/side.txt")).unwrap(), local);
    assert_eq!(
        rep["skipped"],
        serde_json::json!(["l1/side.txt"]),
        "{rep:#}"
    );
    let diffs = compare_trees(&deep, &t, CompareOpts::default());
    let want: Vec<String> = diffs
        .iter()
        .filter(|d| !d.contains("\"l1/side.txt\"") && !d.contains("\"l1\":"))
        .cloned()
        .collect();
    assert_eq!(want, Vec::<String>::new(), "skip restores everything else");
    assert!(!t.join("l1/side.txt.strata-restored").exists());

    // overwrite: the snapshot's file replaces the existing one
    let t = conflict_target(&repo, "overwrite");
    repo.ok(restore_deep(&t, &["--on-conflict", "overwrite"]));
    assert_eq!(fs::read(t.join("l1/side.txt")).unwrap(), side_src);
    assert_trees_equal_with(
        &deep,
        &t,
        CompareOpts {
            dir_mtime: false,
            ..CompareOpts::default()
        },
    );

    // rename: both are present
    let t = conflict_target(&repo, "rename");
    let (_, rep) = json_expect(&repo, restore_deep(&t, &["--on-conflict", "rename"]), 0);
    assert_eq!(fs::read(t.join("l1/side.txt")).unwrap(), local);
    assert_eq!(
        fs::read(t.join("l1/side.txt.strata-restored")).unwrap(),
        side_src
    );
    assert_eq!(
        rep["renamed"],
        serde_json::json!([["l1/side.txt", "l1/side.txt.strata-restored"]]),
        "{rep:#}"
    );
    assert_eq!(
        fs::read(t.join("l1/l2/l3/leaf.txt")).unwrap(),
        fs::read(deep.join("l1/l2/l3/leaf.txt")).unwrap()
    );

    // --- dry run: nothing is written, not even the target directory
    let t = conflict_target(&repo, "dry");
    let before = dir_listing(&t);
    let before_bytes = dir_contents(&t);
    let (_, rep) = json_expect(
        &repo,
        restore_deep(&t, &["--dry-run", "--on-conflict", "overwrite"]),
        0,
    );
    assert_eq!(dir_listing(&t), before, "dry run wrote something");
    assert_eq!(dir_contents(&t), before_bytes);
    let planned = field_array(&rep, "planned");
    assert!(
        planned
            .iter()
            .any(|p| p["path"] == "l1/side.txt" && p["existing"] == true),
        "{rep:#}"
    );
    let fresh = repo.scratch("dry").join("not/yet");
    repo.ok(restore_args("latest", &fresh, &["--dry-run"]));
    assert!(
        fs::symlink_metadata(&fresh).is_err(),
        "dry run created the target"
    );
    assert_eq!(
        fs::read_dir(repo.path().join("scratch/dry"))
            .unwrap()
            .count(),
        0,
        "dry run created directories"
    );

    // --- --verify on a good restore
    let t = repo.scratch("verify");
    let (_, rep) = json_expect(
        &repo,
        restore_args(&snap_sub("sizes"), &t, &["--verify"]),
        0,
    );
    assert_eq!(
        field_u64(&rep, "verified_files"),
        SIZED_FILES.len() as u64,
        "{rep:#}"
    );
    assert_eq!(rep["verify_failures"], serde_json::json!([]), "{rep:#}");
    assert_eq!(rep["errors"], serde_json::json!([]), "{rep:#}");
    assert_trees_equal(&src.join("sizes"), &t);
}

// ---------------------------------------------------------------------------
// 5: wrong password

#[test]
fn wrong_password_is_refused_and_changes_nothing() {
    let (mut repo, src) = backed_up_small_tree(5, 30);
    let before = dir_contents(&repo.repo_path());
    let before_listing = dir_listing(&repo.repo_path());

    repo.password = "wrong".to_string();
    let out = run_expect(&repo, ["snapshots"], 1);
    assert!(
        stderr(&out).to_lowercase().contains("password"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(&out));
    assert_eq!(dir_listing(&repo.repo_path()), before_listing);
    assert!(dir_contents(&repo.repo_path()) == before, "repo changed");

    fs::write(src.join("new-file.txt"), b"new").unwrap();
    let out = run_expect(&repo, os_args!["backup", &src], 1);
    assert!(
        stderr(&out).to_lowercase().contains("password"),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(
        dir_listing(&repo.repo_path()),
        before_listing,
        "backup with a wrong password added files"
    );
    assert!(dir_contents(&repo.repo_path()) == before, "repo changed");

    let t = repo.scratch("restore");
    run_expect(&repo, restore_args("latest", &t, &[]), 1);
    assert!(list_files(&t).is_empty());

    // No password at all (stdin is not a terminal): refused as well.
    let mut cmd = repo.cmd(["snapshots"]);
    cmd.env_remove("STRATA_PASSWORD");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).to_lowercase().contains("password"));

    repo.password = common::repo::DEFAULT_PASSWORD.to_string();
    let list = repo.json(["snapshots"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(dir_contents(&repo.repo_path()) == before, "repo changed");
}

// ---------------------------------------------------------------------------
// 6: keys

fn key_list(repo: &TestRepo) -> Vec<(String, bool)> {
    let v = repo.json(["key", "list"]);
    v.as_array()
        .expect("key list --json is an array")
        .iter()
        .map(|k| (field_str(k, "id").to_string(), k["current"] == true))
        .collect()
}

#[test]
fn keys_add_list_and_remove() {
    let (mut repo, _src) = backed_up_small_tree(6, 10);

    let keys = key_list(&repo);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (first, current) = keys[0].clone();
    assert!(current && is_hex_id(&first), "{keys:?}");

    const SECOND: &str = "second password";
    let mut cmd = repo.cmd(["key", "add", "--json"]);
    cmd.env("STRATA_NEW_PASSWORD", SECOND);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "key add: {}", stderr(&out));
    let added = stdout_json(&out, "key add --json");
    let second = field_str(&added, "id").to_string();
    assert!(is_hex_id(&second) && second != first, "{added:#}");

    let keys = key_list(&repo);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let ids: BTreeSet<&str> = keys.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids, BTreeSet::from([first.as_str(), second.as_str()]));
    assert!(keys.contains(&(first.clone(), true)), "{keys:?}");
    assert_eq!(list_files(&repo.repo_path().join("keys")).len(), 2);

    // Both passwords open the repository.
    repo.ok(["snapshots"]);
    repo.password = SECOND.to_string();
    let snaps = repo.json(["snapshots"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(1));
    let keys = key_list(&repo);
    assert!(keys.contains(&(second.clone(), true)), "{keys:?}");
    assert!(keys.contains(&(first.clone(), false)), "{keys:?}");

    // Removing the key in use fails and keeps it.
    let out = run_expect(&repo, ["key", "remove", &second[..10]], 1);
    assert!(!stderr(&out).is_empty());
    assert_eq!(key_list(&repo).len(), 2);

    // Removing the other key works; its password stops working.
    repo.ok(["key", "remove", &first[..10]]);
    let keys = key_list(&repo);
    assert_eq!(keys, vec![(second.clone(), true)]);
    assert_eq!(list_files(&repo.repo_path().join("keys")).len(), 1);
    repo.password = common::repo::DEFAULT_PASSWORD.to_string();
    let out = run_expect(&repo, ["snapshots"], 1);
    assert!(stderr(&out).to_lowercase().contains("password"));
    repo.password = SECOND.to_string();
    repo.ok(["snapshots"]);
}

// ---------------------------------------------------------------------------
// 7: usage errors and a missing repository

#[test]
fn usage_errors_exit_2_and_missing_repository_exits_1() {
    let (repo, src) = backed_up_small_tree(7, 5);
    let t = repo.scratch("t");

    for args in [
        os_args!["restore", "latest"],
        os_args!["restore", "--target", &t],
        restore_args("latest", &t, &["--on-conflict", "explode"]),
        os_args!["backup"],
        os_args!["frobnicate"],
        os_args!["snapshots", "--no-such-flag"],
        os_args!["check", "--read-data", "--read-data-subset", "1/2"],
        os_args!["key"],
        os_args![],
    ] {
        let out = repo.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: stderr: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).is_empty(), "{args:?}: no usage message");
    }
    assert!(list_files(&t).is_empty(), "a usage error wrote something");

    // A repository path with nothing there.
    let missing = repo.path().join("no-repo-here");
    for args in [
        os_args!["snapshots"],
        os_args!["backup", &src],
        restore_args("latest", &t, &[]),
        os_args!["check"],
    ] {
        let mut cmd = repo.cmd(&args);
        cmd.env("STRATA_REPOSITORY", &missing);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("init"),
            "{args:?}: stderr should mention init: {}",
            stderr(&out)
        );
        assert!(
            fs::symlink_metadata(&missing).is_err(),
            "{args:?} created the repository directory"
        );
    }
    assert!(list_files(&t).is_empty());
}
