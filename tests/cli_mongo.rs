//! End-to-end tests of `backup --mongo` and `restore --mongo` against a SecantusDB server
//! (or `$MONGODB_URI`): layout, basic round trip, and bad input.
mod common;

use bson::doc;
use common::e2e::{fast_repo, json_expect, run_expect};
use common::mongo::{Mongo, Server, renamed_restore, shared, unique_db};
use common::stdout;

#[test]
fn backup_layout_and_restore_round_trip() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("layout");
    m.insert(
        &db,
        "users",
        (0..500)
            .map(|i| doc! {"_id": i, "name": format!("u{i}")})
            .collect(),
    );
    m.run(
        &db,
        doc! {"create": "v", "viewOn": "users", "pipeline": [{"$match": {"_id": 1}}]},
    );
    let repo = fast_repo();
    let (_, report) = json_expect(&repo, ["backup", "--mongo", uri, "--mongo-db", &db], 0);
    let mongo = &report["mongodb"];
    assert_eq!(mongo["collections"][0]["documents"], 500, "{report:#}");
    assert!(mongo["cluster_time"].is_object(), "{report:#}");
    let ls = stdout(&run_expect(
        &repo,
        ["ls", "latest", &format!("/mongodb/{db}")],
        0,
    ));
    for f in ["users.bson", "users.metadata.json", "v.metadata.json"] {
        assert!(ls.contains(f), "{f} missing in {ls}");
    }
    let meta = stdout(&run_expect(
        &repo,
        ["cat", "latest", &format!("/mongodb/{db}/v.metadata.json")],
        0,
    ));
    assert!(meta.contains(r#""viewOn":"users""#), "{meta}");
    let raw = run_expect(
        &repo,
        ["cat", "latest", &format!("/mongodb/{db}/users.bson")],
        0,
    )
    .stdout;
    let want: Vec<u8> = m
        .raw_docs(&db, "users")
        .iter()
        .flat_map(|d| d.as_bytes().to_vec())
        .collect();
    assert_eq!(raw.len(), want.len());

    let target = unique_db("layout_copy");
    let (_, r) = json_expect(&repo, renamed_restore(uri, &db, &target), 0);
    assert_eq!(r["total"]["inserted"], 500, "{r:#}");
    assert_eq!(m.raw_docs(&target, "users"), m.raw_docs(&db, "users"));
    assert_eq!(m.collections(&target).len(), 2);
}

#[test]
fn standalone_server_needs_no_consistency() {
    let server = Server::start(&["--standalone"]);
    let m = Mongo::new(&server.uri);
    m.insert("solo", "c", vec![doc! {"_id": 1}]);
    let repo = fast_repo();
    let out = run_expect(&repo, ["backup", "--mongo", &server.uri], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no oplog") && err.contains("--no-consistency"),
        "{err}"
    );
    let (_, r) = json_expect(
        &repo,
        ["backup", "--mongo", &server.uri, "--no-consistency"],
        0,
    );
    assert_eq!(r["mongodb"]["collections"][0]["documents"], 1, "{r:#}");
}

#[test]
fn unreachable_server_and_wrong_credentials_fail_clearly() {
    let repo = fast_repo();
    let dead = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500";
    let out = run_expect(&repo, ["backup", "--mongo", dead], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to MongoDB at 127.0.0.1:1"),
        "{err}"
    );
    let (uri, _server) = match common::mongo::is_external() {
        true => (shared().to_string(), None),
        false => {
            let s = Server::start(&["--auth"]);
            (s.uri.clone(), Some(s))
        }
    };
    let wrong = uri.replacen("mongodb://", "mongodb://nobody:wrong@", 1);
    let out = run_expect(&repo, ["backup", "--mongo", &wrong], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && !err.contains("wrong@"),
        "{err}"
    );
    assert!(
        repo.json(["snapshots"]).as_array().unwrap().is_empty(),
        "no snapshot written"
    );
}

#[test]
fn namespace_filters_that_match_nothing_are_errors() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("filters");
    m.insert(&db, "a", vec![doc! {"_id": 1}]);
    let repo = fast_repo();
    let out = run_expect(
        &repo,
        ["backup", "--mongo", uri, "--ns-include", "no_such_db.*"],
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("match no"));
    run_expect(
        &repo,
        ["backup", "--mongo", uri, "--ns-include", &format!("{db}.*")],
        0,
    );
    let out = run_expect(
        &repo,
        [
            "restore",
            "latest",
            "--mongo",
            uri,
            "--ns-include",
            "nope.*",
        ],
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("match no"));
    let out = run_expect(
        &repo,
        ["restore", "latest", "--mongo", uri, "--ns-from", "a.*"],
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ns-to"));
}

#[test]
fn conflicting_options_stop_the_restore_and_modes_count_per_namespace() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("modes");
    m.insert(
        &db,
        "a",
        (0..10).map(|i| doc! {"_id": i, "v": "old"}).collect(),
    );
    m.insert(&db, "b", vec![doc! {"_id": 1}]);
    let repo = fast_repo();
    run_expect(&repo, ["backup", "--mongo", uri, "--mongo-db", &db], 0);
    let target = unique_db("modes_target");
    let rename = [
        "--ns-from".to_string(),
        format!("{db}.*"),
        "--ns-to".to_string(),
        format!("{target}.*"),
    ];
    let restore = |extra: &[&str], want: i32| {
        let mut args = vec!["restore", "latest", "--mongo", uri];
        args.extend(rename.iter().map(String::as_str));
        args.extend(extra);
        json_expect(&repo, args, want).1
    };
    // Not a capped collection: SecantusDB 0.7.0b3 has been seen to bring a dropped capped
    // collection's documents back (see the issue 5 note).
    m.run(
        &target,
        doc! {"create": "a", "validator": {"v": {"$exists": true}}},
    );
    m.insert(&target, "a", vec![doc! {"_id": 1, "v": "keep"}]);
    let out = repo.run([
        "restore", "latest", "--mongo", uri, &rename[0], &rename[1], &rename[2], &rename[3],
    ]);
    assert_eq!(common::e2e::code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{target}.a")) && err.contains("differ"),
        "{err}"
    );
    assert_eq!(m.count(&target, "a"), 1, "nothing dropped without --drop");
    assert_eq!(m.collections(&target).len(), 1, "nothing written");

    let r = restore(&["--drop"], 0);
    assert_eq!(r["total"]["inserted"], 11, "{r}");
    let r = restore(&["--mode", "insert"], 3);
    let a = r["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["ns"] == format!("{target}.a"))
        .unwrap();
    assert_eq!(
        (a["inserted"].as_u64(), a["failed"].as_u64()),
        (Some(0), Some(10)),
        "{r}"
    );
    let r = restore(&["--mode", "skip-existing"], 0);
    assert_eq!(
        (
            r["total"]["skipped"].as_u64(),
            r["total"]["inserted"].as_u64()
        ),
        (Some(11), Some(0)),
        "{r}"
    );
    m.run(
        &target,
        doc! {"delete": "a", "deletes": [{"q": {"_id": 0}, "limit": 1}]},
    );
    m.run(
        &target,
        doc! {"update": "a", "updates": [{"q": {"_id": 1}, "u": {"$set": {"v": "changed"}}}]},
    );
    let r = restore(&["--mode", "upsert"], 0);
    assert_eq!(
        (
            r["total"]["inserted"].as_u64(),
            r["total"]["replaced"].as_u64()
        ),
        (Some(1), Some(10)),
        "{r}"
    );
    assert_eq!(m.raw_docs(&target, "a"), m.raw_docs(&db, "a"));
    let r = restore(&["--dry-run"], 0);
    assert_eq!(r["dry_run"], true, "{r}");
}

/// Bytes a second full backup adds before compression, as a share of the collection, after
/// changing every hundredth document (spread over the whole collection).
fn scattered_change_share(extra_init: &[&str]) -> f64 {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("chunkavg");
    let docs: Vec<bson::Document> = (0..5000)
        .map(|i: i64| doc! {"_id": i, "name": format!("user {i}"), "pad": format!("{:x}", i.wrapping_mul(0x9e37_79b9))})
        .collect();
    m.insert(&db, "c", docs);
    let size: usize = m
        .raw_docs(&db, "c")
        .iter()
        .map(|d| d.as_bytes().len())
        .sum();
    let repo = common::TestRepo::new();
    let mut init = common::e2e::FAST_INIT.to_vec();
    init.extend(extra_init);
    repo.ok(&init);
    run_expect(&repo, ["backup", "--mongo", uri, "--mongo-db", &db], 0);
    let updates: Vec<bson::Document> = (0..50)
        .map(|k: i64| doc! {"q": {"_id": k * 100 + 37}, "u": {"$set": {"name": "changed"}}})
        .collect();
    m.run(&db, doc! {"update": "c", "updates": updates});
    let args = ["backup", "--mongo", uri, "--mongo-db", &db, "--full"];
    let (_, r) = json_expect(&repo, args, 0);
    let raw = r["summary"]["bytes_added_raw"]
        .as_f64()
        .expect("bytes_added_raw");
    raw / size as f64
}

#[test]
fn a_smaller_bson_chunk_average_stores_less_after_scattered_changes() {
    let default = scattered_change_share(&[]);
    let small = scattered_change_share(&["--bson-chunk-kib", "1"]);
    assert!(
        default > 0.7,
        "64 KiB chunks: {default:.3} of the collection"
    );
    assert!(small < 0.5, "1 KiB chunks: {small:.3} of the collection");
    let repo = common::TestRepo::new();
    let out = repo.fail(["init", "--bson-chunk-kib", "0"]);
    assert!(
        common::stderr(&out).contains("--bson-chunk-kib"),
        "{}",
        common::stderr(&out)
    );
}

/// One snapshot holds the files and the database, and one command restores both, with one
/// JSON report holding both parts.
#[test]
fn files_and_mongodb_share_a_snapshot_and_a_restore() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("both");
    m.insert(&db, "c", (0..50).map(|i| doc! {"_id": i}).collect());
    let (repo, src) = common::e2e::init_with_src();
    common::generate_small_tree(&src, 9, 40);
    let src_arg = src.to_str().unwrap();
    let (_, b) = json_expect(
        &repo,
        ["backup", src_arg, "--mongo", uri, "--mongo-db", &db],
        0,
    );
    assert_eq!(b["mongodb"]["collections"][0]["documents"], 50, "{b:#}");
    assert_eq!(repo.json(["snapshots"]).as_array().unwrap().len(), 1);

    let copy = unique_db("both_copy");
    let target = repo.scratch("restored");
    let mut args = renamed_restore(uri, &db, &copy);
    args.extend(["--target".into(), target.to_str().unwrap().into()]);
    let (_, r) = json_expect(&repo, &args, 0);
    assert_eq!(r["mongodb"]["total"]["inserted"], 50, "{r:#}");
    assert!(r["files"]["files"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(m.raw_docs(&copy, "c"), m.raw_docs(&db, "c"));
    let restored = common::e2e::restored_path(&target, &src);
    common::digest::assert_same_digest(
        &common::digest::digest_tree(&src),
        &common::digest::digest_tree(&restored),
        "files restored beside the database",
    );
}
