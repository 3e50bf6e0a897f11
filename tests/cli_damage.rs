//! End-to-end tests of `strata` against damaged repositories and hostile
//! restore targets.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::e2e::*;
use common::tree::*;
use common::*;

fn file_name_str(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// The `--on-conflict` modes, `fail` (the default) first.
const CONFLICT_MODES: [&str; 4] = ["fail", "skip", "rename", "overwrite"];

/// `restore latest --target <t>` with `--on-conflict <mode>` (no flag for
/// the default, `fail`). Asserts that nothing reached `outside`, then the exit
/// code: 1 for fail, 0 for overwrite, 0, 1 or 3 for the others.
fn restore_in_mode(repo: &TestRepo, t: &Path, mode: &str, outside: &Path) -> Output {
    let flag: &[&str] = match mode {
        "fail" => &[],
        _ => &["--on-conflict", mode],
    };
    let out = repo.run(restore_args("latest", t, flag));
    let rc = code(&out);
    assert_empty_dir(outside);
    match mode {
        "fail" => assert_eq!(rc, 1, "{mode}: {}", stderr(&out)),
        "overwrite" => assert_eq!(rc, 0, "{mode}: {}", stderr(&out)),
        _ => assert!(
            [0, 1, 3].contains(&rc),
            "{mode}: exit {rc}: {}",
            stderr(&out)
        ),
    }
    out
}

// ---------------------------------------------------------------------------
// 8: a flipped byte in a data pack

#[test]
fn flipped_byte_in_a_pack_is_found_and_restore_is_partial() {
    let (repo, src, b) = backed_up_tree(33);
    let snap = field_str(&b, "snapshot_id").to_string();

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
    let errs = field_array(&report, "errors");
    assert!(
        errs.iter().any(|p| field_str(p, "object") == pack_id),
        "no problem names pack {pack_id}: {report:#}"
    );
    let damaged: BTreeSet<String> = errs
        .iter()
        .filter(|p| field_str(p, "kind") == "blob")
        .map(|p| field_str(p, "object").to_string())
        .collect();
    assert!(!damaged.is_empty(), "no damaged blob named: {report:#}");
    for id in &damaged {
        assert!(is_hex_id(id), "blob problem object {id:?} is not a blob id");
    }
    assert!(
        errs.iter()
            .any(|p| field_str(p, "kind") == "blob" && field_str(p, "message").contains(&pack_id)),
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
    let out = run_expect(&repo, restore_args("latest", &target, &[]), 3);
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
    let (repo, src) = backed_up_small_tree(9, 40);
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
    for mode in CONFLICT_MODES {
        let t = repo.scratch(&format!("top-{mode}"));
        symlink(&outside, t.join(&first)).unwrap();
        restore_in_mode(&repo, &t, mode, &outside);
        let link = fs::symlink_metadata(t.join(&first)).unwrap();
        match mode {
            "fail" => {
                assert!(link.file_type().is_symlink(), "fail replaced the symlink");
                assert_eq!(rel_files(&t), vec![PathBuf::from(&first)]);
            }
            "overwrite" => {
                assert!(
                    link.is_dir(),
                    "overwrite must replace the symlink by a directory"
                );
                assert_trees_equal(&src, &restored_path(&t, &src));
            }
            _ => {}
        }
    }

    // (b) deeper: a directory and a file of the snapshot are symlinks in the
    // target, pointing outside.
    for mode in CONFLICT_MODES {
        let t = repo.scratch(&format!("deep-{mode}"));
        let r = restored_path(&t, &src);
        fs::create_dir_all(r.join("d1/e0")).unwrap();
        for d in [r.clone(), r.join("d1"), r.join("d1/e0")] {
            set_mode(&d, 0o755);
        }
        symlink(&outside, r.join("d0")).unwrap();
        symlink(&victim, r.join("d1/e0/f00001.txt")).unwrap();
        let out = restore_in_mode(&repo, &t, mode, &outside);
        assert_eq!(victim_meta(), victim_before, "{mode}: the victim changed");
        match mode {
            "fail" => {
                let err = stderr(&out);
                assert!(err.contains("d0") && err.contains("f00001.txt"), "{err}");
                assert_eq!(
                    rel_files(&r),
                    vec![PathBuf::from("d0"), PathBuf::from("d1/e0/f00001.txt")],
                    "fail wrote something"
                );
            }
            "overwrite" => {
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
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// 10: a deleted pack

#[test]
fn deleted_pack_is_reported_by_check() {
    let (repo, src) = init_with_src();
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
        field_array(&report, "errors")
            .iter()
            .any(|p| field_str(p, "kind") == "pack" && field_str(p, "object") == pack_id),
        "no pack problem names {pack_id}: {report:#}"
    );

    // Restoring is partial; whatever is restored is correct.
    let target = repo.scratch("restore");
    run_expect(&repo, restore_args("latest", &target, &[]), 3);
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
