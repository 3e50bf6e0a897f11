//! Comparing two snapshot trees: which paths were added, removed, changed in content, or
//! changed only in metadata. Subtrees with the same tree blob id are identical and are
//! skipped without being loaded; the others are loaded a batch at a time, in parallel, and
//! their entries charged to a [`Budget`], so a forged tree DAG is refused, not expanded.
use crate::backend::pool::IoPool;
use crate::cancel::{Cancel, Cancelled};
use crate::repo::id::{BlobId, TreeId};
use crate::repo::paths;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::walk::{self, Budget, OverBudget};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{path}: {source}")]
    Repo { path: String, source: RepoError },
    #[error("{path}: {source}")]
    Walk { path: String, source: OverBudget },
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

pub(crate) type Result<T> = std::result::Result<T, DiffError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second snapshot (`+`).
    Added,
    /// Only in the first snapshot (`-`).
    Removed,
    /// A file whose content (chunk list) differs (`M`).
    Modified,
    /// Same content, other metadata (`U`).
    Metadata,
}

impl ChangeKind {
    /// The restic-style marker: `+`, `-`, `M` or `U`.
    pub fn marker(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
        }
    }
}

/// One changed path.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Absolute path in the snapshots (raw bytes; lossy UTF-8 in JSON).
    #[serde(serialize_with = "paths::lossy")]
    pub path: Vec<u8>,
    pub change: ChangeKind,
    /// [`Node::type_name`] (of the second snapshot's entry when there is one).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// File size in the first snapshot (None when added).
    pub size_before: Option<u64>,
    /// File size in the second snapshot (None when removed).
    pub size_after: Option<u64>,
    /// The metadata fields that differ (`mode`, `uid`, `mtime`, `target`, …).
    pub fields: Vec<&'static str>,
}

/// Counts of the changes, and how much content they add and remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    pub files_added: u64,
    pub files_removed: u64,
    pub dirs_added: u64,
    pub dirs_removed: u64,
    /// Symlinks, devices, fifos and sockets.
    pub others_added: u64,
    pub others_removed: u64,
    pub modified: u64,
    pub metadata: u64,
    /// Bytes of the distinct chunks that the changed entries of the second snapshot hold
    /// and those of the first do not (a small edit of a big file counts its changed chunks).
    pub bytes_added: u64,
    /// The same the other way round.
    pub bytes_removed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffReport {
    /// Sorted by path, each directory before its entries.
    pub changes: Vec<Change>,
    pub summary: DiffSummary,
}

/// A pair of directories still to compare (either side may be absent).
struct Pending {
    path: Vec<u8>,
    before: Option<TreeId>,
    after: Option<TreeId>,
}

#[derive(Default)]
struct Differ {
    changes: Vec<Change>,
    summary: DiffSummary,
    chunks_before: HashMap<BlobId, u32>,
    chunks_after: HashMap<BlobId, u32>,
    next: Vec<Pending>,
}

/// Compares the trees `before` and `after` (root tree ids of two snapshots), loading at most
/// `budget` entries (the sum of both snapshots' [`crate::walk::entry_budget`]); stops with
/// [`DiffError::Cancelled`] once `cancel` is cancelled.
pub fn diff(
    repo: &IndexedRepo,
    before: TreeId,
    after: TreeId,
    mut budget: Budget,
    cancel: &Cancel,
) -> Result<DiffReport> {
    let mut differ = Differ::default();
    let pool = IoPool::for_backend(repo.backend());
    let mut frontier = vec![Pending {
        path: Vec::new(),
        before: Some(before),
        after: Some(after),
    }];
    while !frontier.is_empty() {
        let load = |p: &Pending| load_pair(repo, p);
        walk::in_batches(&frontier, &pool, cancel, load, |pending, trees| {
            let (a, b) = trees?;
            budget
                .charge((a.len() + b.len()) as u64)
                .map_err(|source| DiffError::Walk {
                    path: paths::display(&pending.path),
                    source,
                })?;
            differ.compare_dirs(pending, a, b);
            Ok::<(), DiffError>(())
        })?;
        frontier = std::mem::take(&mut differ.next);
    }
    Ok(differ.finish())
}

type Nodes = BTreeMap<Vec<u8>, Node>;

fn load_pair(repo: &IndexedRepo, p: &Pending) -> Result<(Nodes, Nodes)> {
    let load = |id: Option<TreeId>| -> Result<Nodes> {
        let Some(id) = id else {
            return Ok(Nodes::new());
        };
        let tree: Tree = repo.load_tree(&id).map_err(|source| DiffError::Repo {
            path: paths::display(&p.path),
            source,
        })?;
        Ok(tree
            .nodes
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect())
    };
    Ok((load(p.before)?, load(p.after)?))
}

impl Differ {
    fn compare_dirs(&mut self, dir: &Pending, mut a: Nodes, mut b: Nodes) {
        let names: Vec<Vec<u8>> = a.keys().chain(b.keys()).cloned().collect();
        for name in names {
            let (x, y) = (a.remove(&name), b.remove(&name));
            self.compare(paths::join(&dir.path, &name), x, y);
        }
    }

    fn compare(&mut self, path: Vec<u8>, a: Option<Node>, b: Option<Node>) {
        match (a, b) {
            (Some(a), Some(b)) if a.type_name() == b.type_name() => self.both(path, &a, &b),
            (a, b) => {
                if let Some(a) = a {
                    self.one_side(path.clone(), &a, ChangeKind::Removed);
                }
                if let Some(b) = b {
                    self.one_side(path, &b, ChangeKind::Added);
                }
            }
        }
    }

    /// An entry (and its subtree) that only one snapshot has.
    fn one_side(&mut self, path: Vec<u8>, node: &Node, change: ChangeKind) {
        let added = change == ChangeKind::Added;
        let size = node.subtree().is_none().then_some(node.size);
        let counter = match (&node.kind, added) {
            (NodeKind::File { .. }, true) => &mut self.summary.files_added,
            (NodeKind::File { .. }, false) => &mut self.summary.files_removed,
            (NodeKind::Dir { .. }, true) => &mut self.summary.dirs_added,
            (NodeKind::Dir { .. }, false) => &mut self.summary.dirs_removed,
            (_, true) => &mut self.summary.others_added,
            (_, false) => &mut self.summary.others_removed,
        };
        *counter += 1;
        let chunks = match added {
            true => &mut self.chunks_after,
            false => &mut self.chunks_before,
        };
        chunks.extend(node.content().iter().map(|c| (c.id, c.len)));
        if let Some(id) = node.subtree() {
            let (before, after) = if added {
                (None, Some(id))
            } else {
                (Some(id), None)
            };
            self.queue(&path, before, after);
        }
        self.changes.push(Change {
            path,
            change,
            kind: node.type_name(),
            size_before: size.filter(|_| !added),
            size_after: size.filter(|_| added),
            fields: Vec::new(),
        });
    }

    /// An entry of the same type in both snapshots.
    fn both(&mut self, path: Vec<u8>, a: &Node, b: &Node) {
        if let (Some(x), Some(y)) = (a.subtree(), b.subtree())
            && x != y
        {
            self.queue(&path, Some(x), Some(y));
        }
        let fields = metadata_changes(a, b);
        let change = if a.content() != b.content() {
            self.chunks_before
                .extend(a.content().iter().map(|c| (c.id, c.len)));
            self.chunks_after
                .extend(b.content().iter().map(|c| (c.id, c.len)));
            self.summary.modified += 1;
            ChangeKind::Modified
        } else if !fields.is_empty() {
            self.summary.metadata += 1;
            ChangeKind::Metadata
        } else {
            return;
        };
        let file = matches!(b.kind, NodeKind::File { .. });
        self.changes.push(Change {
            path,
            change,
            kind: b.type_name(),
            size_before: file.then_some(a.size),
            size_after: file.then_some(b.size),
            fields,
        });
    }

    fn queue(&mut self, path: &[u8], before: Option<TreeId>, after: Option<TreeId>) {
        self.next.push(Pending {
            path: path.to_vec(),
            before,
            after,
        });
    }

    fn finish(mut self) -> DiffReport {
        let only = |x: &HashMap<BlobId, u32>, y: &HashMap<BlobId, u32>| -> u64 {
            x.iter()
                .filter(|(id, _)| !y.contains_key(*id))
                .map(|(_, &len)| len as u64)
                .sum()
        };
        self.summary.bytes_added = only(&self.chunks_after, &self.chunks_before);
        self.summary.bytes_removed = only(&self.chunks_before, &self.chunks_after);
        self.changes.sort_by(|x, y| paths::cmp(&x.path, &y.path));
        DiffReport {
            changes: self.changes,
            summary: self.summary,
        }
    }
}

/// The names of the restorable metadata fields that differ between two entries of the
/// same type (not ctime, inode, device or link count, which any copy changes).
pub(crate) fn metadata_changes(a: &Node, b: &Node) -> Vec<&'static str> {
    let target = |n: &Node| match &n.kind {
        NodeKind::Symlink { target } => Some(target.clone()),
        _ => None,
    };
    let rdev = |n: &Node| match n.kind {
        NodeKind::CharDev { rdev } | NodeKind::BlockDev { rdev } => Some(rdev),
        _ => None,
    };
    [
        ("mode", a.mode != b.mode),
        ("uid", a.uid != b.uid),
        ("gid", a.gid != b.gid),
        ("user", a.user != b.user),
        ("group", a.group != b.group),
        ("mtime", a.mtime != b.mtime),
        ("target", target(a) != target(b)),
        ("rdev", rdev(a) != rdev(b)),
        ("xattrs", a.xattrs != b.xattrs),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::indexed_repo;

    fn chunk(n: u8) -> BlobId {
        BlobId(Id::hash_of(&[n]))
    }

    #[test]
    fn metadata_fields_are_named() {
        let a = file_of("f", &[(chunk(1), 10)]);
        let mut b = a.clone();
        assert!(metadata_changes(&a, &b).is_empty());
        b.mode = 0o600;
        b.mtime.nsec += 1;
        b.inode += 1;
        assert_eq!(metadata_changes(&a, &b), vec!["mode", "mtime"]);
    }

    #[test]
    fn diff_skips_identical_subtrees_and_classifies_changes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        // A shared subtree that is never stored: loading it would fail.
        let ghost = TreeId(Id::hash_of(b"never stored"));
        let same = file_of("same", &[(chunk(1), 100)]);
        let mut touched = file_of("touched", &[(chunk(2), 50)]);
        let edited = file_of("edited", &[(chunk(3), 70), (chunk(4), 30)]);
        let gone = file_of("gone", &[(chunk(5), 20)]);
        let old_sub = save(Tree::new(vec![gone]));
        let before = save(Tree::new(vec![
            same.clone(),
            touched.clone(),
            edited,
            dir_of("shared", ghost),
            dir_of("sub", old_sub),
        ]));
        touched.mode = 0o600;
        let edited = file_of("edited", &[(chunk(3), 70), (chunk(6), 40)]);
        let new_file = file_of("new", &[(chunk(7), 5)]);
        let after = save(Tree::new(vec![
            same,
            touched,
            edited,
            dir_of("shared", ghost),
            file_of("sub", &[]),
            dir_of("added", save(Tree::new(vec![new_file]))),
        ]));
        packer.flush().unwrap();

        let never = Cancel::default();
        let report = diff(&repo, before, after, Budget::new(u64::MAX), &never).unwrap();
        let tight = diff(&repo, before, after, Budget::new(12), &never);
        assert!(
            matches!(
                tight,
                Err(DiffError::Walk {
                    source: OverBudget { limit: 12 },
                    ..
                })
            ),
            "5 + 6 entries at the root, 1 + 1 below: over 12"
        );
        let cancel = Cancel::default();
        cancel.cancel();
        let stopped = diff(&repo, before, after, Budget::new(u64::MAX), &cancel);
        assert!(
            matches!(stopped, Err(DiffError::Cancelled(_))),
            "{stopped:?}"
        );
        let got: Vec<(String, char)> = report
            .changes
            .iter()
            .map(|c| (paths::display(&c.path), c.change.marker()))
            .collect();
        let want = [
            ("/added", '+'),
            ("/added/new", '+'),
            ("/edited", 'M'),
            ("/sub", '-'),
            ("/sub", '+'),
            ("/sub/gone", '-'),
            ("/touched", 'U'),
        ]
        .map(|(p, m)| (p.to_string(), m));
        assert_eq!(got, want);
        let s = &report.summary;
        assert_eq!(
            (s.files_added, s.files_removed, s.dirs_added, s.dirs_removed),
            (2, 1, 1, 1)
        );
        assert_eq!((s.modified, s.metadata), (1, 1));
        assert_eq!(s.bytes_added, 40 + 5, "chunks 6 and 7");
        assert_eq!(s.bytes_removed, 30 + 20, "chunks 4 and 5");
        let edited = &report.changes[2];
        assert_eq!(
            (edited.size_before, edited.size_after),
            (Some(100), Some(110))
        );
        assert_eq!(report.changes[6].fields, vec!["mode"]);
    }
}
