//! Restores a snapshot tree (or a part of it) into a target directory.
//!
//! A restore walks the selected trees one directory at a time and never
//! holds the whole plan: memory is bounded by the depth of the tree and the
//! width of its directories (the entries of the directories on the walk's
//! path), not by the number of entries in the snapshot.
//!
//! **The walk.** Every pass walks depth first with an explicit stack of the
//! directories from its root down to the current one, so any depth the
//! backup recorded restores, with no recursion that grows with it. Only the
//! target and the 16 deepest directories on the stack keep a directory
//! descriptor open; an ancestor further up is closed and, when the walk comes
//! back to it, reopened one component at a time from the nearest open
//! ancestor (`O_DIRECTORY|O_NOFOLLOW`) and checked to be the same directory
//! (device and inode), so a restore needs a bounded number of descriptors.
//! Every pass counts the tree entries it visits against the entry budget
//! given to [`restore`] (the entries the snapshot records): trees are
//! content-addressed and cannot form cycles, but a forged DAG of shared
//! subtrees can expand to 2^40 paths, and is refused with
//! [`RestoreError::TooManyEntries`].
//!
//! **Planning a directory.** One function decides what happens to the
//! entries of one directory, for every pass below: entry names that are not
//! a single, normal path component ([`sandbox::validate_name`]) and names
//! that occur more than once in a tree (all of their entries) are reported in
//! [`RestoreReport::errors`] and never written; include/exclude patterns are
//! applied to the absolute snapshot path of every entry (a directory that is
//! not included itself is restored only when something below it is); and
//! what already exists in the target is looked up. Looking is strictly read-only ([`ReadOnlyDir`]):
//! directories of the target are opened with `O_DIRECTORY|O_NOFOLLOW` one
//! component at a time and entries are inspected with `lstat` semantics, so
//! planning never creates anything (not even the target) and never follows
//! a symlink.
//!
//! The passes:
//!
//! 1. **Conflict scan** (only with [`OnConflict::Fail`] or `dry_run`). A
//!    read-only walk of the selected trees (the write pass loads the trees
//!    again) that keeps only its output: the
//!    conflicting paths and the files and content bytes to write (the
//!    observer's total). With [`OnConflict::Fail`] any conflict aborts the
//!    restore here, before anything is written. With `dry_run` this walk is
//!    the whole restore and also returns every selected entry as
//!    [`RestoreReport::planned`]. Without this pass (the other conflict
//!    modes) the observer gets no total.
//!
//! The observer sees the phases Scanning (the conflict scan) and Writing, one
//! increment per file restored (`files`, `bytes_added`: summed, the report's
//! `files` and `bytes_written`), and each entry listed in `errors` or
//! `verify_failures` as it is recorded.
//! 2. **Write.** Each directory is planned right before its entries are
//!    written, and its plan is dropped when they are done (the subtree of a
//!    skipped directory is only walked read-only, for its errors and to know
//!    whether anything in it is selected). Everything is created through the
//!    [`Sandbox`], so nothing can be written outside the target. The entries
//!    that are not directories are gathered across consecutive directories
//!    (up to [`BATCH_ENTRIES`] entries from [`BATCH_DIRS`] directories) and
//!    written together, up to [`OPEN_FILES`] files open at once: their
//!    chunks are read by pack ([`read_by_pack`]), about one request per pack
//!    as restic does, and each chunk is written at its offset in every file
//!    that holds it as soon as its pack arrives; memory holds one request
//!    per connection, whatever the files' sizes.
//!    A file that cannot be restored (missing or damaged blob, ...) is
//!    removed again, recorded in [`RestoreReport::errors`], and the restore
//!    goes on with the others.
//!
//! Conflicts: an existing directory where the snapshot has a directory is not
//! a conflict; the two are merged. Anything else that exists at the name of a
//! restored entry is a conflict, resolved by [`RestoreOptions::on_conflict`]
//! (a skipped directory skips its whole subtree).
//!
//! Metadata (mode, mtime with nanoseconds, owner with
//! [`RestoreOptions::owner`]) is only set on entries this restore created:
//! files after their content, directories after all of their children
//! (post-order). Pre-existing directories that are merged into and the
//! target directory itself keep their metadata.
//!
//! Limitations:
//! * Hard links are restored as independent copies of the file.
//! * Extended attributes are not restored.
//! * Fifos are created with `mknodat` relative to a directory descriptor;
//!   device nodes only when running as root (otherwise they are reported in
//!   `errors`); sockets are never restored (reported in `errors`).
//! * Linux only: verification re-opens a written file through
//!   `/proc/self/fd` (falling back to a no-follow open relative to its
//!   directory, with an inode check, when `/proc` is not mounted; see
//!   [`DirHandle::open_read`]).
//!
//! Paths in the report are relative to the target and lossily converted to
//! UTF-8; they come from the repository, so callers should escape control
//! characters before printing them. The engine never prints and never exits.

use crate::cancel::{Cancel, Cancelled};
use crate::observer::{Counters, EntryError, EntryErrorKind, Observer, Phase, Quiet};
use crate::ops::sandbox::{
    self, DirHandle, Existing, Identity, Meta, OnConflict, Placed, ReadOnlyDir, Sandbox,
    SandboxError, Special,
};
use crate::repo::id::TreeId;
use crate::repo::prefetch::read_by_pack;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::tree::{ChunkRef, Node, NodeKind, chunk_offsets};
use crate::select::filter::Patterns;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Directory levels below the walk's root whose descriptors a walk keeps
/// open; deeper ancestors are closed and reopened (and checked to be the same
/// directory) when the walk comes back to them.
const OPEN_DIRS: usize = if cfg!(test) { 3 } else { 16 };

/// Entries that are not directories the writer gathers, across consecutive
/// directories, before writing them together in parallel.
const BATCH_ENTRIES: usize = if cfg!(test) { 8 } else { 4096 };

/// Files of a batch that are open at once while their content arrives by
/// pack (descriptors stay well below the usual limit of 1024).
const OPEN_FILES: usize = if cfg!(test) { 3 } else { 256 };

/// Chunks of the files open at once (about 64 GiB of content), which bounds
/// the memory of the plan that says where each chunk goes.
const GROUP_CHUNKS: usize = if cfg!(test) { 10 } else { 1 << 16 };

/// Directories a batch may hold (each keeps its descriptor open until the
/// batch is written), counting those waiting for their metadata.
const BATCH_DIRS: usize = if cfg!(test) { 4 } else { 64 };

/// Errors that stop a restore. Problems with single entries do not: they are
/// collected in [`RestoreReport::errors`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading the repository failed; `path` is the snapshot path concerned.
    #[error("{path}: {source}")]
    Repo {
        path: String,
        #[source]
        source: RepoError,
    },
    /// The target could not be opened or inspected.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A subpath component that is not a single, normal name.
    #[error("invalid subpath: {0}")]
    InvalidSubpath(#[source] SandboxError),
    /// The subpath does not exist in the snapshot.
    #[error("{0:?}: not found in the snapshot")]
    NotFound(String),
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// A subpath component before the last one is not a directory.
    #[error("{0:?}: not a directory in the snapshot")]
    NotADirectory(String),
    /// A subpath component names several entries of one tree.
    #[error("{0:?}: the snapshot holds several entries with this name")]
    Ambiguous(String),
    /// With [`OnConflict::Fail`]: entries that already exist in the target
    /// (paths relative to the target). Nothing was written.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<String>),
    /// The trees expand to more entries than the snapshot records: a forged
    /// tree DAG (trees are content-addressed, so they cannot form cycles, but
    /// shared subtrees can multiply the paths beyond any bound).
    #[error(
        "the snapshot's trees expand to more than the {0} entries it records; refusing to walk them (forged or damaged trees)"
    )]
    TooManyEntries(u64),
}

fn conflicts_message(paths: &[String]) -> String {
    let shown: Vec<String> = paths.iter().take(5).map(|p| format!("{p:?}")).collect();
    let more = if paths.len() > shown.len() {
        format!(" and {} more", paths.len() - shown.len())
    } else {
        String::new()
    };
    format!(
        "{} entries already exist in the target: {}{more}",
        paths.len(),
        shown.join(", ")
    )
}

/// Result type of this module.
pub(crate) type Result<T> = std::result::Result<T, RestoreError>;

/// What to restore, where, and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory to restore into (created if missing, unless `dry_run`).
    pub target: PathBuf,
    /// Components of a path inside the snapshot to restore instead of the
    /// root (e.g. `[b"srv", b"app"]`); its *contents* go into `target`. Empty
    /// = whole snapshot. A subpath naming a file restores that one file into
    /// `target`.
    pub subpath: Vec<Vec<u8>>,
    /// Empty = everything. Matched against the absolute snapshot path
    /// (including the subpath prefix). An included directory includes its
    /// whole subtree; the parent directories of included entries are created.
    pub include: Patterns,
    /// Matched the same way; an excluded directory excludes its subtree.
    pub exclude: Patterns,
    pub on_conflict: OnConflict,
    /// Plan only: fill [`RestoreReport::planned`] and write nothing.
    pub dry_run: bool,
    /// Re-read every restored file and check it against the snapshot.
    pub verify: bool,
    /// Restore uid/gid.
    pub owner: bool,
    /// Stops the restore (with [`RestoreError::Cancelled`]) once cancelled; files being
    /// written are left partly written.
    pub cancel: Cancel,
}

impl RestoreOptions {
    /// Whole snapshot, no patterns, [`OnConflict::Fail`], everything else off.
    pub fn new(target: impl Into<PathBuf>) -> RestoreOptions {
        let none = Patterns::new::<&str>(&[]).expect("no patterns");
        RestoreOptions {
            target: target.into(),
            subpath: Vec::new(),
            include: none.clone(),
            exclude: none,
            on_conflict: OnConflict::Fail,
            dry_run: false,
            verify: false,
            owner: false,
            cancel: Cancel::default(),
        }
    }
}

/// What happens (or, with `dry_run`, would happen) to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryAction {
    /// Created (or merged into, for an existing directory; or replacing the
    /// existing entry with [`OnConflict::Overwrite`]).
    Write,
    /// Not written: something exists and [`OnConflict::Skip`] keeps it (or a
    /// parent directory is skipped).
    Skip,
    /// Written as `name.strata-restored[-N]` next to the existing entry.
    Rename,
    /// Something exists and [`OnConflict::Fail`] is in effect.
    Conflict,
}

/// One entry of a dry-run plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedEntry {
    /// Lossy path relative to the target.
    pub path: String,
    /// [`Node::type_name`].
    pub kind: &'static str,
    pub size: u64,
    /// Something exists at this path in the target.
    pub existing: bool,
    pub action: EntryAction,
}

/// What a restore did. Paths are relative to the target.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    /// Entries restored (with `dry_run`: that would be restored).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Fifos and device nodes.
    pub others: u64,
    /// File content written, of files restored completely.
    pub bytes_written: u64,
    /// Entries not written because something existed ([`OnConflict::Skip`]);
    /// a skipped directory is listed alone, not its subtree.
    pub skipped: Vec<String>,
    /// (snapshot entry, name actually written) with [`OnConflict::Rename`].
    pub renamed: Vec<(String, String)>,
    /// The plan, in tree order; filled only with `dry_run`.
    pub planned: Vec<PlannedEntry>,
    /// Entries that failed; the others were restored.
    pub errors: Vec<EntryError>,
    /// Files re-read and found identical to the snapshot (with `verify`).
    pub verified_files: u64,
    /// Restored files that differ from the snapshot.
    pub verify_failures: Vec<EntryError>,
}

/// Restores the tree `root` (or `opts.subpath` inside it) into `opts.target`.
///
/// `budget` is the number of entries the snapshot records: each pass visits
/// at most that many tree entries and fails with
/// [`RestoreError::TooManyEntries`] beyond it.
pub fn restore(
    repo: &IndexedRepo,
    root: TreeId,
    opts: &RestoreOptions,
    budget: u64,
    progress: &dyn Observer,
) -> Result<RestoreReport> {
    // Each pass visits the trees again: each gets what is left after
    // resolving the subpath.
    let mut budget = Budget::new(budget);
    let start = resolve(repo, root, &opts.subpath, &mut budget)?;

    if opts.dry_run || opts.on_conflict == OnConflict::Fail {
        // The read-only pass. Its errors are reported by the write pass,
        // which meets them again (or with the plan, for a dry run).
        progress.phase(Phase::Scanning);
        let errors = Mutex::new(Vec::new());
        let planner = Planner {
            repo,
            opts,
            keep_plan: opts.dry_run,
            errors: &errors,
            observer: if opts.dry_run { progress } else { &Quiet },
        };
        let target = ReadOnlyDir::open_target(&opts.target)?;
        let scan = match planner.root(&start.abs) {
            Some(ctx) => planner.scan_dir(start.nodes.clone(), ctx, target, &mut budget.clone())?,
            None => None,
        }
        .unwrap_or_default();
        if opts.dry_run {
            let mut report = scan.into_report();
            report.errors = errors.into_inner().expect("errors lock");
            progress.add(Counters::files(report.files));
            sort_report(&mut report);
            return Ok(report);
        }
        if !scan.conflicts.is_empty() {
            return Err(RestoreError::Conflicts(scan.conflicts));
        }
        progress.total(Counters {
            files: scan.files,
            bytes_added: scan.bytes,
            ..Counters::default()
        });
    }
    progress.phase(Phase::Writing);

    let sandbox = Sandbox::open(&opts.target)?;
    let writer = Writer {
        repo,
        opts,
        progress,
        out: Collector::default(),
    };
    if let Some(ctx) = writer.planner().root(&start.abs) {
        writer.write_tree(sandbox.root(), start.nodes, ctx, &mut budget)?;
    }
    let mut report = RestoreReport::default();
    writer.out.into_report(&mut report);
    sort_report(&mut report);
    Ok(report)
}

// ---------------------------------------------------------------------------
// Subpath resolution

/// Where the restore starts: the directory whose entries go into the target.
struct Start {
    /// Absolute snapshot path of the directory ("" for the root). For a
    /// subpath naming a single non-directory entry, its parent's path.
    abs: Vec<u8>,
    /// Its entries; only the named one for a single non-directory entry.
    nodes: Vec<Node>,
}

fn resolve(
    repo: &IndexedRepo,
    root: TreeId,
    subpath: &[Vec<u8>],
    budget: &mut Budget,
) -> Result<Start> {
    let mut abs = Vec::new();
    let mut nodes = load_tree(repo, &root, b"/")?;
    budget.take(nodes.len())?;
    for (i, comp) in subpath.iter().enumerate() {
        sandbox::validate_name(comp).map_err(RestoreError::InvalidSubpath)?;
        let parent_abs = abs.clone();
        abs = join_abs(&abs, comp);
        let mut found = nodes.into_iter().filter(|n| &n.name == comp);
        let node = found
            .next()
            .ok_or_else(|| RestoreError::NotFound(lossy(&abs)))?;
        if found.next().is_some() {
            return Err(RestoreError::Ambiguous(lossy(&abs)));
        }
        match node.subtree() {
            Some(id) => {
                nodes = load_tree(repo, &id, &abs)?;
                budget.take(nodes.len())?;
            }
            None if i + 1 == subpath.len() => {
                return Ok(Start {
                    abs: parent_abs,
                    nodes: vec![node],
                });
            }
            None => return Err(RestoreError::NotADirectory(lossy(&abs))),
        }
    }
    Ok(Start { abs, nodes })
}

fn load_tree(repo: &IndexedRepo, id: &TreeId, abs: &[u8]) -> Result<Vec<Node>> {
    repo.load_tree(id)
        .map(|t| t.nodes)
        .map_err(|source| RestoreError::Repo {
            path: lossy(abs),
            source,
        })
}

/// `/a`, `/a/b`, ... for the absolute path `abs` (empty for the root).
fn prefixes(abs: &[u8]) -> impl Iterator<Item = &[u8]> {
    abs.iter()
        .enumerate()
        .skip(1)
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| &abs[..i])
        .chain((!abs.is_empty()).then_some(abs))
}

// ---------------------------------------------------------------------------
// Planning

/// The decision for one entry of a directory. Only the entries of the
/// directories being worked on are planned at any time.
struct Planned {
    node: Node,
    /// Absolute snapshot path.
    abs: Vec<u8>,
    /// Path relative to the target.
    rel: Vec<u8>,
    existing: Existing,
    action: EntryAction,
    /// The entry or one of its ancestors matched the include patterns. A
    /// directory that is not included is only restored when something below
    /// it is.
    included: bool,
}

/// A directory whose entries are planned.
struct DirCtx {
    /// Absolute snapshot path ("" for the root).
    abs: Vec<u8>,
    /// Path relative to the target ("" for the target).
    rel: Vec<u8>,
    /// The directory or one of its ancestors matched the include patterns.
    included: bool,
    /// The directory is skipped, and so is everything below it.
    skip: bool,
}

impl DirCtx {
    /// The context of the planned directory entry `e` of this directory.
    fn child(&self, e: &Planned) -> DirCtx {
        DirCtx {
            abs: e.abs.clone(),
            rel: e.rel.clone(),
            included: e.included,
            skip: e.action == EntryAction::Skip,
        }
    }
}

impl Planned {
    /// A directory entry restored into the existing directory of that name:
    /// what exists below it matters.
    fn merges(&self) -> bool {
        self.existing == Existing::Dir && self.action == EntryAction::Write
    }
}

/// How many more tree entries a pass may visit.
#[derive(Clone)]
struct Budget {
    limit: u64,
    left: u64,
}

impl Budget {
    fn new(limit: u64) -> Budget {
        Budget { limit, left: limit }
    }

    /// Counts the `n` entries of a tree about to be visited.
    fn take(&mut self, n: usize) -> Result<()> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        match self.left.checked_sub(n) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(RestoreError::TooManyEntries(self.limit)),
        }
    }
}

/// Decides what happens to the entries of one directory at a time. Used by
/// the read-only walk (conflict scan and dry run) and by the writer alike.
struct Planner<'a> {
    repo: &'a IndexedRepo,
    opts: &'a RestoreOptions,
    /// Dry run: keep every selected entry in [`Scan::planned`].
    keep_plan: bool,
    /// Entries that are not restored, with the reason.
    errors: &'a Mutex<Vec<EntryError>>,
    /// Told of each entry added to `errors`.
    observer: &'a dyn Observer,
}

impl Planner<'_> {
    /// The context of the directory whose entries go into the target (the
    /// subpath directory, or the parent of a single file, whose own path is
    /// then checked like any other entry's); None when it is excluded.
    /// Patterns matching it or one of its ancestors apply to everything below.
    fn root(&self, abs: &[u8]) -> Option<DirCtx> {
        if prefixes(abs).any(|p| self.opts.exclude.matches(p)) {
            return None;
        }
        let included =
            self.opts.include.is_empty() || prefixes(abs).any(|p| self.opts.include.matches(p));
        Some(DirCtx {
            abs: abs.to_vec(),
            rel: Vec::new(),
            included,
            skip: false,
        })
    }

    fn error(&self, kind: EntryErrorKind, rel: &[u8], message: String) {
        let e = EntryError::new(kind, lossy(rel), message);
        report_error(self.errors, self.observer, e);
    }

    /// Plans the entries of one directory, keeping the tree order: drops (and
    /// reports) invalid and duplicate names, applies the patterns, looks up
    /// what exists in `existing` (the matching directory of the target, if
    /// any) and decides the action. A directory entry that is not included is
    /// kept here; whether anything below it is selected is only known once
    /// its own entries are planned.
    fn plan_entries(
        &self,
        nodes: Vec<Node>,
        ctx: &DirCtx,
        existing: Option<&ReadOnlyDir>,
    ) -> Vec<Planned> {
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for n in &nodes {
            *counts.entry(n.name.clone()).or_default() += 1;
        }
        let mut reported = HashSet::new();
        let mut valid = Vec::with_capacity(nodes.len());
        for node in nodes {
            if let Err(e) = sandbox::validate_name(&node.name) {
                self.error(
                    EntryErrorKind::Rejected,
                    &join_rel(&ctx.rel, &node.name),
                    format!("not restored: {e}"),
                );
                continue;
            }
            let n = counts[&node.name];
            if n > 1 {
                if reported.insert(node.name.clone()) {
                    let msg = format!(
                        "not restored: {n} entries named {:?} in one directory of the snapshot",
                        lossy(&node.name)
                    );
                    let rel = join_rel(&ctx.rel, &node.name);
                    self.error(EntryErrorKind::Rejected, &rel, msg);
                }
                continue;
            }
            valid.push(node);
        }
        let existing = existing.filter(|_| !ctx.skip);
        valid
            .into_par_iter()
            .filter_map(|node| self.plan_entry(node, ctx, existing))
            .collect()
    }

    fn plan_entry(
        &self,
        node: Node,
        ctx: &DirCtx,
        existing: Option<&ReadOnlyDir>,
    ) -> Option<Planned> {
        let abs = join_abs(&ctx.abs, &node.name);
        if self.opts.exclude.matches(&abs) {
            return None;
        }
        let included = ctx.included || self.opts.include.matches(&abs);
        let is_dir = node.subtree().is_some();
        if !included && !is_dir {
            return None;
        }
        let rel = join_rel(&ctx.rel, &node.name);
        let existing = match existing.map(|dir| dir.existing(&node.name)) {
            None => Existing::None,
            Some(Ok(kind)) => kind,
            Some(Err(e)) => {
                self.error(EntryErrorKind::Write, &rel, text(e));
                return None;
            }
        };
        let action = if ctx.skip {
            EntryAction::Skip
        } else {
            decide(is_dir, existing, self.opts.on_conflict)
        };
        Some(Planned {
            node,
            abs,
            rel,
            existing,
            action,
            included,
        })
    }

    /// Loads the entries of the directory entry `e`, counting them against
    /// `budget`; None (reported) when its tree cannot be loaded, and the
    /// directory is not restored.
    fn load_entries(
        &self,
        e: &Planned,
        subtree: &TreeId,
        budget: &mut Budget,
    ) -> Result<Option<Vec<Node>>> {
        match self.repo.load_tree(subtree) {
            Ok(tree) => {
                budget.take(tree.nodes.len())?;
                Ok(Some(tree.nodes))
            }
            Err(err) => {
                let msg = format!("not restored: {err}");
                self.error(EntryErrorKind::Read, &e.rel, msg);
                Ok(None)
            }
        }
    }

    /// Opens the existing directory of the entry `e` of frame `i` for the
    /// lookups below it, when it is merged into; None otherwise or when it
    /// cannot be opened (the writer then reports why).
    fn open_existing<H: TargetDir, S>(
        &self,
        stack: &mut Stack<H, S>,
        i: usize,
        e: &Planned,
    ) -> Option<H> {
        if !e.merges() {
            return None;
        }
        let parent = self.reopened(stack, i)?;
        parent.subdir(&e.node.name).ok()
    }

    /// The directory of frame `i`, reopened if needed; failures are reported.
    fn reopened<H: TargetDir, S>(&self, stack: &mut Stack<H, S>, i: usize) -> Option<H> {
        match stack.open(i) {
            Ok(dir) => dir,
            Err((rel, err)) => {
                self.error(EntryErrorKind::Write, &rel, text(err));
                None
            }
        }
    }

    /// Read-only walk of the directory `ctx` with the entries `nodes` and the
    /// existing directory `existing` of the target, in tree order; None when
    /// nothing below it is selected.
    fn scan_dir(
        &self,
        nodes: Vec<Node>,
        ctx: DirCtx,
        existing: Option<ReadOnlyDir>,
        budget: &mut Budget,
    ) -> Result<Option<Scan>> {
        let todo = self.plan_entries(nodes, &ctx, existing.as_ref());
        let mut stack = Stack::new(Frame::new(ctx, Vec::new(), existing, ScanState::default()));
        stack.top().todo = todo.into_iter();
        loop {
            let i = stack.frames.len() - 1;
            let Some(e) = stack.frames[i].todo.next() else {
                let done = stack.pop();
                let Some(parent) = stack.frames.last_mut() else {
                    return Ok(done.state.below);
                };
                parent
                    .state
                    .add_dir(done.state, parent.ctx.skip, self.keep_plan);
                continue;
            };
            let Some(subtree) = e.node.subtree() else {
                let top = stack.top();
                let below = top.state.below.get_or_insert_default();
                below.record(&e, top.ctx.skip, self.keep_plan);
                continue;
            };
            let Some(nodes) = self.load_entries(&e, &subtree, budget)? else {
                continue;
            };
            let ctx = stack.frames[i].ctx.child(&e);
            let dir = self.open_existing(&mut stack, i, &e);
            let todo = self.plan_entries(nodes, &ctx, dir.as_ref());
            let name = e.node.name.clone();
            let state = ScanState {
                entry: Some(e),
                below: None,
            };
            stack.push(Frame::new(ctx, name, dir, state));
            stack.top().todo = todo.into_iter();
        }
    }
}

/// What the read-only walk keeps for a directory it is in.
#[derive(Default)]
struct ScanState {
    /// The directory's own entry (None for the walk's root).
    entry: Option<Planned>,
    /// What is selected below it so far; None while nothing is.
    below: Option<Scan>,
}

impl ScanState {
    /// Adds the subdirectory `done` that the walk has left: its entry, then
    /// what is below it, unless nothing in or below it is selected.
    fn add_dir(&mut self, done: ScanState, parent_skipped: bool, keep_plan: bool) {
        let Some(e) = done.entry else { return };
        if done.below.is_none() && !e.included {
            return;
        }
        let scan = self.below.get_or_insert_default();
        scan.record(&e, parent_skipped, keep_plan);
        if let Some(below) = done.below {
            scan.append(below);
        }
    }
}

fn decide(is_dir: bool, existing: Existing, on_conflict: OnConflict) -> EntryAction {
    match existing {
        Existing::None => EntryAction::Write,
        Existing::Dir if is_dir => EntryAction::Write,
        _ => match on_conflict {
            OnConflict::Fail => EntryAction::Conflict,
            OnConflict::Skip => EntryAction::Skip,
            OnConflict::Overwrite => EntryAction::Write,
            OnConflict::Rename => EntryAction::Rename,
        },
    }
}

/// What the read-only walk found in (part of) the selection, in tree order.
/// Everything in it is output; nothing of the plan is retained unless a dry
/// run asks for it.
#[derive(Default)]
struct Scan {
    /// Every selected entry (dry run only).
    planned: Vec<PlannedEntry>,
    conflicts: Vec<String>,
    /// Skipped entries, not counting those below a skipped directory.
    skipped: Vec<String>,
    /// Content bytes of the files that will be written.
    bytes: u64,
    files: u64,
    dirs: u64,
    symlinks: u64,
    others: u64,
}

impl Scan {
    fn record(&mut self, e: &Planned, parent_skipped: bool, keep_plan: bool) {
        if keep_plan {
            self.planned.push(PlannedEntry {
                path: shown(&e.rel),
                kind: e.node.type_name(),
                size: e.node.size,
                existing: e.existing != Existing::None,
                action: e.action,
            });
        }
        match e.action {
            EntryAction::Skip if !parent_skipped => self.skipped.push(shown(&e.rel)),
            EntryAction::Skip => {}
            EntryAction::Conflict => self.conflicts.push(shown(&e.rel)),
            EntryAction::Write | EntryAction::Rename => match e.node.kind {
                NodeKind::File { .. } => self.files += 1,
                NodeKind::Dir { .. } => self.dirs += 1,
                NodeKind::Symlink { .. } => self.symlinks += 1,
                NodeKind::Socket => {}
                _ => self.others += 1,
            },
        }
        if e.action != EntryAction::Skip {
            let content = e.node.content().iter();
            self.bytes += content.map(|c| u64::from(c.len)).sum::<u64>();
        }
    }

    /// Appends `later`, which follows in tree order.
    fn append(&mut self, mut later: Scan) {
        self.planned.append(&mut later.planned);
        self.conflicts.append(&mut later.conflicts);
        self.skipped.append(&mut later.skipped);
        self.bytes += later.bytes;
        self.files += later.files;
        self.dirs += later.dirs;
        self.symlinks += later.symlinks;
        self.others += later.others;
    }

    /// The report of a dry run (without its errors).
    fn into_report(self) -> RestoreReport {
        RestoreReport {
            files: self.files,
            dirs: self.dirs,
            symlinks: self.symlinks,
            others: self.others,
            skipped: self.skipped,
            planned: self.planned,
            ..Default::default()
        }
    }
}

fn sort_report(report: &mut RestoreReport) {
    report.skipped.sort();
    report.renamed.sort();
    report.errors.sort();
    report.verify_failures.sort();
}

// ---------------------------------------------------------------------------
// The walk's stack

/// A directory of the target as a walk holds it.
enum Held<H> {
    /// Not open: it does not exist (yet), or nothing needs it.
    Absent,
    Open(H),
    /// Closed to bound the open descriptors; reopened by name from the
    /// nearest open ancestor and checked to be this same directory.
    Closed(Identity),
    /// Could not be opened or reopened (reported); nothing below it is
    /// written.
    Failed,
}

impl<H> Held<H> {
    fn open(&self) -> Option<&H> {
        match self {
            Held::Open(h) => Some(h),
            _ => None,
        }
    }
}

/// A directory of the target that a walk can close and reopen.
trait TargetDir: Clone {
    fn identity(&self) -> Identity;
    fn subdir(&self, name: &[u8]) -> sandbox::Result<Self>;
    fn reopen(&self, name: &[u8], id: Identity) -> sandbox::Result<Self>;
}

impl TargetDir for ReadOnlyDir {
    fn identity(&self) -> Identity {
        ReadOnlyDir::identity(self)
    }
    fn subdir(&self, name: &[u8]) -> sandbox::Result<Self> {
        ReadOnlyDir::subdir(self, name)
    }
    fn reopen(&self, name: &[u8], id: Identity) -> sandbox::Result<Self> {
        ReadOnlyDir::reopen(self, name, id)
    }
}

impl TargetDir for DirHandle {
    fn identity(&self) -> Identity {
        DirHandle::identity(self)
    }
    fn subdir(&self, name: &[u8]) -> sandbox::Result<Self> {
        DirHandle::subdir(self, name)
    }
    fn reopen(&self, name: &[u8], id: Identity) -> sandbox::Result<Self> {
        DirHandle::reopen(self, name, id)
    }
}

/// A directory a walk is in.
struct Frame<H, S> {
    ctx: DirCtx,
    /// Its name in the parent directory of the target (differs from the
    /// snapshot's with [`OnConflict::Rename`]).
    name: Vec<u8>,
    held: Held<H>,
    /// Its entries the walk has yet to visit, in tree order.
    todo: std::vec::IntoIter<Planned>,
    /// What the pass keeps for it.
    state: S,
}

impl<H, S> Frame<H, S> {
    fn new(ctx: DirCtx, name: Vec<u8>, dir: Option<H>, state: S) -> Frame<H, S> {
        Frame {
            ctx,
            name,
            held: dir.map_or(Held::Absent, Held::Open),
            todo: Vec::new().into_iter(),
            state,
        }
    }
}

/// The directories from a walk's root down to the one it is in: an explicit
/// stack, so no recursion grows with the depth of the tree. Only the root
/// and the [`OPEN_DIRS`] deepest directories keep their descriptors open.
struct Stack<H, S> {
    frames: Vec<Frame<H, S>>,
}

impl<H: TargetDir, S> Stack<H, S> {
    fn new(root: Frame<H, S>) -> Stack<H, S> {
        Stack { frames: vec![root] }
    }

    fn top(&mut self) -> &mut Frame<H, S> {
        self.frames.last_mut().expect("walk stack")
    }

    fn push(&mut self, frame: Frame<H, S>) {
        self.frames.push(frame);
        if let Some(f) = self.frames.len().checked_sub(OPEN_DIRS + 1) {
            self.close_outside(f);
        }
    }

    fn pop(&mut self) -> Frame<H, S> {
        self.frames.pop().expect("walk stack")
    }

    /// Closes the directory of frame `f` when it is outside the window of
    /// open descriptors: not the root and not one of the [`OPEN_DIRS`]
    /// deepest frames.
    fn close_outside(&mut self, f: usize) {
        if f == 0 || f + OPEN_DIRS >= self.frames.len() {
            return;
        }
        let frame = &mut self.frames[f];
        if let Held::Open(dir) = &frame.held {
            frame.held = Held::Closed(dir.identity());
        }
    }

    /// The open directory of frame `i`, reopened (with its closed ancestors,
    /// from the nearest open one) when it was closed; None when it is absent
    /// or failed. A directory that is no longer the one the walk opened is
    /// an error, with its path relative to the target.
    fn open(&mut self, i: usize) -> std::result::Result<Option<H>, (Vec<u8>, SandboxError)> {
        let mut j = i;
        while matches!(self.frames[j].held, Held::Closed(_)) {
            j -= 1;
        }
        for k in j + 1..=i {
            let (Some(parent), Held::Closed(id)) =
                (self.frames[k - 1].held.open(), &self.frames[k].held)
            else {
                return Ok(None);
            };
            match parent.reopen(&self.frames[k].name, *id) {
                Ok(dir) => self.frames[k].held = Held::Open(dir),
                Err(err) => {
                    self.frames[k].held = Held::Failed;
                    return Err((self.frames[k].ctx.rel.clone(), err));
                }
            }
            self.close_outside(k - 1);
        }
        Ok(self.frames[i].held.open().cloned())
    }
}

// ---------------------------------------------------------------------------
// Writing

/// Results gathered from parallel workers.
#[derive(Default)]
struct Collector {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    others: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
    skipped: Mutex<Vec<String>>,
    renamed: Mutex<Vec<(String, String)>>,
    errors: Mutex<Vec<EntryError>>,
    verify_failures: Mutex<Vec<EntryError>>,
}

impl Collector {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn push<T>(list: &Mutex<Vec<T>>, item: T) {
        list.lock().expect("report lock").push(item);
    }

    fn into_report(self, report: &mut RestoreReport) {
        let get = |c: AtomicU64| c.into_inner();
        fn take<T>(m: Mutex<Vec<T>>) -> Vec<T> {
            m.into_inner().expect("report lock")
        }
        report.files = get(self.files);
        report.dirs = get(self.dirs);
        report.symlinks = get(self.symlinks);
        report.others = get(self.others);
        report.bytes_written = get(self.bytes);
        report.verified_files = get(self.verified);
        report.skipped = self.skipped.into_inner().expect("report lock");
        report.renamed = take(self.renamed);
        report.errors.extend(take(self.errors));
        report.verify_failures = take(self.verify_failures);
    }
}

struct Writer<'a> {
    repo: &'a IndexedRepo,
    opts: &'a RestoreOptions,
    progress: &'a dyn Observer,
    out: Collector,
}

type EntryResult = std::result::Result<(), String>;

/// What the writer keeps for a directory it is in.
struct WriteState {
    /// The directory's own entry (None for the target).
    entry: Option<Planned>,
    /// The directory is restored into (created, renamed or merged into, and
    /// counted). A directory that is not included itself is only created when
    /// the first entry below it is written, so that it only appears when
    /// something below it is restored.
    ready: bool,
    /// This restore created it: its metadata is set when the walk leaves it.
    created: bool,
}

/// Entries gathered from consecutive directories to be written together,
/// and the directories left since then whose metadata is set after them.
#[derive(Default)]
struct Batch {
    /// Each directory with its entries that are not directories.
    leaves: Vec<(DirHandle, Vec<Planned>)>,
    /// Directories this restore created that the walk has left, in
    /// post-order, with their entries.
    left: Vec<(DirHandle, Planned)>,
    entries: usize,
    /// Some entry may be written under another name: the names it takes
    /// must be taken before the next directory is created.
    renames: bool,
}

impl Batch {
    fn full(&self) -> bool {
        self.entries >= BATCH_ENTRIES || self.leaves.len() + self.left.len() >= BATCH_DIRS
    }
}

/// A file of a batch, created and waiting for its content.
struct OpenFile<'b> {
    dir: &'b DirHandle,
    e: &'b Planned,
    content: &'b [ChunkRef],
    /// [`chunk_offsets`] of `content`.
    offsets: Vec<u64>,
    file: File,
    /// The name it was created under.
    used: Vec<u8>,
    /// Chunks not written yet.
    left: AtomicUsize,
    /// The first error writing its content.
    error: OnceLock<String>,
}

impl OpenFile<'_> {
    /// Writes the plaintext `data` of chunk `i` at its offset, unless the
    /// file has failed already.
    fn put(&self, i: usize, data: &[u8], progress: &dyn Observer) {
        if self.error.get().is_some() {
            return;
        }
        let (chunk, offset) = (&self.content[i], self.offsets[i]);
        if data.len() != chunk.len as usize {
            let (id, n, want) = (chunk.id, data.len(), chunk.len);
            return self.fail(format!(
                "blob {id} holds {n} bytes, the snapshot says {want}"
            ));
        }
        if let Err(e) = self.file.write_all_at(data, offset) {
            return self.fail(format!("write at offset {offset}: {e}"));
        }
        self.left.fetch_sub(1, Ordering::Relaxed);
        progress.add(Counters {
            bytes_added: chunk.len as u64,
            ..Counters::default()
        });
    }

    fn fail(&self, msg: String) {
        let _ = self.error.set(msg);
    }
}

impl Writer<'_> {
    /// Plans with the writer's error list.
    fn planner(&self) -> Planner<'_> {
        Planner {
            repo: self.repo,
            opts: self.opts,
            keep_plan: false,
            errors: &self.out.errors,
            observer: self.progress,
        }
    }

    fn report(&self, rel: &[u8], msg: String) {
        let e = EntryError::new(EntryErrorKind::Write, shown(rel), msg);
        report_error(&self.out.errors, self.progress, e);
    }

    /// Restores the entries `nodes` of the directory `ctx` into `root`,
    /// walking the subdirectories depth first with an explicit stack.
    fn write_tree(
        &self,
        root: DirHandle,
        nodes: Vec<Node>,
        ctx: DirCtx,
        budget: &mut Budget,
    ) -> Result<()> {
        let state = WriteState {
            entry: None,
            ready: true,
            created: false,
        };
        let mut stack = Stack::new(Frame::new(ctx, Vec::new(), Some(root), state));
        let mut batch = Batch::default();
        self.enter(&mut stack, &mut batch, nodes);
        while let Some(i) = stack.frames.len().checked_sub(1) {
            self.opts.cancel.check()?;
            match stack.frames[i].todo.next() {
                Some(e) => self.descend(&mut stack, &mut batch, e, budget)?,
                None => self.leave(&mut stack, &mut batch),
            }
        }
        self.flush(&mut batch);
        Ok(self.opts.cancel.check()?)
    }

    /// Writes the entries of the batch, [`OPEN_FILES`] files at a time
    /// (other entries in parallel with their creation), then sets the
    /// metadata of the directories it holds that the walk has left.
    fn flush(&self, batch: &mut Batch) {
        let Batch { leaves, left, .. } = std::mem::take(batch);
        let entries: Vec<(&DirHandle, &Planned)> = (leaves.iter())
            .flat_map(|(dir, entries)| entries.iter().map(move |e| (dir, e)))
            .collect();
        let chunks = entries.iter().map(|(_, e)| e.node.content().len());
        for group in groups(chunks) {
            let files: Vec<OpenFile> = (entries[group].par_iter())
                .filter_map(|(dir, e)| self.write_leaf(dir, e))
                .collect();
            self.write_contents(&files);
            (files.into_par_iter()).for_each(|f| self.finish_file(f));
        }
        for (dir, e) in left {
            if let Err(err) = dir.set_dir_meta(&self.meta(&e.node)) {
                self.report(&e.rel, text(err));
            }
        }
    }

    /// Enters the subdirectory entry `e` of the current directory (or, when
    /// it is skipped, only walks it read-only).
    fn descend(
        &self,
        stack: &mut Stack<DirHandle, WriteState>,
        batch: &mut Batch,
        e: Planned,
        budget: &mut Budget,
    ) -> Result<()> {
        let planner = self.planner();
        let NodeKind::Dir { subtree } = &e.node.kind else {
            return Ok(());
        };
        let Some(nodes) = planner.load_entries(&e, subtree, budget)? else {
            return Ok(());
        };
        let i = stack.frames.len() - 1;
        let ctx = stack.frames[i].ctx.child(&e);
        if e.action == EntryAction::Skip {
            // Nothing below is written. The read-only walk reports the errors
            // below it and tells whether anything below is selected.
            let selected = planner.scan_dir(nodes, ctx, None, budget)?.is_some();
            if (e.included || selected) && self.ensure(stack, batch, i).is_some() {
                Collector::push(&self.out.skipped, shown(&e.rel));
            }
            return Ok(());
        }
        let dir = planner.open_existing(stack, i, &e);
        let name = e.node.name.clone();
        let state = WriteState {
            entry: Some(e),
            ready: false,
            created: false,
        };
        stack.push(Frame::new(ctx, name, dir, state));
        self.enter(stack, batch, nodes);
        Ok(())
    }

    /// Plans the entries of the directory just entered and adds the ones
    /// that are not directories to the batch; the walk visits the
    /// subdirectories. The directory itself is restored into first when it
    /// holds anything to write or is included itself.
    fn enter(&self, stack: &mut Stack<DirHandle, WriteState>, batch: &mut Batch, nodes: Vec<Node>) {
        let i = stack.frames.len() - 1;
        let top = stack.top();
        let lookup = top.held.open().map(DirHandle::read_only);
        let planned = self
            .planner()
            .plan_entries(nodes, &top.ctx, lookup.as_ref());
        drop(lookup);
        let included = top.state.entry.as_ref().is_some_and(|e| e.included);
        let (dirs, leaves): (Vec<Planned>, Vec<Planned>) = planned
            .into_iter()
            .partition(|e| e.node.subtree().is_some());
        if (!leaves.is_empty() || included)
            && let Some(dir) = self.ensure(stack, batch, i)
            && !leaves.is_empty()
        {
            batch.entries += leaves.len();
            batch.renames |= leaves.iter().any(|e| e.action == EntryAction::Rename);
            batch.leaves.push((dir, leaves));
            if batch.full() {
                self.flush(batch);
            }
        }
        stack.frames[i].todo = dirs.into_iter();
    }

    /// Leaves the current directory: when this restore created it, its
    /// metadata is set after the entries below it that the batch holds.
    fn leave(&self, stack: &mut Stack<DirHandle, WriteState>, batch: &mut Batch) {
        let i = stack.frames.len() - 1;
        if stack.frames[i].state.created
            && let Some(dir) = self.reopened(stack, i)
        {
            let frame = stack.pop();
            batch.left.extend(frame.state.entry.map(|e| (dir, e)));
            if batch.full() {
                self.flush(batch);
            }
        } else {
            stack.pop();
        }
    }

    /// The directory of frame `i`, restored into first (with its parents)
    /// when it is not yet; None when that failed (reported once). The batch
    /// is written first when a name is to be chosen, so that names are
    /// taken in the order of the walk.
    fn ensure(
        &self,
        stack: &mut Stack<DirHandle, WriteState>,
        batch: &mut Batch,
        i: usize,
    ) -> Option<DirHandle> {
        let mut j = i;
        while !stack.frames[j].state.ready {
            j -= 1;
        }
        for k in j + 1..=i {
            let renamed = stack.frames[k]
                .state
                .entry
                .as_ref()
                .is_some_and(|e| e.action == EntryAction::Rename);
            if batch.renames || renamed {
                self.flush(batch);
            }
            self.make_ready(stack, k)?;
            stack.close_outside(k - 1);
        }
        self.reopened(stack, i)
    }

    /// Creates, renames or merges into the directory of frame `k`, whose
    /// parent is ready.
    fn make_ready(&self, stack: &mut Stack<DirHandle, WriteState>, k: usize) -> Option<()> {
        if matches!(stack.frames[k].held, Held::Failed) {
            return None;
        }
        let parent = self.reopened(stack, k - 1)?;
        let frame = &mut stack.frames[k];
        let e = frame.state.entry.as_ref()?;
        match self.open_dir(&parent, e) {
            Ok((handle, used, created)) => {
                frame.held = Held::Open(handle);
                frame.name = used;
                frame.state.ready = true;
                frame.state.created = created;
                Some(())
            }
            Err(msg) => {
                self.report(&e.rel, msg);
                frame.held = Held::Failed;
                None
            }
        }
    }

    /// The directory of frame `i`, reopened if needed; failures are reported.
    fn reopened(&self, stack: &mut Stack<DirHandle, WriteState>, i: usize) -> Option<DirHandle> {
        self.planner().reopened(stack, i)
    }

    /// Writes the non-directory entry `e` into `dir`, unless it is skipped;
    /// a file is only created, and returned for its content to be written.
    fn write_leaf<'b>(&self, dir: &'b DirHandle, e: &'b Planned) -> Option<OpenFile<'b>> {
        if self.opts.cancel.is_cancelled() {
            return None;
        }
        let result = match e.action {
            EntryAction::Skip => {
                Collector::push(&self.out.skipped, shown(&e.rel));
                Ok(None)
            }
            // Not reached: conflicts abort the restore before writing.
            EntryAction::Conflict => Err("already exists".into()),
            EntryAction::Write | EntryAction::Rename => self.write_node(dir, e),
        };
        result.unwrap_or_else(|msg| {
            self.report(&e.rel, msg);
            None
        })
    }

    fn write_node<'b>(
        &self,
        dir: &'b DirHandle,
        e: &'b Planned,
    ) -> std::result::Result<Option<OpenFile<'b>>, String> {
        let done = |_| None;
        match &e.node.kind {
            NodeKind::File { content } => self.create_file(dir, e, content),
            NodeKind::Symlink { target } => self.write_symlink(dir, e, target).map(done),
            NodeKind::Fifo => self.write_special(dir, e, Special::Fifo, 0).map(done),
            NodeKind::CharDev { rdev } => {
                (self.write_device(dir, e, Special::CharDevice, *rdev)).map(done)
            }
            NodeKind::BlockDev { rdev } => {
                (self.write_device(dir, e, Special::BlockDevice, *rdev)).map(done)
            }
            NodeKind::Socket => Err("skipped special file: sockets are not restored".into()),
            // Not reached: the walk visits directories.
            NodeKind::Dir { .. } => Ok(None),
        }
    }

    /// Creates (or opens, when merging) the directory of the entry `e` in
    /// `parent`; also says which name it got and whether this restore
    /// created it.
    fn open_dir(
        &self,
        parent: &DirHandle,
        e: &Planned,
    ) -> std::result::Result<(DirHandle, Vec<u8>, bool), String> {
        let opened = match e.action {
            EntryAction::Rename => {
                let (handle, used) = self.renamed_dir(parent, &e.node.name)?;
                self.record_rename(parent, e, &used);
                (handle, used, true)
            }
            EntryAction::Write => {
                let handle = parent
                    .dir(&e.node.name, self.opts.on_conflict)
                    .map_err(text)?;
                (handle, e.node.name.clone(), e.existing != Existing::Dir)
            }
            // Not reached: conflicts abort the restore before writing, and
            // skipped directories are never opened.
            EntryAction::Conflict | EntryAction::Skip => return Err("already exists".into()),
        };
        Collector::add(&self.out.dirs, 1);
        Ok(opened)
    }

    fn meta(&self, node: &Node) -> Meta {
        Meta {
            mode: node.mode & 0o7777,
            mtime_sec: node.mtime.sec,
            mtime_nsec: node.mtime.nsec,
            uid: self.opts.owner.then_some(node.uid),
            gid: self.opts.owner.then_some(node.gid),
        }
    }

    /// Records a rename and returns the written name; None when skipped.
    fn placed<T>(&self, dir: &DirHandle, e: &Planned, placed: Placed<T>) -> Option<(T, Vec<u8>)> {
        match placed {
            Placed::Skipped => {
                Collector::push(&self.out.skipped, shown(&e.rel));
                None
            }
            Placed::Written(value, used) => {
                if used != e.node.name {
                    self.record_rename(dir, e, &used);
                }
                Some((value, used))
            }
        }
    }

    fn record_rename(&self, dir: &DirHandle, e: &Planned, used: &[u8]) {
        let new = shown(&join_rel(dir.rel_path(), used));
        Collector::push(&self.out.renamed, (shown(&e.rel), new));
    }

    /// Creates `name.strata-restored[-N]`, the first candidate that is free.
    fn renamed_dir(
        &self,
        parent: &DirHandle,
        name: &[u8],
    ) -> std::result::Result<(DirHandle, Vec<u8>), String> {
        let used = parent.free_name(name).map_err(text)?;
        let handle = parent.dir(&used, OnConflict::Fail).map_err(text)?;
        Ok((handle, used))
    }
    /// Creates the file of `e` for its content to be written (None when it
    /// is skipped).
    fn create_file<'b>(
        &self,
        dir: &'b DirHandle,
        e: &'b Planned,
        content: &'b [ChunkRef],
    ) -> std::result::Result<Option<OpenFile<'b>>, String> {
        self.progress.item(&shown(&e.rel));
        let placed = dir
            .create_file(&e.node.name, self.opts.on_conflict)
            .map_err(text)?;
        Ok(self.placed(dir, e, placed).map(|(file, used)| OpenFile {
            dir,
            e,
            content,
            offsets: chunk_offsets(content),
            file,
            used,
            left: AtomicUsize::new(content.len()),
            error: OnceLock::new(),
        }))
    }

    /// Writes the content of `files`: each chunk is read once, by pack, and
    /// written at its offset in every file that holds it; progress moves per
    /// chunk. A chunk that could not be read so is read alone, and its error
    /// fails the files that hold it.
    fn write_contents(&self, files: &[OpenFile]) {
        let wanted = files.iter().enumerate().flat_map(|(f, file)| {
            (file.content.iter().enumerate()).map(move |(i, chunk)| (chunk.id, (f, i)))
        });
        let deliver = |plain: &[u8], dests: &[(usize, usize)]| {
            for &(f, i) in dests {
                files[f].put(i, plain, self.progress);
            }
        };
        let unread = read_by_pack(self.repo, wanted, &self.opts.cancel, deliver);
        (unread.into_par_iter()).for_each(|(id, dests)| {
            if self.opts.cancel.is_cancelled() {
                return;
            }
            match self.repo.read_blob(&id) {
                Ok(plain) => deliver(&plain, &dests),
                Err(err) => dests.iter().for_each(|&(f, _)| files[f].fail(text(&err))),
            }
        });
    }

    /// Counts, verifies and sets the metadata of a file whose content is
    /// all written; removes one whose content is not, and reports why.
    fn finish_file(&self, f: OpenFile) {
        if let Err(msg) = self.finish(&f) {
            self.report(&f.e.rel, msg);
        }
    }

    fn finish(&self, f: &OpenFile) -> EntryResult {
        if let Err(msg) = self.content_written(f) {
            return Err(match f.dir.remove_if_same(&f.used, &f.file) {
                Ok(()) => msg,
                Err(why) => format!("{msg} (the partial file could not be removed: {why})"),
            });
        }
        Collector::add(&self.out.files, 1);
        Collector::add(&self.out.bytes, f.offsets.last().copied().unwrap_or(0));
        self.progress.add(Counters::files(1));
        if self.opts.verify {
            match self.verify_content(&f.file, f.dir, &f.used, f.content) {
                Ok(()) => Collector::add(&self.out.verified, 1),
                Err(msg) => {
                    let path = shown(&join_rel(f.dir.rel_path(), &f.used));
                    let e = EntryError::new(EntryErrorKind::Verify, path, msg);
                    report_error(&self.out.verify_failures, self.progress, e);
                }
            }
        }
        sandbox::set_file_meta(&f.file, &self.meta(&f.e.node)).map_err(text)
    }

    /// Ok when every chunk of `f` was written; else its first error, or the
    /// cancellation that stopped the reads.
    fn content_written(&self, f: &OpenFile) -> EntryResult {
        if let Some(msg) = f.error.get() {
            return Err(msg.clone());
        }
        if f.left.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        self.opts.cancel.check().map_err(text)?;
        Err("not every chunk of the file was read".into())
    }

    /// Re-reads the file just written and checks every chunk-sized piece
    /// against its keyed id, and the length.
    fn verify_content(
        &self,
        file: &File,
        dir: &DirHandle,
        name: &[u8],
        content: &[ChunkRef],
    ) -> EntryResult {
        let reader = dir.open_read(name, file).map_err(text)?;
        let offsets = chunk_offsets(content);
        let expected = offsets.last().copied().unwrap_or(0);
        let actual = reader.metadata().map_err(|e| format!("stat: {e}"))?.len();
        if actual != expected {
            return Err(format!(
                "size is {actual} bytes, the snapshot says {expected}"
            ));
        }
        let key = self.repo.key();
        let check_chunk = |i: usize| -> EntryResult {
            let chunk = &content[i];
            let mut buf = vec![0u8; chunk.len as usize];
            reader
                .read_exact_at(&mut buf, offsets[i])
                .map_err(|e| format!("read at offset {}: {e}", offsets[i]))?;
            if key.blob_id(&buf) != chunk.id {
                return Err(format!(
                    "bytes {}..{} differ from chunk {}",
                    offsets[i],
                    offsets[i + 1],
                    chunk.id
                ));
            }
            Ok(())
        };
        (0..content.len()).into_par_iter().try_for_each(check_chunk)
    }

    fn write_symlink(&self, dir: &DirHandle, e: &Planned, target: &[u8]) -> EntryResult {
        let placed = dir
            .symlink(&e.node.name, target, self.opts.on_conflict)
            .map_err(text)?;
        let Some((pinned, _)) = self.placed(dir, e, placed) else {
            return Ok(());
        };
        Collector::add(&self.out.symlinks, 1);
        pinned.set_meta(&self.meta(&e.node)).map_err(text)
    }

    /// Device nodes are only restored as root.
    fn write_device(&self, dir: &DirHandle, e: &Planned, kind: Special, rdev: u64) -> EntryResult {
        if !rustix::process::geteuid().is_root() {
            return Err("skipped special file: device nodes are only restored as root".into());
        }
        self.write_special(dir, e, kind, rdev)
    }

    /// Fifos and device nodes, with the conflict rules of the sandbox.
    fn write_special(&self, dir: &DirHandle, e: &Planned, kind: Special, rdev: u64) -> EntryResult {
        let placed = dir
            .mknod(&e.node.name, kind, rdev, self.opts.on_conflict)
            .map_err(text)?;
        let Some((pinned, _)) = self.placed(dir, e, placed) else {
            return Ok(());
        };
        Collector::add(&self.out.others, 1);
        pinned.set_meta(&self.meta(&e.node)).map_err(text)
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// Consecutive ranges of entries with `chunks` chunks each, every range at
/// most [`OPEN_FILES`] entries and [`GROUP_CHUNKS`] chunks (an entry with
/// more chunks is a range of its own).
fn groups(chunks: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    let mut held = 0;
    for (i, n) in chunks.enumerate() {
        match ranges.last_mut() {
            Some(r) if r.len() < OPEN_FILES && held + n <= GROUP_CHUNKS => {
                r.end = i + 1;
                held += n;
            }
            _ => {
                ranges.push(i..i + 1);
                held = n;
            }
        }
    }
    ranges
}

fn join_abs(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    out.extend_from_slice(parent);
    out.push(b'/');
    out.extend_from_slice(name);
    out
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    join_abs(parent, name)
}

/// Lists an entry left out and tells the observer.
fn report_error(list: &Mutex<Vec<EntryError>>, observer: &dyn Observer, e: EntryError) {
    observer.error(&e);
    Collector::push(list, e);
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path relative to the target as shown in the report.
fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        return ".".into();
    }
    lossy(rel)
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_hold_at_most_the_open_files_and_chunks_unless_one_entry_has_more() {
        use super::{GROUP_CHUNKS, OPEN_FILES, groups};
        assert_eq!((OPEN_FILES, GROUP_CHUNKS), (3, 10));
        let got = groups([0, 0, 0, 0, 4, 7, 11, 2, 8, 1].into_iter());
        assert_eq!(got, vec![0..3, 3..5, 5..6, 6..7, 7..9, 9..10]);
        assert!(groups(std::iter::empty()).is_empty());
    }

    use super::*;
    use crate::observer::Quiet;
    use crate::ops::sandbox::tests::names;
    use crate::repo::blob::BlobType;
    use crate::repo::id::BlobId;
    use crate::repo::id::Id;
    use crate::repo::locked::Locked;
    use crate::repo::tree::{Timespec, Tree};
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;
    use tempfile::TempDir;

    struct Fx {
        tmp: TempDir,
        repo: IndexedRepo,
    }

    impl Fx {
        fn new() -> Fx {
            let tmp = tempfile::tempdir().unwrap();
            let repo = indexed_repo(tmp.path(), 16 * 1024);
            Fx { tmp, repo }
        }

        fn target(&self) -> PathBuf {
            self.tmp.path().join("target")
        }

        fn opts(&self) -> RestoreOptions {
            RestoreOptions::new(self.target())
        }

        fn restore(&self, root: TreeId, opts: &RestoreOptions) -> Result<RestoreReport> {
            restore(&self.repo, root, opts, u64::MAX, &Quiet)
        }
    }

    fn node(name: &[u8], kind: NodeKind, mode: u32, mtime: (i64, u32)) -> Node {
        let size = match &kind {
            NodeKind::File { content } => content.iter().map(|c| u64::from(c.len)).sum(),
            _ => 0,
        };
        Node {
            name: name.to_vec(),
            kind,
            mode,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            user: "u".into(),
            group: "g".into(),
            mtime: Timespec {
                sec: mtime.0,
                nsec: mtime.1,
            },
            ctime: Timespec::default(),
            inode: 0,
            device: 0,
            links: 1,
            size,
            xattrs: vec![],
        }
    }

    /// Saves chunks and trees; `flush` before restoring.
    struct Builder<'r> {
        packer: Packer<'r>,
    }

    impl<'r> Builder<'r> {
        fn new(lock: &'r Locked<'r, IndexedRepo>) -> Builder<'r> {
            Builder {
                packer: Packer::new(lock, false),
            }
        }

        fn file(&self, name: &[u8], parts: &[&[u8]], mode: u32, mtime: (i64, u32)) -> Node {
            let content = parts
                .iter()
                .map(|p| ChunkRef {
                    id: self.packer.save(BlobType::Data, p).unwrap().0,
                    len: p.len() as u32,
                })
                .collect();
            node(name, NodeKind::File { content }, mode, mtime)
        }

        /// A tree stored exactly as given (no sorting, duplicates allowed).
        fn tree(&self, nodes: Vec<Node>) -> TreeId {
            let tree = Tree { nodes };
            self.packer.save_tree(&tree).unwrap().0
        }

        fn dir(&self, name: &[u8], nodes: Vec<Node>, mode: u32, mtime: (i64, u32)) -> Node {
            let subtree = self.tree(Tree::new(nodes).nodes);
            node(name, NodeKind::Dir { subtree }, mode, mtime)
        }

        fn flush(&self) {
            self.packer.flush().unwrap();
        }
    }

    fn link(name: &[u8], target: &[u8], mtime: (i64, u32)) -> Node {
        let kind = NodeKind::Symlink {
            target: target.to_vec(),
        };
        node(name, kind, 0o777, mtime)
    }

    /// A restored file's expected state.
    struct Want {
        rel: &'static str,
        data: Vec<u8>,
        mode: u32,
        mtime: (i64, u32),
    }

    struct Sample {
        root: TreeId,
        files: Vec<Want>,
    }

    /// /a.txt (3 chunks), /big (40 chunks), /empty, /link -> a.txt,
    /// /sub/ (b.bin, deep/c).
    fn sample(repo: &IndexedRepo) -> Sample {
        let lock = crate::repo::locked::exclusive(repo);
        let b = Builder::new(&lock);
        let mut files = Vec::new();
        let mut file = |rel: &'static str, parts: Vec<Vec<u8>>, mode, mtime| {
            let name = rel.rsplit('/').next().unwrap().as_bytes();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let n = b.file(name, &refs, mode, mtime);
            files.push(Want {
                rel,
                data: parts.concat(),
                mode,
                mtime,
            });
            n
        };
        let a = file(
            "a.txt",
            vec![
                random_blob(1)[..700].to_vec(),
                random_blob(2),
                random_blob(3)[..5].to_vec(),
            ],
            0o640,
            (1_600_000_000, 123_456_789),
        );
        let big = file(
            "big",
            (0..40).map(|i| random_blob(100 + i)).collect(),
            0o600,
            (1_000, 1),
        );
        let empty = file("empty", vec![], 0o604, (1_234, 999_999_999));
        let bbin = file(
            "sub/b.bin",
            vec![random_blob(4), random_blob(5)],
            0o755,
            (1_400_000_000, 0),
        );
        let c = file(
            "sub/deep/c",
            vec![random_blob(6)[..10].to_vec()],
            0o444,
            (1_300_000_000, 42),
        );
        let deep = b.dir(b"deep", vec![c], 0o700, (1_300_000_001, 77));
        let sub = b.dir(b"sub", vec![bbin, deep], 0o750, (1_500_000_000, 5));
        let l = link(b"link", b"a.txt", (1_111, 222));
        let root = b.tree(Tree::new(vec![a, big, empty, l, sub]).nodes);
        b.flush();
        Sample { root, files }
    }

    fn check_file(target: &Path, w: &Want) {
        let path = target.join(w.rel);
        assert_eq!(fs::read(&path).unwrap(), w.data, "{}", w.rel);
        let md = fs::symlink_metadata(&path).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o7777, w.mode, "{}", w.rel);
        assert_eq!((md.mtime(), md.mtime_nsec() as u32), w.mtime, "{}", w.rel);
    }

    fn check_dir_meta(path: &Path, mode: u32, mtime: (i64, u32)) {
        let md = fs::symlink_metadata(path).unwrap();
        assert!(md.is_dir(), "{}", path.display());
        assert_eq!(md.mode() & 0o7777, mode, "{}", path.display());
        assert_eq!((md.mtime(), md.mtime_nsec() as u32), mtime);
    }

    #[derive(Default)]
    struct Counting {
        total: AtomicU64,
        advanced: AtomicU64,
    }

    impl Observer for Counting {
        fn total(&self, expected: Counters) {
            self.total.store(expected.bytes_added, Ordering::Relaxed);
        }
        fn add(&self, done: Counters) {
            self.advanced.fetch_add(done.bytes_added, Ordering::Relaxed);
        }
    }

    #[test]
    fn whole_snapshot_round_trip() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let mut opts = fx.opts();
        opts.owner = true;
        let progress = Counting::default();
        let report = restore(&fx.repo, s.root, &opts, u64::MAX, &progress).unwrap();
        let t = fx.target();
        for w in &s.files {
            check_file(&t, w);
        }
        let link = t.join("link");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("a.txt"));
        let lmd = fs::symlink_metadata(&link).unwrap();
        assert_eq!((lmd.mtime(), lmd.mtime_nsec()), (1_111, 222));
        check_dir_meta(&t.join("sub"), 0o750, (1_500_000_000, 5));
        check_dir_meta(&t.join("sub/deep"), 0o700, (1_300_000_001, 77));
        assert_eq!(names(&t), ["a.txt", "big", "empty", "link", "sub"]);

        let total: u64 = s.files.iter().map(|w| w.data.len() as u64).sum();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            (report.files, report.dirs, report.symlinks, report.others),
            (5, 2, 1, 0)
        );
        assert_eq!(report.bytes_written, total);
        assert_eq!(progress.total.load(Ordering::Relaxed), total);
        assert_eq!(progress.advanced.load(Ordering::Relaxed), total);
        assert!(report.planned.is_empty() && report.skipped.is_empty());
        assert_eq!(report.verified_files, 0);
    }

    #[test]
    fn verify_reports_every_file_of_a_good_restore() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let mut opts = fx.opts();
        opts.verify = true;
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(report.verified_files, s.files.len() as u64);
        assert!(
            report.verify_failures.is_empty(),
            "{:?}",
            report.verify_failures
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }

    #[test]
    fn subpath_restores_directory_contents_or_one_file() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let mut opts = fx.opts();
        opts.subpath = vec![b"sub".to_vec()];
        fx.restore(s.root, &opts).unwrap();
        let t = fx.target();
        assert_eq!(names(&t), ["b.bin", "deep"]);
        assert_eq!(fs::read(t.join("b.bin")).unwrap(), s.files[3].data);
        assert_eq!(fs::read(t.join("deep/c")).unwrap(), s.files[4].data);

        let mut opts = RestoreOptions::new(fx.tmp.path().join("one"));
        opts.subpath = vec![b"sub".to_vec(), b"deep".to_vec(), b"c".to_vec()];
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(report.files, 1);
        assert_eq!(names(&opts.target), ["c"]);
        check_file(
            &opts.target,
            &Want {
                rel: "c",
                data: s.files[4].data.clone(),
                mode: 0o444,
                mtime: (1_300_000_000, 42),
            },
        );

        opts.subpath = vec![b"sub".to_vec(), b"nope".to_vec()];
        let err = fx.restore(s.root, &opts).unwrap_err();
        assert!(
            matches!(&err, RestoreError::NotFound(p) if p == "/sub/nope"),
            "{err}"
        );
        opts.subpath = vec![b"a.txt".to_vec(), b"x".to_vec()];
        let err = fx.restore(s.root, &opts).unwrap_err();
        assert!(
            matches!(&err, RestoreError::NotADirectory(p) if p == "/a.txt"),
            "{err}"
        );
        opts.subpath = vec![b"..".to_vec()];
        let err = fx.restore(s.root, &opts).unwrap_err();
        assert!(matches!(err, RestoreError::InvalidSubpath(_)), "{err}");
    }

    #[test]
    fn include_creates_parents_and_exclude_prunes() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let t = fx.target();

        let mut opts = fx.opts();
        opts.include = Patterns::new(&["/sub/deep"]).unwrap();
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(names(&t), ["sub"]);
        assert_eq!(names(&t.join("sub")), ["deep"]);
        assert_eq!(fs::read(t.join("sub/deep/c")).unwrap(), s.files[4].data);
        // The parent directory was created by this restore: its metadata too.
        check_dir_meta(&t.join("sub"), 0o750, (1_500_000_000, 5));
        assert_eq!((report.files, report.dirs), (1, 2));

        let mut opts = RestoreOptions::new(fx.tmp.path().join("ex"));
        opts.exclude = Patterns::new(&["*.bin", "/sub/deep", "big"]).unwrap();
        fx.restore(s.root, &opts).unwrap();
        assert_eq!(names(&opts.target), ["a.txt", "empty", "link", "sub"]);
        assert!(names(&opts.target.join("sub")).is_empty());

        // With a subpath, patterns still see the full snapshot path.
        let mut opts = RestoreOptions::new(fx.tmp.path().join("sp"));
        opts.subpath = vec![b"sub".to_vec()];
        opts.include = Patterns::new(&["/sub/b.bin"]).unwrap();
        fx.restore(s.root, &opts).unwrap();
        assert_eq!(names(&opts.target), ["b.bin"]);
    }

    #[test]
    fn unselected_directories_are_neither_created_nor_skipped() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let t = fx.target();
        fs::create_dir(&t).unwrap();
        fs::write(t.join("sub"), b"a file where the snapshot has a dir").unwrap();
        let mut opts = fx.opts();
        opts.on_conflict = OnConflict::Skip;
        // Nothing below /sub matches: it is not reported as skipped.
        opts.include = Patterns::new(&["/a.txt", "/sub/nothing"]).unwrap();
        let report = fx.restore(s.root, &opts).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(names(&t), ["a.txt", "sub"]);
        // Something below it matches: the skipped directory is reported.
        opts.include = Patterns::new(&["/sub/deep/c"]).unwrap();
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(report.skipped, ["sub"]);

        // Without a conflict, an unselected directory is not created, and a
        // selected one only holds what is selected.
        let mut opts = RestoreOptions::new(fx.tmp.path().join("fresh"));
        opts.on_conflict = OnConflict::Overwrite;
        opts.include = Patterns::new(&["/sub/deep", "/nothing/*"]).unwrap();
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(names(&opts.target), ["sub"]);
        assert_eq!(names(&opts.target.join("sub")), ["deep"]);
        assert_eq!((report.files, report.dirs), (1, 2));
    }

    /// Target with an existing `a.txt` ("old") and an existing `sub/` dir.
    fn prepared(fx: &Fx) -> PathBuf {
        let t = fx.target();
        fs::create_dir_all(t.join("sub")).unwrap();
        fs::write(t.join("a.txt"), b"old").unwrap();
        t
    }

    #[test]
    fn fail_reports_conflicts_and_writes_nothing() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let t = prepared(&fx);
        let err = fx.restore(s.root, &fx.opts()).unwrap_err();
        let RestoreError::Conflicts(paths) = &err else {
            panic!("{err}");
        };
        assert_eq!(paths, &["a.txt"], "an existing dir merges, no conflict");
        assert_eq!(names(&t), ["a.txt", "sub"]);
        assert!(names(&t.join("sub")).is_empty());
        assert!(!t.join("empty").exists());
        assert_eq!(fs::read(t.join("a.txt")).unwrap(), b"old");
        assert!(err.to_string().contains("a.txt"));
    }

    #[test]
    fn skip_keeps_existing_entries() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let t = prepared(&fx);
        let mut opts = fx.opts();
        opts.on_conflict = OnConflict::Skip;
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(report.skipped, ["a.txt"]);
        assert_eq!(fs::read(t.join("a.txt")).unwrap(), b"old");
        for w in s.files.iter().filter(|w| w.rel != "a.txt") {
            check_file(&t, w);
        }
        assert_eq!(report.files, 4);
        // A merged, pre-existing directory keeps its own metadata.
        let md = fs::metadata(t.join("sub")).unwrap();
        assert_ne!(md.mtime(), 1_500_000_000);
    }

    #[test]
    fn overwrite_replaces_existing_entries() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let t = prepared(&fx);
        let mut opts = fx.opts();
        opts.on_conflict = OnConflict::Overwrite;
        let report = fx.restore(s.root, &opts).unwrap();
        for w in &s.files {
            check_file(&t, w);
        }
        assert!(report.skipped.is_empty() && report.errors.is_empty());
    }

    #[test]
    fn rename_writes_next_to_existing_entries() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let t = prepared(&fx);
        // A symlink where the snapshot has a directory is a conflict as well.
        fs::remove_dir(t.join("sub")).unwrap();
        std::os::unix::fs::symlink("/tmp", t.join("sub")).unwrap();
        let mut opts = fx.opts();
        opts.on_conflict = OnConflict::Rename;
        let report = fx.restore(s.root, &opts).unwrap();
        assert_eq!(fs::read(t.join("a.txt")).unwrap(), b"old");
        assert_eq!(
            fs::read(t.join("a.txt.strata-restored")).unwrap(),
            s.files[0].data
        );
        assert_eq!(
            fs::read(t.join("sub.strata-restored/deep/c")).unwrap(),
            s.files[4].data
        );
        assert!(fs::symlink_metadata(t.join("sub")).unwrap().is_symlink());
        check_dir_meta(&t.join("sub.strata-restored"), 0o750, (1_500_000_000, 5));
        assert_eq!(
            report.renamed,
            [
                ("a.txt".to_string(), "a.txt.strata-restored".to_string()),
                ("sub".to_string(), "sub.strata-restored".to_string()),
            ]
        );
    }

    #[test]
    fn dry_run_plans_and_writes_nothing() {
        let fx = Fx::new();
        let s = sample(&fx.repo);
        let mut opts = fx.opts();
        opts.dry_run = true;
        let report = fx.restore(s.root, &opts).unwrap();
        assert!(!fx.target().exists(), "dry run must not create the target");
        let paths: Vec<&str> = report.planned.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a.txt",
                "big",
                "empty",
                "link",
                "sub",
                "sub/b.bin",
                "sub/deep",
                "sub/deep/c"
            ]
        );
        assert!(
            report
                .planned
                .iter()
                .all(|p| p.action == EntryAction::Write && !p.existing)
        );
        assert_eq!((report.files, report.dirs, report.symlinks), (5, 2, 1));
        assert_eq!(report.planned[0].size, 1705);
        assert_eq!(report.planned[4].kind, "dir");

        let t = prepared(&fx);
        for (on, action) in [
            (OnConflict::Fail, EntryAction::Conflict),
            (OnConflict::Rename, EntryAction::Rename),
            (OnConflict::Skip, EntryAction::Skip),
        ] {
            opts.on_conflict = on;
            let report = fx.restore(s.root, &opts).unwrap();
            let get = |p: &str| report.planned.iter().find(|e| e.path == p).unwrap();
            assert!(get("a.txt").existing);
            assert_eq!(get("a.txt").action, action);
            assert!(get("sub").existing);
            assert_eq!(get("sub").action, EntryAction::Write);
            assert!(!get("sub/b.bin").existing);
            assert_eq!(get("empty").action, EntryAction::Write);
            assert_eq!(names(&t), ["a.txt", "sub"]);
            assert!(names(&t.join("sub")).is_empty());
        }
        let json = serde_json::to_string(&report_of(&fx, s.root, &opts)).unwrap();
        assert!(json.contains("\"action\":\"skip\""), "{json}");
    }

    fn report_of(fx: &Fx, root: TreeId, opts: &RestoreOptions) -> RestoreReport {
        fx.restore(root, opts).unwrap()
    }

    #[test]
    fn crafted_names_are_reported_and_never_written() {
        let fx = Fx::new();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let nodes = vec![
            b.file(b"..", &[b"dotdot"], 0o644, (1, 0)),
            b.file(b"a/b", &[b"slash"], 0o644, (1, 0)),
            b.file(b"", &[b"empty name"], 0o644, (1, 0)),
            b.file(b"ok", &[b"fine"], 0o644, (1, 0)),
            b.file(b"dup", &[b"first"], 0o644, (1, 0)),
            b.file(b"dup", &[b"second"], 0o644, (1, 0)),
        ];
        let root = b.tree(nodes);
        b.flush();
        let boxed = fx.tmp.path().join("box");
        let opts = RestoreOptions::new(boxed.join("target"));
        let report = fx.restore(root, &opts).unwrap();
        assert_eq!(names(&opts.target), ["ok"]);
        assert_eq!(fs::read(opts.target.join("ok")).unwrap(), b"fine");
        assert_eq!(names(&boxed), ["target"]);
        assert_eq!(names(fx.tmp.path()), ["box", "repo"]);
        let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["", "..", "a/b", "dup"], "{:?}", report.errors);
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.message.starts_with("not restored"))
        );
        assert_eq!(report.files, 1);
    }

    #[test]
    fn duplicate_symlink_and_dir_cannot_escape() {
        let fx = Fx::new();
        let outside = fx.tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let evil = link(b"x", outside.as_os_str().as_encoded_bytes(), (1, 0));
        let f = b.file(b"payload", &[b"pwned"], 0o644, (1, 0));
        let x = b.dir(b"x", vec![f], 0o755, (1, 0));
        let other = b.file(b"y", &[b"y"], 0o644, (1, 0));
        let root = b.tree(vec![evil, x, other]);
        b.flush();
        for (i, on) in [OnConflict::Fail, OnConflict::Overwrite, OnConflict::Rename]
            .into_iter()
            .enumerate()
        {
            let mut opts = RestoreOptions::new(fx.tmp.path().join(format!("t{i}")));
            opts.on_conflict = on;
            let report = fx.restore(root, &opts).unwrap();
            assert!(names(&outside).is_empty());
            assert_eq!(names(&opts.target), ["y"]);
            assert_eq!(report.errors.len(), 1);
            assert_eq!(report.errors[0].path, "x");
            assert!(report.errors[0].message.contains("2 entries"));
        }
    }

    #[test]
    fn missing_or_wrong_blob_fails_only_that_file() {
        let fx = Fx::new();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let good = b.file(b"good", &[&random_blob(1), &random_blob(2)], 0o644, (5, 0));
        let mut bad = b.file(b"bad", &[&random_blob(3), &random_blob(4)], 0o644, (5, 0));
        let missing = BlobId(Id::hash_of(b"not stored"));
        if let NodeKind::File { content } = &mut bad.kind {
            content.push(ChunkRef {
                id: missing,
                len: 10,
            });
        }
        let mut short = b.file(b"short", &[&random_blob(5)], 0o644, (5, 0));
        if let NodeKind::File { content } = &mut short.kind {
            content[0].len = 999;
        }
        let sub = b.dir(b"sub", vec![bad.clone()], 0o755, (5, 0));
        let root = b.tree(Tree::new(vec![good, bad, short, sub]).nodes);
        b.flush();
        let mut opts = fx.opts();
        opts.verify = true;
        let report = fx.restore(root, &opts).unwrap();
        let t = fx.target();
        assert_eq!(names(&t), ["good", "sub"]);
        assert!(names(&t.join("sub")).is_empty());
        assert_eq!(
            fs::read(t.join("good")).unwrap(),
            [random_blob(1), random_blob(2)].concat()
        );
        let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bad", "short", "sub/bad"]);
        assert!(
            report.errors[0].message.contains(&missing.to_string()),
            "{:?}",
            report.errors
        );
        assert!(
            report.errors[1].message.contains("999"),
            "{:?}",
            report.errors
        );
        assert_eq!((report.files, report.verified_files), (1, 1));
    }

    #[test]
    fn special_files() {
        let fx = Fx::new();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let fifo = node(b"fifo", NodeKind::Fifo, 0o640, (77, 7));
        let sock = node(b"sock", NodeKind::Socket, 0o755, (1, 0));
        let dev = node(b"null", NodeKind::CharDev { rdev: 0x0103 }, 0o666, (1, 0));
        let root = b.tree(Tree::new(vec![fifo, sock, dev]).nodes);
        b.flush();
        let report = fx.restore(root, &fx.opts()).unwrap();
        let t = fx.target();
        let md = fs::symlink_metadata(t.join("fifo")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!(
            (md.mode() & 0o7777, md.mtime(), md.mtime_nsec()),
            (0o640, 77, 7)
        );
        assert!(!t.join("sock").exists());
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.path == "sock" && e.message.contains("socket"))
        );
        // A device node is created (as root, when allowed) or reported.
        match fs::symlink_metadata(t.join("null")) {
            Ok(md) => {
                assert!(md.file_type().is_char_device());
                assert_eq!(md.rdev(), 0x0103);
            }
            Err(_) => assert!(report.errors.iter().any(|e| e.path == "null")),
        }
    }

    /// `depth` nested directories `d` (mode 0o750, mtime 7) ending in a file
    /// `f`.
    fn chain(b: &Builder, depth: usize) -> Node {
        let mut cur = vec![b.file(b"f", &[b"x"], 0o644, (1, 0))];
        for _ in 1..depth {
            cur = vec![b.dir(b"d", cur, 0o750, (7, 0))];
        }
        b.dir(b"d", cur, 0o750, (7, 0))
    }

    fn chain_path(top: &Path, depth: usize) -> PathBuf {
        (0..depth).fold(top.to_path_buf(), |p, _| p.join("d"))
    }

    /// Finding 8 of issue 12 (restore part): a tree far deeper than the
    /// window of open directory descriptors restores completely, with every
    /// directory's metadata, merged into an existing part of the chain or
    /// beside it, and with a lazily created chain (include patterns).
    #[test]
    fn restore_restores_any_depth_with_a_bounded_window_of_descriptors() {
        const DEPTH: usize = 40;
        let fx = Fx::new();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let root = b.tree(vec![chain(&b, DEPTH)]);
        b.flush();
        let t = fx.target();
        fs::create_dir_all(chain_path(&t, 5)).unwrap();
        let mut opts = fx.opts();
        opts.on_conflict = OnConflict::Skip;
        let report = fx.restore(root, &opts).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!((report.files, report.dirs), (1, DEPTH as u64));
        assert_eq!(fs::read(chain_path(&t, DEPTH).join("f")).unwrap(), b"x");
        for depth in [1, 5] {
            let md = fs::metadata(chain_path(&t, depth)).unwrap();
            assert_ne!(md.mtime(), 7, "a merged directory keeps its metadata");
        }
        for depth in [6, 20, DEPTH] {
            check_dir_meta(&chain_path(&t, depth), 0o750, (7, 0));
        }

        let mut opts = RestoreOptions::new(fx.tmp.path().join("lazy"));
        let deep = chain_path(Path::new("/"), DEPTH).join("f");
        opts.include = Patterns::new(&[deep.to_str().unwrap()]).unwrap();
        let report = fx.restore(root, &opts).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!((report.files, report.dirs), (1, DEPTH as u64));
        check_dir_meta(&chain_path(&opts.target, DEPTH - 10), 0o750, (7, 0));
        assert_eq!(
            fs::read(chain_path(&opts.target, DEPTH).join("f")).unwrap(),
            b"x"
        );
    }

    /// A directory moved away while its descriptor was closed is not
    /// reopened by name: the walk notices it is another directory.
    #[test]
    fn a_closed_directory_is_reopened_only_if_it_is_the_same() {
        let fx = Fx::new();
        let sandbox = Sandbox::open(&fx.target()).unwrap();
        let a = sandbox.root().dir(b"a", OnConflict::Fail).unwrap();
        let ctx = || DirCtx {
            abs: Vec::new(),
            rel: b"a".to_vec(),
            included: true,
            skip: false,
        };
        let mut stack = Stack::new(Frame::new(ctx(), Vec::new(), Some(sandbox.root()), ()));
        stack.push(Frame::new(ctx(), b"a".to_vec(), Some(a), ()));
        for _ in 0..OPEN_DIRS {
            stack.push(Frame::new(ctx(), b"x".to_vec(), None, ()));
        }
        assert!(matches!(stack.frames[1].held, Held::Closed(_)));
        assert!(stack.open(1).unwrap().is_some(), "reopened");
        stack.close_outside(1);
        assert!(matches!(stack.frames[1].held, Held::Closed(_)));
        fs::rename(fx.target().join("a"), fx.target().join("moved")).unwrap();
        fs::create_dir(fx.target().join("a")).unwrap();
        let (rel, err) = stack.open(1).unwrap_err();
        assert_eq!(rel, b"a");
        assert!(matches!(err, SandboxError::Replaced { .. }), "{err}");
        assert!(matches!(stack.frames[1].held, Held::Failed));
    }

    /// A forged tree DAG: `levels` levels of two entries sharing one subtree,
    /// 2^levels paths from a handful of stored trees.
    fn forged_dag(b: &Builder, levels: usize) -> TreeId {
        let mut cur = vec![b.file(b"f", &[b"x"], 0o644, (1, 0))];
        for _ in 0..levels {
            let subtree = b.tree(cur);
            let dir = |name: &[u8]| node(name, NodeKind::Dir { subtree }, 0o755, (1, 0));
            cur = vec![dir(b"a"), dir(b"b")];
        }
        b.tree(cur)
    }

    /// Finding 8 of issue 12: a walk is capped by the entries the snapshot
    /// records, so a tree DAG expanding to 2^40 paths is refused, in the
    /// conflict scan, the dry run and the write pass alike.
    #[test]
    fn restore_refuses_a_forged_tree_dag_beyond_the_entry_budget() {
        let fx = Fx::new();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let root = forged_dag(&b, 40);
        b.flush();
        for (on, dry_run) in [
            (OnConflict::Fail, false),
            (OnConflict::Overwrite, true),
            (OnConflict::Overwrite, false),
        ] {
            let mut opts = fx.opts();
            opts.on_conflict = on;
            opts.dry_run = dry_run;
            let err = restore(&fx.repo, root, &opts, 5_000, &Quiet).unwrap_err();
            assert!(matches!(err, RestoreError::TooManyEntries(5_000)), "{err}");
            assert!(err.to_string().contains("5000 entries"), "{err}");
        }
        // A budget as large as what the trees hold is enough.
        let small = forged_dag(&b, 3);
        b.flush();
        let opts = RestoreOptions::new(fx.tmp.path().join("small"));
        assert!(restore(&fx.repo, small, &opts, 2 + 4 + 8 + 8, &Quiet).is_ok());
        let opts = RestoreOptions::new(fx.tmp.path().join("small2"));
        let err = restore(&fx.repo, small, &opts, 2 + 4 + 8 + 7, &Quiet).unwrap_err();
        assert!(matches!(err, RestoreError::TooManyEntries(_)), "{err}");
    }

    #[test]
    fn verify_detects_differing_content_and_size() {
        let fx = Fx::new();
        let lock = crate::repo::locked::exclusive(&fx.repo);
        let b = Builder::new(&lock);
        let parts = [random_blob(1), random_blob(2)];
        let node = b.file(b"f", &[&parts[0], &parts[1]], 0o644, (1, 0));
        b.flush();
        let content = node.content();
        let sandbox = Sandbox::open(&fx.target()).unwrap();
        let dir = sandbox.root().dir(b"d", OnConflict::Fail).unwrap();
        let opts = fx.opts();
        let writer = Writer {
            repo: &fx.repo,
            opts: &opts,
            progress: &Quiet,
            out: Collector::default(),
        };
        let check = |data: &[u8]| {
            let Placed::Written(file, used) = dir.create_file(b"f", OnConflict::Overwrite).unwrap()
            else {
                panic!("must write");
            };
            file.write_all_at(data, 0).unwrap();
            writer.verify_content(&file, &dir, &used, content)
        };
        assert_eq!(check(&parts.concat()), Ok(()));
        let mut flipped = parts.concat();
        flipped[1500] ^= 1;
        let err = check(&flipped).unwrap_err();
        assert!(err.contains("bytes 1000..2000 differ"), "{err}");
        let err = check(&parts[0]).unwrap_err();
        assert!(err.contains("size is 1000 bytes"), "{err}");
    }
}
