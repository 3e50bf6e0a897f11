//! Finding paths across snapshots: every entry whose path matches a set of patterns, with
//! the version (type, size, mtime) each snapshot holds. A directory tree that several
//! snapshots share at the same path is loaded and matched once. Each snapshot's walk is
//! bounded by the entries it records ([`crate::walk::entry_budget`]): a snapshot that cannot
//! be walked (a tree that does not load, a forged tree DAG) is reported and skipped, and the
//! others are still searched.
use crate::backend::pool::IoPool;
use crate::cancel::{Cancel, Cancelled};
use crate::repo::id::{SnapshotId, TreeId};
use crate::repo::paths;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, Timespec, Tree};
use crate::select::filter::Patterns;
use crate::walk::{self, Budget, OverBudget};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// Directories loaded at a time, in parallel.

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// `at`: "PATH in snapshot ID".
    #[error("{at}: {source}")]
    Repo { at: String, source: RepoError },
    #[error("{at}: {source}")]
    Walk { at: String, source: OverBudget },
}

/// One snapshot's version of a matching path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Version {
    pub snapshot: SnapshotId,
    pub time: DateTime<Utc>,
    /// [`Node::type_name`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// Modification time of the entry.
    #[serde(serialize_with = "rfc3339")]
    pub mtime: Timespec,
}

fn rfc3339<S: serde::Serializer>(t: &Timespec, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_mtime(t))
}

/// An mtime as RFC 3339 UTC with nanoseconds (empty if out of range).
pub(crate) fn format_mtime(t: &Timespec) -> String {
    DateTime::from_timestamp(t.sec, t.nsec)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// A matching path and its versions, oldest snapshot first.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    #[serde(serialize_with = "paths::lossy")]
    pub path: Vec<u8>,
    pub versions: Vec<Version>,
}

/// What a search found, and the snapshots it could not search.
#[derive(Debug, Default)]
pub struct FindReport {
    /// Sorted by path.
    pub found: Vec<Found>,
    /// In the order given.
    pub skipped: Vec<(SnapshotId, FindError)>,
}

/// What one directory (a tree at a path) holds: its matching entries and subdirectories.
#[derive(Default)]
struct Dir {
    matches: Vec<(Vec<u8>, Node)>,
    subdirs: Vec<usize>,
}

/// A directory still to load: the slot it fills in `dirs`, and the snapshot whose walk
/// queued it first (its entries are charged to that snapshot's budget).
struct Todo {
    slot: usize,
    tree: TreeId,
    path: Vec<u8>,
    owner: usize,
}

/// A snapshot being searched: its budget, and why its walk stopped, if it did.
struct Walk<'s> {
    id: SnapshotId,
    snapshot: &'s Snapshot,
    budget: Budget,
    failed: Option<FindError>,
}

impl Walk<'_> {
    /// The loaded tree of `t`, its entries charged to the budget.
    fn charge(&mut self, t: &Todo, tree: Result<Tree, RepoError>) -> Result<Tree, FindError> {
        let at = || {
            format!(
                "{} in snapshot {}",
                paths::display(&t.path),
                self.id.0.short()
            )
        };
        let tree = tree.map_err(|source| FindError::Repo { at: at(), source })?;
        let charged = self.budget.charge(tree.nodes.len() as u64);
        charged.map_err(|source| FindError::Walk { at: at(), source })?;
        Ok(tree)
    }
}

/// One search of some snapshots, sharing directories between them.
struct Finder<'a, 's> {
    repo: &'a IndexedRepo,
    cancel: &'a Cancel,
    patterns: &'a Patterns,
    walks: Vec<Walk<'s>>,
    /// None until loaded; left None below a snapshot whose walk stopped.
    dirs: Vec<Option<Dir>>,
    slots: HashMap<(TreeId, Vec<u8>), usize>,
}

/// Every path matching `patterns` in `snapshots` (oldest first), sorted by path; stops before
/// the next batch of trees once `cancel` is cancelled.
pub fn find(
    repo: &IndexedRepo,
    snapshots: &[(SnapshotId, Snapshot)],
    patterns: &Patterns,
    cancel: &Cancel,
) -> Result<FindReport, Cancelled> {
    let mut found: HashMap<Vec<u8>, Vec<Version>> = HashMap::new();
    let mut report = FindReport::default();
    let mut pending: Vec<&(SnapshotId, Snapshot)> = snapshots.iter().collect();
    // A snapshot that shares a directory with one whose walk stopped is searched again
    // without it: every pass that leaves one incomplete drops at least one snapshot.
    while !pending.is_empty() {
        let mut finder = Finder::new(repo, patterns, cancel, &pending);
        let roots = finder.load_roots()?;
        let mut again = Vec::new();
        for (mut walk, root) in std::mem::take(&mut finder.walks).into_iter().zip(roots) {
            match (walk.failed.take(), finder.dirs_complete(root)) {
                (Some(e), _) => report.skipped.push((walk.id, e)),
                (None, false) => again.push(walk.id),
                (None, true) => finder.collect(root, &walk, &mut found),
            }
        }
        pending.retain(|(id, _)| again.contains(id));
    }
    let order: HashMap<SnapshotId, usize> = (snapshots.iter().enumerate())
        .map(|(i, (id, _))| (*id, i))
        .collect();
    report.skipped.sort_by_key(|(id, _)| order[id]);
    report.found = found
        .into_iter()
        .map(|(path, mut versions)| {
            versions.sort_by_key(|v| order[&v.snapshot]);
            Found { path, versions }
        })
        .collect();
    report.found.sort_by(|a, b| paths::cmp(&a.path, &b.path));
    Ok(report)
}

impl<'a, 's> Finder<'a, 's> {
    fn new(
        repo: &'a IndexedRepo,
        patterns: &'a Patterns,
        cancel: &'a Cancel,
        snapshots: &[&'s (SnapshotId, Snapshot)],
    ) -> Finder<'a, 's> {
        let walks = snapshots
            .iter()
            .map(|(id, snapshot)| Walk {
                id: *id,
                snapshot,
                budget: Budget::of(snapshot),
                failed: None,
            })
            .collect();
        Finder {
            repo,
            cancel,
            patterns,
            walks,
            dirs: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// Loads every directory below the snapshots' roots; the slot of each root.
    fn load_roots(&mut self) -> Result<Vec<usize>, Cancelled> {
        let mut todo = Vec::new();
        let roots = (0..self.walks.len())
            .map(|owner| {
                let tree = self.walks[owner].snapshot.tree;
                self.slot(tree, Vec::new(), owner, &mut todo)
            })
            .collect();
        self.load_all(todo)?;
        Ok(roots)
    }

    /// The slot of the tree `tree` at `path`; a new one is queued in `todo` to be loaded.
    fn slot(&mut self, tree: TreeId, path: Vec<u8>, owner: usize, todo: &mut Vec<Todo>) -> usize {
        if let Some(&slot) = self.slots.get(&(tree, path.clone())) {
            return slot;
        }
        let slot = self.dirs.len();
        self.dirs.push(None);
        self.slots.insert((tree, path.clone()), slot);
        todo.push(Todo {
            slot,
            tree,
            path,
            owner,
        });
        slot
    }

    /// Loads the queued trees breadth first, a batch at a time in parallel, except those of
    /// snapshots whose walk has stopped.
    fn load_all(&mut self, mut todo: Vec<Todo>) -> Result<(), Cancelled> {
        let pool = IoPool::for_backend(self.repo.backend());
        while !todo.is_empty() {
            todo.retain(|t| self.walks[t.owner].failed.is_none());
            let mut next = Vec::new();
            let repo = self.repo;
            let load = |t: &Todo| repo.load_tree(&t.tree);
            let cancel = self.cancel;
            walk::in_batches(&todo, &pool, cancel, load, |t, tree| {
                self.fill(t, tree, &mut next);
                Ok::<(), Cancelled>(())
            })?;
            todo = next;
        }
        Ok(())
    }

    fn fill(&mut self, t: &Todo, tree: Result<Tree, RepoError>, next: &mut Vec<Todo>) {
        let walk = &mut self.walks[t.owner];
        if walk.failed.is_some() {
            return;
        }
        let tree = match walk.charge(t, tree) {
            Ok(tree) => tree,
            Err(e) => return walk.failed = Some(e),
        };
        let mut dir = Dir::default();
        for node in tree.nodes {
            let path = paths::join(&t.path, &node.name);
            if let Some(sub) = node.subtree() {
                dir.subdirs
                    .push(self.slot(sub, path.clone(), t.owner, next));
            }
            if self.patterns.matches(&path) {
                dir.matches.push((path, node));
            }
        }
        self.dirs[t.slot] = Some(dir);
    }

    /// Whether every directory below the one in `root` was loaded.
    fn dirs_complete(&self, root: usize) -> bool {
        self.below(root).all(|dir| dir.is_some())
    }

    /// The directories below the one in `root` (itself included), depth first.
    fn below(&self, root: usize) -> impl Iterator<Item = &Option<Dir>> {
        let mut stack = vec![root];
        std::iter::from_fn(move || {
            let dir = &self.dirs[stack.pop()?];
            stack.extend(dir.iter().flat_map(|d| &d.subdirs));
            Some(dir)
        })
    }

    /// Adds the walk's version of every match below the directory in `root` to `found`.
    fn collect(&self, root: usize, walk: &Walk, found: &mut HashMap<Vec<u8>, Vec<Version>>) {
        for (path, node) in self.below(root).flatten().flat_map(|d| &d.matches) {
            found.entry(path.clone()).or_default().push(Version {
                snapshot: walk.id,
                time: walk.snapshot.time,
                kind: node.type_name(),
                size: node.size,
                mtime: node.mtime,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::BlobId;
    use crate::repo::id::Id;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::indexed_repo;

    fn snapshot(tree: TreeId, time: &str) -> Snapshot {
        let json = serde_json::json!({"time": time, "host": "h", "username": "u", "uid": 0,
            "gid": 0, "paths": ["/d"], "tree": tree, "program_version": "t"});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn finds_versions_across_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let chunk = BlobId(Id::hash_of(b"c"));
        let shared = save(Tree::new(vec![file_of("a.txt", &[(chunk, 3)])]));
        let grown = save(Tree::new(vec![
            file_of("a.txt", &[(chunk, 3), (chunk, 3)]),
            file_of("b.log", &[]),
        ]));
        let one = save(Tree::new(vec![dir_of("d", shared), dir_of("e", shared)]));
        let two = save(Tree::new(vec![dir_of("d", grown)]));
        packer.flush().unwrap();
        let snaps = [
            (
                SnapshotId(Id::hash_of(b"1")),
                snapshot(one, "2020-01-01T00:00:00Z"),
            ),
            (
                SnapshotId(Id::hash_of(b"2")),
                snapshot(two, "2021-01-01T00:00:00Z"),
            ),
        ];
        let never = Cancel::default();
        let found = find(&repo, &snaps, &Patterns::new(&["*.txt"]).unwrap(), &never)
            .unwrap()
            .found;
        let got: Vec<(String, Vec<u64>)> = found
            .iter()
            .map(|f| {
                (
                    paths::display(&f.path),
                    f.versions.iter().map(|v| v.size).collect(),
                )
            })
            .collect();
        let want = [("/d/a.txt", vec![3, 6]), ("/e/a.txt", vec![3])];
        assert_eq!(got, want.map(|(p, s)| (p.to_string(), s)));
        assert_eq!(found[0].versions[1].snapshot, snaps[1].0);
        let by_path = find(&repo, &snaps, &Patterns::new(&["/d/*"]).unwrap(), &never)
            .unwrap()
            .found;
        assert_eq!(by_path.len(), 2, "/d/a.txt and /d/b.log");
        let cancel = Cancel::default();
        cancel.cancel();
        let stopped = find(&repo, &snaps, &Patterns::new(&["*"]).unwrap(), &cancel);
        assert_eq!(stopped.err(), Some(Cancelled));
    }

    #[test]
    fn a_snapshot_over_its_budget_is_skipped_and_the_others_are_searched() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let leaf = save(Tree::new(vec![file_of("x.txt", &[])]));
        let mut dag = save(Tree::new(vec![]));
        for _ in 0..30 {
            dag = save(Tree::new(vec![dir_of("a", dag), dir_of("b", dag)]));
        }
        let forged = save(Tree::new(vec![dir_of("d", leaf), dir_of("z", dag)]));
        let genuine = save(Tree::new(vec![dir_of("d", leaf)]));
        packer.flush().unwrap();
        // The forged snapshot queues /d first, then stops before it is loaded: the genuine
        // one, which shares /d, is searched again on its own.
        let mut forged = snapshot(forged, "2020-01-01T00:00:00Z");
        forged.summary.entries = Some(2);
        let snaps = [
            (SnapshotId(Id::hash_of(b"f")), forged),
            (
                SnapshotId(Id::hash_of(b"g")),
                snapshot(genuine, "2021-01-01T00:00:00Z"),
            ),
        ];
        let never = Cancel::default();
        let report = find(&repo, &snaps, &Patterns::new(&["*.txt"]).unwrap(), &never).unwrap();
        assert_eq!(report.found.len(), 1);
        assert_eq!(paths::display(&report.found[0].path), "/d/x.txt");
        let versions: Vec<SnapshotId> = report.found[0]
            .versions
            .iter()
            .map(|v| v.snapshot)
            .collect();
        assert_eq!(versions, vec![snaps[1].0]);
        assert_eq!(report.skipped.len(), 1);
        let (id, e) = &report.skipped[0];
        assert_eq!(*id, snaps[0].0);
        assert!(
            matches!(
                e,
                FindError::Walk {
                    source: OverBudget { limit: 2 },
                    ..
                }
            ),
            "{e}"
        );
    }
}
