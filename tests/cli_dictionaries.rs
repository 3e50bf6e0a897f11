//! End-to-end tests of repository-trained zstd dictionaries (issue 13): round trips with
//! blobs under several dictionaries, repositories with and without them, a damaged
//! dictionary, and prune. `STRATA_DICTIONARY_TEST_BLOBS` makes backups train after a few
//! dozen small files instead of 4,096.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::e2e::*;
use common::*;
use serde_json::Value;

/// Small files per training (and per window a dictionary is judged on).
const TEST_BLOBS: &str = "48";

/// A file of "project" `kind`: a long template of its own (what a dictionary learns), then
/// a short part that differs from file to file.
fn page(kind: u64, i: u64) -> Vec<u8> {
    let mut t = Rng::new(1000 + kind);
    let mut out = Vec::new();
    for _ in 0..1600 {
        let c = t.below(28) as u8;
        out.push(match c {
            26 | 27 => b' ',
            c => b'a' + c,
        });
    }
    let mut r = Rng::new(kind * 1_000_003 + i);
    out.extend_from_slice(format!("\npage {i} of kind {kind}\n").as_bytes());
    for _ in 0..120 {
        out.push(b'a' + r.below(26) as u8);
    }
    out.push(b'\n');
    out
}

/// Writes `n` pages of `kind` numbered from `first` into `dir`.
fn write_pages(dir: &Path, kind: u64, first: u64, n: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in first..first + n {
        fs::write(dir.join(format!("page-{i:04}.txt")), page(kind, i)).unwrap();
    }
}

/// `strata ARGS`, training dictionaries after [`TEST_BLOBS`] small files.
fn run_training<I, S>(repo: &TestRepo, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = repo.cmd(args);
    cmd.env("STRATA_DICTIONARY_TEST_BLOBS", TEST_BLOBS);
    let out = cmd.output().expect("run strata");
    assert_eq!(code(&out), 0, "{}", common::repo::describe(&cmd, &out));
    out
}

fn backup(repo: &TestRepo, src: &Path) -> String {
    let out = run_training(
        repo,
        [OsStr::new("backup"), src.as_os_str(), OsStr::new("--json")],
    );
    field_str(&stdout_json(&out, "backup"), "snapshot_id").to_string()
}

/// The names in `dictionaries/`.
fn dictionaries(repo: &TestRepo) -> Vec<String> {
    let dir = repo.repo_path().join("dictionaries");
    let mut names: Vec<String> = match fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn restore_and_compare(repo: &TestRepo, snapshot: &str, src: &Path) {
    let target = repo.scratch("restore");
    repo.ok(restore_args(snapshot, &target, &[]));
    assert_trees_equal(src, &restored_path(&target, src));
}

fn stats(repo: &TestRepo, snapshot: &str) -> Value {
    repo.json(["stats", snapshot, "--recompress"])
}

/// `stored_size` of `src` backed up into a new repository without dictionaries.
fn plain_repository_stored_size(src: &Path) -> u64 {
    let plain = TestRepo::new();
    plain.ok(["init", "--no-dictionaries"]);
    let snap = backup(&plain, src);
    field_u64(&plain.json(["stats", &snap]), "stored_size")
}

#[test]
fn blobs_under_three_dictionaries_after_two_retrains_restore_exactly() {
    let (repo, src) = init_with_src();
    write_pages(&src.join("a"), 0, 0, 120);
    backup(&repo, &src);
    assert_eq!(dictionaries(&repo).len(), 1, "the first backup trains one");
    // New pages of another kind compress far worse with the first dictionary than it did
    // in training: the backup trains again, and again for a third kind.
    write_pages(&src.join("b"), 1, 0, 120);
    backup(&repo, &src);
    assert_eq!(dictionaries(&repo).len(), 2, "{:?}", dictionaries(&repo));
    write_pages(&src.join("c"), 2, 0, 120);
    let snap = backup(&repo, &src);
    assert_eq!(dictionaries(&repo).len(), 3, "{:?}", dictionaries(&repo));

    let s = stats(&repo, &snap);
    assert_eq!(field_u64(&s, "dictionaries"), 3, "{s:#}");
    assert!(field_u64(&s, "dictionary_blobs") >= 300, "{s:#}");
    let (with, without) = (
        field_u64(&s, "stored_size"),
        field_u64(&s, "stored_size_without_dictionaries"),
    );
    assert!(
        without > 2 * with,
        "dictionaries pay off: {with} vs {without}"
    );
    // Measured, not estimated: plain zstd of these pages, as a repository written without
    // dictionaries stores them.
    let plain = plain_repository_stored_size(&src);
    assert!(
        without.abs_diff(plain) * 100 <= plain,
        "recompressed {without} vs stored without dictionaries {plain}"
    );
    let unmeasured = repo.json(["stats", &snap]);
    assert!(
        unmeasured["stored_size_without_dictionaries"].is_null(),
        "{unmeasured:#}"
    );

    restore_and_compare(&repo, &snap, &src);
    let out = repo.ok(["check", "--read-data"]);
    assert!(stdout(&out).contains("3 dictionaries"), "{}", stdout(&out));
    let single = src.join("b").join("page-0007.txt");
    let cat = repo.ok([OsStr::new("cat"), OsStr::new(&snap), single.as_os_str()]);
    assert_eq!(cat.stdout, page(1, 7));

    // copy reads them too, into a repository with its own password and dictionaries.
    let mut dst = TestRepo::new();
    dst.password = "another password".into();
    init_fast(&dst);
    let mut cmd = dst.cmd([
        OsStr::new("copy"),
        OsStr::new("--from-repo"),
        repo.repo_path().as_os_str(),
    ]);
    cmd.env("STRATA_FROM_PASSWORD", &repo.password);
    let out = cmd.output().expect("run strata copy");
    assert_eq!(code(&out), 0, "{}", common::repo::describe(&cmd, &out));
    restore_and_compare(&dst, "latest", &src);
}

#[test]
fn repositories_with_and_without_dictionaries_both_restore() {
    let plain = TestRepo::new();
    plain.ok(FAST_INIT.iter().copied().chain(["--no-dictionaries"]));
    let trained = fast_repo();
    let src = trained.scratch("src");
    write_pages(&src.join("docs"), 3, 0, 150);
    fs::write(src.join("large.bin"), vec![7u8; 300_000]).unwrap();

    let snap_plain = backup(&plain, &src);
    let snap_trained = backup(&trained, &src);
    assert!(
        dictionaries(&plain).is_empty(),
        "--no-dictionaries trains none"
    );
    assert_eq!(dictionaries(&trained).len(), 1);
    restore_and_compare(&plain, &snap_plain, &src);
    restore_and_compare(&trained, &snap_trained, &src);

    let (p, t) = (stats(&plain, &snap_plain), stats(&trained, &snap_trained));
    assert_eq!(field_u64(&p, "dictionary_blobs"), 0, "{p:#}");
    assert!(
        field_u64(&t, "stored_size") * 2 < field_u64(&p, "stored_size"),
        "with dictionaries {t:#}\nwithout {p:#}"
    );
    plain.ok(["check", "--read-data"]);
    trained.ok(["check", "--read-data"]);
}

/// A repository with small files (all compressed with one dictionary) and a large file
/// (never): the dictionary's path and the backup's snapshot.
fn repository_with_a_dictionary() -> (TestRepo, PathBuf, PathBuf, String) {
    let (repo, src) = init_with_src();
    write_pages(&src.join("small"), 4, 0, 80);
    let large: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("large.bin"), large).unwrap();
    let snap = backup(&repo, &src);
    let names = dictionaries(&repo);
    assert_eq!(names.len(), 1);
    let path = repo.repo_path().join("dictionaries").join(&names[0]);
    (repo, src, path, snap)
}

#[test]
fn a_damaged_dictionary_is_named_with_its_blobs_and_restore_of_other_files_continues() {
    let (repo, src, dict, snap) = repository_with_a_dictionary();
    let name = dict.file_name().unwrap().to_str().unwrap().to_string();
    let len = fs::metadata(&dict).unwrap().len();
    flip_byte(&dict, len / 2);

    let (_, report) = json_expect(&repo, ["check", "--read-data"], 1);
    let errors = field_array(&report, "errors");
    let problem = errors
        .iter()
        .find(|p| field_str(p, "kind") == "dictionary")
        .unwrap_or_else(|| panic!("no dictionary problem: {report:#}"));
    assert_eq!(field_str(problem, "object"), name);
    let message = field_str(problem, "message");
    assert!(message.contains("is damaged"), "{message}");
    assert!(
        message.contains("80 blob(s) compressed with it cannot be read"),
        "{message}"
    );
    let named = message
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| is_hex_id(w));
    assert!(named.count() >= 10, "the first blobs are named: {message}");
    assert!(
        errors.iter().all(|p| field_str(p, "kind") == "dictionary"),
        "its blobs are reported with it, not one by one: {report:#}"
    );

    let target = repo.scratch("restore");
    let out = run_expect(&repo, restore_args(&snap, &target, &[]), 3);
    let restored = restored_path(&target, &src);
    assert_eq!(
        fs::read(restored.join("large.bin")).unwrap(),
        fs::read(src.join("large.bin")).unwrap(),
        "files that need no dictionary are restored"
    );
    let err = stderr(&out);
    assert!(err.contains("page-0000.txt"), "{err}");
    assert!(err.contains(&name[..8]), "the dictionary is named: {err}");
    assert!(!restored.join("small").join("page-0000.txt").exists());
}

#[test]
fn a_missing_dictionary_is_found_without_reading_data() {
    let (repo, _src, dict, _) = repository_with_a_dictionary();
    fs::remove_file(&dict).unwrap();
    let (_, report) = json_expect(&repo, ["check"], 1);
    let errors = field_array(&report, "errors");
    assert_eq!(errors.len(), 1, "{report:#}");
    assert!(
        field_str(&errors[0], "message").contains("is missing"),
        "{report:#}"
    );
}

#[test]
fn prune_keeps_dictionaries_in_use_and_removes_one_no_blob_needs() {
    let (repo, src) = init_with_src();
    let a = src.join("a");
    let b = src.join("b");
    let c = src.join("c");
    write_pages(&a, 5, 0, 80);
    let snap_a = backup(&repo, &a);
    let first = dictionaries(&repo);
    assert_eq!(first.len(), 1);
    // Another kind: its first window is compressed with the first dictionary, then a
    // second one is trained; a third backup of that kind uses only the second.
    write_pages(&b, 6, 0, 120);
    let snap_b = backup(&repo, &b);
    let both = dictionaries(&repo);
    assert_eq!(both.len(), 2);
    write_pages(&c, 6, 1000, 80);
    let snap_c = backup(&repo, &c);
    assert_eq!(
        dictionaries(&repo),
        both,
        "the newest dictionary fits: no training"
    );

    repo.ok(["forget", &snap_a, &snap_b]);
    let dry = repo.json(["prune", "--dry-run"]);
    assert_eq!(dictionaries(&repo), both, "a dry run removes nothing");
    let report = repo.json(["prune"]);
    assert_eq!(
        field_u64(&report, "dictionaries_deleted"),
        1,
        "{report:#} (dry run: {dry:#})"
    );
    let second: Vec<String> = both
        .iter()
        .filter(|n| !first.contains(n))
        .cloned()
        .collect();
    assert_eq!(dictionaries(&repo), second, "the first dictionary is gone");
    restore_and_compare(&repo, &snap_c, &c);
    repo.ok(["check", "--read-data"]);
}

#[test]
fn repair_names_the_blobs_and_files_a_damaged_dictionary_makes_unreadable() {
    let (repo, src, dict, _) = repository_with_a_dictionary();
    let name = dict.file_name().unwrap().to_str().unwrap().to_string();
    let len = fs::metadata(&dict).unwrap().len();
    flip_byte(&dict, len / 2);

    // The snapshot loses exactly the small files, each named with the dictionary.
    let (_, report) = json_expect(&repo, ["repair", "snapshots", "--read-data"], 3);
    let salvaged = field_array(&report, "salvaged");
    assert_eq!(salvaged.len(), 1, "{report:#}");
    let lost = field_array(&salvaged[0], "lost");
    assert_eq!(lost.len(), 80, "{report:#}");
    for entry in lost {
        let (path, why) = (entry[0].as_str().unwrap(), entry[1].as_str().unwrap());
        assert!(path.contains("page-"), "{path}");
        assert!(why.contains(&name[..8]), "the dictionary is named: {why}");
    }
    let repaired = field_str(&salvaged[0], "repaired").to_string();
    let target = repo.scratch("repaired");
    repo.ok(restore_args(&repaired, &target, &[]));
    let restored = restored_path(&target, &src);
    assert_eq!(
        fs::read(restored.join("large.bin")).unwrap(),
        fs::read(src.join("large.bin")).unwrap()
    );
    assert!(!restored.join("small").join("page-0000.txt").exists());

    // The index repair names the 80 blobs and leaves them out.
    let (_, report) = json_expect(&repo, ["repair", "index", "--read-data"], 3);
    let damaged = field_array(&report, "damaged_blobs");
    assert_eq!(damaged.len(), 80, "{report:#}");
    assert!(
        damaged
            .iter()
            .all(|d| is_hex_id(d[0].as_str().unwrap())
                && d[1].as_str().unwrap().contains(&name[..8])),
        "{report:#}"
    );
}
