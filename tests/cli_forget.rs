//! End-to-end tests of `strata forget`: a made-up history (`backup --time`), a policy or
//! explicit ids, and what `snapshots --json` lists afterwards. The policy's corner cases are
//! unit tests in src/select/policy.rs.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};

use common::e2e::*;
use common::repo::describe;
use common::*;

/// A fresh repository and a source directory `name` holding one small file.
fn repo_with_source(name: &str) -> (TestRepo, PathBuf) {
    let repo = fast_repo();
    let src = source(&repo, name);
    (repo, src)
}

fn source(repo: &TestRepo, name: &str) -> PathBuf {
    let src = repo.scratch(name);
    std::fs::write(src.join("file"), name).unwrap();
    src
}

/// `backup SRC --time TIME` plus `extra`; returns the new snapshot's id.
fn backup(repo: &TestRepo, src: &PathBuf, time: &str, extra: &[&str]) -> String {
    let mut args: Vec<OsString> = os_args!["backup", src, "--time", time];
    args.extend(extra.iter().map(OsString::from));
    field_str(&repo.json(&args), "snapshot_id").to_string()
}

/// `strata forget ARGS` in time zone `tz`, expecting exit code `want`.
fn forget_in(repo: &TestRepo, tz: &str, args: &[&str], want: i32) -> Output {
    let mut cmd = repo.cmd(std::iter::once("forget").chain(args.iter().copied()));
    cmd.env("TZ", tz);
    let out = cmd.output().expect("run strata");
    assert_eq!(out.status.code(), Some(want), "{}", describe(&cmd, &out));
    out
}

/// `forget ARGS --json` in UTC, expecting success.
fn forget_json(repo: &TestRepo, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = forget_in(repo, "UTC0", &all, 0);
    stdout_json(&out, &all)
}

/// The (time, id) of every snapshot `snapshots --json` lists.
fn listed(repo: &TestRepo) -> BTreeSet<(String, String)> {
    let list = repo.json(["snapshots"]);
    let list = list.as_array().expect("snapshots --json is an array");
    (list.iter())
        .map(|s| (field_str(s, "time").into(), field_str(s, "id").into()))
        .collect()
}

fn times(repo: &TestRepo) -> Vec<String> {
    listed(repo).into_iter().map(|(t, _)| t).collect()
}

/// `field` (`id`, `time`…) of each snapshot in the array `v[list]`.
fn column(v: &Value, list: &str, field: &str) -> Vec<String> {
    (field_array(v, list).iter())
        .map(|s| field_str(s, field).to_string())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    (items.iter())
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

const HISTORY: [&str; 6] = [
    "2024-01-01T08:00:00Z",
    "2024-01-01T20:00:00Z",
    "2024-01-02T08:00:00Z",
    "2024-01-08T08:00:00Z",
    "2024-02-01T08:00:00Z",
    "2024-02-01T09:00:00Z",
];

#[test]
fn policy_removes_what_no_rule_keeps_and_dry_run_removes_nothing() {
    let (repo, src) = repo_with_source("src");
    for t in HISTORY {
        backup(&repo, &src, t, &[]);
    }
    let before = listed(&repo);
    let policy = [
        "--keep-last",
        "1",
        "--keep-daily",
        "3",
        "--keep-monthly",
        "2",
    ];
    let mut dry = policy.to_vec();
    dry.push("--dry-run");
    let plan = forget_json(&repo, &dry);
    assert_eq!(listed(&repo), before, "--dry-run removed something");

    assert_eq!(plan["dry_run"], true);
    assert_eq!(strings(&plan["removed"]), Vec::<String>::new());
    assert_eq!(field_array(&plan, "failed").len(), 0);
    let groups = field_array(&plan, "groups");
    assert_eq!(groups.len(), 1, "{plan:#}");
    let group = &groups[0];
    let host = field_str(&repo.json(["snapshots"])[0], "host").to_string();
    let want_key = serde_json::json!({"host": host, "paths": [src.to_str().unwrap()]});
    assert_eq!(group["group"], want_key);
    let kept = column(group, "keep", "time");
    let want_kept = [HISTORY[5], HISTORY[3], HISTORY[2]];
    assert_eq!(kept, want_kept);
    let reasons: Vec<Vec<String>> = (field_array(group, "keep").iter())
        .map(|k| strings(&k["reasons"]))
        .collect();
    assert_eq!(
        reasons,
        [
            vec!["last snapshot", "daily snapshot", "monthly snapshot"],
            vec!["daily snapshot", "monthly snapshot"],
            vec!["daily snapshot"],
        ]
    );
    let removed_times = column(group, "remove", "time");
    assert_eq!(removed_times, [HISTORY[4], HISTORY[1], HISTORY[0]]);
    assert_eq!(column(&plan, "remove", "time"), removed_times);
    for snap in field_array(group, "keep")
        .iter()
        .chain(field_array(group, "remove"))
    {
        let id = field_str(snap, "id");
        assert!(is_hex_id(id), "{snap:#}");
        assert_eq!(field_str(snap, "short_id"), &id[..8]);
        assert!(before.contains(&(field_str(snap, "time").into(), id.into())));
        assert_eq!(field_str(snap, "host"), host);
        assert_eq!(snap["paths"], want_key["paths"]);
        assert_eq!(snap["tags"], serde_json::json!([]));
    }
    assert!(
        field_array(group, "remove")
            .iter()
            .all(|s| s.get("reasons").is_none())
    );

    let out = forget_in(&repo, "UTC0", &policy, 0);
    let text = stdout(&out);
    assert!(text.contains("keep 3, remove 3"), "{text}");
    assert!(
        text.contains("last snapshot, daily snapshot, monthly snapshot"),
        "{text}"
    );
    assert!(text.contains("removed 3 snapshots"), "{text}");
    assert_eq!(times(&repo), [HISTORY[2], HISTORY[3], HISTORY[5]]);

    let again = forget_json(&repo, &policy);
    assert_eq!(strings(&again["removed"]), Vec::<String>::new());
    assert_eq!(times(&repo), [HISTORY[2], HISTORY[3], HISTORY[5]]);
}

#[test]
fn explicit_snapshots_are_removed_and_bad_ones_remove_nothing() {
    let (repo, src) = repo_with_source("src");
    let ids: Vec<String> = HISTORY[..4]
        .iter()
        .map(|t| backup(&repo, &src, t, &[]))
        .collect();

    let report = forget_json(&repo, &[&ids[2][..8], &ids[0], &ids[0][..10]]);
    assert_eq!(
        strings(&report["removed"]),
        [ids[2].as_str(), ids[0].as_str()]
    );
    assert_eq!(
        column(&report, "remove", "id"),
        [ids[2].as_str(), ids[0].as_str()]
    );
    assert_eq!(field_array(&report, "groups").len(), 0);
    let left =
        |repo: &TestRepo| -> Vec<String> { listed(repo).into_iter().map(|(_, id)| id).collect() };
    assert_eq!(left(&repo), [ids[1].as_str(), ids[3].as_str()]);

    let out = forget_in(&repo, "UTC0", &[&ids[1], "ffffffffff"], 1);
    assert!(stderr(&out).contains("ffffffffff"), "{}", stderr(&out));
    forget_in(&repo, "UTC0", &[&ids[1], "--keep-last", "1"], 2);
    let dry = forget_json(&repo, &[&ids[1], "--dry-run"]);
    assert_eq!(column(&dry, "remove", "id"), [ids[1].as_str()]);
    assert_eq!(left(&repo), [ids[1].as_str(), ids[3].as_str()]);

    let out = forget_in(&repo, "UTC0", &["latest"], 0);
    assert!(stdout(&out).contains(&ids[3][..8]), "{}", stdout(&out));
    assert_eq!(left(&repo), [ids[1].as_str()]);
}

#[test]
fn no_policy_bad_options_and_emptied_groups_remove_nothing() {
    let (repo, src) = repo_with_source("src");
    for t in &HISTORY[..3] {
        backup(&repo, &src, t, &[]);
    }
    let before = listed(&repo);
    let out = forget_in(&repo, "UTC0", &[], 1);
    assert!(stderr(&out).contains("no policy"), "{}", stderr(&out));
    forget_in(&repo, "UTC0", &["--keep-last", "0"], 1);
    let out = forget_in(&repo, "UTC0", &["--keep-tag", "absent"], 1);
    assert!(stderr(&out).contains("refusing"), "{}", stderr(&out));
    for bad in [
        &["--keep-daily", "x"][..],
        &["--keep-weekly", "-2"],
        &["--keep-within", "1w"],
        &["--group-by", "time"],
    ] {
        let out = forget_in(&repo, "UTC0", bad, 2);
        assert!(
            stderr(&out).contains("invalid"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(listed(&repo), before);
}

/// The times kept in each group by `--keep-last 1 --group-by BY`, with the group keys.
fn newest_per_group(repo: &TestRepo, by: &str) -> Vec<(Value, Vec<String>)> {
    let plan = forget_json(repo, &["--keep-last", "1", "--group-by", by, "--dry-run"]);
    (field_array(&plan, "groups").iter())
        .map(|g| (g["group"].clone(), column(g, "keep", "time")))
        .collect()
}

#[test]
fn groups_by_host_paths_and_tags() {
    let (repo, a) = repo_with_source("a");
    let b = source(&repo, "b");
    let t = |day: u32| format!("2024-03-{day:02}T12:00:00Z");
    backup(&repo, &a, &t(1), &["--host", "h1", "--tag", "x"]);
    backup(&repo, &a, &t(2), &["--host", "h1"]);
    backup(&repo, &b, &t(3), &["--host", "h1", "--tag", "x"]);
    backup(&repo, &a, &t(4), &["--host", "h2"]);
    backup(
        &repo,
        &b,
        &t(5),
        &["--host", "h2", "--tag", "y", "--tag", "x"],
    );
    let (pa, pb) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert_eq!(
        newest_per_group(&repo, "host,paths"),
        [
            (json!({"host": "h1", "paths": [pa]}), vec![t(2)]),
            (json!({"host": "h1", "paths": [pb]}), vec![t(3)]),
            (json!({"host": "h2", "paths": [pa]}), vec![t(4)]),
            (json!({"host": "h2", "paths": [pb]}), vec![t(5)]),
        ]
    );
    assert_eq!(
        newest_per_group(&repo, "host"),
        [
            (json!({"host": "h1"}), vec![t(3)]),
            (json!({"host": "h2"}), vec![t(5)])
        ]
    );
    assert_eq!(
        newest_per_group(&repo, "paths"),
        [
            (json!({"paths": [pa]}), vec![t(4)]),
            (json!({"paths": [pb]}), vec![t(5)])
        ]
    );
    assert_eq!(
        newest_per_group(&repo, "tags"),
        [
            (json!({"tags": []}), vec![t(4)]),
            (json!({"tags": ["x"]}), vec![t(3)]),
            (json!({"tags": ["x", "y"]}), vec![t(5)]),
        ]
    );
    assert_eq!(newest_per_group(&repo, ""), [(json!({}), vec![t(5)])]);

    forget_in(
        &repo,
        "UTC0",
        &["--keep-last", "1", "--group-by", "host"],
        0,
    );
    assert_eq!(times(&repo), [t(3), t(5)]);
}

#[test]
fn day_buckets_follow_the_local_time_zone() {
    let (repo, src) = repo_with_source("src");
    // In UTC the last two share January 1st; at UTC+5 the last is on January 2nd.
    let history = [
        "2023-12-31T12:00:00Z",
        "2024-01-01T18:00:00Z",
        "2024-01-01T20:00:00Z",
    ];
    for t in history {
        backup(&repo, &src, t, &[]);
    }
    let removed_in = |tz: &str| -> Vec<String> {
        let out = forget_in(&repo, tz, &["--keep-daily", "5", "--dry-run", "--json"], 0);
        column(&stdout_json(&out, tz), "remove", "time")
    };
    assert_eq!(removed_in("UTC0"), [history[1]]);
    assert_eq!(removed_in("<+05>-5"), Vec::<String>::new());
    let out = forget_in(&repo, "<+05>-5", &["--keep-daily", "5", "--dry-run"], 0);
    assert!(
        stdout(&out).contains("2024-01-02 01:00:00"),
        "{}",
        stdout(&out)
    );
    assert_eq!(times(&repo).len(), 3);
}

/// `snapshots --host/--tag/--path` select as `mount` does: every filter must match.
#[test]
fn snapshots_filter_by_host_tag_and_path() {
    let (repo, src) = common::e2e::init_with_src();
    std::fs::write(src.join("f"), b"x").unwrap();
    let src_arg = src.to_str().unwrap();
    let backup = |extra: &[&str]| {
        let mut args = vec!["backup", src_arg];
        args.extend(extra);
        repo.ok(&args);
    };
    backup(&["--host", "a", "--tag", "daily"]);
    backup(&["--host", "a", "--tag", "weekly"]);
    backup(&["--host", "b", "--tag", "daily"]);
    let count = |filter: &[&str]| {
        let mut args = vec!["snapshots"];
        args.extend(filter);
        repo.json(&args).as_array().unwrap().len()
    };
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--host", "a"]), 2);
    assert_eq!(count(&["--host", "a", "--tag", "daily"]), 1);
    assert_eq!(count(&["--tag", "daily", "--path", src_arg]), 2);
    assert_eq!(count(&["--path", "/elsewhere"]), 0);
}
