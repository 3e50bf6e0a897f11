//! The old-format fixture repositories under `tests/fixtures/` (see its README): copies to
//! work on, and what each snapshot must restore to, from the manifests.

use std::fs;
use std::path::{Path, PathBuf};

use super::e2e::{field_array, field_str, restore_args};
use super::repo::TestRepo;

pub const FIXTURE_PASSWORD: &str = "fixture";
/// The directory the fixtures' snapshots were taken of.
pub const FIXTURE_SOURCE: &str = "/tmp/strata-fixture/src";

fn fixture_dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{version}"))
}

/// A `TestRepo` whose repository is a copy of fixture `version` (reading with a cache and
/// migrating write to it).
pub fn fixture_repo(version: u32) -> TestRepo {
    let mut repo = TestRepo::new();
    repo.password = FIXTURE_PASSWORD.into();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture_dir(version).join("repo"))
        .arg(repo.repo_path())
        .status()
        .unwrap();
    assert!(status.success(), "copying fixture v{version}");
    repo
}

/// Manifest `n` (1: the snapshot tagged `first`, 2: `second`), one entry a line, sorted.
pub fn manifest(version: u32, n: u32) -> Vec<String> {
    let text = fs::read_to_string(fixture_dir(version).join(format!("manifest-{n}.txt"))).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The manifest lines of the tree below `root`, sorted.
pub fn manifest_of(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    describe_dir(root, Path::new(""), &mut lines);
    lines.sort();
    lines
}

fn describe_dir(root: &Path, rel: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let kind = entry.file_type().unwrap();
        let name = rel.to_string_lossy();
        if kind.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            out.push(format!("l {name} {}", target.to_string_lossy()));
        } else if kind.is_dir() {
            out.push(format!("d {name}"));
            describe_dir(root, &rel, out);
        } else {
            let hash = blake3::hash(&fs::read(&path).unwrap());
            out.push(format!("f {name} {}", hash.to_hex()));
        }
    }
}

/// The id of the snapshot tagged `tag`.
pub fn snapshot_tagged(repo: &TestRepo, tag: &str) -> String {
    let listed = repo.json(["snapshots"]);
    let all = listed.as_array().expect("snapshots --json is an array");
    let found = all.iter().find(|s| {
        field_array(s, "tags")
            .iter()
            .any(|t| t.as_str() == Some(tag))
    });
    field_str(found.expect("a snapshot with the tag"), "id").to_string()
}

/// Restores both snapshots of a fixture copy and compares each with its manifest.
pub fn assert_fixture_snapshots_restore(repo: &TestRepo, version: u32) {
    for (n, tag) in [(1, "first"), (2, "second")] {
        let id = snapshot_tagged(repo, tag);
        let target = repo.scratch(&format!("restore-{tag}"));
        repo.ok(restore_args(&id, &target, &[]));
        let restored = target.join(FIXTURE_SOURCE.trim_start_matches('/'));
        assert_eq!(
            manifest_of(&restored),
            manifest(version, n),
            "fixture v{version}, snapshot {tag}"
        );
    }
}
