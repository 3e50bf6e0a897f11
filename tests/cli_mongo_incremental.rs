//! Incremental MongoDB snapshots: a full dump and seven incremental ones over scripted
//! changes, each restored and compared with the state recorded at its time; forget and
//! prune around the chain; a rolled-over oplog; a backup killed while it reads the oplog.
mod common;

use bson::doc;
use common::e2e::{fast_repo, json_expect, run_expect};
use common::mongo::{
    DbState, Mongo, Server, assert_same_state, scripted_changes, shared, unique_db,
};
use common::repo::TestRepo;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `a` and `b` with documents of about 500 bytes and a secondary index each, so that the
/// script's drop and rename meet indexes the full dump holds.
fn seed(m: &Mongo, db: &str) {
    let pad = "x".repeat(480);
    let docs = |ids: Vec<i32>| {
        (ids.into_iter())
            .map(|i| doc! {"_id": i, "v": i, "pad": &pad})
            .collect()
    };
    // The script inserts `_id`s 100 to 109 itself.
    m.insert(db, "a", docs((0..50).chain(1000..3000).collect()));
    m.insert(db, "b", docs((0..200).collect()));
    for coll in ["a", "b"] {
        m.run(
            db,
            doc! {"createIndexes": coll, "indexes": [{"key": {"v": -1}, "name": "v_desc"}]},
        );
    }
}

/// A MongoDB backup of `db` whose chain may hold the seven incremental dumps the tests make.
fn backup_args<'a>(uri: &'a str, db: &'a str) -> [&'a str; 7] {
    [
        "backup",
        "--mongo",
        uri,
        "--mongo-db",
        db,
        "--full-every",
        "8",
    ]
}

fn backup(repo: &TestRepo, uri: &str, db: &str) -> Value {
    json_expect(repo, backup_args(uri, db), 0).1
}

fn restored_state(repo: &TestRepo, m: &Mongo, uri: &str, db: &str, snapshot: &str) -> DbState {
    let copy = unique_db("inc_copy");
    let (from, to) = (format!("{db}.*"), format!("{copy}.*"));
    let args = [
        "restore",
        snapshot,
        "--mongo",
        uri,
        "--ns-from",
        &from,
        "--ns-to",
        &to,
    ];
    run_expect(repo, args, 0);
    let state = m.state(&copy);
    m.drop_db(&copy);
    state
}

fn snapshot_id(report: &Value) -> String {
    report["snapshot_id"]
        .as_str()
        .expect("a snapshot id")
        .to_string()
}

#[test]
fn a_chain_of_incremental_snapshots_restores_every_state_and_survives_forget_and_prune() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("inc");
    seed(&m, &db);
    let repo = fast_repo();
    let full = backup(&repo, uri, &db);
    assert!(full["mongodb"]["incremental"].is_null(), "{full}");
    let reason = full["mongodb"]["full_reason"].as_str().unwrap();
    assert!(
        reason.contains("no consistent MongoDB snapshot"),
        "{reason}"
    );
    let full_added = full["summary"]["bytes_added_raw"].as_u64().unwrap();
    let mut chain = vec![(snapshot_id(&full), m.state(&db))];
    scripted_changes(&m, &db, &mut |m| {
        let inc = backup(&repo, uri, &db);
        let depth = inc["mongodb"]["incremental"]["depth"].as_u64();
        assert_eq!(depth, Some(chain.len() as u64), "{inc}");
        assert_eq!(inc["mongodb"]["incremental"]["base"], full["snapshot_id"]);
        assert!(
            inc["mongodb"]["collections"].as_array().unwrap().is_empty(),
            "{inc}"
        );
        let added = inc["summary"]["bytes_added_raw"].as_u64().unwrap();
        assert!(
            added * 20 < full_added,
            "an incremental stored {added} of {full_added}"
        );
        chain.push((snapshot_id(&inc), m.state(&db)));
    });
    assert_eq!(chain.len(), 8, "a full dump and seven incremental ones");

    let listed = json_expect(&repo, ["snapshots"], 0).1;
    let last = &listed.as_array().unwrap()[7]["sources"][0]["chain"];
    assert_eq!(last["incremental"]["depth"], 7, "{last}");
    assert_eq!(last["full_every"], 8, "{last}");
    let text = common::stdout(&run_expect(&repo, ["snapshots"], 0));
    assert!(text.contains("incremental 7 on"), "{text}");
    // The last dump shows each oplog range of the chain as a file beside `oplog.bson` (its
    // same chunks): one per incremental dump, in order, together the end of `oplog.bson`.
    let last_id = &chain[7].0;
    let listing = common::stdout(&run_expect(&repo, ["ls", last_id, "/mongodb"], 0));
    let mut ranges: Vec<&str> = (listing.lines().map(str::trim))
        .filter(|p| p.starts_with("/mongodb/oplog-"))
        .collect();
    ranges.sort_by_key(|p| {
        p["/mongodb/oplog-".len()..]
            .split('-')
            .next()
            .map(str::to_string)
    });
    let depths: Vec<String> = (ranges.iter())
        .map(|p| {
            p["/mongodb/oplog-".len()..]
                .split('-')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(depths, ["1", "2", "3", "4", "5", "6", "7"], "{listing}");
    let cat = |path: &str| run_expect(&repo, ["cat", last_id, path], 0).stdout;
    let joined: Vec<u8> = ranges.iter().flat_map(|p| cat(p)).collect();
    let whole = cat("/mongodb/oplog.bson");
    assert!(
        !joined.is_empty() && whole.ends_with(&joined),
        "the ranges ({} bytes) are not the end of oplog.bson ({} bytes)",
        joined.len(),
        whole.len()
    );
    // Every dump records the last oplog entry it read, where the next one's read starts: it
    // advances with every change and never passes the dump's cluster time.
    let time = |t: &Value| (t["t"].as_u64().unwrap(), t["i"].as_u64().unwrap());
    let anchors = (listed.as_array().unwrap().iter())
        .map(|s| &s["sources"][0])
        .map(|m| (time(&m["chain"]["last_entry"]), time(&m["cluster_time"])))
        .collect::<Vec<_>>();
    assert!(anchors.iter().all(|(last, at)| last <= at), "{anchors:?}");
    assert!(anchors.windows(2).all(|w| w[0].0 < w[1].0), "{anchors:?}");

    for (i, (id, want)) in chain.iter().enumerate() {
        let got = restored_state(&repo, &m, uri, &db, id);
        assert_same_state(want, &got, &format!("snapshot {i} of the chain"));
    }

    // Diff counts the writes between two dumps of the chain from the oplog.
    let writes = |from: usize, to: usize| {
        let (_, d) = json_expect(&repo, ["diff", &chain[from].0, &chain[to].0], 0);
        let by_ns = |coll: &str| {
            let all = d["mongodb"]["namespaces"].as_array().unwrap();
            let n = all.iter().find(|n| n["ns"] == format!("{db}.{coll}"));
            n.map(|n| {
                (
                    n["inserted"].clone(),
                    n["updated"].clone(),
                    n["deleted"].clone(),
                )
            })
        };
        (by_ns("a"), by_ns("b"))
    };
    let (a, b) = writes(0, 3);
    assert_eq!(
        a,
        Some((10.into(), 4.into(), 3.into())),
        "inserts, updates, deletes on a"
    );
    assert_eq!(b, None, "b was not written to in steps 1 to 3");
    let (a, b) = writes(3, 4);
    assert_eq!(
        a,
        Some((1.into(), 0.into(), 0.into())),
        "the transaction's insert"
    );
    assert_eq!(
        b,
        Some((0.into(), 1.into(), 0.into())),
        "the transaction's update"
    );

    // The incremental snapshots hold their base's dump: forgetting the base loses nothing.
    let keep = ["forget", "--keep-last", "3", "--prune"];
    let (_, forgot) = json_expect(&repo, keep, 0);
    assert!(
        forgot.to_string().contains(&chain[0].0),
        "the full dump was forgotten: {forgot}"
    );
    run_expect(&repo, ["check", "--read-data"], 0);
    for (i, (id, want)) in chain.iter().enumerate().skip(5) {
        let got = restored_state(&repo, &m, uri, &db, id);
        assert_same_state(want, &got, &format!("snapshot {i} after forget and prune"));
    }
    let next = backup(&repo, uri, &db);
    assert!(next["mongodb"]["incremental"].is_null(), "{next}");
    let reason = next["mongodb"]["full_reason"].as_str().unwrap();
    assert!(
        reason.contains("holds 7 incremental dumps (--full-every 8)"),
        "{reason}"
    );
    m.drop_db(&db);
}

/// `scan --mongo` of `snapshot` (deep or not): its exit code and report.
fn scan(repo: &TestRepo, uri: &str, db: &str, snapshot: &str, deep: bool, code: i32) -> Value {
    let mut args = vec![
        "scan",
        "--mongo",
        uri,
        "--mongo-db",
        db,
        "--snapshot",
        snapshot,
    ];
    if deep {
        args.push("--deep");
    }
    json_expect(repo, args, code).1
}

#[test]
fn scan_compares_the_server_with_an_incremental_snapshot_at_its_time() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("inc_scan");
    seed(&m, &db);
    let repo = fast_repo();
    backup(&repo, uri, &db);
    // After every scripted change the server holds what the new incremental snapshot holds
    // at its time: inserted, updated (both formats) and deleted documents, a transaction, a
    // new index, a collection dropped and created again, a rename. Nothing is lost.
    let mut last = String::new();
    scripted_changes(&m, &db, &mut |_| {
        let inc = backup(&repo, uri, &db);
        assert!(inc["mongodb"]["incremental"].is_object(), "{inc}");
        last = snapshot_id(&inc);
        for deep in [false, true] {
            let report = scan(&repo, uri, &db, &last, deep, 0);
            assert_eq!(report["findings"], serde_json::json!([]), "{report}");
        }
    });
    // Documents that only the oplog ranges hold are lost: 106 (inserted after the full
    // dump), 500 (by the transaction) from `c` (`a` renamed), and b's only document.
    m.run(
        &db,
        doc! {"delete": "c", "deletes": [{"q": {"_id": {"$in": [106, 500]}}, "limit": 0}]},
    );
    m.run(
        &db,
        doc! {"delete": "b", "deletes": [{"q": {}, "limit": 0}]},
    );
    let deep = scan(&repo, uri, &db, &last, true, 4);
    let missing = |ns: &str| {
        let findings = deep["findings"].as_array().unwrap();
        let f = findings.iter().find(|f| f["ns"] == format!("{db}.{ns}"));
        let ids = f.map(|f| f["missing"]["ids"].as_array().unwrap().clone());
        let mut ids = ids.unwrap_or_else(|| panic!("no finding for {ns}: {deep}"));
        ids.sort_by_key(|i| i.to_string());
        ids
    };
    assert_eq!(missing("c"), ["106", "500"], "{deep}");
    assert_eq!(missing("b"), ["\"new\""], "{deep}");
    assert_eq!(deep["findings"].as_array().unwrap().len(), 2, "{deep}");
    let counted = scan(&repo, uri, &db, &last, false, 4);
    let fell = |ns: &str| {
        let findings = counted["findings"].as_array().unwrap();
        let f = findings.iter().find(|f| f["ns"] == format!("{db}.{ns}"));
        f.map(|f| (f["snapshot_count"].clone(), f["live_count"].clone()))
    };
    let c_docs = m.count(&db, "c");
    assert_eq!(
        fell("c"),
        Some(((c_docs + 2).into(), c_docs.into())),
        "{counted}"
    );
    assert_eq!(fell("b"), Some((1.into(), 0.into())), "{counted}");
}

#[test]
fn consolidate_writes_a_full_dump_of_an_incremental_one_that_restores_and_continues() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("inc_cons");
    seed(&m, &db);
    let repo = fast_repo();
    let full = backup(&repo, uri, &db);
    let refused = run_expect(&repo, ["mongo", "consolidate", &snapshot_id(&full)], 1);
    let why = common::stderr(&refused);
    assert!(why.contains("already a full one"), "{why}");
    let mut last = String::new();
    scripted_changes(&m, &db, &mut |_| {
        last = snapshot_id(&backup(&repo, uri, &db))
    });
    let want = m.state(&db);
    let (_, made) = json_expect(&repo, ["mongo", "consolidate", &last], 0);
    let consolidated = made["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(made["from"], Value::from(last.clone()), "{made}");
    assert!(made["oplog_entries"].as_u64().unwrap() > 0, "{made}");
    let listed = json_expect(&repo, ["snapshots"], 0).1;
    let mine = (listed.as_array().unwrap().iter())
        .find(|s| s["id"] == consolidated.as_str())
        .unwrap_or_else(|| panic!("{consolidated} not listed: {listed}"));
    let chain = &mine["sources"][0]["chain"];
    assert!(chain["incremental"].is_null(), "a full dump: {chain}");
    assert_eq!(chain["oplog_bytes"], 0, "{chain}");
    assert!(
        mine["tags"]
            .as_array()
            .unwrap()
            .contains(&"consolidated".into()),
        "{mine}"
    );
    // Computed without the server, it restores to the state the incremental one holds.
    let got = restored_state(&repo, &m, uri, &db, &consolidated);
    assert_same_state(&want, &got, "the consolidated snapshot");
    run_expect(&repo, ["check", "--read-data"], 0);
    // The next backup continues the consolidated dump.
    m.insert(&db, "c", vec![doc! {"_id": 9000, "v": "after"}]);
    let next = backup(&repo, uri, &db);
    assert_eq!(next["mongodb"]["incremental"]["depth"], 1, "{next}");
    assert_eq!(
        next["mongodb"]["incremental"]["base"],
        Value::from(consolidated),
        "{next}"
    );
    let got = restored_state(&repo, &m, uri, &db, &snapshot_id(&next));
    assert_same_state(&m.state(&db), &got, "the backup after the consolidated one");
}

#[test]
fn a_rolled_over_oplog_makes_the_next_backup_full_and_earlier_ones_still_restore() {
    if common::mongo::is_external() {
        // An external server's oplog cannot be made to roll over from here.
        return;
    }
    let server = Server::start(&["--oplog-max-entries", "30"]);
    let (uri, m) = (server.uri.as_str(), Mongo::new(&server.uri));
    seed(&m, "r");
    let repo = fast_repo();
    backup(&repo, uri, "r");
    m.run(
        "r",
        doc! {"update": "a", "updates": [{"q": {"_id": 7}, "u": {"$set": {"v": "new"}}}]},
    );
    let inc = backup(&repo, uri, "r");
    assert_eq!(inc["mongodb"]["incremental"]["depth"], 1, "{inc}");
    let want = m.state("r");
    // SecantusDB prunes its oplog after every 1000 single-document writes.
    for i in 0..1100 {
        m.insert("other", "c", vec![doc! {"_id": i}]);
    }
    let oplog = m
        .client
        .database("local")
        .collection::<bson::Document>("oplog.rs");
    let start = Instant::now();
    while m.block(oplog.count_documents(doc! {})).unwrap() > 1000 {
        assert!(start.elapsed().as_secs() < 60, "the oplog was not pruned");
        std::thread::sleep(Duration::from_millis(200));
    }
    let full = backup(&repo, uri, "r");
    assert!(full["mongodb"]["incremental"].is_null(), "{full}");
    let reason = full["mongodb"]["full_reason"].as_str().unwrap();
    assert!(reason.contains("rolled over"), "{reason}");
    let got = restored_state(&repo, &m, uri, "r", &snapshot_id(&inc));
    assert_same_state(
        &want,
        &got,
        "the incremental snapshot from before the roll-over",
    );
}

#[test]
fn full_every_and_full_bound_the_chain() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("bound");
    seed(&m, &db);
    let repo = fast_repo();
    let every = |n: &str| {
        let args = [
            "backup",
            "--mongo",
            uri,
            "--mongo-db",
            &db,
            "--full-every",
            n,
        ];
        json_expect(&repo, args, 0).1
    };
    assert!(every("2")["mongodb"]["incremental"].is_null());
    assert_eq!(every("2")["mongodb"]["incremental"]["depth"], 1);
    let third = every("2");
    assert!(third["mongodb"]["incremental"].is_null(), "{third}");
    let reason = third["mongodb"]["full_reason"].as_str().unwrap();
    assert!(reason.contains("--full-every 2"), "{reason}");
    let args = ["backup", "--mongo", uri, "--mongo-db", &db, "--full"];
    let asked = json_expect(&repo, args, 0).1;
    assert!(
        asked["mongodb"]["full_reason"]
            .as_str()
            .unwrap()
            .contains("--full")
    );
    let other_scope = ["backup", "--mongo", uri, "--ns-include", &format!("{db}.a")];
    let scoped = json_expect(&repo, other_scope, 0).1;
    assert!(
        scoped["mongodb"]["incremental"].is_null(),
        "other namespaces: {scoped}"
    );
    m.drop_db(&db);
}

#[test]
fn a_backup_killed_while_reading_the_oplog_leaves_no_snapshot_and_the_next_one_works() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("killed");
    seed(&m, &db);
    let repo = fast_repo();
    backup(&repo, uri, &db);
    // Incompressible documents, so that packs fill (and appear) while the oplog is read.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = || {
        (0..125)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    for round in 0..10 {
        let docs = (0..2000).map(|i| doc! {"_id": format!("{round}-{i}"), "pad": noise()});
        m.insert(&db, "big", docs.collect());
    }
    let count = |repo: &TestRepo| {
        json_expect(repo, ["snapshots"], 0)
            .1
            .as_array()
            .unwrap()
            .len()
    };
    let before = count(&repo);
    let mut child = repo.cmd(backup_args(uri, &db)).spawn().unwrap();
    let packs = |repo: &TestRepo| common::e2e::packs_by_size(&repo.repo_path()).len();
    let (started, packs_before) = (Instant::now(), packs(&repo));
    while packs(&repo) == packs_before && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the backup was killed");
    // Killed while it read the oplog, it wrote no snapshot; a kill that came only after
    // its snapshot was saved (a loaded machine) leaves that complete snapshot, which the
    // check below then covers.
    let after = count(&repo);
    assert!(
        after == before || after == before + 1,
        "{before} then {after}"
    );
    if after == before + 1 {
        eprintln!("the kill came after the snapshot was saved");
    }
    run_expect(&repo, ["check"], 0);
    let next = backup(&repo, uri, &db);
    assert!(
        next["mongodb"]["incremental"]["depth"].as_u64().is_some(),
        "{next}"
    );
    let want = m.state(&db);
    let got = restored_state(&repo, &m, uri, &db, &snapshot_id(&next));
    assert_same_state(&want, &got, "the backup after the killed one");
    m.drop_db(&db);
}

#[test]
fn an_incremental_backup_takes_the_oplog_mongo_follow_archived_and_reads_only_the_rest() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("archived");
    seed(&m, &db);
    let repo = fast_repo();
    backup(&repo, uri, &db);
    let update = |ids: std::ops::Range<i32>, v: &str| {
        let updates: Vec<bson::Document> = ids
            .map(|i| doc! {"q": {"_id": i}, "u": {"$set": {"v": v}}})
            .collect();
        m.run(&db, doc! {"update": "a", "updates": updates});
    };
    update(0..40, "archived");
    run_expect(&repo, ["mongo", "follow", uri, "--once"], 0);
    update(1000..1005, "after the archive");
    let inc = backup(&repo, uri, &db);
    let report = &inc["mongodb"];
    assert_eq!(report["incremental"]["depth"], 1, "{inc}");
    let archived = report["oplog_archived_entries"].as_u64().unwrap();
    let entries = report["oplog_entries"].as_u64().unwrap();
    assert!(
        archived >= 40,
        "the 40 archived updates came from the archive: {report}"
    );
    assert!(
        entries >= archived + 5,
        "the 5 later ones from the server: {report}"
    );
    let got = restored_state(&repo, &m, uri, &db, &snapshot_id(&inc));
    assert_same_state(
        &m.state(&db),
        &got,
        "an incremental snapshot partly from the archive",
    );
    m.drop_db(&db);
}
