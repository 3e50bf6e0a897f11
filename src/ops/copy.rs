//! Copying snapshots between repositories: every blob a snapshot needs is read from the
//! source and saved through the destination's packer, so it is compressed, encrypted and
//! deduplicated with the destination's keys and settings. Blob ids are keyed hashes, different
//! in every repository, so each tree is rewritten bottom-up with the destination's ids. The
//! copy names what it copies in `original`, so copying again skips it.
use crate::cancel::Cancel;
use crate::observer::{Counters, EntryError, EntryErrorKind, Observer, Phase};
use crate::repo::blob::BlobType;
use crate::repo::id::{BlobId, SnapshotId, TreeId};
use crate::repo::locked::Locked;
use crate::repo::repository::{IndexedRepo, RepoError, Result};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::write::packer::Packer;
use crate::write::rewrite::{self, Opened, Rewriter};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CopyReport {
    pub snapshots_copied: usize,
    pub snapshots_skipped: usize,
    /// Snapshots not copied because data they need is missing or damaged in the source.
    pub snapshots_failed: usize,
    /// New blobs (data and trees) stored in the destination.
    pub blobs_added: u64,
    /// Their stored size, after compression and encryption.
    pub bytes_added: u64,
    /// Each snapshot asked for, in the order copied.
    pub snapshots: Vec<SnapshotCopy>,
}

/// What became of one source snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotCopy {
    pub source: SnapshotId,
    #[serde(flatten)]
    pub status: Status,
    /// New blobs stored for it (blobs it shares with snapshots copied before are not new).
    pub blobs_added: u64,
    pub bytes_added: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Status {
    /// Written as `destination`.
    Copied { destination: SnapshotId },
    /// The destination holds a copy already: `destination`.
    Skipped { destination: SnapshotId },
    /// Not copied: data it needs is missing or damaged in the source.
    Failed { error: String },
}

/// Copies `snapshots` (oldest first, to keep parent links) of `src` into `dst`, skipping those
/// `dst` holds a copy of. A snapshot whose data cannot be read from the source is reported as
/// failed and the others are still copied; an error writing to `dst` stops the copy. Each
/// copy's blobs are durable and indexed before its snapshot is written. Writes under the
/// caller's lock on `dst`; the caller locks `src` to read. Once `cancel` is cancelled the copy
/// stops before its next blob (the snapshots copied so far stay).
pub fn copy(
    src: &IndexedRepo,
    dst: &Locked<'_, IndexedRepo>,
    snapshots: &[(SnapshotId, Snapshot)],
    cancel: &Cancel,
    progress: &dyn Observer,
) -> Result<CopyReport> {
    let mut copies = Copies::default();
    for (id, snap) in dst.snapshots()?.0 {
        copies.add(id, snap);
    }
    progress.phase(Phase::Writing);
    let packer = Packer::new(dst, false)
        .cancelled_by(cancel)
        .observed_by(progress);
    let mut copier = Copier {
        src,
        packer: &packer,
        blobs: HashMap::new(),
        progress,
    };
    let mut trees = HashMap::new();
    let mut report = CopyReport::default();
    for (id, snap) in snapshots {
        progress.item(&id.0.short());
        let before = packer.stats();
        let rewritten = match copies.find(*id, snap) {
            Some(copy) => Err(Status::Skipped { destination: copy }),
            None => match rewrite::rewrite(&mut copier, snap.tree, &mut trees) {
                Ok(tree) => Ok(tree),
                Err(Failure::Source(error)) => {
                    progress.error(&EntryError::new(
                        EntryErrorKind::Read,
                        id.0.to_hex(),
                        &error,
                    ));
                    Err(Status::Failed { error })
                }
                Err(Failure::Destination(e)) => return Err(e),
            },
        };
        // The blobs first: a snapshot refers only to durable, indexed data.
        let after = packer.flush()?;
        let status = match rewritten {
            Ok(tree) => {
                let copy = copy_of(*id, snap, tree, parent_copy(src, &copies, snap));
                let new = dst.save_snapshot(&copy)?;
                copies.add(new, copy);
                Status::Copied { destination: new }
            }
            Err(status) => status,
        };
        let entry = SnapshotCopy {
            source: *id,
            status,
            blobs_added: blobs(&after) - blobs(&before),
            bytes_added: after.bytes - before.bytes,
        };
        report.add(entry);
    }
    Ok(report)
}

fn blobs(stats: &crate::write::packer::PackerStats) -> u64 {
    stats.data_blobs + stats.tree_blobs
}

impl CopyReport {
    fn add(&mut self, entry: SnapshotCopy) {
        match entry.status {
            Status::Copied { .. } => self.snapshots_copied += 1,
            Status::Skipped { .. } => self.snapshots_skipped += 1,
            Status::Failed { .. } => self.snapshots_failed += 1,
        }
        self.blobs_added += entry.blobs_added;
        self.bytes_added += entry.bytes_added;
        self.snapshots.push(entry);
    }
}

/// The copy of the source snapshot `id` with the rewritten root `tree`: everything else as
/// recorded (time, host, paths, tags, sources, summary), `parent` the copy of its parent when
/// the destination holds one, and `original` naming the snapshot first made.
fn copy_of(id: SnapshotId, snap: &Snapshot, tree: TreeId, parent: Option<SnapshotId>) -> Snapshot {
    Snapshot {
        tree,
        parent,
        original: Some(snap.original.unwrap_or(id)),
        ..snap.clone()
    }
}

/// The destination's copy of `snap`'s parent, if it holds one.
fn parent_copy(src: &IndexedRepo, copies: &Copies, snap: &Snapshot) -> Option<SnapshotId> {
    let parent = snap.parent?;
    copies.find(parent, &src.load_snapshot(parent).ok()?)
}

/// The destination's snapshots by the snapshot they stand for: the `original` of a copy, and
/// every snapshot's own id (so copying back into the repository a snapshot came from finds
/// the snapshot itself).
#[derive(Default)]
struct Copies(HashMap<SnapshotId, Vec<(SnapshotId, Snapshot)>>);

impl Copies {
    fn add(&mut self, id: SnapshotId, snap: Snapshot) {
        if let Some(original) = snap.original {
            self.0.entry(original).or_default().push((id, snap.clone()));
        }
        self.0.entry(id).or_default().push((id, snap));
    }

    /// The destination's copy of the source snapshot `id`: one standing for the same snapshot
    /// with the same time, host, paths and tags (a snapshot rewritten since, as `repair
    /// snapshots` does, keeps its original but not its tags, and is copied again).
    fn find(&self, id: SnapshotId, snap: &Snapshot) -> Option<SnapshotId> {
        let same = |s: &Snapshot| {
            (s.time, &s.host, &s.paths, &s.tags) == (snap.time, &snap.host, &snap.paths, &snap.tags)
        };
        let candidates = self.0.get(&snap.original.unwrap_or(id))?;
        candidates.iter().find(|(_, s)| same(s)).map(|(id, _)| *id)
    }
}

/// Why a tree could not be copied.
enum Failure {
    /// Reading the source failed: this snapshot cannot be copied.
    Source(String),
    /// Writing the destination failed: the copy stops.
    Destination(RepoError),
}

/// Rewrites source trees into the destination: their data blobs copied, their entries pointing
/// at the destination's ids. Each distinct data blob is copied once per run.
struct Copier<'a> {
    src: &'a IndexedRepo,
    packer: &'a Packer<'a>,
    /// Source data blob id → destination id.
    blobs: HashMap<BlobId, BlobId>,
    progress: &'a dyn Observer,
}

impl Rewriter for Copier<'_> {
    type Frame = Vec<Node>;
    type Done = TreeId;
    type Error = Failure;

    /// Loads the tree and copies the data blobs of its files not copied yet, in parallel.
    fn open(&mut self, id: TreeId) -> std::result::Result<Opened<Vec<Node>, TreeId>, Failure> {
        let tree = (self.src.load_tree(&id)).map_err(|e| Failure::Source(e.to_string()))?;
        let mut new: Vec<BlobId> = (tree.nodes.iter().flat_map(Node::content))
            .map(|c| c.id)
            .filter(|id| !self.blobs.contains_key(id))
            .collect();
        new.sort_unstable();
        new.dedup();
        let copied = (new.into_par_iter())
            .map(|id| Ok((id, self.copy_blob(&id)?)))
            .collect::<std::result::Result<Vec<_>, Failure>>()?;
        self.blobs.extend(copied);
        Ok(Opened::Tree(
            Vec::with_capacity(tree.nodes.len()),
            tree.nodes,
        ))
    }

    fn cycle(&mut self, id: TreeId) -> std::result::Result<TreeId, Failure> {
        Err(Failure::Source(format!("tree {id} contains itself")))
    }

    fn leaf(&mut self, kept: &mut Vec<Node>, mut node: Node) -> std::result::Result<(), Failure> {
        if let NodeKind::File { content } = &mut node.kind {
            for c in content {
                c.id = self.blobs[&c.id];
            }
        }
        kept.push(node);
        Ok(())
    }

    fn subtree(
        &mut self,
        kept: &mut Vec<Node>,
        mut node: Node,
        done: &TreeId,
    ) -> std::result::Result<(), Failure> {
        if let NodeKind::Dir { subtree } = &mut node.kind {
            *subtree = *done;
        }
        kept.push(node);
        Ok(())
    }

    fn finish(&mut self, _id: TreeId, kept: Vec<Node>) -> std::result::Result<TreeId, Failure> {
        let tree = Tree::new(kept);
        let (id, _) = (self.packer.save_tree(&tree)).map_err(Failure::Destination)?;
        Ok(id)
    }
}

impl Copier<'_> {
    /// Reads the data blob `id` from the source (verified) and saves it in the destination;
    /// returns its id there.
    fn copy_blob(&self, id: &BlobId) -> std::result::Result<BlobId, Failure> {
        let plain = (self.src.read_blob(id)).map_err(|e| Failure::Source(e.to_string()))?;
        self.progress.add(Counters::bytes_read(plain.len() as u64));
        let (id, _) = (self.packer.save(BlobType::Data, &plain)).map_err(Failure::Destination)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Quiet;
    use crate::ops::checker::tests::snapshot_of;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::vfs;
    use crate::write::packer::tests::{indexed_repo, random_blob};

    /// A repository with two snapshots sharing the directory `/sub` (`f0..f3`, a blob each)
    /// and the blob of `f0`; the first has `/g`, the second (its child, with a MongoDB
    /// source) `/h` (blobs 100 and 0, the first alone in its pack). Returns the snapshots,
    /// oldest first.
    fn source(dir: &std::path::Path) -> (IndexedRepo, Vec<(SnapshotId, Snapshot)>) {
        let repo = indexed_repo(dir, 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let data = |i: u32| packer.save(BlobType::Data, &random_blob(i)).unwrap().0;
        let tree = |nodes| packer.save_tree(&Tree::new(nodes)).unwrap().0;
        let files = (0..4).map(|i| file_of(&format!("f{i}"), &[(data(i), 1000)]));
        let sub = tree(files.collect());
        let first = tree(vec![dir_of("sub", sub), file_of("g", &[(data(99), 1000)])]);
        packer.flush().unwrap();
        let h = file_of("h", &[(data(100), 1000), (data(0), 1000)]);
        packer.flush().unwrap();
        let second = tree(vec![dir_of("sub", sub), h]);
        packer.flush().unwrap();
        let first = (lock.save_snapshot(&snapshot_of(first)).unwrap(), first);
        let mut child = snapshot_of(second);
        child.time = "2021-01-01T00:00:00Z".parse().unwrap();
        child.parent = Some(first.0);
        child.sources = vec![crate::repo::snapshot::Source::MongoDB {
            server: "db:27017".into(),
            databases: vec!["app".into()],
            cluster_time: None,
            window_start: None,
            consistent: false,
            chain: None,
        }];
        lock.save_snapshot(&child).unwrap();
        let snapshots = repo.snapshots().unwrap().0;
        (repo, snapshots)
    }

    fn read(repo: &IndexedRepo, tree: TreeId, path: &str) -> Vec<u8> {
        let node = vfs::node_at(repo, tree, path.as_bytes()).unwrap();
        vfs::read_range(repo, &node, 0, node.size).unwrap()
    }

    #[test]
    fn every_blob_is_re_ided_once_and_a_second_copy_skips_everything() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, snapshots) = source(a.path());
        let dst = indexed_repo(b.path(), 4096);
        let r = copy(
            &src,
            &crate::repo::locked::exclusive(&dst),
            &snapshots,
            &Cancel::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!((r.snapshots_copied, r.snapshots_failed), (2, 0), "{r:?}");
        // Data 0..3, 99, 100 and trees sub, first, second; the second snapshot adds only
        // blob 100 and its root.
        assert_eq!(r.blobs_added, 9);
        assert_eq!(r.snapshots[1].blobs_added, 2);
        let copied = |i: usize| match r.snapshots[i].status {
            Status::Copied { destination } => {
                (destination, dst.load_snapshot(destination).unwrap())
            }
            ref other => panic!("{other:?}"),
        };
        let ((first, one), (_, two)) = (copied(0), copied(1));
        assert_eq!(one.original, Some(snapshots[0].0));
        assert_eq!(two.parent, Some(first), "the parent link follows");
        assert_eq!(
            (two.time, two.original),
            (snapshots[1].1.time, Some(snapshots[1].0))
        );
        assert_eq!(two.sources, snapshots[1].1.sources);
        assert_ne!(
            two.tree, snapshots[1].1.tree,
            "ids are keyed per repository"
        );
        assert_eq!(read(&dst, one.tree, "/g"), random_blob(99));
        assert_eq!(
            read(&dst, two.tree, "/h"),
            [random_blob(100), random_blob(0)].concat()
        );
        assert_eq!(read(&dst, two.tree, "/sub/f3"), random_blob(3));

        let again = copy(
            &src,
            &crate::repo::locked::exclusive(&dst),
            &snapshots,
            &Cancel::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!((again.snapshots_copied, again.snapshots_skipped), (0, 2));
        assert_eq!(again.blobs_added, 0);
        let back = copy(
            &dst,
            &crate::repo::locked::exclusive(&src),
            &dst.snapshots().unwrap().0,
            &Cancel::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!(
            back.snapshots_skipped, 2,
            "copies back to where they came from"
        );
    }

    #[test]
    fn a_snapshot_whose_data_is_lost_fails_alone() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, snapshots) = source(a.path());
        let lost = src.key().blob_id(&random_blob(100));
        let pack = src.locate(&lost).unwrap().pack.0.to_hex();
        let path = a.path().join("repo/data").join(&pack[..2]).join(pack);
        std::fs::remove_file(path).unwrap();
        let dst = indexed_repo(b.path(), 4096);
        let newest_first: Vec<_> = snapshots.iter().rev().cloned().collect();
        let log = crate::observer::ErrorLog::default();
        let r = copy(
            &src,
            &crate::repo::locked::exclusive(&dst),
            &newest_first,
            &Cancel::default(),
            &log,
        )
        .unwrap();
        assert_eq!((r.snapshots_copied, r.snapshots_failed), (1, 1), "{r:?}");
        let failed: Vec<_> = log.take().into_iter().map(|e| (e.path, e.kind)).collect();
        assert_eq!(
            failed,
            [(newest_first[0].0.0.to_hex(), EntryErrorKind::Read)]
        );
        assert!(matches!(r.snapshots[0].status, Status::Failed { .. }));
        assert_eq!(r.snapshots[1].source, snapshots[0].0);
        assert_eq!(dst.snapshots().unwrap().0.len(), 1);
    }
}
