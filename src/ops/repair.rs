//! Repairs: rebuilding the index from the pack headers alone, and salvaging snapshots that
//! reference missing or damaged data by writing copies with the affected files cut out.
use crate::backend::{Entry, Kind};
use crate::cancel::Cancel;
use crate::observer::{Counters, EntryError, EntryErrorKind, Observer, Phase};
use crate::repo::id::{BlobId, Id, PackId, SnapshotId, TreeId};
use crate::repo::indexfile::{IndexBatch, PackEntries};
use crate::repo::locked::Locked;
use crate::repo::pack::{self, BlobEntry, PackFormat, TRAILER_LEN};
use crate::repo::repository::{IndexedRepo, RepoError, Result};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::vfs::child_path;
use crate::walk::{self, OverBudget};
use crate::write::packer::Packer;
use crate::write::repacker::Repacker;
use crate::write::rewrite::{self, Opened, Rewriter};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Packs whose headers are read in parallel at a time.
const HEADER_BATCH: usize = 64;

#[derive(Clone, Debug, Default)]
pub struct IndexRepairOptions {
    /// Verify every blob of every pack, not only its header.
    pub read_data: bool,
    /// Stops the repair (with `RepoError::Cancelled`) once cancelled, up to the point where
    /// the new index is complete; nothing is removed before that point.
    pub cancel: Cancel,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IndexRepair {
    pub packs: usize,
    pub blobs: usize,
    /// Packs whose header is unreadable (named by pack id), with the reason. Their blobs
    /// that old index files still list are verified and copied into new packs; the rest
    /// are lost.
    pub unreadable_packs: Vec<EntryError>,
    /// Blobs left out (named by blob id) because their bytes failed verification.
    pub damaged_blobs: Vec<EntryError>,
    /// Damaged packs whose intact blobs were copied into new packs, then removed.
    pub packs_rewritten: Vec<String>,
    pub index_files_written: usize,
    pub index_files_removed: usize,
}

/// Rebuilds the index from the pack headers: writes new index files listing every readable
/// pack, then removes the old ones. A pack whose header is unreadable, or (with
/// `read_data`, which verifies every blob) that holds damaged blobs, has its intact blobs
/// copied into a new pack and is removed; the damaged blobs are left out of the index, so
/// `repair snapshots` cuts the files that need them. Needs an exclusive lock.
pub fn repair_index(
    repo: &Locked<'_, IndexedRepo>,
    opts: &IndexRepairOptions,
    progress: &dyn Observer,
) -> Result<IndexRepair> {
    let old_files: Vec<String> = (repo.backend().list(Kind::Index)?.into_iter())
        .map(|e| e.name)
        .collect();
    let packs = repo.backend().list(Kind::Pack)?;
    progress.phase(Phase::Reading);
    progress.total(Counters {
        bytes_read: packs.iter().map(|e| e.size).sum(),
        packs: packs.len() as u64,
        ..Counters::default()
    });
    let mut report = IndexRepair::default();
    let mut to_index = IndexBatch::default();
    let mut unreadable = Vec::new();
    let mut rewrite = Vec::new();
    for batch in packs.chunks(HEADER_BATCH) {
        opts.cancel.check()?;
        let read: Vec<_> = batch
            .par_iter()
            .map(|e| (e, read_entries(repo, e, opts.read_data)))
            .collect();
        for (entry, result) in read {
            progress.add(Counters {
                bytes_read: entry.size,
                packs: u64::from(result.is_ok()),
                ..Counters::default()
            });
            match result {
                Ok((listing, damaged)) if damaged.is_empty() => {
                    if let Some(full) = to_index.push(listing) {
                        write_index(repo, full, &mut report)?;
                    }
                }
                Ok((listing, damaged)) => {
                    damaged.iter().for_each(|e| progress.error(e));
                    report.damaged_blobs.extend(damaged);
                    rewrite.push(listing);
                }
                Err(reason) => {
                    let e = EntryError::new(EntryErrorKind::Read, &entry.name, reason);
                    progress.error(&e);
                    unreadable.push(e);
                }
            }
        }
    }
    progress.phase(Phase::Indexing);
    rewrite.extend(salvage_from_old_index(repo, &old_files, &unreadable)?);
    for listing in rewrite_packs(repo, &rewrite, &opts.cancel, &mut report, progress)? {
        if let Some(full) = to_index.push(listing) {
            write_index(repo, full, &mut report)?;
        }
    }
    write_index(repo, to_index.take(), &mut report)?;
    opts.cancel.check()?;
    report.unreadable_packs = unreadable;
    report.packs = packs.len() - report.unreadable_packs.len();
    repo.ensure_valid()?;
    progress.phase(Phase::Removing);
    for name in &old_files {
        repo.remove(Kind::Index, name)?;
    }
    for p in &rewrite {
        repo.remove(Kind::Pack, &p.pack.0.to_hex())?;
    }
    report.index_files_removed = old_files.len();
    repo.index().clear()?;
    repo.sync_index()?;
    Ok(report)
}

/// Copies the intact blobs of damaged packs into new packs (the damaged packs are removed
/// once the new index is written); returns the new packs' entries.
fn rewrite_packs(
    repo: &Locked<'_, IndexedRepo>,
    damaged: &[PackEntries],
    cancel: &Cancel,
    report: &mut IndexRepair,
    progress: &dyn Observer,
) -> Result<Vec<PackEntries>> {
    let mut repacker = Repacker::new(repo);
    for p in damaged {
        cancel.check()?;
        let name = p.pack.0.to_hex();
        let bytes = repo.backend().get(Kind::Pack, &name)?;
        for e in &p.blobs {
            match repo.verified(p.format, &bytes, e) {
                Ok(_) => repacker.copy(&name, p.format, &bytes, e)?,
                Err(reason) => {
                    let e = EntryError::new(EntryErrorKind::Verify, e.id.0.to_hex(), reason);
                    progress.error(&e);
                    report.damaged_blobs.push(e);
                }
            }
        }
        report.packs_rewritten.push(name);
    }
    Ok(repacker.finish()?.into_iter().map(|(e, _)| e).collect())
}

/// Writes an index file for `packs` (none for no packs), counting it in `report`.
fn write_index(
    repo: &Locked<'_, IndexedRepo>,
    packs: Vec<PackEntries>,
    report: &mut IndexRepair,
) -> Result<()> {
    if !packs.is_empty() {
        repo.save_index_file(&packs)?;
        report.index_files_written += 1;
        report.blobs += packs.iter().map(|p| p.blobs.len()).sum::<usize>();
    }
    Ok(())
}

type PackRead = (PackEntries, Vec<EntryError>);

/// The entries of one pack from its header; with `verify`, only those whose bytes are
/// intact, and the damaged ones with the reason.
fn read_entries(
    repo: &IndexedRepo,
    e: &Entry,
    verify: bool,
) -> std::result::Result<PackRead, String> {
    let id = Id::from_hex(&e.name).ok_or("not a pack name")?;
    let (format, entries) = read_header(repo, e).map_err(|e| e.to_string())?;
    let listing = |blobs| PackEntries {
        pack: PackId(id),
        format,
        length: Some(e.size),
        blobs,
    };
    if !verify {
        return Ok((listing(entries), Vec::new()));
    }
    let bytes = repo
        .backend()
        .get(Kind::Pack, &e.name)
        .map_err(|e| e.to_string())?;
    let (good, bad): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .map(|b| (b, repo.verified(format, &bytes, &b).map(|_| ())))
        .partition(|(_, r)| r.is_ok());
    let damaged = bad
        .into_iter()
        .map(|(b, r)| EntryError::new(EntryErrorKind::Verify, b.id.0.to_hex(), r.unwrap_err()))
        .collect();
    Ok((listing(good.into_iter().map(|(b, _)| b).collect()), damaged))
}

/// Reads only a pack's trailer and header.
fn read_header(repo: &IndexedRepo, e: &Entry) -> Result<(PackFormat, Vec<BlobEntry>)> {
    let b = repo.backend();
    let bad = |reason: String| RepoError::Damaged {
        kind: Kind::Pack,
        name: e.name.clone(),
        reason,
    };
    if e.size < TRAILER_LEN as u64 {
        return Err(bad("too short to hold a trailer".into()));
    }
    let trailer = b.get_range(
        Kind::Pack,
        &e.name,
        e.size - TRAILER_LEN as u64,
        TRAILER_LEN as u64,
    )?;
    let (format, hlen) =
        pack::header_length(&trailer, repo.config().version).map_err(|x| bad(x.to_string()))?;
    let hlen = hlen as u64;
    let data_len = e
        .size
        .checked_sub(TRAILER_LEN as u64 + hlen)
        .ok_or_else(|| bad(format!("header length {hlen} is impossible")))?;
    let header = b.get_range(Kind::Pack, &e.name, data_len, hlen)?;
    let entries = pack::decode_header(repo.key(), format, &header, data_len)
        .map_err(|x| bad(x.to_string()))?;
    Ok((format, entries))
}

/// Entries that readable old index files list for packs whose header is unreadable.
fn salvage_from_old_index(
    repo: &IndexedRepo,
    old_files: &[String],
    unreadable: &[EntryError],
) -> Result<Vec<PackEntries>> {
    let wanted: HashSet<&str> = unreadable.iter().map(|e| e.path.as_str()).collect();
    let mut found: HashMap<PackId, PackEntries> = HashMap::new();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    for name in old_files {
        let Ok(packs) = repo.read_index_file(name) else {
            continue;
        };
        for p in packs
            .into_iter()
            .filter(|p| wanted.contains(p.pack.0.to_hex().as_str()))
        {
            found.entry(p.pack).or_insert(p);
        }
    }
    Ok(found.into_values().collect())
}

/// What `repair snapshots` did for one snapshot that needed it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SalvagedSnapshot {
    pub original: SnapshotId,
    /// The repaired copy (None when nothing could be kept, or on a dry run).
    pub repaired: Option<SnapshotId>,
    /// Paths cut out (a directory stands for everything below it), with the reason.
    pub lost: Vec<EntryError>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotRepair {
    pub snapshots_checked: usize,
    pub salvaged: Vec<SalvagedSnapshot>,
    /// Snapshot objects that cannot be read at all (named by snapshot id): nothing in them
    /// can be salvaged.
    pub unreadable: Vec<EntryError>,
    pub originals_removed: usize,
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotRepairOptions {
    /// Verify every referenced data blob, not only that the index lists it.
    pub read_data: bool,
    /// Remove each original once its repaired copy is written, and every snapshot object
    /// that cannot be read at all.
    pub forget: bool,
    pub dry_run: bool,
    /// Stops the repair (with `RepoError::Cancelled`) once cancelled, before the first
    /// repaired snapshot is written.
    pub cancel: Cancel,
}

/// Writes, for every snapshot that references missing or damaged blobs, a copy with the
/// affected files and directories cut out, tagged `repaired`. Trees of any depth are
/// rewritten; a snapshot whose trees expand to more entries than it records (a forged tree
/// DAG) stops the repair with an error.
pub fn repair_snapshots(
    repo: &Locked<'_, IndexedRepo>,
    opts: &SnapshotRepairOptions,
    progress: &dyn Observer,
) -> Result<SnapshotRepair> {
    let (snapshots, bad) = repo.snapshots()?;
    progress.phase(Phase::Scanning);
    let packer = Packer::new(repo, opts.dry_run).observed_by(progress);
    let mut salvager = Salvager {
        repo,
        packer: &packer,
        read_data: opts.read_data,
        trees: HashMap::new(),
        blobs: HashMap::new(),
    };
    let mut report = SnapshotRepair {
        snapshots_checked: snapshots.len(),
        unreadable: bad
            .iter()
            .map(|(id, e)| EntryError::new(EntryErrorKind::Read, id.0.to_hex(), e))
            .collect(),
        ..Default::default()
    };
    let mut repaired = Vec::new();
    for (id, snap) in &snapshots {
        opts.cancel.check()?;
        progress.item(&id.0.short());
        let (tree, lost) = salvager.root(*id, snap)?;
        lost.iter().for_each(|e| progress.error(e));
        if lost.is_empty() {
            continue;
        }
        repaired.push((*id, snap.clone(), tree, lost));
    }
    packer.flush()?;
    opts.cancel.check()?;
    progress.phase(Phase::Writing);
    for (id, snap, tree, lost) in repaired {
        let copy = match (tree, opts.dry_run) {
            (Some(tree), false) => Some(repo.save_snapshot(&repaired_copy(&snap, id, tree))?),
            _ => None,
        };
        if opts.forget && !opts.dry_run {
            repo.remove_snapshot(id)?;
            report.originals_removed += 1;
        }
        report.salvaged.push(SalvagedSnapshot {
            original: id,
            repaired: copy,
            lost,
        });
    }
    if opts.forget && !opts.dry_run {
        for (id, _) in &bad {
            repo.remove_snapshot(*id)?;
            report.originals_removed += 1;
        }
    }
    Ok(report)
}

fn repaired_copy(snap: &Snapshot, original: SnapshotId, tree: TreeId) -> Snapshot {
    let mut copy = snap.clone();
    copy.tree = tree;
    copy.parent = Some(original);
    if !copy.has_tag("repaired") {
        copy.tags.push("repaired".into());
    }
    copy
}

/// A rewritten tree: its new id (None: unreadable, cut) and the paths cut below it.
type Rewritten = (Option<TreeId>, Vec<EntryError>);

/// An entry of a rewritten tree that was cut, or that has cuts below it; each with its name
/// as a path segment (`/name`).
#[derive(Clone, Debug)]
enum Below {
    /// Cut, for this reason.
    Cut(String, String),
    /// A directory with cuts inside: its tree (before the rewrite) says which.
    Inside(String, TreeId),
}

/// What rewriting a distinct tree did: its new id or why it was cut (unreadable), its
/// entries that were cut or have cuts below them (in name order), and how many entries it
/// expands to (everywhere each subtree appears, saturating).
#[derive(Clone, Debug)]
struct Done {
    id: std::result::Result<TreeId, String>,
    below: Vec<Below>,
    entries: u64,
}

impl Done {
    fn cut(why: String) -> Done {
        Done {
            id: Err(why),
            below: Vec::new(),
            entries: 0,
        }
    }
}

/// A tree being rewritten: the entries kept, those cut or with cuts below, and its entries
/// counted so far.
struct Cuts {
    kept: Vec<Node>,
    below: Vec<Below>,
    entries: u64,
}

impl Cuts {
    fn new(nodes: usize) -> Cuts {
        Cuts {
            kept: Vec::with_capacity(nodes),
            below: Vec::new(),
            entries: nodes as u64,
        }
    }

    /// A file (symlink, …), kept unless `problem` says a blob it needs is missing or damaged.
    fn add_leaf(&mut self, node: Node, problem: Option<String>) {
        match problem {
            None => self.kept.push(node),
            Some(why) => self.below.push(Below::Cut(child_path("", &node.name), why)),
        }
    }

    /// The directory `node`, now that its subtree is rewritten.
    fn add_subtree(&mut self, mut node: Node, done: &Done, bound: Bound) -> Result<()> {
        self.entries = self.entries.saturating_add(done.entries);
        bound.check(self.entries)?;
        let name = child_path("", &node.name);
        let new_id = match &done.id {
            Ok(new_id) => *new_id,
            Err(why) => {
                self.below.push(Below::Cut(name, why.clone()));
                return Ok(());
            }
        };
        if let NodeKind::Dir { subtree } = &mut node.kind {
            if !done.below.is_empty() {
                self.below.push(Below::Inside(name, *subtree));
            }
            *subtree = new_id;
        }
        self.kept.push(node);
        Ok(())
    }
}

/// The entry budget of the snapshot being repaired.
#[derive(Clone, Copy)]
struct Bound {
    snapshot: SnapshotId,
    limit: u64,
}

impl Bound {
    /// An error once `entries` exceed the budget: the snapshot's trees are forged.
    fn check(self, entries: u64) -> Result<()> {
        match entries > self.limit {
            false => Ok(()),
            true => Err(RepoError::Damaged {
                kind: Kind::Snapshot,
                name: self.snapshot.0.to_hex(),
                reason: OverBudget { limit: self.limit }.to_string(),
            }),
        }
    }
}

struct Salvager<'a> {
    repo: &'a IndexedRepo,
    packer: &'a Packer<'a>,
    read_data: bool,
    /// Trees already rewritten, so shared subtrees are handled once.
    trees: HashMap<TreeId, Done>,
    /// Data blobs already judged: None = intact, Some(reason) = missing or damaged.
    blobs: HashMap<BlobId, Option<String>>,
}

impl Salvager<'_> {
    /// The rewritten root tree of the snapshot `id` and the paths cut below it; an error when
    /// its trees expand to more entries than the snapshot records.
    fn root(&mut self, id: SnapshotId, snap: &Snapshot) -> Result<Rewritten> {
        let bound = Bound {
            snapshot: id,
            limit: walk::entry_budget(snap),
        };
        let mut cutter = Cutter {
            repo: self.repo,
            packer: self.packer,
            read_data: self.read_data,
            blobs: &mut self.blobs,
            bound,
        };
        let done = rewrite::rewrite(&mut cutter, snap.tree, &mut self.trees)?;
        bound.check(done.entries)?;
        match done.id {
            Err(why) => Ok((
                None,
                vec![lost_entry(
                    "/".into(),
                    format!("the root tree is unreadable: {why}"),
                )],
            )),
            Ok(new_id) => Ok((Some(new_id), self.lost_below(&done.below))),
        }
    }

    /// The paths cut below a tree whose entries `below` lists, depth first in name order,
    /// each with the reason.
    fn lost_below(&self, below: &[Below]) -> Vec<EntryError> {
        let mut lost = Vec::new();
        let mut path = String::new();
        let mut stack = vec![(0, below.iter())];
        while let Some((len, items)) = stack.last_mut() {
            path.truncate(*len);
            match items.next() {
                None => {
                    stack.pop();
                }
                Some(Below::Cut(name, why)) => lost.push(lost_entry(format!("{path}{name}"), why)),
                Some(Below::Inside(name, tree)) => {
                    let len = path.len();
                    path.push_str(name);
                    stack.push((len + name.len(), self.trees[tree].below.iter()));
                }
            }
        }
        lost
    }
}

/// A path cut out of a snapshot because data it needs cannot be read.
fn lost_entry(path: String, why: impl ToString) -> EntryError {
    EntryError::new(EntryErrorKind::Read, path, why)
}

/// Rewrites the trees of one snapshot without the files whose blobs are missing or damaged
/// and the directories whose trees are unreadable (or contain themselves), within the
/// snapshot's entry budget.
struct Cutter<'s> {
    repo: &'s IndexedRepo,
    packer: &'s Packer<'s>,
    read_data: bool,
    blobs: &'s mut HashMap<BlobId, Option<String>>,
    bound: Bound,
}

impl Rewriter for Cutter<'_> {
    type Frame = Cuts;
    type Done = Done;
    type Error = RepoError;

    fn open(&mut self, id: TreeId) -> Result<Opened<Cuts, Done>> {
        match self.repo.load_tree(&id) {
            Err(e) => Ok(Opened::Done(Done::cut(e.to_string()))),
            Ok(tree) => {
                self.bound.check(tree.nodes.len() as u64)?;
                Ok(Opened::Tree(Cuts::new(tree.nodes.len()), tree.nodes))
            }
        }
    }

    fn cycle(&mut self, _id: TreeId) -> Result<Done> {
        Ok(Done::cut("tree cycle".into()))
    }

    fn leaf(&mut self, cuts: &mut Cuts, node: Node) -> Result<()> {
        let problem = (node.content().iter()).find_map(|c| self.blob_problem(&c.id));
        cuts.add_leaf(node, problem);
        Ok(())
    }

    fn subtree(&mut self, cuts: &mut Cuts, node: Node, done: &Done) -> Result<()> {
        cuts.add_subtree(node, done, self.bound)
    }

    /// A tree whose entries are all judged: written anew when something below it was cut.
    fn finish(&mut self, id: TreeId, cuts: Cuts) -> Result<Done> {
        let id = match cuts.below.is_empty() {
            true => id,
            false => self.packer.save_tree(&Tree::new(cuts.kept))?.0,
        };
        Ok(Done {
            id: Ok(id),
            below: cuts.below,
            entries: cuts.entries,
        })
    }
}

impl Cutter<'_> {
    fn blob_problem(&mut self, id: &BlobId) -> Option<String> {
        if let Some(verdict) = self.blobs.get(id) {
            return verdict.clone();
        }
        let verdict = match self.read_data {
            true => self.repo.read_blob(id).err().map(|e| e.to_string()),
            false => self.repo.locate(id).err().map(|e| e.to_string()),
        };
        self.blobs.insert(*id, verdict.clone());
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Quiet;
    use crate::ops::checker::tests::snapshot_of;
    use crate::ops::checker::{self, ReadData};
    use crate::repo::blob::BlobType;
    use crate::repo::repository::Repository;
    use crate::repo::tree::tests::{dir_of, file_of};
    use crate::write::packer::tests::{indexed_repo, random_blob};
    use std::path::Path;
    use std::sync::Arc;

    /// One snapshot: `/sub/f0..f7` (one 1000-byte blob each, about four per pack) and `/g`.
    fn fixture() -> (tempfile::TempDir, Vec<BlobId>) {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let mut ids = Vec::new();
        let mut files = Vec::new();
        for i in 0..8u32 {
            let (id, _) = packer.save(BlobType::Data, &random_blob(i)).unwrap();
            ids.push(id);
            files.push(file_of(&format!("f{i}"), &[(id, 1000)]));
        }
        let (sub, _) = packer.save_tree(&Tree::new(files)).unwrap();
        packer.flush().unwrap(); // the subtree gets a pack of its own
        let (g, _) = packer.save(BlobType::Data, &random_blob(99)).unwrap();
        let root = Tree::new(vec![dir_of("sub", sub), file_of("g", &[(g, 1000)])]);
        let (root, _) = packer.save_tree(&root).unwrap();
        packer.flush().unwrap();
        lock.save_snapshot(&snapshot_of(root)).unwrap();
        ids.push(g);
        (dir, ids)
    }

    fn reopen(dir: &Path) -> IndexedRepo {
        let backend = Arc::new(crate::backend::local::LocalBackend::new(dir.join("repo")));
        Repository::open(backend, b"pw")
            .unwrap()
            .open_index(None)
            .unwrap()
    }

    fn pack_file(dir: &Path, repo: &IndexedRepo, blob: &BlobId) -> std::path::PathBuf {
        let hex = repo.locate(blob).unwrap().pack.0.to_hex();
        dir.join("repo/data").join(&hex[..2]).join(hex)
    }

    fn flip_byte(path: &Path, offset: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x40;
        std::fs::write(path, &bytes).unwrap();
    }

    /// The index files' names, sorted.
    fn index_files(dir: &Path) -> Vec<String> {
        let entries = std::fs::read_dir(dir.join("repo/index")).unwrap();
        let mut names: Vec<String> = (entries.map(|e| e.unwrap().file_name()))
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn check_errors(dir: &Path) -> usize {
        let report =
            checker::check(&reopen(dir), ReadData::All, &Cancel::default(), &Quiet).unwrap();
        report.errors.len()
    }

    #[test]
    fn the_index_is_rebuilt_from_pack_headers_alone() {
        let (dir, ids) = fixture();
        let index_dir = dir.path().join("repo/index");
        for f in std::fs::read_dir(&index_dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        assert!(check_errors(dir.path()) > 0);
        let r = repair_index(
            &crate::repo::locked::exclusive(&reopen(dir.path())),
            &IndexRepairOptions::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.blobs, ids.len() + 2, "{r:?}");
        assert!(r.unreadable_packs.is_empty() && r.index_files_removed == 0);
        assert_eq!(check_errors(dir.path()), 0);
    }

    #[test]
    fn a_pack_with_a_damaged_header_is_rewritten_from_its_old_index_entries() {
        let (dir, ids) = fixture();
        let repo = reopen(dir.path());
        let pack = pack_file(dir.path(), &repo, &ids[0]);
        let len = std::fs::metadata(&pack).unwrap().len();
        flip_byte(&pack, len - 20);
        let r = repair_index(
            &crate::repo::locked::exclusive(&repo),
            &IndexRepairOptions::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.unreadable_packs.len(), 1, "{r:?}");
        reopen(dir.path())
            .read_blob(&ids[0])
            .expect("still indexed from the old file");
    }

    #[test]
    fn with_read_data_damaged_blobs_leave_the_index_and_their_pack_is_rewritten() {
        let (dir, ids) = fixture();
        let repo = reopen(dir.path());
        let loc = repo.locate(&ids[0]).unwrap();
        let pack = pack_file(dir.path(), &repo, &ids[0]);
        flip_byte(&pack, loc.entry.offset as u64 + 10);
        let before = index_files(dir.path());
        let log = crate::observer::ErrorLog::default();
        let cancelled = IndexRepairOptions {
            read_data: true,
            cancel: Cancel::default(),
        };
        cancelled.cancel.cancel();
        let lock = crate::repo::locked::exclusive(&repo);
        let err = repair_index(&lock, &cancelled, &log).unwrap_err();
        assert!(matches!(err, RepoError::Cancelled(_)), "{err}");
        assert!(log.take().is_empty(), "stopped before reading a pack");
        assert_eq!(
            index_files(dir.path()),
            before,
            "no index file written or removed"
        );
        drop(lock);
        let with_data = IndexRepairOptions {
            read_data: true,
            ..Default::default()
        };
        let r = repair_index(&crate::repo::locked::exclusive(&repo), &with_data, &log).unwrap();
        assert_eq!(log.take(), r.damaged_blobs, "the observer is told of each");
        let damaged: Vec<_> = (r.damaged_blobs.iter())
            .map(|e| (e.path.as_str(), e.kind))
            .collect();
        assert_eq!(
            damaged,
            [(ids[0].0.to_hex().as_str(), EntryErrorKind::Verify)]
        );
        assert!(!pack.exists());
        let repo = reopen(dir.path());
        assert!(!repo.index().contains(&ids[0]).unwrap());
        repo.read_blob(&ids[1]).unwrap();
    }

    #[test]
    fn files_with_missing_blobs_are_cut_from_a_repaired_copy() {
        let (dir, ids) = fixture();
        let repo = reopen(dir.path());
        std::fs::remove_file(pack_file(dir.path(), &repo, &ids[0])).unwrap();
        repair_index(
            &crate::repo::locked::exclusive(&repo),
            &IndexRepairOptions::default(),
            &Quiet,
        )
        .unwrap();
        let opts = SnapshotRepairOptions {
            forget: true,
            ..Default::default()
        };
        let r = repair_snapshots(
            &crate::repo::locked::exclusive(&reopen(dir.path())),
            &opts,
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.salvaged.len(), 1, "{r:?}");
        let lost: Vec<&str> = r.salvaged[0].lost.iter().map(|e| e.path.as_str()).collect();
        assert!(
            !lost.is_empty() && lost.iter().all(|p| p.starts_with("/sub/f")),
            "{lost:?}"
        );
        assert!(lost.len() < 8, "only the files in the lost pack go");
        assert_eq!(r.originals_removed, 1);
        assert_eq!(check_errors(dir.path()), 0);
        let repo = reopen(dir.path());
        let (_, snap) = repo.find_snapshot("latest").unwrap();
        assert!(snap.has_tag("repaired"));
        let kept = crate::vfs::node_at(&repo, snap.tree, b"/g").unwrap();
        assert_eq!(
            crate::vfs::read_range(&repo, &kept, 0, 1000).unwrap(),
            random_blob(99)
        );
        let again =
            repair_snapshots(&crate::repo::locked::exclusive(&repo), &opts, &Quiet).unwrap();
        assert!(again.salvaged.is_empty());
    }

    #[test]
    fn damaged_blobs_are_found_only_when_reading_data() {
        let (dir, ids) = fixture();
        let repo = reopen(dir.path());
        let loc = repo.locate(&ids[8]).unwrap();
        let pack = pack_file(dir.path(), &repo, &ids[8]);
        flip_byte(&pack, loc.entry.offset as u64 + 100);
        let mut opts = SnapshotRepairOptions {
            dry_run: true,
            ..Default::default()
        };
        assert!(
            repair_snapshots(&crate::repo::locked::exclusive(&repo), &opts, &Quiet)
                .unwrap()
                .salvaged
                .is_empty()
        );
        opts.read_data = true;
        let r = repair_snapshots(&crate::repo::locked::exclusive(&repo), &opts, &Quiet).unwrap();
        assert_eq!(r.salvaged[0].lost.len(), 1);
        assert_eq!(r.salvaged[0].lost[0].path, "/g");
        assert!(r.salvaged[0].repaired.is_none(), "dry run writes nothing");
        assert_eq!(repo.snapshot_ids().unwrap().len(), 1);
    }

    #[test]
    fn an_unreadable_subtree_cuts_its_directory() {
        let (dir, _) = fixture();
        let repo = reopen(dir.path());
        let (_, snap) = repo.find_snapshot("latest").unwrap();
        let sub = crate::vfs::node_at(&repo, snap.tree, b"/sub").unwrap();
        let pack = pack_file(dir.path(), &repo, &sub.subtree().unwrap().blob());
        std::fs::remove_file(pack).unwrap();
        let opts = SnapshotRepairOptions::default();
        let r = repair_snapshots(&crate::repo::locked::exclusive(&repo), &opts, &Quiet).unwrap();
        let lost = &r.salvaged[0].lost;
        assert!(lost.iter().any(|e| e.path == "/sub"), "{lost:?}");
    }

    /// A snapshot of `levels` levels of a tree listing the next one twice (`a` and `b`),
    /// with a file `f` at the bottom whose blob is not stored, recording `entries`.
    fn forged_dag(repo: &IndexedRepo, levels: usize, entries: u64) {
        let lock = crate::repo::locked::exclusive(repo);
        let packer = Packer::new(&lock, false);
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let missing = BlobId(Id::hash_of(b"never stored"));
        let mut id = save(Tree::new(vec![file_of("f", &[(missing, 1)])]));
        for _ in 0..levels {
            id = save(Tree::new(vec![dir_of("a", id), dir_of("b", id)]));
        }
        packer.flush().unwrap();
        let mut snap = snapshot_of(id);
        snap.summary.entries = Some(entries);
        lock.save_snapshot(&snap).unwrap();
    }

    #[test]
    fn a_shared_subtree_is_cut_at_every_place_within_the_entry_budget() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        // 2 + 4 + 8 directories and 8 files.
        forged_dag(&repo, 3, 22);
        let opts = SnapshotRepairOptions {
            dry_run: true,
            ..Default::default()
        };
        let r = repair_snapshots(&crate::repo::locked::exclusive(&repo), &opts, &Quiet).unwrap();
        let lost: Vec<&str> = r.salvaged[0].lost.iter().map(|e| e.path.as_str()).collect();
        let want = [
            "/a/a/a/f", "/a/a/b/f", "/a/b/a/f", "/a/b/b/f", "/b/a/a/f", "/b/a/b/f", "/b/b/a/f",
            "/b/b/b/f",
        ];
        assert_eq!(lost, want, "every place, depth first in name order");

        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        forged_dag(&repo, 40, 1_000);
        let err =
            repair_snapshots(&crate::repo::locked::exclusive(&repo), &opts, &Quiet).unwrap_err();
        assert!(
            err.to_string().contains("more than the 1000 entries"),
            "{err}"
        );
    }
}
