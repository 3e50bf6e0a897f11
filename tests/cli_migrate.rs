//! End-to-end tests of `strata migrate` on copies of the version 1 and 2 fixture
//! repositories: every snapshot restores to its manifest after the upgrade and at every point
//! of an interrupted one, `check --read-data` is clean, new backups deduplicate against old
//! data, and the old config cannot be put back.

mod common;

use std::fs;

use common::e2e::*;
use common::fixture::{assert_fixture_snapshots_restore, fixture_repo};
use common::*;

fn version_of(repo: &TestRepo) -> u64 {
    field_u64(&repo.json(["cat", "config"]), "version")
}

/// The migrated repository holds exactly the two fixture snapshots, each restoring to its
/// manifest, and checks clean.
fn assert_migrated(repo: &TestRepo, version: u32) {
    assert_eq!(version_of(repo), 3);
    let listed = repo.ok(["snapshots", "--json"]);
    assert_eq!(stderr(&listed), "", "no damaged snapshots are left");
    let all = stdout_json(&listed, "snapshots");
    assert_eq!(all.as_array().unwrap().len(), 2, "{all:#}");
    assert_fixture_snapshots_restore(repo, version);
    repo.ok(["check", "--read-data"]);
}

#[test]
fn migrate_upgrades_fixtures_in_place() {
    for version in [1, 2] {
        let repo = fixture_repo(version);
        let report = repo.json(["migrate"]);
        assert_eq!(field_u64(&report, "from"), version as u64, "{report:#}");
        assert_eq!(field_u64(&report, "snapshots"), 2, "{report:#}");
        assert_migrated(&repo, version);
        let again = repo.json(["migrate"]);
        assert_eq!(field_u64(&again, "snapshots"), 0, "{again:#}");
        assert_eq!(field_u64(&again, "removed"), 0, "{again:#}");

        let restored = repo.scratch("again");
        let id = common::fixture::snapshot_tagged(&repo, "second");
        repo.ok(restore_args(&id, &restored, &[]));
        let backup = repo.json(os_args!["backup", &restored]);
        let summary = &backup["summary"];
        assert!(field_u64(summary, "total_files") > 0, "{summary:#}");
        assert_eq!(
            field_u64(summary, "data_blobs_added"),
            0,
            "unchanged files deduplicate against the migrated data: {summary:#}"
        );
        repo.ok(["check", "--read-data"]);
    }
}

#[test]
fn migrate_killed_at_any_step_leaves_every_snapshot_restorable_and_a_rerun_finishes() {
    let points = [
        "keys",
        "index",
        "snapshot-1",
        "snapshot-2",
        "config",
        "removed",
    ];
    for version in [1, 2] {
        for point in points {
            let repo = fixture_repo(version);
            let out = repo
                .cmd(["migrate"])
                .env("STRATA_MIGRATE_CRASH_AT", point)
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "v{version}: migrate did not stop at {point}"
            );
            assert_fixture_snapshots_restore(&repo, version);
            repo.ok(["migrate"]);
            assert_migrated(&repo, version);
        }
    }
}

#[test]
fn migrated_repository_refuses_its_old_config() {
    let repo = fixture_repo(2);
    let old = fs::read(repo.repo_path().join("config")).unwrap();
    repo.ok(["migrate"]);
    fs::write(repo.repo_path().join("config"), &old).unwrap();
    for args in [&["snapshots"][..], &["snapshots", "--no-cache"][..]] {
        let out = repo.fail(args);
        assert!(
            stderr(&out).contains("version 2"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
