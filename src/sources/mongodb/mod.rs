//! MongoDB as a backup source: consistent dumps into the snapshot tree (`export`), restores
//! into a server (`import`), replay of the oplog (`oplog`, `replay`), and which archived
//! oplog slices `forget` keeps (`retention`). The driver is async; the entry points stay
//! blocking and run it on the runtime their [`Conn`] was made on: the caller's (a server
//! calling them from `spawn_blocking`, see `Conn::connect_on`) or a private one.
pub mod chain;
pub mod changes;
pub mod connection;
pub mod consolidate;
pub(crate) mod diff;
pub mod export;
pub mod follow;
pub mod import;
pub(crate) mod metadata;
pub(crate) mod namespace;
pub(crate) mod oplog;
pub(crate) mod overlay;
pub mod replay;
pub mod retention;
pub mod scan;
pub(crate) mod stream;

pub use connection::Conn;
pub use namespace::{NsFilter, Renames};

use crate::repo::repository::RepoError;
use crate::repo::snapshot::BsonTime;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("cannot connect to MongoDB at {server}: {message}")]
    Connect { server: String, message: String },
    #[error("{what}: {source}")]
    Command {
        what: String,
        source: mongodb::error::Error,
    },
    #[error(
        "{server} has no oplog (a standalone server?), so a consistent backup is impossible: \
         run it as a replica set, or pass --no-consistency to accept documents read at different times"
    )]
    NoOplog { server: String },
    #[error("the namespace filters match no {what}")]
    NothingMatched { what: &'static str },
    #[error("metadata of {ns}: {message}")]
    Metadata { ns: String, message: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Rename(#[from] namespace::RenameError),
    #[error("no point-in-time restore to {at}: {reason}")]
    NoPointInTime { at: BsonTime, reason: String },
    #[error("the snapshot holds no MongoDB dump")]
    NoDump,
    #[error("the snapshot cannot be consolidated: {0}")]
    NotConsolidable(String),
    /// The oplog no longer holds the entry an incremental dump reads on from: it rolled over.
    #[error("the server's oplog no longer holds entry {entry}: it rolled over")]
    OplogGone {
        entry: BsonTime,
        oldest: Option<BsonTime>,
    },
    #[error("{path} is damaged: {message}")]
    Dump { path: String, message: String },
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error(
        "{} existing collection(s) differ from the snapshot and --drop was not given; nothing was written:\n{}",
        .0.len(), .0.join("\n")
    )]
    Conflicts(Vec<String>),
}

pub(crate) type Result<T> = std::result::Result<T, MongoError>;

/// Wraps a driver error with what was being done.
pub(crate) fn cmd_err(what: impl Into<String>) -> impl FnOnce(mongodb::error::Error) -> MongoError {
    let what = what.into();
    move |source| MongoError::Command { what, source }
}

/// The server's error code of a failed command or write, if it has one.
pub(crate) fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}
