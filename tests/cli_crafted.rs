//! End-to-end tests with hostile inputs: a repository whose trees were
//! crafted by an attacker (restore must stay inside its target), and a
//! source tree with unreadable entries (backup is partial, exit 3).

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use strata::backend::local::LocalBackend;
use strata::repo::blob::BlobType;
use strata::repo::id::{BlobId, TreeId};
use strata::repo::lock::LockMode;
use strata::repo::repository::Repository;
use strata::repo::snapshot::{Snapshot, Summary};
use strata::repo::tree::{ChunkRef, Node, NodeKind, Timespec, Tree};
use strata::write::packer::Packer;

use common::e2e::*;
use common::repo::strata_bin;
use common::*;

// ---------------------------------------------------------------------------
// helpers

fn node(name: &[u8], kind: NodeKind, size: u64, mode: u32) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        user: "root".into(),
        group: "root".into(),
        mtime: Timespec {
            sec: 1_600_000_000,
            nsec: 0,
        },
        ctime: Timespec {
            sec: 1_600_000_000,
            nsec: 0,
        },
        inode: 0,
        device: 0,
        links: 1,
        size,
        xattrs: Vec::new(),
    }
}

fn file(name: &[u8], chunks: &[(BlobId, u32)]) -> Node {
    let content: Vec<ChunkRef> = chunks
        .iter()
        .map(|&(id, len)| ChunkRef { id, len })
        .collect();
    let size = chunks.iter().map(|c| u64::from(c.1)).sum();
    node(name, NodeKind::File { content }, size, 0o644)
}

fn dir(name: &[u8], subtree: TreeId) -> Node {
    node(name, NodeKind::Dir { subtree }, 0, 0o755)
}

fn symlink_node(name: &[u8], target: &[u8]) -> Node {
    node(
        name,
        NodeKind::Symlink {
            target: target.to_vec(),
        },
        0,
        0o777,
    )
}

/// Every path below `root` (symlinks not followed) whose file name is one of
/// `names`, leaving out the subtrees in `skip`.
fn find_names(root: &Path, names: &[&str], skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("read_dir entry");
        let path = entry.path();
        if skip.contains(&path) {
            continue;
        }
        if names.iter().any(|n| entry.file_name() == *n) {
            out.push(path.clone());
        }
        if entry.file_type().expect("file type").is_dir() {
            find_names(&path, names, skip, out);
        }
    }
}

fn assert_no_panic(what: &str, out: &Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
}

/// The restore report's errors as (path, message) pairs.
fn report_errors(report: &Value) -> Vec<(String, String)> {
    field_array(report, "errors")
        .iter()
        .map(|e| {
            (
                e[0].as_str().expect("error path").to_string(),
                e[1].as_str().expect("error message").to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1: a crafted repository

struct Crafted {
    ok_content: Vec<u8>,
    after_content: Vec<u8>,
    abs_dir: PathBuf,
}

/// Writes the hostile snapshot through the library into the (initialised)
/// repository of `repo`; `outside` is where the symlink `link` points.
fn craft_snapshot(repo: &TestRepo, outside: &Path) -> Crafted {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let abs_dir = PathBuf::from(format!(
        "/tmp/strata-crafted-{}-{nanos}",
        std::process::id()
    ));
    assert!(!abs_dir.exists(), "{abs_dir:?} exists before the test");

    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let opened = Repository::open(backend, repo.password.as_bytes()).expect("open repository");
    let indexed = opened.open_index(None).expect("load index");
    let lock = indexed
        .lock(LockMode::Shared, "test", Duration::ZERO, None)
        .expect("lock");
    let packer = Packer::new(&lock, false);

    let ok_content = b"ok: the only honest file of this snapshot\n".to_vec();
    let after_content = b"after the upward symlink\n".to_vec();
    let evil_content = b"attacker controlled bytes\n".to_vec();
    let mismatch_content = b"twenty-odd bytes of real content".to_vec();
    let save = |ty: BlobType, bytes: &[u8]| packer.save(ty, bytes).expect("save blob").0;
    let ok_id = save(BlobType::Data, &ok_content);
    let after_id = save(BlobType::Data, &after_content);
    let evil_id = save(BlobType::Data, &evil_content);
    let mismatch_id = save(BlobType::Data, &mismatch_content);
    let evil_len = evil_content.len() as u32;

    // `link` as a directory holding `pwned`.
    let pwned_tree = Tree {
        nodes: vec![file(b"pwned", &[(evil_id, evil_len)])],
    };
    let pwned_tree_id = TreeId(save(BlobType::Tree, &pwned_tree.encode()).0);

    // `d`: a symlink pointing three levels up, then a regular file.
    let d_tree = Tree {
        nodes: vec![
            symlink_node(b"up", b"../../.."),
            file(b"after", &[(after_id, after_content.len() as u32)]),
        ],
    };
    let d_tree_id = TreeId(save(BlobType::Tree, &d_tree.encode()).0);

    let abs_name = abs_dir.join("abs-escape");
    // Struct literal, not `Tree::new`: keeps this (unsorted) order and both
    // entries named `link`.
    let root = Tree {
        nodes: vec![
            file(b"ok.txt", &[(ok_id, ok_content.len() as u32)]),
            file(b"..", &[(evil_id, evil_len)]),
            file(b"../../escape", &[(evil_id, evil_len)]),
            file(
                abs_name.to_str().unwrap().as_bytes(),
                &[(evil_id, evil_len)],
            ),
            file(b"", &[(evil_id, evil_len)]),
            file(b"nul\0name", &[(evil_id, evil_len)]),
            symlink_node(b"link", outside.to_str().unwrap().as_bytes()),
            dir(b"link", pwned_tree_id),
            dir(b"d", d_tree_id),
            // The snapshot says 7 bytes; the blob holds more.
            file(b"bad-length.bin", &[(mismatch_id, 7)]),
        ],
    };
    assert_eq!(root.nodes.iter().filter(|n| n.name == b"link").count(), 2);
    let root_id = TreeId(save(BlobType::Tree, &root.encode()).0);
    packer.flush().expect("flush packer");

    let snap = Snapshot {
        time: chrono::Utc::now(),
        host: "h".into(),
        username: String::new(),
        uid: 0,
        gid: 0,
        paths: vec!["/crafted".into()],
        tags: Vec::new(),
        parent: None,
        original: None,
        tree: root_id,
        sources: Vec::new(),
        summary: Summary::default(),
        program_version: "test".into(),
    };
    lock.save_snapshot(&snap).expect("save snapshot");
    Crafted {
        ok_content,
        after_content,
        abs_dir,
    }
}

/// The bad entries as they are named in the report (paths relative to the
/// target) — every one must be reported. The last one is only found when its
/// content is read, so not by a dry run.
const BAD_PATHS: [&str; 4] = ["..", "../../escape", "link", "bad-length.bin"];

fn assert_names_bad_entries(err: &str, abs_name: &str, dry_run: bool) {
    let named = if dry_run {
        &BAD_PATHS[..3]
    } else {
        &BAD_PATHS[..]
    };
    for bad in named.iter().copied().chain([abs_name]) {
        assert!(
            err.contains(&format!("strata: error: {bad}: ")),
            "stderr does not name the bad entry {bad:?}:\n{err}"
        );
    }
    // The empty name and the name with a NUL byte are named in the message.
    assert!(
        err.contains(r#"invalid file name """#),
        "stderr does not report the empty name:\n{err}"
    );
    assert!(
        err.contains(r#"invalid file name "nul\0name""#),
        "stderr does not report the name with a NUL byte:\n{err}"
    );
    assert!(
        err.contains("entries named \"link\""),
        "stderr does not explain the duplicate `link`:\n{err}"
    );
    assert!(
        dry_run || err.contains("the snapshot says 7"),
        "stderr does not explain the length mismatch:\n{err}"
    );
}

fn assert_restored_good_entries(t: &Path, crafted: &Crafted) {
    assert_eq!(fs::read(t.join("ok.txt")).unwrap(), crafted.ok_content);
    let up = t.join("d/up");
    assert!(
        fs::symlink_metadata(&up).unwrap().file_type().is_symlink(),
        "d/up must be restored as a symlink"
    );
    assert_eq!(fs::read_link(&up).unwrap(), PathBuf::from("../../.."));
    let after = t.join("d/after");
    assert!(fs::symlink_metadata(&after).unwrap().is_file());
    assert_eq!(fs::read(&after).unwrap(), crafted.after_content);
    // Nothing else: invalid names, both `link` entries and the file whose
    // length is wrong are not written (not even partially).
    let listing: Vec<(PathBuf, String)> = dir_listing(t)
        .into_iter()
        .map(|(p, (kind, _))| (p, kind))
        .collect();
    let want: Vec<(PathBuf, String)> = [
        ("d", "dir"),
        ("d/after", "file"),
        ("d/up", "symlink"),
        ("ok.txt", "file"),
    ]
    .into_iter()
    .map(|(p, k)| (PathBuf::from(p), k.to_string()))
    .collect();
    assert_eq!(listing, want, "unexpected entries in the target {t:?}");
}

#[test]
fn crafted_repository_restores_only_inside_the_target() {
    let repo = fast_repo();
    let outside = repo.scratch("outside");
    let crafted = craft_snapshot(&repo, &outside);
    let abs_name = crafted.abs_dir.join("abs-escape");
    let abs_name = abs_name.to_str().unwrap();

    // Default (on-conflict fail) into a target that does not exist yet.
    let t1 = repo.path().join("scratch/restore-fail/t");
    let out = repo.run(restore_args("latest", &t1, &[]));
    assert_no_panic("restore", &out);
    assert_eq!(code(&out), 3, "restore: {}", stderr(&out));
    assert_names_bad_entries(&stderr(&out), abs_name, false);
    assert_restored_good_entries(&t1, &crafted);

    // --on-conflict overwrite into a fresh target, with the JSON report.
    let t2 = repo.scratch("restore-overwrite").join("t");
    fs::create_dir(&t2).unwrap();
    let out = repo.run(restore_args(
        "latest",
        &t2,
        &["--on-conflict", "overwrite", "--json"],
    ));
    assert_no_panic("restore --on-conflict overwrite", &out);
    assert_eq!(code(&out), 3, "restore overwrite: {}", stderr(&out));
    assert_names_bad_entries(&stderr(&out), abs_name, false);
    assert_restored_good_entries(&t2, &crafted);
    let report = stdout_json(&out, "restore --json");
    let errors = report_errors(&report);
    let mut paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    paths.sort();
    let mut want: Vec<&str> = BAD_PATHS.to_vec();
    want.extend(["", "nul\0name", abs_name]);
    want.sort();
    assert_eq!(
        paths, want,
        "each bad entry is reported once, good ones never: {errors:?}"
    );
    assert_eq!(report["files"], 2, "{report:#}");
    assert_eq!(report["symlinks"], 1, "{report:#}");

    // --dry-run: the plan holds only the valid, unique entries; nothing is
    // written, not even the target.
    let t3 = repo.path().join("scratch/restore-dry/t");
    let out = repo.run(restore_args("latest", &t3, &["--dry-run", "--json"]));
    assert_no_panic("restore --dry-run", &out);
    assert_eq!(code(&out), 3, "restore --dry-run: {}", stderr(&out));
    assert_names_bad_entries(&stderr(&out), abs_name, true);
    assert!(
        fs::symlink_metadata(&t3).is_err(),
        "--dry-run created the target {t3:?}"
    );
    let plan = stdout_json(&out, "restore --dry-run --json");
    let mut planned: Vec<String> = field_array(&plan, "planned")
        .iter()
        .map(|p| field_str(p, "path").to_string())
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        vec!["bad-length.bin", "d", "d/after", "d/up", "ok.txt"],
        "{plan:#}"
    );

    // Nothing escaped any of the targets.
    assert_empty_dir(&outside);
    assert!(
        fs::symlink_metadata(&crafted.abs_dir).is_err(),
        "{:?} was created",
        crafted.abs_dir
    );
    let mut found = Vec::new();
    let targets = [t1.clone(), t2.clone(), t3.clone()];
    find_names(
        repo.path(),
        &["escape", "abs-escape", "pwned"],
        &targets,
        &mut found,
    );
    let parent = repo.path().parent().unwrap();
    for name in ["escape", "abs-escape", "pwned"] {
        if fs::symlink_metadata(parent.join(name)).is_ok() {
            found.push(parent.join(name));
        }
    }
    assert!(found.is_empty(), "written outside the targets: {found:?}");

    // check must cope with the crafted trees.
    let out = repo.run(["check"]);
    assert_no_panic("check", &out);
    let rc = code(&out);
    assert!(rc == 0 || rc == 1, "check: exit {rc}\n{}", stderr(&out));
}

/// Repository content is untrusted: names printed on stderr must not carry
/// raw control characters (here: the NUL byte of the crafted `nul\0name`).
#[test]
fn crafted_names_are_not_printed_raw() {
    let repo = fast_repo();
    let outside = repo.scratch("outside");
    craft_snapshot(&repo, &outside);
    let target = repo.scratch("restore");
    let out = repo.run(restore_args("latest", &target, &[]));
    assert_no_panic("restore", &out);
    assert_eq!(code(&out), 3, "restore: {}", stderr(&out));
    assert!(
        !out.stderr.contains(&0u8),
        "stderr of restore holds a raw NUL byte from a crafted name:\n{:?}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// 2: unreadable entries make a backup partial

/// Every ancestor of `dir` (and `dir`) can be traversed by other users.
fn traversable(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        fs::metadata(d)
            .map(|m| m.mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// A `strata` command for the repository/cache below `base`, run as user
/// `nobody` when we are root (root reads everything).
fn cmd_as(base: &Path, as_nobody: bool, args: &[OsString]) -> Command {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(strata_bin());
        c
    } else {
        Command::new(strata_bin())
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("STRATA_REPOSITORY", base.join("repo"))
        .env("STRATA_PASSWORD", common::repo::DEFAULT_PASSWORD)
        .env("STRATA_CACHE_DIR", base.join("cache"))
        .current_dir(base)
        .stdin(Stdio::null())
        .args(args);
    cmd
}

fn run_as(base: &Path, as_nobody: bool, args: Vec<OsString>, want: i32) -> Output {
    let mut cmd = cmd_as(base, as_nobody, &args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert_no_panic(&format!("{args:?}"), &out);
    if out.status.code() != Some(want) {
        panic!(
            "{args:?} (as nobody: {as_nobody}): expected exit {want}, got {}\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
    }
    out
}

#[test]
fn unreadable_entries_make_backup_partial() {
    let as_nobody = rustix::process::geteuid().is_root();
    if as_nobody {
        let found = Command::new("setpriv").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "setpriv (util-linux) is needed to run strata as nobody"
        );
    }
    let cargo_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let parent = if traversable(cargo_tmp) {
        cargo_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let tmp = tempfile::Builder::new()
        .prefix("strata-nobody-")
        .tempdir_in(&parent)
        .expect("temp dir");
    let base = tmp.path();
    set_mode(base, 0o777);
    fs::create_dir(base.join("cache")).unwrap();
    set_mode(&base.join("cache"), 0o777);
    let src = base.join("src");
    fs::create_dir(&src).unwrap();
    set_mode(&src, 0o755);
    let readable = b"everyone may read this\n";
    fs::write(src.join("readable.txt"), readable).unwrap();
    set_mode(&src.join("readable.txt"), 0o644);
    fs::write(src.join("secret.txt"), b"nobody may read this\n").unwrap();
    set_mode(&src.join("secret.txt"), 0o000);
    fs::create_dir(src.join("locked")).unwrap();
    fs::write(src.join("locked/inside.txt"), b"hidden\n").unwrap();
    set_mode(&src.join("locked"), 0o000);

    run_as(base, as_nobody, FAST_INIT.map(OsString::from).into(), 0);
    let out = run_as(base, as_nobody, os_args!["backup", &src, "--json"], 3);
    let err = stderr(&out);
    assert!(
        err.contains("secret.txt"),
        "stderr does not name secret.txt:\n{err}"
    );
    assert!(
        err.contains("locked"),
        "stderr does not name locked:\n{err}"
    );
    let result = stdout_json(&out, "backup --json");
    let n = result["summary"]["errors"]
        .as_u64()
        .expect("summary.errors");
    assert!(n > 0, "summary.errors is {n}: {result:#}");
    let errors = result["errors"].as_array().expect("errors array");
    let names = |needle: &str| {
        errors
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.contains(needle)))
    };
    assert!(
        names("secret.txt"),
        "errors do not name secret.txt: {result:#}"
    );
    assert!(names("locked"), "errors do not name locked: {result:#}");
    assert!(
        !names("readable.txt"),
        "readable.txt must not be an error: {result:#}"
    );
    assert!(
        result["snapshot_id"].is_string(),
        "a partial backup still saves a snapshot: {result:#}"
    );

    let out = run_as(base, as_nobody, os_args!["snapshots", "--json"], 0);
    let snaps = stdout_json(&out, "snapshots --json");
    assert_eq!(
        snaps.as_array().map(Vec::len),
        Some(1),
        "one snapshot: {snaps:#}"
    );

    // Restore as ourselves.
    let target = base.join("restore");
    run_as(base, false, restore_args("latest", &target, &[]), 0);
    let restored = restored_path(&target, &src);
    assert_eq!(fs::read(restored.join("readable.txt")).unwrap(), readable);
    assert!(
        fs::symlink_metadata(restored.join("secret.txt")).is_err(),
        "secret.txt could not be read, it must not be restored"
    );
    assert!(
        fs::symlink_metadata(restored.join("locked/inside.txt")).is_err(),
        "locked/inside.txt could not be read, it must not be restored"
    );

    // Let the temp dir be removed whatever the modes.
    set_mode(&src.join("locked"), 0o755);
    if let Ok(md) = fs::symlink_metadata(restored.join("locked"))
        && md.is_dir()
    {
        set_mode(&restored.join("locked"), 0o755);
    }
}
