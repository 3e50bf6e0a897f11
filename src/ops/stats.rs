//! `strata stats`: how much the selected snapshots hold (as restore would write it) and what
//! they cost in the repository after deduplication and compression. A snapshot whose trees
//! cannot all be loaded, or expand to more entries than it records (a forged tree DAG), is
//! reported and left out of the per-snapshot sums.
use crate::backend::Kind;
use crate::cancel::Cancel;
use crate::index::Location;
use crate::observer::{Counters, Observer, Phase};
use crate::repo::blob::{self, Compression};
use crate::repo::dictionary::{self, DictId};
use crate::repo::id::{BlobId, PackId, SnapshotId, TreeId};
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{NodeKind, Tree};
use crate::vfs;
use crate::walk;
use std::collections::{HashMap, HashSet};

#[derive(serde::Serialize, Default, Debug)]
pub struct Stats {
    /// Snapshots summed (the selected ones less `skipped`).
    pub snapshots: u64,
    /// File entries summed over the selected snapshots.
    pub files: u64,
    /// Sum of file sizes over the selected snapshots, as restore would write them.
    pub logical_size: u64,
    /// Distinct blobs (data + tree) referenced.
    pub unique_blobs: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext bytes of the distinct blobs referenced.
    pub unique_raw_size: u64,
    /// Stored (compressed, encrypted) bytes of those blobs.
    pub stored_size: u64,
    /// Distinct packs holding them.
    pub packs: u64,
    /// Total bytes of all objects in the backend: packs, index, snapshots, keys, config and
    /// dictionaries.
    pub repository_size: u64,
    /// logical_size / plaintext bytes of the distinct data blobs; 0 when empty.
    pub dedup_ratio: f64,
    /// unique_raw_size / stored_size; 0 when empty.
    pub compression_ratio: f64,
    /// Of the distinct blobs: those compressed with a repository dictionary, their
    /// plaintext and stored bytes, and how many dictionaries they use.
    pub dictionary_blobs: u64,
    pub dictionary_raw_size: u64,
    pub dictionary_stored_size: u64,
    pub dictionaries: u64,
    /// Stored bytes of the dictionary objects those blobs use.
    pub dictionaries_size: u64,
    /// What `stored_size` would be with plain zstd only, measured by reading every
    /// dictionary-compressed blob and compressing it again without its dictionary (only
    /// when asked for: [`Options::recompress`]).
    pub stored_size_without_dictionaries: Option<u64>,
    /// unique_raw_size / stored_size_without_dictionaries.
    pub compression_ratio_without_dictionaries: Option<f64>,
    /// Selected snapshots left out of the sums, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(serde::Serialize, Debug)]
pub struct Skipped {
    pub snapshot: SnapshotId,
    pub reason: String,
}

/// One distinct tree: its own entries, files and their size, and its subdirectories (with
/// repetitions).
#[derive(Default)]
struct TreeInfo {
    own: Totals,
    children: Vec<TreeId>,
}

/// What a tree holds, or everything below it once expanded (see [`walk::expand`]).
#[derive(Clone, Copy, Default)]
struct Totals {
    entries: u64,
    files: u64,
    size: u64,
    /// A tree below could not be loaded.
    unloaded: Option<TreeId>,
}

impl Totals {
    fn add(self, o: Totals) -> Totals {
        Totals {
            entries: self.entries.saturating_add(o.entries),
            files: self.files.saturating_add(o.files),
            size: self.size.saturating_add(o.size),
            unloaded: self.unloaded.or(o.unloaded),
        }
    }
}

/// What [`stats`] measures beyond the index.
#[derive(Clone, Default, Debug)]
pub struct Options {
    /// Read every dictionary-compressed blob and compress it again with plain zstd, to
    /// report exactly what the dictionaries save.
    pub recompress: bool,
    /// Stops the walk and the recompression (with `RepoError::Cancelled`) once cancelled.
    pub cancel: Cancel,
}

pub fn stats(
    repo: &IndexedRepo,
    snapshots: &[(SnapshotId, Snapshot)],
    options: &Options,
    progress: &dyn Observer,
) -> Result<Stats, RepoError> {
    let mut infos: HashMap<TreeId, TreeInfo> = HashMap::new();
    let mut data: HashSet<BlobId> = HashSet::new();
    let mut failures: HashMap<TreeId, RepoError> = HashMap::new();
    progress.phase(Phase::Scanning);
    vfs::for_each_tree(
        repo,
        snapshots,
        &options.cancel,
        |reached, tree| match tree {
            Ok(tree) => {
                infos.insert(reached.id, tree_info(tree, &mut data));
            }
            Err(e) => {
                failures.insert(reached.id, e);
            }
        },
    )?;

    let mut st = Stats {
        data_blobs: data.len() as u64,
        tree_blobs: infos.len() as u64,
        ..Default::default()
    };
    let mut memo = HashMap::new();
    for (id, snap) in snapshots {
        progress.item(&format!("snapshot {}", id.0.short()));
        let t = totals(&infos, snap.tree, &mut memo);
        match skip_reason(snap, &t, &failures) {
            Some(reason) => st.skipped.push(Skipped {
                snapshot: *id,
                reason,
            }),
            None => {
                st.snapshots += 1;
                st.files = st.files.saturating_add(t.files);
                progress.add(Counters::files(t.files));
                st.logical_size = st.logical_size.saturating_add(t.size);
            }
        }
    }

    progress.phase(Phase::Indexing);
    let mut packs: HashSet<PackId> = HashSet::new();
    let mut found = 0u64;
    let mut raw_data = 0u64;
    let mut per_dict: HashSet<DictId> = HashSet::new();
    let mut with_dict: Vec<Location> = Vec::new();
    repo.index().for_each(|loc| {
        let id = loc.entry.id;
        let is_data = data.contains(&id);
        if is_data || infos.contains_key(&TreeId(id.0)) {
            found += 1;
            st.unique_raw_size += loc.entry.raw_length as u64;
            st.stored_size += loc.entry.length as u64;
            if is_data {
                raw_data += loc.entry.raw_length as u64;
            }
            if let Compression::Dictionary(d) = loc.entry.compression {
                st.dictionary_blobs += 1;
                st.dictionary_raw_size += loc.entry.raw_length as u64;
                st.dictionary_stored_size += loc.entry.length as u64;
                per_dict.insert(d);
                if options.recompress {
                    with_dict.push(loc);
                }
            }
            packs.insert(loc.pack);
        }
    })?;
    st.dictionaries = per_dict.len() as u64;
    let sizes = dictionary::list(repo.backend())?;
    let listed: HashMap<String, u64> = repo
        .backend()
        .list(Kind::Dictionary)?
        .into_iter()
        .map(|e| (e.name, e.size))
        .collect();
    for d in &per_dict {
        let names = sizes.get(d).map(Vec::as_slice).unwrap_or(&[]);
        st.dictionaries_size += names
            .iter()
            .filter_map(|n| listed.get(&n.to_hex()))
            .sum::<u64>();
    }
    if options.recompress {
        progress.phase(Phase::Reading);
        progress.item("recompressing dictionary blobs");
        let without = st.stored_size - st.dictionary_stored_size
            + stored_without_dictionary(repo, &with_dict, &options.cancel)?;
        st.stored_size_without_dictionaries = Some(without);
        st.compression_ratio_without_dictionaries = Some(ratio(st.unique_raw_size, without));
    }
    let trees: HashSet<BlobId> = infos.keys().map(|t| t.blob()).collect();
    st.unique_blobs = data.union(&trees).count() as u64;
    if found < st.unique_blobs {
        for id in data.iter().chain(&trees) {
            if !repo.index().contains(id)? {
                return Err(RepoError::MissingBlob(*id));
            }
        }
    }
    st.packs = packs.len() as u64;

    st.repository_size = repository_size(repo.backend())?;
    st.dedup_ratio = ratio(st.logical_size, raw_data);
    st.compression_ratio = ratio(st.unique_raw_size, st.stored_size);
    Ok(st)
}

/// Total bytes of all objects in `backend` but locks, from its listings alone (no object
/// is read): packs, index, snapshots, keys, config and dictionaries.
pub fn repository_size(backend: &dyn crate::backend::Backend) -> Result<u64, RepoError> {
    let mut size = 0;
    for kind in [
        Kind::Config,
        Kind::Key,
        Kind::Snapshot,
        Kind::Index,
        Kind::Pack,
        Kind::Dictionary,
    ] {
        size += backend.list(kind)?.iter().map(|e| e.size).sum::<u64>();
    }
    Ok(size)
}

/// The stored bytes of the blobs at `locs` had they been compressed with plain zstd at the
/// repository's level: each is read, opened with its dictionary and compressed again.
fn stored_without_dictionary(
    repo: &IndexedRepo,
    locs: &[Location],
    cancel: &Cancel,
) -> Result<u64, RepoError> {
    use rayon::prelude::*;
    let level = repo.config().compression;
    locs.par_iter()
        .map(|loc| {
            cancel.check()?;
            let plain = repo.read_blob_at(loc)?;
            let payload = blob::compress(&plain, level).map_or(plain.len(), |c| c.len());
            Ok((payload + crate::repo::crypto::OVERHEAD) as u64)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))
}

/// A tree's own files and subdirectories; its file chunks are added to `data`.
fn tree_info(tree: &Tree, data: &mut HashSet<BlobId>) -> TreeInfo {
    let mut info = TreeInfo::default();
    info.own.entries = tree.nodes.len() as u64;
    for node in &tree.nodes {
        match &node.kind {
            NodeKind::File { content } => {
                info.own.files += 1;
                info.own.size = info.own.size.saturating_add(node.size);
                data.extend(content.iter().map(|c| c.id));
            }
            NodeKind::Dir { subtree } => info.children.push(*subtree),
            _ => {}
        }
    }
    info
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Entries, files and bytes below `root`, counting a subtree once per place it appears;
/// `memo` holds the totals of trees already summed.
fn totals(
    infos: &HashMap<TreeId, TreeInfo>,
    root: TreeId,
    memo: &mut HashMap<TreeId, Totals>,
) -> Totals {
    let own = |id: &TreeId| match infos.get(id) {
        Some(info) => (info.own, info.children.as_slice()),
        None => (
            Totals {
                unloaded: Some(*id),
                ..Totals::default()
            },
            &[][..],
        ),
    };
    walk::expand(root, own, Totals::add, memo)
}

/// Why `snap`, whose trees hold `t`, cannot be summed, if it cannot.
fn skip_reason(
    snap: &Snapshot,
    t: &Totals,
    failures: &HashMap<TreeId, RepoError>,
) -> Option<String> {
    if let Some(id) = t.unloaded {
        let why = failures.get(&id).map(|e| e.to_string()).unwrap_or_default();
        return Some(format!("tree {} cannot be loaded: {why}", id.0.short()));
    }
    let limit = walk::entry_budget(snap);
    (t.entries > limit).then(|| walk::OverBudget { limit }.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Quiet;
    use crate::repo::blob::BlobType;
    use crate::repo::tree::Tree;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};

    fn snapshot_of(tree: TreeId, time: &str) -> Snapshot {
        let json = serde_json::json!({"time": time, "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/x"], "tree": tree,
            "program_version": "t"});
        serde_json::from_value(json).unwrap()
    }

    fn disk_size(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    disk_size(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }

    #[test]
    fn identical_files_dedupe_and_compress() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let plain = b"strata compresses well ".repeat(200);
        let (id, _) = packer.save(BlobType::Data, &plain).unwrap();
        let same = |name| file_of(name, &[(id, plain.len())]);
        let tree = Tree::new(vec![same("a"), same("b")]);
        let (root, _) = packer.save_tree(&tree).unwrap();
        let saved = packer.flush().unwrap();
        let snap = snapshot_of(root, "2020-01-01T00:00:00Z");
        let snap_id = lock.save_snapshot(&snap).unwrap();
        drop(packer);
        drop(lock); // a held lock is an object in the repository

        let st = stats(
            &repo,
            &[(snap_id, snap.clone())],
            &Options::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!(st.snapshots, 1);
        assert_eq!(st.files, 2);
        let cancelled = Options::default();
        cancelled.cancel.cancel();
        let err = stats(&repo, &[(snap_id, snap.clone())], &cancelled, &Quiet).unwrap_err();
        assert!(matches!(err, RepoError::Cancelled(_)), "{err}");
        assert_eq!(st.logical_size, 2 * plain.len() as u64);
        assert!((st.dedup_ratio - 2.0).abs() < 1e-9, "{st:?}");
        assert!(st.compression_ratio > 1.0, "{st:?}");
        assert_eq!(st.data_blobs, saved.data_blobs);
        assert_eq!(st.tree_blobs, saved.tree_blobs);
        assert_eq!(st.unique_blobs, 2);
        assert_eq!(st.packs, saved.packs);
        assert_eq!(st.unique_raw_size, saved.raw_bytes);
        assert_eq!(st.stored_size, saved.bytes);
        assert_eq!(st.repository_size, disk_size(&dir.path().join("repo")));

        // The same tree in two snapshots counts twice in logical size, once in blobs.
        let both = [(snap_id, snap.clone()), (snap_id, snap)];
        let st2 = stats(&repo, &both, &Options::default(), &Quiet).unwrap();
        assert_eq!(st2.files, 4);
        assert_eq!(st2.logical_size, 4 * plain.len() as u64);
        assert_eq!(st2.unique_blobs, 2);
        assert!((st2.dedup_ratio - 4.0).abs() < 1e-9, "{st2:?}");
    }

    #[test]
    fn repeated_subtrees_count_per_place() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let mut files = Vec::new();
        for i in 0..10u32 {
            let b = random_blob(i);
            let (id, _) = packer.save(BlobType::Data, &b).unwrap();
            files.push(file_of(&format!("f{i}"), &[(id, b.len())]));
        }
        let (sub, _) = packer.save_tree(&Tree::new(files)).unwrap();
        let (mid, _) = packer
            .save_tree(&Tree::new(vec![dir_of("x", sub), dir_of("y", sub)]))
            .unwrap();
        let (root, _) = packer
            .save_tree(&Tree::new(vec![dir_of("m", mid), dir_of("s", sub)]))
            .unwrap();
        let saved = packer.flush().unwrap();
        let snap = snapshot_of(root, "2020-01-01T00:00:00Z");
        let st = stats(
            &repo,
            &[(Default::default(), snap)],
            &Options::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!(st.files, 30);
        assert_eq!(st.logical_size, 30_000);
        assert_eq!(st.data_blobs, 10);
        assert_eq!(st.tree_blobs, 3);
        assert_eq!(st.packs, saved.packs);
        assert!(saved.packs > 2, "{saved:?}");
        assert!((st.dedup_ratio - 3.0).abs() < 1e-9, "{st:?}");
        assert!(
            st.compression_ratio < 1.0,
            "random data grows by the encryption overhead"
        );
    }

    #[test]
    fn empty_selection_and_missing_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let st = stats(&repo, &[], &Options::default(), &Quiet).unwrap();
        assert_eq!((st.files, st.unique_blobs, st.packs), (0, 0, 0));
        assert_eq!(st.dedup_ratio, 0.0);
        assert!(st.repository_size > 0, "config and key");

        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let ghost = BlobId(crate::repo::id::Id::random());
        let tree = Tree::new(vec![file_of("g", &[(ghost, 5)])]);
        let (root, _) = packer.save_tree(&tree).unwrap();
        packer.flush().unwrap();
        let snap = snapshot_of(root, "2020-01-01T00:00:00Z");
        let err = stats(
            &repo,
            &[(Default::default(), snap)],
            &Options::default(),
            &Quiet,
        )
        .unwrap_err();
        assert!(
            matches!(err, RepoError::MissingBlob(id) if id == ghost),
            "{err}"
        );
    }

    #[test]
    fn a_snapshot_over_its_budget_or_with_an_unloadable_tree_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let leaf = save(Tree::new(vec![file_of("f", &[])]));
        let mut dag = leaf;
        for _ in 0..40 {
            dag = save(Tree::new(vec![dir_of("a", dag), dir_of("b", dag)]));
        }
        let ghost = TreeId(crate::repo::id::Id::hash_of(b"not stored"));
        let broken = save(Tree::new(vec![dir_of("g", ghost)]));
        packer.flush().unwrap();
        let snap = |tree| {
            (
                SnapshotId(crate::repo::id::Id::random()),
                snapshot_of(tree, "2020-01-01T00:00:00Z"),
            )
        };
        let snaps = [snap(leaf), snap(dag), snap(broken)];
        let st = stats(&repo, &snaps, &Options::default(), &Quiet).unwrap();
        assert_eq!(
            (st.snapshots, st.files),
            (1, 1),
            "only the genuine snapshot"
        );
        let skipped: Vec<_> = st.skipped.iter().map(|s| s.snapshot).collect();
        assert_eq!(skipped, vec![snaps[1].0, snaps[2].0]);
        assert!(
            st.skipped[0].reason.contains("1048576 entries"),
            "{:?}",
            st.skipped
        );
        assert!(
            st.skipped[1].reason.contains("cannot be loaded"),
            "{:?}",
            st.skipped
        );
    }
}
