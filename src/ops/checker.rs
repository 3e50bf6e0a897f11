//! `strata check`: verifies that the repository is complete and consistent. Index files must
//! load, snapshots must load, every tree they reach must load, every blob those trees
//! reference must be indexed, and every indexed pack must exist and have the size its index
//! entries imply (the recorded length, or at least its blobs, header and trailer). With
//! read-data, selected packs are downloaded whole and verified: their hash, their header
//! against the index, and every indexed blob (decryption, decompression and keyed id).
//!
//! The index files are loaded into a temporary database ([`StoredIndex`]) where the walk
//! marks what it reaches, so memory does not grow with the number of blobs.
//!
//! Damage is collected into a report rather than returned as an error, so one bad object
//! never hides another; only failures that prevent checking at all (e.g. listing the
//! backend) are errors.
use crate::backend::Kind;
use crate::backend::pool::IoPool;
use crate::cancel::Cancel;
use crate::index::IndexError;
use crate::index::stored::{StoredIndex, StoredPack};
use crate::observer::{Counters, Observer, Phase};
use crate::ops::sandbox::validate_name;
use crate::repo::blob::{BlobType, PackedBlobError};
use crate::repo::dictionary::{self, DictId};
use crate::repo::id::{BlobId, Id, PackId, SnapshotId, TreeId};
use crate::repo::indexfile::AT_ONCE;
use crate::repo::pack::{self, BlobEntry, TRAILER_LEN};
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::tree::{ChunkRef, Node, NodeKind, Tree};
use crate::vfs::{self, Reached};
use crate::walk;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

/// At most this many whole packs are held in memory while reading data.
const MAX_PACKS_IN_FLIGHT: usize = 4;

/// Which packs `check` downloads and verifies in full.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// n of m (1-based): packs whose first id byte % m == n-1
    Subset {
        n: u32,
        m: u32,
    },
    /// a random share of the packs, in percent (0 < p <= 100)
    Percent(f64),
}

impl ReadData {
    /// Parses the CLI forms `n/m` (e.g. `2/5`) and `N%` (e.g. `10%`).
    pub fn parse(s: &str) -> Result<ReadData, String> {
        let s = s.trim();
        let usage = || {
            format!(
                "invalid read-data subset {s:?}: expected n/m (e.g. 1/5) or a percentage (e.g. 10%)"
            )
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| usage())?;
            if !p.is_finite() || p <= 0.0 || p > 100.0 {
                return Err(format!(
                    "invalid read-data percentage {s:?}: it must be greater than 0% and at most 100%"
                ));
            }
            return Ok(ReadData::Percent(p));
        }
        if let Some((n, m)) = s.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| usage())?;
            let m: u32 = m.trim().parse().map_err(|_| usage())?;
            if m == 0 || m > 256 {
                return Err(format!(
                    "invalid read-data subset {s:?}: the number of subsets must be between 1 and 256"
                ));
            }
            if n == 0 || n > m {
                return Err(format!(
                    "invalid read-data subset {s:?}: the subset number must be between 1 and {m}"
                ));
            }
            return Ok(ReadData::Subset { n, m });
        }
        Err(usage())
    }

    /// Whether a pack belongs to a `Subset` selection (always true for `All`, false for `None`;
    /// `Percent` is decided over the whole list by `select`).
    fn selects(&self, pack: &PackId) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All | ReadData::Percent(_) => true,
            ReadData::Subset { n, m } => pack.0.0[0] as u32 % m == n - 1,
        }
    }

    /// The packs to read out of `packs`.
    fn select(&self, mut packs: Vec<(PackId, u64)>) -> Vec<(PackId, u64)> {
        match *self {
            ReadData::Percent(p) => {
                let want = ((packs.len() as f64) * p / 100.0).ceil() as usize;
                let want = want.clamp(usize::from(!packs.is_empty()), packs.len());
                let mut keyed: Vec<(Id, (PackId, u64))> =
                    packs.into_iter().map(|p| (Id::random(), p)).collect();
                keyed.sort_by_key(|k| k.0);
                keyed.truncate(want);
                let mut chosen: Vec<_> = keyed.into_iter().map(|(_, p)| p).collect();
                chosen.sort_by_key(|c| c.0);
                chosen
            }
            _ => {
                packs.retain(|(id, _)| self.selects(id));
                packs
            }
        }
    }
}

impl FromStr for ReadData {
    type Err = String;
    fn from_str(s: &str) -> Result<ReadData, String> {
        ReadData::parse(s)
    }
}

/// One piece of damage found by `check`.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Problem {
    /// "snapshot" | "tree" | "blob" | "pack" | "index" | "key" | "dictionary"
    pub kind: &'static str,
    /// The damaged object's id in hex, or its name.
    pub object: String,
    pub message: String,
}

impl Problem {
    fn new(kind: &'static str, object: impl ToString, message: impl ToString) -> Problem {
        Problem {
            kind,
            object: object.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.message)
    }
}

#[derive(serde::Serialize, Default, Debug)]
pub struct CheckReport {
    /// Snapshots that could be loaded (and whose trees were walked).
    pub snapshots: u64,
    /// Distinct trees reached from the snapshots.
    pub trees: u64,
    /// Distinct data blobs (file chunks) referenced by those trees.
    pub blobs_referenced: u64,
    /// Packs listed by the index files.
    pub packs: u64,
    /// Packs downloaded and verified (read-data).
    pub packs_read: u64,
    /// Blobs opened and verified (read-data).
    pub blobs_read: u64,
    /// Damage: non-empty means the repository is damaged.
    pub errors: Vec<Problem>,
    /// Packs present in data/ but in no index file (left by an interrupted backup): not damage.
    pub unused_packs: Vec<String>,
    /// Indexed blobs that no snapshot references: not damage.
    pub unused_blobs: u64,
    /// Dictionaries stored (`dictionaries/`), and those no indexed blob uses (left by an
    /// interrupted backup or a prune that repacked their last blobs away): not damage.
    pub dictionaries: u64,
    pub unused_dictionaries: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository; see the module documentation.
pub fn check(
    repo: &IndexedRepo,
    read: ReadData,
    cancel: &Cancel,
    progress: &dyn Observer,
) -> Result<CheckReport, RepoError> {
    let mut report = CheckReport::default();

    progress.phase(Phase::Indexing);
    progress.item("keys");
    check_keys(repo, &mut report.errors)?;

    progress.item("index");
    let index = load_index(repo, cancel, &mut report.errors)?;
    report.packs = index.pack_count()?;

    progress.item("dictionaries");
    let broken = check_dictionaries(repo, &index, read != ReadData::None, &mut report)?;

    progress.item("snapshots");
    let (snapshots, damaged) = repo.snapshots()?;
    for (id, e) in damaged {
        report.errors.push(Problem::new(
            "snapshot",
            id,
            format!("cannot be loaded: {e}"),
        ));
    }
    report.snapshots = snapshots.len() as u64;

    progress.phase(Phase::Scanning);
    progress.item("trees");
    let walk = walk_trees(
        repo,
        &index,
        &snapshots,
        cancel,
        &mut report.errors,
        progress,
    )?;
    check_entry_budgets(&walk, &snapshots, &mut report.errors);
    report.trees = walk.shapes.len() as u64;
    report.blobs_referenced = index.chunks_referenced()?;
    report.unused_blobs = index.unused_blobs()?;
    drop(walk);

    progress.phase(Phase::Verifying);
    progress.item("packs");
    let present: HashMap<String, u64> = repo
        .backend()
        .list(Kind::Pack)?
        .into_iter()
        .map(|e| (e.name, e.size))
        .collect();
    let mut readable = Vec::new();
    let mut indexed = HashSet::new();
    index.for_each_pack(|pack| {
        let name = pack.id.0.to_hex();
        indexed.insert(pack.id);
        let Some(&size) = present.get(&name) else {
            report.errors.push(Problem::new(
                "pack",
                &name,
                format!(
                    "missing from the repository ({} indexed blobs are lost)",
                    pack.entries.len()
                ),
            ));
            return;
        };
        report.errors.extend(size_problem(&name, size, &pack));
        readable.push((pack.id, size));
    })?;
    let mut unused: Vec<String> = present
        .into_keys()
        .filter(|name| Id::from_hex(name).is_none_or(|id| !indexed.contains(&PackId(id))))
        .collect();
    unused.sort();
    report.unused_packs = unused;

    let selected = read.select(readable);
    if !selected.is_empty() {
        progress.item("read data");
        progress.total(Counters {
            bytes_read: selected.iter().map(|(_, size)| size).sum(),
            packs: selected.len() as u64,
            ..Counters::default()
        });
        let results = with_pool(MAX_PACKS_IN_FLIGHT, || {
            selected
                .par_iter()
                .filter(|_| !cancel.is_cancelled())
                .map(|(pack, size)| {
                    let r = match index.pack(pack) {
                        Ok(Some(stored)) => read_pack(repo, &stored, &broken),
                        Ok(None) => PackResult::default(),
                        Err(e) => PackResult::failed(e),
                    };
                    progress.add(r.counters(*size));
                    r
                })
                .collect::<Vec<_>>()
        });
        cancel.check()?;
        for r in results {
            if let Some(e) = r.failed {
                return Err(e.into());
            }
            report.packs_read += r.read as u64;
            report.blobs_read += r.blobs_read;
            report.errors.extend(r.problems);
        }
    }
    Ok(report)
}

/// A pack whose listed `size` differs from what its index entries imply: the length its
/// index file records (version 3), or else at least the end of its last blob plus its
/// header and trailer (Finding 11: a truncated pack is found without reading data).
fn size_problem(name: &str, size: u64, pack: &StoredPack) -> Option<Problem> {
    let (format, length, entries) = (pack.format, pack.length, &pack.entries);
    let blobs_end = entries
        .iter()
        .map(|e| e.offset as u64 + e.length as u64)
        .max()
        .unwrap_or(0);
    let needed = blobs_end + format.header_len(entries.len()) + TRAILER_LEN as u64;
    let message = match length {
        Some(n) if size < n => format!("is {size} bytes, too short: its index records {n} bytes"),
        Some(n) if size > n => format!("is {size} bytes, longer than the {n} its index records"),
        _ if size < needed => format!(
            "is {size} bytes, too short for its indexed blobs and header ({needed} bytes needed)"
        ),
        _ => return None,
    };
    Some(Problem::new("pack", name, message))
}

/// Every dictionary the indexed blobs use must be stored, once under its id; with
/// `read_data` every stored dictionary is opened and verified too. A missing, damaged or
/// ambiguous one is reported with how many blobs it makes unreadable (and the first few);
/// returns the ids of those dictionaries.
fn check_dictionaries(
    repo: &IndexedRepo,
    index: &StoredIndex,
    read_data: bool,
    report: &mut CheckReport,
) -> Result<HashSet<DictId>, RepoError> {
    let users = index.dictionary_users(10)?;
    let affected = |d: &DictId| match users.get(d) {
        None => "; no indexed blob uses it".to_string(),
        Some((n, ids)) => {
            let shown: Vec<String> = ids.iter().take(10).map(|id| id.to_string()).collect();
            let more = match *n as usize > shown.len() {
                true => format!(" and {} more", *n as usize - shown.len()),
                false => String::new(),
            };
            format!(
                "; {n} blob(s) compressed with it cannot be read: {}{more}",
                shown.join(", ")
            )
        }
    };
    let stored = dictionary::list(repo.backend())?;
    let mut broken = HashSet::new();
    let mut problems = Vec::new();
    for (d, names) in &stored {
        for name in names {
            report.dictionaries += 1;
            let why = if names.len() > 1 {
                Some("shares its id with another dictionary".to_string())
            } else if read_data {
                verify_dictionary(repo, name).err()
            } else {
                None
            };
            if let Some(why) = why {
                broken.insert(*d);
                problems.push(Problem::new(
                    "dictionary",
                    name,
                    format!("{why}{}", affected(d)),
                ));
            } else if !users.contains_key(d) {
                report.unused_dictionaries.push(name.to_hex());
            }
        }
    }
    for d in users.keys().filter(|d| !stored.contains_key(*d)) {
        broken.insert(*d);
        let id = dictionary::id_hex(*d);
        problems.push(Problem::new(
            "dictionary",
            &id,
            format!("is missing from the repository{}", affected(d)),
        ));
    }
    problems.sort_by(|a, b| a.object.cmp(&b.object));
    report.unused_dictionaries.sort();
    report.errors.extend(problems);
    Ok(broken)
}

/// Reads the dictionary `name` and checks that it opens under its name and that zstd takes it.
fn verify_dictionary(repo: &IndexedRepo, name: &Id) -> Result<(), String> {
    let sealed = repo
        .backend()
        .get(Kind::Dictionary, &name.to_hex())
        .map_err(|e| format!("cannot be read: {e}"))?;
    let damaged = |e: String| e.replace(&format!("dictionary {} ", name.to_hex()), "");
    dictionary::Loaded::from_stored(repo.key(), *name, &sealed).map_err(damaged)?;
    Ok(())
}

/// Reads every index file in the repository; unreadable ones become problems.
/// Every key file must parse and match the master key by its MAC (required from version 3).
fn check_keys(repo: &IndexedRepo, problems: &mut Vec<Problem>) -> Result<(), RepoError> {
    for (id, file) in repo.list_keys()? {
        let verdict = file.and_then(|f| {
            repo.verify_key_file(&f).map_err(|source| RepoError::Key {
                id: id.0.to_hex(),
                source,
            })
        });
        if let Err(e) = verdict {
            problems.push(Problem::new("key", id.0.to_hex(), format!("{e}")));
        }
    }
    Ok(())
}

/// Loads every index file in the repository (not the local cache: check judges what is
/// stored) into a temporary database; unreadable ones become problems.
fn load_index(
    repo: &IndexedRepo,
    cancel: &Cancel,
    problems: &mut Vec<Problem>,
) -> Result<StoredIndex, RepoError> {
    let view = StoredIndex::new()?;
    let known_bad: HashMap<&str, &str> = repo
        .damaged_index_files
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_str()))
        .collect();
    for (name, e) in &repo.damaged_index_files {
        problems.push(Problem::new(
            "index",
            name,
            format!("cannot be loaded: {e}"),
        ));
    }
    let listed: Vec<(String, u64)> = repo
        .backend()
        .list(Kind::Index)?
        .into_iter()
        .map(|e| (e.name, e.size))
        .filter(|(n, _)| !known_bad.contains_key(n.as_str()))
        .collect();
    let load = |(n, _): &(String, u64)| repo.read_index_file(n);
    let weigh = |(_, size): &(String, u64)| *size;
    let pool = IoPool::for_backend(repo.backend());
    walk::in_weighed_batches(
        AT_ONCE,
        &listed,
        weigh,
        &pool,
        cancel,
        load,
        |(name, _), r| {
            match r {
                Ok(packs) => view.add_file(&packs)?,
                Err(e) => problems.push(Problem::new(
                    "index",
                    name,
                    format!("cannot be loaded: {e}"),
                )),
            }
            Ok::<(), RepoError>(())
        },
    )?;
    Ok(view)
}

/// The shapes of the trees reachable from the snapshots (the blobs they reach are marked
/// in the [`StoredIndex`]).
#[derive(Default)]
struct Walk {
    /// Each reached tree's entry count and subtrees (none if it cannot be loaded), for
    /// [`check_entry_budgets`].
    shapes: HashMap<TreeId, (u64, Vec<TreeId>)>,
}

/// Reports each snapshot whose trees expand to more entries than its budget allows (a forged
/// tree DAG), computed from the trees' own counts without expanding them.
fn check_entry_budgets(
    walk: &Walk,
    snapshots: &[(SnapshotId, crate::repo::snapshot::Snapshot)],
    problems: &mut Vec<Problem>,
) {
    let own = |id: &TreeId| (walk.shapes.get(id)).map_or((0, &[][..]), |(n, c)| (*n, &c[..]));
    let mut memo = HashMap::new();
    for (id, snap) in snapshots {
        let entries = walk::expand(snap.tree, own, u64::saturating_add, &mut memo);
        let limit = walk::entry_budget(snap);
        if entries > limit {
            let why = walk::OverBudget { limit };
            problems.push(Problem::new("snapshot", id, format!("{why} ({entries})")));
        }
    }
}

/// State of one walk over the trees reachable from the snapshots.
struct Walker<'a> {
    index: &'a StoredIndex,
    /// Root tree -> the snapshots that have it as their root.
    roots: HashMap<TreeId, Vec<SnapshotId>>,
    walk: Walk,
    /// (blob, length) pairs already reported as differing from the indexed raw length.
    wrong_lengths: HashSet<(BlobId, u32)>,
    problems: &'a mut Vec<Problem>,
    /// The first failure of the database, which ends the check once the walk returns.
    failed: Option<IndexError>,
}

/// Loads every distinct tree reachable from the snapshots (a batch at a time, in parallel)
/// and marks them and the data blobs they reference in `index`.
fn walk_trees(
    repo: &IndexedRepo,
    index: &StoredIndex,
    snapshots: &[(SnapshotId, crate::repo::snapshot::Snapshot)],
    cancel: &Cancel,
    problems: &mut Vec<Problem>,
    progress: &dyn Observer,
) -> Result<Walk, RepoError> {
    let mut roots: HashMap<TreeId, Vec<SnapshotId>> = HashMap::new();
    for (id, snap) in snapshots {
        roots.entry(snap.tree).or_default().push(*id);
    }
    let mut w = Walker {
        index,
        roots,
        walk: Walk::default(),
        wrong_lengths: HashSet::new(),
        problems,
        failed: None,
    };
    vfs::for_each_tree(repo, snapshots, cancel, |reached, tree| {
        if w.failed.is_some() {
            return;
        }
        progress.item(&reached.path);
        let done = match tree {
            Ok(tree) => w.check_tree(reached, tree),
            Err(e) => w.report_unloadable(reached, e),
        };
        w.failed = done.err();
    })?;
    match w.failed {
        Some(e) => Err(e.into()),
        None => Ok(w.walk),
    }
}

impl Walker<'_> {
    /// Reports a tree that cannot be loaded, naming where it was reached from.
    fn report_unloadable(&mut self, p: &Reached, e: RepoError) -> Result<(), IndexError> {
        self.walk.shapes.insert(p.id, (0, Vec::new()));
        self.index.reach_tree(&p.id)?;
        let reason = match e {
            RepoError::MissingBlob(_) => "not in index".to_string(),
            e => e.to_string(),
        };
        let origin = match self.roots.get(&p.id) {
            Some(snaps) => {
                let snaps: Vec<String> = snaps.iter().map(|s| s.0.short()).collect();
                format!("root tree of snapshot {}", snaps.join(", "))
            }
            None => p.location(),
        };
        self.problems.push(Problem::new(
            "tree",
            p.id,
            format!("cannot be loaded ({origin}): {reason}"),
        ));
        Ok(())
    }

    /// Checks one loaded tree and its entries.
    fn check_tree(&mut self, p: &Reached, tree: &Tree) -> Result<(), IndexError> {
        let subtrees = tree.nodes.iter().filter_map(Node::subtree).collect();
        (self.walk.shapes).insert(p.id, (tree.nodes.len() as u64, subtrees));
        if matches!(self.index.reach_tree(&p.id)?, Some((BlobType::Data, _))) {
            self.problems.push(Problem::new(
                "tree",
                p.id,
                format!("is indexed as a data blob ({})", p.location()),
            ));
        }
        self.check_names(p, tree);
        for node in &tree.nodes {
            if let NodeKind::File { content } = &node.kind {
                self.check_file(p, node, content)?;
            }
        }
        Ok(())
    }

    /// Reports entry names that are invalid path components, and names used more than once.
    fn check_names(&mut self, p: &Reached, tree: &Tree) {
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let mut duplicates: HashSet<&[u8]> = HashSet::new();
        for node in &tree.nodes {
            let name = node.name.as_slice();
            let shown = String::from_utf8_lossy(name);
            if validate_name(name).is_err() {
                self.problems.push(Problem::new(
                    "tree",
                    p.id,
                    format!("has an invalid entry name {shown:?} ({})", p.location()),
                ));
            }
            if !seen.insert(name) && duplicates.insert(name) {
                self.problems.push(Problem::new(
                    "tree",
                    p.id,
                    format!("has more than one entry named {shown:?} ({})", p.location()),
                ));
            }
        }
    }

    /// Checks a file node: its size against its chunks, and each chunk against the index.
    fn check_file(
        &mut self,
        p: &Reached,
        node: &Node,
        content: &[ChunkRef],
    ) -> Result<(), IndexError> {
        let path = vfs::child_path(&p.path, &node.name);
        let sum: u64 = content.iter().map(|c| u64::from(c.len)).sum();
        if node.size != sum {
            self.problems.push(Problem::new(
                "tree",
                p.id,
                format!(
                    "file {path} in snapshot {} has size {} but its chunks add up to {sum} bytes",
                    p.snapshot.0.short(),
                    node.size
                ),
            ));
        }
        for chunk in content {
            self.check_chunk(p, &path, chunk)?;
        }
        Ok(())
    }

    /// Checks one chunk of the file at `path`: indexed, as a data blob, with the same length.
    fn check_chunk(&mut self, p: &Reached, path: &str, chunk: &ChunkRef) -> Result<(), IndexError> {
        let (listed, first) = self.index.reference_chunk(&chunk.id)?;
        let problem = match listed {
            Some((BlobType::Data, raw)) => {
                if raw == chunk.len || !self.wrong_lengths.insert((chunk.id, chunk.len)) {
                    return Ok(());
                }
                format!(
                    "has length {raw} in the index but {} in the tree",
                    chunk.len
                )
            }
            _ if !first => return Ok(()),
            Some((BlobType::Tree, _)) => "is indexed as a tree blob".to_string(),
            None => "not in index".to_string(),
        };
        self.problems.push(Problem::new(
            "blob",
            chunk.id,
            format!(
                "{problem} (referenced by {path} in snapshot {})",
                p.snapshot.0.short()
            ),
        ));
        Ok(())
    }
}

impl PackResult {
    fn failed(e: IndexError) -> PackResult {
        PackResult {
            failed: Some(e),
            ..PackResult::default()
        }
    }

    /// What reading the pack, of `size` bytes, adds to the report's figures.
    fn counters(&self, size: u64) -> Counters {
        Counters {
            bytes_read: size,
            blobs: self.blobs_read,
            packs: u64::from(self.read),
            ..Counters::default()
        }
    }
}

/// What reading one pack found.
#[derive(Default)]
struct PackResult {
    read: bool,
    blobs_read: u64,
    problems: Vec<Problem>,
    /// The database failed to give the pack's entries: the check cannot go on.
    failed: Option<IndexError>,
}

/// Downloads one pack and verifies its hash, its header against its entries in the index
/// files, and every blob those list.
fn read_pack(repo: &IndexedRepo, pack: &StoredPack, broken: &HashSet<DictId>) -> PackResult {
    let (format, entries) = (pack.format, &pack.entries);
    let pack = pack.id;
    let name = pack.0.to_hex();
    let mut r = PackResult::default();
    let bytes = match repo.backend().get(Kind::Pack, &name) {
        Ok(b) => b,
        Err(e) => {
            r.problems
                .push(Problem::new("pack", &name, format!("cannot be read: {e}")));
            return r;
        }
    };
    r.read = true;
    if Id::hash_of(&bytes) != pack.0 {
        r.problems
            .push(Problem::new("pack", &name, "content does not match its id"));
    }
    match pack::read_header(repo.key(), repo.config().version, &bytes) {
        Err(e) => r.problems.push(Problem::new(
            "pack",
            &name,
            format!("header cannot be read: {e}"),
        )),
        Ok((written, _)) if written != format => r.problems.push(Problem::new(
            "pack",
            &name,
            format!("is a {written:?} pack, but its index says {format:?}"),
        )),
        Ok((_, header)) => {
            let by_id: HashMap<BlobId, &BlobEntry> = header.iter().map(|e| (e.id, e)).collect();
            let indexed: HashSet<BlobId> = entries.iter().map(|e| e.id).collect();
            for e in entries {
                match by_id.get(&e.id) {
                    None => r.problems.push(Problem::new(
                        "pack",
                        &name,
                        format!(
                            "blob {} is indexed in this pack but not in its header",
                            e.id
                        ),
                    )),
                    Some(h) if *h != e => r.problems.push(Problem::new(
                        "pack",
                        &name,
                        format!(
                            "blob {}: the header says {}, the index says {}",
                            e.id,
                            describe(h),
                            describe(e)
                        ),
                    )),
                    Some(_) => {}
                }
            }
            for h in &header {
                if !indexed.contains(&h.id) {
                    r.problems.push(Problem::new(
                        "pack",
                        &name,
                        format!(
                            "header lists blob {} which no index file lists in this pack",
                            h.id
                        ),
                    ));
                }
            }
        }
    }
    for e in entries {
        // Reported once with the dictionary, not once per blob.
        let dict = e.compression.dict_id();
        if dict != 0 && broken.contains(&dict) {
            continue;
        }
        r.blobs_read += 1;
        let where_ = match repo.verified(format, &bytes, e) {
            Ok(_) => continue,
            Err(err @ PackedBlobError::OutOfBounds { .. }) => format!("pack {name}: {err}"),
            Err(err) => format!("in pack {name}: {err}"),
        };
        r.problems.push(Problem::new("blob", e.id, where_));
    }
    r
}

fn describe(e: &BlobEntry) -> String {
    format!(
        "{:?} at {}+{} (raw {}, {:?})",
        e.ty, e.offset, e.length, e.raw_length, e.compression
    )
}

/// Runs `f` on a rayon pool of at most `threads` threads (falls back to the global pool).
fn with_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let threads = threads.min(rayon::current_num_threads()).max(1);
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observer::Quiet;
    use crate::repo::repository::Repository;
    use crate::repo::snapshot::Snapshot;
    use crate::repo::tree::Node;
    use crate::repo::tree::tests::{dir_of, file_node, file_of};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    pub(crate) fn snapshot_of(tree: TreeId) -> Snapshot {
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": ["/x"], "tree": tree,
            "program_version": "t"});
        serde_json::from_value(json).unwrap()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        repo: IndexedRepo,
        data: Vec<BlobId>,
    }

    /// A repository with `n` random 1000-byte data blobs in small packs, one file per blob
    /// in a subdirectory, and one snapshot; plus `extra` nodes in the root tree.
    fn fixture(n: u32, extra: Vec<Node>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let mut data = Vec::new();
        let mut files = Vec::new();
        for i in 0..n {
            let b = random_blob(i);
            let (id, _) = packer.save(BlobType::Data, &b).unwrap();
            data.push(id);
            files.push(file_of(&format!("f{i}"), &[(id, b.len())]));
        }
        let sub = Tree::new(files);
        let (sub, _) = packer.save_tree(&sub).unwrap();
        let mut nodes = extra;
        nodes.push(dir_of("sub", sub));
        let (root_tree, _) = packer.save_tree(&Tree::new(nodes)).unwrap();
        packer.flush().unwrap();
        lock.save_snapshot(&snapshot_of(root_tree)).unwrap();
        Fixture {
            _dir: dir,
            root,
            repo,
            data,
        }
    }

    fn pack_path(root: &Path, pack: PackId) -> PathBuf {
        let hex = pack.0.to_hex();
        root.join("data").join(&hex[..2]).join(hex)
    }

    fn reopen(root: &Path) -> IndexedRepo {
        let backend = Arc::new(crate::backend::local::LocalBackend::new(root));
        Repository::open(backend, b"pw")
            .unwrap()
            .open_index(None)
            .unwrap()
    }

    fn errors_of<'a>(r: &'a CheckReport, kind: &str) -> Vec<&'a Problem> {
        r.errors.iter().filter(|p| p.kind == kind).collect()
    }

    #[test]
    fn a_forged_tree_dag_is_reported_without_being_expanded() {
        let f = fixture(1, vec![]);
        let lock = crate::repo::locked::exclusive(&f.repo);
        let packer = Packer::new(&lock, false);
        let save = |t: Tree| packer.save_tree(&t).unwrap().0;
        let mut dag = save(Tree::new(vec![]));
        for _ in 0..40 {
            dag = save(Tree::new(vec![dir_of("a", dag), dir_of("b", dag)]));
        }
        packer.flush().unwrap();
        let forged = lock.save_snapshot(&snapshot_of(dag)).unwrap();
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        let errors = errors_of(&r, "snapshot");
        assert_eq!(errors.len(), 1, "{:?}", r.errors);
        assert_eq!(errors[0].object, forged.to_string());
        assert!(
            errors[0].message.contains("1048576 entries"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn healthy_repository_has_no_errors() {
        let f = fixture(12, vec![]);
        let r = check(&f.repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.snapshots, 1);
        assert_eq!(r.trees, 2);
        assert_eq!(r.blobs_referenced, 12);
        let (blobs, packs) = f.repo.index().counts().unwrap();
        assert_eq!(r.packs, packs);
        assert_eq!(r.packs_read, packs);
        assert_eq!(r.blobs_read, blobs);
        assert_eq!(r.unused_blobs, 0);
        assert!(r.unused_packs.is_empty());
    }

    #[test]
    fn flipped_byte_is_found_only_by_read_data() {
        let f = fixture(8, vec![]);
        let target = f.data[5];
        let loc = f.repo.locate(&target).unwrap();
        let path = pack_path(&f.root, loc.pack);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[loc.entry.offset as usize + 30] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();

        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.packs_read, 0);

        let r = check(&f.repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        let pack_hex = loc.pack.0.to_hex();
        let packs = errors_of(&r, "pack");
        assert_eq!(packs.len(), 1, "{:?}", r.errors);
        assert_eq!(packs[0].object, pack_hex);
        assert!(packs[0].message.contains("does not match its id"));
        let blobs = errors_of(&r, "blob");
        assert_eq!(blobs.len(), 1, "{:?}", r.errors);
        assert_eq!(blobs[0].object, target.0.to_hex());
        assert!(blobs[0].message.contains(&pack_hex), "{}", blobs[0].message);
        assert!(
            blobs[0].message.contains("authentication"),
            "{}",
            blobs[0].message
        );
        assert_eq!(r.errors.len(), 2);
    }

    #[test]
    fn deleted_pack_is_an_error() {
        let f = fixture(8, vec![]);
        let loc = f.repo.locate(&f.data[0]).unwrap();
        std::fs::remove_file(pack_path(&f.root, loc.pack)).unwrap();
        let r = check(&f.repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        let packs = errors_of(&r, "pack");
        assert_eq!(packs.len(), 1, "{:?}", r.errors);
        assert_eq!(packs[0].object, loc.pack.0.to_hex());
        assert!(packs[0].message.contains("missing"));
        assert_eq!(r.packs_read, r.packs - 1);
    }

    #[test]
    fn truncated_pack_is_an_error_without_panicking() {
        let f = fixture(8, vec![]);
        let loc = f.repo.locate(&f.data[0]).unwrap();
        let path = pack_path(&f.root, loc.pack);
        let bytes = std::fs::read(&path).unwrap();
        // Cut inside data[0]'s ciphertext: a cut at a fixed fraction of a pack may fall
        // in the filler after its last blob and leave every blob whole.
        std::fs::write(&path, &bytes[..loc.entry.offset as usize + 10]).unwrap();
        let r = check(&f.repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        let packs = errors_of(&r, "pack");
        assert!(
            packs.iter().any(|p| p.message.contains("too short")),
            "{:?}",
            r.errors
        );
        assert!(packs.iter().any(|p| p.message.contains("header")));
        assert!(!errors_of(&r, "blob").is_empty());
    }

    #[test]
    fn blob_missing_from_index_is_an_error() {
        let missing = BlobId(Id::random());
        let f = fixture(3, vec![file_of("ghost", &[(missing, 10)])]);
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        let blobs = errors_of(&r, "blob");
        assert_eq!(blobs.len(), 1, "{:?}", r.errors);
        assert_eq!(blobs[0].object, missing.0.to_hex());
        assert!(blobs[0].message.contains("not in index"));
        assert!(blobs[0].message.contains("/ghost"), "{}", blobs[0].message);
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn missing_tree_is_an_error() {
        let missing = TreeId(Id::random());
        let f = fixture(2, vec![dir_of("lost", missing)]);
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        let trees = errors_of(&r, "tree");
        assert_eq!(trees.len(), 1, "{:?}", r.errors);
        assert_eq!(trees[0].object, missing.0.to_hex());
        assert!(trees[0].message.contains("/lost"), "{}", trees[0].message);
    }

    #[test]
    fn damaged_snapshot_and_index_files_are_errors() {
        let f = fixture(4, vec![]);
        let snap = f.repo.backend().list(Kind::Snapshot).unwrap()[0]
            .name
            .clone();
        let snap_path = f.root.join("snapshots").join(&snap);
        let mut bytes = std::fs::read(&snap_path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&snap_path, &bytes).unwrap();
        let idx = f.repo.backend().list(Kind::Index).unwrap()[0].name.clone();
        let idx_path = f.root.join("index").join(&idx);
        let mut bytes = std::fs::read(&idx_path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&idx_path, &bytes).unwrap();

        // Freshly opened: the index file fails to load into the local index.
        let repo = reopen(&f.root);
        assert_eq!(repo.damaged_index_files.len(), 1);
        let r = check(&repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        let s = errors_of(&r, "snapshot");
        assert_eq!(s.len(), 1, "{:?}", r.errors);
        assert_eq!(s[0].object, snap);
        let i = errors_of(&r, "index");
        assert_eq!(i.len(), 1, "{:?}", r.errors);
        assert_eq!(i[0].object, idx);
        assert_eq!(r.snapshots, 0);

        // With the local index loaded before the damage, the file is still re-read.
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        assert_eq!(errors_of(&r, "index").len(), 1, "{:?}", r.errors);
    }

    #[test]
    fn extra_pack_is_unused_not_damage() {
        let f = fixture(4, vec![]);
        let bytes = b"leftover of an interrupted backup".to_vec();
        let name = Id::hash_of(&bytes).to_hex();
        f.repo.backend().put(Kind::Pack, &name, &bytes).unwrap();
        let r = check(&f.repo, ReadData::All, &Cancel::default(), &Quiet).unwrap();
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.unused_packs, vec![name]);
        assert_eq!(r.packs_read, r.packs, "unindexed packs are not read");
    }

    #[test]
    fn unreferenced_blobs_are_counted() {
        let f = fixture(4, vec![]);
        let lock = crate::repo::locked::exclusive(&f.repo);
        let packer = Packer::new(&lock, false);
        packer.save(BlobType::Data, &random_blob(999)).unwrap();
        packer.save(BlobType::Data, &random_blob(998)).unwrap();
        packer.flush().unwrap();
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.unused_blobs, 2);
    }

    #[test]
    fn subsets_read_only_their_packs() {
        let f = fixture(40, vec![]);
        let names: Vec<PackId> = f
            .repo
            .backend()
            .list(Kind::Pack)
            .unwrap()
            .iter()
            .map(|e| PackId(Id::from_hex(&e.name).unwrap()))
            .collect();
        assert!(names.len() >= 8, "{}", names.len());
        let m = 3;
        let mut total = 0;
        for n in 1..=m {
            let r = check(
                &f.repo,
                ReadData::Subset { n, m },
                &Cancel::default(),
                &Quiet,
            )
            .unwrap();
            assert!(r.is_ok(), "{:?}", r.errors);
            let want = names
                .iter()
                .filter(|p| p.0.0[0] as u32 % m == n - 1)
                .count() as u64;
            assert_eq!(r.packs_read, want, "subset {n}/{m}");
            total += r.packs_read;
        }
        assert_eq!(total, names.len() as u64);
        let r = check(&f.repo, ReadData::Percent(50.0), &Cancel::default(), &Quiet).unwrap();
        assert_eq!(r.packs_read, names.len().div_ceil(2) as u64);
        let r = check(
            &f.repo,
            ReadData::Percent(0.001),
            &Cancel::default(),
            &Quiet,
        )
        .unwrap();
        assert_eq!(r.packs_read, 1);
    }

    /// Adds a second snapshot whose root holds a directory "bad" made of `nodes` (kept in
    /// the given order, duplicates included); returns that directory's tree id.
    fn with_bad_dir(f: &Fixture, nodes: Vec<Node>) -> TreeId {
        let lock = crate::repo::locked::exclusive(&f.repo);
        let packer = Packer::new(&lock, false);
        let (bad, _) = packer.save_tree(&Tree { nodes }).unwrap();
        let (root, _) = packer
            .save_tree(&Tree::new(vec![dir_of("bad", bad)]))
            .unwrap();
        packer.flush().unwrap();
        lock.save_snapshot(&snapshot_of(root)).unwrap();
        bad
    }

    #[test]
    fn invalid_entry_names_are_errors_and_escaped() {
        let f = fixture(1, vec![]);
        let bad = with_bad_dir(
            &f,
            vec![
                file_node(b"", &[]),
                file_node(b"..", &[]),
                file_node(b"a/b", &[]),
                file_node(b"x\0y\n", &[]),
                file_node(b"fine", &[]),
            ],
        );
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        let trees = errors_of(&r, "tree");
        assert_eq!(trees.len(), 4, "{:?}", r.errors);
        assert_eq!(r.errors.len(), 4, "{:?}", r.errors);
        for t in &trees {
            assert_eq!(t.kind, "tree");
            assert_eq!(t.object, bad.0.to_hex());
            assert!(t.message.contains("invalid entry name"), "{}", t.message);
            assert!(t.message.contains("/bad"), "{}", t.message);
            assert!(!t.message.contains('\0') && !t.message.contains('\n'));
        }
        let all: Vec<&str> = trees.iter().map(|t| t.message.as_str()).collect();
        assert!(all.iter().any(|m| m.contains(r#""x\0y\n""#)), "{all:?}");
        assert!(all.iter().any(|m| m.contains(r#""a/b""#)), "{all:?}");
        assert!(all.iter().any(|m| m.contains(r#""..""#)), "{all:?}");
        assert!(all.iter().any(|m| m.contains(r#""""#)), "{all:?}");
    }

    #[test]
    fn duplicate_entry_names_are_errors() {
        let f = fixture(1, vec![]);
        let bad = with_bad_dir(
            &f,
            vec![
                file_node(b"dup", &[]),
                file_node(b"other", &[]),
                file_node(b"dup", &[]),
                file_node(b"dup", &[]),
            ],
        );
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let p = &r.errors[0];
        assert_eq!(p.kind, "tree");
        assert_eq!(p.object, bad.0.to_hex());
        assert!(p.message.contains(r#""dup""#), "{}", p.message);
        assert!(p.message.contains("more than one"), "{}", p.message);
        assert!(p.message.contains("/bad"), "{}", p.message);
    }

    #[test]
    fn chunk_length_differing_from_index_is_an_error() {
        let f = fixture(2, vec![]);
        let blob = random_blob(0);
        let id = f.data[0];
        let wrong = blob.len() + 7;
        with_bad_dir(&f, vec![file_of("liar", &[(id, wrong)])]);
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let p = &r.errors[0];
        assert_eq!(p.kind, "blob");
        assert_eq!(p.object, id.0.to_hex());
        assert!(p.message.contains(&blob.len().to_string()), "{}", p.message);
        assert!(p.message.contains(&wrong.to_string()), "{}", p.message);
        assert!(p.message.contains("/bad/liar"), "{}", p.message);
    }

    #[test]
    fn file_size_differing_from_its_chunks_is_an_error() {
        let f = fixture(2, vec![]);
        let mut node = file_of("grown", &[(f.data[1], random_blob(1).len())]);
        node.size += 1;
        let bad = with_bad_dir(&f, vec![node]);
        let r = check(&f.repo, ReadData::None, &Cancel::default(), &Quiet).unwrap();
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let p = &r.errors[0];
        assert_eq!(p.kind, "tree");
        assert_eq!(p.object, bad.0.to_hex());
        assert!(p.message.contains("/bad/grown"), "{}", p.message);
        assert!(p.message.contains("size"), "{}", p.message);
    }

    #[test]
    fn parse_read_data() {
        assert_eq!(
            ReadData::parse("2/5").unwrap(),
            ReadData::Subset { n: 2, m: 5 }
        );
        assert_eq!(
            ReadData::parse("3/3").unwrap(),
            ReadData::Subset { n: 3, m: 3 }
        );
        assert_eq!(ReadData::parse("10%").unwrap(), ReadData::Percent(10.0));
        assert_eq!(ReadData::parse("2.5%").unwrap(), ReadData::Percent(2.5));
        assert_eq!(ReadData::parse("100%").unwrap(), ReadData::Percent(100.0));
        let err = |s: &str| ReadData::parse(s).unwrap_err();
        assert!(err("0/3").contains("between 1 and 3"), "{}", err("0/3"));
        assert!(err("4/3").contains("between 1 and 3"));
        assert!(err("1/0").contains("number of subsets"));
        assert!(err("0%").contains("greater than 0%"));
        assert!(err("150%").contains("at most 100%"));
        assert!(err("nan%").contains("%"));
        assert!(err("abc").contains("expected n/m"));
        assert!(err("1/x").contains("expected n/m"));
        assert!(err("-1/3").contains("expected n/m"));
        assert!("1/2".parse::<ReadData>().is_ok());
    }
}
