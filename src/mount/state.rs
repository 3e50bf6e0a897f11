//! What the mounted filesystem knows and does, independent of the FUSE protocol: resolving
//! names to inodes, attributes, directory listings, and reading files lazily through the blob
//! cache, fetching the next chunks ahead on the thread pool while a file is read in order.
use super::attr::{Attr, Kind, generated_attr, node_attr, node_kind, snapshot_attr};
use super::cache::Cache;
use super::inodes::{Entry, Inodes, child_ino, node_ino};
use super::layout::{Layout, VEntry};
use crate::backend::pool::IoPool;
use crate::ops::sandbox::validate_name;
use crate::repo::blob::BlobError;
use crate::repo::id::{BlobId, TreeId};
use crate::repo::repository::IndexedRepo;
use crate::repo::tree::{ChunkRef, Node, NodeKind, Tree, chunk_at, chunk_offsets};
use crate::vfs;
use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

pub(super) type Result<T> = std::result::Result<T, FsError>;

/// Why a request on the mounted tree failed; the FUSE layer answers with the matching errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum FsError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("invalid for this entry")]
    Invalid,
    #[error("no such open file")]
    BadHandle,
    #[error("no such extended attribute")]
    NoAttribute,
    #[error("the repository could not be read")]
    Io,
}

/// How long the kernel may keep names and attributes of snapshot contents (they never change).
pub(super) const CONTENT_TTL: Duration = Duration::from_secs(3600);
/// … and of the generated directories, which change when new snapshots appear.
pub(super) const LAYOUT_TTL: Duration = Duration::from_secs(1);
/// Memory for decoded trees (directory listings), besides the file-chunk budget.
const TREE_CACHE_BYTES: u64 = 64 << 20;

/// A chunk that does not match its tree entry is an I/O error for the reader.
impl From<BlobError> for FsError {
    fn from(_: BlobError) -> FsError {
        FsError::Io
    }
}

/// An open file: its chunks, their offsets, and the last chunk read (to spot sequential reads).
struct OpenFile {
    content: Vec<ChunkRef>,
    offsets: Vec<u64>,
    last_chunk: AtomicUsize,
}

/// Bytes read from a file: part of a cached chunk (not copied), or an assembled buffer.
pub(super) struct Bytes {
    buf: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl Bytes {
    fn whole(buf: Arc<Vec<u8>>) -> Bytes {
        Bytes {
            range: 0..buf.len(),
            buf,
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// What a directory lists.
enum Listing {
    Layout {
        layout: Arc<Layout>,
        path: Vec<String>,
    },
    Tree {
        view: u64,
        tree: Arc<Tree>,
    },
}

/// One directory entry: its position, inode, type and name.
pub(super) type DirEntry<'a> = (usize, u64, Kind, &'a [u8]);

impl Listing {
    /// The entries from position `start` on. Positions count every entry (also names that
    /// are not shown because they are not valid file names), so they stay valid across calls.
    fn entries(&self, ino: u64, start: usize) -> Box<dyn Iterator<Item = DirEntry<'_>> + '_> {
        match self {
            Listing::Layout { layout, path } => match layout.get(path) {
                Some(VEntry::Dir(dir)) => Box::new(dir.iter().enumerate().skip(start).map(
                    move |(i, (name, e))| {
                        let name = name.as_bytes();
                        (i, child_ino(ino, name), layout_kind(e), name)
                    },
                )),
                _ => Box::new(std::iter::empty()),
            },
            Listing::Tree { view, tree } => Box::new(
                tree.nodes
                    .iter()
                    .enumerate()
                    .skip(start)
                    .filter(|(_, n)| validate_name(&n.name).is_ok())
                    .map(move |(i, n)| (i, node_ino(ino, *view, n), node_kind(n), &n.name[..])),
            ),
        }
    }
}

fn layout_kind(entry: &VEntry) -> Kind {
    match entry {
        VEntry::Link(_) => Kind::Symlink,
        _ => Kind::Dir,
    }
}

pub(super) struct State {
    repo: Arc<IndexedRepo>,
    layout: RwLock<Arc<Layout>>,
    inodes: Inodes,
    blobs: Cache<Arc<Vec<u8>>>,
    trees: Cache<Arc<Tree>>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
    /// How many chunks to fetch ahead of a sequential reader.
    read_ahead: usize,
    /// Where those fetches run.
    io: IoPool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn blob_weight(b: &Arc<Vec<u8>>) -> u64 {
    b.len() as u64
}

/// About the memory a decoded tree takes.
fn tree_weight(t: &Arc<Tree>) -> u64 {
    let node = |n: &Node| {
        std::mem::size_of::<Node>()
            + n.name.len()
            + n.user.len()
            + n.group.len()
            + std::mem::size_of_val(n.content())
    };
    t.nodes.iter().map(node).sum::<usize>() as u64
}

fn eio<E>(_: E) -> FsError {
    FsError::Io
}

impl State {
    pub(super) fn new(repo: Arc<IndexedRepo>, layout: Layout, cache_bytes: u64) -> State {
        State {
            read_ahead: vfs::read_ahead_window(repo.backend()),
            io: IoPool::for_backend(repo.backend()),
            repo,
            layout: RwLock::new(Arc::new(layout)),
            inodes: Inodes::new(),
            blobs: Cache::new(cache_bytes, blob_weight),
            trees: Cache::new(TREE_CACHE_BYTES, tree_weight),
            files: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    pub(super) fn repo(&self) -> &IndexedRepo {
        &self.repo
    }

    pub(super) fn layout(&self) -> Arc<Layout> {
        self.layout
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_layout(&self, layout: Layout) {
        *self.layout.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(layout);
    }

    fn entry(&self, ino: u64) -> Result<Arc<Entry>> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    fn tree(&self, id: TreeId) -> Result<Arc<Tree>> {
        let load = || self.repo.load_tree(&id).map(Arc::new);
        self.trees.get(id.blob(), load).map_err(eio)
    }

    fn blob(&self, id: BlobId) -> Result<Arc<Vec<u8>>> {
        let read = || self.repo.read_blob(&id).map(Arc::new);
        self.blobs.get(id, read).map_err(eio)
    }

    fn listing(&self, ino: u64, entry: &Entry) -> Result<Listing> {
        let (path, layout) = match entry {
            Entry::Node { view, node, .. } => {
                let subtree = node.subtree().ok_or(FsError::NotADirectory)?;
                let tree = self.tree(subtree)?;
                return Ok(Listing::Tree { view: *view, tree });
            }
            Entry::Virtual { path, .. } => (path, self.layout()),
        };
        match layout.get(path).ok_or(FsError::NotFound)? {
            VEntry::Dir(_) => Ok(Listing::Layout {
                path: path.clone(),
                layout,
            }),
            VEntry::Snapshot(snap) => Ok(Listing::Tree {
                view: ino,
                tree: self.tree(snap.1.tree)?,
            }),
            VEntry::Link(_) => Err(FsError::NotADirectory),
        }
    }

    /// The attributes of `ino` and how long the kernel may keep them.
    pub(super) fn getattr(&self, ino: u64) -> Result<(Attr, Duration)> {
        self.attr(ino, &*self.entry(ino)?)
    }

    fn attr(&self, ino: u64, entry: &Entry) -> Result<(Attr, Duration)> {
        let path = match entry {
            Entry::Node { node, .. } => return Ok((node_attr(ino, node), CONTENT_TTL)),
            Entry::Virtual { path, .. } => path,
        };
        let layout = self.layout();
        let attr = match layout.get(path).ok_or(FsError::NotFound)? {
            VEntry::Dir(_) => generated_attr(ino, Kind::Dir, 0, &layout.built),
            VEntry::Link(to) => generated_attr(ino, Kind::Symlink, to.len() as u64, &layout.built),
            VEntry::Snapshot(snap) => snapshot_attr(ino, &snap.1),
        };
        Ok((attr, LAYOUT_TTL))
    }

    /// Finds `name` in directory `parent`; the kernel now holds one more reference to it.
    pub(super) fn lookup(&self, parent: u64, name: &[u8]) -> Result<(Attr, Duration)> {
        let (ino, child) = match self.listing(parent, &*self.entry(parent)?)? {
            Listing::Layout { layout, mut path } => {
                let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
                path.push(name.to_string());
                layout.get(&path).ok_or(FsError::NotFound)?;
                let ino = child_ino(parent, name.as_bytes());
                (ino, Entry::Virtual { parent, path })
            }
            Listing::Tree { view, tree } => {
                validate_name(name).map_err(|_| FsError::NotFound)?;
                let node = tree.find(name).ok_or(FsError::NotFound)?.clone();
                let ino = node_ino(parent, view, &node);
                (ino, Entry::Node { parent, view, node })
            }
        };
        let attr = self.attr(ino, &child)?;
        self.inodes.remember(ino, || child);
        Ok(attr)
    }

    pub(super) fn forget(&self, ino: u64, count: u64) {
        self.inodes.forget(ino, count);
    }

    /// Calls `add(inode, next offset, type, name)` for the entries of directory `ino` from
    /// `offset` on (`.` and `..` first) until it returns true (the reply is full).
    pub(super) fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> Result<()> {
        let entry = self.entry(ino)?;
        let listing = self.listing(ino, &entry)?;
        let dots = [(ino, &b"."[..]), (entry.parent(), &b".."[..])];
        for (i, (dot, name)) in dots.into_iter().enumerate().skip(offset as usize) {
            if add(dot, i as u64 + 1, Kind::Dir, name) {
                return Ok(());
            }
        }
        let start = offset.saturating_sub(2) as usize;
        for (i, child, kind, name) in listing.entries(ino, start) {
            if add(child, i as u64 + 3, kind, name) {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let path = match &*self.entry(ino)? {
            Entry::Node {
                node:
                    Node {
                        kind: NodeKind::Symlink { target },
                        ..
                    },
                ..
            } => return Ok(target.clone()),
            Entry::Node { .. } => return Err(FsError::Invalid),
            Entry::Virtual { path, .. } => path.clone(),
        };
        match self.layout().get(&path) {
            Some(VEntry::Link(target)) => Ok(target.as_bytes().to_vec()),
            Some(_) => Err(FsError::Invalid),
            None => Err(FsError::NotFound),
        }
    }

    /// Opens file `ino` for reading; returns the handle.
    pub(super) fn open(&self, ino: u64) -> Result<u64> {
        let entry = self.entry(ino)?;
        let Entry::Node { node, .. } = &*entry else {
            return Err(FsError::IsADirectory);
        };
        let NodeKind::File { content } = &node.kind else {
            return Err(FsError::Invalid);
        };
        let file = OpenFile {
            offsets: chunk_offsets(content),
            content: content.clone(),
            last_chunk: AtomicUsize::new(0),
        };
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(handle, Arc::new(file));
        Ok(handle)
    }

    pub(super) fn release(&self, handle: u64) {
        lock(&self.files).remove(&handle);
    }

    /// Up to `size` bytes from `offset` of the open file `handle`.
    pub(super) fn read(self: &Arc<Self>, handle: u64, offset: u64, size: u32) -> Result<Bytes> {
        let file = lock(&self.files)
            .get(&handle)
            .cloned()
            .ok_or(FsError::BadHandle)?;
        self.read_ahead(&file, offset, size.into());
        self.read_file(&file, offset, size)
    }

    /// A read within one chunk is a view of the cached chunk; others are assembled.
    fn read_file(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Bytes> {
        let offsets = &file.offsets;
        let end = offset
            .saturating_add(size.into())
            .min(*offsets.last().unwrap_or(&0));
        if let Some(i) = chunk_at(offsets, offset).filter(|&i| end <= offsets[i + 1]) {
            let chunk = &file.content[i];
            let blob = self.blob(chunk.id)?;
            let range = vfs::chunk_range(blob.len(), chunk, offsets[i], offset..end)?;
            return Ok(Bytes { buf: blob, range });
        }
        let fetch = |c: &ChunkRef| self.blob(c.id).map(Bytes::whole);
        let data = vfs::read_chunks(&file.content, offsets, offset, size.into(), fetch)?;
        Ok(Bytes::whole(Arc::new(data)))
    }

    /// When a read of `len` bytes at `offset` continues the previous one (it starts in the
    /// chunk where the last ended or the next; requests may arrive slightly out of order),
    /// starts fetching the chunks after it on the thread pool, before the read itself waits.
    fn read_ahead(self: &Arc<Self>, file: &OpenFile, offset: u64, len: u64) {
        let total = *file.offsets.last().unwrap_or(&0);
        let Some(first) = chunk_at(&file.offsets, offset) else {
            return;
        };
        let end = offset.saturating_add(len.max(1)).min(total);
        let last = chunk_at(&file.offsets, end - 1).unwrap_or(first);
        if file
            .last_chunk
            .swap(last, Ordering::Relaxed)
            .abs_diff(first)
            > 1
        {
            return;
        }
        let ahead = file.content.iter().skip(last + 1).take(self.read_ahead);
        for id in ahead.map(|c| c.id).filter(|id| !self.blobs.has(id)) {
            let state = self.clone();
            // A failed fetch is not kept: the reader will fetch again and see the error.
            self.io.spawn(move || drop(state.blob(id)));
        }
    }

    /// The extended attribute `name` of `ino`.
    pub(super) fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let entry = self.entry(ino)?;
        let Entry::Node { node, .. } = &*entry else {
            return Err(FsError::NoAttribute);
        };
        let found = node.xattrs.iter().find(|x| x.name == name);
        found.map(|x| x.value.clone()).ok_or(FsError::NoAttribute)
    }

    /// The names of the extended attributes of `ino`, each followed by a NUL byte.
    pub(super) fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let entry = self.entry(ino)?;
        let mut names = Vec::new();
        if let Entry::Node { node, .. } = &*entry {
            for x in &node.xattrs {
                names.extend_from_slice(&x.name);
                names.push(0);
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::super::inodes::ROOT;
    use super::*;
    use crate::repo::blob::BlobType;
    use crate::repo::id::{Id, SnapshotId};
    use crate::repo::snapshot::Snapshot;
    use crate::repo::tree::Xattr;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::indexed_repo;

    /// A repository with one snapshot `/d/f` (a file of 40 chunks of 1000..1039 bytes).
    fn state_with_file() -> (tempfile::TempDir, Arc<State>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let chunks: Vec<Vec<u8>> = (0..40u32)
            .map(|i| (0..1000 + i).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        let refs: Vec<(BlobId, usize)> = chunks
            .iter()
            .map(|c| (packer.save(BlobType::Data, c).unwrap().0, c.len()))
            .collect();
        let mut file = file_of("f", &refs);
        file.xattrs = vec![Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }];
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let sub = save(Tree::new(vec![file]));
        let root = save(Tree::new(vec![dir_of("d", sub)]));
        packer.flush().unwrap();
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/d"], "tree": root,
            "program_version": "t"});
        let snap: Snapshot = serde_json::from_value(json).unwrap();
        let snaps = [(SnapshotId(Id([1; 32])), snap)];
        let layout = Layout::build(&snaps.iter().collect::<Vec<_>>());
        let state = Arc::new(State::new(Arc::new(repo), layout, 10_000));
        (dir, state, chunks.concat())
    }

    fn names(state: &State, ino: u64) -> Vec<String> {
        let mut out = Vec::new();
        state
            .readdir(ino, 0, |_, _, _, name| {
                out.push(String::from_utf8_lossy(name).into_owned());
                false
            })
            .unwrap();
        out
    }

    fn walk(state: &State, path: &[&str]) -> u64 {
        path.iter().fold(ROOT, |ino, name| {
            state.lookup(ino, name.as_bytes()).unwrap().0.ino
        })
    }

    #[test]
    fn names_resolve_through_the_layout_into_the_tree() {
        let (_dir, state, _) = state_with_file();
        assert_eq!(
            names(&state, ROOT),
            [".", "..", "hosts", "ids", "snapshots", "tags"]
        );
        let ids = walk(&state, &["ids"]);
        assert_eq!(names(&state, ids), [".", "..", "01010101"]);
        let file = walk(&state, &["ids", "01010101", "d", "f"]);
        let (attr, ttl) = state.getattr(file).unwrap();
        assert_eq!(
            (attr.size, attr.kind, ttl),
            (40 * 1000 + 780, Kind::File, CONTENT_TTL)
        );
        assert_eq!(state.getxattr(file, b"user.k").unwrap(), b"v");
        assert_eq!(state.listxattr(file).unwrap(), b"user.k\0");
        let link = walk(&state, &["snapshots", "latest"]);
        let target = String::from_utf8(state.readlink(link).unwrap()).unwrap();
        assert!(target.ends_with("_01010101"), "{target}");
        assert_eq!(state.lookup(ids, b"nope").unwrap_err(), FsError::NotFound);
        assert_eq!(
            state.lookup(file, b"x").unwrap_err(),
            FsError::NotADirectory
        );
        state.forget(file, 1);
        assert_eq!(state.getattr(file).unwrap_err(), FsError::NotFound);
        assert_eq!(
            walk(&state, &["ids", "01010101", "d", "f"]),
            file,
            "same number again"
        );
    }

    #[test]
    fn readdir_resumes_at_the_offset_it_handed_out() {
        let (_dir, state, _) = state_with_file();
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let mut batch = Vec::new();
            state
                .readdir(ROOT, offset, |_, next, _, name| {
                    batch.push((next, name.to_vec()));
                    batch.len() == 2
                })
                .unwrap();
            let Some(last) = batch.last() else { break };
            offset = last.0;
            seen.extend(
                batch
                    .into_iter()
                    .map(|(_, n)| String::from_utf8(n).unwrap()),
            );
        }
        assert_eq!(seen, [".", "..", "hosts", "ids", "snapshots", "tags"]);
    }

    #[test]
    fn reads_at_any_offset_return_the_right_bytes_and_prefetch_stays_bounded() {
        let (_dir, state, whole) = state_with_file();
        let file = walk(&state, &["ids", "01010101", "d", "f"]);
        let handle = state.open(file).unwrap();
        for (offset, size) in [
            (0, 1),
            (999, 2),
            (1000, 4096),
            (5555, 17),
            (40_700, 200),
            (40_780, 5),
        ] {
            let got = state.read(handle, offset, size).unwrap();
            let end = (offset as usize + size as usize).min(whole.len());
            assert_eq!(
                *got,
                whole[offset as usize..end],
                "offset {offset} size {size}"
            );
        }
        let mut sequential = Vec::new();
        while sequential.len() < whole.len() {
            sequential
                .extend_from_slice(&state.read(handle, sequential.len() as u64, 700).unwrap());
        }
        assert_eq!(sequential, whole);
        assert!(state.blobs.weight() <= 10_000, "cache over budget");
        state.release(handle);
        assert!(matches!(state.read(handle, 0, 1), Err(FsError::BadHandle)));
        let dir = walk(&state, &["ids", "01010101", "d"]);
        assert_eq!(state.open(dir).unwrap_err(), FsError::Invalid);
    }
}
