//! The storage contract: whole named objects that can be put, read (whole or a range), listed
//! and removed. The engine depends only on this trait, so other stores can be added later.
pub mod local;

use std::fmt;

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
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Config,
        Kind::Key,
        Kind::Snapshot,
        Kind::Index,
        Kind::Pack,
        Kind::Lock,
        Kind::Dictionary,
    ];

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

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{kind} {name} not found")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {name}: range {offset}+{len} is beyond the end ({size} bytes)")]
    ShortRead {
        kind: Kind,
        name: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("invalid object name {0:?}")]
    InvalidName(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl BackendError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
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
/// whole object visible under `name`, never a part. `put` never replaces an existing object:
/// it fails with `AlreadyExists`, except that putting identical content again is accepted
/// (content-addressed names make retries idempotent).
pub trait Backend: Send + Sync {
    /// A short description for messages, e.g. the directory path.
    fn location(&self) -> String;
    /// Creates the folders of a new repository; fails if a config already exists.
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
    fn list(&self, kind: Kind) -> Result<Vec<Entry>>;
    /// Removing an absent object is not an error.
    fn remove(&self, kind: Kind, name: &str) -> Result<()>;
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
pub(crate) mod contract {
    //! One test suite that every backend runs.
    use super::*;

    pub(crate) fn run(b: &dyn Backend) {
        b.create().unwrap();
        put_get_range_list_remove(b);
        put_is_create_only(b);
        replace_swaps_whole_objects(b);
        missing_objects(b);
        names_are_validated(b);
    }

    fn put_get_range_list_remove(b: &dyn Backend) {
        let name = "ab".repeat(32);
        b.put(Kind::Pack, &name, b"0123456789").unwrap();
        assert_eq!(b.get(Kind::Pack, &name).unwrap(), b"0123456789");
        assert_eq!(b.get_range(Kind::Pack, &name, 3, 4).unwrap(), b"3456");
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
    }

    fn put_is_create_only(b: &dyn Backend) {
        b.put(Kind::Snapshot, "01", b"one").unwrap();
        b.put(Kind::Snapshot, "01", b"one").unwrap();
        let err = b.put(Kind::Snapshot, "01", b"two").unwrap_err();
        assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
        assert_eq!(b.get(Kind::Snapshot, "01").unwrap(), b"one");
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
        assert!(b.get(Kind::Index, "ff").unwrap_err().is_not_found());
        b.put(Kind::Index, "fe", b"abc").unwrap();
        let err = b.get_range(Kind::Index, "fe", 2, 5).unwrap_err();
        assert!(matches!(err, BackendError::ShortRead { .. }), "{err}");
    }

    fn names_are_validated(b: &dyn Backend) {
        for bad in ["../x", "", "AB", "a/b", "config"] {
            assert!(b.put(Kind::Key, bad, b"x").is_err(), "{bad}");
        }
    }
}
