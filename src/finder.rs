//! Finding paths across snapshots: every entry whose path matches a set of patterns, with
//! the version (type, size, mtime) each snapshot holds. A directory tree that several
//! snapshots share at the same path is loaded and matched once.
use crate::filter::Patterns;
use crate::id::{BlobId, SnapshotId};
use crate::paths;
use crate::repository::{IndexedRepo, RepoError};
use crate::snapshot::Snapshot;
use crate::tree::{Node, Timespec, Tree};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// Trees nested deeper than this are not searched (a forged tree could nest forever).
const MAX_DEPTH: usize = 1024;
/// Directories loaded at a time, in parallel.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// `at`: "PATH in snapshot ID".
    #[error("{at}: {source}")]
    Repo { at: String, source: RepoError },
    #[error("{0}: trees are nested more than {MAX_DEPTH} levels deep")]
    TooDeep(String),
}

pub type Result<T> = std::result::Result<T, FindError>;

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
pub fn format_mtime(t: &Timespec) -> String {
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

/// What one directory (a tree at a path) holds: its matching entries and subdirectories.
#[derive(Default)]
struct Dir {
    matches: Vec<(Vec<u8>, Node)>,
    subdirs: Vec<usize>,
}

/// A directory still to load: the slot it fills in `dirs`.
struct Todo {
    slot: usize,
    tree: BlobId,
    path: Vec<u8>,
    depth: usize,
    snapshot: SnapshotId,
}

impl Todo {
    fn location(&self) -> String {
        let path = paths::display(&self.path);
        format!("{path} in snapshot {}", self.snapshot.0.short())
    }
}

struct Finder<'a> {
    repo: &'a IndexedRepo,
    patterns: &'a Patterns,
    dirs: Vec<Dir>,
    slots: HashMap<(BlobId, Vec<u8>), usize>,
}

/// Every path matching `patterns` in `snapshots` (oldest first), sorted by path.
pub fn find(
    repo: &IndexedRepo,
    snapshots: &[(SnapshotId, Snapshot)],
    patterns: &Patterns,
) -> Result<Vec<Found>> {
    let mut finder = Finder {
        repo,
        patterns,
        dirs: Vec::new(),
        slots: HashMap::new(),
    };
    let mut todo = Vec::new();
    let roots: Vec<usize> = snapshots
        .iter()
        .map(|(id, s)| finder.slot(s.tree, Vec::new(), 0, *id, &mut todo))
        .collect();
    finder.load_all(todo)?;
    let mut found: HashMap<Vec<u8>, Vec<Version>> = HashMap::new();
    for ((id, snap), root) in snapshots.iter().zip(roots) {
        finder.collect(root, &mut |path, node| {
            found.entry(path.to_vec()).or_default().push(Version {
                snapshot: *id,
                time: snap.time,
                kind: node.type_name(),
                size: node.size,
                mtime: node.mtime,
            })
        });
    }
    let mut found: Vec<Found> = found
        .into_iter()
        .map(|(path, versions)| Found { path, versions })
        .collect();
    found.sort_by(|a, b| paths::cmp(&a.path, &b.path));
    Ok(found)
}

impl Finder<'_> {
    /// The slot of the tree `tree` at `path`; a new one is queued in `todo` to be loaded.
    fn slot(
        &mut self,
        tree: BlobId,
        path: Vec<u8>,
        depth: usize,
        snapshot: SnapshotId,
        todo: &mut Vec<Todo>,
    ) -> usize {
        if let Some(&slot) = self.slots.get(&(tree, path.clone())) {
            return slot;
        }
        let slot = self.dirs.len();
        self.dirs.push(Dir::default());
        self.slots.insert((tree, path.clone()), slot);
        todo.push(Todo {
            slot,
            tree,
            path,
            depth,
            snapshot,
        });
        slot
    }

    /// Loads the queued trees breadth first, a batch at a time in parallel.
    fn load_all(&mut self, mut todo: Vec<Todo>) -> Result<()> {
        while !todo.is_empty() {
            let mut next = Vec::new();
            for batch in todo.chunks(BATCH) {
                let loaded: Vec<_> = batch
                    .par_iter()
                    .map(|t| self.repo.load_tree(&t.tree))
                    .collect();
                for (t, tree) in batch.iter().zip(loaded) {
                    let tree = tree.map_err(|source| FindError::Repo {
                        at: t.location(),
                        source,
                    })?;
                    self.fill(t, tree, &mut next)?;
                }
            }
            todo = next;
        }
        Ok(())
    }

    fn fill(&mut self, t: &Todo, tree: Tree, next: &mut Vec<Todo>) -> Result<()> {
        if t.depth > MAX_DEPTH {
            return Err(FindError::TooDeep(t.location()));
        }
        let mut dir = Dir::default();
        for node in tree.nodes {
            let path = paths::join(&t.path, &node.name);
            if let Some(sub) = node.subtree() {
                let slot = self.slot(sub, path.clone(), t.depth + 1, t.snapshot, next);
                dir.subdirs.push(slot);
            }
            if self.patterns.matches(&path) {
                dir.matches.push((path, node));
            }
        }
        self.dirs[t.slot] = dir;
        Ok(())
    }

    /// Calls `f` for every match below the directory in `root`.
    fn collect(&self, root: usize, f: &mut dyn FnMut(&[u8], &Node)) {
        let mut stack = vec![root];
        while let Some(slot) = stack.pop() {
            let dir = &self.dirs[slot];
            for (path, node) in &dir.matches {
                f(path, node);
            }
            stack.extend(&dir.subdirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::id::Id;
    use crate::packer::Packer;
    use crate::packer::tests::indexed_repo;
    use crate::tree::tests::{dir_of, file_of};

    fn snapshot(tree: BlobId, time: &str) -> Snapshot {
        let json = serde_json::json!({"time": time, "host": "h", "username": "u", "uid": 0,
            "gid": 0, "paths": ["/d"], "tree": tree, "program_version": "t"});
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn finds_versions_across_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let packer = Packer::new(&repo, false);
        let save = |t: Tree| packer.save(BlobType::Tree, &t.encode()).unwrap().0;
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
        let found = find(&repo, &snaps, &Patterns::new(&["*.txt"]).unwrap()).unwrap();
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
        let by_path = find(&repo, &snaps, &Patterns::new(&["/d/*"]).unwrap()).unwrap();
        assert_eq!(by_path.len(), 2, "/d/a.txt and /d/b.log");
    }
}
