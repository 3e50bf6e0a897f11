//! End-to-end tests of `strata scan --mongo` against a SecantusDB server (or `$MONGODB_URI`):
//! after a backup, a dropped collection, view and index, deleted and changed documents are
//! found (with `--deep` by `_id`), the printed restore command brings the collection back,
//! and an unreachable server is a clear error.
mod common;

use bson::{Bson, doc};
use common::e2e::{fast_repo, field_array, field_str, json_expect, run_expect, run_printed};
use common::mongo::{Mongo, shared, unique_db};
use common::{TestRepo, stderr, stdout};
use serde_json::Value;

/// Exit code of `scan` when something is missing or changed.
const DIFFERENCES: i32 = 4;

/// A database with two collections (one with two secondary indexes), a view, backed up.
fn backed_up_db(m: &Mongo, uri: &str) -> (TestRepo, String) {
    let db = unique_db("scan");
    let users = (0..200).map(|i| doc! {"_id": i, "name": format!("u{i}"), "n": i});
    m.insert(&db, "users", users.collect());
    let orders = (0..50).map(|i| doc! {"_id": format!("o{i}"), "total": i * 3});
    m.insert(&db, "orders", orders.collect());
    m.run(
        &db,
        doc! {"createIndexes": "users", "indexes": [
            {"key": {"name": 1}, "name": "name_1", "unique": true},
            {"key": {"n": -1}, "name": "n_-1"},
        ]},
    );
    m.run(
        &db,
        doc! {"create": "big", "viewOn": "users", "pipeline": [{"$match": {"n": {"$gt": 100}}}]},
    );
    let repo = fast_repo();
    json_expect(&repo, ["backup", "--mongo", uri, "--mongo-db", &db], 0);
    (repo, db)
}

fn scan_args<'a>(uri: &'a str, db: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["scan", "--mongo", uri, "--mongo-db", db];
    args.extend(extra);
    args
}

/// The finding of `kind` for `ns`.
fn finding<'a>(report: &'a Value, kind: &str, ns: &str) -> &'a Value {
    field_array(report, "findings")
        .iter()
        .find(|f| f["kind"] == kind && f["ns"] == ns)
        .unwrap_or_else(|| panic!("no {kind} finding for {ns} in {report:#}"))
}

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = field_array(list, "ids")
        .iter()
        .map(|i| i.as_str().expect("an id").to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn lost_namespaces_indexes_and_documents_are_found_and_restorable() {
    let uri = shared();
    let m = Mongo::new(uri);
    let (repo, db) = backed_up_db(&m, uri);
    let orders_before = m.raw_docs(&db, "orders");
    let (_, clean) = json_expect(&repo, scan_args(uri, &db, &["--deep"]), 0);
    assert!(field_array(&clean, "findings").is_empty(), "{clean:#}");
    assert_eq!(clean["unchanged"], 3, "{clean:#}");

    m.run(&db, doc! {"drop": "orders"});
    m.run(&db, doc! {"drop": "big"});
    m.run(&db, doc! {"dropIndexes": "users", "index": "name_1"});
    let gone = [3, 17, 150];
    m.run(
        &db,
        doc! {"delete": "users", "deletes": [{"q": {"_id": {"$in": gone.to_vec()}}, "limit": 0}]},
    );
    m.run(
        &db,
        doc! {"update": "users", "updates": [{"q": {"_id": 42}, "u": {"$set": {"name": "changed"}}}]},
    );

    let out = run_expect(&repo, scan_args(uri, &db, &[]), DIFFERENCES);
    let text = stdout(&out);
    for want in [
        format!("missing collection {db}.orders"),
        format!("missing view       {db}.big"),
        format!("missing index      {db}.users: name_1"),
        format!("count fell         {db}.users: 200 in the snapshot, 197 now"),
        format!("--ns-include {db}.orders"),
        format!("--ns-include {db}.users --mode skip-existing"),
        "4 findings, 0 namespaces unchanged".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} missing in:\n{text}");
    }
    assert!(!text.contains("n_-1") && !text.contains("_ids"), "{text}");

    let (_, deep) = json_expect(&repo, scan_args(uri, &db, &["--deep"]), DIFFERENCES);
    let users = finding(&deep, "documents", &format!("{db}.users"));
    assert_eq!(ids(&users["missing"]), ["150", "17", "3"], "{users:#}");
    assert_eq!(ids(&users["changed"]), ["42"], "{users:#}");
    assert_eq!(
        (&users["snapshot_count"], &users["live_count"]),
        (&200.into(), &197.into())
    );
    assert!(
        field_str(users, "restore_command").ends_with("--mode upsert"),
        "{users:#}"
    );
    finding(&deep, "index", &format!("{db}.users"));
    finding(&deep, "view", &format!("{db}.big"));
    let orders = finding(&deep, "collection", &format!("{db}.orders"));
    assert_eq!(orders["snapshot"], deep["snapshot"]);

    run_printed(&repo, field_str(orders, "restore_command"));
    assert_eq!(m.raw_docs(&db, "orders"), orders_before);
    let only_orders = ["--ns-include", &format!("{db}.orders"), "--deep"];
    let (_, rescan) = json_expect(&repo, scan_args(uri, &db, &only_orders), 0);
    assert!(field_array(&rescan, "findings").is_empty(), "{rescan:#}");
    assert_eq!(rescan["unchanged"], 1, "{rescan:#}");

    run_printed(&repo, field_str(users, "restore_command"));
    run_printed(
        &repo,
        field_str(
            finding(&deep, "view", &format!("{db}.big")),
            "restore_command",
        ),
    );
    let (_, all) = json_expect(&repo, scan_args(uri, &db, &["--deep"]), 0);
    assert!(field_array(&all, "findings").is_empty(), "{all:#}");
    assert_eq!(m.count(&db, "users"), 200);
}

#[test]
fn deep_text_lists_twenty_ids_and_a_dropped_database_is_one_finding() {
    let uri = shared();
    let m = Mongo::new(uri);
    let (repo, db) = backed_up_db(&m, uri);
    let gone: Vec<Bson> = (100..130).map(Bson::Int32).collect();
    m.run(
        &db,
        doc! {"delete": "users", "deletes": [{"q": {"_id": {"$in": gone}}, "limit": 0}]},
    );
    let text = stdout(&run_expect(
        &repo,
        scan_args(uri, &db, &["--deep"]),
        DIFFERENCES,
    ));
    assert!(
        text.contains(&format!(
            "documents          {db}.users: 30 missing, 0 changed"
        )),
        "{text}"
    );
    assert!(text.contains(", … and 10 more"), "{text}");
    assert!(!text.contains("changed _ids"), "{text}");

    m.drop_db(&db);
    let (_, r) = json_expect(&repo, scan_args(uri, &db, &[]), DIFFERENCES);
    assert_eq!(field_array(&r, "findings").len(), 1, "{r:#}");
    let lost = finding(&r, "database", &db);
    assert_eq!(field_array(lost, "namespaces").len(), 3, "{lost:#}");
    assert!(field_str(lost, "restore_command").contains(&format!("--ns-include '{db}.*'")));
}

#[test]
fn unreachable_servers_and_missing_snapshots_fail_clearly() {
    let uri = shared();
    let m = Mongo::new(uri);
    let (repo, db) = backed_up_db(&m, uri);
    let dead = "mongodb://u:secret@127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500";
    let out = run_expect(&repo, scan_args(dead, &db, &[]), 1);
    let err = stderr(&out);
    assert!(err.contains("no MongoDB snapshot of 127.0.0.1:1"), "{err}");
    let out = run_expect(&repo, scan_args(dead, &db, &["--snapshot", "latest"]), 1);
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to MongoDB at 127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let out = run_expect(&repo, ["scan", "--mongo", uri, "/some/path"], 2);
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}
