//! Trees: one blob per directory listing its entries with their metadata and, for files, the
//! ordered chunk ids and lengths. Serialised deterministically so equal directories dedupe.
use crate::repo::id::{BlobId, TreeId};
use serde::{Deserialize, Serialize};

/// The first byte of every tree blob.
pub(crate) const TREE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("tree blob is empty")]
    Empty,
    #[error("tree format version {0} is not supported")]
    Version(u8),
    #[error("tree blob is malformed: {0}")]
    Malformed(#[from] postcard::Error),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

/// One chunk of a file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: BlobId,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File {
        content: Vec<ChunkRef>,
    },
    Dir {
        subtree: TreeId,
    },
    Symlink {
        #[serde(with = "crate::repo::names")]
        target: Vec<u8>,
    },
    CharDev {
        rdev: u64,
    },
    BlockDev {
        rdev: u64,
    },
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "crate::repo::names")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(with = "crate::repo::names")]
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (st_mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// File length in bytes (0 for other kinds).
    pub size: u64,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    pub fn content(&self) -> &[ChunkRef] {
        match &self.kind {
            NodeKind::File { content } => content,
            _ => &[],
        }
    }

    pub fn subtree(&self) -> Option<TreeId> {
        match self.kind {
            NodeKind::Dir { subtree } => Some(subtree),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::File { .. } => "file",
            NodeKind::Dir { .. } => "dir",
            NodeKind::Symlink { .. } => "symlink",
            NodeKind::CharDev { .. } => "chardev",
            NodeKind::BlockDev { .. } => "blockdev",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
        }
    }
}

/// Start offset of every chunk of `content`, plus the total length at the end.
pub fn chunk_offsets(content: &[ChunkRef]) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(content.len() + 1);
    let mut pos = 0u64;
    offsets.push(0);
    for c in content {
        pos += c.len as u64;
        offsets.push(pos);
    }
    offsets
}

/// The index of the chunk that holds byte `offset`, given `chunk_offsets` output.
pub fn chunk_at(offsets: &[u64], offset: u64) -> Option<usize> {
    let total = *offsets.last()?;
    if offset >= total {
        return None;
    }
    Some(offsets.partition_point(|&start| start <= offset) - 1)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Sorts nodes by name so the encoding depends only on the directory's content.
    pub fn new(mut nodes: Vec<Node>) -> Tree {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Tree { nodes }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![TREE_VERSION]).expect("trees always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Tree, TreeError> {
        let (&version, body) = bytes.split_first().ok_or(TreeError::Empty)?;
        if version != TREE_VERSION {
            return Err(TreeError::Version(version));
        }
        Ok(postcard::from_bytes(body)?)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::id::Id;

    pub(crate) fn file_node(name: &[u8], chunks: &[u32]) -> Node {
        let content = chunks
            .iter()
            .map(|&len| ChunkRef {
                id: BlobId(Id::hash_of(&len.to_le_bytes())),
                len,
            })
            .collect::<Vec<_>>();
        Node {
            name: name.to_vec(),
            size: chunks.iter().map(|&c| c as u64).sum(),
            kind: NodeKind::File { content },
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: "u".into(),
            group: "g".into(),
            mtime: Timespec { sec: -5, nsec: 7 },
            ctime: Timespec { sec: 1, nsec: 0 },
            inode: 42,
            device: 7,
            links: 1,
            xattrs: vec![],
        }
    }

    /// A file node whose content is the given (blob, length) chunks.
    pub(crate) fn file_of(name: &str, chunks: &[(BlobId, usize)]) -> Node {
        let mut node = file_node(name.as_bytes(), &[]);
        let content = chunks.iter().map(|&(id, len)| ChunkRef {
            id,
            len: len as u32,
        });
        node.kind = NodeKind::File {
            content: content.collect(),
        };
        node.size = chunks.iter().map(|c| c.1 as u64).sum();
        node
    }

    pub(crate) fn dir_of(name: &str, subtree: TreeId) -> Node {
        let mut node = file_node(name.as_bytes(), &[]);
        node.kind = NodeKind::Dir { subtree };
        node
    }

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        let mut link = file_node(b"\xffnot utf8", &[]);
        link.kind = NodeKind::Symlink {
            target: b"../../etc".to_vec(),
        };
        let a = Tree::new(vec![
            file_node(b"b", &[3, 4]),
            link.clone(),
            file_node(b"a", &[1]),
        ]);
        let b = Tree::new(vec![link, file_node(b"a", &[1]), file_node(b"b", &[3, 4])]);
        assert_eq!(a.encode(), b.encode());
        assert_eq!(a.encode()[0], TREE_VERSION);
        assert_eq!(Tree::decode(&a.encode()).unwrap(), a);
        assert_eq!(a.find(b"b").unwrap().size, 7);
        assert!(a.find(b"c").is_none());
    }

    #[test]
    fn bad_tree_bytes_are_errors() {
        assert!(matches!(Tree::decode(&[]), Err(TreeError::Empty)));
        assert!(matches!(Tree::decode(&[9, 0]), Err(TreeError::Version(9))));
        assert!(matches!(
            Tree::decode(&[TREE_VERSION, 5, 1]),
            Err(TreeError::Malformed(_))
        ));
    }

    #[test]
    fn chunk_lookup_by_offset() {
        let node = file_node(b"f", &[10, 20, 5]);
        let offs = chunk_offsets(node.content());
        assert_eq!(offs, vec![0, 10, 30, 35]);
        assert_eq!(chunk_at(&offs, 0), Some(0));
        assert_eq!(chunk_at(&offs, 9), Some(0));
        assert_eq!(chunk_at(&offs, 10), Some(1));
        assert_eq!(chunk_at(&offs, 34), Some(2));
        assert_eq!(chunk_at(&offs, 35), None);
    }
}
