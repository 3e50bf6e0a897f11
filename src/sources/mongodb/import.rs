//! Restore of a snapshot's MongoDB dump into a server: collections created with their
//! options first, documents inserted in parallel batches, the consistency window (and any
//! further oplog) replayed, indexes built, views created last. Existing collections whose
//! options differ from the dump's stop the restore before anything is written unless
//! `drop` replaces them.
use super::export::{docs_at, list_collections};
use super::follow;
use super::metadata::CollMeta;
use super::namespace::{NsFilter, Renames, split_ns};
use super::replay::{Deferred, Replayer, strip_spec};
use super::{Conn, MongoError, Result, cmd_err, error_code, stream};
use crate::cancel::Cancel;
use crate::observer::{Counters, Observer, Phase};
use crate::repo::id::{SnapshotId, TreeId};
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::BsonTime;
use crate::repo::tree::Node;
use crate::vfs;
use bson::{Bson, Document, RawDocumentBuf, doc, rawdoc};
use futures_util::StreamExt;
use serde::Serialize;

/// Bytes of documents in one insert batch at most (the driver splits further as needed).
const BATCH_BYTES: usize = 8 << 20;
const DUPLICATE_KEY: i32 = 11000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Duplicate keys are errors (counted per namespace); the rest is inserted.
    Insert,
    /// Documents with the same `_id` are replaced.
    Upsert,
    /// Documents already there are kept.
    SkipExisting,
}

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub filter: NsFilter,
    pub renames: Renames,
    pub drop: bool,
    pub mode: Mode,
    pub indexes: bool,
    pub users: bool,
    pub parallel: usize,
    pub batch_size: usize,
    pub dry_run: bool,
    /// Replay oplog entries up to and including this time (all of the window when None).
    pub until: Option<BsonTime>,
    /// Entries of the further oplog files at or before this time (the dump's cluster
    /// time) are already in the dump and its window, and skipped.
    pub after: Option<BsonTime>,
    /// Stops the import between batches of documents or oplog entries.
    pub cancel: Cancel,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NsCounts {
    pub ns: String,
    pub documents: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub skipped: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

impl NsCounts {
    fn add(&mut self, o: &NsCounts) {
        self.documents += o.documents;
        self.inserted += o.inserted;
        self.replaced += o.replaced;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.errors.extend(o.errors.iter().take(5).cloned());
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub namespaces: Vec<NsCounts>,
    pub total: NsCounts,
    pub views: Vec<String>,
    pub indexes_built: u64,
    pub oplog_applied: u64,
    pub replayed_until: Option<BsonTime>,
    /// Index, view and user errors (document errors are counted per namespace).
    pub errors: Vec<String>,
}

/// One namespace of the dump and where it goes.
#[derive(Clone)]
pub struct DumpNs {
    pub db: String,
    pub meta: CollMeta,
    pub bson: Option<Node>,
    pub target: (String, String),
}

impl DumpNs {
    fn target_ns(&self) -> String {
        format!("{}.{}", self.target.0, self.target.1)
    }
}

/// The dump below `/mongodb` of a snapshot tree.
pub struct Dump {
    pub namespaces: Vec<DumpNs>,
    pub oplog: Option<Node>,
    pub users: Option<Node>,
    pub roles: Option<Node>,
}

/// A point-in-time restore, planned: the newest snapshot whose dump is consistent at or
/// before `at`, and the archived oplog slices that carry it forward to `at`.
pub struct PointInTime {
    pub snapshot: SnapshotId,
    /// When the snapshot's dump was consistent.
    pub time: BsonTime,
    pub at: BsonTime,
    tree: TreeId,
    /// The oplog file of each slice to replay after the dump, oldest first.
    oplog: Vec<Node>,
}

impl PointInTime {
    /// How many archived oplog slices are replayed after the dump.
    pub fn slices(&self) -> usize {
        self.oplog.len()
    }
}

/// Plans restoring the server as it was at `at` from `repo`'s snapshots and oplog slices
/// (`mongo follow`), without connecting to any server.
pub fn plan_at(repo: &IndexedRepo, at: BsonTime) -> Result<PointInTime> {
    let (all, _) = repo.snapshots()?;
    let (snapshot, time, slices) =
        follow::plan_at(&all, at).map_err(|reason| MongoError::NoPointInTime { at, reason })?;
    let oplog = slices
        .iter()
        .map(|s| vfs::node_at(repo, s.tree, b"/mongodb-oplog/oplog.bson"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(PointInTime {
        snapshot,
        time,
        at,
        tree: repo.load_snapshot(snapshot)?.tree,
        oplog,
    })
}

/// Restores `plan` into `conn`'s server: the snapshot's dump (as `opts` filter and rename
/// it), then its consistency window and the slices' oplog replayed up to `plan.at`.
pub fn restore_at(
    repo: &IndexedRepo,
    conn: &Conn,
    plan: &PointInTime,
    opts: &ImportOptions,
    observer: &dyn Observer,
) -> Result<ImportReport> {
    let opts = ImportOptions {
        after: Some(plan.time),
        ..opts.clone()
    };
    let dump = read_dump(repo, plan.tree, &opts.filter, &opts.renames)?;
    import(repo, conn, &dump, &plan.oplog, &opts, observer)
}

/// Reads the dump's directory and metadata files; keeps the namespaces the filters take.
pub fn read_dump(
    repo: &IndexedRepo,
    tree: TreeId,
    filter: &NsFilter,
    renames: &Renames,
) -> Result<Dump> {
    let root = vfs::node_at(repo, tree, b"/mongodb").map_err(|_| MongoError::NoDump)?;
    let top = repo.load_tree(&root.subtree().ok_or(MongoError::NoDump)?)?;
    let mut dump = Dump {
        namespaces: Vec::new(),
        oplog: top.find(b"oplog.bson").cloned(),
        users: None,
        roles: None,
    };
    for db_node in top.nodes.iter().filter(|n| n.subtree().is_some()) {
        let db = String::from_utf8_lossy(&db_node.name).into_owned();
        let files = repo.load_tree(&db_node.subtree().expect("a directory"))?;
        if db == "admin" {
            dump.users = files.find(b"system.users.bson").cloned();
            dump.roles = files.find(b"system.roles.bson").cloned();
        }
        for n in files
            .nodes
            .iter()
            .filter(|n| n.name.ends_with(b".metadata.json"))
        {
            let path = format!("/mongodb/{db}/{}", String::from_utf8_lossy(&n.name));
            let text = vfs::read_range(repo, n, 0, n.size)?;
            let meta =
                CollMeta::from_json(&text).map_err(|message| MongoError::Dump { path, message })?;
            if !filter.matches(&db, &meta.name) {
                continue;
            }
            let base = &n.name[..n.name.len() - b".metadata.json".len()];
            let bson = files.find(&[base, b".bson"].concat()).cloned();
            let target = renames.apply(&db, &meta.name);
            dump.namespaces.push(DumpNs {
                db: db.clone(),
                meta,
                bson,
                target,
            });
        }
    }
    if dump.namespaces.is_empty() && !filter.is_empty() {
        return Err(MongoError::NothingMatched {
            what: "namespace of the snapshot",
        });
    }
    Ok(dump)
}

/// Restores `dump` into the server; `more_oplog` are further oplog files replayed after the
/// dump's window (for a point-in-time restore). `observer` sees the phases Writing (the
/// documents, then the oplog) and Indexing, each namespace as it is read, and each batch's
/// documents as `files` (summed: the report's `total.documents`).
pub fn import(
    repo: &IndexedRepo,
    conn: &Conn,
    dump: &Dump,
    more_oplog: &[Node],
    opts: &ImportOptions,
    observer: &dyn Observer,
) -> Result<ImportReport> {
    let conflicts = find_conflicts(conn, dump, opts.drop)?;
    if !conflicts.is_empty() {
        return Err(MongoError::Conflicts(conflicts));
    }
    let mut report = ImportReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if opts.dry_run {
        report.namespaces = dump
            .namespaces
            .iter()
            .map(|n| NsCounts {
                ns: n.target_ns(),
                ..Default::default()
            })
            .collect();
        return Ok(report);
    }
    let collections: Vec<&DumpNs> = dump
        .namespaces
        .iter()
        .filter(|n| !n.meta.is_view())
        .collect();
    for ns in &collections {
        create(conn, ns, opts.drop)?;
    }
    observer.phase(Phase::Writing);
    report.namespaces = insert_all(repo, conn, &collections, opts, observer)?;
    let deferred = deferred(dump, opts.indexes);
    let (applied, last, deferred) =
        replay(repo, conn, dump.oplog.as_ref(), more_oplog, opts, deferred)?;
    (report.oplog_applied, report.replayed_until) = (applied, last);
    observer.phase(Phase::Indexing);
    for (ns, specs) in &deferred.indexes {
        build_indexes(conn, ns, specs.clone(), &mut report);
    }
    let views = dump.namespaces.iter().filter(|n| n.meta.is_view());
    for ns in views.filter(|n| deferred.views.contains(&n.target_ns())) {
        match create(conn, ns, opts.drop) {
            Ok(()) => report.views.push(ns.target_ns()),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    if opts.users {
        restore_users(repo, conn, dump, &mut report)?;
    }
    for n in &report.namespaces {
        report.total.add(n);
    }
    report.total.ns = "total".into();
    Ok(report)
}

/// Existing collections and views whose options differ from the dump's.
fn find_conflicts(conn: &Conn, dump: &Dump, drop: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if drop {
        return Ok(out);
    }
    for ns in &dump.namespaces {
        if let Some(existing) = existing_spec(conn, ns)? {
            let options = existing
                .get_document("options")
                .cloned()
                .unwrap_or_default();
            if options != ns.meta.options {
                out.push(format!(
                    "{}: the server's options {} differ from the snapshot's {}",
                    ns.target_ns(),
                    Bson::Document(options).into_relaxed_extjson(),
                    Bson::Document(ns.meta.options.clone()).into_relaxed_extjson()
                ));
            }
        }
    }
    Ok(out)
}

fn existing_spec(conn: &Conn, ns: &DumpNs) -> Result<Option<Document>> {
    let specs = list_collections(conn, &ns.target.0)?;
    Ok(specs
        .into_iter()
        .find(|s| s.get_str("name").ok() == Some(ns.target.1.as_str())))
}

/// Creates a collection or view with its options (replacing it with `drop`); an existing
/// one with the same options is kept.
fn create(conn: &Conn, ns: &DumpNs, drop: bool) -> Result<()> {
    let (db, coll) = &ns.target;
    if drop {
        match conn.command(db, doc! {"drop": coll}) {
            Err(MongoError::Command { source, .. }) if error_code(&source) == Some(26) => {}
            other => {
                other?;
            }
        }
    } else if existing_spec(conn, ns)?.is_some() {
        return Ok(());
    }
    let mut cmd = doc! {"create": coll};
    cmd.extend(ns.meta.options.clone());
    if let Some(id) = &ns.meta.id_index {
        cmd.insert("idIndex", strip_spec(id.clone()));
    }
    conn.command(db, cmd).map(|_| ())
}

/// A batch of documents for one namespace (its index in the list).
type Batch = (usize, Vec<RawDocumentBuf>);

/// Reads the collections' documents on a thread while the runtime inserts up to
/// `parallel` batches at a time.
fn insert_all(
    repo: &IndexedRepo,
    conn: &Conn,
    colls: &[&DumpNs],
    opts: &ImportOptions,
    observer: &dyn Observer,
) -> Result<Vec<NsCounts>> {
    let mut counts: Vec<NsCounts> = colls
        .iter()
        .map(|n| NsCounts {
            ns: n.target_ns(),
            ..Default::default()
        })
        .collect();
    let parallel = opts.parallel.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(parallel * 2);
    std::thread::scope(|s| {
        let batch_size = opts.batch_size.max(1);
        let cancel = &opts.cancel;
        let reader = s.spawn(move || read_batches(repo, colls, batch_size, cancel, &tx, observer));
        let stream =
            futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|b| (b, rx)) });
        let inserts = stream
            .map(|(i, docs)| insert_batch(conn, &colls[i].target, opts.mode, docs, i))
            .buffer_unordered(parallel)
            .for_each(|(i, c)| {
                observer.add(Counters::files(c.documents));
                counts[i].add(&c);
                async {}
            });
        conn.block_on(inserts);
        reader.join().expect("reader panicked")
    })?;
    Ok(counts)
}

fn read_batches(
    repo: &IndexedRepo,
    colls: &[&DumpNs],
    batch_size: usize,
    cancel: &Cancel,
    tx: &tokio::sync::mpsc::Sender<Batch>,
    observer: &dyn Observer,
) -> Result<()> {
    for (i, ns) in colls.iter().enumerate() {
        let Some(node) = &ns.bson else { continue };
        observer.item(&ns.target_ns());
        let path = format!("/mongodb/{}/{}", ns.db, String::from_utf8_lossy(&node.name));
        let mut batch = Vec::new();
        let mut bytes = 0;
        let send = |batch: Vec<RawDocumentBuf>| {
            tx.blocking_send((i, batch)).map_err(|_| MongoError::NoDump)
        };
        stream::for_each_batch(repo, node, &path, &mut |docs| {
            cancel.check().map_err(RepoError::from)?;
            for d in docs {
                bytes += d.as_bytes().len();
                batch.push(d);
                if batch.len() >= batch_size || bytes >= BATCH_BYTES {
                    send(std::mem::take(&mut batch))?;
                    bytes = 0;
                }
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(batch)?;
        }
    }
    Ok(())
}

async fn insert_batch(
    conn: &Conn,
    target: &(String, String),
    mode: Mode,
    docs: Vec<RawDocumentBuf>,
    i: usize,
) -> (usize, NsCounts) {
    let n = docs.len() as u64;
    let mut c = match mode {
        Mode::Upsert => upsert_batch(conn, target, docs).await,
        _ => insert_many(conn, target, mode, docs).await,
    };
    c.documents = n;
    (i, c)
}

async fn insert_many(
    conn: &Conn,
    (db, coll): &(String, String),
    mode: Mode,
    docs: Vec<RawDocumentBuf>,
) -> NsCounts {
    use mongodb::error::ErrorKind;
    let n = docs.len() as u64;
    let c = conn
        .client()
        .database(db)
        .collection::<RawDocumentBuf>(coll);
    let err = match c.insert_many(docs).ordered(false).await {
        Ok(_) => {
            return NsCounts {
                inserted: n,
                ..Default::default()
            };
        }
        Err(e) => e,
    };
    let ErrorKind::InsertMany(im) = err.kind.as_ref() else {
        return NsCounts {
            failed: n,
            errors: vec![err.to_string()],
            ..Default::default()
        };
    };
    let write_errors = im.write_errors.as_deref().unwrap_or_default();
    let dups = write_errors
        .iter()
        .filter(|w| w.code == DUPLICATE_KEY)
        .count() as u64;
    let failed = write_errors.len() as u64 - dups;
    let mut counts = NsCounts {
        inserted: n - write_errors.len() as u64,
        ..Default::default()
    };
    match mode {
        Mode::SkipExisting => (counts.skipped, counts.failed) = (dups, failed),
        _ => counts.failed = dups + failed,
    }
    let shown = write_errors
        .iter()
        .filter(|w| mode != Mode::SkipExisting || w.code != DUPLICATE_KEY);
    counts.errors = shown.take(3).map(|w| w.message.clone()).collect();
    counts
}

/// Replaces documents by `_id` (inserting the missing ones) in one `update` command.
async fn upsert_batch(
    conn: &Conn,
    (db, coll): &(String, String),
    docs: Vec<RawDocumentBuf>,
) -> NsCounts {
    let n = docs.len() as u64;
    let mut updates = bson::RawArrayBuf::new();
    for d in docs {
        let Ok(Some(id)) = d.get("_id") else {
            return NsCounts {
                failed: n,
                errors: vec!["a document without _id".into()],
                ..Default::default()
            };
        };
        let q = rawdoc! {"_id": bson::RawBson::from(id)};
        updates.push(rawdoc! {"q": q, "u": d, "upsert": true});
    }
    let cmd = rawdoc! {"update": coll.as_str(), "updates": updates, "ordered": false};
    let reply = match conn.client().database(db).run_raw_command(cmd).await {
        Ok(r) => r,
        Err(e) => {
            return NsCounts {
                failed: n,
                errors: vec![e.to_string()],
                ..Default::default()
            };
        }
    };
    let upserted = reply
        .get_array("upserted")
        .map(|a| a.len() as u64)
        .unwrap_or(0);
    let errors = docs_at(&reply, "writeErrors");
    let matched = reply
        .get_i32("n")
        .map(|v| v as u64)
        .unwrap_or(n)
        .saturating_sub(upserted);
    NsCounts {
        inserted: upserted,
        replaced: matched,
        failed: errors.len() as u64,
        errors: errors
            .iter()
            .take(3)
            .map(|e| e.get_str("errmsg").unwrap_or("write error").to_string())
            .collect(),
        ..Default::default()
    }
}

/// The indexes (with `indexes`) and views of the dump, by target namespace.
fn deferred(dump: &Dump, indexes: bool) -> Deferred {
    let mut d = Deferred::default();
    for ns in &dump.namespaces {
        if ns.meta.is_view() {
            d.views.insert(ns.target_ns());
            continue;
        }
        let specs: Vec<Document> = (ns.meta.indexes.iter())
            .filter(|s| s.get_str("name").ok() != Some("_id_"))
            .cloned()
            .map(strip_spec)
            .collect();
        if indexes && !specs.is_empty() {
            d.indexes.insert(ns.target_ns(), specs);
        }
    }
    d
}

/// Replays the dump's window, then further oplog files (skipping what the dump already
/// holds), up to `opts.until`; returns entries applied, the last time, and `deferred` as
/// the replayed drops and renames left it.
fn replay(
    repo: &IndexedRepo,
    conn: &Conn,
    window: Option<&Node>,
    more: &[Node],
    opts: &ImportOptions,
    deferred: Deferred,
) -> Result<(u64, Option<BsonTime>, Deferred)> {
    let mut r = Replayer::new(conn, &opts.filter, &opts.renames);
    r.deferred = deferred;
    let files = window
        .map(|w| (w, None))
        .into_iter()
        .chain(more.iter().map(|n| (n, opts.after)));
    for (node, after) in files {
        stream::for_each_batch(repo, node, "oplog", &mut |docs| {
            opts.cancel.check().map_err(RepoError::from)?;
            for d in docs {
                let entry = Document::try_from(&d).map_err(|e| MongoError::Dump {
                    path: "oplog".into(),
                    message: e.to_string(),
                })?;
                let ts = entry
                    .get_timestamp("ts")
                    .map(super::connection::from_ts)
                    .ok();
                if after.is_some_and(|a| ts.is_some_and(|t| t <= a)) {
                    continue;
                }
                if opts.until.is_some_and(|u| ts.is_some_and(|t| t > u)) {
                    break;
                }
                r.entry(entry)?;
            }
            Ok(())
        })?;
    }
    r.flush()?;
    Ok((r.applied, r.last, r.deferred))
}

/// Builds `specs` on `ns` (`db.coll`).
fn build_indexes(conn: &Conn, ns: &str, specs: Vec<Document>, report: &mut ImportReport) {
    if specs.is_empty() {
        return;
    }
    let (db, coll) = split_ns(ns);
    let n = specs.len() as u64;
    match conn.command(&db, doc! {"createIndexes": coll, "indexes": specs}) {
        Ok(_) => report.indexes_built += n,
        Err(e) => report.errors.push(format!("indexes of {ns}: {e}")),
    }
}

/// Roles through `createRole`; users with their credentials into `admin.system.users`
/// (what servers allow for restores; a server that refuses gets each user reported).
fn restore_users(
    repo: &IndexedRepo,
    conn: &Conn,
    dump: &Dump,
    report: &mut ImportReport,
) -> Result<()> {
    for (node, is_users) in [(&dump.roles, false), (&dump.users, true)] {
        let Some(node) = node else { continue };
        stream::for_each_batch(
            repo,
            node,
            "/mongodb/admin/system.users.bson",
            &mut |docs| {
                for d in docs.iter().filter_map(|d| Document::try_from(d).ok()) {
                    if let Err(e) = restore_principal(conn, d, is_users) {
                        report.errors.push(e.to_string());
                    }
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

fn restore_principal(conn: &Conn, d: Document, is_user: bool) -> Result<()> {
    let db = d.get_str("db").unwrap_or("admin").to_string();
    if is_user {
        let name = d.get_str("user").unwrap_or_default().to_string();
        let c = conn
            .client()
            .database("admin")
            .collection::<Document>("system.users");
        return conn
            .block_on(c.insert_one(d))
            .map(|_| ())
            .map_err(cmd_err(format!("restoring user {db}.{name}")));
    }
    let name = d.get_str("role").unwrap_or_default().to_string();
    let cmd = doc! {"createRole": &name, "privileges": d.get_array("privileges").cloned().unwrap_or_default(), "roles": d.get_array("roles").cloned().unwrap_or_default()};
    conn.command(&db, cmd).map(|_| ())
}
