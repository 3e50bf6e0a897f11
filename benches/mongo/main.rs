//! MongoDB benchmark (not a timed test): in one run against one SecantusDB server (or
//! `$MONGODB_URI`), strata's export against a plain driver cursor read of the same
//! collection, strata's restore against plain parallel `insert_many` of the same
//! documents, and the bytes a second snapshot adds after changing 1% of the documents in
//! one contiguous `_id` range and scattered at random.
//!
//! `cargo bench --bench mongo` (documents: `STRATA_BENCH_DOCS`, default 1,000,000).
#[path = "../../tests/common/mongo.rs"]
#[allow(dead_code)]
mod mongo;

use bson::{RawDocumentBuf, doc};
use futures_util::StreamExt;
use mongo::{Mongo, Server};
use std::process::Command;
use std::time::Instant;

const BATCH: usize = 1000;
const PARALLEL: usize = 4;

fn main() {
    let docs: i64 = std::env::var("STRATA_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let own = (!mongo::is_external()).then(|| Server::start(&["--cache-size", "2G"]));
    let uri = own
        .as_ref()
        .map(|s| s.uri.clone())
        .unwrap_or_else(|| std::env::var("MONGODB_URI").unwrap());
    let m = Mongo::new(&uri);
    let db = mongo::unique_db("bench");
    populate(&m, &db, docs);
    let repo = tempfile::tempdir().expect("temp dir");
    strata(
        &repo,
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );

    let (read_secs, bytes) = plain_read(&m, &db);
    let t = Instant::now();
    let first = strata(
        &repo,
        &["backup", "--mongo", &uri, "--mongo-db", &db, "--json"],
    );
    let export_secs = t.elapsed().as_secs_f64();
    let size = bytes as f64;
    println!("collection: {docs} documents, {:.1} MB", size / 1e6);
    println!(
        "plain cursor read: {read_secs:.2}s ({:.1} MB/s)",
        size / 1e6 / read_secs
    );
    println!(
        "strata export:     {export_secs:.2}s ({:.1} MB/s)",
        size / 1e6 / export_secs
    );
    println!(
        "export ratio (plain time / strata time): {:.2}",
        read_secs / export_secs
    );
    println!("first snapshot added {:.1} MB", added(&first) / 1e6);

    let all = m.raw_docs(&db, "c");
    let t = Instant::now();
    plain_insert(&m, &format!("{db}_plain"), all);
    let insert_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    strata(
        &repo,
        &[
            "restore",
            "latest",
            "--mongo",
            &uri,
            "--ns-from",
            &format!("{db}.*"),
            "--ns-to",
            &format!("{db}_strata.*"),
            "--parallel",
            &PARALLEL.to_string(),
            "--batch-size",
            &BATCH.to_string(),
            "--json",
        ],
    );
    let restore_secs = t.elapsed().as_secs_f64();
    println!("plain insert_many ({PARALLEL} parallel batches of {BATCH}): {insert_secs:.2}s");
    println!("strata restore:    {restore_secs:.2}s");
    println!(
        "restore ratio (plain time / strata time): {:.2}",
        insert_secs / restore_secs
    );

    let share = docs / 100;
    bump(&m, &db, &(docs / 2..docs / 2 + share).collect::<Vec<_>>());
    let contiguous = added_both(&strata(
        &repo,
        &["backup", "--mongo", &uri, "--mongo-db", &db, "--json"],
    ));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ids: Vec<i64> = (0..share)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % docs as u64) as i64
        })
        .collect();
    bump(&m, &db, &ids);
    let scattered = added_both(&strata(
        &repo,
        &["backup", "--mongo", &uri, "--mongo-db", &db, "--json"],
    ));
    let first_stored = added(&first);
    for (what, (stored, raw)) in [
        ("contiguous _id range", contiguous),
        ("scattered at random", scattered),
    ] {
        println!(
            "1% changed, {what}: added {:.2} MB stored ({:.2}% of the first snapshot's {:.2} MB), \
             {:.2} MB before compression ({:.2}% of the collection)",
            stored / 1e6,
            100.0 * stored / first_stored,
            first_stored / 1e6,
            raw / 1e6,
            100.0 * raw / size
        );
    }
}

/// Changes the documents with these ids, a batch of point updates at a time.
fn bump(m: &Mongo, db: &str, ids: &[i64]) {
    for batch in ids.chunks(500) {
        let updates: Vec<bson::Document> = batch
            .iter()
            .map(|id| doc! {"q": {"_id": id}, "u": {"$inc": {"n": 1}}})
            .collect();
        m.run(db, doc! {"update": "c", "updates": updates});
    }
}

/// Documents of about 110 bytes with varied content.
fn populate(m: &Mongo, db: &str, docs: i64) {
    let c = m.client.database(db).collection::<bson::Document>("c");
    let batches: Vec<Vec<bson::Document>> = (0..docs)
        .step_by(10_000)
        .map(|start| (start..(start + 10_000).min(docs)).map(|i| doc! {"_id": i, "name": format!("user {i}"), "n": i * 7 % 1000, "tags": ["a", format!("t{}", i % 97)], "pad": format!("{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))}).collect())
        .collect();
    m.block(
        futures_util::stream::iter(batches).for_each_concurrent(PARALLEL, |b| {
            let c = c.clone();
            async move {
                c.insert_many(b).await.expect("populate");
            }
        }),
    );
}

/// A full cursor read of the collection, raw; returns seconds and bytes.
fn plain_read(m: &Mongo, db: &str) -> (f64, u64) {
    let c = m.client.database(db).collection::<RawDocumentBuf>("c");
    let t = Instant::now();
    let bytes = m.block(async {
        let mut cursor = c.find(doc! {}).await.expect("find");
        let mut bytes = 0u64;
        while cursor.advance().await.expect("read") {
            bytes += cursor.current().as_bytes().len() as u64;
        }
        bytes
    });
    (t.elapsed().as_secs_f64(), bytes)
}

fn plain_insert(m: &Mongo, db: &str, docs: Vec<RawDocumentBuf>) {
    let c = m.client.database(db).collection::<RawDocumentBuf>("c");
    let batches: Vec<Vec<RawDocumentBuf>> =
        docs.chunks(BATCH).map(<[RawDocumentBuf]>::to_vec).collect();
    m.block(
        futures_util::stream::iter(batches).for_each_concurrent(PARALLEL, |b| {
            let c = c.clone();
            async move {
                c.insert_many(b).ordered(false).await.expect("insert_many");
            }
        }),
    );
}

fn strata(repo: &tempfile::TempDir, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("STRATA_REPOSITORY", repo.path().join("repo"))
        .env("STRATA_PASSWORD", "bench")
        .env("STRATA_CACHE_DIR", repo.path().join("cache"))
        .output()
        .expect("run strata");
    assert!(
        out.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn added(report: &serde_json::Value) -> f64 {
    report["summary"]["bytes_added"]
        .as_f64()
        .expect("bytes_added")
}

/// Bytes a backup added: (stored, before compression).
fn added_both(report: &serde_json::Value) -> (f64, f64) {
    let raw = report["summary"]["bytes_added_raw"]
        .as_f64()
        .expect("bytes_added_raw");
    (added(report), raw)
}
