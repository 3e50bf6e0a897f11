//! The tree walker: a depth-first walk over a snapshot's trees with an explicit stack (never
//! recursion, so any depth the backup recorded can be walked), bounded by the number of
//! entries the snapshot records (so a forged tree DAG whose shared subtrees expand to 2^40
//! paths is refused instead of running forever). Trees are content-addressed and so cannot
//! form cycles; the budget is what stops an exponential expansion.
use crate::backend::pool::IoPool;
use crate::cancel::{Cancel, Cancelled};
use crate::repo::id::TreeId;
use crate::repo::paths;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::Node;
use rayon::prelude::*;
use std::collections::HashMap;

/// How many objects (trees) a breadth-first pass loads at once on the thread pool: enough
/// to keep every core and a remote backend busy, few enough to bound memory.
pub(crate) const BATCH: usize = 256;

/// Runs `load` on `pool` for `items`, [`BATCH`] at a time, and hands each item with its
/// result to `take`, in order; stops at the first error `take` returns, or before the next
/// batch once `cancel` is cancelled.
pub(crate) fn in_batches<T: Sync, R: Send, E: From<Cancelled>>(
    items: &[T],
    pool: &IoPool,
    cancel: &Cancel,
    load: impl Fn(&T) -> R + Sync,
    take: impl FnMut(&T, R) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let limit = Limit {
        items: BATCH,
        weight: u64::MAX,
    };
    in_weighed_batches(limit, items, |_| 0, pool, cancel, load, take)
}

/// How large one batch of [`in_weighed_batches`] may be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limit {
    /// At most this many items (at least one).
    pub items: usize,
    /// Items whose weights add up to at most this much, unless the batch's first item
    /// alone weighs more (it then goes alone).
    pub weight: u64,
}

/// [`in_batches`] with batches cut by what their items weigh (their recorded sizes, say) as
/// well as by their count, so that loading a batch of large objects at once holds a bounded
/// amount of memory however large each object is and however many there are.
pub(crate) fn in_weighed_batches<T: Sync, R: Send, E: From<Cancelled>>(
    limit: Limit,
    items: &[T],
    weigh: impl Fn(&T) -> u64,
    pool: &IoPool,
    cancel: &Cancel,
    load: impl Fn(&T) -> R + Sync,
    mut take: impl FnMut(&T, R) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut rest = items;
    while !rest.is_empty() {
        let n = batch_len(limit, rest, &weigh);
        let (batch, after) = rest.split_at(n);
        rest = after;
        cancel.check()?;
        let loaded: Vec<R> = pool.install(|| batch.par_iter().map(&load).collect());
        for (item, r) in batch.iter().zip(loaded) {
            take(item, r)?;
        }
    }
    Ok(())
}

/// How many of `items` (not empty) the next batch takes under `limit`: at least one.
fn batch_len<T>(limit: Limit, items: &[T], weigh: impl Fn(&T) -> u64) -> usize {
    let mut total = 0u64;
    let mut n = 0;
    for item in items.iter().take(limit.items.max(1)) {
        total = total.saturating_add(weigh(item));
        if n > 0 && total > limit.weight {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// An old snapshot (without `summary.entries`) may hold this many entries per file and
/// directory it records: its counts leave out symlinks, devices, FIFOs and sockets.
const LEGACY_FACTOR: u64 = 4;
/// ... and at least this many, whatever it records.
const LEGACY_FLOOR: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {source}")]
    Repo { path: String, source: RepoError },
    #[error(transparent)]
    Budget(#[from] OverBudget),
}

/// A walk reached more entries than its snapshot records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the trees expand to more than the {limit} entries the snapshot allows (a forged tree?)")]
pub struct OverBudget {
    pub limit: u64,
}

pub(crate) type Result<T> = std::result::Result<T, WalkError>;

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
    pub(crate) fn charge(&mut self, n: u64) -> std::result::Result<(), OverBudget> {
        self.used = self.used.saturating_add(n);
        match self.used > self.limit {
            true => Err(OverBudget { limit: self.limit }),
            false => Ok(()),
        }
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

/// What the tree `root` holds expanded to every place each subtree appears, computed once per
/// distinct tree: `own(id)` gives a tree's own value and its subtrees (a tree that was not
/// loaded gives a value that says so, and no subtrees), `add` sums values (saturating, so a
/// forged DAG's 2^40 paths give a huge total in time linear in its distinct trees). `memo`
/// keeps the totals of trees already summed, to share between snapshots.
pub(crate) fn expand<'a, T: Copy + Default>(
    root: TreeId,
    own: impl Fn(&TreeId) -> (T, &'a [TreeId]),
    add: impl Fn(T, T) -> T,
    memo: &mut HashMap<TreeId, T>,
) -> T {
    let mut stack = vec![(root, false)];
    while let Some((id, children_done)) = stack.pop() {
        let (value, children) = own(&id);
        if children_done {
            let total = (children.iter()).fold(value, |sum, c| add(sum, memo[c]));
            memo.insert(id, total);
            continue;
        }
        if memo.contains_key(&id) {
            continue;
        }
        // A placeholder until its subtrees are summed: a tree that (only in a forged
        // repository) contains itself counts as nothing there.
        memo.insert(id, T::default());
        stack.push((id, true));
        stack.extend(children.iter().map(|c| (*c, false)));
    }
    memo[&root]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::Tree;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::vfs::root_node;
    use crate::write::packer::Packer;
    use crate::write::packer::tests::indexed_repo;

    fn snapshot(summary: serde_json::Value) -> Snapshot {
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/"], "tree": TreeId::default(),
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
    fn deep_chain(packer: &Packer, depth: usize) -> TreeId {
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
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
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
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
        assert_eq!(budget.used, depth as u64 + 1);
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
            matches!(err, Err(WalkError::Budget(OverBudget { limit })) if limit == depth as u64),
            "{err:?}"
        );
    }

    #[derive(Debug, PartialEq)]
    enum Stop {
        At(usize),
        Cancelled,
    }

    impl From<Cancelled> for Stop {
        fn from(_: Cancelled) -> Stop {
            Stop::Cancelled
        }
    }

    #[test]
    fn in_batches_keeps_order_across_batches_and_stops_at_the_first_error() {
        let items: Vec<usize> = (0..BATCH * 2 + 7).collect();
        let never = Cancel::default();
        let mut seen = Vec::new();
        let r = in_batches(
            &items,
            &IoPool::default(),
            &never,
            |i| i * 2,
            |i, twice| {
                assert_eq!(twice, i * 2);
                seen.push(*i);
                Ok::<(), Stop>(())
            },
        );
        assert_eq!((r, seen), (Ok(()), items.clone()));
        let mut taken = 0;
        let r = in_batches(
            &items,
            &IoPool::default(),
            &never,
            |i| *i,
            |_, i| {
                taken += 1;
                if i == BATCH + 3 {
                    Err(Stop::At(i))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!((r, taken), (Err(Stop::At(BATCH + 3)), BATCH + 4));
    }

    #[test]
    fn weighed_batches_stay_under_their_weight_unless_one_item_alone_exceeds_it() {
        let limit = Limit {
            items: 4,
            weight: 10,
        };
        let weights = [3u64, 3, 3, 3, 20, 1, 1, 1, 1, 1, 9, 2];
        let mut batches: Vec<Vec<u64>> = Vec::new();
        let mut last_batch = usize::MAX;
        let loaded = std::sync::atomic::AtomicUsize::new(0);
        let r = in_weighed_batches(
            limit,
            &weights,
            |w| *w,
            &IoPool::default(),
            &Cancel::default(),
            |w| (*w, loaded.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
            |w, (same, _)| {
                assert_eq!(*w, same);
                // A new batch starts once all of the previous one has been taken.
                let started = loaded.load(std::sync::atomic::Ordering::SeqCst);
                if started != last_batch {
                    batches.push(Vec::new());
                    last_batch = started;
                }
                batches.last_mut().unwrap().push(*w);
                Ok::<(), Stop>(())
            },
        );
        assert_eq!(r, Ok(()));
        let expected: Vec<Vec<u64>> = vec![
            vec![3, 3, 3],
            vec![3],
            vec![20],
            vec![1, 1, 1, 1],
            vec![1, 9],
            vec![2],
        ];
        assert_eq!(batches, expected);
    }

    #[test]
    fn in_batches_stops_before_the_next_batch_once_cancelled() {
        let items: Vec<usize> = (0..BATCH * 3).collect();
        let cancel = Cancel::default();
        let mut taken = 0;
        let r = in_batches(
            &items,
            &IoPool::default(),
            &cancel,
            |i| *i,
            |_, i| {
                taken += 1;
                if i == BATCH + 1 {
                    cancel.cancel();
                }
                Ok::<(), Stop>(())
            },
        );
        assert_eq!((r, taken), (Err(Stop::Cancelled), BATCH * 2));
    }

    #[test]
    fn expand_counts_a_shared_subtree_per_place() {
        let id = |n: u32| TreeId(crate::repo::id::Id::hash_of(&n.to_le_bytes()));
        let trees: HashMap<TreeId, (u64, Vec<TreeId>)> = [
            (id(0), (2, vec![id(1), id(1)])),
            (id(1), (3, vec![id(2)])),
            (id(2), (5, vec![])),
        ]
        .into();
        let own = |i: &TreeId| {
            trees
                .get(i)
                .map_or((0, &[][..]), |(n, c)| (*n, c.as_slice()))
        };
        let total = expand(id(0), own, u64::saturating_add, &mut HashMap::new());
        assert_eq!(total, 2 + 2 * (3 + 5));
        // 64 levels of one tree listing the next twice: 2^65 paths, saturated.
        let dag: HashMap<TreeId, (u64, Vec<TreeId>)> = (0..64)
            .map(|i| (id(i), (2, vec![id(i + 1), id(i + 1)])))
            .collect();
        let own = |i: &TreeId| dag.get(i).map_or((0, &[][..]), |(n, c)| (*n, c.as_slice()));
        let total = expand(id(0), own, u64::saturating_add, &mut HashMap::new());
        assert_eq!(total, u64::MAX);
        // A tree listing itself (impossible with verified ids) still ends.
        let cycle: HashMap<TreeId, (u64, Vec<TreeId>)> = [(id(0), (1, vec![id(0)]))].into();
        let own = |i: &TreeId| {
            cycle
                .get(i)
                .map_or((0, &[][..]), |(n, c)| (*n, c.as_slice()))
        };
        assert_eq!(
            expand(id(0), own, u64::saturating_add, &mut HashMap::new()),
            1
        );
    }
}
