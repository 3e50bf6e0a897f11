//! Consistency: while a writer keeps inserting, updating and deleting, `backup --mongo`
//! records a cluster time, and the restore equals the server's state at that time (the
//! initial documents plus exactly the writes at or before it).
mod common;

use bson::{Document, doc};
use common::e2e::{fast_repo, json_expect};
use common::mongo::{Mongo, renamed_restore, shared, unique_db};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

const INITIAL: i64 = 20_000;

/// One write of the writer and the cluster time the server gave it.
struct Write {
    time: (u32, u32),
    id: i64,
    value: Option<i64>,
}

/// Writes until `stop`, recording each write's operation time.
fn writer(uri: &str, db: &str, stop: &AtomicBool) -> Vec<Write> {
    let m = Mongo::new(uri);
    let coll = m.client.database(db).collection::<Document>("c");
    let mut session = m.block(m.client.start_session()).unwrap();
    let mut log = Vec::new();
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) || log.len() < 20 {
        i += 1;
        let (id, value) = match i % 3 {
            0 => {
                let id = INITIAL + i;
                m.block(
                    coll.insert_one(doc! {"_id": id, "v": i})
                        .session(&mut session),
                )
                .unwrap();
                (id, Some(i))
            }
            1 => {
                let id = (i * 7919) % INITIAL;
                m.block(
                    coll.update_one(doc! {"_id": id}, doc! {"$set": {"v": i}})
                        .session(&mut session),
                )
                .unwrap();
                (id, Some(i))
            }
            _ => {
                let id = (i * 104_729) % INITIAL;
                m.block(coll.delete_one(doc! {"_id": id}).session(&mut session))
                    .unwrap();
                (id, None)
            }
        };
        let t = session.operation_time().expect("an operation time");
        log.push(Write {
            time: (t.time, t.increment),
            id,
            value,
        });
    }
    log
}

#[test]
fn restore_equals_the_state_at_the_recorded_cluster_time() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("consistency");
    let pad = "p".repeat(1000);
    for start in (0..INITIAL).step_by(5000) {
        m.insert(
            &db,
            "c",
            (start..start + 5000)
                .map(|i| doc! {"_id": i, "v": 0_i64, "pad": &pad})
                .collect(),
        );
    }
    let repo = fast_repo();
    let stop = AtomicBool::new(false);
    let (report, log) = std::thread::scope(|s| {
        let w = s.spawn(|| writer(uri, &db, &stop));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (_, report) = json_expect(
            &repo,
            [
                "backup",
                "--mongo",
                uri,
                "--mongo-db",
                &db,
                "--mongo-parallel",
                "1",
            ],
            0,
        );
        stop.store(true, Ordering::Relaxed);
        (report, w.join().unwrap())
    });
    let mongo = &report["mongodb"];
    let at = (
        mongo["cluster_time"]["t"].as_u64().unwrap() as u32,
        mongo["cluster_time"]["i"].as_u64().unwrap() as u32,
    );
    assert!(
        mongo["oplog_entries"].as_u64().unwrap() > 0,
        "writes ran during the export: {report:#}"
    );
    assert!(
        log.iter().any(|w| w.time > at),
        "writes continued after the recorded time"
    );

    let mut want: BTreeMap<i64, i64> = (0..INITIAL).map(|i| (i, 0)).collect();
    for w in log.iter().filter(|w| w.time <= at) {
        match w.value {
            Some(v) if w.id >= INITIAL || want.contains_key(&w.id) => {
                want.insert(w.id, v);
            }
            Some(_) => {}
            None => {
                want.remove(&w.id);
            }
        }
    }
    let copy = unique_db("consistency_copy");
    json_expect(&repo, renamed_restore(uri, &db, &copy), 0);
    let got: BTreeMap<i64, i64> = m
        .raw_docs(&copy, "c")
        .iter()
        .map(|d| (d.get_i64("_id").unwrap(), d.get_i64("v").unwrap()))
        .collect();
    assert_eq!(got.len(), want.len(), "document count at the recorded time");
    let diff: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .take(5)
        .collect();
    assert!(
        diff.is_empty(),
        "documents differ from the state at {at:?}: {diff:?}"
    );
}
