//! Lost-file detection: compares the live file system below a snapshot's paths with the
//! snapshot and finds the entries that are missing, modified or new. For every missing or
//! modified entry it names the newest snapshot that still holds an intact earlier version,
//! and it can restore the missing ones in place without touching anything that exists.
//!
//! Directories are compared by their contents: missing and modified entries are never
//! directories, and a new directory is reported alone, not with its contents. A file is
//! modified when its size or mtime differs; with `deep`, files whose size and mtime match
//! are read and chunked exactly as backup does, and their keyed chunk ids compared with the
//! snapshot's. Nothing is excluded: files left out of the backup with `--exclude` show as new.
use crate::cancel::{Cancel, Cancelled};
use crate::observer::{Counters, EntryError, EntryErrorKind, Observer, Phase};
use crate::ops::archiver;
use crate::ops::restorer::{self, RestoreError, RestoreOptions, RestoreReport};
use crate::ops::sandbox::OnConflict;
use crate::repo::id::{SnapshotId, TreeId};
use crate::repo::paths;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{ChunkRef, Node, NodeKind, Timespec};
use crate::select::filter::{FilterError, Patterns};
use crate::sources::fs::{SourceDir, SourceError, Stat};
use crate::walk::{self, Budget, OverBudget};
use crate::write::chunker::Chunker;
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use rustix::fs::FileType;
use rustix::io::Errno;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Deep-scan files held open at a time: they are read and chunked (several at once) when this
/// many are waiting, so the open descriptors stay bounded.
const FILE_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Repo { path: String, source: RepoError },
    #[error("{path}: {source}")]
    Path {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not inside the snapshot's paths ({})", .paths.join(", "))]
    Outside { path: String, paths: Vec<String> },
    #[error(transparent)]
    Pattern(#[from] FilterError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("{path}: {source}")]
    Walk { path: String, source: OverBudget },
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

pub(crate) type Result<T> = std::result::Result<T, ScanError>;

/// What makes an entry modified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Another type of entry (a symlink where the snapshot has a file, …).
    Type,
    Size,
    Mtime,
    /// Same size and mtime, other content (found only by a deep scan).
    Content,
    /// A symlink pointing elsewhere.
    Target,
}

/// A snapshot that holds an intact version of a lost entry.
#[derive(Clone, Debug, Serialize)]
pub struct Source {
    pub snapshot: SnapshotId,
    pub time: DateTime<Utc>,
    /// The snapshot's root tree.
    #[serde(skip)]
    pub tree: TreeId,
}

/// What the live file system shows at a path.
#[derive(Clone, Debug)]
struct Live {
    kind: &'static str,
    size: u64,
    mtime: Timespec,
    target: Option<Vec<u8>>,
    /// The content's chunks, once a deep scan has read the file.
    chunks: Option<Vec<ChunkRef>>,
}

/// A missing or modified entry.
#[derive(Clone, Debug, Serialize)]
pub struct Lost {
    #[serde(serialize_with = "paths::lossy")]
    pub path: Vec<u8>,
    /// [`Node::type_name`] of the snapshot's entry.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in the snapshot.
    pub size: u64,
    /// Why a modified entry counts as modified (None for missing ones).
    pub reason: Option<Reason>,
    /// The newest snapshot with an intact earlier version (None: there is none).
    pub source: Option<Source>,
    #[serde(skip)]
    node: Node,
    #[serde(skip)]
    live: Option<Live>,
}

/// An entry the snapshot does not have.
#[derive(Clone, Debug, Serialize)]
pub struct NewEntry {
    #[serde(serialize_with = "paths::lossy")]
    pub path: Vec<u8>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// File length (0 for other types).
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct ScanReport {
    pub snapshot: SnapshotId,
    /// The live paths compared.
    pub paths: Vec<String>,
    pub missing: Vec<Lost>,
    pub modified: Vec<Lost>,
    /// A new directory is listed alone, not its contents.
    pub new: Vec<NewEntry>,
    /// Entries found identical.
    pub unchanged: u64,
    /// Entries that could not be read or compared.
    pub errors: Vec<EntryError>,
}

impl ScanReport {
    /// Nothing is missing or modified.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.modified.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Live paths to compare, each inside the snapshot's paths; empty: the snapshot's paths.
    pub paths: Vec<PathBuf>,
    /// Read files whose size and mtime match and compare their chunk ids.
    pub deep: bool,
    /// Stops the scan (with [`ScanError::Cancelled`]) once cancelled.
    pub cancel: Cancel,
}

/// Compares the live file system with `snapshot`. `history` lists the repository's
/// snapshots (any order); the ones with the same host and paths are searched, newest
/// first, for versions of lost entries that `snapshot` does not hold intact.
pub fn scan(
    repo: &IndexedRepo,
    snapshot: &(SnapshotId, Snapshot),
    history: &[(SnapshotId, Snapshot)],
    opts: &ScanOptions,
    progress: &dyn Observer,
) -> Result<ScanReport> {
    let (id, snap) = snapshot;
    let roots = scan_roots(snap, &opts.paths)?;
    crate::sources::fs::raise_open_file_limit();
    progress.phase(Phase::Scanning);
    let mut scanner = Scanner::new(repo, opts, progress);
    let mut budget = Budget::of(snap);
    for root in &roots {
        scanner.root(snap.tree, root, &mut budget)?;
    }
    scanner.hash_pending();
    opts.cancel.check()?;
    let mut report = scanner.finish(*id, &roots);
    let candidates = candidates(snapshot, history);
    for lost in report.missing.iter_mut().chain(report.modified.iter_mut()) {
        lost.source = source_of(repo, lost, &candidates)?;
    }
    Ok(report)
}

/// The newest snapshot of `host` whose paths cover all of `paths` (any, when empty).
pub fn default_snapshot<'a>(
    history: &'a [(SnapshotId, Snapshot)],
    host: &str,
    paths: &[PathBuf],
) -> Option<&'a (SnapshotId, Snapshot)> {
    history
        .iter()
        .filter(|(_, s)| s.host == host && scan_roots(s, paths).is_ok())
        .max_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)))
}

/// The snapshot itself, then the others of the same host and paths, newest first.
fn candidates<'a>(
    snapshot: &'a (SnapshotId, Snapshot),
    history: &'a [(SnapshotId, Snapshot)],
) -> Vec<&'a (SnapshotId, Snapshot)> {
    let (id, snap) = snapshot;
    let mut others: Vec<&(SnapshotId, Snapshot)> = history
        .iter()
        .filter(|(other, s)| other != id && s.same_origin(&snap.host, &snap.paths))
        .collect();
    others.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    std::iter::once(snapshot).chain(others).collect()
}

/// The absolute paths to compare: `wanted` (each inside the snapshot's paths, nested ones
/// dropped) or the snapshot's paths.
fn scan_roots(snap: &Snapshot, wanted: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let mut roots: Vec<Vec<u8>> = match wanted.is_empty() {
        true => snap.paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
        false => wanted
            .iter()
            .map(|p| inside_snapshot(snap, p))
            .collect::<Result<_>>()?,
    };
    roots.sort();
    roots.dedup();
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && is_within(r, o)));
    Ok(roots)
}

fn inside_snapshot(snap: &Snapshot, path: &Path) -> Result<Vec<u8>> {
    let abs = archiver::normalize(path).map_err(|source| ScanError::Path {
        path: path.display().to_string(),
        source,
    })?;
    let bytes = abs.as_os_str().as_bytes().to_vec();
    match snap.paths.iter().any(|p| is_within(&bytes, p.as_bytes())) {
        true => Ok(bytes),
        false => Err(ScanError::Outside {
            path: abs.display().to_string(),
            paths: snap.paths.clone(),
        }),
    }
}

/// `path` is `base` or below it.
fn is_within(path: &[u8], base: &[u8]) -> bool {
    let base = base.strip_suffix(b"/").unwrap_or(base);
    path == base || (path.starts_with(base) && path.get(base.len()) == Some(&b'/'))
}

/// A live entry: what `lstat` said about it, in its parent directory, under its name.
#[derive(Clone, Copy)]
struct LiveAt<'d> {
    stat: Stat,
    dir: &'d SourceDir,
    name: &'d [u8],
}

/// The entries of a directory still to compare (the snapshot's and the live ones merged by
/// name: the snapshot's node, and whether the live directory has the name), the live
/// directory when there is one, and the length of the directory's path.
struct Frame {
    entries: std::vec::IntoIter<Merged>,
    live: Option<SourceDir>,
    dir_len: usize,
}

/// A deep-scan file whose size and mtime match, opened for reading.
type Pending = (Vec<u8>, Node, Live, File);

struct Scanner<'a> {
    repo: &'a IndexedRepo,
    deep: bool,
    cancel: &'a Cancel,
    progress: &'a dyn Observer,
    missing: Vec<Lost>,
    modified: Vec<Lost>,
    new: Vec<NewEntry>,
    unchanged: u64,
    errors: Vec<EntryError>,
    /// Files whose size and mtime match, to be read by a deep scan.
    pending: Vec<Pending>,
    /// Bytes of the files given to the deep scan so far.
    queued: u64,
}

impl<'a> Scanner<'a> {
    fn new(
        repo: &'a IndexedRepo,
        opts: &'a ScanOptions,
        progress: &'a dyn Observer,
    ) -> Scanner<'a> {
        Scanner {
            repo,
            deep: opts.deep,
            cancel: &opts.cancel,
            progress,
            missing: Vec::new(),
            modified: Vec::new(),
            new: Vec::new(),
            unchanged: 0,
            errors: Vec::new(),
            pending: Vec::new(),
            queued: 0,
        }
    }

    fn error(&mut self, path: &[u8], message: impl ToString) {
        let e = EntryError::new(EntryErrorKind::Read, paths::display(path), message);
        self.progress.error(&e);
        self.errors.push(e);
    }

    fn root(&mut self, tree: TreeId, path: &[u8], budget: &mut Budget) -> Result<()> {
        let node = match crate::vfs::node_at(self.repo, tree, path) {
            Ok(node) => Some(node),
            Err(RepoError::NoSuchPath(_)) => None,
            Err(source) => {
                return Err(ScanError::Repo {
                    path: paths::display(path),
                    source,
                });
            }
        };
        let (parent, name) = split(path);
        let dir = match SourceDir::open_named(Path::new(OsStr::from_bytes(parent))) {
            Ok((dir, _)) => Some(dir),
            Err(SourceError::Io(Errno::NOENT)) => None,
            Err(e) => {
                self.error(path, describe(e));
                return Ok(());
            }
        };
        let Some(live) = self.live_at(dir.as_ref(), name, path) else {
            return Ok(());
        };
        self.walk(path.to_vec(), node, live, budget)
    }

    /// Compares the entry at `path` and everything below it, depth first with an explicit
    /// stack (any depth); the snapshot's trees loaded are charged to `budget`.
    fn walk(
        &mut self,
        mut path: Vec<u8>,
        node: Option<Node>,
        live: Option<LiveAt>,
        budget: &mut Budget,
    ) -> Result<()> {
        let mut stack: Vec<Frame> = self
            .compare(&path, node, live, budget)?
            .into_iter()
            .collect();
        while let Some(frame) = stack.last_mut() {
            self.cancel.check()?;
            path.truncate(frame.dir_len);
            let Some((name, node, in_live)) = frame.entries.next() else {
                stack.pop();
                continue;
            };
            if !path.ends_with(b"/") {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            let dir = frame.live.as_ref().filter(|_| in_live);
            let Some(live) = self.live_at(dir, &name, &path) else {
                continue;
            };
            let child = self.compare(&path, node, live, budget)?;
            stack.extend(child);
        }
        Ok(())
    }

    /// The live entry `name` in `dir` (Some(None) when there is none, or no `dir`; None
    /// when it cannot be inspected, which is recorded as an error at `path`).
    fn live_at<'d>(
        &mut self,
        dir: Option<&'d SourceDir>,
        name: &'d [u8],
        path: &[u8],
    ) -> Option<Option<LiveAt<'d>>> {
        let Some(dir) = dir else {
            return Some(None);
        };
        match dir.stat(name) {
            Ok(stat) => Some(Some(LiveAt { stat, dir, name })),
            Err(SourceError::Io(Errno::NOENT)) => Some(None),
            Err(e) => {
                self.error(path, describe(e));
                None
            }
        }
    }

    /// Compares one entry; for a directory of the snapshot, the frame of its entries.
    fn compare(
        &mut self,
        path: &[u8],
        node: Option<Node>,
        live: Option<LiveAt>,
        budget: &mut Budget,
    ) -> Result<Option<Frame>> {
        let Some(node) = node else {
            if let Some(live) = live {
                self.add_new(path, &live.stat);
            }
            return Ok(None);
        };
        match (node.subtree().is_some(), live) {
            (true, live) => {
                if let Some(live) = live.filter(|l| !l.stat.is_dir()) {
                    self.add_new(path, &live.stat);
                }
                let live_dir = live.filter(|l| l.stat.is_dir());
                return self.dir(path, &node, live_dir, budget);
            }
            (false, None) => self.lost(path, node, None, None),
            (false, Some(live)) if live.stat.is_dir() => {
                self.add_new(path, &live.stat);
                self.lost(path, node, None, None);
            }
            (false, Some(live)) => self.entry(path, node, live),
        }
        Ok(None)
    }

    /// A directory of the snapshot, and the live one at its path when there is one: the
    /// frame of their entries, or None when either cannot be read (recorded as an error).
    fn dir(
        &mut self,
        path: &[u8],
        node: &Node,
        live: Option<LiveAt>,
        budget: &mut Budget,
    ) -> Result<Option<Frame>> {
        let subtree = node.subtree().expect("a directory");
        let tree = match self.repo.load_tree(&subtree) {
            Ok(tree) => tree,
            Err(e) => {
                self.error(path, e);
                return Ok(None);
            }
        };
        budget
            .charge(tree.nodes.len() as u64)
            .map_err(|source| ScanError::Walk {
                path: paths::display(path),
                source,
            })?;
        let (live_dir, live_names) = match open_live(live) {
            Ok(found) => found,
            Err(e) => {
                self.error(path, describe(e));
                return Ok(None);
            }
        };
        Ok(Some(Frame {
            entries: merge(tree.nodes, live_names).into_iter(),
            live: live_dir,
            dir_len: path.len(),
        }))
    }

    /// A non-directory entry present in both.
    fn entry(&mut self, path: &[u8], node: Node, at: LiveAt) {
        let live = match Live::read(&at) {
            Ok(live) => live,
            Err(e) => return self.error(path, describe(e)),
        };
        match change(&node, &live) {
            Some(reason) => self.lost(path, node, Some(reason), Some(live)),
            None if self.deep && matches!(node.kind, NodeKind::File { .. }) => {
                match at.dir.open_file(at.name, &at.stat) {
                    Ok(file) => self.pending.push((path.to_vec(), node, live, file)),
                    Err(e) => return self.error(path, describe(e)),
                }
                if self.pending.len() >= FILE_BATCH {
                    self.hash_pending();
                }
            }
            None => self.unchanged += 1,
        }
    }

    fn lost(&mut self, path: &[u8], node: Node, reason: Option<Reason>, live: Option<Live>) {
        let lost = Lost {
            path: path.to_vec(),
            kind: node.type_name(),
            size: node.size,
            reason,
            source: None,
            node,
            live,
        };
        match reason {
            Some(_) => self.modified.push(lost),
            None => self.missing.push(lost),
        }
    }

    fn add_new(&mut self, path: &[u8], stat: &Stat) {
        let kind = kind_of(stat.file_type());
        let size = if stat.is_file() { stat.size() } else { 0 };
        let path = path.to_vec();
        self.new.push(NewEntry { path, kind, size });
    }

    /// Reads and chunks the pending files (several at a time) and compares their chunks;
    /// once cancelled, the files still being read fail (and the caller stops).
    fn hash_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.queued += self.pending.iter().map(|p| p.2.size).sum::<u64>();
        let (repo, progress, cancel) = (self.repo, self.progress, self.cancel);
        progress.phase(Phase::Reading);
        progress.total(Counters::bytes_read(self.queued));
        let hashed: Vec<_> = std::mem::take(&mut self.pending)
            .into_par_iter()
            .map(|(path, node, live, file)| {
                progress.item(&paths::display(&path));
                let chunks = chunk_ids(repo, file, cancel, progress);
                (path, node, live, chunks)
            })
            .collect();
        for (path, node, mut live, chunks) in hashed {
            match chunks {
                Ok(chunks) => live.chunks = Some(chunks),
                Err(e) => {
                    self.error(&path, e);
                    continue;
                }
            }
            match change(&node, &live) {
                Some(reason) => self.lost(&path, node, Some(reason), Some(live)),
                None => self.unchanged += 1,
            }
        }
    }

    fn finish(mut self, snapshot: SnapshotId, roots: &[Vec<u8>]) -> ScanReport {
        self.missing.sort_by(|a, b| paths::cmp(&a.path, &b.path));
        self.modified.sort_by(|a, b| paths::cmp(&a.path, &b.path));
        self.new.sort_by(|a, b| paths::cmp(&a.path, &b.path));
        ScanReport {
            snapshot,
            paths: roots.iter().map(|r| paths::display(r)).collect(),
            missing: self.missing,
            modified: self.modified,
            new: self.new,
            unchanged: self.unchanged,
            errors: self.errors,
        }
    }
}

/// Why a live entry could not be compared: one replaced between its `lstat` and its open
/// (or `readlink`) was not read.
fn describe(e: SourceError) -> String {
    match e {
        SourceError::Changed => "changed during the scan: it was replaced after it was examined, \
                                 and was not read"
            .into(),
        e => e.to_string(),
    }
}

/// The live directory holding the absolute `path`, and the entry's name in it (`/` is `.`
/// in itself).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) if path.len() == 1 => (b"/", b"."),
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b".", path),
    }
}

/// The live directory `at` opened (it must still be the one examined), and its names; none
/// without one.
fn open_live(at: Option<LiveAt>) -> crate::sources::fs::Result<(Option<SourceDir>, Vec<Vec<u8>>)> {
    let Some(at) = at else {
        return Ok((None, Vec::new()));
    };
    let dir = at.dir.open_dir(at.name, &at.stat)?;
    let names = dir.names()?;
    Ok((Some(dir), names))
}

/// A name of a directory with the snapshot's node of that name, and whether the live
/// directory has it.
type Merged = (Vec<u8>, Option<Node>, bool);

/// The snapshot's entries and the live names merged by name, in name order.
fn merge(nodes: Vec<Node>, live: Vec<Vec<u8>>) -> Vec<Merged> {
    let mut nodes: BTreeMap<Vec<u8>, Node> =
        nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
    let live: BTreeSet<Vec<u8>> = live.into_iter().collect();
    let names: BTreeSet<Vec<u8>> = nodes.keys().chain(&live).cloned().collect();
    (names.into_iter())
        .map(|name| {
            let node = nodes.remove(&name);
            let in_live = live.contains(&name);
            (name, node, in_live)
        })
        .collect()
}

/// The [`Node::type_name`] of a live entry.
fn kind_of(ft: FileType) -> &'static str {
    match ft {
        FileType::Directory => "dir",
        FileType::RegularFile => "file",
        FileType::Symlink => "symlink",
        FileType::CharacterDevice => "chardev",
        FileType::BlockDevice => "blockdev",
        FileType::Fifo => "fifo",
        _ => "socket",
    }
}

impl Live {
    fn read(at: &LiveAt) -> crate::sources::fs::Result<Live> {
        let target = match at.stat.file_type() {
            FileType::Symlink => Some(at.dir.read_link(at.name)?),
            _ => None,
        };
        let (sec, nsec) = at.stat.mtime();
        Ok(Live {
            kind: kind_of(at.stat.file_type()),
            size: at.stat.size(),
            mtime: Timespec {
                sec,
                nsec: nsec as u32,
            },
            target,
            chunks: None,
        })
    }
}

/// Why the snapshot's `node` and the live entry differ, if they do.
fn change(node: &Node, live: &Live) -> Option<Reason> {
    if node.type_name() != live.kind {
        return Some(Reason::Type);
    }
    match &node.kind {
        NodeKind::File { content } => {
            if node.size != live.size {
                Some(Reason::Size)
            } else if node.mtime != live.mtime {
                Some(Reason::Mtime)
            } else {
                let other = live.chunks.as_ref().is_some_and(|c| c != content);
                other.then_some(Reason::Content)
            }
        }
        NodeKind::Symlink { target } => {
            (live.target.as_ref() != Some(target)).then_some(Reason::Target)
        }
        _ => None,
    }
}

/// The chunks backup would make of the live `file`: same chunker, same keyed ids.
fn chunk_ids(
    repo: &IndexedRepo,
    file: File,
    cancel: &Cancel,
    progress: &dyn Observer,
) -> std::io::Result<Vec<ChunkRef>> {
    let chunker = Chunker::new(file, repo.config().chunker, &repo.key().chunker_seed());
    chunker
        .map(|chunk| {
            cancel.check().map_err(std::io::Error::other)?;
            let chunk = chunk?;
            progress.add(Counters::bytes_read(chunk.len() as u64));
            Ok(ChunkRef {
                id: repo.key().blob_id(&chunk),
                len: chunk.len() as u32,
            })
        })
        .collect()
}

/// The first candidate snapshot whose version of `lost` is intact (every chunk indexed)
/// and differs from the live entry.
fn source_of(
    repo: &IndexedRepo,
    lost: &Lost,
    candidates: &[&(SnapshotId, Snapshot)],
) -> Result<Option<Source>> {
    for (i, (id, snap)) in candidates.iter().enumerate() {
        let node = match i {
            0 => lost.node.clone(),
            _ => match crate::vfs::node_at(repo, snap.tree, &lost.path) {
                Ok(node) => node,
                Err(_) => continue,
            },
        };
        let differs = lost
            .live
            .as_ref()
            .is_none_or(|l| change(&node, l).is_some());
        if node.subtree().is_none() && differs && intact(repo, &node, &lost.path)? {
            return Ok(Some(Source {
                snapshot: *id,
                time: snap.time,
                tree: snap.tree,
            }));
        }
    }
    Ok(None)
}

fn intact(repo: &IndexedRepo, node: &Node, path: &[u8]) -> Result<bool> {
    for chunk in node.content() {
        let indexed = repo
            .index()
            .contains(&chunk.id)
            .map_err(|e| ScanError::Repo {
                path: paths::display(path),
                source: e.into(),
            })?;
        if !indexed {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A restore `--include` pattern that matches exactly `path` (glob characters escaped;
/// each byte that is not UTF-8 becomes `?`, which matches any one byte).
pub fn include_pattern(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for piece in path.utf8_chunks() {
        for c in piece.valid().chars() {
            if "*?[]{}\\".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
        out.extend(piece.invalid().iter().map(|_| '?'));
    }
    out
}

/// One restore of missing entries from one snapshot.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub snapshot: SnapshotId,
    pub report: RestoreReport,
}

/// Restores the missing entries of `report` at their place (target `/`) from the snapshot
/// named as their source, never replacing anything that exists. Entries without a source
/// are left out. Stops (with the restore's `Cancelled`) once `cancel` is cancelled.
pub fn restore_missing(
    repo: &IndexedRepo,
    report: &ScanReport,
    owner: bool,
    cancel: &Cancel,
    progress: &dyn Observer,
) -> Result<Vec<Restored>> {
    let mut groups: BTreeMap<(SnapshotId, TreeId), Vec<String>> = BTreeMap::new();
    for lost in &report.missing {
        if let Some(source) = &lost.source {
            let group = groups.entry((source.snapshot, source.tree)).or_default();
            group.push(include_pattern(&lost.path));
        }
    }
    let mut restored = Vec::new();
    for ((snapshot, tree), patterns) in groups {
        let mut opts = RestoreOptions::new("/");
        opts.include = Patterns::new(&patterns)?;
        opts.on_conflict = OnConflict::Skip;
        opts.owner = owner;
        opts.cancel = cancel.clone();
        let snap = repo
            .load_snapshot(snapshot)
            .map_err(|source| ScanError::Repo {
                path: format!("snapshot {snapshot}"),
                source,
            })?;
        let budget = walk::entry_budget(&snap);
        let report = restorer::restore(repo, tree, &opts, budget, progress)?;
        restored.push(Restored { snapshot, report });
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::BlobId;

    #[test]
    fn include_patterns_match_exactly_their_path() {
        let path: &[u8] = b"/srv/we*ird [1]/a?{b,c}\\d/bad\xff\xfe.txt";
        let p = Patterns::new(&[include_pattern(path)]).unwrap();
        assert!(p.matches(path));
        assert!(!p.matches(b"/srv/weXird [1]/a?{b,c}\\d/bad\xff\xfe.txt"));
        assert!(!p.matches(b"/srv/we*ird 1/a?{b,c}\\d/bad\xff\xfe.txt"));
        assert!(!p.matches(b"/srv/we*ird [1]/ab\\d/bad\xff\xfe.txt"));
        assert!(!p.matches(b"/srv/we*ird [1]/a?{b,c}\\d/bad\xff\xfe.txt2"));
        assert!(!p.matches(b"/srv/we*ird [1]/a?{b,c}\\d/bad\xff\xfe.txt/x"));
    }

    #[test]
    fn a_root_is_looked_up_in_its_parent_directory() {
        assert_eq!(split(b"/"), (&b"/"[..], &b"."[..]));
        assert_eq!(split(b"/srv"), (&b"/"[..], &b"srv"[..]));
        assert_eq!(split(b"/srv/app"), (&b"/srv"[..], &b"app"[..]));
    }

    #[test]
    fn paths_within() {
        assert!(is_within(b"/a/b", b"/a"));
        assert!(is_within(b"/a", b"/a"));
        assert!(is_within(b"/a", b"/"));
        assert!(!is_within(b"/ab", b"/a"));
        assert!(!is_within(b"/a", b"/a/b"));
    }

    fn live_file(size: u64, sec: i64, chunks: Option<Vec<ChunkRef>>) -> Live {
        Live {
            kind: "file",
            size,
            mtime: Timespec { sec, nsec: 0 },
            target: None,
            chunks,
        }
    }

    #[test]
    fn changes_are_classified() {
        use crate::repo::tree::tests::file_of;
        let id = BlobId(crate::repo::id::Id::hash_of(b"x"));
        let mut node = file_of("f", &[(id, 10)]);
        node.mtime = Timespec { sec: 5, nsec: 0 };
        assert_eq!(change(&node, &live_file(10, 5, None)), None);
        assert_eq!(change(&node, &live_file(11, 5, None)), Some(Reason::Size));
        assert_eq!(change(&node, &live_file(10, 6, None)), Some(Reason::Mtime));
        let same = vec![ChunkRef { id, len: 10 }];
        assert_eq!(change(&node, &live_file(10, 5, Some(same))), None);
        let other = vec![ChunkRef {
            id: BlobId(crate::repo::id::Id::hash_of(b"y")),
            len: 10,
        }];
        let got = change(&node, &live_file(10, 5, Some(other)));
        assert_eq!(got, Some(Reason::Content));
        let mut link = live_file(0, 5, None);
        link.kind = "symlink";
        assert_eq!(change(&node, &link), Some(Reason::Type));
    }
}
