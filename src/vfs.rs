//! Paths inside a snapshot: finding the node at a path, visiting each distinct tree once, and
//! reading a file's bytes (whole or any range) from its chunk list.
use crate::backend::Backend;
use crate::backend::pool::IoPool;
use crate::cancel::{Cancel, Cancelled};
use crate::repo::blob::BlobError;
use crate::repo::id::{SnapshotId, TreeId};
use crate::repo::repository::{IndexedRepo, RepoError, Result};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{ChunkRef, Node, NodeKind, Timespec, Tree, chunk_at, chunk_offsets};
use crate::walk;
use rayon::prelude::*;
use std::collections::HashSet;
use std::io::Write;
use std::ops::Range;

/// Splits `/a/b/` into its non-empty components.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// A directory node standing for a snapshot's root tree.
pub fn root_node(tree: TreeId) -> Node {
    Node {
        name: Vec::new(),
        kind: NodeKind::Dir { subtree: tree },
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
        inode: 0,
        device: 0,
        links: 1,
        size: 0,
        xattrs: Vec::new(),
    }
}

/// The node at `path` below the root tree `tree`.
pub fn node_at(repo: &IndexedRepo, tree: TreeId, path: &[u8]) -> Result<Node> {
    let mut node = root_node(tree);
    for name in components(path) {
        let subtree = node.subtree().ok_or_else(|| not_found(path))?;
        node = repo
            .load_tree(&subtree)?
            .find(name)
            .cloned()
            .ok_or_else(|| not_found(path))?;
    }
    Ok(node)
}

fn not_found(path: &[u8]) -> RepoError {
    RepoError::NoSuchPath(String::from_utf8_lossy(path).into_owned())
}

/// A tree reached by [`for_each_tree`], with the first snapshot and path that reached it.
pub(crate) struct Reached {
    pub id: TreeId,
    pub snapshot: SnapshotId,
    pub path: String,
}

impl Reached {
    /// "at PATH in snapshot SHORT", for messages about this tree.
    pub(crate) fn location(&self) -> String {
        format!("at {} in snapshot {}", self.path, self.snapshot.0.short())
    }
}

/// How many bytes of trees (as the index records their plaintext) [`for_each_tree`] loads at
/// once: a tree of 1,000 files of 100 chunks each is about 3.6 MB, so a count alone (up to
/// [`walk::BATCH`] trees) could hold close to a gigabyte of decoded trees.
pub(crate) const TREE_BATCH_BYTES: u64 = 16 << 20;

/// Calls `visit` once for every distinct tree reachable from the snapshots' root trees
/// (with the error when it cannot be loaded), breadth first, loading a batch of trees in
/// parallel at a time (up to [`walk::BATCH`] trees and [`TREE_BATCH_BYTES`]); stops before
/// the next batch once `cancel` is cancelled. Iterative and visiting each tree once, so
/// neither deep nor cyclic (forged) trees can overflow the stack or loop.
pub(crate) fn for_each_tree(
    repo: &IndexedRepo,
    snapshots: &[(SnapshotId, Snapshot)],
    cancel: &Cancel,
    mut visit: impl FnMut(&Reached, Result<&Tree>),
) -> std::result::Result<(), Cancelled> {
    let mut seen = HashSet::new();
    let pool = IoPool::for_backend(repo.backend());
    let mut frontier: Vec<Reached> = snapshots
        .iter()
        .filter(|(_, s)| seen.insert(s.tree))
        .map(|(id, s)| Reached {
            id: s.tree,
            snapshot: *id,
            path: "/".into(),
        })
        .collect();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        let load = |r: &Reached| repo.load_tree(&r.id);
        let limit = walk::Limit {
            items: walk::BATCH,
            weight: TREE_BATCH_BYTES,
        };
        // A tree the index lacks weighs nothing: loading it fails at once.
        let weigh = |r: &Reached| match repo.index().lookup(&r.id.blob()) {
            Ok(Some(loc)) => u64::from(loc.entry.raw_length),
            _ => 0,
        };
        walk::in_weighed_batches(
            limit,
            &frontier,
            weigh,
            &pool,
            cancel,
            load,
            |reached, tree| {
                match tree {
                    Ok(tree) => {
                        queue_subtrees(reached, &tree, &mut seen, &mut next);
                        visit(reached, Ok(&tree));
                    }
                    Err(e) => visit(reached, Err(e)),
                }
                Ok::<(), Cancelled>(())
            },
        )?;
        frontier = next;
    }
    Ok(())
}

fn queue_subtrees(
    from: &Reached,
    tree: &Tree,
    seen: &mut HashSet<TreeId>,
    next: &mut Vec<Reached>,
) {
    for node in &tree.nodes {
        if let Some(id) = node.subtree().filter(|id| seen.insert(*id)) {
            next.push(Reached {
                id,
                snapshot: from.snapshot,
                path: child_path(&from.path, &node.name),
            });
        }
    }
}

/// `parent/name` for messages: lossy UTF-8, and a name that is not a valid path component
/// (empty, `..`, containing `/` or NUL) quoted and escaped so it cannot pass for one.
pub(crate) fn child_path(parent: &str, name: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(name);
    let name = match crate::ops::sandbox::validate_name(name) {
        Ok(()) => lossy.into_owned(),
        Err(_) => format!("{lossy:?}"),
    };
    match parent.ends_with('/') {
        true => format!("{parent}{name}"),
        false => format!("{parent}/{name}"),
    }
}

/// How many chunks to fetch in parallel ahead of a sequential reader of `backend`: twice the
/// threads, and at least one per connection of a remote store.
pub(crate) fn read_ahead_window(backend: &dyn Backend) -> usize {
    (rayon::current_num_threads().max(2) * 2).max(backend.connections())
}

/// The chunks of a file (its `content`) in order, for a sequential reader: fetched
/// [`read_ahead_window`] at a time in parallel, each checked against the length its tree
/// gives it.
pub(crate) fn chunks<'a>(
    repo: &'a IndexedRepo,
    content: &'a [ChunkRef],
) -> impl Iterator<Item = Result<Vec<u8>>> + 'a {
    let pool = IoPool::for_backend(repo.backend());
    let window = read_ahead_window(repo.backend());
    content.chunks(window).flat_map(move |window| {
        let fetch = |c: &ChunkRef| {
            let blob = repo.read_blob(&c.id)?;
            check_len(blob.len(), c)?;
            Ok(blob)
        };
        pool.install(|| {
            window
                .par_iter()
                .map(fetch)
                .collect::<Vec<Result<Vec<u8>>>>()
        })
    })
}

/// Writes a file's whole content to `out` (see [`chunks`]).
pub fn copy_file(
    repo: &IndexedRepo,
    node: &Node,
    out: &mut dyn Write,
) -> std::result::Result<u64, CopyError> {
    copy_range(repo, node, 0..u64::MAX, out)
}

/// Writes the bytes `range` of a file's content (cut at its end) to `out`, reading only the
/// chunks that hold them, in order (see [`chunks`]): never more than the read-ahead window
/// of chunks in memory.
pub fn copy_range(
    repo: &IndexedRepo,
    node: &Node,
    range: Range<u64>,
    out: &mut dyn Write,
) -> std::result::Result<u64, CopyError> {
    let content = node.content();
    let offsets = chunk_offsets(content);
    let end = range.end.min(offsets[offsets.len() - 1]);
    let (Some(first), true) = (chunk_at(&offsets, range.start), range.start < end) else {
        return Ok(0);
    };
    let last = chunk_at(&offsets, end - 1).unwrap_or(first);
    let mut written = 0u64;
    for (i, chunk) in (first..=last).zip(chunks(repo, &content[first..=last])) {
        let chunk = chunk?;
        let from = range.start.saturating_sub(offsets[i]) as usize;
        let to = (end - offsets[i]).min(chunk.len() as u64) as usize;
        out.write_all(&chunk[from..to])?;
        written += (to - from) as u64;
    }
    Ok(written)
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// Up to `len` bytes of a file from `offset`, reading only the chunks that hold them.
pub(crate) fn read_range(
    repo: &IndexedRepo,
    node: &Node,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let content = node.content();
    let offsets = chunk_offsets(content);
    read_chunks(content, &offsets, offset, len, |c| repo.read_blob(&c.id))
}

/// Up to `len` bytes from `offset` of the file made of `content` (whose `chunk_offsets` are
/// `offsets`), asking `fetch` only for the chunks that hold them. A chunk whose length is not
/// the one in the tree is an error.
pub(crate) fn read_chunks<B: AsRef<[u8]>, E: From<BlobError>>(
    content: &[ChunkRef],
    offsets: &[u64],
    offset: u64,
    len: u64,
    mut fetch: impl FnMut(&ChunkRef) -> std::result::Result<B, E>,
) -> std::result::Result<Vec<u8>, E> {
    let end = offset
        .saturating_add(len)
        .min(*offsets.last().unwrap_or(&0));
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    let Some(mut i) = chunk_at(offsets, offset) else {
        return Ok(out);
    };
    while offsets[i] < end {
        let blob = fetch(&content[i])?;
        let blob = blob.as_ref();
        let part = chunk_range(blob.len(), &content[i], offsets[i], offset..end)?;
        out.extend_from_slice(&blob[part]);
        i += 1;
    }
    Ok(out)
}

/// Where the bytes `wanted` (file offsets) lie in chunk `chunk`, which starts at file offset
/// `start` and was read as a blob of `blob_len` bytes: an error when that is not the length
/// the tree gives the chunk.
pub(crate) fn chunk_range(
    blob_len: usize,
    chunk: &ChunkRef,
    start: u64,
    wanted: Range<u64>,
) -> std::result::Result<Range<usize>, BlobError> {
    check_len(blob_len, chunk)?;
    let end = start + u64::from(chunk.len);
    let from = wanted.start.clamp(start, end) - start;
    let to = wanted.end.clamp(start, end) - start;
    Ok(from as usize..to.max(from) as usize)
}

/// An error unless a blob read for `chunk` has the length its tree gives it.
fn check_len(blob_len: usize, chunk: &ChunkRef) -> std::result::Result<(), BlobError> {
    match blob_len == chunk.len as usize {
        true => Ok(()),
        false => Err(BlobError::Length {
            id: chunk.id,
            expected: chunk.len,
            actual: blob_len,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::BlobType;
    use crate::repo::tree::{ChunkRef, Tree, tests::file_node};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};

    #[test]
    fn chunks_come_in_order_across_windows_and_a_wrong_length_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let n = read_ahead_window(repo.backend()) * 2 + 1;
        let blobs: Vec<Vec<u8>> = (0..n as u32).map(random_blob).collect();
        let mut content: Vec<ChunkRef> = blobs
            .iter()
            .map(|b| ChunkRef {
                id: packer.save(BlobType::Data, b).unwrap().0,
                len: b.len() as u32,
            })
            .collect();
        packer.flush().unwrap();
        let read: Vec<Vec<u8>> = chunks(&repo, &content).map(Result::unwrap).collect();
        assert_eq!(read, blobs);
        content[n - 1].len += 1;
        let last = chunks(&repo, &content).last().unwrap();
        assert!(
            matches!(last, Err(RepoError::Blob(BlobError::Length { .. }))),
            "{last:?}"
        );
    }

    #[test]
    fn find_and_read_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let blobs: Vec<Vec<u8>> = (0..3).map(random_blob).collect();
        let content: Vec<ChunkRef> = blobs
            .iter()
            .map(|b| ChunkRef {
                id: packer.save(BlobType::Data, b).unwrap().0,
                len: b.len() as u32,
            })
            .collect();
        let mut file = file_node(b"f", &[]);
        file.kind = NodeKind::File { content };
        let sub = packer.save_tree(&Tree::new(vec![file])).unwrap().0;
        let mut d = file_node(b"d", &[]);
        d.kind = NodeKind::Dir { subtree: sub };
        let root = packer.save_tree(&Tree::new(vec![d])).unwrap().0;
        packer.flush().unwrap();

        let f = node_at(&repo, root, b"/d/f").unwrap();
        assert!(matches!(
            node_at(&repo, root, b"/d/nope"),
            Err(RepoError::NoSuchPath(_))
        ));
        assert!(matches!(
            node_at(&repo, root, b"/d/f/x"),
            Err(RepoError::NoSuchPath(_))
        ));
        let whole: Vec<u8> = blobs.concat();
        assert_eq!(read_range(&repo, &f, 0, 5000).unwrap(), whole);
        assert_eq!(read_range(&repo, &f, 999, 3).unwrap(), whole[999..1002]);
        assert_eq!(read_range(&repo, &f, 2990, 100).unwrap(), whole[2990..]);
        assert!(read_range(&repo, &f, 3000, 10).unwrap().is_empty());
        let mut out = Vec::new();
        assert_eq!(copy_file(&repo, &f, &mut out).unwrap(), 3000);
        assert_eq!(out, whole);
        for (range, want) in [(999..1002, &whole[999..1002]), (2990..5000, &whole[2990..])] {
            let mut out = Vec::new();
            copy_range(&repo, &f, range.clone(), &mut out).unwrap();
            assert_eq!(out, want, "{range:?}");
        }
        let mut out = Vec::new();
        assert_eq!(copy_range(&repo, &f, 3000..3010, &mut out).unwrap(), 0);
    }

    #[test]
    fn a_chunk_of_the_wrong_length_is_an_error() {
        let node = file_node(b"f", &[10, 20]);
        let offsets = chunk_offsets(node.content());
        let fill = |c: &ChunkRef| Ok::<_, RepoError>(vec![c.len as u8; c.len as usize]);
        let read = read_chunks(node.content(), &offsets, 5, 10, fill).unwrap();
        assert_eq!(read, [vec![10u8; 5], vec![20u8; 5]].concat());
        let short = |c: &ChunkRef| Ok::<_, RepoError>(vec![0u8; c.len as usize - 1]);
        let err = read_chunks(node.content(), &offsets, 0, 30, short).unwrap_err();
        let want = BlobError::Length {
            id: node.content()[0].id,
            expected: 10,
            actual: 9,
        };
        assert_eq!(err.to_string(), RepoError::Blob(want).to_string());
    }

    #[test]
    fn for_each_tree_visits_each_distinct_tree_once() {
        use crate::repo::id::Id;
        use crate::repo::tree::tests::dir_of;
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let leaf = packer.save_tree(&Tree::new(vec![])).unwrap().0;
        let ghost = TreeId(Id::hash_of(b"not stored"));
        let nodes = vec![dir_of("a", leaf), dir_of("b", leaf), dir_of("g", ghost)];
        let root = packer.save_tree(&Tree::new(nodes)).unwrap().0;
        packer.flush().unwrap();
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/"], "tree": root,
            "program_version": "t"});
        let snap: Snapshot = serde_json::from_value(json).unwrap();
        let snaps = vec![
            (SnapshotId(Id::hash_of(b"1")), snap.clone()),
            (SnapshotId(Id::hash_of(b"2")), snap),
        ];
        let mut seen = Vec::new();
        let never = Cancel::default();
        let done = for_each_tree(&repo, &snaps, &never, |r, t| {
            seen.push((r.path.clone(), t.is_ok()))
        });
        assert_eq!(done, Ok(()));
        seen.sort();
        let want = [("/", true), ("/a", true), ("/g", false)].map(|(p, ok)| (p.to_string(), ok));
        assert_eq!(
            seen, want,
            "the shared leaf once (first path), the missing tree as an error"
        );
        let cancel = Cancel::default();
        cancel.cancel();
        let mut visited = 0;
        let stopped = for_each_tree(&repo, &snaps, &cancel, |_, _| visited += 1);
        assert_eq!((stopped, visited), (Err(Cancelled), 0));
    }
}
