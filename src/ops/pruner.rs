//! Reclaiming space: finds the blobs no snapshot uses, deletes packs that hold nothing else,
//! repacks the used blobs out of packs whose unused share is above a threshold, and
//! rewrites the index files that listed what went away, in an order that a crash at any
//! point leaves every snapshot restorable.
use crate::backend::{BackendError, Kind};
use crate::cancel::Cancel;
use crate::observer::{Counters, Observer, Phase};
use crate::repo::dictionary;
use crate::repo::id::{Id, PackId, SnapshotId};
use crate::repo::indexfile::{self, IndexBatch, PackEntries};
use crate::repo::locked::Locked;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::Snapshot;
use crate::vfs;
use crate::write::repacker::Repacker;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(
        "index files are unreadable ({0}); their packs would look unused. Run `strata repair index` first"
    )]
    DamagedIndex(String),
    #[error(
        "snapshots are unreadable ({0}); what they use is unknown. Remove them with `strata forget ID` or run `strata repair snapshots`"
    )]
    DamagedSnapshots(String),
    #[error("{0}. Run `strata repair snapshots` first")]
    UnreadableTrees(String),
    #[error(
        "{count} blob(s) that snapshots use are in no pack, e.g. {example}. Run `strata repair index`, then `strata repair snapshots`"
    )]
    MissingBlobs { count: usize, example: String },
    #[error("pack {0} holds used blobs but is missing. Run `strata repair index`")]
    MissingPack(String),
}

pub(crate) type Result<T> = std::result::Result<T, PruneError>;

pub struct PruneOptions {
    /// Packs with more than this percentage of unused bytes are repacked.
    pub max_unused_percent: f64,
    pub dry_run: bool,
    /// Stops the prune (with `RepoError::Cancelled`) once cancelled, up to the point where
    /// it starts deleting: from there it finishes, since the new index is then written.
    pub cancel: Cancel,
}

/// What prune found and did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs: usize,
    pub bytes: u64,
    pub used_bytes: u64,
    /// Packs no snapshot uses anything of.
    pub packs_deleted: usize,
    /// Packs that no index file lists (left by interrupted backups).
    pub packs_unindexed: usize,
    pub packs_repacked: usize,
    /// Packs listed by index files but absent (nothing in them was used).
    pub packs_forgotten: usize,
    pub packs_written: usize,
    pub bytes_written: u64,
    pub index_files_removed: usize,
    pub index_files_written: usize,
    /// Bytes of packs removed, less the bytes of the packs written.
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs (below the repack threshold).
    pub unused_bytes_kept: u64,
    /// Dictionaries no indexed blob uses any more, removed (a dry run counts those no
    /// indexed blob uses before pruning).
    pub dictionaries_deleted: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Keep,
    Delete,
    Repack,
    /// Listed but absent: only its index entries go.
    Forget,
}

/// One pack as the plan sees it.
struct PackState {
    /// Size of the pack object, if present.
    size: Option<u64>,
    /// Stored bytes of its blobs according to the index files, if listed.
    listed: Option<u64>,
    used: u64,
}

pub fn prune(
    repo: &Locked<'_, IndexedRepo>,
    opts: &PruneOptions,
    progress: &dyn Observer,
) -> Result<PruneReport> {
    if let Some((name, _)) = repo.damaged_index_files.first() {
        return Err(PruneError::DamagedIndex(name.clone()));
    }
    progress.phase(Phase::Scanning);
    let snapshots = readable_snapshots(repo)?;
    mark_used(repo, &snapshots, &opts.cancel)?;
    let files = index_files(repo)?;
    let states = pack_states(repo, &files)?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        snapshots: snapshots.len(),
        ..Default::default()
    };
    let actions = plan(&states, opts.max_unused_percent, &mut report)?;
    if opts.dry_run {
        let moved: u64 = select(&actions, Action::Repack)
            .iter()
            .map(|p| states[p].used)
            .sum();
        report.bytes_freed = freed(&states, &actions).saturating_sub(moved);
        report.dictionaries_deleted = unused_dictionaries(repo)?.len();
        return Ok(report);
    }
    let to_repack: Vec<PackId> = select(&actions, Action::Repack);
    let repack_bytes = to_repack.iter().map(|p| states[p].size.unwrap_or(0)).sum();
    progress.phase(Phase::Repacking);
    progress.total(Counters::bytes_read(repack_bytes));
    let new_packs = repack(repo, &to_repack, &opts.cancel, progress)?;
    report.packs_written = new_packs.packs;
    report.bytes_written = new_packs.bytes;
    progress.add(Counters {
        bytes_added: report.bytes_written,
        packs: report.packs_written as u64,
        ..Counters::default()
    });
    progress.phase(Phase::Indexing);
    opts.cancel.check().map_err(RepoError::from)?;
    let stale_files = rewrite_index(repo, &files, &actions, new_packs, &mut report)?;
    // Everything still used is now listed by the new index files; from here on only
    // unreferenced objects are removed.
    repo.ensure_valid()?;
    progress.phase(Phase::Removing);
    for name in &stale_files {
        repo.remove(Kind::Index, name)?;
    }
    for (pack, action) in &actions {
        if matches!(action, Action::Delete | Action::Repack) {
            repo.remove(Kind::Pack, &pack.0.to_hex())?;
        }
    }
    report.index_files_removed = stale_files.len();
    report.bytes_freed = freed(&states, &actions).saturating_sub(report.bytes_written);
    repo.sync_index()?;
    // Only now does the index list exactly the blobs that stay: a dictionary none of them
    // uses can go (the repacker kept every copied blob's dictionary id).
    for (name, size) in unused_dictionaries(repo)? {
        repo.remove(Kind::Dictionary, &name)?;
        report.dictionaries_deleted += 1;
        report.bytes_freed += size;
    }
    Ok(report)
}

/// The stored dictionaries (name, size) that no indexed blob uses.
fn unused_dictionaries(repo: &IndexedRepo) -> Result<Vec<(String, u64)>> {
    let used = repo.index().dictionary_use().map_err(RepoError::from)?;
    let listed = repo.backend().list(Kind::Dictionary)?;
    Ok(listed
        .into_iter()
        .filter(|e| {
            Id::from_hex(&e.name).is_some_and(|n| !used.contains_key(&dictionary::id_of(&n)))
        })
        .map(|e| (e.name, e.size))
        .collect())
}

fn readable_snapshots(repo: &IndexedRepo) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (good, bad) = repo.snapshots()?;
    if !bad.is_empty() {
        let names: Vec<String> = bad.iter().map(|(id, _)| id.0.short()).collect();
        return Err(PruneError::DamagedSnapshots(names.join(", ")));
    }
    Ok(good)
}

/// Puts every tree and data blob the snapshots reference into the index's used set.
fn mark_used(
    repo: &IndexedRepo,
    snapshots: &[(SnapshotId, Snapshot)],
    cancel: &Cancel,
) -> Result<()> {
    let index = repo.index();
    index.reset_used().map_err(RepoError::from)?;
    let mut failure: Option<PruneError> = None;
    vfs::for_each_tree(repo, snapshots, cancel, |reached, tree| {
        if failure.is_some() {
            return;
        }
        let marked = match tree {
            Ok(tree) => index.mark_used(&reached.id.blob()).and_then(|_| {
                tree.nodes
                    .iter()
                    .flat_map(|n| n.content())
                    .try_for_each(|c| index.mark_used(&c.id).map(|_| ()))
            }),
            Err(e) => {
                failure = Some(PruneError::UnreadableTrees(format!(
                    "tree {} {}: {e}",
                    reached.id.0.short(),
                    reached.location()
                )));
                Ok(())
            }
        };
        if let Err(e) = marked {
            failure = Some(RepoError::from(e).into());
        }
    })
    .map_err(RepoError::from)?;
    if let Some(e) = failure {
        return Err(e);
    }
    let missing = index.missing_used(1).map_err(RepoError::from)?;
    match missing.first() {
        None => Ok(()),
        Some(id) => Err(PruneError::MissingBlobs {
            count: count_missing(repo)?,
            example: id.0.to_hex(),
        }),
    }
}

fn count_missing(repo: &IndexedRepo) -> Result<usize> {
    Ok(repo
        .index()
        .missing_used(usize::MAX >> 1)
        .map_err(RepoError::from)?
        .len())
}

/// Every index file with the packs it lists and their stored bytes.
fn index_files(repo: &IndexedRepo) -> Result<BTreeMap<String, Vec<(PackId, u64)>>> {
    let mut files = BTreeMap::new();
    for e in repo.backend().list(Kind::Index)? {
        let packs = repo.read_index_file(&e.name)?;
        let summary = packs
            .iter()
            .map(|p| (p.pack, p.blobs.iter().map(|b| b.length as u64).sum()))
            .collect();
        files.insert(e.name, summary);
    }
    Ok(files)
}

fn pack_states(
    repo: &IndexedRepo,
    files: &BTreeMap<String, Vec<(PackId, u64)>>,
) -> Result<HashMap<PackId, PackState>> {
    let mut states: HashMap<PackId, PackState> = HashMap::new();
    let blank = || PackState {
        size: None,
        listed: None,
        used: 0,
    };
    for e in repo.backend().list(Kind::Pack)? {
        if let Some(id) = Id::from_hex(&e.name) {
            states.entry(PackId(id)).or_insert_with(blank).size = Some(e.size);
        }
    }
    for (pack, bytes) in files.values().flatten() {
        states.entry(*pack).or_insert_with(blank).listed = Some(*bytes);
    }
    let used = repo
        .index()
        .used_bytes_per_pack()
        .map_err(RepoError::from)?;
    for (pack, bytes) in used {
        states.entry(pack).or_insert_with(blank).used = bytes;
    }
    Ok(states)
}

fn plan(
    states: &HashMap<PackId, PackState>,
    max_unused_percent: f64,
    report: &mut PruneReport,
) -> Result<HashMap<PackId, Action>> {
    let mut actions = HashMap::new();
    for (pack, s) in states {
        let action = match (s.size, s.listed) {
            (None, _) if s.used > 0 => return Err(PruneError::MissingPack(pack.0.to_hex())),
            (None, _) => Action::Forget,
            (Some(_), None) => Action::Delete,
            (Some(_), Some(_)) if s.used == 0 => Action::Delete,
            (Some(_), Some(listed)) => {
                let unused = listed.saturating_sub(s.used);
                match unused as f64 * 100.0 > max_unused_percent * listed as f64 {
                    true => Action::Repack,
                    false => Action::Keep,
                }
            }
        };
        tally(report, s, action);
        actions.insert(*pack, action);
    }
    Ok(actions)
}

fn tally(report: &mut PruneReport, s: &PackState, action: Action) {
    report.used_bytes += s.used;
    if let Some(size) = s.size {
        report.packs += 1;
        report.bytes += size;
    }
    match action {
        Action::Keep => report.unused_bytes_kept += s.listed.unwrap_or(0).saturating_sub(s.used),
        Action::Delete if s.listed.is_none() => report.packs_unindexed += 1,
        Action::Delete => report.packs_deleted += 1,
        Action::Repack => report.packs_repacked += 1,
        Action::Forget => report.packs_forgotten += 1,
    }
}

fn select(actions: &HashMap<PackId, Action>, which: Action) -> Vec<PackId> {
    let mut packs: Vec<PackId> = actions
        .iter()
        .filter(|(_, a)| **a == which)
        .map(|(p, _)| *p)
        .collect();
    packs.sort();
    packs
}

fn freed(states: &HashMap<PackId, PackState>, actions: &HashMap<PackId, Action>) -> u64 {
    actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Delete | Action::Repack))
        .map(|(p, _)| states[p].size.unwrap_or(0))
        .sum()
}

/// Copies the used blobs of `packs` (verified, still sealed) into new packs; returns their
/// index entries and sizes, set aside on disk.
fn repack(
    repo: &Locked<'_, IndexedRepo>,
    packs: &[PackId],
    cancel: &Cancel,
    progress: &dyn Observer,
) -> Result<Written> {
    let mut repacker = Repacker::new(repo);
    let mut written = Written::new()?;
    for pack in packs {
        cancel.check().map_err(RepoError::from)?;
        let name = pack.0.to_hex();
        progress.item(&name);
        let bytes = repo.backend().get(Kind::Pack, &name)?;
        for loc in repo.index().used_in_pack(pack).map_err(RepoError::from)? {
            repacker.copy(&name, loc.format, &bytes, &loc.entry)?;
        }
        progress.add(Counters::bytes_read(bytes.len() as u64));
        for (listing, size) in repacker.take_written() {
            written.push(repo, &listing, size)?;
        }
    }
    for (listing, size) in repacker.finish()? {
        written.push(repo, &listing, size)?;
    }
    Ok(written)
}

/// The listings of the packs prune wrote, kept in a temporary file until the new index
/// files are written (each sealed as a one-pack index file, after its length as 4 bytes):
/// a prune that repacks most of a large repository would otherwise hold an index entry
/// (about 60 bytes) per copied blob. The file is anonymous and goes with the process.
struct Written {
    file: std::io::BufWriter<std::fs::File>,
    packs: usize,
    bytes: u64,
}

impl Written {
    fn new() -> Result<Written> {
        let file = tempfile::tempfile().map_err(spill_error)?;
        Ok(Written {
            file: std::io::BufWriter::new(file),
            packs: 0,
            bytes: 0,
        })
    }

    /// Sets aside the listing of a written pack of `size` bytes.
    fn push(&mut self, repo: &IndexedRepo, listing: &PackEntries, size: u64) -> Result<()> {
        use std::io::Write;
        let listing = std::slice::from_ref(listing);
        let sealed = indexfile::encode(repo.key(), SPILL_VERSION, listing);
        let len = u32::try_from(sealed.len()).expect("a pack's listing is under 4 GiB");
        (self.file.write_all(&len.to_le_bytes()))
            .and_then(|()| self.file.write_all(&sealed))
            .map_err(spill_error)?;
        self.packs += 1;
        self.bytes += size;
        Ok(())
    }

    /// Calls `f` with each listing set aside, in the order they were pushed.
    fn for_each(
        self,
        repo: &IndexedRepo,
        mut f: impl FnMut(PackEntries) -> Result<()>,
    ) -> Result<()> {
        use std::io::{Read, Seek};
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| spill_error(e.into_error()))?;
        file.rewind().map_err(spill_error)?;
        let mut file = std::io::BufReader::new(file);
        for _ in 0..self.packs {
            let mut len = [0u8; 4];
            file.read_exact(&mut len).map_err(spill_error)?;
            let mut sealed = vec![0u8; u32::from_le_bytes(len) as usize];
            file.read_exact(&mut sealed).map_err(spill_error)?;
            let packs = indexfile::decode(repo.key(), SPILL_VERSION, &sealed)
                .map_err(|e| spill_error(std::io::Error::other(e.to_string())))?;
            packs.into_iter().try_for_each(&mut f)?;
        }
        Ok(())
    }
}

/// The index file format the spilled listings are sealed in, whatever the repository's:
/// version 3 records every pack's format and length, so they come back exactly.
const SPILL_VERSION: u32 = 3;

fn spill_error(source: std::io::Error) -> PruneError {
    PruneError::Backend(BackendError::Io {
        op: "keep the listings of written packs in a temporary file",
        path: "(temporary)".into(),
        source,
    })
}

/// Writes new index files for the kept packs of every index file that lists a pack going
/// away, plus the new packs; returns the names of the index files they replace.
fn rewrite_index(
    repo: &Locked<'_, IndexedRepo>,
    files: &BTreeMap<String, Vec<(PackId, u64)>>,
    actions: &HashMap<PackId, Action>,
    new_packs: Written,
    report: &mut PruneReport,
) -> Result<Vec<String>> {
    let stale: Vec<String> = files
        .iter()
        .filter(|(_, packs)| packs.iter().any(|(p, _)| actions[p] != Action::Keep))
        .map(|(name, _)| name.clone())
        .collect();
    let mut write = |packs: Vec<PackEntries>| -> Result<()> {
        if !packs.is_empty() {
            repo.save_index_file(&packs)?;
            report.index_files_written += 1;
        }
        Ok(())
    };
    let mut batch = IndexBatch::default();
    new_packs.for_each(repo, |p| match batch.push(p) {
        Some(full) => write(full),
        None => Ok(()),
    })?;
    let mut carried = HashSet::new();
    for name in &stale {
        for entries in repo.read_index_file(name)? {
            if actions[&entries.pack] != Action::Keep || !carried.insert(entries.pack) {
                continue;
            }
            if let Some(full) = batch.push(entries) {
                write(full)?;
            }
        }
    }
    write(batch.take())?;
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Quiet;
    use crate::ops::checker::tests::snapshot_of;
    use crate::ops::checker::{self, ReadData};
    use crate::repo::blob::BlobType;
    use crate::repo::id::BlobId;
    use crate::repo::repository::Repository;
    use crate::repo::tree::Tree;
    use crate::repo::tree::tests::file_of;
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};
    use std::path::Path;
    use std::sync::Arc;

    struct Fixture {
        dir: tempfile::TempDir,
        kept: Vec<BlobId>,
        dropped: Vec<BlobId>,
        dropped_snapshot: SnapshotId,
    }

    /// Two snapshots: one keeps blobs stored interleaved with the other's (so packs are
    /// shared), and the other, which also has packs of its own, is then removed.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for i in 0..24u32 {
            let (id, _) = packer.save(BlobType::Data, &random_blob(i)).unwrap();
            match i < 12 && i % 2 == 0 {
                true => kept.push(id),
                false => dropped.push(id),
            }
        }
        let snap = |ids: &[BlobId]| {
            let files = ids
                .iter()
                .enumerate()
                .map(|(i, id)| file_of(&format!("f{i}"), &[(*id, 1000)]))
                .collect();
            let (tree, _) = packer.save_tree(&Tree::new(files)).unwrap();
            tree
        };
        let (a, b) = (snap(&kept), snap(&dropped));
        packer.flush().unwrap();
        lock.save_snapshot(&snapshot_of(a)).unwrap();
        let dropped_snapshot = lock.save_snapshot(&snapshot_of(b)).unwrap();
        Fixture {
            dir,
            kept,
            dropped,
            dropped_snapshot,
        }
    }

    fn reopen(dir: &Path) -> IndexedRepo {
        let backend = Arc::new(crate::backend::local::LocalBackend::new(dir.join("repo")));
        let repo = Repository::open(backend, b"pw").unwrap();
        repo.open_index(None).unwrap()
    }

    fn run(dir: &Path, max_unused_percent: f64, dry_run: bool) -> Result<PruneReport> {
        let opts = PruneOptions {
            max_unused_percent,
            dry_run,
            cancel: Cancel::default(),
        };
        prune(&crate::repo::locked::exclusive(&reopen(dir)), &opts, &Quiet)
    }

    fn forget(f: &Fixture) {
        let repo = reopen(f.dir.path());
        let name = f.dropped_snapshot.0.to_hex();
        repo.backend().remove(Kind::Snapshot, &name).unwrap();
    }

    fn listing(dir: &Path) -> Vec<String> {
        let repo = reopen(dir);
        [Kind::Pack, Kind::Index]
            .iter()
            .flat_map(|k| repo.backend().list(*k).unwrap())
            .map(|e| e.name)
            .collect()
    }

    #[test]
    fn unused_packs_go_and_shared_packs_are_repacked() {
        let f = fixture();
        forget(&f);
        let r = run(f.dir.path(), 10.0, false).unwrap();
        assert!(r.packs_deleted > 0 && r.packs_repacked > 0, "{r:?}");
        assert!(r.bytes_freed > 0 && r.packs_written > 0, "{r:?}");
        let repo = reopen(f.dir.path());
        for id in &f.kept {
            assert_eq!(repo.read_blob(id).unwrap().len(), 1000);
        }
        for id in &f.dropped {
            assert!(
                !repo.index().contains(id).unwrap(),
                "dropped blob still indexed"
            );
        }
        let report = checker::check(&repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(report.unused_blobs, 0);
        let again = run(f.dir.path(), 10.0, false).unwrap();
        assert_eq!((again.packs_deleted, again.packs_repacked), (0, 0));
    }

    #[test]
    fn a_cancelled_prune_deletes_nothing() {
        let f = fixture();
        forget(&f);
        let before = listing(f.dir.path());
        let cancel = Cancel::default();
        cancel.cancel();
        let opts = PruneOptions {
            max_unused_percent: 10.0,
            dry_run: false,
            cancel,
        };
        let repo = reopen(f.dir.path());
        let err = prune(&crate::repo::locked::exclusive(&repo), &opts, &Quiet).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        assert_eq!(
            listing(f.dir.path()),
            before,
            "no pack or index file removed"
        );
        let repo = reopen(f.dir.path());
        let report = checker::check(&repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        assert!(report.is_ok(), "{:?}", report.errors);
    }

    #[test]
    fn written_listings_come_back_from_disk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::write::packer::tests::indexed_repo(dir.path(), 4096);
        let entry = |n: u32| crate::repo::pack::BlobEntry {
            ty: if n.is_multiple_of(2) {
                BlobType::Data
            } else {
                BlobType::Tree
            },
            id: BlobId(Id::hash_of(&n.to_le_bytes())),
            offset: n * 10,
            length: 10,
            raw_length: 9 + n,
            compression: crate::repo::blob::Compression::Dictionary(0x0100_0000 + n),
        };
        let listing = |n: u8, blobs: u32, format| PackEntries {
            pack: PackId(Id::hash_of(&[n])),
            format,
            length: Some(1000 + u64::from(n)),
            blobs: (0..blobs).map(entry).collect(),
        };
        let legacy = crate::repo::pack::PackFormat::Legacy;
        let v3 = crate::repo::pack::PackFormat::V3;
        let listings = [
            listing(1, 3, v3),
            listing(2, 0, legacy),
            listing(3, 60_000, v3),
        ];
        let mut written = Written::new().unwrap();
        for (i, l) in listings.iter().enumerate() {
            written.push(&repo, l, 100 + i as u64).unwrap();
        }
        assert_eq!((written.packs, written.bytes), (3, 303));
        let mut back = Vec::new();
        written
            .for_each(&repo, |p| {
                back.push(p);
                Ok(())
            })
            .unwrap();
        assert_eq!(back, listings);
    }

    #[test]
    fn packs_below_the_threshold_are_kept() {
        let f = fixture();
        forget(&f);
        let r = run(f.dir.path(), 100.0, false).unwrap();
        assert_eq!(r.packs_repacked, 0);
        assert!(r.packs_deleted > 0 && r.unused_bytes_kept > 0, "{r:?}");
        let repo = reopen(f.dir.path());
        for id in &f.kept {
            repo.read_blob(id).unwrap();
        }
    }

    #[test]
    fn dry_run_and_a_clean_repository_change_nothing() {
        let f = fixture();
        let before = listing(f.dir.path());
        let clean = run(f.dir.path(), 0.0, false).unwrap();
        assert_eq!(clean.bytes_freed, 0);
        assert_eq!(listing(f.dir.path()), before);
        forget(&f);
        let r = run(f.dir.path(), 0.0, true).unwrap();
        assert!(r.dry_run && r.packs_deleted > 0);
        assert_eq!(listing(f.dir.path()), before);
    }

    #[test]
    fn packs_no_index_file_lists_are_deleted() {
        let f = fixture();
        let repo = reopen(f.dir.path());
        let format = crate::repo::pack::PackFormat::for_version(repo.config().version);
        let sealed = crate::repo::blob::seal(
            repo.key(),
            format,
            BlobType::Data,
            repo.key().blob_id(b"x"),
            b"x",
            3,
        );
        let mut orphan = crate::repo::pack::PackBuilder::new(format);
        orphan.add(sealed);
        let pack = orphan.finish(repo.key());
        let name = pack.listing.pack.0.to_hex();
        repo.backend().put(Kind::Pack, &name, &pack.bytes).unwrap();
        let r = run(f.dir.path(), 10.0, false).unwrap();
        assert_eq!((r.packs_unindexed, r.packs_deleted), (1, 0), "{r:?}");
        let report = checker::check(
            &reopen(f.dir.path()),
            ReadData::None,
            &Cancel::default(),
            &Quiet,
        );
        assert!(report.unwrap().unused_packs.is_empty());
    }

    #[test]
    fn a_missing_used_pack_stops_prune_before_it_deletes_anything() {
        let f = fixture();
        forget(&f);
        let repo = reopen(f.dir.path());
        let pack = repo.locate(&f.kept[0]).unwrap().pack;
        repo.backend().remove(Kind::Pack, &pack.0.to_hex()).unwrap();
        let before = listing(f.dir.path());
        let err = run(f.dir.path(), 10.0, false).unwrap_err();
        assert!(matches!(err, PruneError::MissingPack(_)), "{err}");
        assert_eq!(listing(f.dir.path()), before);
    }
}
