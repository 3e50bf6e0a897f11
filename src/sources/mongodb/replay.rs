//! Applying oplog entries to a server through ordinary commands (insert as upsert, update,
//! delete, create, drop, renameCollection, collMod, createIndexes, dropIndexes…), never the
//! `applyOps` command, which not every server offers. Entries apply idempotently, as the
//! consistency window overlaps documents the export already read. Transactions are held
//! back until they commit: mongod's `applyOps` with `partialTxn` until the final one or
//! `commitTransaction`, and entries that each carry `lsid`/`txnNumber` until the
//! transaction's last entry.
use super::connection::from_ts;
use super::diff;
use super::namespace::{NsFilter, Renames, split_ns};
use super::{Conn, MongoError};
use crate::repo::snapshot::BsonTime;
use bson::{Bson, Document, doc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("oplog entry at {ts}: unknown command {command:?}")]
    Unknown { ts: BsonTime, command: String },
    #[error("oplog entry at {ts} is malformed: {message}")]
    Malformed { ts: BsonTime, message: String },
    #[error("replaying the oplog entry at {ts} on {ns}: {message}")]
    Apply {
        ts: BsonTime,
        ns: String,
        message: String,
    },
}

type Result<T> = std::result::Result<T, ReplayError>;

/// Server error codes that mean an entry's effect is already there.
const ALREADY_DONE: &[i32] = &[
    26,    // NamespaceNotFound: dropping or renaming what is gone
    27,    // IndexNotFound
    48,    // NamespaceExists
    85,    // IndexOptionsConflict: the index exists
    86,    // IndexKeySpecsConflict
    11000, // DuplicateKey
];

/// Entries of one transaction, identified by session and transaction number.
type TxnKey = (Vec<u8>, i64);

/// What an import creates after replaying the oplog, by target namespace (`db.coll`): the
/// dump's index specs and views. Replayed drops and renames carry over to them, so that the
/// indexes and views of a collection dropped, renamed or re-created since the dump are not
/// built where the collection no longer is.
#[derive(Debug, Default)]
pub struct Deferred {
    pub indexes: BTreeMap<String, Vec<Document>>,
    pub views: BTreeSet<String>,
}

impl Deferred {
    fn dropped(&mut self, ns: &str) {
        self.indexes.remove(ns);
        self.views.remove(ns);
    }

    fn database_dropped(&mut self, db: &str) {
        let prefix = format!("{db}.");
        self.indexes.retain(|ns, _| !ns.starts_with(&prefix));
        self.views.retain(|ns| !ns.starts_with(&prefix));
    }

    fn renamed(&mut self, from: &str, to: &str) {
        self.dropped(to);
        if let Some(specs) = self.indexes.remove(from) {
            self.indexes.insert(to.to_string(), specs);
        }
    }

    /// `index` as `dropIndexes` takes it: a name, `"*"`, a key pattern, or a list of names.
    fn index_dropped(&mut self, ns: &str, index: &Bson) {
        let Some(specs) = self.indexes.get_mut(ns) else {
            return;
        };
        specs.retain(|spec| match index {
            Bson::String(name) if name == "*" => false,
            Bson::String(name) => spec.get_str("name").ok() != Some(name),
            Bson::Document(key) => spec.get_document("key").ok() != Some(key),
            Bson::Array(names) => !names.iter().any(|n| {
                n.as_str()
                    .is_some_and(|n| spec.get_str("name").ok() == Some(n))
            }),
            _ => true,
        });
    }
}

/// Writes to send together: consecutive `update` (or `delete`) statements on one collection,
/// as one ordered command, so that replay costs a round trip per batch, not per entry.
struct Batch {
    db: String,
    /// `update` or `delete`.
    kind: String,
    coll: String,
    statements: Vec<Bson>,
    bytes: usize,
    /// The last entry's time and namespace, for errors.
    ts: BsonTime,
    ns: String,
}

/// Statements and bytes of a batch (below the server's 100,000 writes and 16 MiB commands).
const BATCH_STATEMENTS: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

/// Where a replay's commands go: a server ([`Server`]), or a model of the database's state
/// (the MongoDB scan's).
pub trait Target {
    /// Runs a command. `Ok(Some(i))`: write statement `i` failed because its effect is
    /// already there (an ordered write command stops there); an error is the server's
    /// message.
    fn run(&mut self, db: &str, cmd: Document) -> std::result::Result<Option<usize>, String>;

    /// The document `q` selects in `db.coll` now, if any: the base of an update whose diff
    /// names no update operator can address.
    fn current(
        &mut self,
        db: &str,
        coll: &str,
        q: &Document,
    ) -> std::result::Result<Option<Document>, String>;
}

/// A server as a replay's target.
pub struct Server<'a>(pub &'a Conn);

impl Target for Server<'_> {
    fn run(&mut self, db: &str, cmd: Document) -> std::result::Result<Option<usize>, String> {
        let conn = self.0;
        let reply = match conn.block_on(conn.client().database(db).run_command(cmd)) {
            Ok(r) => r,
            Err(e) if super::error_code(&e).is_some_and(|c| ALREADY_DONE.contains(&c)) => {
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        match reply.get_array("writeErrors").ok().and_then(|w| w.first()) {
            Some(Bson::Document(w)) if ALREADY_DONE.contains(&w.get_i32("code").unwrap_or(0)) => {
                Ok(Some(w.get_i32("index").unwrap_or(0).max(0) as usize))
            }
            Some(Bson::Document(w)) => Err(w.get_str("errmsg").unwrap_or("write error").into()),
            _ => Ok(None),
        }
    }

    fn current(
        &mut self,
        db: &str,
        coll: &str,
        q: &Document,
    ) -> std::result::Result<Option<Document>, String> {
        let collection = self.0.client().database(db).collection::<Document>(coll);
        (self.0.block_on(collection.find_one(q.clone()))).map_err(|e| e.to_string())
    }
}

pub struct Replayer<'a, T: Target = Server<'a>> {
    target: T,
    batch: Option<Batch>,
    filter: &'a NsFilter,
    renames: &'a Renames,
    /// mongod's multi-entry transactions (`applyOps` with `partialTxn`), by transaction.
    partial: HashMap<TxnKey, Vec<Document>>,
    /// Entries carrying `lsid`/`txnNumber` of the transaction being read.
    pending: Option<(TxnKey, BsonTime, Vec<Document>)>,
    pub applied: u64,
    pub last: Option<BsonTime>,
    /// Kept in step with the replayed drops and renames.
    pub deferred: Deferred,
}

impl<'a> Replayer<'a> {
    pub fn new(conn: &'a Conn, filter: &'a NsFilter, renames: &'a Renames) -> Replayer<'a> {
        Replayer::to(Server(conn), filter, renames)
    }
}

impl<'a, T: Target> Replayer<'a, T> {
    /// A replay into `target`.
    pub(crate) fn to(target: T, filter: &'a NsFilter, renames: &'a Renames) -> Replayer<'a, T> {
        Replayer {
            target,
            batch: None,
            filter,
            renames,
            partial: HashMap::new(),
            pending: None,
            applied: 0,
            last: None,
            deferred: Deferred::default(),
        }
    }

    /// The target, once the replay is over.
    pub(crate) fn into_target(self) -> T {
        self.target
    }

    /// Applies (or holds back) one top-level oplog entry. Writes are sent in batches: the
    /// server shows them after [`Replayer::sync`] or the next command entry.
    pub fn entry(&mut self, e: Document) -> std::result::Result<(), MongoError> {
        let ts = ts_of(&e)?;
        self.last = Some(ts);
        let key = txn_key(&e);
        if self
            .pending
            .as_ref()
            .is_some_and(|(k, t, _)| Some(k) != key.as_ref() || *t != ts)
        {
            self.flush()?;
        }
        match key {
            Some(k) if !is_apply_ops(&e) && op_of(&e) != "c" => {
                let (_, _, entries) = self.pending.get_or_insert((k, ts, Vec::new()));
                entries.push(e);
                Ok(())
            }
            _ => Ok(self.apply(e)?),
        }
    }

    /// Applies a transaction still held back and sends the writes batched so far; call
    /// after the last entry.
    pub(crate) fn flush(&mut self) -> std::result::Result<(), MongoError> {
        if let Some((_, _, entries)) = self.pending.take() {
            for e in entries {
                self.apply(e)?;
            }
        }
        Ok(self.send_batch()?)
    }

    /// Sends the writes batched so far, so that the server shows every entry applied.
    pub fn sync(&mut self) -> std::result::Result<(), MongoError> {
        Ok(self.send_batch()?)
    }

    /// Adds a write command's statements to the batch, sending the batch first when it holds
    /// another kind of write, another collection, or is full.
    fn queue(&mut self, db: &str, cmd: Document, ts: BsonTime, ns: &str) -> Result<()> {
        let kind = cmd.keys().next().cloned().unwrap_or_default();
        let coll = cmd.get_str(&kind).unwrap_or_default().to_string();
        let list = if kind == "delete" {
            "deletes"
        } else {
            "updates"
        };
        let statements = cmd.get_array(list).cloned().unwrap_or_default();
        let bytes = statements.iter().map(bson_len).sum::<usize>();
        let fits = self.batch.as_ref().is_some_and(|b| {
            b.db == db
                && b.kind == kind
                && b.coll == coll
                && b.statements.len() < BATCH_STATEMENTS
                && b.bytes + bytes <= BATCH_BYTES
        });
        if !fits {
            self.send_batch()?;
        }
        let b = self.batch.get_or_insert_with(|| Batch {
            db: db.to_string(),
            kind,
            coll,
            statements: Vec::new(),
            bytes: 0,
            ts,
            ns: ns.to_string(),
        });
        b.statements.extend(statements);
        b.bytes += bytes;
        (b.ts, b.ns) = (ts, ns.to_string());
        Ok(())
    }

    /// Sends the batch as one ordered command. A statement whose effect is already there
    /// stops an ordered command, so the rest is sent again from the one after it.
    fn send_batch(&mut self) -> Result<()> {
        let Some(b) = self.batch.take() else {
            return Ok(());
        };
        let list = if b.kind == "delete" {
            "deletes"
        } else {
            "updates"
        };
        let mut rest = b.statements;
        while !rest.is_empty() {
            let mut cmd = doc! {&b.kind: &b.coll};
            cmd.insert(list, rest.clone());
            match self.run(&b.db, cmd, b.ts, &b.ns)? {
                Some(failed) => rest.drain(..=failed.min(rest.len() - 1)),
                None => break,
            };
        }
        Ok(())
    }

    fn apply(&mut self, e: Document) -> Result<()> {
        let ts = ts_of(&e)?;
        match op_of(&e) {
            "n" => Ok(()),
            "i" | "u" | "d" => self.crud(&e, ts),
            "c" => self.command(&e, ts),
            other => Err(ReplayError::Malformed {
                ts,
                message: format!("unknown op {other:?}"),
            }),
        }
    }

    /// The target namespace of an entry's `ns`, or None when the filters leave it out.
    fn target(&self, ns: &str) -> Option<(String, String)> {
        let (db, coll) = split_ns(ns);
        let taken = self.filter.takes(&db, &coll);
        taken.then(|| self.renames.apply(&db, &coll))
    }

    fn crud(&mut self, e: &Document, ts: BsonTime) -> Result<()> {
        let ns = e.get_str("ns").unwrap_or_default();
        let Some((db, coll)) = self.target(ns) else {
            return Ok(());
        };
        let o = get_doc(e, "o", ts)?;
        let cmds = match op_of(e) {
            "i" => vec![upsert(&coll, id_filter(o, ts)?, o.clone())],
            "d" => vec![doc! {"delete": &coll, "deletes": [{"q": id_filter(o, ts)?, "limit": 1}]}],
            _ => {
                let q = id_filter(get_doc(e, "o2", ts)?, ts)?;
                match o.get_document("diff") {
                    Ok(d) if diff::has_unaddressable_names(d) => {
                        self.send_batch()?;
                        self.replacement(&db, &coll, q, d, ts, ns)?
                    }
                    _ => update_commands(&coll, q, o, ts)?,
                }
            }
        };
        for cmd in cmds {
            self.queue(&db, cmd, ts, ns)?;
        }
        self.applied += 1;
        Ok(())
    }

    /// The document as it is now with `d` applied, as a replacement; nothing when it is gone.
    fn replacement(
        &mut self,
        db: &str,
        coll: &str,
        q: Document,
        d: &Document,
        ts: BsonTime,
        ns: &str,
    ) -> Result<Vec<Document>> {
        let current =
            (self.target.current(db, coll, &q)).map_err(|message| ReplayError::Apply {
                ts,
                ns: ns.to_string(),
                message,
            })?;
        Ok(current
            .map(|mut doc| {
                diff::apply(&mut doc, d);
                update(coll, &q, doc)
            })
            .into_iter()
            .collect())
    }

    fn command(&mut self, e: &Document, ts: BsonTime) -> Result<()> {
        let o = get_doc(e, "o", ts)?;
        self.send_batch()?;
        let name = o.keys().next().cloned().unwrap_or_default();
        let (db, _) = split_ns(e.get_str("ns").unwrap_or_default());
        match name.as_str() {
            "applyOps" => self.apply_ops(e, o, ts),
            "commitTransaction" => self.commit(e),
            "abortTransaction" => {
                txn_key(e).map(|k| self.partial.remove(&k));
                Ok(())
            }
            "startIndexBuild" | "abortIndexBuild" | "dbCheck" => Ok(()),
            "dropDatabase" => self.drop_database(&db, ts),
            "renameCollection" => self.rename(o, ts),
            "create" | "drop" | "collMod" | "createIndexes" | "commitIndexBuild"
            | "dropIndexes" | "deleteIndexes" => self.ddl(&db, &name, o.clone(), ts),
            _ => Err(ReplayError::Unknown { ts, command: name }),
        }
    }

    fn apply_ops(&mut self, e: &Document, o: &Document, ts: BsonTime) -> Result<()> {
        let ops = o
            .get_array("applyOps")
            .map_err(|m| malformed(ts, m))?
            .iter()
            .filter_map(Bson::as_document)
            .map(|d| with_ts(d.clone(), ts))
            .collect::<Vec<_>>();
        match (
            o.get_bool("partialTxn").unwrap_or(false) || e.get_bool("prepare").unwrap_or(false),
            txn_key(e),
        ) {
            (true, Some(k)) => {
                self.partial.entry(k).or_default().extend(ops);
                Ok(())
            }
            (_, key) => {
                let held = key
                    .and_then(|k| self.partial.remove(&k))
                    .unwrap_or_default();
                held.into_iter()
                    .chain(ops)
                    .try_for_each(|op| self.apply(op))
            }
        }
    }

    fn commit(&mut self, e: &Document) -> Result<()> {
        let held = txn_key(e)
            .and_then(|k| self.partial.remove(&k))
            .unwrap_or_default();
        held.into_iter().try_for_each(|op| self.apply(op))
    }

    fn drop_database(&mut self, db: &str, ts: BsonTime) -> Result<()> {
        if !self.filter.takes_db(db) || matches!(db, "local" | "config" | "admin") {
            return Ok(());
        }
        let (target, _) = self.renames.apply(db, "x");
        self.run(&target, doc! {"dropDatabase": 1}, ts, db)?;
        self.deferred.database_dropped(&target);
        self.applied += 1;
        Ok(())
    }

    fn rename(&mut self, o: &Document, ts: BsonTime) -> Result<()> {
        let from = o
            .get_str("renameCollection")
            .map_err(|m| malformed(ts, m))?;
        let to = o.get_str("to").map_err(|m| malformed(ts, m))?;
        let (Some(f), Some(t)) = (self.target(from), self.target(to)) else {
            return Ok(());
        };
        let cmd = doc! {
            "renameCollection": format!("{}.{}", f.0, f.1),
            "to": format!("{}.{}", t.0, t.1),
            "dropTarget": o.get_bool("dropTarget").unwrap_or(false),
        };
        self.run("admin", cmd, ts, from)?;
        (self.deferred).renamed(&format!("{}.{}", f.0, f.1), &format!("{}.{}", t.0, t.1));
        self.applied += 1;
        Ok(())
    }

    /// create, drop, collMod and index commands: the collection renamed, the command as is.
    fn ddl(&mut self, db: &str, name: &str, mut o: Document, ts: BsonTime) -> Result<()> {
        let coll = o.get_str(name).map_err(|m| malformed(ts, m))?.to_string();
        let Some((tdb, tcoll)) = self.target(&format!("{db}.{coll}")) else {
            return Ok(());
        };
        o.insert(name, tcoll.as_str());
        let cmd = match name {
            "commitIndexBuild" => {
                doc! {"createIndexes": &tcoll, "indexes": o.get_array("indexes").cloned().unwrap_or_default()}
            }
            "createIndexes" if !o.contains_key("indexes") => single_index(o, &tcoll),
            "createIndexes" => strip_index_bookkeeping(o),
            "deleteIndexes" => {
                doc! {"dropIndexes": &tcoll, "index": o.get("index").cloned().unwrap_or(Bson::Null)}
            }
            "create" => without(o, &["idIndex"]),
            _ => o,
        };
        let target = format!("{tdb}.{tcoll}");
        if name == "drop" {
            self.deferred.dropped(&target);
        }
        if cmd.contains_key("dropIndexes") {
            let index = cmd.get("index").unwrap_or(&Bson::Null);
            self.deferred.index_dropped(&target, index);
        }
        self.run(&tdb, cmd, ts, &format!("{db}.{coll}"))?;
        self.applied += 1;
        Ok(())
    }

    /// Runs a command; an error whose code says the effect is already there is no error.
    /// Returns the index of the write statement that failed so (an ordered write command
    /// stops there).
    fn run(&mut self, db: &str, cmd: Document, ts: BsonTime, ns: &str) -> Result<Option<usize>> {
        (self.target.run(db, cmd)).map_err(|message| ReplayError::Apply {
            ts,
            ns: ns.to_string(),
            message,
        })
    }
}

/// The encoded size of a statement.
fn bson_len(b: &Bson) -> usize {
    match b {
        Bson::Document(d) => d.to_vec().map_or(0, |v| v.len()),
        _ => 16,
    }
}

fn op_of(e: &Document) -> &str {
    e.get_str("op").unwrap_or_default()
}

fn is_apply_ops(e: &Document) -> bool {
    e.get_document("o")
        .is_ok_and(|o| o.contains_key("applyOps"))
}

fn ts_of(e: &Document) -> Result<BsonTime> {
    e.get_timestamp("ts")
        .map(from_ts)
        .map_err(|m| malformed(BsonTime { t: 0, i: 0 }, m))
}

fn with_ts(mut op: Document, ts: BsonTime) -> Document {
    op.entry("ts")
        .or_insert(Bson::Timestamp(super::connection::to_ts(ts)));
    op
}

fn txn_key(e: &Document) -> Option<TxnKey> {
    let lsid = e.get_document("lsid").ok()?.to_vec().ok()?;
    let n = e
        .get_i64("txnNumber")
        .or_else(|_| e.get_i32("txnNumber").map(i64::from))
        .ok()?;
    Some((lsid, n))
}

fn malformed(ts: BsonTime, m: impl ToString) -> ReplayError {
    ReplayError::Malformed {
        ts,
        message: m.to_string(),
    }
}

fn get_doc<'d>(e: &'d Document, key: &str, ts: BsonTime) -> Result<&'d Document> {
    e.get_document(key)
        .map_err(|m| malformed(ts, format!("{key}: {m}")))
}

fn id_filter(o: &Document, ts: BsonTime) -> Result<Document> {
    let id = o.get("_id").ok_or_else(|| malformed(ts, "no _id"))?;
    Ok(doc! {"_id": id.clone()})
}

fn upsert(coll: &str, q: Document, u: Document) -> Document {
    doc! {"update": coll, "updates": [{"q": q, "u": u, "upsert": true}]}
}

fn update(coll: &str, q: &Document, u: Document) -> Document {
    doc! {"update": coll, "updates": [{"q": q.clone(), "u": u}]}
}

/// The update commands for an `u` entry: a replacement, `$v:2` diff (mongod's `u/i/d/sX`
/// form or the `updatedFields/removedFields/truncatedArrays` form, whose dotted paths cannot
/// name fields with dots; mongod's form then goes through [`diff`]), or update operators.
fn update_commands(coll: &str, q: Document, o: &Document, ts: BsonTime) -> Result<Vec<Document>> {
    let mut ops = UpdateOps::default();
    if let Ok(diff) = o.get_document("diff") {
        ops.diff(diff, "");
    } else if o.keys().any(|k| k.starts_with('$')) {
        let ops: Document = o
            .iter()
            .filter(|(k, _)| *k != "$v")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return Ok(vec![update(coll, &q, ops)]);
    } else {
        return Ok(vec![upsert(coll, q, o.clone())]);
    }
    let _ = ts;
    Ok(ops.commands(coll, &q))
}

/// `$set`/`$unset` paths and array truncations gathered from a diff.
#[derive(Default)]
struct UpdateOps {
    set: Document,
    unset: Document,
    truncate: Vec<(String, i64)>,
}

impl UpdateOps {
    fn diff(&mut self, diff: &Document, prefix: &str) {
        if diff.contains_key("updatedFields") || diff.contains_key("removedFields") {
            return self.change_stream_diff(diff);
        }
        for (k, v) in diff {
            let path = |name: &str| join(prefix, name);
            match (k.as_str(), v) {
                ("u" | "i", Bson::Document(fields)) => fields.iter().for_each(|(f, val)| {
                    self.set.insert(path(f), val.clone());
                }),
                ("d", Bson::Document(fields)) => fields.keys().for_each(|f| {
                    self.unset.insert(path(f), "");
                }),
                ("a", _) => {}
                ("l", n) => self.truncate.push((
                    prefix.to_string(),
                    n.as_i64().or(n.as_i32().map(i64::from)).unwrap_or(0),
                )),
                (k, Bson::Document(sub)) if k.starts_with('s') => self.diff(sub, &path(&k[1..])),
                (k, val) if k.starts_with('u') => {
                    self.set.insert(path(&k[1..]), val.clone());
                }
                _ => {}
            }
        }
    }

    fn change_stream_diff(&mut self, diff: &Document) {
        if let Ok(fields) = diff.get_document("updatedFields") {
            fields.iter().for_each(|(f, v)| {
                self.set.insert(f.clone(), v.clone());
            });
        }
        for f in diff
            .get_array("removedFields")
            .into_iter()
            .flatten()
            .filter_map(Bson::as_str)
        {
            self.unset.insert(f, "");
        }
        for t in diff
            .get_array("truncatedArrays")
            .into_iter()
            .flatten()
            .filter_map(Bson::as_document)
        {
            let size = t
                .get("newSize")
                .and_then(|n| n.as_i64().or(n.as_i32().map(i64::from)));
            if let (Ok(field), Some(size)) = (t.get_str("field"), size) {
                self.truncate.push((field.to_string(), size));
            }
        }
    }

    /// Truncations first (they cannot share an update with `$set` on the same array).
    fn commands(self, coll: &str, q: &Document) -> Vec<Document> {
        let mut out = Vec::new();
        if !self.truncate.is_empty() {
            let push: Document = self
                .truncate
                .into_iter()
                .map(|(p, n)| (p, Bson::Document(doc! {"$each": [], "$slice": n})))
                .collect();
            out.push(update(coll, q, doc! {"$push": push}));
        }
        let mut u = Document::new();
        if !self.set.is_empty() {
            u.insert("$set", self.set);
        }
        if !self.unset.is_empty() {
            u.insert("$unset", self.unset);
        }
        if !u.is_empty() {
            out.push(update(coll, q, u));
        }
        out
    }
}

fn join(prefix: &str, name: &str) -> String {
    match prefix.is_empty() {
        true => name.to_string(),
        false => format!("{prefix}.{name}"),
    }
}

/// mongod's old single-index `createIndexes` entry: `{createIndexes: c, v, key, name, …}`.
fn single_index(o: Document, coll: &str) -> Document {
    let spec = without(o, &["createIndexes"]);
    doc! {"createIndexes": coll, "indexes": [strip_spec(spec)]}
}

fn strip_index_bookkeeping(mut o: Document) -> Document {
    let specs: Vec<Bson> = o
        .get_array("indexes")
        .map(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .map(|s| Bson::Document(strip_spec(s.clone())))
                .collect()
        })
        .unwrap_or_default();
    o.insert("indexes", specs);
    o
}

/// An index spec without what the server adds for itself.
pub(crate) fn strip_spec(spec: Document) -> Document {
    without(
        spec,
        &[
            "ns",
            "multikey",
            "entryFormat",
            "multikeyPaths",
            "buildUUID",
        ],
    )
}

fn without(mut d: Document, keys: &[&str]) -> Document {
    for k in keys {
        d.remove(*k);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_become_set_unset_and_truncations() {
        let diff = doc! {"u": {"a": 1}, "i": {"b": 2}, "d": {"c": false},
        "sx": {"u": {"y": 3}}, "sarr": {"a": true, "l": 2, "u1": "v", "s0": {"i": {"z": 1}}}};
        let mut ops = UpdateOps::default();
        ops.diff(&diff, "");
        assert_eq!(
            ops.set,
            doc! {"a": 1, "b": 2, "x.y": 3, "arr.1": "v", "arr.0.z": 1}
        );
        assert_eq!(ops.unset, doc! {"c": ""});
        let cmds = ops.commands("c", &doc! {"_id": 1});
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            cmds[0],
            doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$push": {"arr": {"$each": [], "$slice": 2_i64}}}}]}
        );
        let cs = doc! {"updatedFields": {"p.q": 1}, "removedFields": ["r"], "truncatedArrays": [{"field": "t", "newSize": 1}]};
        let mut ops = UpdateOps::default();
        ops.diff(&cs, "");
        assert_eq!(
            (ops.set.clone(), ops.unset.clone()),
            (doc! {"p.q": 1}, doc! {"r": ""})
        );
        assert_eq!(ops.truncate, vec![("t".to_string(), 1)]);
    }

    #[test]
    fn replacements_and_operator_updates() {
        let q = doc! {"_id": 1};
        let r = update_commands(
            "c",
            q.clone(),
            &doc! {"_id": 1, "x": 2},
            BsonTime { t: 1, i: 1 },
        )
        .unwrap();
        assert_eq!(r, vec![upsert("c", q.clone(), doc! {"_id": 1, "x": 2})]);
        let r = update_commands(
            "c",
            q.clone(),
            &doc! {"$v": 1, "$set": {"x": 2}},
            BsonTime { t: 1, i: 1 },
        )
        .unwrap();
        assert_eq!(r, vec![update("c", &q, doc! {"$set": {"x": 2}})]);
        assert_eq!(
            single_index(
                doc! {"createIndexes": "a", "v": 2, "key": {"k": 1}, "name": "k_1"},
                "b"
            ),
            doc! {"createIndexes": "b", "indexes": [{"v": 2, "key": {"k": 1}, "name": "k_1"}]}
        );
    }
}
