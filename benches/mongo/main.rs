//! MongoDB benchmark (not a timed test): in one run against one SecantusDB server (or
//! `$MONGODB_URI`), strata's export against a plain driver cursor read of the same
//! collection, strata's restore against plain parallel `insert_many` of the same
//! documents, and the bytes a second snapshot adds after changing 1% of the documents in
//! one contiguous `_id` range and scattered at random.
//!
//! `cargo bench --bench mongo` (documents: `STRATA_BENCH_DOCS`, default 1,000,000; the test
//! server's oplog capped at `STRATA_BENCH_OPLOG_ENTRIES` entries when set; only the chain
//! with `STRATA_BENCH_ONLY=chain`).
//! The restore comparison alternates plain, strata, strata, plain into fresh databases,
//! dropped after each run, so that neither side gains from running on an emptier server.
//! The dedup figures are taken with the default 64 KiB and with 4 KiB BSON chunks, with full
//! dumps. Last, a chain of a full snapshot and seven incremental ones, 1% of the documents
//! changed at random before each: per incremental snapshot the bytes stored and read from the
//! server against the full export's, and its time; then the restore of the chain's last
//! snapshot against the restore of a full snapshot of the same data. After each incremental
//! backup, the server's answer to a query like its oplog query is timed on its own: the part
//! of the backup's time that no client can save.
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
    // A production oplog is capped; SecantusDB's oplog queries scan all of it, so its size
    // sets what reading a range of it costs (`STRATA_BENCH_OPLOG_ENTRIES`, default uncapped).
    let cap = std::env::var("STRATA_BENCH_OPLOG_ENTRIES").ok();
    let mut flags = vec!["--cache-size", "2G"];
    if let Some(entries) = &cap {
        flags.extend(["--oplog-max-entries", entries.as_str()]);
    }
    let own = (!mongo::is_external()).then(|| Server::start(&flags));
    let uri = own
        .as_ref()
        .map(|s| s.uri.clone())
        .unwrap_or_else(|| std::env::var("MONGODB_URI").unwrap());
    let m = Mongo::new(&uri);
    let db = mongo::unique_db("bench");
    populate(&m, &db, docs);
    if std::env::var("STRATA_BENCH_ONLY").is_ok_and(|v| v == "chain") {
        let size = m
            .raw_docs(&db, "c")
            .iter()
            .map(|d| d.as_bytes().len())
            .sum::<usize>();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        return incremental_chain(&uri, &m, &db, &mut x, size as f64);
    }
    let repo = Repo::new(&[]);

    let (read_a, bytes) = plain_read(&m, &db);
    let (first, export_secs) = timed(|| repo.backup(&uri, &db, true));
    let (_, export_plain_secs) = timed(|| repo.backup(&uri, &db, false));
    let (read_b, _) = plain_read(&m, &db);
    let read_secs = (read_a + read_b) / 2.0;
    let size = bytes as f64;
    println!("collection: {docs} documents, {:.1} MB", size / 1e6);
    let rate = |secs: f64| format!("{secs:.2}s ({:.1} MB/s)", size / 1e6 / secs);
    println!(
        "plain cursor read (mean of one before and one after): {}",
        rate(read_secs)
    );
    println!(
        "strata export, collections only (--no-consistency): {}",
        rate(export_plain_secs)
    );
    println!("strata export with the oplog window: {}", rate(export_secs));
    println!(
        "export ratio, collections (plain time / strata time): {:.2}",
        read_secs / export_plain_secs
    );
    println!(
        "export ratio, with the oplog window: {:.2}",
        read_secs / export_secs
    );
    println!("first snapshot added {:.1} MB", added(&first) / 1e6);

    let all = m.raw_docs(&db, "c");
    // A B B A: the server slows as it fills, so each side gets an early and a late turn.
    let plain = |n: usize| {
        let target = format!("{db}_plain{n}");
        let secs = timed(|| plain_insert(&m, &target, all.clone())).1;
        m.drop_db(&target);
        secs
    };
    let restore = |n: usize| {
        let target = format!("{db}_strata{n}");
        let secs = timed(|| repo.restore(&uri, &db, &target)).1;
        m.drop_db(&target);
        secs
    };
    let insert_secs = plain(1);
    let restore_secs = restore(1) + restore(2);
    let insert_secs = insert_secs + plain(2);
    println!(
        "plain insert_many ({PARALLEL} parallel batches of {BATCH}), two runs: {insert_secs:.2}s"
    );
    println!("strata restore, two runs:    {restore_secs:.2}s");
    println!(
        "restore ratio (plain time / strata time): {:.2}",
        insert_secs / restore_secs
    );
    drop(all);

    let small = Repo::new(&["--bson-chunk-kib", "4"]);
    let small_first = small.backup(&uri, &db, false);
    let repos = [
        ("64 KiB chunks", &repo, first),
        ("4 KiB chunks", &small, small_first),
    ];
    let share = docs / 100;
    let contiguous: Vec<i64> = (docs / 2..docs / 2 + share).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let scattered = random_ids(&mut x, share, docs);
    for (what, ids) in [
        ("contiguous _id range", contiguous),
        ("scattered at random", scattered),
    ] {
        bump(&m, &db, &ids);
        for (chunks, r, first) in &repos {
            let (stored, raw) = added_both(&r.backup(&uri, &db, false));
            let first_stored = added(first);
            println!(
                "1% changed, {what}, {chunks}: added {:.2} MB stored ({:.2}% of the first \
                 snapshot's {:.2} MB), {:.2} MB before compression ({:.2}% of the collection)",
                stored / 1e6,
                100.0 * stored / first_stored,
                first_stored / 1e6,
                raw / 1e6,
                100.0 * raw / size
            );
        }
    }
    incremental_chain(&uri, &m, &db, &mut x, size);
}

/// `n` ids below `docs`, drawn by the xorshift state `x`.
fn random_ids(x: &mut u64, n: i64, docs: i64) -> Vec<i64> {
    (0..n)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            (*x % docs as u64) as i64
        })
        .collect()
}

/// Bytes an export read from the server: documents and oplog entries.
fn read_from_server(report: &serde_json::Value) -> f64 {
    let m = &report["mongodb"];
    let docs: f64 = (m["collections"].as_array().expect("collections").iter())
        .map(|c| c["bytes"].as_f64().expect("bytes"))
        .sum();
    docs + m["oplog_bytes"].as_f64().expect("oplog_bytes")
}

/// A full snapshot and seven incremental ones, 1% changed at random before each; then the
/// restore of the last against a full snapshot of the same data (A B B A).
fn incremental_chain(uri: &str, m: &Mongo, db: &str, x: &mut u64, size: f64) {
    let docs = m.count(db, "c") as i64;
    let repo = Repo::new(&[]);
    let chained = [
        "backup",
        "--mongo",
        uri,
        "--mongo-db",
        db,
        "--full-every",
        "8",
        "--json",
    ];
    let (full, full_secs) = timed(|| repo.run(&chained));
    let (full_stored, full_read) = (added(&full), read_from_server(&full));
    println!(
        "chain: full snapshot {full_secs:.2}s, stored {:.2} MB, read {:.2} MB from the server",
        full_stored / 1e6,
        full_read / 1e6
    );
    let (mut worst_stored, mut worst_read, mut worst_time) = (0f64, 0f64, 0f64);
    for step in 1..=7 {
        bump(m, db, &random_ids(x, docs / 100, docs));
        let (inc, secs) = timed(|| repo.run(&chained));
        assert_eq!(inc["mongodb"]["incremental"]["depth"], step, "{inc}");
        let (stored, raw) = added_both(&inc);
        let read = read_from_server(&inc);
        println!(
            "chain: incremental {step}: {secs:.2}s ({:.1}% of the full export's time), stored \
             {:.3} MB ({:.2}% of the collection; {:.3} MB before compression), read {:.2} MB \
             from the server ({:.2}% of the full export's)",
            100.0 * secs / full_secs,
            stored / 1e6,
            100.0 * stored / size,
            raw / 1e6,
            read / 1e6,
            100.0 * read / full_read
        );
        let query = oplog_query_secs(m, &inc);
        println!(
            "chain: incremental {step}: the server's answer to its one oplog query, timed \
             alone afterwards: {query:.2}s ({:.1}% of the full export's time)",
            100.0 * query / full_secs
        );
        worst_stored = worst_stored.max(stored / size);
        worst_read = worst_read.max(read / full_read);
        worst_time = worst_time.max(secs / full_secs);
    }
    println!(
        "chain: worst incremental: stored {:.2}% of the collection, read {:.2}% of the full \
         export's bytes, took {:.1}% of its time",
        100.0 * worst_stored,
        100.0 * worst_read,
        100.0 * worst_time
    );
    let last = repo.latest();
    let full_now = Repo::new(&[]);
    full_now.run(&[
        "backup",
        "--mongo",
        uri,
        "--mongo-db",
        db,
        "--full",
        "--json",
    ]);
    let restore = |r: &Repo, n: usize| {
        let target = format!("{db}_chain{n}");
        let secs = timed(|| r.restore(uri, db, &target)).1;
        m.drop_db(&target);
        secs
    };
    let full_restore = restore(&full_now, 1);
    let chain_restore = restore(&repo, 2) + restore(&repo, 3);
    let full_restore = full_restore + restore(&full_now, 4);
    println!(
        "chain: restore of incremental 7 ({}), two runs: {chain_restore:.2}s; of a full \
         snapshot of the same data, two runs: {full_restore:.2}s; ratio {:.2}",
        &last[..8],
        chain_restore / full_restore
    );
}

/// Seconds the server takes to answer a query like the one an incremental backup makes: every
/// oplog entry from the parent's cluster time on (the backup starts at the parent's last
/// entry, at or just before it; SecantusDB reads its whole oplog for either).
fn oplog_query_secs(m: &Mongo, report: &serde_json::Value) -> f64 {
    let from = &report["mongodb"]["incremental"]["from"];
    let ts = bson::Timestamp {
        time: from["t"].as_u64().expect("from.t") as u32,
        increment: from["i"].as_u64().expect("from.i") as u32,
    };
    let oplog = m
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    timed(|| {
        m.block(async {
            let mut cursor = oplog.find(doc! {"ts": {"$gte": ts}}).await.expect("find");
            while cursor.advance().await.expect("read") {}
        })
    })
    .1
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
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

/// A repository in a temporary directory and the strata commands the benchmark runs on it.
struct Repo(tempfile::TempDir);

impl Repo {
    fn new(init: &[&str]) -> Repo {
        let repo = Repo(tempfile::tempdir().expect("temp dir"));
        let mut args = vec!["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"];
        args.extend(init);
        repo.run(&args);
        repo
    }

    fn backup(&self, uri: &str, db: &str, consistent: bool) -> serde_json::Value {
        let mut args = vec!["backup", "--mongo", uri, "--mongo-db", db, "--json"];
        if !consistent {
            args.push("--no-consistency");
        }
        self.run(&args)
    }

    fn restore(&self, uri: &str, db: &str, target: &str) -> serde_json::Value {
        let (parallel, batch) = (PARALLEL.to_string(), BATCH.to_string());
        let (from, to) = (format!("{db}.*"), format!("{target}.*"));
        self.run(&[
            "restore",
            "latest",
            "--mongo",
            uri,
            "--ns-from",
            &from,
            "--ns-to",
            &to,
            "--parallel",
            &parallel,
            "--batch-size",
            &batch,
            "--json",
        ])
    }

    /// The newest snapshot's id.
    fn latest(&self) -> String {
        let listed = self.run(&["snapshots", "--json"]);
        let all = listed.as_array().expect("a list");
        all.last().expect("a snapshot")["id"]
            .as_str()
            .expect("an id")
            .to_string()
    }

    fn run(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("STRATA_REPOSITORY", self.0.path().join("repo"))
            .env("STRATA_PASSWORD", "bench")
            .env("STRATA_CACHE_DIR", self.0.path().join("cache"))
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }
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
