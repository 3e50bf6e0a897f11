//! End-to-end tests of the pack layout: `check` finds packs whose size differs from what the
//! index implies (finding 11), and version 3 packs show a storage observer only whole blocks
//! (finding 3).

mod common;

use std::fs;
use std::path::Path;

use common::e2e::*;
use common::*;

/// The repository's format version, from `strata cat config`.
fn version(repo: &TestRepo) -> u64 {
    field_u64(&repo.json(["cat", "config"]), "version")
}

/// `check` (without `--read-data`) fails and names `pack`.
fn assert_check_names(repo: &TestRepo, pack: &Path, what: &str) {
    let out = repo.run(["check"]);
    let name = pack.file_name().unwrap().to_str().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_ne!(code(&out), 0, "{what}: check passed:\n{text}");
    assert!(text.contains(name), "{what}: {name} not named:\n{text}");
}

#[test]
fn check_finds_a_truncated_pack() {
    let (repo, _src) = backed_up_small_tree(11, 40);
    repo.ok(["check"]);
    let (pack, _) = packs_by_size(&repo.repo_path()).remove(0);
    let original = fs::read(&pack).unwrap();
    let n = original.len();

    fs::write(&pack, &original[..n - 3]).unwrap();
    assert_check_names(&repo, &pack, "3 bytes cut at the end");

    let middle = [&original[..n / 2], &original[n / 2 + 3..]].concat();
    fs::write(&pack, &middle).unwrap();
    assert_check_names(&repo, &pack, "3 bytes cut in the middle");

    fs::write(&pack, &original).unwrap();
    repo.ok(["check"]);
}

#[test]
fn check_finds_a_pack_cut_to_its_blobs() {
    let (repo, _src) = backed_up_small_tree(12, 40);
    let (pack, size) = packs_by_size(&repo.repo_path()).remove(0);
    let original = fs::read(&pack).unwrap();
    fs::write(&pack, &original[..size as usize / 2]).unwrap();
    assert_check_names(&repo, &pack, "cut in half");
}

#[test]
fn version_3_packs_are_whole_blocks() {
    let (repo, src) = backed_up_small_tree(13, 60);
    if version(&repo) < 3 {
        eprintln!("repository is not version 3: pack layout 3 not exercised");
        return;
    }
    let packs = packs_by_size(&repo.repo_path());
    assert!(packs.len() >= 2, "{packs:?}");
    for (path, size) in &packs {
        assert_eq!(size % 4096, 0, "{}: {size} bytes", path.display());
    }
    let target = repo.scratch("restored");
    repo.ok(restore_args("latest", &target, &[]));
    assert_eq!(
        dir_contents(&restored_path(&target, &src)),
        dir_contents(&src)
    );
    repo.ok(["check", "--read-data"]);
}
