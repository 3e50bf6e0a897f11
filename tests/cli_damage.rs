//! End-to-end tests of `strata` against damaged repositories and hostile
//! restore targets.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::e2e::*;
use common::tree::*;
use common::*;

fn problems(report: &Value) -> &Vec<Value> {
    report["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("check report without an errors array: {report:#}"))
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v:#}"))
}

fn file_name_str(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn assert_empty_dir(dir: &Path) {
    let entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "{dir:?} must stay empty, holds {entries:?}"
    );
}

// ---------------------------------------------------------------------------
// 8: a flipped byte in a data pack

#[test]
fn flipped_byte_in_a_pack_is_found_and_restore_is_partial() {
    let repo = TestRepo::new();
    init_fast(&repo);
    let src = repo.scratch("src");
    generate_tree(&src, 33);
    let b = repo.json(os_args!["backup", &src]);
    let snap = b["snapshot_id"].as_str().expect("snapshot_id").to_string();

    let packs = packs_by_size(&repo.repo_path());
    assert!(packs.len() >= 2, "expected several packs: {packs:?}");
    let (pack, len) = packs[0].clone();
    let pack_id = file_name_str(&pack);
    flip_byte(&pack, len / 2);

    // Without --read-data the pack is not read: no damage visible, no crash.
    let out = repo.run(["check"]);
    let rc = code(&out);
    assert!(
        rc == 0 || rc == 1,
        "check without --read-data: exit {rc}\n{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    // With --read-data the damage is named: the pack and the blob(s).
    let (_, report) = json_expect(&repo, ["check", "--read-data"], 1);
    let errs = problems(&report);
    assert!(
        errs.iter().any(|p| str_of(p, "object") == pack_id),
        "no problem names pack {pack_id}: {report:#}"
    );
    let damaged: BTreeSet<String> = errs
        .iter()
        .filter(|p| str_of(p, "kind") == "blob")
        .map(|p| str_of(p, "object").to_string())
        .collect();
    assert!(!damaged.is_empty(), "no damaged blob named: {report:#}");
    for id in &damaged {
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "blob problem object {id:?} is not a blob id"
        );
    }
    assert!(
        errs.iter()
            .any(|p| str_of(p, "kind") == "blob" && str_of(p, "message").contains(&pack_id)),
        "blob problems should name the pack: {report:#}"
    );

    // Which files use the damaged blobs (from the snapshot's own trees).
    let affected: Vec<PathBuf> = snapshot_files(&repo, &snap)
        .into_iter()
        .filter(|f| f.blobs.iter().any(|b| damaged.contains(b)))
        .map(|f| f.path.strip_prefix(&src).expect("below src").to_path_buf())
        .collect();
    assert!(!affected.is_empty(), "no file uses {damaged:?}");

    // cat of an affected file must fail rather than print damaged data.
    let first = src.join(&affected[0]);
    let out = repo.run(["cat", "latest", first.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "cat {:?}: {}", affected[0], stderr(&out));

    // Restore: partial (exit 3), the affected files named and not written,
    // everything else restored exactly.
    let target = repo.scratch("restore");
    let out = run_expect(&repo, os_args!["restore", "latest", "--target", &target], 3);
    let err = stderr(&out);
    for rel in &affected {
        assert!(
            err.contains(rel.to_str().unwrap()),
            "stderr does not name {rel:?}:\n{err}"
        );
    }
    let restored = restored_path(&target, &src);
    let mut want: Vec<String> = affected
        .iter()
        .map(|rel| format!("only in a: {rel:?} (file)"))
        .collect();
    want.sort();
    let mut diffs = compare_trees(&src, &restored, CompareOpts::default());
    diffs.sort();
    assert_eq!(
        diffs, want,
        "only the affected files {affected:?} may differ from the source"
    );
}

// ---------------------------------------------------------------------------
// 9: symlinks planted in the restore target

#[test]
fn restore_never_writes_through_planted_symlinks() {
    let repo = TestRepo::new();
    init_fast(&repo);
    let src = repo.scratch("src");
    generate_small_tree(&src, 9, 40);
    repo.ok(os_args!["backup", &src]);
    let outside = repo.scratch("outside");
    let victims = repo.scratch("victims");
    let victim = victims.join("victim.txt");
    fs::write(&victim, b"original victim content\n").unwrap();
    set_mode(&victim, 0o640);
    set_mtime(&victim, 1_000_000_000, 5);
    let victim_meta = || {
        let m = fs::symlink_metadata(&victim).unwrap();
        (
            fs::read(&victim).unwrap(),
            m.mode(),
            m.mtime(),
            m.mtime_nsec(),
        )
    };
    let victim_before = victim_meta();

    let first = src.components().nth(1).unwrap().as_os_str().to_owned();

    // (a) target/<first component of the source path> -> outside
    for mode in ["fail", "skip", "rename", "overwrite"] {
        let t = repo.scratch(&format!("top-{mode}"));
        symlink(&outside, t.join(&first)).unwrap();
        let mut args = os_args!["restore", "latest", "--target", &t];
        if mode != "fail" {
            args.extend(os_args!["--on-conflict", mode]);
        }
        let out = repo.run(&args);
        let rc = code(&out);
        assert_empty_dir(&outside);
        let link = fs::symlink_metadata(t.join(&first)).unwrap();
        match mode {
            "fail" => {
                assert_eq!(rc, 1, "{mode}: {}", stderr(&out));
                assert!(link.file_type().is_symlink(), "fail replaced the symlink");
                assert_eq!(rel_files(&t), vec![PathBuf::from(&first)]);
            }
            "overwrite" => {
                assert_eq!(rc, 0, "{mode}: {}", stderr(&out));
                assert!(
                    link.is_dir(),
                    "overwrite must replace the symlink by a directory"
                );
                assert_trees_equal(&src, &restored_path(&t, &src));
            }
            _ => assert!(
                [0, 1, 3].contains(&rc),
                "{mode}: exit {rc}: {}",
                stderr(&out)
            ),
        }
    }

    // (b) deeper: a directory and a file of the snapshot are symlinks in the
    // target, pointing outside.
    for mode in ["fail", "skip", "rename", "overwrite"] {
        let t = repo.scratch(&format!("deep-{mode}"));
        let r = restored_path(&t, &src);
        fs::create_dir_all(r.join("d1/e0")).unwrap();
        for d in [r.clone(), r.join("d1"), r.join("d1/e0")] {
            set_mode(&d, 0o755);
        }
        symlink(&outside, r.join("d0")).unwrap();
        symlink(&victim, r.join("d1/e0/f00001.txt")).unwrap();
        let mut args = os_args!["restore", "latest", "--target", &t];
        if mode != "fail" {
            args.extend(os_args!["--on-conflict", mode]);
        }
        let out = repo.run(&args);
        let rc = code(&out);
        assert_empty_dir(&outside);
        assert_eq!(victim_meta(), victim_before, "{mode}: the victim changed");
        match mode {
            "fail" => {
                assert_eq!(rc, 1, "{mode}: {}", stderr(&out));
                let err = stderr(&out);
                assert!(err.contains("d0") && err.contains("f00001.txt"), "{err}");
                assert_eq!(
                    rel_files(&r),
                    vec![PathBuf::from("d0"), PathBuf::from("d1/e0/f00001.txt")],
                    "fail wrote something"
                );
            }
            "overwrite" => {
                assert_eq!(rc, 0, "{mode}: {}", stderr(&out));
                assert!(fs::symlink_metadata(r.join("d0")).unwrap().is_dir());
                assert!(
                    fs::symlink_metadata(r.join("d1/e0/f00001.txt"))
                        .unwrap()
                        .is_file()
                );
                assert_trees_equal_with(
                    &src,
                    &r,
                    CompareOpts {
                        dir_mtime: false,
                        ..CompareOpts::default()
                    },
                );
            }
            _ => assert!(
                [0, 1, 3].contains(&rc),
                "{mode}: exit {rc}: {}",
                stderr(&out)
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// 10: a deleted pack

#[test]
fn deleted_pack_is_reported_by_check() {
    let repo = TestRepo::new();
    init_fast(&repo);
    let src = repo.scratch("src");
    generate_small_tree(&src, 10, 30);
    let mut rng = Rng::new(10);
    let mut big = vec![0u8; 3 * 1024 * 1024];
    rng.fill(&mut big);
    fs::write(src.join("random.bin"), &big).unwrap();
    repo.ok(os_args!["backup", &src]);
    repo.ok(["check"]);

    let packs = packs_by_size(&repo.repo_path());
    let (pack, _) = packs[0].clone();
    let pack_id = file_name_str(&pack);
    fs::remove_file(&pack).unwrap();

    let out = run_expect(&repo, ["check"], 1);
    assert!(
        stderr(&out).contains(&pack_id) || stdout(&out).contains(&pack_id),
        "check does not name the missing pack {pack_id}:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let (_, report) = json_expect(&repo, ["check"], 1);
    assert!(
        problems(&report)
            .iter()
            .any(|p| str_of(p, "kind") == "pack" && str_of(p, "object") == pack_id),
        "no pack problem names {pack_id}: {report:#}"
    );

    // Restoring is partial; whatever is restored is correct.
    let target = repo.scratch("restore");
    run_expect(&repo, os_args!["restore", "latest", "--target", &target], 3);
    let restored = restored_path(&target, &src);
    for rel in rel_files(&restored) {
        assert_eq!(
            fs::read(restored.join(&rel)).unwrap(),
            fs::read(src.join(&rel)).unwrap(),
            "{rel:?}"
        );
    }
    assert!(
        !restored.join("random.bin").exists(),
        "random.bin's data is gone, it must not be restored"
    );
}
