//! Backup of a MongoDB server into the snapshot tree as mongodump's layout below
//! `/mongodb`: `<db>/<coll>.bson` (raw documents, never re-encoded, cut into chunks only
//! between documents), `<db>/<coll>.metadata.json`, and `oplog.bson` holding the oplog
//! window that passed during the export. Several collections are read at once; memory per
//! collection is bounded by a few read batches, one chunk and one document.
use super::chain::{self, ChainPolicy, FullReason, Parent};
use super::follow::{self, Slice};
use super::metadata::CollMeta;
use super::namespace::{NsFilter, file_name};
use super::{Conn, MongoError, Result, cmd_err, oplog, stream};
use crate::observer::{Counters, Observer};
use crate::ops::archiver::TreeSource;
use crate::repo::blob::BlobType;
use crate::repo::config::ChunkerParams;
use crate::repo::id::SnapshotId;
use crate::repo::repository::IndexedRepo;
use crate::repo::snapshot::{BsonTime, Chain, Incremental, Snapshot, Source, Summary};
use crate::repo::tree::{ChunkRef, Node, NodeKind, Timespec, Tree};
use crate::vfs;
use crate::write::chunker::{Chunker, RecordChunker};
use crate::write::packer::{Packer, PackerStats};
use bson::{Document, RawDocumentBuf, doc};
use futures_util::TryStreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of documents handed from the reading task to the chunking thread at a time.
const READ_BATCH: usize = 1 << 20;
/// Read batches in flight per collection.
const READ_AHEAD: usize = 4;

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub filter: NsFilter,
    /// Also users and roles (`admin/system.users.bson`, `admin/system.roles.bson`).
    pub users: bool,
    /// Capture the oplog window; refuse servers without an oplog.
    pub consistency: bool,
    /// Collections read at once.
    pub parallel: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CollReport {
    pub ns: String,
    pub documents: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportReport {
    pub server: String,
    pub collections: Vec<CollReport>,
    pub views: u64,
    pub users: u64,
    pub roles: u64,
    pub oplog_entries: u64,
    pub window_start: Option<BsonTime>,
    pub cluster_time: Option<BsonTime>,
    /// Bytes of oplog entries read from the server.
    pub oplog_bytes: u64,
    /// Entries taken from `mongo follow`'s archive instead of the server.
    pub oplog_archived_entries: u64,
    /// Set when the dump continues an earlier one.
    pub incremental: Option<Incremental>,
    /// Why the dump is full, when an earlier one could have been continued.
    pub full_reason: Option<String>,
}

/// A MongoDB server as a [`TreeSource`] of a backup.
pub struct MongoExport {
    conn: Conn,
    opts: ExportOptions,
    /// The dump to continue, or why the dump is full.
    parent: std::result::Result<Parent, FullReason>,
    policy: ChainPolicy,
    /// Archived oplog slices that reach on from the parent's cluster time.
    archived: Vec<Slice>,
    report: Mutex<ExportReport>,
}

/// One namespace to dump.
struct Item {
    db: String,
    meta: CollMeta,
}

impl MongoExport {
    /// Checks that the export from `conn` can be consistent (or was asked not to be).
    pub fn new(conn: Conn, opts: ExportOptions) -> Result<MongoExport> {
        if opts.consistency && !conn.has_oplog()? {
            return Err(MongoError::NoOplog {
                server: conn.server.clone(),
            });
        }
        let parent = Err(FullReason::NoParent {
            server: conn.server.clone(),
        });
        Ok(MongoExport {
            conn,
            opts,
            parent,
            policy: ChainPolicy::default(),
            archived: Vec::new(),
            report: Mutex::default(),
        })
    }

    /// Continues the newest dump of `snapshots` that `policy` lets this export continue (see
    /// [`chain::choose`]) with an incremental dump, if the server's oplog still reaches its
    /// cluster time; `policy` is recorded in the snapshot.
    pub fn continuing(
        self,
        snapshots: &[(SnapshotId, Snapshot)],
        policy: ChainPolicy,
    ) -> MongoExport {
        let parent = chain::choose(snapshots, self.server(), &self.scope(), policy);
        let archived = match &parent {
            Ok(p) => follow::chained_from(snapshots, self.server(), p.cluster_time),
            Err(_) => Vec::new(),
        };
        MongoExport {
            parent,
            policy,
            archived,
            ..self
        }
    }

    /// The server's address, as snapshots record it.
    pub fn server(&self) -> &str {
        &self.conn.server
    }

    /// What this export takes, as [`Chain::scope`] records it.
    pub fn scope(&self) -> String {
        chain::scope(&self.opts.filter, self.opts.users)
    }

    pub fn report(&self) -> ExportReport {
        self.report.lock().expect("report lock").clone()
    }

    fn run(&self, packer: &Packer, progress: &dyn Observer) -> Result<(Node, Source, u64)> {
        let w = DumpWriter::new(packer);
        let incremental = match self.continued()? {
            Some(parent) => self.run_incremental(&w, parent)?,
            None => None,
        };
        let (node, source) = match incremental {
            Some(done) => done,
            None => self.run_full(&w, progress)?,
        };
        Ok((node, source, w.entries()))
    }

    /// The dump to continue, if there is one and the server's oplog still reaches it;
    /// otherwise why the dump is full goes into the report. A parent that recorded its last
    /// oplog entry is checked by the incremental read itself (see [`Reading::Continue`]).
    fn continued(&self) -> Result<Option<&Parent>> {
        let reason = match (&self.parent, self.opts.consistency) {
            (_, false) => FullReason::NotConsistent,
            (Err(reason), true) => reason.clone(),
            (Ok(parent), true) if parent.chain.last_entry.is_some() => return Ok(Some(parent)),
            (Ok(parent), true) => match self.conn.oldest_oplog_time()? {
                Some(oldest) if oldest <= parent.cluster_time => return Ok(Some(parent)),
                oldest => rolled_over(parent, oldest),
            },
        };
        self.full_because(reason);
        Ok(None)
    }

    fn full_because(&self, reason: FullReason) {
        self.report.lock().expect("report lock").full_reason = Some(reason.to_string());
    }

    fn run_full(&self, w: &DumpWriter, progress: &dyn Observer) -> Result<(Node, Source)> {
        let start = match self.opts.consistency {
            true => oplog::window_start(&self.conn)?,
            false => None,
        };
        let items = self.plan()?;
        let mut files = self.export_all(w, &items, progress)?;
        if self.opts.users {
            self.export_users(w, &mut files)?;
        }
        let end = self.conn.last_write_time()?;
        let mut root = files
            .into_iter()
            .map(|(db, nodes)| w.dir(db.as_bytes(), nodes))
            .collect::<Result<Vec<_>>>()?;
        let mut last_entry = None;
        if let (Some(start), Some(end)) = (start, end) {
            let window = self.export_window(w, (start, end), Vec::new(), Reading::Server)?;
            last_entry = match window.last_entry {
                Some(last) => Some(last),
                None => oplog::newest_entry(&self.conn, end)?,
            };
            root.push(window.node);
        }
        let databases = items.iter().map(|i| i.db.clone()).collect::<Vec<_>>();
        let mut r = self.report.lock().expect("report lock");
        r.server = self.conn.server.clone();
        r.window_start = start;
        r.cluster_time = end;
        let chain = Chain {
            scope: self.scope(),
            dump_bytes: r.collections.iter().map(|c| c.bytes).sum(),
            oplog_bytes: root
                .iter()
                .find(|n| n.name == b"oplog.bson")
                .map_or(0, |n| n.size),
            full_every: self.policy.full_every,
            max_oplog_percent: self.policy.max_oplog_percent,
            last_entry,
            incremental: None,
        };
        let source = Source::MongoDB {
            server: self.conn.server.clone(),
            databases: dedup(databases),
            cluster_time: end,
            window_start: start,
            consistent: self.opts.consistency,
            chain: Some(chain),
        };
        Ok((w.dir(b"mongodb", root)?, source))
    }

    /// `parent`'s dump with the oplog since its cluster time appended to its `oplog.bson`
    /// (and, with users, the users and roles read again): its collection files are the same
    /// blobs, so only the new oplog is read and stored. None when the oplog turns out to
    /// have rolled over since the parent (the reason is in the report).
    fn run_incremental(&self, w: &DumpWriter, parent: &Parent) -> Result<Option<(Node, Source)>> {
        let repo = w.packer.repo();
        let top = vfs::node_at(repo, parent.tree, b"/mongodb").map_err(|_| MongoError::NoDump)?;
        let mut nodes = repo
            .load_tree(&top.subtree().ok_or(MongoError::NoDump)?)?
            .nodes;
        let end = (self.conn.last_write_time()?)
            .map_or(parent.cluster_time, |e| e.max(parent.cluster_time));
        let before = match nodes.iter().position(|n| n.name == b"oplog.bson") {
            Some(i) => nodes.remove(i).content().to_vec(),
            None => Vec::new(),
        };
        let range = (parent.cluster_time, end);
        let appended_from = before.len();
        let reading = Reading::Continue(parent.chain.last_entry);
        let window = match self.export_window(w, range, before, reading) {
            Err(MongoError::OplogGone { oldest, .. }) => {
                self.full_because(rolled_over(parent, oldest));
                return Ok(None);
            }
            read => read?,
        };
        let rebuilt = match self.opts.users {
            true => Some(self.renew_users(w, &mut nodes)?),
            false => None,
        };
        for n in nodes.iter().filter(|n| Some(&n.name) != rebuilt.as_ref()) {
            w.reused(count_below(repo, n)?);
        }
        let next = parent.next();
        let appended = window.node.content()[appended_from..].to_vec();
        nodes.push(w.file(range_file(next.depth, range).as_bytes(), appended));
        let chain = Chain {
            scope: self.scope(),
            dump_bytes: parent.chain.dump_bytes,
            oplog_bytes: window.node.size,
            full_every: self.policy.full_every,
            max_oplog_percent: self.policy.max_oplog_percent,
            last_entry: window.last_entry.or(parent.chain.last_entry),
            incremental: Some(next),
        };
        nodes.push(window.node);
        let mut r = self.report.lock().expect("report lock");
        r.server = self.conn.server.clone();
        (r.window_start, r.cluster_time) = (parent.window_start, Some(end));
        r.incremental = Some(next);
        let source = Source::MongoDB {
            server: self.conn.server.clone(),
            databases: dedup([parent.databases.clone(), window.databases].concat()),
            cluster_time: Some(end),
            window_start: parent.window_start,
            consistent: true,
            chain: Some(chain),
        };
        Ok(Some((w.dir(b"mongodb", nodes)?, source)))
    }

    /// Replaces the users and roles files of the dump's `admin` directory with the server's
    /// current ones; returns the directory's name.
    fn renew_users(&self, w: &DumpWriter, nodes: &mut Vec<Node>) -> Result<Vec<u8>> {
        let mut files = BTreeMap::new();
        self.export_users(w, &mut files)?;
        let fresh = files.remove("admin").unwrap_or_default();
        let mut admin = match nodes.iter().position(|n| n.name == b"admin") {
            Some(i) => {
                let old = nodes.remove(i);
                let subtree = old.subtree().ok_or(MongoError::NoDump)?;
                w.packer.repo().load_tree(&subtree)?.nodes
            }
            None => Vec::new(),
        };
        admin.retain(|n| !fresh.iter().any(|f| f.name == n.name));
        admin.extend(fresh);
        nodes.push(w.dir(b"admin", admin)?);
        Ok(b"admin".to_vec())
    }

    /// Every namespace the filters take, with its metadata.
    fn plan(&self) -> Result<Vec<Item>> {
        let dbs = self
            .conn
            .block_on(self.conn.client().list_database_names())
            .map_err(cmd_err("listing databases"))?;
        let mut items = Vec::new();
        for db in dbs.iter().filter(|d| self.opts.filter.takes_db(d)) {
            items.extend(self.db_items(db)?);
        }
        if items.is_empty() && !self.opts.filter.is_empty() {
            return Err(MongoError::NothingMatched {
                what: "database or collection on the server",
            });
        }
        Ok(items)
    }

    fn db_items(&self, db: &str) -> Result<Vec<Item>> {
        let specs = list_collections(&self.conn, db)?;
        let mut items = Vec::new();
        for spec in specs {
            let name = spec.get_str("name").unwrap_or_default().to_string();
            if !self.opts.filter.takes(db, &name) {
                continue;
            }
            let mut meta = meta_of(&spec);
            if !meta.is_view() {
                meta.indexes = list_indexes(&self.conn, db, &name)?;
            }
            items.push(Item {
                db: db.to_string(),
                meta,
            });
        }
        Ok(items)
    }

    /// Dumps the items, `parallel` at a time; returns each database's file nodes.
    fn export_all(
        &self,
        w: &DumpWriter,
        items: &[Item],
        progress: &dyn Observer,
    ) -> Result<BTreeMap<String, Vec<Node>>> {
        let queue = Mutex::new(items.iter().collect::<VecDeque<_>>());
        let done = Mutex::new(Vec::new());
        let workers = self.opts.parallel.clamp(1, items.len().max(1));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| s.spawn(|| self.worker(w, &queue, &done, progress)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("export worker panicked"))
        })?;
        let mut files: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        for (db, nodes) in done.into_inner().expect("done lock") {
            files.entry(db).or_default().extend(nodes);
        }
        Ok(files)
    }

    fn worker(
        &self,
        w: &DumpWriter,
        queue: &Mutex<VecDeque<&Item>>,
        done: &Mutex<Vec<(String, Vec<Node>)>>,
        progress: &dyn Observer,
    ) -> Result<()> {
        while let Some(item) = queue.lock().expect("queue lock").pop_front() {
            progress.item(&format!("{}.{}", item.db, item.meta.name));
            let nodes = self.export_item(w, item, progress)?;
            done.lock()
                .expect("done lock")
                .push((item.db.clone(), nodes));
        }
        Ok(())
    }

    fn export_item(
        &self,
        w: &DumpWriter,
        item: &Item,
        progress: &dyn Observer,
    ) -> Result<Vec<Node>> {
        let ns = format!("{}.{}", item.db, item.meta.name);
        let base = file_name(&item.meta.name);
        let json = item
            .meta
            .to_json()
            .map_err(|message| MongoError::Metadata {
                ns: ns.clone(),
                message,
            })?;
        let mut nodes = vec![w.small_file(format!("{base}.metadata.json").as_bytes(), &json)?];
        if item.meta.is_view() {
            self.report.lock().expect("report lock").views += 1;
            return Ok(nodes);
        }
        let (content, report) = self.export_documents(w, &item.db, &item.meta.name, progress)?;
        nodes.push(w.file(format!("{base}.bson").as_bytes(), content));
        self.report
            .lock()
            .expect("report lock")
            .collections
            .push(CollReport { ns, ..report });
        Ok(nodes)
    }

    /// Reads a collection on the runtime while this thread chunks and saves.
    fn export_documents(
        &self,
        w: &DumpWriter,
        db: &str,
        coll: &str,
        progress: &dyn Observer,
    ) -> Result<(Vec<ChunkRef>, CollReport)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let collection = self
            .conn
            .client()
            .database(db)
            .collection::<RawDocumentBuf>(coll);
        self.conn.handle().spawn(read_documents(collection, tx));
        let mut chunker = w.record_chunker();
        let mut content = Vec::new();
        let mut report = CollReport::default();
        while let Some(batch) = rx.blocking_recv() {
            let batch = batch.map_err(cmd_err(format!("reading {db}.{coll}")))?;
            let before = report.bytes;
            for doc in batch.docs() {
                report.documents += 1;
                report.bytes += doc.len() as u64;
                content.extend(w.save_chunks(chunker.push(doc))?);
            }
            progress.add(Counters::bytes_read(report.bytes - before));
        }
        content.extend(w.save_chunks(chunker.finish())?);
        Ok((content, report))
    }

    /// `oplog.bson`: the chunks of `before`, then the entries `(start, end]` that the filters
    /// need, read as `reading` says; also the databases those entries write to and the last
    /// entry read.
    fn export_window(
        &self,
        w: &DumpWriter,
        (start, end): (BsonTime, BsonTime),
        before: Vec<ChunkRef>,
        reading: Reading,
    ) -> Result<OplogWindow> {
        let mut chunker = w.record_chunker();
        let mut content = before;
        let (entries, mut databases) = (std::cell::Cell::new(0), Vec::new());
        let mut take = |entry: &[u8]| -> Result<()> {
            let ns = oplog::entry_ns(entry);
            if !self.opts.filter.needs_oplog_entry_on(ns) {
                return Ok(());
            }
            if let Some((db, coll)) = ns.split_once('.')
                && coll != "$cmd"
                && databases.last().is_none_or(|last: &String| last != db)
            {
                databases.push(db.to_string());
            }
            entries.set(entries.get() + 1);
            content.extend(w.save_chunks(chunker.push(entry))?);
            Ok(())
        };
        let (mut reached, mut anchor) = (start, None);
        if let Reading::Continue(parent_entry) = reading {
            anchor = parent_entry;
            for slice in &self.archived {
                let upto = slice.end.min(end);
                let last = read_archived(w.packer.repo(), slice, (reached, upto), &mut take)?;
                (reached, anchor) = (reached.max(upto), last.or(anchor));
            }
        }
        let archived = entries.get();
        let mut read = ServerRead::new(anchor, reached);
        oplog::for_each_entry(&self.conn, read.from(), end, &mut |entry| {
            read.admit(entry, &mut take)
        })?;
        read.finish()?;
        content.extend(w.save_chunks(chunker.finish())?);
        let mut r = self.report.lock().expect("report lock");
        (r.oplog_entries, r.oplog_bytes) = (entries.get(), read.bytes);
        r.oplog_archived_entries = archived;
        Ok(OplogWindow {
            node: w.file(b"oplog.bson", content),
            databases,
            last_entry: read.last.or(anchor),
        })
    }

    /// Users and roles of every database, as `usersInfo`/`rolesInfo` show them.
    fn export_users(&self, w: &DumpWriter, files: &mut BTreeMap<String, Vec<Node>>) -> Result<()> {
        let (mut users, mut roles) = (Vec::new(), Vec::new());
        let dbs = self
            .conn
            .block_on(self.conn.client().list_database_names())
            .map_err(cmd_err("listing databases"))?;
        for db in dbs
            .iter()
            .filter(|d| !matches!(d.as_str(), "local" | "config"))
        {
            let cmd = doc! {"usersInfo": 1, "showCredentials": true};
            users.extend(docs_at(&self.conn.command(db, cmd)?, "users"));
            let cmd = doc! {"rolesInfo": 1, "showPrivileges": true, "showBuiltinRoles": false};
            roles.extend(docs_at(&self.conn.command(db, cmd)?, "roles"));
        }
        let mut r = self.report.lock().expect("report lock");
        (r.users, r.roles) = (users.len() as u64, roles.len() as u64);
        let admin = files.entry("admin".into()).or_default();
        admin.push(w.small_file(b"system.users.bson", &concat_docs(&users)?)?);
        admin.push(w.small_file(b"system.roles.bson", &concat_docs(&roles)?)?);
        Ok(())
    }
}

impl TreeSource for MongoExport {
    fn save(
        &self,
        packer: &Packer,
        progress: &dyn Observer,
    ) -> std::result::Result<(Node, Source, u64), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.run(packer, progress)?)
    }
}

/// Documents read together: their bytes back to back and where each ends.
#[derive(Default)]
struct DocBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl DocBatch {
    fn push(&mut self, doc: &[u8]) {
        self.bytes.extend_from_slice(doc);
        self.ends.push(self.bytes.len());
    }

    fn docs(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(s, &e)| &self.bytes[s..e])
    }
}

type BatchSender = tokio::sync::mpsc::Sender<std::result::Result<DocBatch, mongodb::error::Error>>;

async fn read_documents(coll: mongodb::Collection<RawDocumentBuf>, tx: BatchSender) {
    if let Err(e) = send_documents(coll, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn send_documents(
    coll: mongodb::Collection<RawDocumentBuf>,
    tx: &BatchSender,
) -> std::result::Result<(), mongodb::error::Error> {
    let mut cursor = coll.find(doc! {}).await?;
    let mut batch = DocBatch::default();
    while cursor.advance().await? {
        batch.push(cursor.current().as_bytes());
        if batch.bytes.len() >= READ_BATCH && tx.send(Ok(std::mem::take(&mut batch))).await.is_err()
        {
            return Ok(());
        }
    }
    let _ = tx.send(Ok(batch)).await;
    Ok(())
}

/// Saves chunks and builds the file and directory nodes of the dump.
pub(crate) struct DumpWriter<'a> {
    packer: &'a Packer<'a>,
    seed: crate::write::chunker::GearTable,
    bson: ChunkerParams,
    mtime: Timespec,
    /// Entries of the directories saved so far (for `summary.entries`).
    entries: AtomicU64,
}

impl<'a> DumpWriter<'a> {
    pub(crate) fn new(packer: &'a Packer<'a>) -> DumpWriter<'a> {
        let now = chrono::Utc::now();
        DumpWriter {
            packer,
            seed: packer.repo().key().chunker_seed(),
            bson: packer.repo().config().bson_chunker,
            mtime: Timespec {
                sec: now.timestamp(),
                nsec: now.timestamp_subsec_nanos(),
            },
            entries: AtomicU64::new(0),
        }
    }

    /// How many entries the directories saved through this writer hold.
    /// The summary of a snapshot that holds only what this writer wrote, `stats` being its
    /// packer's.
    pub(crate) fn summary(&self, stats: &PackerStats) -> Summary {
        Summary {
            bytes_added: stats.bytes,
            bytes_added_raw: stats.raw_bytes,
            data_blobs_added: stats.data_blobs,
            tree_blobs_added: stats.tree_blobs,
            entries: Some(self.entries()),
            ..Summary::default()
        }
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Counts `n` entries below directories reused from an earlier dump.
    fn reused(&self, n: u64) {
        self.entries.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_chunker(&self) -> RecordChunker {
        RecordChunker::new(self.bson, &self.seed)
    }

    pub(crate) fn save_chunks(&self, chunks: Vec<Vec<u8>>) -> Result<Vec<ChunkRef>> {
        chunks
            .iter()
            .map(|c| {
                let (id, _) = self.packer.save(BlobType::Data, c)?;
                Ok(ChunkRef {
                    id,
                    len: c.len() as u32,
                })
            })
            .collect()
    }

    /// A file of arbitrary bytes, chunked as files are.
    pub(crate) fn small_file(&self, name: &[u8], data: &[u8]) -> Result<Node> {
        let params = self.packer.repo().config().chunker;
        let chunks = Chunker::new(data, params, &self.seed)
            .collect::<std::io::Result<Vec<_>>>()
            .expect("reading memory cannot fail");
        Ok(self.file(name, self.save_chunks(chunks)?))
    }

    pub(crate) fn file(&self, name: &[u8], content: Vec<ChunkRef>) -> Node {
        let size = content.iter().map(|c| c.len as u64).sum();
        self.node(name, NodeKind::File { content }, 0o644, size)
    }

    pub(crate) fn dir(&self, name: &[u8], nodes: Vec<Node>) -> Result<Node> {
        (self.entries).fetch_add(nodes.len() as u64, Ordering::Relaxed);
        let (subtree, _) = self.packer.save_tree(&Tree::new(nodes))?;
        Ok(self.node(name, NodeKind::Dir { subtree }, 0o755, 0))
    }

    fn node(&self, name: &[u8], kind: NodeKind, mode: u32, size: u64) -> Node {
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        Node {
            name: name.to_vec(),
            kind,
            mode,
            uid,
            gid,
            user: crate::sysinfo::user_name(uid).unwrap_or_default(),
            group: crate::sysinfo::group_name(gid).unwrap_or_default(),
            mtime: self.mtime,
            ctime: self.mtime,
            inode: 0,
            device: 0,
            links: 1,
            size,
            xattrs: Vec::new(),
        }
    }
}

pub(crate) fn list_collections(conn: &Conn, db: &str) -> Result<Vec<Document>> {
    cursor_docs(conn, db, doc! {"listCollections": 1})
}

pub(crate) fn list_indexes(conn: &Conn, db: &str, coll: &str) -> Result<Vec<Document>> {
    cursor_docs(conn, db, doc! {"listIndexes": coll})
}

/// Every document of a command's cursor (`listCollections`, `listIndexes`).
fn cursor_docs(conn: &Conn, db: &str, cmd: Document) -> Result<Vec<Document>> {
    let what = format!("{} on {db}", cmd.keys().next().map_or("", |k| k.as_str()));
    let database = conn.client().database(db);
    conn.block_on(async {
        let cursor = database.run_cursor_command(cmd).await?;
        cursor.try_collect::<Vec<Document>>().await
    })
    .map_err(cmd_err(what))
}

/// The metadata of a namespace from its `listCollections` entry.
pub(crate) fn meta_of(spec: &Document) -> CollMeta {
    let info = spec.get_document("info").ok();
    let uuid = info
        .and_then(|i| i.get_binary_generic("uuid").ok())
        .map(hex::encode);
    CollMeta {
        name: spec.get_str("name").unwrap_or_default().to_string(),
        kind: spec.get_str("type").unwrap_or("collection").to_string(),
        options: spec.get_document("options").cloned().unwrap_or_default(),
        id_index: spec.get_document("idIndex").ok().cloned(),
        indexes: Vec::new(),
        uuid,
    }
}

pub(crate) fn docs_at(d: &Document, key: &str) -> Vec<Document> {
    d.get_array(key)
        .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
        .unwrap_or_default()
}

fn concat_docs(docs: &[Document]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for d in docs {
        let bytes = d.to_vec().map_err(|e| MongoError::Metadata {
            ns: "users and roles".into(),
            message: e.to_string(),
        })?;
        out.extend(bytes);
    }
    Ok(out)
}

/// Where the entries of an oplog window come from.
#[derive(Clone, Copy)]
enum Reading {
    /// The server, after the window's start (a full dump).
    Server,
    /// An incremental dump: the archived slices that reach from the window's start on, then
    /// the server from the newest entry read so far (from the slices, else this one: the
    /// parent's last entry), which must come first, proving that the oplog still reaches
    /// what was read; without any such entry, the server after the slices (the export then
    /// asked for the oplog's oldest entry first).
    Continue(Option<BsonTime>),
}

/// The `oplog.bson` of a dump, as [`MongoExport::export_window`] wrote it.
struct OplogWindow {
    node: Node,
    /// The databases its entries write to.
    databases: Vec<String>,
    /// The `ts` of the newest entry read (taken or not), if any.
    last_entry: Option<BsonTime>,
}

/// The server's part of a window: the entries after `after`, and with an anchor the proof
/// that the oplog still holds it.
struct ServerRead {
    /// The entry that must come first, until it came.
    awaited: Option<BsonTime>,
    after: BsonTime,
    /// Bytes read from the server.
    bytes: u64,
    /// The `ts` of the last entry it sent.
    last: Option<BsonTime>,
}

impl ServerRead {
    /// A read of the entries after `after`, from `anchor` on when there is one.
    fn new(anchor: Option<BsonTime>, after: BsonTime) -> ServerRead {
        ServerRead {
            awaited: anchor,
            after,
            bytes: 0,
            last: None,
        }
    }

    /// Where the server's query starts.
    fn from(&self) -> Bound<BsonTime> {
        match self.awaited {
            Some(anchor) => Bound::Included(anchor),
            None => Bound::Excluded(self.after),
        }
    }

    /// Hands `entry` to `take` if it is after the window's start; fails if it should have
    /// been the anchor and is not.
    fn admit(&mut self, entry: &[u8], take: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.bytes += entry.len() as u64;
        let ts = oplog::entry_ts(entry);
        self.last = ts.or(self.last);
        if let Some(anchor) = self.awaited.take()
            && ts != Some(anchor)
        {
            return Err(MongoError::OplogGone {
                entry: anchor,
                oldest: ts,
            });
        }
        match ts {
            Some(t) if t <= self.after => Ok(()),
            _ => take(entry),
        }
    }

    /// Fails if the anchor never came: the oplog holds nothing from it on.
    fn finish(&self) -> Result<()> {
        match self.awaited {
            Some(entry) => Err(MongoError::OplogGone {
                entry,
                oldest: None,
            }),
            None => Ok(()),
        }
    }
}

/// The name of the file that holds the oplog range an incremental dump added (the same
/// chunks as the end of its `oplog.bson`), beside `oplog.bson`, where mongorestore passes it
/// by: `oplog-DEPTH-FROM-TO.bson`, the times as `seconds.increment`.
fn range_file(depth: u32, (from, to): (BsonTime, BsonTime)) -> String {
    format!("oplog-{depth}-{}.{}-{}.{}.bson", from.t, from.i, to.t, to.i)
}

/// Why a dump that would continue `parent` is full: the oplog, starting at `oldest`, no
/// longer reaches it.
fn rolled_over(parent: &Parent, oldest: Option<BsonTime>) -> FullReason {
    FullReason::RolledOver {
        parent: parent.id.0.short(),
        from: parent.cluster_time,
        oldest: oldest.map_or("nowhere (it is empty)".into(), |o| o.to_string()),
    }
}

/// Calls `take` with the entries of `slice`'s archived oplog with `after < ts <= until`;
/// returns the `ts` of the last of them.
fn read_archived(
    repo: &IndexedRepo,
    slice: &Slice,
    (after, until): (BsonTime, BsonTime),
    take: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Option<BsonTime>> {
    let node = vfs::node_at(repo, slice.tree, b"/mongodb-oplog/oplog.bson")?;
    let mut last = None;
    stream::for_each_batch(repo, &node, "/mongodb-oplog/oplog.bson", &mut |docs| {
        for doc in docs {
            let ts = doc.get_timestamp("ts").ok().map(super::connection::from_ts);
            if ts.is_some_and(|t| t > after && t <= until) {
                take(doc.as_bytes())?;
                last = ts;
            }
        }
        Ok(())
    })?;
    Ok(last)
}

/// Entries below `node`: none for a file, every path below a directory.
fn count_below(repo: &IndexedRepo, node: &Node) -> Result<u64> {
    let Some(subtree) = node.subtree() else {
        return Ok(0);
    };
    let mut n = 0;
    for child in repo.load_tree(&subtree)?.nodes {
        n += 1 + count_below(repo, &child)?;
    }
    Ok(n)
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::Timestamp;

    fn entry(t: u32) -> Vec<u8> {
        let ts = Timestamp {
            time: t,
            increment: 1,
        };
        (doc! {"ts": ts, "ns": "d.c"}).to_vec().unwrap()
    }

    fn at(t: u32) -> BsonTime {
        BsonTime { t, i: 1 }
    }

    /// The times of the entries `read` hands on, or its error.
    fn read(anchor: Option<BsonTime>, after: u32, entries: &[u32]) -> Result<Vec<u32>> {
        let mut read = ServerRead::new(anchor, at(after));
        let mut taken = Vec::new();
        let mut take = |e: &[u8]| {
            taken.push(oplog::entry_ts(e).unwrap().t);
            Ok(())
        };
        for t in entries {
            read.admit(&entry(*t), &mut take)?;
        }
        read.finish()?;
        Ok(taken)
    }

    #[test]
    fn an_anchored_read_takes_what_follows_the_anchor_once_it_came_first() {
        let got = read(Some(at(3)), 5, &[3, 6, 7]).unwrap();
        assert_eq!(got, vec![6, 7]);
        assert_eq!(read(Some(at(3)), 3, &[3]).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn an_anchor_that_is_not_first_or_never_comes_means_the_oplog_rolled_over() {
        let gone = read(Some(at(3)), 5, &[4, 6]).unwrap_err();
        assert!(
            matches!(gone, MongoError::OplogGone { entry, oldest: Some(o) } if entry == at(3) && o == at(4)),
            "{gone:?}"
        );
        let empty = read(Some(at(3)), 5, &[]).unwrap_err();
        assert!(
            matches!(empty, MongoError::OplogGone { oldest: None, .. }),
            "{empty:?}"
        );
    }

    #[test]
    fn a_read_after_a_time_takes_every_entry_and_needs_none() {
        assert_eq!(read(None, 5, &[6, 7]).unwrap(), vec![6, 7]);
        assert_eq!(read(None, 5, &[]).unwrap(), Vec::<u32>::new());
    }
}
