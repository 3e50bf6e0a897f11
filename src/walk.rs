//! The tree walker: a depth-first walk over a snapshot's trees with an explicit stack (never
//! recursion, so any depth the backup recorded can be walked), bounded by the number of
//! entries the snapshot records (so a forged tree DAG whose shared subtrees expand to 2^40
//! paths is refused instead of running forever). Trees are content-addressed and so cannot
//! form cycles; the budget is what stops an exponential expansion.
use crate::paths;
use crate::repository::{IndexedRepo, RepoError};
use crate::snapshot::Snapshot;
use crate::tree::Node;

/// An old snapshot (without `summary.entries`) may hold this many entries per file and
/// directory it records: its counts leave out symlinks, devices, FIFOs and sockets.
const LEGACY_FACTOR: u64 = 4;
/// ... and at least this many, whatever it records.
const LEGACY_FLOOR: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {source}")]
    Repo { path: String, source: RepoError },
    #[error("the trees expand to more than the {0} entries the snapshot allows (a forged tree?)")]
    Budget(u64),
}

pub type Result<T> = std::result::Result<T, WalkError>;

/// How many entries (paths below the root) a walk of `snap` may visit: the count recorded
/// at backup, or for snapshots made before it was recorded, a generous bound derived from
/// the recorded file and directory counts.
pub fn entry_budget(snap: &Snapshot) -> u64 {
    let s = &snap.summary;
    if let Some(entries) = s.entries {
        return entries;
    }
    let recorded = [
        s.total_files,
        s.dirs_new,
        s.dirs_changed,
        s.dirs_unmodified,
        s.errors,
    ]
    .iter()
    .fold(0u64, |a, &n| a.saturating_add(n));
    recorded.saturating_mul(LEGACY_FACTOR).max(LEGACY_FLOOR)
}

/// Entries a walk has visited, against a limit.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget { limit, used: 0 }
    }

    /// The budget of a walk of `snap`'s trees.
    pub fn of(snap: &Snapshot) -> Budget {
        Budget::new(entry_budget(snap))
    }

    /// Counts `n` more entries: an error once they exceed the limit.
    pub fn charge(&mut self, n: u64) -> Result<()> {
        self.used = self.used.saturating_add(n);
        match self.used > self.limit {
            true => Err(WalkError::Budget(self.limit)),
            false => Ok(()),
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }
}

/// The entries of a directory still to visit, and the length of its path.
struct Frame {
    nodes: std::vec::IntoIter<Node>,
    dir_len: usize,
}

/// Calls `visit(path, node)` for every entry below the directory `dir` whose path is
/// `prefix` (empty for the root), depth first and in name order; `path` is `prefix/name…`.
/// With `recursive` false, only the direct children. Every tree loaded is charged to
/// `budget`; a walk that would exceed it stops with [`WalkError::Budget`].
pub fn walk<E: From<WalkError>>(
    repo: &IndexedRepo,
    dir: &Node,
    prefix: &[u8],
    recursive: bool,
    budget: &mut Budget,
    mut visit: impl FnMut(&[u8], &Node) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut path = prefix.to_vec();
    let mut stack = Vec::new();
    if let Some(frame) = open(repo, dir, &path, budget)? {
        stack.push(frame);
    }
    while let Some(frame) = stack.last_mut() {
        path.truncate(frame.dir_len);
        let Some(node) = frame.nodes.next() else {
            stack.pop();
            continue;
        };
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        visit(&path, &node)?;
        if recursive && let Some(frame) = open(repo, &node, &path, budget)? {
            stack.push(frame);
        }
    }
    Ok(())
}

/// The entries of `node` when it is a directory, charged to `budget`.
fn open(
    repo: &IndexedRepo,
    node: &Node,
    path: &[u8],
    budget: &mut Budget,
) -> Result<Option<Frame>> {
    let Some(subtree) = node.subtree() else {
        return Ok(None);
    };
    let tree = repo.load_tree(&subtree).map_err(|source| WalkError::Repo {
        path: paths::display(path),
        source,
    })?;
    budget.charge(tree.nodes.len() as u64)?;
    Ok(Some(Frame {
        nodes: tree.nodes.into_iter(),
        dir_len: path.len(),
    }))
}

/// How many entries the snapshot with root tree `root` holds, counting a subtree once per
/// place it appears, without expanding it: `own(id)` gives a tree's own entry count and its
/// subtrees (None when it was not loaded, counted as empty). Saturates at `u64::MAX`, so a
/// forged DAG gives a huge count in time linear in its distinct trees.
pub fn expanded_entries<'a>(
    root: crate::id::BlobId,
    own: impl Fn(&crate::id::BlobId) -> Option<(u64, &'a [crate::id::BlobId])>,
    memo: &mut std::collections::HashMap<crate::id::BlobId, u64>,
) -> u64 {
    let mut stack = vec![(root, false)];
    while let Some((id, expanded)) = stack.pop() {
        if memo.contains_key(&id) {
            continue;
        }
        let Some((entries, children)) = own(&id) else {
            memo.insert(id, 0);
            continue;
        };
        if !expanded {
            stack.push((id, true));
            stack.extend(children.iter().map(|c| (*c, false)));
            continue;
        }
        let below = children
            .iter()
            .map(|c| memo.get(c).copied().unwrap_or(0))
            .fold(entries, u64::saturating_add);
        memo.insert(id, below);
    }
    memo.get(&root).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::id::BlobId;
    use crate::packer::Packer;
    use crate::packer::tests::indexed_repo;
    use crate::tree::Tree;
    use crate::tree::tests::{dir_of, file_of};
    use crate::vfs::root_node;
    use std::collections::HashMap;

    fn snapshot(summary: serde_json::Value) -> Snapshot {
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/"], "tree": BlobId::default(),
            "program_version": "t", "summary": summary});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn entry_budget_is_the_recorded_count_or_a_generous_legacy_bound() {
        assert_eq!(
            entry_budget(&snapshot(serde_json::json!({"entries": 7}))),
            7
        );
        let big = serde_json::json!({"total_files": 1_000_000, "dirs_new": 10});
        assert_eq!(entry_budget(&snapshot(big)), 4_000_040);
        let small = serde_json::json!({"total_files": 3});
        assert_eq!(entry_budget(&snapshot(small)), LEGACY_FLOOR);
        let huge = serde_json::json!({"total_files": u64::MAX, "dirs_new": 1});
        assert_eq!(entry_budget(&snapshot(huge)), u64::MAX);
    }

    /// A chain of `depth` directories named `d`, a file `f` at the bottom.
    fn deep_chain(packer: &Packer, depth: usize) -> BlobId {
        let save = |t: Tree| packer.save(BlobType::Tree, &t.encode()).unwrap().0;
        let mut id = save(Tree::new(vec![file_of("f", &[])]));
        for _ in 0..depth {
            id = save(Tree::new(vec![dir_of("d", id)]));
        }
        id
    }

    #[test]
    fn walk_is_iterative_in_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let packer = Packer::new(&repo, false);
        let depth = 50_000;
        let root = deep_chain(&packer, depth);
        packer.flush().unwrap();
        let (mut count, mut last) = (0usize, Vec::new());
        let mut budget = Budget::new(u64::MAX);
        walk::<WalkError>(&repo, &root_node(root), b"", true, &mut budget, |p, _| {
            count += 1;
            last = p.to_vec();
            Ok(())
        })
        .unwrap();
        assert_eq!(count, depth + 1);
        assert_eq!(budget.used(), depth as u64 + 1);
        assert_eq!(last, [b"/d".repeat(depth), b"/f".to_vec()].concat());

        let mut tight = Budget::new(depth as u64);
        let err = walk::<WalkError>(
            &repo,
            &root_node(root),
            b"",
            true,
            &mut tight,
            |_, _| Ok(()),
        );
        assert!(
            matches!(err, Err(WalkError::Budget(l)) if l == depth as u64),
            "{err:?}"
        );
    }

    #[test]
    fn expanded_entries_counts_a_shared_subtree_per_place() {
        let (a, b, c) = (
            BlobId::default(),
            BlobId(crate::id::Id::hash_of(b"b")),
            BlobId(crate::id::Id::hash_of(b"c")),
        );
        let trees: HashMap<BlobId, (u64, Vec<BlobId>)> =
            [(a, (2, vec![b, b])), (b, (3, vec![c])), (c, (5, vec![]))].into();
        let own = |id: &BlobId| trees.get(id).map(|(n, ch)| (*n, ch.as_slice()));
        assert_eq!(
            expanded_entries(a, own, &mut HashMap::new()),
            2 + 2 * (3 + 5)
        );
        // 64 levels of one tree listing the next twice: 2^65 paths, saturated.
        let ids: Vec<BlobId> = (0..64u32)
            .map(|i| BlobId(crate::id::Id::hash_of(&i.to_le_bytes())))
            .collect();
        let dag: HashMap<BlobId, (u64, Vec<BlobId>)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    *id,
                    (2, ids.get(i + 1).map(|n| vec![*n, *n]).unwrap_or_default()),
                )
            })
            .collect();
        let own = |id: &BlobId| dag.get(id).map(|(n, ch)| (*n, ch.as_slice()));
        assert_eq!(expanded_entries(ids[0], own, &mut HashMap::new()), u64::MAX);
    }
}
