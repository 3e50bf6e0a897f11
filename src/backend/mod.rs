//! The storage contract: whole named objects that can be put, read (whole or a range), listed
//! and removed. The engine depends only on this trait; [`open`] chooses the backend of a
//! location (a local directory or an object store) and wraps it in the fault injector (when
//! asked for) and the retries of transient failures.
pub(crate) mod fault;
pub mod local;
pub(crate) mod location;
pub(crate) mod object;
pub(crate) mod pool;
pub(crate) mod retry;

use location::{Location, Options};
use std::fmt;
use std::sync::Arc;

/// The backend of `location` (a directory, `local:PATH`, `s3:...`, `gs:...`, `azure:...`
/// or `memory:`; see [`Location`]) with the `-o KEY=VALUE` `options` (see [`Options`]).
/// Nothing is requested yet: a wrong bucket or credentials show in the first request.
pub fn open(location: &str, options: &[(String, String)]) -> Result<Arc<dyn Backend>> {
    let location = Location::parse(location)?;
    let options = Options::parse(options)?;
    let store: Arc<dyn Backend> = match &location {
        Location::Local(path) => {
            let local = local::LocalBackend::new(path);
            Arc::new(match options.connections {
                Some(n) => local.with_connections(n),
                None => local,
            })
        }
        remote => Arc::new(object::ObjectBackend::open(remote, &options)?),
    };
    let store = match options.faults.any() {
        true => Arc::new(fault::Faulty::new(store, options.faults.clone())),
        false => store,
    };
    let mut backoff = retry::Backoff::default();
    if let Some(attempts) = options.attempts {
        backoff.attempts = attempts;
    }
    Ok(Arc::new(retry::Retry::new(store, backoff)))
}

/// The folders of a repository. Each object lives in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Config,
    Key,
    Snapshot,
    Index,
    Pack,
    Lock,
    Dictionary,
}

impl Kind {
    /// Kinds whose objects are named after their content (a hash of their bytes, or for
    /// dictionaries of their plaintext): an existing object under the same name holds the
    /// same thing, so putting it again is a no-op. The other kinds (config, key files,
    /// locks) are created only if absent.
    pub(crate) fn is_content_named(self) -> bool {
        matches!(
            self,
            Kind::Snapshot | Kind::Index | Kind::Pack | Kind::Dictionary
        )
    }

    /// Every kind, in the order of the folders.
    pub const ALL: [Kind; 7] = [
        Kind::Config,
        Kind::Key,
        Kind::Snapshot,
        Kind::Index,
        Kind::Pack,
        Kind::Lock,
        Kind::Dictionary,
    ];

    /// The folder holding object `name`, relative to the repository's root: the kind's
    /// folder, below which packs have a subfolder named by the first two digits of their
    /// name (repo-format.md). Every backend lays objects out by it.
    pub(crate) fn folder_of(self, name: &str) -> String {
        match self {
            Kind::Pack => format!("{}/{}", self.dir(), &name[..name.len().min(2)]),
            _ => self.dir().to_string(),
        }
    }

    pub(crate) fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Key => "keys",
            Kind::Snapshot => "snapshots",
            Kind::Index => "index",
            Kind::Pack => "data",
            Kind::Lock => "locks",
            Kind::Dictionary => "dictionaries",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Config => "config",
            Kind::Key => "key",
            Kind::Snapshot => "snapshot",
            Kind::Index => "index",
            Kind::Pack => "pack",
            Kind::Lock => "lock",
            Kind::Dictionary => "dictionary",
        })
    }
}

/// What went wrong with a request, in terms a caller can act on. Every variant names the
/// backend's location, so that a message alone says which store failed. (The details of
/// the rarer ones are boxed, to keep every `Result` of the engine small.)
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{location}: {kind} {name} not found")]
    NotFound {
        location: String,
        kind: Kind,
        name: String,
    },
    /// A create-only `put` of an object that exists with other content.
    #[error("{location}: {kind} {name} already exists")]
    AlreadyExists {
        location: String,
        kind: Kind,
        name: String,
    },
    /// The store refused a conditional request for a reason other than the object's
    /// existence.
    #[error("{0}: precondition failed: {detail}", detail = .0.detail)]
    PreconditionFailed(Box<Request>),
    /// A failure that may go away if the request is repeated (a timeout, a refused or
    /// dropped connection, throttling, a 5xx answer). Only these are retried.
    #[error("{0}: temporary failure: {detail}", detail = .0.detail)]
    Transient(Box<Request>),
    /// Credentials missing, wrong or without the right to this request.
    #[error("{0}: permission denied: {detail}", detail = .0.detail)]
    PermissionDenied(Box<Request>),
    /// Any other failure the store reported (a missing bucket, an unsupported request...).
    #[error("{0}: {detail}", detail = .0.detail)]
    Failed(Box<Request>),
    #[error(
        "{0}: range {offset}+{len} is beyond the end ({size} bytes)",
        offset = .0.offset, len = .0.len, size = .0.size
    )]
    ShortRead(Box<ShortRead>),
    #[error("invalid object name {0:?}")]
    InvalidName(String),
    /// A repository location or backend option that cannot be used (see [`open`]).
    #[error("repository location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// A failed request: where, what, on which path, and what the store said.
#[derive(Debug)]
pub struct Request {
    pub location: String,
    pub op: &'static str,
    pub path: String,
    pub detail: String,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.location, self.op, self.path)
    }
}

/// A range read past the end of an object.
#[derive(Debug)]
pub struct ShortRead {
    pub location: String,
    pub kind: Kind,
    pub name: String,
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

impl fmt::Display for ShortRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.location, self.kind, self.name)
    }
}

impl BackendError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Whether repeating the request may succeed (see [`retry::Retry`]).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }
}

pub(crate) type Result<T> = std::result::Result<T, BackendError>;

/// A stored object's name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
}

/// Whole-object storage. Names are lowercase hex (or `config`).
///
/// Durability: when `put` returns Ok the object is complete and durable (it survives a crash
/// of this process and of the machine); a crash during `put` leaves either nothing or the
/// whole object visible under `name`, never a part.
///
/// `put` never replaces an existing object. For content-named kinds
/// ([`Kind::is_content_named`]: packs, index files, snapshots, dictionaries) an existing
/// object is success, found without downloading it. For the others (config, key files,
/// locks) `put` is a conditional create (`If-None-Match: *` on S3): it fails with
/// `AlreadyExists` when the object exists with other content, so that of two writers of one
/// name exactly one succeeds. Identical content is accepted, so that a request repeated
/// after a lost answer does not fail on its own first attempt (key and lock names are
/// random, and their content carries a random nonce, so no other writer produces it).
///
/// Consistency the engine relies on (see repo-format.md, "Storage contract"): an object is
/// readable and listed as soon as its `put` returned (read-after-write, list-after-write),
/// and a removed object is no longer listed once `remove` returned.
pub trait Backend: Send + Sync {
    /// A short description for messages, e.g. the directory path or the URL.
    fn location(&self) -> String;
    /// Creates the folders of a new repository (if the store has folders); fails with
    /// `AlreadyExists` if a config already exists.
    fn create(&self) -> Result<()>;
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()>;
    /// Creates or replaces `name` with `data` atomically: readers see the old object or the
    /// new one, never a part or none, and when it returns Ok the new one is durable. Only
    /// for objects whose name is not their content (`config`, key files): the commit
    /// point of `strata migrate`.
    fn replace(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()>;
    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>>;
    /// Exactly `len` bytes from `offset`, or `ShortRead`.
    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// The size of an object, without reading it; `NotFound` if it is absent.
    fn head(&self, kind: Kind, name: &str) -> Result<u64>;
    fn list(&self, kind: Kind) -> Result<Vec<Entry>>;
    /// Removing an absent object is not an error.
    fn remove(&self, kind: Kind, name: &str) -> Result<()>;
    /// How many requests the engine keeps in flight at once against this store (pack
    /// uploads, restore's pack reads): `-o connections=N`, else the store's default.
    fn connections(&self) -> usize;
    /// Whether requests go over a network (then metadata is worth caching locally).
    fn is_remote(&self) -> bool;
}

/// Accepts `config` for the config kind and 1..=128 lowercase hex digits otherwise, so a
/// name can never contain a separator or `..`.
pub(crate) fn validate_name(kind: Kind, name: &str) -> Result<()> {
    let ok = match kind {
        Kind::Config => name == "config",
        _ => {
            !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(BackendError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(given: &[(&str, &str)]) -> Vec<(String, String)> {
        (given.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn open_chooses_the_store_and_puts_faults_inside_the_retries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let local = open(path.to_str().unwrap(), &[]).unwrap();
        local.create().unwrap();
        local.put(Kind::Key, "0a", b"k").unwrap();
        assert!(path.join("keys/0a").is_file());
        assert_eq!(local.location(), path.display().to_string());

        let flaky = pairs(&[("fault.transient", "0.2"), ("fault.seed", "3")]);
        let memory = open("memory:", &flaky).unwrap();
        for i in 0..20u8 {
            memory.put(Kind::Snapshot, &hex::encode([i]), b"x").unwrap();
        }
        assert_eq!(memory.list(Kind::Snapshot).unwrap().len(), 20);
        // The same faults without retries to spare reach the caller.
        let once = [flaky, pairs(&[("retries", "1")])].concat();
        let unretried = open("memory:", &once).unwrap();
        let failed = (0..20u8)
            .filter(|i| {
                unretried
                    .put(Kind::Snapshot, &hex::encode([*i]), b"x")
                    .is_err()
            })
            .count();
        assert!(failed > 0);

        let second = pairs(&[("fault.fail-write", "2")]);
        let failing = open("memory:", &second).unwrap();
        failing.put(Kind::Snapshot, "01", b"1").unwrap();
        let err = failing.put(Kind::Snapshot, "02", b"2").unwrap_err();
        assert!(err.to_string().contains("memory:"), "{err}");
        assert!(
            failing
                .head(Kind::Snapshot, "02")
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn open_refuses_bad_locations_and_options_before_any_request() {
        for (location, options) in [("s3:", vec![]), ("memory:", pairs(&[("nope", "1")]))] {
            let err = open(location, &options).err().expect("refused");
            assert!(matches!(err, BackendError::InvalidLocation { .. }), "{err}");
        }
    }
}

#[doc(hidden)]
pub mod contract {
    //! One test suite that every backend runs: the local and memory backends in unit tests,
    //! S3 against a test server in `tests/cli_s3.rs` (hence public). It panics on a breach.
    use super::*;

    pub fn run(b: &dyn Backend) {
        b.create().unwrap();
        put_get_range_list_remove(b);
        content_named_puts_are_idempotent(b);
        other_puts_are_conditional_creates(b);
        replace_swaps_whole_objects(b);
        missing_objects(b);
        names_are_validated(b);
        create_refuses_an_existing_repository(b);
    }

    fn put_get_range_list_remove(b: &dyn Backend) {
        let name = "ab".repeat(32);
        b.put(Kind::Pack, &name, b"0123456789").unwrap();
        assert_eq!(b.get(Kind::Pack, &name).unwrap(), b"0123456789");
        assert_eq!(b.get_range(Kind::Pack, &name, 3, 4).unwrap(), b"3456");
        assert_eq!(b.get_range(Kind::Pack, &name, 6, 4).unwrap(), b"6789");
        assert_eq!(b.head(Kind::Pack, &name).unwrap(), 10);
        let listed = b.list(Kind::Pack).unwrap();
        assert_eq!(
            listed,
            vec![Entry {
                name: name.clone(),
                size: 10
            }]
        );
        assert!(b.list(Kind::Snapshot).unwrap().is_empty());
        b.remove(Kind::Pack, &name).unwrap();
        b.remove(Kind::Pack, &name).unwrap();
        assert!(b.list(Kind::Pack).unwrap().is_empty());
        assert!(b.head(Kind::Pack, &name).unwrap_err().is_not_found());
    }

    /// A content-named object that exists is not written again, whatever is offered.
    fn content_named_puts_are_idempotent(b: &dyn Backend) {
        b.put(Kind::Snapshot, "01", b"one").unwrap();
        b.put(Kind::Snapshot, "01", b"one").unwrap();
        b.put(Kind::Snapshot, "01", b"two").unwrap();
        assert_eq!(b.get(Kind::Snapshot, "01").unwrap(), b"one");
        assert_eq!(b.list(Kind::Snapshot).unwrap().len(), 1);
        b.remove(Kind::Snapshot, "01").unwrap();
    }

    /// Config, key files and locks are created only if absent: of two different writers of
    /// one name exactly one succeeds, and a repeated identical write is accepted.
    fn other_puts_are_conditional_creates(b: &dyn Backend) {
        for kind in [Kind::Key, Kind::Lock] {
            b.put(kind, "0b", b"mine").unwrap();
            b.put(kind, "0b", b"mine").unwrap();
            let err = b.put(kind, "0b", b"theirs").unwrap_err();
            assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
            assert!(err.to_string().contains(&b.location()), "{err}");
            assert_eq!(b.get(kind, "0b").unwrap(), b"mine");
            b.remove(kind, "0b").unwrap();
        }
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..4u8)
                .map(|i| s.spawn(move || b.put(Kind::Lock, "0c", &[i; 100]).is_ok()))
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
        let winner = outcomes.iter().position(|ok| *ok).unwrap() as u8;
        assert_eq!(b.get(Kind::Lock, "0c").unwrap(), vec![winner; 100]);
        b.remove(Kind::Lock, "0c").unwrap();
    }

    fn replace_swaps_whole_objects(b: &dyn Backend) {
        b.replace(Kind::Key, "0a", b"first").unwrap();
        assert_eq!(b.get(Kind::Key, "0a").unwrap(), b"first");
        b.replace(Kind::Key, "0a", b"second, longer").unwrap();
        assert_eq!(b.get(Kind::Key, "0a").unwrap(), b"second, longer");
        let listed = b.list(Kind::Key).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(b.replace(Kind::Key, "../x", b"x").is_err());
        b.remove(Kind::Key, "0a").unwrap();
    }

    fn missing_objects(b: &dyn Backend) {
        let err = b.get(Kind::Index, "ff").unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains(&b.location()), "{err}");
        assert!(
            b.get_range(Kind::Index, "ff", 0, 1)
                .unwrap_err()
                .is_not_found()
        );
        b.put(Kind::Index, "fe", b"abc").unwrap();
        for (offset, len) in [(2, 5), (3, 1), (10, 1)] {
            let err = b.get_range(Kind::Index, "fe", offset, len).unwrap_err();
            assert!(
                matches!(&err, BackendError::ShortRead(r) if r.size == 3),
                "{offset}+{len}: {err}"
            );
        }
        b.remove(Kind::Index, "fe").unwrap();
    }

    fn names_are_validated(b: &dyn Backend) {
        for bad in ["../x", "", "AB", "a/b", "config"] {
            assert!(b.put(Kind::Key, bad, b"x").is_err(), "{bad}");
            assert!(b.get(Kind::Pack, bad).is_err(), "{bad}");
        }
    }

    fn create_refuses_an_existing_repository(b: &dyn Backend) {
        b.put(Kind::Config, "config", b"c").unwrap();
        let err = b.create().unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::AlreadyExists {
                    kind: Kind::Config,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(b.list(Kind::Config).unwrap().len(), 1);
    }
}
