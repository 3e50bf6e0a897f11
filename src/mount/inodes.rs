//! Inode numbers of the mount and the entries the kernel currently knows. A number is a hash
//! of the parent's number and the name (hard-linked files: of the snapshot view, device and
//! original inode), so a path keeps its number for the whole mount even after the kernel has
//! forgotten it and its entry was dropped.
use crate::repo::tree::{Node, NodeKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The root directory of the mount.
pub(super) const ROOT: u64 = 1;

/// What an inode stands for.
#[derive(Debug)]
pub(super) enum Entry {
    /// A directory or symlink of the generated layout, by its path from the mount's root.
    Virtual { parent: u64, path: Vec<String> },
    /// An entry of a snapshot's tree; `view` is the inode of the snapshot directory above it.
    Node { parent: u64, view: u64, node: Node },
}

impl Entry {
    pub(super) fn parent(&self) -> u64 {
        match self {
            Entry::Virtual { parent, .. } | Entry::Node { parent, .. } => *parent,
        }
    }
}

/// The inode of `name` in directory `parent`.
pub(super) fn child_ino(parent: u64, name: &[u8]) -> u64 {
    hash(&[b"child", &parent.to_le_bytes(), name])
}

/// The inode of a tree node below the snapshot directory `view`: hard-linked files (more than
/// one link when backed up) share one inode per original inode, as they did on disk.
pub(super) fn node_ino(parent: u64, view: u64, node: &Node) -> u64 {
    match node.kind {
        NodeKind::File { .. } if node.links > 1 => hash(&[
            b"link",
            &view.to_le_bytes(),
            &node.device.to_le_bytes(),
            &node.inode.to_le_bytes(),
        ]),
        _ => child_ino(parent, &node.name),
    }
}

/// 64 bits of BLAKE3; 0 (invalid) and 1 (the root) are never returned.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let first: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    u64::from_le_bytes(first).max(ROOT + 1)
}

/// The entries the kernel holds references to, with their lookup counts.
pub(super) struct Inodes {
    known: Mutex<HashMap<u64, (Arc<Entry>, u64)>>,
}

impl Inodes {
    pub(super) fn new() -> Inodes {
        let root = Entry::Virtual {
            parent: ROOT,
            path: Vec::new(),
        };
        let known = HashMap::from([(ROOT, (Arc::new(root), 1))]);
        Inodes {
            known: Mutex::new(known),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (Arc<Entry>, u64)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, ino: u64) -> Option<Arc<Entry>> {
        self.lock().get(&ino).map(|(e, _)| e.clone())
    }

    /// Records one more kernel reference to `ino` (made by `make` if it is new).
    pub(super) fn remember(&self, ino: u64, make: impl FnOnce() -> Entry) -> Arc<Entry> {
        let mut known = self.lock();
        let slot = known.entry(ino).or_insert_with(|| (Arc::new(make()), 0));
        slot.1 += 1;
        slot.0.clone()
    }

    /// The kernel dropped `count` references; the entry goes with the last one (never the root).
    pub(super) fn forget(&self, ino: u64, count: u64) {
        let mut known = self.lock();
        let gone = match known.get_mut(&ino) {
            Some(slot) => {
                slot.1 = slot.1.saturating_sub(count);
                slot.1 == 0 && ino != ROOT
            }
            None => false,
        };
        if gone {
            known.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::tests::file_node;

    #[test]
    fn numbers_depend_on_parent_and_name_and_links_share_one() {
        let a = child_ino(ROOT, b"a");
        assert_eq!(a, child_ino(ROOT, b"a"));
        assert_ne!(a, child_ino(ROOT, b"b"));
        assert_ne!(a, child_ino(a, b"a"));
        assert!(a > ROOT);
        let mut one = file_node(b"one", &[1]);
        let mut two = file_node(b"two", &[1]);
        assert_ne!(node_ino(a, a, &one), node_ino(a, a, &two));
        one.links = 2;
        two.links = 2;
        assert_eq!(node_ino(a, a, &one), node_ino(7, a, &two));
        assert_ne!(
            node_ino(a, a, &one),
            node_ino(a, 9, &one),
            "per snapshot view"
        );
    }

    #[test]
    fn entries_live_until_the_last_reference_is_forgotten() {
        let inodes = Inodes::new();
        let ino = child_ino(ROOT, b"x");
        let make = || Entry::Virtual {
            parent: ROOT,
            path: vec!["x".into()],
        };
        inodes.remember(ino, make);
        inodes.remember(ino, || unreachable!("already known"));
        inodes.forget(ino, 1);
        assert!(inodes.get(ino).is_some());
        inodes.forget(ino, 1);
        assert!(inodes.get(ino).is_none());
        inodes.forget(ROOT, 5);
        assert!(inodes.get(ROOT).is_some(), "the root is never forgotten");
    }
}
