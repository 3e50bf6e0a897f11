//! The oplog replay engine against a server, fed mongod's entry formats that SecantusDB
//! does not write itself: multi-entry transactions (`applyOps` with `partialTxn`, prepared
//! transactions committed by `commitTransaction`, aborted ones), nested `applyOps`, `$v:2`
//! diffs, index-build entries, no-ops, and an unknown command.
mod common;

use bson::{Bson, Document, Timestamp, doc};
use common::mongo::{Mongo, shared, unique_db};
use strata::sources::mongodb::replay::Replayer;
use strata::sources::mongodb::{Conn, NsFilter, Renames};

fn entry(i: u32, op: &str, ns: &str, o: Document) -> Document {
    doc! {"ts": Timestamp { time: 1_700_000_000, increment: i }, "op": op, "ns": ns, "o": o}
}

fn txn(mut e: Document, n: i64) -> Document {
    e.insert("lsid", doc! {"id": Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![1; 16] })});
    e.insert("txnNumber", n);
    e
}

#[test]
fn mongod_entry_formats_replay_through_ordinary_commands() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("replay");
    let ns = format!("{db}.t");
    let cmd_ns = format!("{db}.$cmd");
    let conn = Conn::connect(uri).unwrap();
    let (filter, renames) = (NsFilter::default(), Renames::default());
    let mut r = Replayer::new(&conn, &filter, &renames);
    let ins = |id: i32| doc! {"op": "i", "ns": &ns, "o": {"_id": id, "arr": [1, 2, 3]}};

    r.entry(entry(1, "c", &cmd_ns, doc! {"create": "t"}))
        .unwrap();
    r.entry(txn(
        entry(
            2,
            "c",
            "admin.$cmd",
            doc! {"applyOps": [ins(1)], "partialTxn": true},
        ),
        1,
    ))
    .unwrap();
    r.sync().unwrap();
    assert_eq!(
        m.count(&db, "t"),
        0,
        "a partial transaction waits for its commit"
    );
    let nested = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [ins(3)]}};
    r.entry(txn(
        entry(3, "c", "admin.$cmd", doc! {"applyOps": [ins(2), nested]}),
        1,
    ))
    .unwrap();
    r.sync().unwrap();
    assert_eq!(m.count(&db, "t"), 3, "committed with the nested applyOps");

    let mut prepared = txn(entry(4, "c", "admin.$cmd", doc! {"applyOps": [ins(4)]}), 2);
    prepared.insert("prepare", true);
    r.entry(prepared).unwrap();
    r.entry(txn(
        entry(5, "c", "admin.$cmd", doc! {"abortTransaction": 1}),
        2,
    ))
    .unwrap();
    let mut prepared = txn(entry(6, "c", "admin.$cmd", doc! {"applyOps": [ins(5)]}), 3);
    prepared.insert("prepare", true);
    r.entry(prepared).unwrap();
    r.sync().unwrap();
    assert_eq!(m.count(&db, "t"), 3, "prepared transactions wait");
    r.entry(txn(
        entry(7, "c", "admin.$cmd", doc! {"commitTransaction": 1}),
        3,
    ))
    .unwrap();
    r.sync().unwrap();
    assert_eq!(
        m.count(&db, "t"),
        4,
        "the aborted one is dropped, the committed applied"
    );

    let mut upd = entry(
        8,
        "u",
        &ns,
        doc! {"$v": 2, "diff": {"i": {"n": "new"}, "sarr": {"a": true, "l": 2, "u0": 9}}},
    );
    upd.insert("o2", doc! {"_id": 1});
    r.entry(upd).unwrap();
    r.sync().unwrap();
    let doc1 = m.raw_docs(&db, "t").into_iter().next().unwrap();
    let doc1 = Document::try_from(doc1).unwrap();
    assert_eq!(doc1, doc! {"_id": 1, "arr": [9, 2], "n": "new"});

    // Field names with dots: as a `$set` path "a.b" would reach into `a`, not the field.
    m.insert(&db, "t", vec![doc! {"_id": 50, "a.b": 1, "a": {"b": 2}}]);
    let mut dotted = entry(
        8,
        "u",
        &ns,
        doc! {"$v": 2, "diff": {"u": {"a.b": 10}, "i": {"c.d": 3}}},
    );
    dotted.insert("o2", doc! {"_id": 50});
    r.entry(dotted).unwrap();
    let coll = m.client.database(&db).collection::<Document>("t");
    r.sync().unwrap();
    let got = m.block(coll.find_one(doc! {"_id": 50})).unwrap().unwrap();
    assert_eq!(got, doc! {"_id": 50, "a.b": 10, "a": {"b": 2}, "c.d": 3});

    r.entry(entry(
        9,
        "c",
        &cmd_ns,
        doc! {"startIndexBuild": "t", "indexes": [{"v": 2, "key": {"x": 1}, "name": "x_1"}]},
    ))
    .unwrap();
    r.entry(entry(
        10,
        "c",
        &cmd_ns,
        doc! {"commitIndexBuild": "t", "indexes": [{"v": 2, "key": {"x": 1}, "name": "x_1"}]},
    ))
    .unwrap();
    r.entry(entry(
        11,
        "c",
        &cmd_ns,
        doc! {"createIndexes": "t", "v": 2, "key": {"y": 1}, "name": "y_1"},
    ))
    .unwrap();
    r.entry(entry(12, "n", "", doc! {"msg": "periodic noop"}))
        .unwrap();
    let names: Vec<String> = m
        .indexes(&db, "t")
        .iter()
        .map(|i| i.get_str("name").unwrap().to_string())
        .collect();
    assert_eq!(names, ["_id_", "x_1", "y_1"]);

    let err = r
        .entry(entry(13, "c", &cmd_ns, doc! {"frobnicate": "t"}))
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown command \"frobnicate\""),
        "{err}"
    );
}
