//! Finding 7 of issue 12: strings that come from the repository (host names, tags, paths,
//! owners, lock holders, key-file fields) never reach the terminal raw, whatever command
//! lists them, so a crafted repository cannot send terminal escape sequences.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata::backend::local::LocalBackend;
use strata::repo::lock::{self, LockGuard, LockInfo, LockMode};
use strata::repo::repository::Repository;

use common::e2e::*;
use common::*;

const ESC: u8 = 0x1b;
/// A colour change, a window-title change ended by BEL, and a screen clear.
const HOST: &str = "host\u{1b}]0;owned\u{7}";
const TAG: &str = "tag\u{1b}[2J";
const USER: &str = "user\u{1b}[31m";
const NAME: &str = "file\u{1b}[5mblink\u{8}";
const DIR: &str = "dir\u{1b}[8m";
const HOLDER: &str = "holder\u{1b}[41m";
const KEY_HOST: &str = "keyhost\u{1b}[7m";

/// Two snapshots of a source whose path and file name hold control bytes, made by a user
/// whose name does, with a crafted host and tag.
fn crafted_repository() -> (TestRepo, Vec<String>) {
    let repo = TestRepo::new();
    let mut init = repo.cmd(FAST_INIT);
    init.env("USER", USER);
    let out = init.output().expect("run init");
    assert!(out.status.success(), "init: {}", stderr(&out));
    let src = repo.scratch("src").join(DIR);
    fs::create_dir(&src).unwrap();
    fs::write(src.join(NAME), b"first").unwrap();
    let mut ids = Vec::new();
    for content in ["first", "second, longer"] {
        fs::write(src.join(NAME), content).unwrap();
        let args = os_args!["backup", &src, "--host", HOST, "--tag", TAG];
        let mut all = args.clone();
        all.push("--json".into());
        let v = stdout_json(&repo.ok(&all), &all);
        ids.push(field_str(&v, "snapshot_id").to_string());
    }
    copy_key_with_host(&repo.repo_path());
    (repo, ids)
}

/// A second key file like the first but claiming a crafted host (and no MAC, as version 1
/// key files have none).
fn copy_key_with_host(repo: &Path) {
    let keys = repo.join("keys");
    let first = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(first).unwrap()).unwrap();
    v["host"] = KEY_HOST.into();
    v.as_object_mut().unwrap().remove("mac");
    let name = "ab".repeat(32);
    fs::write(keys.join(name), serde_json::to_vec(&v).unwrap()).unwrap();
}

/// A shared lock whose holder's command holds control bytes, held while it lives, and a
/// live-looking one of another machine with a crafted host and user.
fn crafted_lock(repo: &TestRepo) -> LockGuard {
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let repo = Repository::open(backend, repo.password.as_bytes()).unwrap();
    let held = repo
        .acquire_lock(LockMode::Shared, HOLDER, Duration::ZERO, None)
        .unwrap();
    let now = chrono::Utc::now();
    let info = LockInfo {
        mode: LockMode::Shared,
        created: now,
        refreshed: now,
        host: HOST.into(),
        pid: 1,
        username: USER.into(),
        command: "backup".into(),
        boot: "another machine".into(),
    };
    lock::write(repo.backend(), repo.key(), &info).unwrap();
    held
}

fn assert_no_esc(what: &str, bytes: &[u8]) {
    assert!(
        !bytes.contains(&ESC),
        "`{what}` printed a raw ESC byte:\n{}",
        String::from_utf8_lossy(bytes).escape_debug()
    );
}

#[test]
fn listing_commands_print_no_escape_bytes_from_a_crafted_repository() {
    let (repo, ids) = crafted_repository();
    let _held = crafted_lock(&repo);
    let commands: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["ls", "-l", "-R", "latest"],
        vec!["find", "file*"],
        vec!["diff", &ids[0], &ids[1]],
        vec!["stats"],
        vec!["check"],
        vec!["key", "list"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["repair", "snapshots", "--dry-run"],
        vec!["unlock"],
    ];
    let mut shown_escaped = 0;
    for args in commands {
        for json in [false, true] {
            let mut all = args.clone();
            all.extend(json.then_some("--json"));
            let out = repo.run(&all);
            let what = all.join(" ");
            assert_no_esc(&what, &out.stdout);
            assert_no_esc(&what, &out.stderr);
            let text = [stdout(&out), stderr(&out)].concat();
            shown_escaped += usize::from(text.contains("\\u{1b}") || text.contains("\\u001b"));
        }
    }
    assert!(
        shown_escaped >= 12,
        "the crafted strings should be shown (escaped) by most commands, were by {shown_escaped}"
    );
}

#[test]
fn the_crafted_strings_are_shown_escaped_where_they_belong() {
    let (repo, _) = crafted_repository();
    let snapshots = stdout(&repo.ok(["snapshots"]));
    assert!(
        snapshots.contains("host\\u{1b}]0;owned\\u{7}"),
        "{snapshots}"
    );
    assert!(snapshots.contains("tag\\u{1b}[2J"), "{snapshots}");
    assert!(snapshots.contains("dir\\u{1b}[8m"), "{snapshots}");
    let keys = stdout(&repo.ok(["key", "list"]));
    assert!(keys.contains("user\\u{1b}[31m@"), "{keys}");
    assert!(keys.contains("keyhost\\u{1b}[7m"), "{keys}");
    let held = crafted_lock(&repo);
    let refused = repo.fail(["prune"]);
    // Either crafted lock may be the one named: both hold ESC.
    let err = stderr(&refused);
    assert!(
        err.contains("holder\\u{1b}[41m") || err.contains("host\\u{1b}]0;owned\\u{7}"),
        "{err}"
    );
    drop(held);
}
