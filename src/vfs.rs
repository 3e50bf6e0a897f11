//! Paths inside a snapshot: finding the node at a path, walking a subtree in order, and
//! reading a file's bytes (whole or any range) from its chunk list.
use crate::id::BlobId;
use crate::repository::{IndexedRepo, RepoError, Result};
use crate::tree::{Node, NodeKind, Timespec, chunk_at, chunk_offsets};
use rayon::prelude::*;
use std::io::Write;

/// Splits `/a/b/` into its non-empty components.
pub fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// A directory node standing for a snapshot's root tree.
pub fn root_node(tree: BlobId) -> Node {
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
pub fn node_at(repo: &IndexedRepo, tree: BlobId, path: &[u8]) -> Result<Node> {
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

/// Calls `f(path, node)` for every entry below `dir` (depth first, in name order); `path`
/// is `prefix` joined with the names. With `recursive` false, only the direct children.
pub fn walk(
    repo: &IndexedRepo,
    dir: &Node,
    prefix: &[u8],
    recursive: bool,
    f: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    let Some(subtree) = dir.subtree() else {
        return Ok(());
    };
    for child in repo.load_tree(&subtree)?.nodes {
        let mut path = prefix.to_vec();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(&child.name);
        f(&path, &child)?;
        if recursive {
            walk(repo, &child, &path, true, f)?;
        }
    }
    Ok(())
}

/// Writes a file's whole content to `out`, fetching a few chunks in parallel ahead.
pub fn copy_file(
    repo: &IndexedRepo,
    node: &Node,
    out: &mut dyn Write,
) -> std::result::Result<u64, CopyError> {
    let window = rayon::current_num_threads().max(2) * 2;
    let mut written = 0u64;
    for batch in node.content().chunks(window) {
        let blobs: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|c| repo.read_blob(&c.id))
            .collect::<Result<_>>()?;
        for b in blobs {
            out.write_all(&b)?;
            written += b.len() as u64;
        }
    }
    Ok(written)
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Write(#[from] std::io::Error),
}

/// Up to `len` bytes of a file from `offset`, reading only the chunks that hold them.
pub fn read_range(repo: &IndexedRepo, node: &Node, offset: u64, len: u64) -> Result<Vec<u8>> {
    let content = node.content();
    let offsets = chunk_offsets(content);
    let end = offset
        .saturating_add(len)
        .min(*offsets.last().unwrap_or(&0));
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    let Some(mut i) = chunk_at(&offsets, offset) else {
        return Ok(out);
    };
    while offsets[i] < end {
        let blob = repo.read_blob(&content[i].id)?;
        let from = offset.max(offsets[i]) - offsets[i];
        let to = end.min(offsets[i + 1]) - offsets[i];
        out.extend_from_slice(&blob[from as usize..to as usize]);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::packer::Packer;
    use crate::packer::tests::{indexed_repo, random_blob};
    use crate::tree::{ChunkRef, Tree, tests::file_node};

    #[test]
    fn find_walk_and_read_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let packer = Packer::new(&repo, false);
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
        let sub = packer
            .save(BlobType::Tree, &Tree::new(vec![file]).encode())
            .unwrap()
            .0;
        let mut d = file_node(b"d", &[]);
        d.kind = NodeKind::Dir { subtree: sub };
        let root = packer
            .save(BlobType::Tree, &Tree::new(vec![d]).encode())
            .unwrap()
            .0;
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
        let mut seen = Vec::new();
        walk(&repo, &root_node(root), b"/", true, &mut |p, _| {
            seen.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"/d".to_vec(), b"/d/f".to_vec()]);
    }
}
