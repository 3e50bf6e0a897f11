//! What changed in a MongoDB database between two dumps of one chain, per collection: the
//! later dump's `oplog.bson` holds every entry since the earlier one, so counting them needs
//! no server and no comparison of documents.
use super::connection::from_ts;
use super::{Result, stream};
use crate::cancel::Cancel;
use crate::repo::id::SnapshotId;
use crate::repo::repository::IndexedRepo;
use crate::repo::snapshot::{BsonTime, Snapshot, Source};
use crate::vfs;
use bson::{Bson, Document};
use serde::Serialize;
use std::collections::BTreeMap;

/// Writes to one collection: oplog entries by kind (a document written twice counts twice).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NsChanges {
    pub ns: String,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

/// The changes between two dumps, `(from, to]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MongoChanges {
    pub from: BsonTime,
    pub to: BsonTime,
    pub namespaces: Vec<NsChanges>,
    /// Commands (create, drop, rename, index builds…), counted together.
    pub commands: u64,
}

/// The chain's full dump and the cluster time of a snapshot's MongoDB dump, if it has one in
/// a chain.
fn chain_point(id: SnapshotId, s: &Snapshot) -> Option<(SnapshotId, BsonTime)> {
    match s.mongodb()? {
        Source::MongoDB {
            cluster_time: Some(t),
            consistent: true,
            chain: Some(chain),
            ..
        } => Some((chain.incremental.map_or(id, |i| i.base), *t)),
        _ => None,
    }
}

/// The writes from `before`'s dump to `after`'s when both are in one chain and `after` is
/// the later; None otherwise.
pub fn between(
    repo: &IndexedRepo,
    before: (SnapshotId, &Snapshot),
    after: (SnapshotId, &Snapshot),
    cancel: &Cancel,
) -> Result<Option<MongoChanges>> {
    let (Some((base_a, from)), Some((base_b, to))) = (
        chain_point(before.0, before.1),
        chain_point(after.0, after.1),
    ) else {
        return Ok(None);
    };
    if base_a != base_b || from > to {
        return Ok(None);
    }
    let mut counts = Counts::default();
    // A consistent dump in a chain always holds its oplog, even when it is empty.
    let node = vfs::node_at(repo, after.1.tree, b"/mongodb/oplog.bson")?;
    stream::for_each_document(repo, &node, "/mongodb/oplog.bson", cancel, &mut |entry| {
        let ts = entry.get_timestamp("ts").map(from_ts).ok();
        if ts.is_some_and(|t| t > from && t <= to) {
            counts.entry(&entry);
        }
        Ok(())
    })?;
    Ok(Some(MongoChanges {
        from,
        to,
        namespaces: counts.by_ns.into_values().collect(),
        commands: counts.commands,
    }))
}

#[derive(Default)]
struct Counts {
    by_ns: BTreeMap<String, NsChanges>,
    commands: u64,
}

impl Counts {
    /// Counts an entry, and the operations inside `applyOps` (transactions) one by one.
    fn entry(&mut self, e: &Document) {
        let op = e.get_str("op").unwrap_or_default();
        if op == "c" {
            return self.command(e);
        }
        if !matches!(op, "i" | "u" | "d") {
            return;
        }
        let ns = e.get_str("ns").unwrap_or_default();
        let n = (self.by_ns.entry(ns.to_string())).or_insert_with(|| NsChanges {
            ns: ns.to_string(),
            ..NsChanges::default()
        });
        match op {
            "i" => n.inserted += 1,
            "u" => n.updated += 1,
            _ => n.deleted += 1,
        }
    }

    fn command(&mut self, e: &Document) {
        match e
            .get_document("o")
            .ok()
            .and_then(|o| o.get_array("applyOps").ok())
        {
            Some(ops) => ops
                .iter()
                .filter_map(Bson::as_document)
                .for_each(|op| self.entry(op)),
            None => self.commands += 1,
        }
    }
}
