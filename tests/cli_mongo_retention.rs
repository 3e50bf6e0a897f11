//! `forget` and MongoDB oplog slices: slices that end by the oldest kept snapshot of their
//! server go with the snapshots forget removes, the rest stay and still serve
//! `restore --at`; `--keep-oplog-within` expires old slices even where a kept snapshot could
//! use them, and `mongo timeline` and `restore --at` then call that stretch not recoverable.
//!
//! Age expiry needs slices hours apart. The test's own SecantusDB runs with a clock shim
//! (a `sitecustomize` that adds the seconds in a file to Python's `time.time`): it starts
//! two hours behind and is set right midway, as if two hours had passed. With
//! `$MONGODB_URI` the clock cannot be moved, so that part is skipped.
mod common;

use bson::doc;
use common::e2e::{fast_repo, json_expect, run_expect};
use common::mongo::{DbState, Mongo, Server, assert_same_state, is_external, shared, unique_db};
use common::{TestRepo, stdout};
use serde_json::Value;
use std::path::PathBuf;

const SHIM: &str = "import os, time
_path = os.environ.get('STRATA_TEST_CLOCK_SHIFT')
if _path:
    _real = time.time
    def _shifted():
        try:
            with open(_path) as f:
                return _real() + float(f.read())
        except (OSError, ValueError):
            return _real()
    time.time = _shifted
";

/// The server under test and, for our own, the file its clock shift is read from.
struct Clocked {
    server: Option<Server>,
    shift: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Clocked {
    /// Our own SecantusDB `behind` seconds slow (keeping a day of oplog, so that moving the
    /// clock prunes nothing), or `$MONGODB_URI`'s server as it is.
    fn start(behind: u32) -> Clocked {
        let dir = tempfile::tempdir().expect("temp dir");
        if is_external() {
            return Clocked {
                server: None,
                shift: None,
                _dir: dir,
            };
        }
        std::fs::write(dir.path().join("sitecustomize.py"), SHIM).expect("shim");
        let shift = dir.path().join("shift");
        std::fs::write(&shift, format!("-{behind}")).expect("shift");
        // SAFETY: this is the binary's only test and no other thread has started yet.
        unsafe {
            std::env::set_var("PYTHONPATH", dir.path());
            std::env::set_var("STRATA_TEST_CLOCK_SHIFT", &shift);
        }
        let server = Server::start(&["--oplog-retention-seconds", "86400"]);
        Clocked {
            server: Some(server),
            shift: Some(shift),
            _dir: dir,
        }
    }

    fn uri(&self) -> &str {
        match &self.server {
            Some(s) => &s.uri,
            None => shared(),
        }
    }

    /// Sets the server's clock right (the time jumps forward); false if it cannot be moved.
    fn set_right(&self) -> bool {
        match &self.shift {
            Some(path) => {
                std::fs::write(path, "0").expect("shift");
                true
            }
            None => false,
        }
    }
}

fn insert_range(m: &Mongo, db: &str, from: i32, to: i32) {
    m.insert(
        db,
        "c",
        (from..to).map(|i| doc! {"_id": i, "v": i}).collect(),
    );
}

/// `backup --mongo URI --mongo-db DB`: the snapshot id and its cluster time.
fn backup(repo: &TestRepo, uri: &str, db: &str) -> (String, String) {
    let (_, b) = json_expect(repo, ["backup", "--mongo", uri, "--mongo-db", db], 0);
    let t = &b["mongodb"]["cluster_time"];
    let id = b["snapshot_id"].as_str().expect("snapshot id").to_string();
    (id, format!("{}:{}", t["t"], t["i"]))
}

/// `mongo follow --once`, expecting one slice: its id, start and end as `T:I`.
fn follow(repo: &TestRepo, uri: &str) -> (String, String, String) {
    let (_, v) = json_expect(repo, ["mongo", "follow", uri, "--once"], 0);
    let slices = v.as_array().expect("slices");
    assert_eq!(slices.len(), 1, "one slice per run: {v}");
    let at = |t: &Value| format!("{}:{}", t["t"], t["i"]);
    let s = &slices[0];
    assert!(s["gap_from"].is_null(), "no gap: {s}");
    let id = s["id"].as_str().expect("id").to_string();
    (id, at(&s["start"]), at(&s["end"]))
}

/// Writes a step of changes to `db` and returns the cluster time and state after it.
fn step(m: &Mongo, db: &str, nr: i32) -> (String, DbState) {
    insert_range(m, db, nr * 100, nr * 100 + 20);
    m.run(
        db,
        doc! {"update": "c", "updates": [{"q": {"_id": nr}, "u": {"$set": {"step": nr}}}]},
    );
    m.run(
        db,
        doc! {"delete": "c", "deletes": [{"q": {"_id": nr + 10}, "limit": 1}]},
    );
    (m.cluster_time(), m.state(db))
}

/// `restore --mongo URI --at AT` of `db` into a new database; its state.
fn restore_at(repo: &TestRepo, m: &Mongo, uri: &str, db: &str, at: &str) -> DbState {
    let copy = unique_db("ret_copy");
    let (from, to) = (format!("{db}.*"), format!("{copy}.*"));
    let args = [
        "restore",
        "--mongo",
        uri,
        "--at",
        at,
        "--ns-from",
        &from,
        "--ns-to",
        &to,
    ];
    json_expect(repo, args, 0);
    m.state(&copy)
}

fn refused_at(repo: &TestRepo, uri: &str, at: &str) -> String {
    let out = run_expect(repo, ["restore", "--mongo", uri, "--at", at], 1);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = (v.as_array().expect("array").iter())
        .map(|x| {
            x.as_str()
                .map_or_else(|| x["id"].to_string(), str::to_string)
        })
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<&str>) -> Vec<String> {
    v.sort();
    v.into_iter().map(String::from).collect()
}

/// The slices of a forget plan as (id, keep, reasons).
fn slice_plan(v: &Value) -> Vec<(String, bool, String)> {
    (v["oplog_slices"].as_array().expect("oplog_slices").iter())
        .map(|s| {
            let reasons: Vec<&str> = (s["reasons"].as_array().unwrap().iter())
                .map(|r| r.as_str().unwrap())
                .collect();
            let id = s["id"].as_str().unwrap().to_string();
            (id, s["keep"].as_bool().unwrap(), reasons.join(", "))
        })
        .collect()
}

fn short(id: &str) -> &str {
    &id[..8]
}

#[test]
fn forget_keeps_the_slices_kept_snapshots_need_and_expires_old_ones() {
    let clock = Clocked::start(2 * 3600);
    let uri = clock.uri().to_string();
    let m = Mongo::new(&uri);
    let db = unique_db("ret");
    insert_range(&m, &db, 0, 30);
    let repo = fast_repo();

    // A, slice 1, B, slice 2 while the server's clock is two hours slow; then slice 3.
    let (a, _) = backup(&repo, &uri, &db);
    let (t1, _) = step(&m, &db, 1);
    let (s1, _, _) = follow(&repo, &uri);
    let (b, tb) = backup(&repo, &uri, &db);
    let (t2, state2) = step(&m, &db, 2);
    let (s2, _, s2_end) = follow(&repo, &uri);
    let moved = clock.set_right();
    let m = Mongo::new(&uri);
    let (t3, state3) = step(&m, &db, 3);
    let (s3, s3_start, s3_end) = follow(&repo, &uri);
    assert_eq!(s3_start, s2_end, "slices chain");

    // --keep-last 1 keeps B: slice 1 ends before it and goes with A.
    let keep_b = ["forget", "--keep-last", "1"];
    let (_, plan) = json_expect(&repo, [&keep_b[..], &["--dry-run"]].concat(), 0);
    let before = format!("ends before the oldest kept snapshot {}", short(&b));
    let extends = format!("extends snapshot {}", short(&b));
    assert_eq!(
        slice_plan(&plan),
        vec![
            (s1.clone(), false, before),
            (s2.clone(), true, extends.clone()),
            (s3.clone(), true, extends.clone()),
        ]
    );
    assert_eq!(ids(&plan["remove"]), sorted(vec![&a, &s1]));
    assert!(
        ids(&plan["removed"]).is_empty(),
        "a dry run removes nothing"
    );
    let text = stdout(&run_expect(
        &repo,
        [&keep_b[..], &["--dry-run"]].concat(),
        0,
    ));
    assert!(text.contains("keep 2, remove 1"), "{text}");
    assert!(
        text.contains("would remove 2 snapshots (1 of them oplog slices)"),
        "{text}"
    );

    let prune = ["--prune", "--max-unused", "0"];
    let (_, done) = json_expect(&repo, [&keep_b[..], &prune[..]].concat(), 0);
    assert_eq!(ids(&done["removed"]), sorted(vec![&a, &s1]));
    assert!(
        done["prune"]["bytes_freed"].as_u64().unwrap() > 0,
        "the removed slice's and snapshot's data is reclaimed: {done}"
    );
    run_expect(&repo, ["check", "--read-data"], 0);
    let (_, left) = json_expect(&repo, ["snapshots"], 0);
    assert_eq!(ids(&left), sorted(vec![&b, &s2, &s3]));

    // What remains still restores to any time after B, across the clock's jump.
    assert_same_state(&state2, &restore_at(&repo, &m, &uri, &db, &t2), "at t2");
    assert_same_state(&state3, &restore_at(&repo, &m, &uri, &db, &t3), "at t3");
    let err = refused_at(&repo, &uri, &t1);
    assert!(err.contains("no consistent MongoDB snapshot"), "{err}");
    if !moved {
        return;
    }

    // Slice 2 ended two hours before slice 3: --keep-oplog-within 1h expires it, though B
    // could use it, and keeps every snapshot.
    let (_, plan) = json_expect(&repo, ["forget", "--keep-oplog-within", "1h"], 0);
    assert_eq!(
        slice_plan(&plan),
        vec![
            (
                s2.clone(),
                false,
                "older than 1h before the newest slice".into()
            ),
            (
                s3.clone(),
                true,
                format!("{extends}, within 1h of the newest slice")
            ),
        ]
    );
    assert_eq!(ids(&plan["removed"]), vec![s2.clone()]);

    let (_, tl) = json_expect(&repo, ["mongo", "timeline", &uri], 0);
    let gaps = tl["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{tl}");
    let gap_at = |f: &str| format!("{}:{}", gaps[0][f]["t"], gaps[0][f]["i"]);
    assert_eq!(gaps[0]["kind"], "missing", "{tl}");
    assert_eq!(
        (gap_at("from"), gap_at("to")),
        (tb.clone(), s3_start.clone())
    );
    let text = stdout(&run_expect(&repo, ["mongo", "timeline", &uri], 0));
    assert!(
        text.contains("not recoverable: its oplog slices were forgotten")
            && text.contains("that time only")
            && !text.contains("rolled over"),
        "{text}"
    );
    let err = refused_at(&repo, &uri, &t3);
    assert!(
        err.contains("not recoverable") && err.contains(&format!("archived only up to {tb}")),
        "{err}"
    );

    // follow resumes after the newest slice (archiving the restores' writes too).
    step(&m, &db, 4);
    let (_, s4_start, _) = follow(&repo, &uri);
    assert_eq!(s4_start, s3_end, "resumes where slice 3 ended");

    // A slice named is removed like any snapshot; the timeline's gap then reaches slice 4.
    let text = stdout(&run_expect(&repo, ["forget", &s3[..8]], 0));
    assert!(
        text.contains("removed 1 snapshots (1 of them oplog slices)"),
        "{text}"
    );
    let (_, tl) = json_expect(&repo, ["mongo", "timeline", &uri], 0);
    let gaps = tl["gaps"].as_array().unwrap();
    let to = format!("{}:{}", gaps[0]["to"]["t"], gaps[0]["to"]["i"]);
    assert_eq!((gaps.len(), to), (1, s3_end), "{tl}");
}
