//! `strata mongo consolidate`: a full MongoDB dump computed inside strata from a dump of a
//! chain (its base's documents and the oplog since), without the server, so that a chain
//! can be cut without a full read of production. The replayer applies the dump's
//! `oplog.bson` to a local store that understands the commands it sends: documents in a
//! temporary SQLite table by namespace and `_id` (kept in the dump's order, new ones after),
//! collections and views with their options and indexes. What the store cannot model stops
//! the consolidation with its name; nothing is written then.
use super::export::DumpWriter;
use super::import::{self, Dump};
use super::metadata::CollMeta;
use super::namespace::{NsFilter, Renames, file_name, split_ns};
use super::overlay::{id_key, raw_id_key, sql, temp_db, with_id_first};
use super::replay::{Replayer, Target};
use super::{MongoError, Result, stream};
use crate::cancel::Cancel;
use crate::repo::id::SnapshotId;
use crate::repo::locked::Locked;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::{Chain, Snapshot, Source};
use crate::repo::tree::Node;
use crate::write::packer::Packer;
use bson::{Bson, Document, doc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeMap;

/// The tag of a consolidated snapshot.
pub const CONSOLIDATED_TAG: &str = "consolidated";

#[derive(Clone, Debug, Serialize)]
pub struct ConsolidateReport {
    /// The snapshot consolidated, and the new one.
    pub from: SnapshotId,
    pub snapshot_id: SnapshotId,
    /// Oplog entries applied to the base's documents.
    pub oplog_entries: u64,
    pub collections: u64,
    pub views: u64,
    pub documents: u64,
    pub bytes_added: u64,
}

/// Writes a snapshot like `id`'s (its files, host, tags and `consolidated`) whose MongoDB
/// dump is full: the collections as `id`'s dump leaves them at its cluster time, with an
/// empty window, that later backups continue as any full dump.
pub fn consolidate(
    repo: &Locked<'_, IndexedRepo>,
    (id, snap): (SnapshotId, &Snapshot),
    cancel: &Cancel,
) -> Result<ConsolidateReport> {
    let Some(Source::MongoDB {
        server,
        cluster_time: Some(at),
        consistent: true,
        chain: Some(chain),
        ..
    }) = snap.mongodb()
    else {
        return Err(MongoError::NotConsolidable(
            "it holds no consistent MongoDB dump of a chain".into(),
        ));
    };
    if chain.incremental.is_none() {
        return Err(MongoError::NotConsolidable(
            "its MongoDB dump is already a full one".into(),
        ));
    }
    let dump = import::read_dump(repo, snap.tree, &NsFilter::default(), &Renames::default())?;
    let (store, entries) = Store::load(repo, &dump, cancel)?.replay(repo, &dump, cancel)?;
    let packer = Packer::new(repo, false).cancelled_by(cancel);
    let w = DumpWriter::new(&packer);
    let (mongodb, counts) = store.write(&w, &dump, cancel)?;
    let root = replace_top(repo, snap, mongodb, &w)?;
    let stats = packer.flush()?;
    let source = Source::MongoDB {
        server: server.clone(),
        databases: store.databases(),
        cluster_time: Some(*at),
        window_start: Some(*at),
        consistent: true,
        chain: Some(Chain {
            dump_bytes: counts.bytes,
            oplog_bytes: 0,
            incremental: None,
            ..chain.clone()
        }),
    };
    let mut tags = snap.tags.clone();
    tags.push(CONSOLIDATED_TAG.into());
    let new = Snapshot {
        time: chrono::Utc::now(),
        tags,
        tree: root,
        sources: (snap.sources.iter())
            .map(|s| match s {
                Source::MongoDB { .. } => source.clone(),
                other => other.clone(),
            })
            .collect(),
        summary: w.summary(&stats),
        program_version: crate::repo::snapshot::PROGRAM_VERSION.into(),
        ..snap.clone()
    };
    let snapshot_id = repo.save_snapshot(&new)?;
    Ok(ConsolidateReport {
        from: id,
        snapshot_id,
        oplog_entries: entries,
        collections: counts.collections,
        views: counts.views,
        documents: counts.documents,
        bytes_added: stats.bytes,
    })
}

/// The snapshot's root tree with `mongodb` in place of its `/mongodb`.
fn replace_top(
    repo: &IndexedRepo,
    snap: &Snapshot,
    mongodb: Node,
    w: &DumpWriter,
) -> Result<crate::repo::id::TreeId> {
    let mut nodes = repo.load_tree(&snap.tree)?.nodes;
    nodes.retain(|n| n.name != b"mongodb");
    nodes.push(mongodb);
    Ok(w.dir(b"", nodes)?.subtree().expect("a directory"))
}

#[derive(Default)]
struct Counts {
    collections: u64,
    views: u64,
    documents: u64,
    bytes: u64,
}

/// Documents and namespaces as the oplog leaves them.
struct Store {
    _dir: tempfile::TempDir,
    db: rusqlite::Connection,
    /// Every collection and view by `db.coll`.
    metas: BTreeMap<String, CollMeta>,
}

const SCHEMA: &str = "CREATE TABLE docs (n INTEGER PRIMARY KEY, ns TEXT NOT NULL,
    id BLOB NOT NULL, doc BLOB NOT NULL, UNIQUE (ns, id));";

impl Store {
    /// The dump's namespaces and documents, in its order.
    fn load(repo: &IndexedRepo, dump: &Dump, cancel: &Cancel) -> Result<Store> {
        let (dir, db) = temp_db()?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        db.execute_batch("BEGIN").map_err(sql)?;
        let mut store = Store {
            _dir: dir,
            db,
            metas: BTreeMap::new(),
        };
        for ns in &dump.namespaces {
            let name = format!("{}.{}", ns.db, ns.meta.name);
            store.metas.insert(name.clone(), ns.meta.clone());
            let Some(node) = &ns.bson else { continue };
            let path = format!("/mongodb/{}/{}", ns.db, file_name(&ns.meta.name));
            let mut insert = (store.db)
                .prepare("INSERT OR REPLACE INTO docs (ns, id, doc) VALUES (?1, ?2, ?3)")
                .map_err(sql)?;
            stream::for_each_batch(repo, node, &path, &mut |docs| {
                cancel.check().map_err(RepoError::from)?;
                docs.iter().try_for_each(|d| {
                    let id = raw_id_key(d).ok_or_else(|| MongoError::Dump {
                        path: path.clone(),
                        message: "a document without _id".into(),
                    })?;
                    insert
                        .execute(params![name, id, d.as_bytes()])
                        .map_err(sql)?;
                    Ok(())
                })
            })?;
        }
        Ok(store)
    }

    /// Applies the dump's `oplog.bson`; returns the store and the entries read.
    fn replay(self, repo: &IndexedRepo, dump: &Dump, cancel: &Cancel) -> Result<(Store, u64)> {
        let (filter, renames) = (NsFilter::default(), Renames::default());
        let mut replayer = Replayer::to(self, &filter, &renames);
        let mut entries = 0;
        if let Some(node) = &dump.oplog {
            let path = "/mongodb/oplog.bson";
            stream::for_each_document(repo, node, path, cancel, &mut |e| {
                entries += 1;
                replayer.entry(e)
            })?;
        }
        replayer.flush()?;
        Ok((replayer.into_target(), entries))
    }

    /// The databases that hold a namespace.
    fn databases(&self) -> Vec<String> {
        let mut dbs: Vec<String> = self.metas.keys().map(|ns| split_ns(ns).0).collect();
        dbs.dedup();
        dbs
    }

    /// The dump below `/mongodb`: per namespace its metadata and documents, users and roles as
    /// the dump had them, and an empty `oplog.bson`.
    fn write(&self, w: &DumpWriter, dump: &Dump, cancel: &Cancel) -> Result<(Node, Counts)> {
        let mut by_db: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        let mut counts = Counts::default();
        for (ns, meta) in &self.metas {
            cancel.check().map_err(RepoError::from)?;
            let (db, _) = split_ns(ns);
            let base = file_name(&meta.name);
            let json = (meta.to_json()).map_err(|message| MongoError::Metadata {
                ns: ns.clone(),
                message,
            })?;
            let files = by_db.entry(db).or_default();
            files.push(w.small_file(format!("{base}.metadata.json").as_bytes(), &json)?);
            if meta.is_view() {
                counts.views += 1;
                continue;
            }
            counts.collections += 1;
            let content = self.documents(w, ns, &mut counts)?;
            files.push(w.file(format!("{base}.bson").as_bytes(), content));
        }
        for (name, node) in [
            (&b"system.users.bson"[..], &dump.users),
            (b"system.roles.bson", &dump.roles),
        ] {
            if let Some(node) = node {
                let files = by_db.entry("admin".into()).or_default();
                files.push(Node {
                    name: name.to_vec(),
                    ..node.clone()
                });
            }
        }
        let mut top = (by_db.into_iter())
            .map(|(db, nodes)| w.dir(db.as_bytes(), nodes))
            .collect::<Result<Vec<_>>>()?;
        top.push(w.file(b"oplog.bson", Vec::new()));
        Ok((w.dir(b"mongodb", top)?, counts))
    }

    /// The documents of `ns` in the store's order, chunked and saved.
    fn documents(
        &self,
        w: &DumpWriter,
        ns: &str,
        counts: &mut Counts,
    ) -> Result<Vec<crate::repo::tree::ChunkRef>> {
        let mut chunker = w.record_chunker();
        let mut content = Vec::new();
        let mut stmt = (self.db)
            .prepare("SELECT doc FROM docs WHERE ns = ?1 ORDER BY n")
            .map_err(sql)?;
        let mut rows = stmt.query([ns]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let doc: Vec<u8> = row.get(0).map_err(sql)?;
            counts.documents += 1;
            counts.bytes += doc.len() as u64;
            content.extend(w.save_chunks(chunker.push(&doc))?);
        }
        content.extend(w.save_chunks(chunker.finish())?);
        Ok(content)
    }

    fn get(&self, ns: &str, id: &[u8]) -> std::result::Result<Option<Document>, String> {
        let bytes: Option<Vec<u8>> = (self.db)
            .query_row(
                "SELECT doc FROM docs WHERE ns = ?1 AND id = ?2",
                params![ns, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        bytes
            .map(|b| Document::from_reader(&mut b.as_slice()).map_err(|e| e.to_string()))
            .transpose()
    }

    /// Stores `doc` under its `_id` in `ns`: in place when it is there, else after the rest.
    fn put(&mut self, ns: &str, id: &[u8], doc: &Document) -> std::result::Result<(), String> {
        let bytes = doc.to_vec().map_err(|e| e.to_string())?;
        let updated = (self.db)
            .execute(
                "UPDATE docs SET doc = ?3 WHERE ns = ?1 AND id = ?2",
                params![ns, id, bytes],
            )
            .map_err(|e| e.to_string())?;
        if updated == 0 {
            (self.db)
                .execute(
                    "INSERT INTO docs (ns, id, doc) VALUES (?1, ?2, ?3)",
                    params![ns, id, bytes],
                )
                .map_err(|e| e.to_string())?;
        }
        self.collection(ns);
        Ok(())
    }

    /// The metadata of `ns`, a plain collection created on its first write if it is new.
    fn collection(&mut self, ns: &str) -> &mut CollMeta {
        self.metas
            .entry(ns.to_string())
            .or_insert_with(|| new_collection(&split_ns(ns).1, Document::new()))
    }

    fn update(&mut self, ns: &str, st: &Document) -> std::result::Result<(), String> {
        let q = st.get_document("q").map_err(|e| e.to_string())?;
        let id_value = q.get("_id").ok_or("an update without an _id")?;
        let id = id_key(id_value)?;
        let current = self.get(ns, &id)?;
        let upsert = st.get_bool("upsert").unwrap_or(false);
        let u = match st.get("u") {
            Some(Bson::Document(u)) => u,
            _ => return Err("an update that is not a document".into()),
        };
        let next = match (current, u.keys().any(|k| k.starts_with('$'))) {
            (None, _) if !upsert => return Ok(()),
            (_, false) => with_id_first(id_value, u),
            (current, true) => {
                let mut d = current.unwrap_or_else(|| doc! {"_id": id_value.clone()});
                apply_operators(&mut d, u)?;
                d
            }
        };
        self.put(ns, &id, &next)
    }

    fn delete(&mut self, ns: &str, st: &Document) -> std::result::Result<(), String> {
        let q = st.get_document("q").map_err(|e| e.to_string())?;
        let id = id_key(q.get("_id").ok_or("a delete without an _id")?)?;
        (self.db.execute(
            "DELETE FROM docs WHERE ns = ?1 AND id = ?2",
            params![ns, id],
        ))
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn drop_ns(&mut self, ns: &str) -> std::result::Result<(), String> {
        (self.db.execute("DELETE FROM docs WHERE ns = ?1", [ns])).map_err(|e| e.to_string())?;
        self.metas.remove(ns);
        Ok(())
    }

    fn rename(&mut self, cmd: &Document) -> std::result::Result<(), String> {
        let from = cmd.get_str("renameCollection").map_err(|e| e.to_string())?;
        let to = cmd.get_str("to").map_err(|e| e.to_string())?;
        self.drop_ns(to)?;
        (self
            .db
            .execute("UPDATE docs SET ns = ?2 WHERE ns = ?1", [from, to]))
        .map_err(|e| e.to_string())?;
        if let Some(mut meta) = self.metas.remove(from) {
            meta.name = split_ns(to).1;
            self.metas.insert(to.to_string(), meta);
        }
        Ok(())
    }

    fn create(&mut self, ns: &str, cmd: &Document) {
        let options: Document = (cmd.iter())
            .filter(|(k, _)| !matches!(k.as_str(), "create" | "idIndex"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let name = split_ns(ns).1;
        let meta = match options.contains_key("viewOn") {
            true => CollMeta {
                name,
                kind: "view".into(),
                options,
                id_index: None,
                indexes: Vec::new(),
                uuid: None,
            },
            false => new_collection(&name, options),
        };
        self.metas.entry(ns.to_string()).or_insert(meta);
    }

    fn create_indexes(&mut self, ns: &str, cmd: &Document) -> std::result::Result<(), String> {
        let specs = cmd.get_array("indexes").map_err(|e| e.to_string())?;
        let meta = self.collection(ns);
        for spec in specs.iter().filter_map(Bson::as_document) {
            let name = spec.get_str("name").ok();
            if !meta.indexes.iter().any(|i| i.get_str("name").ok() == name) {
                let mut spec = spec.clone();
                spec.insert("v", spec.get("v").cloned().unwrap_or(Bson::Int32(2)));
                meta.indexes.push(spec);
            }
        }
        Ok(())
    }

    fn drop_indexes(&mut self, ns: &str, cmd: &Document) {
        let Some(meta) = self.metas.get_mut(ns) else {
            return;
        };
        let index = cmd.get("index").cloned().unwrap_or(Bson::Null);
        meta.indexes.retain(|spec| {
            let name = spec.get_str("name").ok();
            name == Some("_id_")
                || match &index {
                    Bson::String(n) if n == "*" => false,
                    Bson::String(n) => name != Some(n.as_str()),
                    Bson::Document(key) => spec.get_document("key").ok() != Some(key),
                    Bson::Array(names) => !names.iter().any(|n| n.as_str() == name),
                    _ => true,
                }
        });
    }

    /// `collMod` of options (validator, validation level and action, TTL of a time series)
    /// and of an index's TTL or hidden flag; anything else is refused.
    fn coll_mod(&mut self, ns: &str, cmd: &Document) -> std::result::Result<(), String> {
        let meta = self.collection(ns);
        for (k, v) in cmd.iter().skip(1) {
            match k.as_str() {
                "validator" | "validationLevel" | "validationAction" | "expireAfterSeconds" => {
                    meta.options.insert(k.clone(), v.clone());
                }
                "index" => {
                    let change = v.as_document().ok_or("collMod index is not a document")?;
                    modify_index(meta, change)?;
                }
                "writeConcern" | "comment" => {}
                other => return Err(format!("consolidate cannot apply collMod {other:?}")),
            }
        }
        Ok(())
    }
}

impl Target for Store {
    fn run(&mut self, db: &str, cmd: Document) -> std::result::Result<Option<usize>, String> {
        let kind = cmd.keys().next().cloned().unwrap_or_default();
        let ns = format!("{db}.{}", cmd.get_str(&kind).unwrap_or_default());
        let statements = |list: &str| -> Vec<Document> {
            (cmd.get_array(list).into_iter().flatten())
                .filter_map(|s| s.as_document().cloned())
                .collect()
        };
        match kind.as_str() {
            "update" => (statements("updates").iter()).try_for_each(|s| self.update(&ns, s))?,
            "delete" => (statements("deletes").iter()).try_for_each(|s| self.delete(&ns, s))?,
            "drop" => self.drop_ns(&ns)?,
            "dropDatabase" => {
                let prefix = format!("{db}.");
                let gone: Vec<String> = (self.metas.keys())
                    .filter(|n| n.starts_with(&prefix))
                    .cloned()
                    .collect();
                gone.iter().try_for_each(|n| self.drop_ns(n))?;
            }
            "renameCollection" => self.rename(&cmd)?,
            "create" => self.create(&ns, &cmd),
            "createIndexes" => self.create_indexes(&ns, &cmd)?,
            "dropIndexes" => self.drop_indexes(&ns, &cmd),
            "collMod" => self.coll_mod(&ns, &cmd)?,
            other => return Err(format!("consolidate cannot apply {other:?}")),
        }
        Ok(None)
    }

    fn current(
        &mut self,
        db: &str,
        coll: &str,
        q: &Document,
    ) -> std::result::Result<Option<Document>, String> {
        let id = id_key(q.get("_id").ok_or("an update without an _id")?)?;
        self.get(&format!("{db}.{coll}"), &id)
    }
}

/// A new plain collection's metadata, with the `_id` index mongod creates.
fn new_collection(name: &str, options: Document) -> CollMeta {
    let id_index = doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"};
    CollMeta {
        name: name.to_string(),
        kind: "collection".into(),
        options,
        id_index: Some(id_index.clone()),
        indexes: vec![id_index],
        uuid: None,
    }
}

/// `collMod`'s `index`: by `name` or `keyPattern`, a new `expireAfterSeconds` or `hidden`.
fn modify_index(meta: &mut CollMeta, change: &Document) -> std::result::Result<(), String> {
    let spec = (meta.indexes.iter_mut())
        .find(|s| {
            change
                .get_str("name")
                .is_ok_and(|n| s.get_str("name").ok() == Some(n))
                || change
                    .get_document("keyPattern")
                    .is_ok_and(|k| s.get_document("key").ok() == Some(k))
        })
        .ok_or("collMod of an index the dump does not have")?;
    for key in ["expireAfterSeconds", "hidden"] {
        if let Some(v) = change.get(key) {
            spec.insert(key, v.clone());
        }
    }
    Ok(())
}

/// The update operators replay sends: `$set` and `$unset` of dotted paths (array elements by
/// index), and `$push` with an empty `$each` and a `$slice` (an array truncated).
fn apply_operators(d: &mut Document, u: &Document) -> std::result::Result<(), String> {
    for (op, fields) in u {
        let fields = fields
            .as_document()
            .ok_or("an update operator without fields")?;
        for (path, value) in fields {
            let parts: Vec<&str> = path.split('.').collect();
            match op.as_str() {
                "$set" => set_path(d, &parts, value.clone()),
                "$unset" => unset_path(d, &parts),
                "$push" => truncate_path(d, &parts, value)?,
                other => return Err(format!("consolidate cannot apply the operator {other}")),
            }
        }
    }
    Ok(())
}

fn set_path(d: &mut Document, parts: &[&str], value: Bson) {
    let [first, rest @ ..] = parts else { return };
    if rest.is_empty() {
        d.insert(*first, value);
        return;
    }
    let child = d
        .entry(first.to_string())
        .or_insert_with(|| Bson::Document(Document::new()));
    set_in(child, rest, value);
}

fn set_in(b: &mut Bson, parts: &[&str], value: Bson) {
    match b {
        Bson::Document(d) => set_path(d, parts, value),
        Bson::Array(a) => {
            let [first, rest @ ..] = parts else { return };
            let Ok(i) = first.parse::<usize>() else {
                return;
            };
            if a.len() <= i {
                a.resize(i + 1, Bson::Null);
            }
            match rest.is_empty() {
                true => a[i] = value,
                false => {
                    if !matches!(a[i], Bson::Document(_) | Bson::Array(_)) {
                        a[i] = Bson::Document(Document::new());
                    }
                    set_in(&mut a[i], rest, value);
                }
            }
        }
        _ => {}
    }
}

/// Removes a field; an array element becomes null, as `$unset` leaves it.
fn unset_path(d: &mut Document, parts: &[&str]) {
    let [first, rest @ ..] = parts else { return };
    if rest.is_empty() {
        d.remove(*first);
        return;
    }
    if let Some(child) = d.get_mut(*first) {
        unset_in(child, rest);
    }
}

fn unset_in(b: &mut Bson, parts: &[&str]) {
    match b {
        Bson::Document(d) => unset_path(d, parts),
        Bson::Array(a) => {
            let [first, rest @ ..] = parts else { return };
            let Some(elem) = first.parse::<usize>().ok().and_then(|i| a.get_mut(i)) else {
                return;
            };
            match rest.is_empty() {
                true => *elem = Bson::Null,
                false => unset_in(elem, rest),
            }
        }
        _ => {}
    }
}

/// `$push: {path: {$each: [], $slice: n}}`: keeps the first `n` elements (the last `-n`).
fn truncate_path(d: &mut Document, parts: &[&str], spec: &Bson) -> std::result::Result<(), String> {
    let spec = spec.as_document().ok_or("a $push without $each")?;
    let empty = spec.get_array("$each").is_ok_and(|e| e.is_empty());
    let slice = spec
        .get("$slice")
        .and_then(|n| n.as_i64().or(n.as_i32().map(i64::from)));
    let (true, Some(n)) = (empty, slice) else {
        return Err("consolidate cannot apply a $push that adds elements".into());
    };
    if let Some(Bson::Array(a)) = get_mut_path(d, parts) {
        let len = a.len() as i64;
        match n >= 0 {
            true => a.truncate(n.min(len) as usize),
            false => {
                a.drain(..(len + n).max(0) as usize);
            }
        }
    }
    Ok(())
}

fn get_mut_path<'d>(d: &'d mut Document, parts: &[&str]) -> Option<&'d mut Bson> {
    let [first, rest @ ..] = parts else {
        return None;
    };
    let mut b = d.get_mut(*first)?;
    for part in rest {
        b = match b {
            Bson::Document(d) => d.get_mut(*part)?,
            Bson::Array(a) => a.get_mut(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(d: Document, u: Document) -> Document {
        let mut d = d;
        apply_operators(&mut d, &u).unwrap();
        d
    }

    #[test]
    fn set_and_unset_reach_nested_fields_and_array_elements() {
        let d = doc! {"_id": 1, "a": {"b": 1}, "arr": [1, 2, 3], "gone": true};
        let got = applied(
            d,
            doc! {"$set": {"a.c": 2, "arr.1": "two", "arr.4": 5, "new.x": 1}, "$unset": {"gone": "", "arr.0": ""}},
        );
        let want = doc! {"_id": 1, "a": {"b": 1, "c": 2}, "arr": [Bson::Null, "two", 3, Bson::Null, 5], "new": {"x": 1}};
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_push_with_a_slice_truncates_and_others_are_refused() {
        let d = doc! {"arr": [1, 2, 3, 4]};
        let first = applied(
            d.clone(),
            doc! {"$push": {"arr": {"$each": [], "$slice": 2}}},
        );
        assert_eq!(first, doc! {"arr": [1, 2]});
        let last = applied(
            d.clone(),
            doc! {"$push": {"arr": {"$each": [], "$slice": -1}}},
        );
        assert_eq!(last, doc! {"arr": [4]});
        let mut d = d;
        let adds = doc! {"$push": {"arr": {"$each": [5], "$slice": 9}}};
        assert!(apply_operators(&mut d, &adds).is_err());
        assert!(apply_operators(&mut d, &doc! {"$inc": {"n": 1}}).is_err());
    }

    #[test]
    fn a_replacement_keeps_its_id_first() {
        let d = with_id_first(&Bson::Int32(7), &doc! {"x": 1, "_id": 7});
        assert_eq!(d.keys().collect::<Vec<_>>(), ["_id", "x"]);
    }
}
