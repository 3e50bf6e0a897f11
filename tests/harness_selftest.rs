//! Tests of the end-to-end harness itself (no working `strata` needed).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::tree::*;
use common::*;

/// Two trees generated from the same seed, in `tmp/a` and `tmp/b`.
fn twin_trees(tmp: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    generate_tree(&a, seed);
    generate_tree(&b, seed);
    (a, b)
}

fn diffs(a: &Path, b: &Path) -> Vec<String> {
    compare_trees(a, b, CompareOpts::default())
}

fn q(rel: impl AsRef<Path>) -> String {
    format!("{:?}", rel.as_ref())
}

#[test]
fn mutations_are_reported_exactly() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (a, b) = twin_trees(tmp.path(), 7);
    assert_eq!(diffs(&a, &b), Vec::<String>::new());
    assert_trees_equal(&a, &b);
    check_changed_byte(&a, &b);
    check_changed_mode(&a, &b);
    check_changed_mtimes(&a, &b);
    check_deleted_file(&a, &b);
    check_deleted_dir(&a, &b);
    check_retargeted_symlink(&a, &b);
    check_type_change(&a, &b);
}

fn check_changed_byte(a: &Path, b: &Path) {
    let rel = SIZED_FILES[4].0;
    flip_byte(&b.join(rel), 1_000_003);
    copy_mtime(&a.join(rel), &b.join(rel));
    let want = format!(
        "content differs: {}: first difference at byte 1000003",
        q(rel)
    );
    assert_eq!(diffs(a, b), vec![want]);
    flip_byte(&b.join(rel), 1_000_003);
    copy_mtime(&a.join(rel), &b.join(rel));
    assert_eq!(diffs(a, b), Vec::<String>::new());
}

fn check_changed_mode(a: &Path, b: &Path) {
    set_mode(&b.join(EXEC_FILE), 0o700);
    let want = format!("mode differs: {}: a is 0755, b is 0700", q(EXEC_FILE));
    assert_eq!(diffs(a, b), vec![want]);
    let opts = CompareOpts {
        mode: false,
        ..CompareOpts::default()
    };
    assert!(compare_trees(a, b, opts).is_empty());
    set_mode(&b.join(EXEC_FILE), 0o755);
}

fn check_changed_mtimes(a: &Path, b: &Path) {
    let (s, ns) = NANOS_MTIME;
    set_mtime(&b.join(NANOS_FILE), s, ns + 1);
    let want = format!(
        "mtime differs: {}: a is {s}s+{ns}ns, b is {s}s+{}ns",
        q(NANOS_FILE),
        ns + 1
    );
    assert_eq!(diffs(a, b), vec![want]);
    copy_mtime(&a.join(NANOS_FILE), &b.join(NANOS_FILE));
    check_other_mtime(a, b, SYMLINK_DANGLING, "mtime");
    check_other_mtime(a, b, "deep/l1", "dir_mtime");
}

/// Shift the mtime of `rel` (a symlink or dir) by one second, check the
/// report and that disabling `opt` hides it, then restore.
fn check_other_mtime(a: &Path, b: &Path, rel: &str, opt: &str) {
    let (s, ns) = mtime_of(&b.join(rel));
    set_mtime(&b.join(rel), s - 1, ns);
    let want = format!(
        "mtime differs: {}: a is {s}s+{ns}ns, b is {}s+{ns}ns",
        q(rel),
        s - 1
    );
    assert_eq!(diffs(a, b), vec![want]);
    let mut opts = CompareOpts::default();
    match opt {
        "mtime" => opts.mtime = false,
        _ => opts.dir_mtime = false,
    }
    assert!(compare_trees(a, b, opts).is_empty());
    set_mtime(&b.join(rel), s, ns);
}

fn check_deleted_file(a: &Path, b: &Path) {
    fs::remove_file(b.join(ZERO_FILE)).unwrap();
    copy_mtime(&a.join("files"), &b.join("files"));
    assert_eq!(
        diffs(a, b),
        vec![format!("only in a: {} (file)", q(ZERO_FILE))]
    );
    assert_eq!(
        diffs(b, a),
        vec![format!("only in b: {} (file)", q(ZERO_FILE))]
    );
    fs::write(b.join(ZERO_FILE), b"").unwrap();
    copy_mtime(&a.join(ZERO_FILE), &b.join(ZERO_FILE));
    copy_mtime(&a.join("files"), &b.join("files"));
    assert!(diffs(a, b).is_empty());
}

/// A missing directory is reported once, not once per descendant.
fn check_deleted_dir(a: &Path, b: &Path) {
    fs::remove_dir_all(b.join("deep/l1/l2/l3")).unwrap();
    copy_mtime(&a.join("deep/l1/l2"), &b.join("deep/l1/l2"));
    assert_eq!(
        diffs(a, b),
        vec![format!("only in a: {} (dir)", q("deep/l1/l2/l3"))]
    );
}

fn check_retargeted_symlink(a: &Path, b: &Path) {
    let link = b.join(SYMLINK_ABS);
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/etc/hosts", &link).unwrap();
    copy_mtime(&a.join(SYMLINK_ABS), &link);
    copy_mtime(&a.join("links"), &b.join("links"));
    let want = format!(
        "symlink target differs: {}: a -> \"/etc/passwd\", b -> \"/etc/hosts\"",
        q(SYMLINK_ABS)
    );
    assert_eq!(
        diffs(a, b),
        vec![format!("only in a: {} (dir)", q("deep/l1/l2/l3")), want]
    );
}

fn check_type_change(a: &Path, b: &Path) {
    let rel = non_utf8_name();
    fs::remove_file(b.join(rel)).unwrap();
    fs::create_dir(b.join(rel)).unwrap();
    let got = compare_trees(a, b, CompareOpts::content_only());
    let want = format!("type differs: {}: a is file, b is dir", q(rel));
    assert!(got.contains(&want), "{got:#?}");
    assert!(want.contains("bad\\xFF\\xFEname"), "{want}");
}

#[test]
fn generate_tree_has_special_entries() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = tmp.path().join("t");
    generate_tree(&root, 42);
    check_sizes(&root);
    check_names_and_dirs(&root);
    check_symlinks(&root);
    check_modes(&root);
    check_times(&root);
}

fn md(root: &Path, rel: impl AsRef<Path>) -> fs::Metadata {
    fs::symlink_metadata(root.join(rel)).unwrap()
}

fn check_sizes(root: &Path) {
    assert_eq!(md(root, ZERO_FILE).len(), 0);
    for &(rel, len) in SIZED_FILES {
        assert_eq!(md(root, rel).len(), len, "{rel}");
    }
    assert_eq!(md(root, BIG_FILE).len(), BIG_SIZE);
    let big = fs::read(root.join(BIG_FILE)).unwrap();
    let tail = &big[(MIB / 2) as usize..MIB as usize];
    assert!(tail.starts_with(b"strata test data, repeated segment 0; "));
    assert_ne!(big[..4096], big[MIB as usize..MIB as usize + 4096]);
    let first = fs::read(root.join(DUP_FILES[0])).unwrap();
    assert_eq!(first.len() as u64, DUP_SIZE);
    for rel in &DUP_FILES[1..] {
        assert!(first == fs::read(root.join(rel)).unwrap(), "{rel}");
    }
    assert_ne!(
        first[..4096],
        fs::read(root.join(SIZED_FILES[6].0)).unwrap()[..4096]
    );
}

fn check_names_and_dirs(root: &Path) {
    for rel in [SPACE_NAME, NEWLINE_NAME, UNICODE_NAME, DEEP_FILE] {
        assert!(md(root, rel).is_file(), "{rel:?}");
    }
    assert!(md(root, non_utf8_name()).is_file());
    for rel in EMPTY_DIRS {
        assert!(md(root, rel).is_dir());
        assert_eq!(fs::read_dir(root.join(rel)).unwrap().count(), 0, "{rel}");
    }
}

fn check_symlinks(root: &Path) {
    for (rel, target) in [
        (SYMLINK_REL, SYMLINK_REL_TARGET),
        (SYMLINK_ABS, SYMLINK_ABS_TARGET),
        (SYMLINK_DANGLING, SYMLINK_DANGLING_TARGET),
        (SYMLINK_DIR, SYMLINK_DIR_TARGET),
    ] {
        assert!(md(root, rel).file_type().is_symlink(), "{rel}");
        assert_eq!(fs::read_link(root.join(rel)).unwrap(), Path::new(target));
    }
    assert!(fs::metadata(root.join(SYMLINK_REL)).unwrap().is_file());
    assert!(fs::metadata(root.join(SYMLINK_DANGLING)).is_err());
}

fn check_modes(root: &Path) {
    let mode = |rel: &str| md(root, rel).permissions().mode() & 0o7777;
    assert_eq!(mode(EXEC_FILE), 0o755);
    assert_eq!(mode(READONLY_FILE), 0o444);
    assert_eq!(mode(PRIVATE_FILE), 0o600);
    assert_eq!(mode(PRIVATE_DIR), 0o700);
    assert_eq!(mode(HELLO_FILE), 0o644);
}

fn check_times(root: &Path) {
    assert_eq!(mtime_of(&root.join(NANOS_FILE)), NANOS_MTIME);
    assert_eq!(mtime_of(&root.join(PRE1970_FILE)), PRE1970_MTIME);
    assert_eq!(mtime_of(&root.join(PRE1970_DIR)), PRE1970_DIR_MTIME);
    // Directory mtimes survive the creation of their children.
    let files = mtime_of(&root.join("files"));
    let links = mtime_of(&root.join("links"));
    let symlink = mtime_of(&root.join(SYMLINK_REL));
    assert_ne!(files, links);
    assert_ne!(links, symlink);
    assert!(files.0 < 1_700_000_000 && symlink.0 < 1_700_000_000);
}

#[test]
fn small_tree_is_deterministic_and_mutable() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    generate_small_tree(&a, 1, 100);
    generate_small_tree(&b, 1, 100);
    generate_small_tree(&c, 2, 100);
    assert_trees_equal(&a, &b);
    assert!(!compare_trees(&a, &c, CompareOpts::content_only()).is_empty());
    let files = list_files(&a);
    assert_eq!(files.len(), 100);
    assert_eq!(
        dir_size(&a),
        files
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum::<u64>()
    );
    let target = files
        .iter()
        .find(|f| fs::metadata(f).unwrap().len() > 100)
        .unwrap();
    let before = fs::read(target).unwrap();
    mutate_file(target, 9);
    let after = fs::read(target).unwrap();
    assert_eq!(before.len(), after.len());
    let changed = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    assert!((1..=3).contains(&changed), "{changed} bytes changed");
}

#[test]
fn flip_byte_works_on_read_only_files() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let f = tmp.path().join("ro");
    fs::write(&f, [1u8, 2, 3]).unwrap();
    set_mode(&f, 0o444);
    flip_byte(&f, 1);
    assert_eq!(fs::read(&f).unwrap(), [1u8, 0xfd, 3]);
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o444);
}

#[test]
fn test_repo_layout_and_command_env() {
    let repo = TestRepo::new();
    assert!(repo.path().join("cache").is_dir());
    assert!(!repo.repo_path().exists());
    let s = repo.scratch("x");
    fs::write(s.join("f"), b"x").unwrap();
    assert_eq!(fs::read_dir(repo.scratch("x")).unwrap().count(), 0);
    let args = os_args!["backup", s, non_utf8_name()];
    let cmd = repo.cmd(&args);
    let got: Vec<_> = cmd.get_args().collect();
    assert_eq!(got, args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let env: Vec<_> = cmd.get_envs().collect();
    let get = |k: &str| env.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("STRATA_PASSWORD").flatten().unwrap(), "correct horse");
    assert_eq!(
        get("STRATA_REPOSITORY").flatten().unwrap(),
        repo.repo_path()
    );
    assert_eq!(
        get("STRATA_CACHE_DIR").flatten().unwrap(),
        repo.cache_path()
    );
    assert_eq!(get("STRATA_PASSWORD_FILE"), Some(None));
}
