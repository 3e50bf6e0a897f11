//! The lost-data scan of a MongoDB server: what a snapshot's dump holds that the live server
//! no longer has (databases, collections, views, indexes, documents), each finding with the
//! namespace pattern and insert mode that `restore --mongo` needs to bring it back. The deep
//! scan compares documents by `_id` through a temporary SQLite table, so memory stays bounded
//! whatever the collection sizes (the dump is in natural order, not `_id` order).
use super::export::{list_collections, list_indexes};
use super::import::{self, Dump, DumpNs};
use super::namespace::{NsFilter, Renames, split_ns};
use super::overlay::{Overlay, Written, raw_id_key, sql, temp_db};
use super::{Conn, MongoError, Result, cmd_err, stream};
use crate::cancel::Cancel;
use crate::observer::{EntryError, EntryErrorKind, Observer, Phase};
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::{Snapshot, Source};
use bson::{Bson, Document, RawDocument, RawDocumentBuf};
use rusqlite::params;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub filter: NsFilter,
    /// Compare documents by `_id` and content, not only their number.
    pub deep: bool,
    /// `_id`s kept per list at most (all when None); the totals are always exact.
    pub id_limit: Option<usize>,
    /// Stops the scan (with `RepoError::Cancelled`) once cancelled.
    pub cancel: Cancel,
}

/// What is missing or changed, as the restore brings it back.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A database that is gone, with the namespaces the snapshot held in it.
    Database {
        namespaces: Vec<String>,
    },
    /// A collection that is gone, and the size of its documents in the snapshot.
    Collection {
        bytes: u64,
    },
    View,
    Index {
        index: String,
    },
    /// Fewer documents now than in the snapshot; with the deep scan, the `_id`s (as
    /// relaxed Extended JSON) missing now and those whose documents differ.
    Documents {
        snapshot_count: u64,
        live_count: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        missing: Option<IdList>,
        #[serde(skip_serializing_if = "Option::is_none")]
        changed: Option<IdList>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IdList {
    pub total: u64,
    /// The first `id_limit` of them, in the order of the snapshot's dump.
    pub ids: Vec<String>,
}

/// How `restore --mongo` brings a finding back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreMode {
    /// Creates what is missing (a plain restore).
    Insert,
    /// Keeps the documents there, inserts the missing ones and builds the indexes.
    SkipExisting,
    /// Replaces the changed documents and inserts the missing ones.
    Upsert,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `db` for a database, else `db.coll`.
    pub ns: String,
    #[serde(flatten)]
    pub what: What,
    /// The `--ns-include` pattern of the restore.
    pub include: String,
    pub mode: RestoreMode,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanReport {
    pub server: String,
    pub findings: Vec<Finding>,
    /// Namespaces of the snapshot found as they were.
    pub unchanged: u64,
    /// Namespaces that could not be compared (the namespace as the path), with why.
    pub errors: Vec<EntryError>,
}

impl ScanReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The newest MongoDB snapshot (not an oplog slice) of `server` in `history` (oldest first).
pub fn default_snapshot<'a, I>(
    history: &'a [(I, Snapshot)],
    server: &str,
) -> Option<&'a (I, Snapshot)> {
    history
        .iter()
        .rev()
        .find(|(_, s)| !s.is_oplog_slice() && snapshot_server(s) == Some(server))
}

/// The server a snapshot's MongoDB dump was taken from.
pub fn snapshot_server(snap: &Snapshot) -> Option<&str> {
    match snap.mongodb() {
        Some(Source::MongoDB { server, .. }) => Some(server),
        _ => None,
    }
}

/// `uri` without the password of its user information, and whether there was one.
pub fn uri_without_password(uri: &str) -> (String, bool) {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return (uri.to_string(), false);
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    let Some(at) = authority.rfind('@') else {
        return (uri.to_string(), false);
    };
    let (user_info, hosts) = authority.split_at(at);
    match user_info.split_once(':') {
        Some((user, _)) => (format!("{scheme}://{user}{hosts}{tail}"), true),
        None => (uri.to_string(), false),
    }
}

/// Compares the server with the dump of `snap`.
pub fn scan(
    repo: &IndexedRepo,
    conn: &Conn,
    snap: &Snapshot,
    opts: &ScanOptions,
    progress: &dyn Observer,
) -> Result<ScanReport> {
    progress.phase(Phase::Scanning);
    let dump = import::read_dump(repo, snap.tree, &opts.filter, &Renames::default())?;
    let overlay = Overlay::build(repo, &dump, &opts.filter, &opts.cancel)?;
    let namespaces = at_cluster_time(&dump, &overlay);
    let live_dbs: BTreeSet<String> = conn
        .block_on(conn.client().list_database_names())
        .map_err(cmd_err("listing databases"))?
        .into_iter()
        .collect();
    let mut by_db: BTreeMap<&str, Vec<&DumpNs>> = BTreeMap::new();
    for ns in &namespaces {
        by_db.entry(&ns.db).or_default().push(ns);
    }
    let mut report = ScanReport {
        server: conn.server.clone(),
        ..Default::default()
    };
    let mut docs = DocCompare::new(opts, &overlay)?;
    for (db, namespaces) in by_db {
        match live_dbs.contains(db) {
            true => scan_db(
                repo,
                conn,
                db,
                &namespaces,
                &mut docs,
                &mut report,
                progress,
            )?,
            false => report.findings.push(missing_db(db, &namespaces)),
        }
    }
    Ok(report)
}

/// The namespaces of `dump` as they are at its cluster time, after its oplog: renamed, with
/// the indexes the oplog left them, without the dump's documents when dropped and created
/// again; those gone by then are left out.
fn at_cluster_time(dump: &Dump, overlay: &Overlay) -> Vec<DumpNs> {
    (dump.namespaces.iter())
        .filter_map(|ns| {
            let at = overlay.as_of(ns)?;
            let mut ns = ns.clone();
            (ns.db, ns.meta.name) = split_ns(&at.name);
            if !ns.meta.is_view() {
                ns.meta.indexes = at.indexes;
            }
            if !at.dump_documents {
                ns.bson = None;
            }
            Some(ns)
        })
        .collect()
}

fn missing_db(db: &str, namespaces: &[&DumpNs]) -> Finding {
    Finding {
        ns: db.to_string(),
        what: What::Database {
            namespaces: namespaces.iter().map(|n| ns_name(n)).collect(),
        },
        include: format!("{db}.*"),
        mode: RestoreMode::Insert,
    }
}

fn ns_name(ns: &DumpNs) -> String {
    format!("{}.{}", ns.db, ns.meta.name)
}

/// Compares the namespaces of one database that the server still has.
fn scan_db(
    repo: &IndexedRepo,
    conn: &Conn,
    db: &str,
    namespaces: &[&DumpNs],
    docs: &mut DocCompare,
    report: &mut ScanReport,
    progress: &dyn Observer,
) -> Result<()> {
    let live: BTreeMap<String, Document> = list_collections(conn, db)?
        .into_iter()
        .map(|s| (s.get_str("name").unwrap_or_default().to_string(), s))
        .collect();
    for ns in namespaces {
        progress.item(&ns_name(ns));
        let spec = live.get(&ns.meta.name).filter(|s| same_kind(s, ns));
        let found = match spec {
            None => Ok(vec![missing_ns(ns)]),
            Some(_) if ns.meta.is_view() => Ok(Vec::new()),
            Some(_) => compare_collection(repo, conn, ns, docs),
        };
        match found {
            Ok(f) if f.is_empty() => report.unchanged += 1,
            Ok(f) => report.findings.extend(f),
            Err(e) => {
                let e = EntryError::new(EntryErrorKind::Read, ns_name(ns), e);
                progress.error(&e);
                report.errors.push(e);
            }
        }
        docs.cancel.check().map_err(RepoError::from)?;
    }
    Ok(())
}

/// Whether the live namespace is what the snapshot had: a view for a view, else not one.
fn same_kind(spec: &Document, ns: &DumpNs) -> bool {
    (spec.get_str("type").ok() == Some("view")) == ns.meta.is_view()
}

fn missing_ns(ns: &DumpNs) -> Finding {
    let what = match ns.meta.is_view() {
        true => What::View,
        false => What::Collection {
            bytes: ns.bson.as_ref().map_or(0, |n| n.size),
        },
    };
    finding(ns, what, RestoreMode::Insert)
}

fn finding(ns: &DumpNs, what: What, mode: RestoreMode) -> Finding {
    Finding {
        ns: ns_name(ns),
        what,
        include: ns_name(ns),
        mode,
    }
}

/// Missing indexes and lost documents of a collection the server has.
fn compare_collection(
    repo: &IndexedRepo,
    conn: &Conn,
    ns: &DumpNs,
    docs: &mut DocCompare,
) -> Result<Vec<Finding>> {
    let live_indexes: BTreeSet<String> = list_indexes(conn, &ns.db, &ns.meta.name)?
        .iter()
        .filter_map(|i| i.get_str("name").ok().map(str::to_string))
        .collect();
    let mut out: Vec<Finding> = ns
        .meta
        .indexes
        .iter()
        .filter_map(|i| i.get_str("name").ok())
        .filter(|name| !live_indexes.contains(*name))
        .map(|name| {
            let what = What::Index {
                index: name.to_string(),
            };
            finding(ns, what, RestoreMode::SkipExisting)
        })
        .collect();
    out.extend(docs.compare(repo, conn, ns)?);
    Ok(out)
}

/// Compares the documents of collections, one at a time, reusing one temporary database.
struct DocCompare<'a> {
    deep: Option<(tempfile::TempDir, rusqlite::Connection)>,
    id_limit: Option<usize>,
    cancel: Cancel,
    /// What the dump's oplog wrote after the export read the documents.
    overlay: &'a Overlay,
}

/// What the deep comparison found in one collection.
#[derive(Default)]
struct DeepCounts {
    snapshot: u64,
    live: u64,
    missing: IdList,
    changed: IdList,
}

/// A row per document of the snapshot, numbered in the dump's order.
const SCHEMA: &str = "DROP TABLE IF EXISTS docs;
    CREATE TABLE docs (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, hash BLOB NOT NULL,
        state INTEGER NOT NULL DEFAULT 0);";
/// `state` of a document not seen on the server (yet).
const UNSEEN: i64 = 0;
/// `state` of a document seen on the server with other content.
const CHANGED: i64 = 2;

impl<'a> DocCompare<'a> {
    fn new(opts: &ScanOptions, overlay: &'a Overlay) -> Result<DocCompare<'a>> {
        let deep = match opts.deep {
            true => Some(temp_db()?),
            false => None,
        };
        Ok(DocCompare {
            deep,
            id_limit: opts.id_limit,
            cancel: opts.cancel.clone(),
            overlay,
        })
    }

    fn compare(&mut self, repo: &IndexedRepo, conn: &Conn, ns: &DumpNs) -> Result<Option<Finding>> {
        let Some((_, db)) = &mut self.deep else {
            return count_fell(repo, conn, ns, self.overlay, &self.cancel);
        };
        let sides = (repo, conn, self.overlay);
        let c = deep_compare(sides, ns, db, self.id_limit, &self.cancel)?;
        if c.missing.total == 0 && c.changed.total == 0 {
            return Ok(None);
        }
        let mode = match c.changed.total {
            0 => RestoreMode::SkipExisting,
            _ => RestoreMode::Upsert,
        };
        let what = What::Documents {
            snapshot_count: c.snapshot,
            live_count: c.live,
            missing: Some(c.missing),
            changed: Some(c.changed),
        };
        Ok(Some(finding(ns, what, mode)))
    }
}

fn dump_path(ns: &DumpNs) -> String {
    let name = ns.bson.as_ref().map_or(Vec::new(), |n| n.name.clone());
    format!("/mongodb/{}/{}", ns.db, String::from_utf8_lossy(&name))
}

/// Calls `f` with every document of the collection in the snapshot, until cancelled.
fn for_each_dump_doc(
    repo: &IndexedRepo,
    ns: &DumpNs,
    cancel: &Cancel,
    f: &mut dyn FnMut(&RawDocument) -> Result<()>,
) -> Result<()> {
    let Some(node) = &ns.bson else { return Ok(()) };
    stream::for_each_batch(repo, node, &dump_path(ns), &mut |docs| {
        cancel.check().map_err(RepoError::from)?;
        docs.iter().try_for_each(|d| f(d))
    })
}

/// Calls `f` with every document of the collection on the server, in natural order, until
/// cancelled.
fn for_each_live_doc(
    conn: &Conn,
    ns: &DumpNs,
    cancel: &Cancel,
    f: &mut dyn FnMut(&RawDocument) -> Result<()>,
) -> Result<()> {
    let what = format!("reading {}", ns_name(ns));
    let coll = conn
        .client()
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.meta.name);
    conn.block_on(async {
        let mut cursor = coll
            .find(bson::doc! {})
            .await
            .map_err(cmd_err(what.clone()))?;
        while cursor.advance().await.map_err(cmd_err(what.clone()))? {
            cancel.check().map_err(RepoError::from)?;
            f(cursor.current())?;
        }
        Ok(())
    })
}

/// The non-deep comparison: a finding when the server holds fewer documents than the dump
/// at its cluster time (its documents the oplog did not write, and those it left there).
fn count_fell(
    repo: &IndexedRepo,
    conn: &Conn,
    ns: &DumpNs,
    overlay: &Overlay,
    cancel: &Cancel,
) -> Result<Option<Finding>> {
    let name = ns_name(ns);
    let (mut snapshot, mut written) = (0, false);
    overlay.for_each_written(&name, &mut |_, w| {
        snapshot += u64::from(w != Written::Deleted);
        written = true;
        Ok(())
    })?;
    for_each_dump_doc(repo, ns, cancel, &mut |d| {
        let kept = !written || overlay.written(&name, &id_key(d, ns)?)?.is_none();
        snapshot += u64::from(kept);
        Ok(())
    })?;
    let coll = conn
        .client()
        .database(&ns.db)
        .collection::<Document>(&ns.meta.name);
    let live = conn
        .block_on(coll.count_documents(bson::doc! {}))
        .map_err(cmd_err(format!("counting {}", ns_name(ns))))?;
    if live >= snapshot {
        return Ok(None);
    }
    let what = What::Documents {
        snapshot_count: snapshot,
        live_count: live,
        missing: None,
        changed: None,
    };
    Ok(Some(finding(ns, what, RestoreMode::SkipExisting)))
}

/// The `_id` of a document as a key: the bytes of `{"_id": <value>}`.
fn id_key(doc: &RawDocument, ns: &DumpNs) -> Result<Vec<u8>> {
    raw_id_key(doc).ok_or_else(|| MongoError::Dump {
        path: dump_path(ns),
        message: "a document without _id".into(),
    })
}

/// The `_id` of a key as relaxed Extended JSON.
fn id_text(key: &[u8]) -> String {
    let id = RawDocument::from_bytes(key)
        .ok()
        .and_then(|d| d.get("_id").ok().flatten())
        .and_then(|id| Bson::try_from(id).ok());
    id.map_or_else(
        || hex::encode(key),
        |b| b.into_relaxed_extjson().to_string(),
    )
}

/// The deep comparison: the snapshot's `_id`s and content hashes into the table, carried to
/// the dump's cluster time by what its oplog wrote (a document whose content the oplog does
/// not give matches whatever the server holds), the server's documents checked off against
/// it, what was not seen is missing.
fn deep_compare(
    (repo, conn, overlay): (&IndexedRepo, &Conn, &Overlay),
    ns: &DumpNs,
    db: &mut rusqlite::Connection,
    id_limit: Option<usize>,
    cancel: &Cancel,
) -> Result<DeepCounts> {
    db.execute_batch(SCHEMA).map_err(sql)?;
    let mut counts = DeepCounts::default();
    let tx = db.transaction().map_err(sql)?;
    {
        let mut insert = tx
            .prepare("INSERT OR REPLACE INTO docs (id, hash) VALUES (?1, ?2)")
            .map_err(sql)?;
        for_each_dump_doc(repo, ns, cancel, &mut |d| run_with_hash(&mut insert, d, ns))?;
        let mut delete = tx.prepare("DELETE FROM docs WHERE id = ?1").map_err(sql)?;
        overlay.for_each_written(&ns_name(ns), &mut |id, w| {
            match w {
                Written::Deleted => delete.execute([id]),
                Written::Present(hash) => {
                    insert.execute(params![id, hash.map_or(Vec::new(), |h| h.to_vec())])
                }
            }
            .map_err(sql)?;
            Ok(())
        })?;
        counts.snapshot = (tx.query_row("SELECT count(*) FROM docs", [], |r| r.get::<_, i64>(0)))
            .map_err(sql)? as u64;
        let mut check = tx
            .prepare(
                "UPDATE docs SET state = CASE WHEN hash = ?2 OR hash = x'' THEN 1 ELSE 2 END \
                 WHERE id = ?1",
            )
            .map_err(sql)?;
        for_each_live_doc(conn, ns, cancel, &mut |d| {
            counts.live += 1;
            run_with_hash(&mut check, d, ns)
        })?;
    }
    counts.missing = id_list(&tx, UNSEEN, id_limit)?;
    counts.changed = id_list(&tx, CHANGED, id_limit)?;
    tx.commit().map_err(sql)?;
    Ok(counts)
}

/// Runs `stmt` with a document's `_id` key and content hash.
fn run_with_hash(stmt: &mut rusqlite::Statement, d: &RawDocument, ns: &DumpNs) -> Result<()> {
    let hash = blake3::hash(d.as_bytes());
    stmt.execute(params![id_key(d, ns)?, hash.as_bytes().as_slice()])
        .map_err(sql)?;
    Ok(())
}

/// The `_id`s in `state`: their number and the first `limit` of them.
fn id_list(db: &rusqlite::Connection, state: i64, limit: Option<usize>) -> Result<IdList> {
    let total: i64 = db
        .query_row("SELECT count(*) FROM docs WHERE state = ?1", [state], |r| {
            r.get(0)
        })
        .map_err(sql)?;
    let limit = limit.map_or(-1, |l| l as i64);
    let mut stmt = db
        .prepare("SELECT id FROM docs WHERE state = ?1 ORDER BY n LIMIT ?2")
        .map_err(sql)?;
    let ids = stmt
        .query_map(params![state, limit], |r| r.get::<_, Vec<u8>>(0))
        .map_err(sql)?
        .map(|k| k.map(|k| id_text(&k)))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    Ok(IdList {
        total: total as u64,
        ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn passwords_are_left_out_of_uris() {
        let cases = [
            (
                "mongodb://u:p%40ss@h:1/db?x=1",
                "mongodb://u@h:1/db?x=1",
                true,
            ),
            ("mongodb://u:pw@a:1,b:2", "mongodb://u@a:1,b:2", true),
            (
                "mongodb://u@h/?authMechanism=MONGODB-X509",
                "mongodb://u@h/?authMechanism=MONGODB-X509",
                false,
            ),
            (
                "mongodb+srv://u:p@c.example.net/",
                "mongodb+srv://u@c.example.net/",
                true,
            ),
            ("mongodb://h:1/?a=b@c", "mongodb://h:1/?a=b@c", false),
            ("not a uri", "not a uri", false),
        ];
        for (uri, want, had) in cases {
            assert_eq!(uri_without_password(uri), (want.to_string(), had), "{uri}");
        }
    }

    #[test]
    fn id_keys_keep_the_type_and_read_back() {
        let int = rawdoc! {"_id": 7, "x": 1};
        let long = rawdoc! {"_id": 7_i64};
        let ns = DumpNs {
            db: "d".into(),
            meta: crate::sources::mongodb::metadata::CollMeta {
                name: "c".into(),
                kind: "collection".into(),
                options: Document::new(),
                id_index: None,
                indexes: Vec::new(),
                uuid: None,
            },
            bson: None,
            target: ("d".into(), "c".into()),
        };
        let (a, b) = (id_key(&int, &ns).unwrap(), id_key(&long, &ns).unwrap());
        assert_ne!(a, b, "an int32 and an int64 _id are different keys");
        assert_eq!(id_text(&a), "7");
        assert_eq!(id_text(&rawdoc! {"_id": "x\"y"}.into_bytes()), r#""x\"y""#);
        assert!(id_key(&rawdoc! {"x": 1}, &ns).is_err());
    }
}
