//! The state of a MongoDB dump at its cluster time, for the lost-data scan: a dump's
//! documents are as the export read them, and its `oplog.bson` (the consistency window, and
//! for an incremental dump every range since its chain's full dump) says what became of
//! them. The oplog is replayed into this model instead of a server: for every document it
//! writes, whether the document exists and, when the oplog holds its whole content, its
//! hash; where each collection of the dump is by then (renamed, dropped, created again), and
//! its indexes. Documents go into a temporary SQLite table, so memory stays bounded whatever
//! the oplog holds.
use super::import::{Dump, DumpNs};
use super::namespace::{NsFilter, Renames};
use super::replay::{Deferred, Replayer, Target};
use super::{MongoError, Result, stream};
use crate::cancel::Cancel;
use crate::repo::repository::IndexedRepo;
use bson::{Bson, Document, RawBson, RawDocument, doc, rawdoc};
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;

/// A document as the oplog left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Deleted,
    /// With the BLAKE3 hash of its bytes when an insert or a replacement gave all of it (an
    /// update by operators leaves the content unknown).
    Present(Option<[u8; 32]>),
}

/// Where a namespace of the dump is at the dump's cluster time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AsOf {
    /// `db.coll`, renamed or not.
    pub name: String,
    /// Whether it still holds the dump's documents (not when dropped and created again).
    pub dump_documents: bool,
    /// Its indexes' specs (those of the dump, minus the dropped ones).
    pub indexes: Vec<Document>,
}

pub(crate) struct Overlay {
    _dir: tempfile::TempDir,
    db: rusqlite::Connection,
    /// Each namespace that exists at the end, and the dump namespace whose documents it holds
    /// (None: only what the oplog wrote into it).
    names: BTreeMap<String, Option<String>>,
    deferred: Deferred,
}

const SCHEMA: &str = "CREATE TABLE written (ns TEXT NOT NULL, id BLOB NOT NULL,
    present INTEGER NOT NULL, hash BLOB, PRIMARY KEY (ns, id)) WITHOUT ROWID;";

impl Overlay {
    /// Replays `dump`'s oplog into the model.
    pub(crate) fn build(
        repo: &IndexedRepo,
        dump: &Dump,
        filter: &NsFilter,
        cancel: &Cancel,
    ) -> Result<Overlay> {
        let (dir, db) = temp_db()?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        db.execute_batch("BEGIN").map_err(sql)?;
        let names = (dump.namespaces.iter())
            .map(|n| (name_of(n), Some(name_of(n))))
            .collect();
        let overlay = Overlay {
            _dir: dir,
            db,
            names,
            deferred: Deferred::default(),
        };
        let renames = Renames::default();
        let mut replayer = Replayer::to(overlay, filter, &renames);
        replayer.deferred = seeded(dump);
        if let Some(node) = &dump.oplog {
            let path = "/mongodb/oplog.bson";
            stream::for_each_document(repo, node, path, cancel, &mut |e| replayer.entry(e))?;
        }
        replayer.flush()?;
        let deferred = std::mem::take(&mut replayer.deferred);
        let mut overlay = replayer.into_target();
        overlay.deferred = deferred;
        overlay.db.execute_batch("COMMIT").map_err(sql)?;
        Ok(overlay)
    }

    /// Where `ns` of the dump is at its cluster time; None when it no longer exists then.
    pub(crate) fn as_of(&self, ns: &DumpNs) -> Option<AsOf> {
        let dump_name = name_of(ns);
        let holder = (self.names.iter()).find(|(_, origin)| origin.as_ref() == Some(&dump_name));
        let (name, dump_documents) = match holder {
            Some((name, _)) => (name.clone(), true),
            None if self.names.get(&dump_name) == Some(&None) => (dump_name, false),
            None => return None,
        };
        let indexes = match ns.meta.is_view() {
            true => Vec::new(),
            false => self
                .deferred
                .indexes
                .get(&name)
                .cloned()
                .unwrap_or_default(),
        };
        Some(AsOf {
            name,
            dump_documents,
            indexes,
        })
    }

    /// What the oplog left of document `id` (an `{"_id": …}` key) in `ns`, if it wrote it.
    pub(crate) fn written(&self, ns: &str, id: &[u8]) -> Result<Option<Written>> {
        let row = self
            .db
            .query_row(
                "SELECT present, hash FROM written WHERE ns = ?1 AND id = ?2",
                params![ns, id],
                |r| Ok((r.get::<_, bool>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)),
            )
            .optional()
            .map_err(sql)?;
        Ok(row.map(|(present, hash)| written(present, hash)))
    }

    /// Calls `f` with every document the oplog wrote in `ns`, by `_id` key.
    pub(crate) fn for_each_written(
        &self,
        ns: &str,
        f: &mut dyn FnMut(&[u8], Written) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = (self.db)
            .prepare("SELECT id, present, hash FROM written WHERE ns = ?1")
            .map_err(sql)?;
        let mut rows = stmt.query([ns]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let id: Vec<u8> = r.get(0).map_err(sql)?;
            let state = written(r.get(1).map_err(sql)?, r.get(2).map_err(sql)?);
            f(&id, state)?;
        }
        Ok(())
    }

    fn put(&mut self, ns: &str, id: &Bson, state: Written) -> std::result::Result<(), String> {
        let (present, hash) = match state {
            Written::Deleted => (false, None),
            Written::Present(hash) => (true, hash.map(|h| h.to_vec())),
        };
        let key = id_key(id)?;
        (self.db.execute(
            "INSERT OR REPLACE INTO written (ns, id, present, hash) VALUES (?1, ?2, ?3, ?4)",
            params![ns, key, present, hash],
        ))
        .map_err(|e| e.to_string())?;
        self.names.entry(ns.to_string()).or_insert(None);
        Ok(())
    }

    /// `ns` dropped: neither its documents nor the dump's are there any more.
    fn dropped(&mut self, ns: &str) -> std::result::Result<(), String> {
        (self.db.execute("DELETE FROM written WHERE ns = ?1", [ns])).map_err(|e| e.to_string())?;
        self.names.remove(ns);
        Ok(())
    }

    fn database_dropped(&mut self, db: &str) -> std::result::Result<(), String> {
        let prefix = format!("{db}.");
        let gone: Vec<String> = (self.names.keys())
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect();
        gone.iter().try_for_each(|ns| self.dropped(ns))
    }

    fn renamed(&mut self, from: &str, to: &str) -> std::result::Result<(), String> {
        let origin = self.names.remove(from);
        self.dropped(to)?;
        (self
            .db
            .execute("UPDATE written SET ns = ?2 WHERE ns = ?1", [from, to]))
        .map_err(|e| e.to_string())?;
        if let Some(origin) = origin {
            self.names.insert(to.to_string(), origin);
        }
        Ok(())
    }

    /// The statements of an `update` (inserts arrive as upserts of the whole document) or a
    /// `delete` command, each selecting one document by `_id`.
    fn write(&mut self, ns: &str, cmd: &Document, list: &str) -> std::result::Result<(), String> {
        let statements = cmd.get_array(list).map_err(|e| e.to_string())?;
        for st in statements.iter().filter_map(Bson::as_document) {
            let id = (st.get_document("q").ok())
                .and_then(|q| q.get("_id"))
                .ok_or("a write without an _id")?;
            let state = match (list, st.get("u")) {
                ("deletes", _) => Written::Deleted,
                (_, Some(Bson::Document(u))) if !u.keys().any(|k| k.starts_with('$')) => {
                    Written::Present(Some(whole_hash(id, u)?))
                }
                _ => Written::Present(None),
            };
            self.put(ns, id, state)?;
        }
        Ok(())
    }
}

impl Target for Overlay {
    fn run(&mut self, db: &str, cmd: Document) -> std::result::Result<Option<usize>, String> {
        let kind = cmd.keys().next().cloned().unwrap_or_default();
        let ns = |key: &str| format!("{db}.{}", cmd.get_str(key).unwrap_or_default());
        match kind.as_str() {
            "update" => self.write(&ns("update"), &cmd, "updates")?,
            "delete" => self.write(&ns("delete"), &cmd, "deletes")?,
            "drop" => self.dropped(&ns("drop"))?,
            "dropDatabase" => self.database_dropped(db)?,
            "renameCollection" => {
                let to = cmd.get_str("to").map_err(|e| e.to_string())?;
                self.renamed(cmd.get_str("renameCollection").unwrap_or_default(), to)?;
            }
            "create" => {
                self.names.entry(ns("create")).or_insert(None);
            }
            _ => {}
        }
        Ok(None)
    }

    /// The model holds no documents, only their fate: the document is there, its content no
    /// longer known.
    fn current(
        &mut self,
        db: &str,
        coll: &str,
        q: &Document,
    ) -> std::result::Result<Option<Document>, String> {
        let id = q.get("_id").ok_or("an update without an _id")?;
        self.put(&format!("{db}.{coll}"), id, Written::Present(None))?;
        Ok(None)
    }
}

/// Every index spec and view of the dump, by namespace, for the replay to carry along.
fn seeded(dump: &Dump) -> Deferred {
    let mut d = Deferred::default();
    for ns in &dump.namespaces {
        match ns.meta.is_view() {
            true => d.views.insert(name_of(ns)),
            false => d
                .indexes
                .insert(name_of(ns), ns.meta.indexes.clone())
                .is_none(),
        };
    }
    d
}

fn name_of(ns: &DumpNs) -> String {
    format!("{}.{}", ns.db, ns.meta.name)
}

fn written(present: bool, hash: Option<Vec<u8>>) -> Written {
    match present {
        false => Written::Deleted,
        true => Written::Present(hash.and_then(|h| h.try_into().ok())),
    }
}

/// The key of an `_id`: the bytes of `{"_id": <value>}`, as the scan and the consolidation
/// key documents.
pub(super) fn id_key(id: &Bson) -> std::result::Result<Vec<u8>, String> {
    (doc! {"_id": id.clone()})
        .to_vec()
        .map_err(|e| e.to_string())
}

/// The key of a raw document's `_id` (None without one), as [`id_key`] gives it.
pub(super) fn raw_id_key(d: &RawDocument) -> Option<Vec<u8>> {
    let id = d.get("_id").ok().flatten()?;
    Some(rawdoc! {"_id": RawBson::from(id)}.into_bytes())
}

/// A whole document (an insert or a replacement) as the server stores it: `_id` first.
pub(super) fn with_id_first(id: &Bson, u: &Document) -> Document {
    let mut d = doc! {"_id": id.clone()};
    d.extend(
        u.iter()
            .filter(|(k, _)| *k != "_id")
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    d
}

/// The hash of a whole document as the server stores it.
fn whole_hash(id: &Bson, u: &Document) -> std::result::Result<[u8; 32], String> {
    let bytes = with_id_first(id, u).to_vec().map_err(|e| e.to_string())?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

/// A temporary SQLite database in its own directory, removed with it.
pub(super) fn temp_db() -> Result<(tempfile::TempDir, rusqlite::Connection)> {
    let io = |e: std::io::Error| sql_err(e.to_string());
    let dir = tempfile::Builder::new()
        .prefix("strata-scan-")
        .tempdir()
        .map_err(io)?;
    let db = rusqlite::Connection::open(dir.path().join("ids.db")).map_err(sql)?;
    db.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(sql)?;
    Ok((dir, db))
}

pub(super) fn sql(e: rusqlite::Error) -> MongoError {
    sql_err(e.to_string())
}

pub(super) fn sql_err(message: String) -> MongoError {
    MongoError::Dump {
        path: "the scan's temporary database".into(),
        message,
    }
}
