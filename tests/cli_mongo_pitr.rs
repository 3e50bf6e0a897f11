//! Point-in-time recovery: a snapshot, then a scripted sequence of writes and DDL with the
//! cluster time recorded after each step, `mongo follow --once`, and restores to several
//! of those times into fresh databases, each compared with the state recorded then.
mod common;

use bson::doc;
use common::e2e::{fast_repo, json_expect, run_expect};
use common::mongo::{DbState, Mongo, assert_same_state, scripted_changes, shared, unique_db};
use common::stdout;

/// Runs the script against `db`; returns (cluster time, state) after each step.
fn script(m: &Mongo, db: &str) -> Vec<(String, DbState)> {
    let mut after = Vec::new();
    scripted_changes(m, db, &mut |m| after.push((m.cluster_time(), m.state(db))));
    after
}

#[test]
fn restore_to_recorded_times_equals_the_state_then() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("pitr");
    m.insert(
        &db,
        "a",
        (0..50)
            .map(|i| doc! {"_id": i, "v": i, "gone": 1})
            .collect(),
    );
    m.insert(&db, "b", vec![doc! {"_id": 1}]);
    let repo = fast_repo();
    run_expect(&repo, ["backup", "--mongo", uri, "--mongo-db", &db], 0);
    let steps = script(&m, &db);
    let (_, slices) = json_expect(&repo, ["mongo", "follow", uri, "--once"], 0);
    assert!(
        !slices.as_array().unwrap().is_empty(),
        "a slice was stored: {slices}"
    );
    let (_, again) = json_expect(&repo, ["mongo", "follow", uri, "--once"], 0);
    assert!(
        again.as_array().unwrap().is_empty(),
        "resumes where it ended: {again}"
    );
    let timeline = stdout(&run_expect(&repo, ["mongo", "timeline", uri], 0));
    assert!(
        timeline.contains("recoverable to any time up to"),
        "{timeline}"
    );

    for (i, (time, want)) in steps
        .iter()
        .enumerate()
        .filter(|(i, _)| [0, 1, 2, 3, 4, 5, 6].contains(i))
    {
        let copy = unique_db(&format!("pitr_at{i}"));
        let (_, r) = json_expect(
            &repo,
            [
                "restore",
                "--mongo",
                uri,
                "--at",
                time,
                "--ns-from",
                &format!("{db}.*"),
                "--ns-to",
                &format!("{copy}.*"),
            ],
            0,
        );
        assert!(r["oplog_applied"].as_u64().unwrap() > 0, "{r}");
        let got: DbState = m.state(&copy);
        assert_same_state(want, &got, &format!("state after step {i} ({time})"));
    }

    let future = format!("{}:1", u32::MAX - 1);
    let out = run_expect(&repo, ["restore", "--mongo", uri, "--at", &future], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not recoverable") && err.contains("nearest recoverable"),
        "{err}"
    );
}

#[test]
fn a_rolled_over_oplog_is_recorded_as_a_gap_and_refused() {
    if common::mongo::is_external() {
        // An external server's oplog cannot be made to roll over from here.
        return;
    }
    let server = common::mongo::Server::start(&["--oplog-max-entries", "30"]);
    let m = Mongo::new(&server.uri);
    m.insert("g", "c", vec![doc! {"_id": 0}]);
    let repo = fast_repo();
    let (_, backup) = json_expect(&repo, ["backup", "--mongo", &server.uri], 0);
    let at = &backup["mongodb"]["cluster_time"];
    m.roll_over_oplog();
    let out = run_expect(&repo, ["mongo", "follow", &server.uri, "--once"], 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("are lost (a gap)"),
        "{err} {}",
        common::stdout(&out)
    );
    let (_, t) = json_expect(&repo, ["mongo", "timeline"], 0);
    assert_eq!(t["gaps"].as_array().unwrap().len(), 1, "{t}");
    let inside = format!("{}:{}", at["t"], at["i"].as_u64().unwrap() + 5);
    let out = run_expect(
        &repo,
        ["restore", "--mongo", &server.uri, "--at", &inside],
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not recoverable") && err.contains("nearest recoverable times"),
        "{err}"
    );
}

/// A continuous follower writes packs that no index lists until its slice is saved, so it
/// holds a shared lock: prune, which deletes unlisted packs, is refused while it runs.
#[test]
fn a_running_follower_holds_off_prune() {
    let uri = shared();
    let repo = fast_repo();
    let mut follower = repo
        .cmd(["mongo", "follow", uri, "--slice", "1h"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start mongo follow");
    let locks = repo.repo_path().join("locks");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(&locks).unwrap().any(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp-")
    }) {
        assert!(std::time::Instant::now() < deadline, "no lock appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let refused = run_expect(&repo, ["prune"], 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("shared lock of `mongo follow`"), "{err}");
    follower.kill().unwrap();
    follower.wait().unwrap();
}
