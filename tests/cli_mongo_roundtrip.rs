//! Round trip of every BSON type, collection option, index kind, view, time-series and
//! clustered collection, and users through `backup --mongo` and `restore --mongo`: into a
//! fresh server, and into the same server under renamed namespaces.
mod common;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128, Document, Regex, Timestamp, doc, oid::ObjectId};
use common::e2e::{code, fast_repo, json_expect, run_expect};
use common::mongo::{
    Fresh, Mongo, assert_same_state, is_external, renamed_restore, shared, unique_db,
};

fn regex(pattern: &str, options: &str) -> Regex {
    Regex {
        pattern: pattern.try_into().unwrap(),
        options: options.try_into().unwrap(),
    }
}

fn binary(subtype: BinarySubtype) -> Bson {
    Bson::Binary(Binary {
        subtype,
        bytes: (0..16).collect(),
    })
}

/// One document per BSON type family, with the edge values the issue lists.
fn typed_documents() -> Vec<Document> {
    let subtypes = [
        BinarySubtype::Generic,
        BinarySubtype::Function,
        BinarySubtype::BinaryOld,
        BinarySubtype::UuidOld,
        BinarySubtype::Uuid,
        BinarySubtype::Md5,
        BinarySubtype::Encrypted,
        BinarySubtype::Column,
        BinarySubtype::Sensitive,
        BinarySubtype::UserDefined(0x80),
        BinarySubtype::UserDefined(0xfe),
    ];
    vec![
        doc! {"_id": 1, "nan": f64::NAN, "inf": f64::INFINITY, "ninf": f64::NEG_INFINITY, "negz": -0.0, "d": 1.5},
        doc! {"_id": 2, "s": "héllo ✓ 𝄞 漢字", "nul": "a\0b", "empty": ""},
        doc! {"_id": 3, "doc": {"a": {"b": [1, {"c": null}]}}, "arr": [1, "two", [3.0], {"four": 4_i64}], "earr": []},
        doc! {"_id": 4, "bins": subtypes.into_iter().map(binary).collect::<Vec<_>>()},
        doc! {"_id": 5, "oid": ObjectId::parse_str("0123456789abcdef01234567").unwrap(), "t": true, "f": false},
        doc! {"_id": 6, "old": DateTime::from_millis(-2_208_988_800_000), "future": DateTime::from_millis(253_402_300_799_999), "epoch": DateTime::from_millis(0)},
        doc! {"_id": 7, "null": null, "re": regex("^a.*b$", "imsx"), "js": Bson::JavaScriptCode("function() { return 1; }".to_string())},
        doc! {"_id": 8, "i32": i32::MIN, "i32max": i32::MAX, "i64": i64::MIN, "i64max": i64::MAX, "ts": Timestamp { time: 7, increment: 9 }, "sub": {"zero": Timestamp { time: 0, increment: 0 }}},
        doc! {"_id": 9, "dec": Decimal128::from_bytes([0x42; 16]), "min": Bson::MinKey, "max": Bson::MaxKey},
        doc! {"_id": 10, "a.b": "dotted", "$dollar": "leading $"},
        doc! {"_id": "string id"},
        doc! {"_id": {"compound": 1, "key": "x"}},
        doc! {"_id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] }},
    ]
}

/// Creates every kind of namespace in `db`; returns whether text and hashed indexes exist.
fn populate(m: &Mongo, db: &str) -> bool {
    m.insert(db, "types", typed_documents());
    let big = "x".repeat(16 * 1024 * 1024 - 100);
    m.insert(db, "big", vec![doc! {"_id": 1, "s": big}]);
    m.run(db, doc! {"create": "empty"});
    m.run(
        db,
        doc! {"create": "capped", "capped": true, "size": 1_048_576, "max": 100},
    );
    m.insert(db, "capped", (0..150).map(|i| doc! {"_id": i}).collect());
    m.run(db, doc! {"create": "validated", "validator": {"n": {"$type": "int"}}, "validationLevel": "moderate", "validationAction": "error", "collation": {"locale": "fr", "strength": 2}});
    m.insert(db, "validated", vec![doc! {"_id": 1, "n": 5}]);
    m.run(
        db,
        doc! {"create": "v", "viewOn": "types", "pipeline": [{"$match": {"_id": {"$lt": 3}}}]},
    );
    m.run(db, doc! {"create": "ts", "timeseries": {"timeField": "t", "metaField": "m", "granularity": "hours"}});
    m.insert(
        db,
        "ts",
        vec![doc! {"_id": 1, "t": DateTime::from_millis(1_700_000_000_000), "m": "a", "v": 1}],
    );
    m.run(
        db,
        doc! {"create": "cl", "clusteredIndex": {"key": {"_id": 1}, "unique": true}},
    );
    m.insert(db, "cl", (0..10).map(|i| doc! {"_id": i}).collect());
    m.insert(db, "idx", (0..20).map(|i| doc! {"_id": i, "u": i, "p": i % 3, "s": i, "at": DateTime::from_millis(0), "a": i, "b": -i, "loc": {"type": "Point", "coordinates": [i as f64, 1.0]}, "txt": "some words"}).collect());
    let indexes = [
        doc! {"key": {"u": 1}, "name": "unique_u", "unique": true},
        doc! {"key": {"p": 1}, "name": "partial_p", "partialFilterExpression": {"p": {"$gt": 0}}},
        doc! {"key": {"s": 1}, "name": "sparse_s", "sparse": true},
        doc! {"key": {"at": 1}, "name": "ttl_at", "expireAfterSeconds": 3600},
        doc! {"key": {"a": 1, "b": -1}, "name": "compound_ab"},
        doc! {"key": {"loc": "2dsphere"}, "name": "geo"},
    ];
    m.run(
        db,
        doc! {"createIndexes": "idx", "indexes": indexes.to_vec()},
    );
    let mut special = true;
    for spec in [
        doc! {"key": {"txt": "text"}, "name": "text_txt"},
        doc! {"key": {"h": "hashed"}, "name": "hashed_h"},
    ] {
        match m.try_run(db, doc! {"createIndexes": "idx", "indexes": [spec]}) {
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("67") || msg.contains("CannotCreateIndex"),
                    "only code 67 is an accepted refusal: {msg}"
                );
                special = false;
            }
        }
    }
    m.run(db, doc! {"createRole": "app_reader", "privileges": [{"resource": {"db": db, "collection": "types"}, "actions": ["find"]}], "roles": []});
    m.run(db, doc! {"createUser": "app_user", "pwd": "secret", "roles": [{"role": "app_reader", "db": db}]});
    special
}

#[test]
fn every_type_option_index_and_view_round_trips() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("rt");
    let special_indexes = populate(&m, &db);
    if !is_external() {
        assert!(
            !special_indexes,
            "SecantusDB refuses text and hashed indexes (code 67)"
        );
    }
    let want = m.state(&db);
    assert_eq!(want.len(), 9, "{:?}", want.keys());
    let repo = fast_repo();
    let (_, r) = json_expect(
        &repo,
        ["backup", "--mongo", uri, "--mongo-db", &db, "--mongo-users"],
        0,
    );
    assert_eq!(r["mongodb"]["views"], 1, "{r:#}");
    assert!(r["mongodb"]["users"].as_u64().unwrap() >= 1, "{r:#}");
    let users = run_expect(
        &repo,
        ["cat", "latest", "/mongodb/admin/system.users.bson"],
        0,
    )
    .stdout;
    assert!(
        users.windows(8).any(|w| w == b"app_user"),
        "the user is in the dump"
    );

    // Into a fresh server.
    let fresh = Fresh::start();
    if is_external() {
        m.drop_db(&db);
    }
    let (_, r) = json_expect(&repo, ["restore", "latest", "--mongo", fresh.uri()], 0);
    assert_eq!(r["total"]["failed"], 0, "{r:#}");
    assert_same_state(&want, &Mongo::new(fresh.uri()).state(&db), "fresh server");

    // Into the same server, renamed.
    let copy = unique_db("copy");
    let (_, r) = json_expect(&repo, renamed_restore(uri, &db, &copy), 0);
    let docs = want
        .values()
        .filter(|(_, s, _)| s.get_str("type").ok() != Some("view"))
        .map(|(d, _, _)| d.len() as u64)
        .sum::<u64>();
    assert_eq!(r["total"]["inserted"], docs, "{r:#}");
    assert_same_state(&want, &m.state(&copy), "renamed namespaces");

    // Users and roles: restored, or each refusal reported (SecantusDB keeps credentials
    // read-only), with the role restored either way.
    let users_target = Fresh::start();
    let out = repo.run([
        "restore",
        "latest",
        "--mongo",
        users_target.uri(),
        "--mongo-users",
        "--ns-include",
        &format!("{db}.empty"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let target = Mongo::new(users_target.uri());
    let roles = target.run(&db, doc! {"rolesInfo": "app_reader"});
    assert_eq!(
        roles.get_array("roles").unwrap().len(),
        1,
        "role restored: {roles}"
    );
    let users = target.run(&db, doc! {"usersInfo": "app_user"});
    match code(&out) {
        0 => assert_eq!(users.get_array("users").unwrap().len(), 1, "{users}"),
        3 => assert!(
            stderr.contains("app_user"),
            "the refused user is named: {stderr}"
        ),
        other => panic!("exit {other}: {stderr}"),
    }
}
