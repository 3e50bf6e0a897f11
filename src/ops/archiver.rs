//! Backup: walks the given paths, chunks and saves changed file content, reuses the parent
//! snapshot's content for unchanged files, writes one tree blob per directory and finally
//! the snapshot. Directory entries are processed in parallel; so are the chunks of a file.
//! Entries are examined and opened through [`crate::sources::fs`]: relative to their parent
//! directory's descriptor, never through a symlink, and only if still the inode examined.
use crate::cancel::{Cancel, Cancelled};
use crate::observer::{self, EntryError, EntryErrorKind, Observer, Phase};
use crate::repo::blob::BlobType;
use crate::repo::id::{BlobId, SnapshotId, TreeId};
use crate::repo::locked::Locked;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::{Snapshot, Source, Summary};
use crate::repo::tree::{ChunkRef, Node, NodeKind, Timespec, Tree};
use crate::select::filter::Patterns;
use crate::sources::fs::{SourceDir, Stat};
use crate::write::chunker::Chunker;
use crate::write::packer::Packer;
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use rustix::fs::FileType;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("no backup path given")]
    NoPaths,
    #[error("{0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    #[error("{0} is both a backup path and the place of another source in the snapshot")]
    NameClash(String),
    #[error("cannot back up {path}: {source}")]
    Path {
        path: String,
        source: std::io::Error,
    },
}

pub(crate) type Result<T> = std::result::Result<T, ArchiveError>;

/// Which snapshot a backup compares files with to skip reading unchanged ones.
#[derive(Clone, Debug)]
pub enum ParentChoice {
    /// The newest snapshot with the same host and paths.
    Auto,
    Snapshot(SnapshotId),
    None,
}

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub exclude: Patterns,
    pub one_file_system: bool,
    pub parent: ParentChoice,
    pub tags: Vec<String>,
    pub host: String,
    pub dry_run: bool,
    pub time: Option<DateTime<Utc>>,
    /// Stops the backup (with `RepoError::Cancelled`, writing no snapshot) once cancelled.
    pub cancel: Cancel,
}

pub struct BackupResult {
    pub snapshot: Snapshot,
    /// None for a dry run.
    pub id: Option<SnapshotId>,
    /// Items that could not be read. They are left out of the snapshot.
    pub errors: Vec<EntryError>,
}

/// Absolute and lexically normalised (`.` and `..` resolved without following links).
pub(crate) fn normalize(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The directory structure above the backed-up paths.
#[derive(Default)]
struct Skeleton {
    children: BTreeMap<Vec<u8>, Skeleton>,
    /// This node is itself a backup path: everything below it is read from disk.
    leaf: bool,
}

impl Skeleton {
    fn build(paths: &[PathBuf]) -> Skeleton {
        let mut root = Skeleton::default();
        for p in paths {
            let mut node = &mut root;
            for c in p.components().skip(1) {
                node = node
                    .children
                    .entry(c.as_os_str().as_bytes().to_vec())
                    .or_default();
            }
            node.leaf = true;
        }
        root
    }
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unmodified: AtomicU64,
    bytes_read: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    entries: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Archiver<'a> {
    packer: Packer<'a>,
    opts: &'a BackupOptions,
    progress: &'a dyn Observer,
    counters: Counters,
    errors: Mutex<Vec<EntryError>>,
    /// The first error writing to the repository (a full disk, say): it ends the backup,
    /// unlike an unreadable source file.
    fatal: Mutex<Option<RepoError>>,
    names: Mutex<HashMap<(bool, u32), String>>,
    seed: crate::write::chunker::GearTable,
}

/// A source other than files (a database) that saves its own entry of the root tree.
pub trait TreeSource: Sync {
    /// Saves the source's data through `packer`; returns its root-tree entry, its record,
    /// and how many entries its trees hold below that entry (for `summary.entries`).
    fn save(
        &self,
        packer: &Packer,
        progress: &dyn Observer,
    ) -> std::result::Result<(Node, Source, u64), Box<dyn std::error::Error + Send + Sync>>;
}

pub fn backup(
    repo: &Locked<'_, IndexedRepo>,
    opts: &BackupOptions,
    progress: &dyn Observer,
) -> Result<BackupResult> {
    backup_with(repo, opts, &[], progress)
}

/// A backup of `opts.paths` (possibly none) and of `sources`, in one snapshot.
pub fn backup_with(
    repo: &Locked<'_, IndexedRepo>,
    opts: &BackupOptions,
    sources: &[&dyn TreeSource],
    progress: &dyn Observer,
) -> Result<BackupResult> {
    let start = Instant::now();
    if opts.paths.is_empty() && sources.is_empty() {
        return Err(ArchiveError::NoPaths);
    }
    let paths = normalized_paths(&opts.paths)?;
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let parent = find_parent(repo, opts, &path_strings)?;
    progress.phase(Phase::Reading);
    let archiver = Archiver {
        packer: Packer::new(repo, opts.dry_run)
            .cancelled_by(&opts.cancel)
            .observed_by(progress),
        opts,
        progress,
        counters: Counters::default(),
        errors: Mutex::default(),
        fatal: Mutex::default(),
        names: Mutex::default(),
        seed: repo.key().chunker_seed(),
    };
    let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
    let skeleton = Skeleton::build(&paths);
    crate::sources::fs::raise_open_file_limit();
    let (root_dir, _) = SourceDir::open_named(Path::new("/")).map_err(|e| ArchiveError::Path {
        path: "/".into(),
        source: e.into(),
    })?;
    let root = archiver.skeleton_nodes(&root_dir, Path::new("/"), &skeleton, parent_tree);
    if let Some(e) = archiver.fatal.lock().expect("fatal lock").take() {
        return Err(e.into());
    }
    let mut root = root?;
    let mut source_records = Vec::new();
    for source in sources {
        let (node, record, entries) = source
            .save(&archiver.packer, progress)
            .map_err(ArchiveError::Source)?;
        bump(&archiver.counters.entries, entries);
        if root.iter().any(|n| n.name == node.name) {
            return Err(ArchiveError::NameClash(format!(
                "/{}",
                String::from_utf8_lossy(&node.name)
            )));
        }
        root.push(node);
        source_records.push(record);
    }
    let tree = archiver.save_tree(root, parent_tree)?;
    progress.phase(Phase::Indexing);
    let stats = archiver.packer.flush()?;
    let mut summary = archiver.summary();
    summary.bytes_added = stats.bytes;
    summary.bytes_added_raw = stats.raw_bytes;
    summary.data_blobs_added = stats.data_blobs;
    summary.tree_blobs_added = stats.tree_blobs;
    let errors = archiver.errors.into_inner().expect("errors lock");
    summary.errors = errors.len() as u64;
    summary.duration_secs = start.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        time: opts.time.unwrap_or_else(Utc::now),
        host: opts.host.clone(),
        username: crate::sysinfo::username(),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        paths: path_strings.clone(),
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        original: None,
        tree,
        sources: files_source(path_strings)
            .into_iter()
            .chain(source_records)
            .collect(),
        summary,
        program_version: crate::repo::snapshot::PROGRAM_VERSION.into(),
    };
    let id = match opts.dry_run {
        true => None,
        false => Some(repo.save_snapshot(&snapshot)?),
    };
    Ok(BackupResult {
        snapshot,
        id,
        errors,
    })
}

fn files_source(paths: Vec<String>) -> Option<Source> {
    (!paths.is_empty()).then_some(Source::Files { paths })
}

fn normalized_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let n = normalize(p).map_err(|source| ArchiveError::Path {
            path: p.display().to_string(),
            source,
        })?;
        std::fs::symlink_metadata(&n).map_err(|source| ArchiveError::Path {
            path: p.display().to_string(),
            source,
        })?;
        out.push(n);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn find_parent(
    repo: &IndexedRepo,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Snapshot(id) => Some((*id, repo.load_snapshot(*id)?)),
        ParentChoice::Auto => {
            let (all, _) = repo.snapshots()?;
            all.into_iter()
                .rev()
                .find(|(_, s)| s.same_origin(&opts.host, paths))
        }
    })
}

/// A directory as the parent snapshot holds it.
struct ParentDir {
    tree: Tree,
    /// The chunks of its files that the index still holds.
    indexed: HashSet<BlobId>,
}

impl ParentDir {
    fn find(&self, name: &[u8]) -> Option<Prior<'_>> {
        let node = self.tree.find(name)?;
        Some(Prior {
            node,
            indexed: &self.indexed,
        })
    }
}

/// An entry as the parent snapshot holds it.
#[derive(Clone, Copy)]
struct Prior<'a> {
    node: &'a Node,
    indexed: &'a HashSet<BlobId>,
}

impl Prior<'_> {
    fn subtree(self) -> Option<TreeId> {
        self.node.subtree()
    }
}

fn timespec((sec, nsec): (i64, i64)) -> Timespec {
    Timespec {
        sec,
        nsec: nsec as u32,
    }
}

impl Archiver<'_> {
    fn repo(&self) -> &IndexedRepo {
        self.packer.repo()
    }

    /// Records a repository error as fatal and turns it into an I/O error that ends the
    /// file being read.
    fn fail(&self, e: RepoError) -> std::io::Error {
        let message = e.to_string();
        self.fatal.lock().expect("fatal lock").get_or_insert(e);
        std::io::Error::other(message)
    }

    /// Whether the backup stops: a repository error, or it was cancelled.
    fn failed(&self) -> bool {
        let mut fatal = self.fatal.lock().expect("fatal lock");
        if self.opts.cancel.is_cancelled() {
            fatal.get_or_insert(RepoError::Cancelled(Cancelled));
        }
        fatal.is_some()
    }

    fn error(&self, path: &Path, e: impl Into<std::io::Error>) {
        let e = e.into();
        let entry = EntryError::new(EntryErrorKind::of_read(&e), path.display().to_string(), e);
        self.progress.error(&entry);
        self.errors.lock().expect("errors lock").push(entry);
    }

    /// A directory's tree in the parent snapshot, with which of its files' chunks the
    /// index holds, asked once for the whole directory.
    fn parent_dir(&self, id: Option<TreeId>) -> Option<ParentDir> {
        let tree = self.repo().load_tree(&id?).ok()?;
        let chunks = tree.nodes.iter().flat_map(|n| match &n.kind {
            NodeKind::File { content } => content.as_slice(),
            _ => &[],
        });
        let indexed = self
            .repo()
            .index()
            .which_contained(chunks.map(|c| &c.id))
            .unwrap_or_default();
        Some(ParentDir { tree, indexed })
    }

    /// The entries of a directory above (or at) the backup paths.
    fn skeleton_nodes(
        &self,
        dir: &SourceDir,
        path: &Path,
        sk: &Skeleton,
        parent: Option<TreeId>,
    ) -> Result<Vec<Node>> {
        let parent_dir = self.parent_dir(parent);
        let nodes: Vec<Option<Node>> = sk
            .children
            .par_iter()
            .map(|(name, child)| {
                let child_path = path.join(std::ffi::OsStr::from_bytes(name));
                let prior = parent_dir.as_ref().and_then(|d| d.find(name));
                match child.leaf {
                    true => Ok(self.backup_path(dir, &child_path, name, prior)),
                    false => self.skeleton_dir(dir, &child_path, name, child, prior),
                }
            })
            .collect::<Result<_>>()?;
        Ok(nodes.into_iter().flatten().collect())
    }

    /// A directory above the backup paths, entered as named (following a symlink).
    fn skeleton_dir(
        &self,
        dir: &SourceDir,
        path: &Path,
        name: &[u8],
        sk: &Skeleton,
        parent: Option<Prior>,
    ) -> Result<Option<Node>> {
        let (sub, meta) = match dir.open_named_child(name) {
            Ok(opened) => opened,
            Err(e) => {
                self.error(path, e);
                return Ok(None);
            }
        };
        let parent = parent.and_then(Prior::subtree);
        let nodes = self.skeleton_nodes(&sub, path, sk, parent)?;
        let subtree = self.save_tree(nodes, parent)?;
        Ok(Some(self.node(name, &meta, NodeKind::Dir { subtree })))
    }

    /// A backup path: examined, not followed, like every entry below it.
    fn backup_path(
        &self,
        dir: &SourceDir,
        path: &Path,
        name: &[u8],
        parent: Option<Prior>,
    ) -> Option<Node> {
        let meta = dir.stat(name).map_err(|e| self.error(path, e)).ok()?;
        self.entry(dir, path, name, meta, parent, meta.dev())
    }

    fn save_tree(&self, nodes: Vec<Node>, parent: Option<TreeId>) -> Result<TreeId> {
        bump(&self.counters.entries, nodes.len() as u64);
        let (id, _) = self.packer.save_tree(&Tree::new(nodes))?;
        let counter = match parent {
            None => &self.counters.dirs_new,
            Some(p) if p != id => &self.counters.dirs_changed,
            Some(_) => &self.counters.dirs_unmodified,
        };
        bump(counter, 1);
        Ok(id)
    }

    /// One entry of `dir`, as `lstat` found it. Errors are recorded and the entry left out.
    fn entry(
        &self,
        dir: &SourceDir,
        path: &Path,
        name: &[u8],
        meta: Stat,
        parent: Option<Prior>,
        root_dev: u64,
    ) -> Option<Node> {
        if self.failed() {
            return None;
        }
        let result = if meta.is_dir() {
            self.dir(dir, path, name, &meta, parent, root_dev)
        } else if meta.is_file() {
            self.file(dir, path, name, &meta, parent)
        } else {
            self.special(dir, name, &meta)
        };
        match result {
            Ok(kind) => Some(self.node(name, &meta, kind)),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    fn dir(
        &self,
        dir: &SourceDir,
        path: &Path,
        name: &[u8],
        meta: &Stat,
        parent: Option<Prior>,
        root_dev: u64,
    ) -> std::io::Result<NodeKind> {
        let parent_id = parent.and_then(Prior::subtree);
        let cross_device = self.opts.one_file_system && meta.dev() != root_dev;
        let nodes = if cross_device {
            Vec::new()
        } else {
            let sub = dir.open_dir(name, meta)?;
            self.dir_entries(&sub, path, parent_id, root_dev)?
        };
        let subtree = self.save_tree(nodes, parent_id).map_err(|e| match e {
            ArchiveError::Repo(e) => self.fail(e),
            other => std::io::Error::other(other),
        })?;
        Ok(NodeKind::Dir { subtree })
    }

    fn dir_entries(
        &self,
        dir: &SourceDir,
        path: &Path,
        parent: Option<TreeId>,
        root_dev: u64,
    ) -> std::io::Result<Vec<Node>> {
        let parent_dir = self.parent_dir(parent);
        let names = dir.names()?;
        Ok(names
            .par_iter()
            .filter_map(|name| {
                let child = path.join(std::ffi::OsStr::from_bytes(name));
                if self.opts.exclude.matches(child.as_os_str().as_bytes()) {
                    return None;
                }
                let meta = dir.stat(name).map_err(|e| self.error(&child, e)).ok()?;
                let prior = parent_dir.as_ref().and_then(|d| d.find(name));
                self.entry(dir, &child, name, meta, prior, root_dev)
            })
            .collect())
    }

    fn file(
        &self,
        dir: &SourceDir,
        path: &Path,
        name: &[u8],
        meta: &Stat,
        parent: Option<Prior>,
    ) -> std::io::Result<NodeKind> {
        self.progress.item(&path.to_string_lossy());
        let (content, counter) = match parent.and_then(|p| self.unchanged(p, meta)) {
            Some(content) => (content, &self.counters.files_unmodified),
            None => {
                let content = self.read_content(dir.open_file(name, meta)?, meta.size())?;
                let counter = match parent {
                    Some(_) => &self.counters.files_changed,
                    None => &self.counters.files_new,
                };
                (content, counter)
            }
        };
        bump(counter, 1);
        bump(&self.counters.total_files, 1);
        self.progress.add(observer::Counters::files(1));
        bump(
            &self.counters.total_bytes,
            content.iter().map(|c| c.len as u64).sum(),
        );
        Ok(NodeKind::File { content })
    }

    /// The parent's content when size, mtime, ctime and inode match and every chunk is
    /// still indexed.
    fn unchanged(&self, parent: Prior, meta: &Stat) -> Option<Vec<ChunkRef>> {
        let node = parent.node;
        let NodeKind::File { content } = &node.kind else {
            return None;
        };
        let same = node.size == meta.size()
            && node.mtime == timespec(meta.mtime())
            && node.ctime == timespec(meta.ctime())
            && node.inode == meta.ino();
        let indexed = || content.iter().all(|c| parent.indexed.contains(&c.id));
        (same && indexed()).then(|| content.clone())
    }

    /// Chunks a file and saves the chunks, a window of them in parallel at a time so that
    /// one large file uses every core while memory stays bounded.
    fn read_content(&self, file: File, len: u64) -> std::io::Result<Vec<ChunkRef>> {
        let window = rayon::current_num_threads().max(2);
        let mut chunks =
            Chunker::new(file, self.repo().config().chunker, &self.seed).expecting(len);
        let mut content = Vec::new();
        loop {
            let batch = chunks
                .by_ref()
                .take(window)
                .collect::<std::io::Result<Vec<_>>>()?;
            if batch.is_empty() {
                return Ok(content);
            }
            let saved = batch
                .par_iter()
                .map(|data| self.save_chunk(data))
                .collect::<std::io::Result<Vec<_>>>()?;
            content.extend(saved);
        }
    }

    fn save_chunk(&self, data: &[u8]) -> std::io::Result<ChunkRef> {
        let (id, _) = self
            .packer
            .save(BlobType::Data, data)
            .map_err(|e| self.fail(e))?;
        bump(&self.counters.bytes_read, data.len() as u64);
        self.progress
            .add(observer::Counters::bytes_read(data.len() as u64));
        Ok(ChunkRef {
            id,
            len: data.len() as u32,
        })
    }

    /// A symlink (its target read, never followed) or an entry that is never opened.
    fn special(&self, dir: &SourceDir, name: &[u8], meta: &Stat) -> std::io::Result<NodeKind> {
        Ok(match meta.file_type() {
            FileType::Symlink => NodeKind::Symlink {
                target: dir.read_link(name)?,
            },
            FileType::CharacterDevice => NodeKind::CharDev { rdev: meta.rdev() },
            FileType::BlockDevice => NodeKind::BlockDev { rdev: meta.rdev() },
            FileType::Fifo => NodeKind::Fifo,
            _ => NodeKind::Socket,
        })
    }

    fn name_of(&self, group: bool, id: u32) -> String {
        let mut names = self.names.lock().expect("names lock");
        names
            .entry((group, id))
            .or_insert_with(|| {
                let found = match group {
                    true => crate::sysinfo::group_name(id),
                    false => crate::sysinfo::user_name(id),
                };
                found.unwrap_or_default()
            })
            .clone()
    }

    fn node(&self, name: &[u8], meta: &Stat, kind: NodeKind) -> Node {
        let size = match &kind {
            NodeKind::File { content } => content.iter().map(|c| c.len as u64).sum(),
            _ => 0,
        };
        Node {
            name: name.to_vec(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            user: self.name_of(false, meta.uid()),
            group: self.name_of(true, meta.gid()),
            mtime: timespec(meta.mtime()),
            ctime: timespec(meta.ctime()),
            inode: meta.ino(),
            device: meta.dev(),
            links: meta.nlink(),
            size,
            xattrs: Vec::new(),
        }
    }

    fn summary(&self) -> Summary {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Summary {
            files_new: get(&c.files_new),
            files_changed: get(&c.files_changed),
            files_unmodified: get(&c.files_unmodified),
            dirs_new: get(&c.dirs_new),
            dirs_changed: get(&c.dirs_changed),
            dirs_unmodified: get(&c.dirs_unmodified),
            bytes_read: get(&c.bytes_read),
            total_files: get(&c.total_files),
            total_bytes: get(&c.total_bytes),
            entries: Some(get(&c.entries)),
            ..Summary::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::packer::tests::indexed_repo;

    fn opts(paths: Vec<PathBuf>) -> BackupOptions {
        BackupOptions {
            paths,
            exclude: Patterns::new::<&str>(&[]).unwrap(),
            one_file_system: false,
            parent: ParentChoice::Auto,
            tags: vec![],
            host: "test".into(),
            dry_run: false,
            time: None,
            cancel: Cancel::default(),
        }
    }

    fn walk(repo: &IndexedRepo, tree: TreeId, path: &[&str]) -> Node {
        let t = repo.load_tree(&tree).unwrap();
        let node = t.find(path[0].as_bytes()).unwrap().clone();
        match path.len() {
            1 => node,
            _ => walk(repo, node.subtree().unwrap(), &path[1..]),
        }
    }

    #[test]
    fn backup_then_unchanged_rebackup_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/empty")).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        std::fs::write(src.join("sub/b.bin"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(src.join("skip.tmp"), b"x").unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        let mut o = opts(vec![src.clone()]);
        o.exclude = Patterns::new(&["*.tmp"]).unwrap();
        let first = backup(&lock, &o, &crate::observer::Quiet).unwrap();
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(first.snapshot.summary.files_new, 2);
        assert_eq!(first.snapshot.summary.bytes_read, 5 + (3 << 20));
        let comps: Vec<&str> = src
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .split('/')
            .collect();
        let mut p = comps.clone();
        p.push("sub");
        p.push("b.bin");
        assert_eq!(walk(&repo, first.snapshot.tree, &p).size, 3 << 20);
        let mut p = comps.clone();
        p.push("link");
        assert_eq!(
            walk(&repo, first.snapshot.tree, &p).kind,
            NodeKind::Symlink {
                target: b"a.txt".to_vec()
            }
        );
        let root = repo
            .load_tree(&walk(&repo, first.snapshot.tree, &comps).subtree().unwrap())
            .unwrap();
        assert!(root.find(b"skip.tmp").is_none(), "excluded");

        let second = backup(&lock, &o, &crate::observer::Quiet).unwrap();
        let s = &second.snapshot.summary;
        assert_eq!(
            (s.files_unmodified, s.bytes_read, s.data_blobs_added),
            (2, 0, 0)
        );
        // Only the directories above the source may differ: other processes touch /tmp.
        assert!(s.tree_blobs_added <= comps.len() as u64, "{s:?}");
        assert_eq!(second.snapshot.parent, first.id);
        let subtree = |tree| walk(&repo, tree, &comps).subtree();
        assert_eq!(subtree(second.snapshot.tree), subtree(first.snapshot.tree));
    }

    #[test]
    fn unreadable_files_are_reported_and_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let missing = dir.path().join("nope");
        let err = backup(&lock, &opts(vec![missing]), &crate::observer::Quiet);
        assert!(matches!(err, Err(ArchiveError::Path { .. })));
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let fifo = src.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o600),
            0,
        )
        .unwrap();
        let r = backup(&lock, &opts(vec![src]), &crate::observer::Quiet).unwrap();
        assert!(
            r.errors.is_empty(),
            "a fifo is recorded, never opened: {:?}",
            r.errors
        );
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
        assert_eq!(normalize(Path::new("/..")).unwrap(), PathBuf::from("/"));
    }
}
