//! Helpers shared by the end-to-end CLI tests (`cli_backup_restore`,
//! `cli_damage`, `cli_crafted`): fast `init` and backed-up source trees,
//! exit codes, `restore` command lines, JSON fields, repository listings,
//! paths of backed-up sources inside a restore target, and walking a
//! snapshot's trees through `strata cat tree`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::compare::assert_trees_equal;
use super::fsutil::list_files;
use super::repo::{TestRepo, stderr, stdout, stdout_json, strata_bin};
use super::tree::{generate_small_tree, generate_tree};

/// `init` with a cheap KDF so that opening the repository is fast.
pub const FAST_INIT: [&str; 5] = ["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"];

/// `strata init` with a cheap KDF.
pub fn init_fast(repo: &TestRepo) {
    repo.ok(FAST_INIT);
}

/// A fresh repository, initialised with `init_fast`.
pub fn fast_repo() -> TestRepo {
    let repo = TestRepo::new();
    init_fast(&repo);
    repo
}

/// A `fast_repo` and an empty `scratch/src` for the tree to back up.
pub fn init_with_src() -> (TestRepo, PathBuf) {
    let repo = fast_repo();
    let src = repo.scratch("src");
    (repo, src)
}

/// `init_with_src` filled by `generate_tree(src, seed)` and backed up with
/// `backup src --json`: the repository, the source and the backup report.
pub fn backed_up_tree(seed: u64) -> (TestRepo, PathBuf, Value) {
    let (repo, src) = init_with_src();
    generate_tree(&src, seed);
    let report = repo.json([OsStr::new("backup"), src.as_os_str()]);
    (repo, src, report)
}

/// `init_with_src` filled by `generate_small_tree(src, seed, files)` and
/// backed up once.
pub fn backed_up_small_tree(seed: u64, files: usize) -> (TestRepo, PathBuf) {
    let (repo, src) = init_with_src();
    generate_small_tree(&src, seed, files);
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    (repo, src)
}

/// The exit code; panics (showing the output) if the process died of a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| {
        panic!(
            "strata was killed by a signal: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Run `args` and return the output after asserting the exit code.
pub fn run_expect<I, S>(repo: &TestRepo, args: I, want: i32) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    repo.run_checked(args, &format!("expected exit code {want}"), |status| {
        status.code() == Some(want)
    })
}

/// Run `args + ["--json"]` expecting exit code `want`; parse stdout as JSON.
pub fn json_expect<I, S>(repo: &TestRepo, args: I, want: i32) -> (Output, Value)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    all.push("--json".into());
    let out = run_expect(repo, &all, want);
    let value = stdout_json(&out, &all);
    (out, value)
}

/// `restore <snapshot> --target <target>` followed by `extra`.
pub fn restore_args(snapshot: &str, target: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["restore".into(), snapshot.into(), "--target".into()];
    args.push(target.into());
    args.extend(extra.iter().map(OsString::from));
    args
}

/// `v[field]` as a string; panics (showing `v`) otherwise.
pub fn field_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v:#}"))
}

/// `v[field]` as an unsigned number; panics (showing `v`) otherwise.
pub fn field_u64(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned number in {v:#}"))
}

/// `v[field]` as a number; panics (showing `v`) otherwise.
pub fn field_f64(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v:#}"))
}

/// `v[field]` as an array; panics (showing `v`) otherwise.
pub fn field_array<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array in {v:#}"))
}

/// A full object id: 64 hex digits.
pub fn is_hex_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Asserts that the directory `dir` exists and holds nothing.
pub fn assert_empty_dir(dir: &Path) {
    let entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"))
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "{dir:?} must stay empty, holds {entries:?}"
    );
}

/// Where the backed-up absolute path `src` lands when a whole snapshot is
/// restored into `target`: `target/<src without its leading />`.
pub fn restored_path(target: &Path, src: &Path) -> PathBuf {
    assert!(src.is_absolute(), "{src:?} is not absolute");
    target.join(src.strip_prefix("/").expect("absolute path"))
}

/// Restores `snapshot` of `repo` into a scratch folder `name` and asserts that it is `src`
/// exactly (content and metadata).
pub fn restores_exactly(repo: &TestRepo, snapshot: &str, src: &Path, name: &str) {
    restores_exactly_with(repo, snapshot, src, name, &[]);
}

/// [`restores_exactly`] with `extra` arguments for `restore`.
pub fn restores_exactly_with(
    repo: &TestRepo,
    snapshot: &str,
    src: &Path,
    name: &str,
    extra: &[&str],
) {
    let target = repo.scratch(name);
    repo.ok(restore_args(snapshot, &target, extra));
    super::assert_trees_equal(src, &restored_path(&target, src));
}

/// Every file below `dir` (symlinks not followed) with its full content,
/// keyed by relative path: a byte-exact picture of a (small) repository.
pub fn dir_contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    list_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"));
            (p.strip_prefix(dir).expect("below dir").to_path_buf(), bytes)
        })
        .collect()
}

/// Every entry below `dir` (directories included, symlinks not followed)
/// with its type and size, keyed by relative path.
pub fn dir_listing(dir: &Path) -> BTreeMap<PathBuf, (String, u64)> {
    dir_entries(dir)
        .into_iter()
        .map(|(rel, md)| (rel, (kind_name(&md).to_string(), md.len())))
        .collect()
}

/// Every entry below `dir` (directories included, symlinks not followed)
/// with its lstat metadata, keyed by relative path; empty if `dir` is absent.
pub fn dir_entries(dir: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    if fs::symlink_metadata(dir).is_ok() {
        entries_into(dir, Path::new(""), &mut out);
    }
    out
}

fn entries_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, fs::Metadata>) {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"));
        let child = rel.join(entry.file_name());
        let md = fs::symlink_metadata(entry.path()).expect("lstat");
        if md.is_dir() {
            entries_into(root, &child, out);
        }
        out.insert(child, md);
    }
}

/// "symlink", "dir" or "file" (anything else) for lstat metadata.
pub fn kind_name(md: &fs::Metadata) -> &'static str {
    if md.file_type().is_symlink() {
        "symlink"
    } else if md.is_dir() {
        "dir"
    } else {
        "file"
    }
}

/// Non-directory entries below `dir` as paths relative to `dir`, sorted.
pub fn rel_files(dir: &Path) -> Vec<PathBuf> {
    list_files(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("below dir").to_path_buf())
        .collect()
}

/// Regular files (not symlinks) below `dir`, relative, with their sizes.
pub fn regular_files(dir: &Path) -> BTreeMap<PathBuf, u64> {
    list_files(dir)
        .into_iter()
        .filter_map(|p| {
            let md = fs::symlink_metadata(&p).expect("lstat");
            md.is_file().then(|| {
                (
                    p.strip_prefix(dir).expect("below dir").to_path_buf(),
                    md.len(),
                )
            })
        })
        .collect()
}

/// The pack files under `repo/data/`, largest first.
pub fn packs_by_size(repo_dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut packs: Vec<(PathBuf, u64)> = list_files(&repo_dir.join("data"))
        .into_iter()
        .map(|p| {
            let len = fs::symlink_metadata(&p).expect("lstat").size();
            (p, len)
        })
        .collect();
    packs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    packs
}

/// A name from tree JSON: a string when UTF-8, else an array of bytes.
pub fn json_name(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Array(bytes) => bytes
            .iter()
            .map(|b| b.as_u64().expect("byte") as u8)
            .collect(),
        other => panic!("unexpected name in tree JSON: {other}"),
    }
}

/// A regular file found in a snapshot: its absolute snapshot path and the
/// ids of its chunks.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub blobs: Vec<String>,
}

/// Every regular file of snapshot `snapshot` (a full id), found by walking
/// its trees with `strata cat snapshot` / `strata cat tree`.
pub fn snapshot_files(repo: &TestRepo, snapshot: &str) -> Vec<SnapshotFile> {
    let snap = json_stdout(repo, &["cat", "snapshot", snapshot]);
    let root = snap["tree"].as_str().expect("snapshot.tree").to_string();
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/"), root)];
    while let Some((dir, tree)) = stack.pop() {
        let t = json_stdout(repo, &["cat", "tree", &tree]);
        for node in t["nodes"].as_array().expect("tree.nodes") {
            let name = json_name(&node["name"]);
            let path = dir.join(OsStr::from_bytes(&name));
            let kind = &node["kind"];
            if let Some(sub) = kind.get("dir") {
                let id = sub["subtree"].as_str().expect("subtree id").to_string();
                stack.push((path, id));
            } else if let Some(file) = kind.get("file") {
                let blobs = file["content"]
                    .as_array()
                    .expect("file.content")
                    .iter()
                    .map(|c| c["id"].as_str().expect("chunk id").to_string())
                    .collect();
                out.push(SnapshotFile { path, blobs });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Run `args` (no `--json` added), expect success, parse stdout as JSON.
fn json_stdout(repo: &TestRepo, args: &[&str]) -> Value {
    stdout_json(&repo.ok(args), args)
}

/// `p` as raw bytes.
pub fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// A path from raw bytes.
pub fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(b.to_vec()))
}

/// Runs a printed shell command line with `strata` on the PATH and the test's repository
/// environment, expecting success.
pub fn run_printed(repo: &TestRepo, command_line: &str) -> String {
    assert!(command_line.starts_with("strata "), "{command_line}");
    let bin_dir = strata_bin().parent().unwrap();
    let mut path = OsString::from(bin_dir);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let out = Command::new("sh")
        .arg("-c")
        .arg(command_line)
        .env("PATH", path)
        .env("STRATA_PASSWORD", &repo.password)
        .env("STRATA_CACHE_DIR", repo.cache_path())
        .env_remove("STRATA_REPOSITORY")
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{command_line}\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The only line of stderr, asserted to be the only one.
pub fn one_line(out: &Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    lines[0].to_string()
}

/// The ids of the repository's snapshots, as `snapshots --json` lists them.
pub fn snapshot_ids(repo: &TestRepo) -> Vec<String> {
    let listed = repo.json(["snapshots"]);
    (listed.as_array().expect("an array").iter())
        .map(|s| field_str(s, "id").to_string())
        .collect()
}

/// Runs [`FAST_INIT`] of four test repositories that `at` gives for one location, each
/// with its own password, at once and asserts that exactly one wins: the others fail in one
/// line saying "already", and the repository has one key, which only the winner's password
/// opens. Returns the winner.
pub fn assert_one_of_racing_inits_wins(at: impl Fn() -> TestRepo) -> TestRepo {
    let mut racers: Vec<TestRepo> = (0..4)
        .map(|i| {
            let mut repo = at();
            repo.password = format!("password {i}");
            repo
        })
        .collect();
    let barrier = std::sync::Barrier::new(racers.len());
    let outcomes: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (racers.iter())
            .map(|r| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    r.run(FAST_INIT)
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|i| outcomes[*i].status.success())
        .collect();
    assert_eq!(winners.len(), 1, "{:?}", outcomes);
    for (i, out) in outcomes.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(code(out), 1);
            assert!(one_line(out).contains("already"), "{}", stderr(out));
        }
    }
    // Only the winner's password opens it, and the losers took their key files back.
    let keys = racers[winners[0]].json(["key", "list"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let loser = (winners[0] + 1) % racers.len();
    assert_eq!(code(&racers[loser].fail(["snapshots"])), 1);
    racers.swap_remove(winners[0])
}

/// Asserts that `out` is a failure with exit code 1 and one line of stderr holding each of
/// `needles`; returns that line.
pub fn fails_in_one_line(out: &Output, needles: &[&str]) -> String {
    assert_eq!(code(out), 1, "{}", stderr(out));
    let line = one_line(out);
    for needle in needles {
        assert!(line.contains(needle), "no {needle:?} in: {line}");
    }
    line
}
