//! End-to-end tests of `strata copy`: snapshots copied between repositories with different
//! passwords restore bit-exact, a second copy writes nothing, shared data is stored once,
//! a wrong source password leaves the destination untouched, a snapshot whose data is lost
//! in the source fails alone, and old-format repositories are copied from but not into.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use common::digest::write_random_file;
use common::e2e::*;
use common::*;

const MIB: usize = 1 << 20;

/// A repository initialised like `fast_repo`, with its own password.
fn repo_with_password(password: &str) -> TestRepo {
    let mut repo = TestRepo::new();
    repo.password = password.to_string();
    init_fast(&repo);
    repo
}

/// `copy --from-repo <from> args…`.
fn copy_args(from: &TestRepo, args: &[&str]) -> Vec<OsString> {
    let mut all: Vec<OsString> = vec!["copy".into(), "--from-repo".into()];
    all.push(from.repo_path().into());
    all.extend(args.iter().map(OsString::from));
    all
}

/// `strata copy --from-repo <from> args…` run on `to`, with `from`'s password in
/// `$STRATA_FROM_PASSWORD`.
fn copy(from: &TestRepo, to: &TestRepo, args: &[&str]) -> Output {
    let mut cmd = to.cmd(copy_args(from, args));
    cmd.env("STRATA_FROM_PASSWORD", &from.password);
    cmd.output().expect("run strata copy")
}

/// `copy(from, to, args + --json)`, expecting exit code `want`; its JSON report.
fn copy_json(from: &TestRepo, to: &TestRepo, args: &[&str], want: i32) -> Value {
    let all: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let out = copy(from, to, &all);
    assert_eq!(code(&out), want, "{}\n{}", stdout(&out), stderr(&out));
    stdout_json(&out, "copy --json")
}

/// `backup src [extra…] --json` in `repo`: the new snapshot's id.
fn backup(repo: &TestRepo, src: &Path, extra: &[&str]) -> String {
    let mut args = os_args!["backup", src];
    args.extend(extra.iter().map(OsString::from));
    field_str(&repo.json(&args), "snapshot_id").to_string()
}

/// A source repository with three snapshots of one directory, oldest first: small files, a
/// 3 MiB file, a symlink and an empty directory; then a 2 MiB file more and one small file
/// changed; then (tagged `third`) a copy of the 3 MiB file and a small file removed.
fn source_with_history() -> (TestRepo, PathBuf, Vec<String>) {
    let (repo, src) = init_with_src();
    fs::create_dir_all(src.join("small/deeper")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    for (i, name) in ["a.txt", "b.txt", "deeper/c.txt"].iter().enumerate() {
        fs::write(
            src.join("small").join(name),
            format!("file {i}\n").repeat(i * 50),
        )
        .unwrap();
    }
    write_random_file(&src.join("big.bin"), 3 * MIB, 1);
    symlink("small/a.txt", src.join("link")).unwrap();
    let first = backup(&repo, &src, &[]);
    write_random_file(&src.join("extra.bin"), 2 * MIB, 2);
    fs::write(src.join("small/b.txt"), "changed\n").unwrap();
    let second = backup(&repo, &src, &[]);
    fs::copy(src.join("big.bin"), src.join("big-copy.bin")).unwrap();
    fs::remove_file(src.join("small/a.txt")).unwrap();
    let third = backup(&repo, &src, &["--tag", "third"]);
    (repo, src, vec![first, second, third])
}

/// The snapshots of `repo` (`snapshots --json`) by id.
fn snapshots(repo: &TestRepo) -> BTreeMap<String, Value> {
    let list = repo.json(["snapshots"]);
    let list = list.as_array().expect("snapshots --json is an array");
    list.iter()
        .map(|s| (field_str(s, "id").to_string(), s.clone()))
        .collect()
}

/// Each entry of a copy report's `snapshots`, as (source, status, destination).
fn statuses(report: &Value) -> Vec<(String, String, Option<String>)> {
    field_array(report, "snapshots")
        .iter()
        .map(|s| {
            let dst = s["destination"].as_str().map(str::to_string);
            (
                field_str(s, "source").into(),
                field_str(s, "status").into(),
                dst,
            )
        })
        .collect()
}

/// Every file below the repository (locks included) with its content.
fn repo_files(repo: &TestRepo) -> BTreeMap<PathBuf, Vec<u8>> {
    dir_contents(&repo.repo_path())
}

#[test]
fn copied_snapshots_restore_bit_exact_between_repositories_with_different_passwords() {
    let (a, src, ids) = source_with_history();
    let b = repo_with_password("another password entirely");
    let report = copy_json(&a, &b, &[], 0);
    assert_eq!(field_u64(&report, "snapshots_copied"), 3, "{report:#}");
    assert_eq!(field_u64(&report, "snapshots_skipped"), 0);
    assert!(field_u64(&report, "blobs_added") > 0);

    let copied = snapshots(&b);
    let originals = snapshots(&a);
    assert_eq!(copied.len(), 3);
    let sources: Vec<String> = statuses(&report).into_iter().map(|s| s.0).collect();
    assert_eq!(sources, ids, "oldest first");
    let mut copy_of: BTreeMap<String, String> = BTreeMap::new();
    for (source, status, dst) in statuses(&report) {
        assert_eq!(status, "copied");
        let dst = dst.expect("a copied snapshot names its copy");
        let (orig, copy) = (&originals[&source], &copied[&dst]);
        for (field, value) in orig.as_object().unwrap() {
            if !["id", "short_id", "tree", "parent"].contains(&field.as_str()) {
                assert_eq!(&copy[field], value, "{field} of {source}");
            }
        }
        assert_eq!(field_str(copy, "original"), source);
        assert_ne!(
            copy["tree"], orig["tree"],
            "blob ids are keyed per repository"
        );
        let parent = orig["parent"].as_str().map(|p| copy_of[p].clone());
        assert_eq!(
            copy["parent"].as_str(),
            parent.as_deref(),
            "the parent link follows"
        );
        copy_of.insert(source.clone(), dst.clone());

        let from_a = a.scratch(&format!("a-{source}"));
        a.ok(restore_args(&source, &from_a, &[]));
        let from_b = b.scratch(&format!("b-{source}"));
        b.ok(restore_args(&dst, &from_b, &[]));
        assert_trees_equal(&from_a, &from_b);
    }
    let latest = b.scratch("latest");
    b.ok(restore_args("latest", &latest, &[]));
    assert_trees_equal(&src, &restored_path(&latest, &src));

    let check = b.json(["check", "--read-data"]);
    assert!(field_array(&check, "errors").is_empty(), "{check:#}");
    assert!(field_array(&check, "unused_packs").is_empty(), "{check:#}");
    assert_eq!(field_u64(&check, "unused_blobs"), 0, "{check:#}");
}

#[test]
fn a_second_copy_copies_nothing_and_leaves_the_packs_alone() {
    let (a, _src, ids) = source_with_history();
    let b = repo_with_password("other");
    copy_json(&a, &b, &[], 0);
    let packs = dir_contents(&b.repo_path().join("data"));
    let index = dir_contents(&b.repo_path().join("index"));

    let again = copy_json(&a, &b, &[], 0);
    assert_eq!(field_u64(&again, "snapshots_copied"), 0, "{again:#}");
    assert_eq!(field_u64(&again, "snapshots_skipped"), 3);
    assert_eq!(field_u64(&again, "blobs_added"), 0);
    assert_eq!(field_u64(&again, "bytes_added"), 0);
    let skipped: Vec<String> = statuses(&again)
        .into_iter()
        .map(|(source, status, _)| {
            assert_eq!(status, "skipped");
            source
        })
        .collect();
    assert_eq!(skipped, ids);
    assert!(
        dir_contents(&b.repo_path().join("data")) == packs,
        "packs changed"
    );
    assert!(dir_contents(&b.repo_path().join("index")) == index);
    assert_eq!(snapshots(&b).len(), 3);

    let text = stdout(&copy(&a, &b, &[]));
    assert!(text.contains("skipped, already copied as"), "{text}");
    assert!(text.contains("0 snapshots copied, 3 skipped"), "{text}");
}

#[test]
fn copying_the_rest_after_one_snapshot_stores_shared_data_once() {
    let (a, _src, ids) = source_with_history();
    let b = repo_with_password("other");
    // The source password from a file this time, not the environment.
    let password_file = b.path().join("scratch/from-password");
    fs::write(&password_file, format!("{}\n", a.password)).unwrap();
    let by_file = |args: &[&str]| {
        let file = password_file.to_str().unwrap();
        let all: Vec<&str> = ["--from-password-file", file, "--json"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        stdout_json(&b.ok(copy_args(&a, &all)), "copy --from-password-file")
    };

    let third = &ids[2][..10];
    let one = by_file(&[third]);
    assert_eq!(field_u64(&one, "snapshots_copied"), 1, "{one:#}");
    assert_eq!(statuses(&one)[0].0, ids[2]);
    let tagged: Vec<Value> = snapshots(&b).into_values().collect();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["tags"], serde_json::json!(["third"]));
    let size_one = dir_size(&b.repo_path());
    assert!(
        size_one > 5 * MIB as u64,
        "the big files are stored: {size_one}"
    );

    let rest = by_file(&[]);
    assert_eq!(field_u64(&rest, "snapshots_copied"), 2, "{rest:#}");
    assert_eq!(field_u64(&rest, "snapshots_skipped"), 1);
    let first_copy = statuses(&one).remove(0);
    let skipped = (ids[2].clone(), "skipped".to_string(), first_copy.2);
    assert_eq!(statuses(&rest)[2], skipped);
    // Of the first two snapshots' data only a.txt and the old b.txt are not in the third:
    // without deduplication their 3 MiB and 3 + 2 MiB files would be stored again.
    let grown = dir_size(&b.repo_path()) - size_one;
    assert!(grown < 256 * 1024, "grew by {grown} bytes");
    assert!(field_u64(&rest, "bytes_added") < 256 * 1024, "{rest:#}");
    assert_eq!(snapshots(&b).len(), 3);
}

#[test]
fn a_wrong_source_password_fails_naming_the_source_and_writes_nothing() {
    let (mut a, _src, _ids) = source_with_history();
    let b = repo_with_password("other");
    let before = repo_files(&b);
    a.password = "not the password".into();
    let out = copy(&a, &b, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    let source = a.repo_path().display().to_string();
    assert!(
        err.contains(&format!("source repository {source}")),
        "{err}"
    );
    assert!(err.contains("wrong password"), "{err}");
    assert!(repo_files(&b) == before, "the destination changed");
    assert!(snapshots(&b).is_empty());
}

#[test]
fn a_snapshot_whose_data_is_lost_in_the_source_fails_alone_with_exit_code_3() {
    let (a, src) = init_with_src();
    let (kept, lost) = (src.join("kept"), src.join("lost"));
    fs::create_dir(&kept).unwrap();
    fs::create_dir(&lost).unwrap();
    write_random_file(&kept.join("k.bin"), MIB, 3);
    write_random_file(&lost.join("l.bin"), MIB, 4);
    let first = backup(&a, &kept, &[]);
    let packs_before = list_files(&a.repo_path().join("data"));
    let second = backup(&a, &lost, &[]);
    for pack in list_files(&a.repo_path().join("data")) {
        if !packs_before.contains(&pack) {
            fs::remove_file(pack).unwrap();
        }
    }
    let b = repo_with_password("other");
    let report = copy_json(&a, &b, &[], 3);
    assert_eq!(field_u64(&report, "snapshots_copied"), 1, "{report:#}");
    assert_eq!(field_u64(&report, "snapshots_failed"), 1);
    let statuses = statuses(&report);
    assert_eq!(
        (statuses[0].0.as_str(), statuses[0].1.as_str()),
        (first.as_str(), "copied")
    );
    assert_eq!(
        (statuses[1].0.as_str(), statuses[1].1.as_str()),
        (second.as_str(), "failed")
    );
    let target = b.scratch("restored");
    b.ok(restore_args("latest", &target, &[]));
    assert_trees_equal(&kept, &restored_path(&target, &kept));
    let out = copy(&a, &b, &[]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains(&format!("snapshot {} was not copied", &second[..8])));
}

#[test]
fn old_format_repositories_are_copied_from_but_not_into() {
    for version in [1, 2] {
        let old = fixture::fixture_repo(version);
        let new = repo_with_password("other");
        let report = copy_json(&old, &new, &[], 0);
        assert_eq!(field_u64(&report, "snapshots_copied"), 2, "{report:#}");
        fixture::assert_fixture_snapshots_restore(&new, version);

        let out = copy(&new, &old, &[]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains("strata migrate"), "{}", stderr(&out));
    }
}
