//! strata: the backup engine. Everything here is a library: it never prints and never exits.
//!
//! The modules follow the design, from the bottom up:
//! - [`backend`]: where objects are stored (the storage contract and its implementations);
//! - [`repo`]: the repository's formats and objects (ids, encryption, keys, config, blobs,
//!   packs, index files, trees, snapshots, dictionaries, locks) and the opened repository;
//! - [`index`]: the local SQLite index of the index files;
//! - [`write`]: the write pipeline (chunking, packing, dictionary training, repacking,
//!   rewriting trees);
//! - [`walk`] and [`vfs`]: the one tree walker, and paths and file contents inside snapshots;
//! - [`select`]: which snapshots and paths an operation works on;
//! - [`ops`]: the operations front ends run (backup, restore, check, prune, repair, diff,
//!   find, scan, stats, copy, forget, migrate), each a function returning a typed report;
//! - [`sources`]: what a backup reads (the file system, MongoDB);
//! - [`mount`]: snapshots as a FUSE filesystem;
//! - [`observer`], [`cancel`], [`errors`]: how an operation reports, is stopped, and fails.
//!
//! The names a front end needs most are re-exported here. Everything else is `pub(crate)`
//! unless a front end, a test or a benchmark outside the library uses it: every item that
//! stays `pub` is named by the CLI, the integration tests or the benchmarks, and
//! `unreachable_pub` keeps items inside crate-private modules from claiming more.
#![warn(unreachable_pub)]
pub mod backend;
pub mod cancel;
pub mod errors;
pub mod index;
pub mod mount;
pub mod observer;
pub mod ops;
pub mod repo;
pub mod select;
pub mod sources;
pub mod sysinfo;
pub mod vfs;
pub mod walk;
pub mod write;

pub use cancel::{Cancel, Cancelled};
pub use observer::{Counters, EntryError, EntryErrorKind, Observer, Phase, Quiet};
pub use ops::archiver::{BackupOptions, BackupResult, backup, backup_with};
pub use ops::checker::{CheckReport, ReadData, check};
pub use ops::copy::{CopyReport, copy};
pub use ops::diff::{DiffReport, diff};
pub use ops::finder::{FindReport, find};
pub use ops::forget::Plan as ForgetPlan;
pub use ops::pruner::{PruneOptions, PruneReport, prune};
pub use ops::repair::{repair_index, repair_snapshots};
pub use ops::restorer::{RestoreOptions, RestoreReport, restore};
pub use ops::scan::{ScanReport, scan};
pub use ops::stats::{Stats, stats};
pub use repo::id::{BlobId, PackId, SnapshotId, TreeId};
pub use repo::lock::LockMode;
pub use repo::locked::Locked;
pub use repo::repository::{IndexedRepo, RepoError, Repository};
