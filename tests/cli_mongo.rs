//! End-to-end tests of `backup --mongo` and `restore --mongo` against a SecantusDB server
//! (or `$MONGODB_URI`): layout, basic round trip, and bad input.
mod common;

use bson::doc;
use common::e2e::{fast_repo, json_expect, run_expect};
use common::mongo::{Mongo, Server, shared, unique_db};
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
    let (_, r) = json_expect(
        &repo,
        [
            "restore",
            "latest",
            "--mongo",
            uri,
            "--ns-from",
            &format!("{db}.*"),
            "--ns-to",
            &format!("{target}.*"),
        ],
        0,
    );
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
