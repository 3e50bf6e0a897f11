//! A repository opened with a password: its backend, master key and config, with typed
//! access to keys, snapshots and (once the index is loaded) blobs and trees.
use crate::backend::pool::IoPool;
use crate::backend::{Backend, BackendError, Entry, Kind};
use crate::cancel::Cancel;
use crate::index::{Index, IndexError, Location};
use crate::repo::blob::{self, BlobError, BlobType, Compression, PackedBlobError};
use crate::repo::cache::Cache;
use crate::repo::config::{BOUND_OBJECTS_VERSION, Config, FORMAT_VERSION};
use crate::repo::crypto::{Aad, MasterKey, ObjectKind};
use crate::repo::dictionary::{DictCache, DictId, Loaded};
use crate::repo::id::{BlobId, Id, KeyId, PackId, SnapshotId, TreeId};
use crate::repo::indexfile::{self, PackEntries};
use crate::repo::key::{KdfParams, KeyError, KeyFile};
use crate::repo::lock::{self, LockError, LockGuard, LockMode};
use crate::repo::locked::Locked;
use crate::repo::pack::{BlobEntry, PackFormat};
use crate::repo::pin::{LocalState, PinError};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Tree, TreeError};
use crate::walk;
use rayon::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("there is no repository at {0} (run `strata init` first)")]
    NoRepository(String),
    #[error("there is already a repository at {0}")]
    AlreadyInitialized(String),
    #[error("wrong password, or no key in the repository matches it")]
    WrongPassword,
    #[error("wrong password, or no key in the repository matches it (key files skipped: {0})")]
    WrongPasswordSkipped(String),
    #[error("the repository has no key files")]
    NoKeys,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("key {id}: {source}")]
    Key { id: String, source: KeyError },
    #[error("invalid repository config: {0}")]
    Config(String),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(
        "this repository has format version {0}, which this strata reads but does not write: \
         run `strata migrate` to upgrade it to version {FORMAT_VERSION}"
    )]
    ReadOnlyFormat(u32),
    #[error("{kind} {name} is damaged: {reason}")]
    Damaged {
        kind: Kind,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("blob {0} is not in the index")]
    MissingBlob(BlobId),
    #[error("tree {id}: {source}")]
    Tree { id: TreeId, source: TreeError },
    #[error("no such path in the snapshot: {0}")]
    NoSuchPath(String),
    #[error("no snapshot matches {0:?}")]
    NoSnapshot(String),
    #[error("snapshot prefix {0:?} is ambiguous")]
    AmbiguousSnapshot(String),
    #[error("cannot remove the key in use ({0}); open the repository with another password")]
    KeyInUse(String),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),
}

pub type Result<T> = std::result::Result<T, RepoError>;

/// Readable snapshots (oldest first) and unreadable ones with the reason.
pub(crate) type SnapshotList = (Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, RepoError)>);

pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    key_id: KeyId,
    config: Config,
    /// Key files passed over on opening (KDF parameters out of bounds), with the reason.
    skipped_keys: Vec<(String, String)>,
    /// Dictionaries read so far by this process.
    dictionaries: DictCache,
    /// The local copy of snapshot files and tree packs, for a remote repository opened
    /// with a cache directory.
    cache: Option<Cache>,
}

impl Repository {
    /// Creates a new repository with one key for `password`.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        config: Config,
        kdf: KdfParams,
    ) -> Result<Repository> {
        config.validate().map_err(RepoError::Config)?;
        let taken = |e: BackendError| match e {
            BackendError::AlreadyExists {
                kind: Kind::Config, ..
            } => RepoError::AlreadyInitialized(backend.location()),
            e => e.into(),
        };
        backend.create().map_err(taken)?;
        let key = MasterKey::random().for_repository(config.version, config.keys);
        let key_id = KeyFile::random_id();
        let file = KeyFile::new(&key, password, kdf).map_err(|source| RepoError::Key {
            id: key_id.0.short(),
            source,
        })?;
        let key_name = key_id.0.to_hex();
        backend.put(Kind::Key, &key_name, &file.to_bytes())?;
        let sealed = seal_config(&key, &config);
        // `config` is created only if absent: of two racing inits one wins, and the other
        // takes back its key file, which opens nothing in the winner's repository.
        if let Err(e) = backend.put(Kind::Config, "config", &sealed) {
            let _ = backend.remove(Kind::Key, &key_name);
            return Err(taken(e));
        }
        Ok(Repository {
            backend,
            key,
            key_id,
            config,
            skipped_keys: Vec::new(),
            dictionaries: DictCache::default(),
            cache: None,
        })
    }

    /// Opens an existing repository without a local cache (see [`Repository::open_cached`]).
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        Repository::open_cached(backend, password, None)
    }

    /// Opens an existing repository: finds a key file that `password` opens (the one that
    /// opened it last first), then the config, which must match what this client's cache
    /// (under `cache`) remembers of it.
    pub fn open_cached(
        backend: Arc<dyn Backend>,
        password: &[u8],
        cache: Option<&Path>,
    ) -> Result<Repository> {
        let state = cache.map(LocalState::new);
        let hint = state
            .as_ref()
            .and_then(|s| s.remembered_key(&backend.location()));
        // One round trip on object storage, not two: the config, the listing of the key
        // files and the key file that opened this repository last are asked for at once,
        // on the store's request threads. The other key files are read only if that one
        // does not open it (and then it is tried again among them).
        let requests = || {
            rayon::join(
                || backend.get(Kind::Config, "config"),
                || listed_keys(backend.as_ref(), hint.as_deref()),
            )
        };
        let (sealed_config, keys) = IoPool::for_backend(backend.as_ref()).install(requests);
        let sealed_config = match sealed_config {
            Err(e) if e.is_not_found() => return Err(RepoError::NoRepository(backend.location())),
            other => other?,
        };
        let (listed, hinted) = keys?;
        // Only a remembered file with a MAC is tried alone: a MAC-less one goes last among
        // all of them, as in `unlock`.
        let alone = hinted.filter(|(_, _, file)| file.has_mac());
        let unlocked = match alone.map(|file| unlock(vec![file], password)) {
            Some(Ok(unlocked)) => unlocked,
            _ => unlock(key_files(backend.as_ref(), listed), password)?,
        };
        let config = open_config(&unlocked.key, &sealed_config)?;
        unlocked.check_against(&config)?;
        if let Some(state) = &state {
            state.check_config(&unlocked.key, &config)?;
            state.remember_key(&backend.location(), &unlocked.id.0.to_hex())?;
        }
        let cache = (cache.filter(|_| backend.is_remote()))
            .map(|dir| Cache::open(dir, &config.id))
            .transpose()?;
        Ok(Repository {
            backend,
            key: unlocked.key.for_repository(config.version, config.keys),
            key_id: unlocked.id,
            config,
            skipped_keys: unlocked.skipped,
            dictionaries: DictCache::default(),
            cache,
        })
    }

    /// The repository reading everything from the store, none of it from the local cache
    /// (for `check` and `repair`, which judge what is stored).
    pub fn without_cache(self) -> Repository {
        Repository {
            cache: None,
            ..self
        }
    }

    /// Key files passed over on opening because their KDF parameters are out of bounds.
    pub fn skipped_key_files(&self) -> &[(String, String)] {
        &self.skipped_keys
    }

    /// The repository's format version.
    pub(crate) fn version(&self) -> u32 {
        self.config.version
    }

    /// Fails unless this build writes the repository's format (older ones: migrate first).
    pub fn ensure_writable(&self) -> Result<()> {
        match self.config.is_writable() {
            true => Ok(()),
            false => Err(RepoError::ReadOnlyFormat(self.config.version)),
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The backend, to share with work that outlives a borrow (locks).
    pub(crate) fn shared_backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dictionary with id `dict`, read once per process; Err says why it is unusable.
    pub(crate) fn dictionary(&self, dict: DictId) -> std::result::Result<Arc<Loaded>, String> {
        self.dictionaries.get(self.backend(), &self.key, dict)
    }

    /// Decrypts, decompresses (with its dictionary, if it has one) and verifies the blob `e`
    /// read from a pack of `format`: the one way every reader opens blobs.
    /// The stored bytes of blob `e` inside `pack_bytes` (a downloaded pack of `format`), once
    /// they decrypt, decompress and hash to its id: how check, prune and repair verify a
    /// pack's blobs before they count on or copy them.
    pub(crate) fn verified<'p>(
        &self,
        format: PackFormat,
        pack_bytes: &'p [u8],
        e: &BlobEntry,
    ) -> std::result::Result<&'p [u8], PackedBlobError> {
        let start = e.offset as usize;
        let stored = (start.checked_add(e.length as usize))
            .and_then(|end| pack_bytes.get(start..end))
            .ok_or(PackedBlobError::OutOfBounds {
                offset: e.offset,
                length: e.length,
                pack_len: pack_bytes.len(),
            })?;
        self.open_blob(format, e, stored.to_vec())
            .map_err(PackedBlobError::Unreadable)?;
        Ok(stored)
    }

    pub(crate) fn open_blob(
        &self,
        format: PackFormat,
        e: &BlobEntry,
        stored: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, BlobError> {
        let loaded = match e.compression {
            Compression::Dictionary(d) => Some(self.dictionary(d)),
            _ => None,
        };
        let dict = loaded
            .as_ref()
            .map(|r| r.as_ref().map(|l| &l.decoder).map_err(Clone::clone));
        blob::open_owned(&self.key, format, e, stored, dict)
    }

    /// Takes a repository lock for `command` (see [`Locked::take`]); it is held, and
    /// refreshed, until the returned value is dropped.
    pub fn lock(
        &self,
        mode: LockMode,
        command: &str,
        wait: Duration,
        cache: Option<&Path>,
    ) -> Result<Locked<'_>> {
        Locked::take(self, mode, command, wait, cache)
    }

    /// Takes a repository lock for `command` as a bare guard, to be turned into a
    /// [`Locked`] by [`Locked::new`] once the repository is ready (its index loaded).
    pub fn acquire_lock(
        &self,
        mode: LockMode,
        command: &str,
        wait: Duration,
        cache: Option<&Path>,
    ) -> Result<LockGuard> {
        let sightings = self.lock_sightings(cache);
        Ok(LockGuard::acquire(
            self.backend.clone(),
            &self.key,
            mode,
            command,
            wait,
            sightings.as_deref(),
        )?)
    }

    /// The file in the local cache `cache` that keeps what this machine saw of the
    /// repository's locks (see `lock::Judge`).
    pub fn lock_sightings(&self, cache: Option<&Path>) -> Option<PathBuf> {
        cache.map(|dir| {
            dir.join(self.config.id.to_hex())
                .join("lock-sightings.json")
        })
    }

    pub fn list_keys(&self) -> Result<Vec<(KeyId, Result<KeyFile>)>> {
        let entries = self.backend.list(Kind::Key)?;
        Ok(entries
            .into_iter()
            .filter_map(|e| Some((KeyId(Id::from_hex(&e.name)?), e.name)))
            .map(|(id, name)| (id, self.load_key_file(&name)))
            .collect())
    }

    fn load_key_file(&self, name: &str) -> Result<KeyFile> {
        let bytes = self.backend.get(Kind::Key, name)?;
        KeyFile::parse(&bytes).map_err(|source| RepoError::Key {
            id: name.to_string(),
            source,
        })
    }

    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        self.ensure_writable()?;
        let id = KeyFile::random_id();
        let file = KeyFile::new(&self.key, password, kdf).map_err(|source| RepoError::Key {
            id: id.0.short(),
            source,
        })?;
        self.backend
            .put(Kind::Key, &id.0.to_hex(), &file.to_bytes())?;
        Ok(id)
    }

    pub fn remove_key(&self, id: KeyId) -> Result<()> {
        self.ensure_writable()?;
        if id == self.key_id {
            return Err(RepoError::KeyInUse(id.0.short()));
        }
        self.backend.remove(Kind::Key, &id.0.to_hex())?;
        Ok(())
    }

    /// Replaces the key this repository was opened with by a new one for `password`: the new
    /// key file is written before the old one is removed, so a crash between leaves both.
    pub fn change_password(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let id = self.add_key(password, kdf)?;
        self.backend.remove(Kind::Key, &self.key_id.0.to_hex())?;
        Ok(id)
    }

    /// Removes stale locks (every lock with `all`), judging staleness with what this machine
    /// saw of them, kept below `cache` (see `lock::Judge`).
    pub fn unlock(&self, all: bool, cache: Option<&Path>) -> Result<lock::Unlocked> {
        let sightings = self.lock_sightings(cache);
        Ok(lock::remove_stale(
            self.backend.as_ref(),
            &self.key,
            all,
            sightings.as_deref(),
        )?)
    }

    /// Checks a key file against the master key: altered, or (from version 3 on) without
    /// a MAC, is an error.
    pub(crate) fn verify_key_file(&self, file: &KeyFile) -> std::result::Result<(), KeyError> {
        match file.verify(&self.key)? {
            false if self.config.version >= BOUND_OBJECTS_VERSION => Err(KeyError::MissingMac),
            _ => Ok(()),
        }
    }

    /// Finds a key id by unique hex prefix.
    pub fn find_key(&self, prefix: &str) -> Result<KeyId> {
        let names = self.backend.list(Kind::Key)?.into_iter().map(|e| e.name);
        let name = unique_prefix(names, prefix)?;
        Ok(KeyId(
            Id::from_hex(&name).ok_or(RepoError::NoSnapshot(prefix.into()))?,
        ))
    }

    /// Stores `value` as a JSON object named by its hash (see `Locked::save_snapshot`).
    pub(crate) fn save_json<T: Serialize>(&self, kind: Kind, value: &T) -> Result<Id> {
        let sealed = self.key.encrypt(
            &self.key.aad(object_kind(kind), b""),
            &serde_json::to_vec(value).expect("serialisable"),
        );
        let id = Id::hash_of(&sealed);
        self.backend.put(kind, &id.to_hex(), &sealed)?;
        if kind == Kind::Snapshot {
            self.cache_written(kind, &id.to_hex(), &sealed);
        }
        Ok(id)
    }

    /// Keeps a copy of a snapshot or tree pack this client writes in the local cache of a
    /// remote repository, so that its next backup, `ls` or mount does not read it back.
    pub(crate) fn cache_written(&self, kind: Kind, name: &str, bytes: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.put(kind, name, bytes);
        }
    }

    pub fn load_snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        let name = id.0.to_hex();
        let sealed = match &self.cache {
            Some(cache) => cache.get(self.backend(), Kind::Snapshot, &name)?,
            None => self.backend.get(Kind::Snapshot, &name)?,
        };
        if Id::hash_of(&sealed) != id.0 {
            return Err(damaged(
                Kind::Snapshot,
                &name,
                "content does not match its name",
            ));
        }
        decrypt_json(&self.key, Kind::Snapshot, &name, &sealed)
    }

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let entries = self.backend.list(Kind::Snapshot)?;
        Ok(entries
            .iter()
            .filter_map(|e| Id::from_hex(&e.name).map(SnapshotId))
            .collect())
    }

    /// Every readable snapshot, oldest first, and the damaged ones with their errors.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let ids = self.snapshot_ids()?;
        if let Some(cache) = &self.cache {
            let listed: HashSet<String> = ids.iter().map(|id| id.0.to_hex()).collect();
            cache.retain(Kind::Snapshot, |name| listed.contains(name));
        }
        let load = || {
            (ids.into_par_iter())
                .map(|id| (id, self.load_snapshot(id)))
                .collect::<Vec<_>>()
        };
        let loaded = IoPool::for_backend(self.backend()).install(load);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (id, r) in loaded {
            match r {
                Ok(s) => good.push((id, s)),
                Err(e) => bad.push((id, e)),
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Resolves `latest` or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            let (all, _) = self.snapshots()?;
            let newest = all.into_iter().rev().find(|(_, s)| !s.is_oplog_slice());
            return newest.ok_or(RepoError::NoSnapshot(spec.into()));
        }
        let names = self.snapshot_ids()?.into_iter().map(|id| id.0.to_hex());
        let name = unique_prefix(names, spec)?;
        let id = SnapshotId(Id::from_hex(&name).expect("listed names are hex"));
        Ok((id, self.load_snapshot(id)?))
    }

    /// Loads the blob index into the SQLite cache at `cache` (None: in memory).
    pub fn open_index(self, cache: Option<&Path>) -> Result<IndexedRepo> {
        let index = match cache {
            Some(dir) => {
                let dir = dir.join(self.config.id.to_hex());
                std::fs::create_dir_all(&dir).map_err(|source| BackendError::Io {
                    op: "create cache directory",
                    path: dir.display().to_string(),
                    source,
                })?;
                Index::open(&dir.join("index.sqlite"))?
            }
            None => Index::in_memory()?,
        };
        let mut repo = IndexedRepo {
            repo: self,
            index,
            damaged_index_files: Vec::new(),
        };
        repo.damaged_index_files = repo.sync_index()?;
        if let Some(cache) = &repo.repo.cache {
            let indexed =
                |name: &str| Id::from_hex(name).map(|id| repo.index.has_pack(&PackId(id)));
            cache.retain(Kind::Pack, |name| {
                matches!(indexed(name), Some(Ok(true)) | Some(Err(_)))
            });
        }
        Ok(repo)
    }
}

fn damaged(kind: Kind, name: &str, reason: impl ToString) -> RepoError {
    RepoError::Damaged {
        kind,
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// What an object stored under `kind` is, for its associated data.
fn object_kind(kind: Kind) -> ObjectKind {
    match kind {
        Kind::Config => ObjectKind::Config,
        Kind::Key => ObjectKind::Key,
        Kind::Snapshot => ObjectKind::Snapshot,
        Kind::Index => ObjectKind::Index,
        Kind::Pack => ObjectKind::PackHeader,
        Kind::Lock => ObjectKind::Lock,
        Kind::Dictionary => ObjectKind::Dictionary,
    }
}

fn decrypt_json<T: DeserializeOwned>(
    key: &MasterKey,
    kind: Kind,
    name: &str,
    sealed: &[u8],
) -> Result<T> {
    let plain = key
        .decrypt(&key.aad(object_kind(kind), b""), sealed)
        .map_err(|e| damaged(kind, name, e))?;
    serde_json::from_slice(&plain).map_err(|e| damaged(kind, name, e))
}

/// The stored form of `config`, encrypted for its own format version.
pub(crate) fn seal_config(key: &MasterKey, config: &Config) -> Vec<u8> {
    let key = key.for_repository(config.version, config.keys);
    let plain = serde_json::to_vec(config).expect("config serializes");
    key.encrypt(&key.aad(ObjectKind::Config, b""), &plain)
}

/// Decrypts and checks the config. Its version is only known once it is read: it opens with
/// the config kind bound (version 3 on) or, for older versions only, with none, so that
/// nothing else (a carved blob) passes for a version 3 config.
fn open_config(key: &MasterKey, sealed: &[u8]) -> Result<Config> {
    let bound = key.for_repository(FORMAT_VERSION, crate::repo::crypto::KeyDerivation::V3);
    let config: Config = match decrypt_json(&bound, Kind::Config, "config", sealed) {
        Ok(c) => c,
        Err(_) => {
            let legacy = key.decrypt(&Aad::legacy(), sealed);
            let plain = legacy.map_err(|e| damaged(Kind::Config, "config", e))?;
            let c: Config =
                serde_json::from_slice(&plain).map_err(|e| damaged(Kind::Config, "config", e))?;
            if c.version >= BOUND_OBJECTS_VERSION {
                return Err(damaged(
                    Kind::Config,
                    "config",
                    "a version 3 config without its kind bound (forged)",
                ));
            }
            c
        }
    };
    config.validate().map_err(RepoError::Config)?;
    Ok(config)
}

fn unique_prefix(names: impl Iterator<Item = String>, prefix: &str) -> Result<String> {
    let mut matches = names.filter(|n| n.starts_with(prefix) && !prefix.is_empty());
    let first = matches.next().ok_or(RepoError::NoSnapshot(prefix.into()))?;
    match matches.next() {
        Some(_) => Err(RepoError::AmbiguousSnapshot(prefix.into())),
        None => Ok(first),
    }
}

/// The key file `password` opened, and those passed over.
struct Unlocked {
    id: KeyId,
    key: MasterKey,
    file: KeyFile,
    skipped: Vec<(String, String)>,
}

impl Unlocked {
    /// Version 3 key files must carry a MAC (finding 6), and a key file of a version 3
    /// repository refuses a config of a lower version (a config rolled back in storage).
    fn check_against(&self, config: &Config) -> Result<()> {
        let id = self.id.0.to_hex();
        if config.version >= BOUND_OBJECTS_VERSION && !self.file.has_mac() {
            return Err(RepoError::Key {
                id,
                source: KeyError::MissingMac,
            });
        }
        if self.file.version >= BOUND_OBJECTS_VERSION && config.version < self.file.version {
            return Err(RepoError::Config(format!(
                "config says format version {}, but key file {id} belongs to a version {} repository",
                config.version, self.file.version
            )));
        }
        Ok(())
    }
}

/// Tries every key file, those without a MAC last (a version 3 repository refuses them: a
/// planted MAC-less copy must not hide the genuine file); the first that `password` opens
/// wins. Key files whose KDF parameters are out of bounds are skipped.
fn unlock(mut files: Vec<NamedKeyFile>, password: &[u8]) -> Result<Unlocked> {
    if files.is_empty() {
        return Err(RepoError::NoKeys);
    }
    files.sort_by_key(|(_, _, file)| !file.has_mac());
    let mut damaged_match = None;
    let mut skipped = Vec::new();
    for (name, id, file) in files {
        match file.open(password) {
            Ok(key) => {
                return Ok(Unlocked {
                    id,
                    key,
                    file,
                    skipped,
                });
            }
            Err(source @ KeyError::OutOfBounds(_)) => skipped.push((name, source.to_string())),
            // The password opened it, but the file was altered: say so, unless another
            // key file opens.
            Err(source @ KeyError::Damaged(_)) => {
                damaged_match = Some(RepoError::Key { id: name, source })
            }
            Err(_) => {}
        }
    }
    Err(damaged_match.unwrap_or_else(|| wrong_password(&skipped)))
}

/// The listing of the key files, and the key file named `hint` (the one expected to open
/// the repository), read while the listing is asked for; it counts only if listed.
fn listed_keys(
    backend: &dyn Backend,
    hint: Option<&str>,
) -> Result<(Vec<Entry>, Option<NamedKeyFile>)> {
    let read = || hint.and_then(|name| read_key_file(backend, name));
    let (listed, hinted) = rayon::join(|| backend.list(Kind::Key), read);
    let listed = listed?;
    let hinted = hinted.filter(|(name, ..)| listed.iter().any(|e| &e.name == name));
    Ok((listed, hinted))
}

/// A key file with its name and id.
type NamedKeyFile = (String, KeyId, KeyFile);

/// The key file `name` with its id, if it reads and parses.
fn read_key_file(backend: &dyn Backend, name: &str) -> Option<NamedKeyFile> {
    let id = Id::from_hex(name)?;
    let file = KeyFile::parse(&backend.get(Kind::Key, name).ok()?).ok()?;
    Some((name.to_string(), KeyId(id), file))
}

/// Every key file of `listed` that parses, with its name and id; unreadable ones are passed
/// over. They are read in parallel (each host of a shared repository may have its own).
fn key_files(backend: &dyn Backend, listed: Vec<Entry>) -> Vec<NamedKeyFile> {
    let read_all = || {
        (listed.into_par_iter())
            .filter_map(|e| read_key_file(backend, &e.name))
            .collect()
    };
    IoPool::for_backend(backend).install(read_all)
}

fn wrong_password(skipped: &[(String, String)]) -> RepoError {
    if skipped.is_empty() {
        return RepoError::WrongPassword;
    }
    let list: Vec<String> = skipped
        .iter()
        .map(|(n, why)| format!("{n}: {why}"))
        .collect();
    RepoError::WrongPasswordSkipped(list.join("; "))
}

/// A repository whose blob index is loaded: blobs and trees can be read and written.
pub struct IndexedRepo {
    repo: Repository,
    index: Index,
    /// Index files that could not be read when the index was loaded, with the reason.
    pub damaged_index_files: Vec<(String, String)>,
}

impl Deref for IndexedRepo {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl AsRef<Repository> for Repository {
    fn as_ref(&self) -> &Repository {
        self
    }
}

impl AsRef<Repository> for IndexedRepo {
    fn as_ref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepo {
    /// Takes a repository lock for `command` (see [`Locked::take`]); it is held, and
    /// refreshed, until the returned value is dropped.
    pub fn lock(
        &self,
        mode: LockMode,
        command: &str,
        wait: Duration,
        cache: Option<&Path>,
    ) -> Result<Locked<'_, IndexedRepo>> {
        Locked::take(self, mode, command, wait, cache)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Brings the SQLite index in line with the index files; returns the unreadable ones.
    pub fn sync_index(&self) -> Result<Vec<(String, String)>> {
        let listed: HashMap<String, u64> = self
            .backend()
            .list(Kind::Index)?
            .into_iter()
            .map(|e| (e.name, e.size))
            .collect();
        let loaded = self.index.loaded_files()?;
        let vanished = loaded.iter().any(|n| !listed.contains_key(n));
        if vanished {
            self.index.clear()?;
        }
        let loaded = if vanished { Default::default() } else { loaded };
        let fresh: Vec<(&String, u64)> = (listed.iter())
            .filter(|(n, _)| !loaded.contains(*n))
            .map(|(n, size)| (n, *size))
            .collect();
        let mut damaged_files = Vec::new();
        let pool = IoPool::for_backend(self.backend());
        let load = |(n, _): &(&String, u64)| self.read_index_file(n);
        let weigh = |(_, size): &(&String, u64)| *size;
        let never = Cancel::default();
        walk::in_weighed_batches(
            indexfile::AT_ONCE,
            &fresh,
            weigh,
            &pool,
            &never,
            load,
            |(name, _), r| {
                match r {
                    Ok(packs) => self.index.add_file(name, &packs)?,
                    Err(e) => damaged_files.push(((*name).clone(), e.to_string())),
                }
                Ok::<(), RepoError>(())
            },
        )?;
        Ok(damaged_files)
    }

    pub(crate) fn read_index_file(&self, name: &str) -> Result<Vec<PackEntries>> {
        let sealed = self.backend().get(Kind::Index, name)?;
        if Id::hash_of(&sealed).to_hex() != name {
            return Err(damaged(
                Kind::Index,
                name,
                "content does not match its name",
            ));
        }
        indexfile::decode(self.key(), self.config().version, &sealed)
            .map_err(|e| damaged(Kind::Index, name, e))
    }

    pub fn locate(&self, id: &BlobId) -> Result<Location> {
        self.index.lookup(id)?.ok_or(RepoError::MissingBlob(*id))
    }

    /// Reads, decrypts, decompresses and verifies one blob.
    pub(crate) fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        self.read_blob_at(&loc)
    }

    /// Reads one blob; a tree blob of a remote repository from the cached copy of its pack
    /// (a copy whose blob fails to open is dropped, and the blob read from the store).
    pub fn read_blob_at(&self, loc: &Location) -> Result<Vec<u8>> {
        let e = &loc.entry;
        let name = loc.pack.0.to_hex();
        let (offset, len) = (e.offset as u64, e.length as u64);
        if let (Some(cache), BlobType::Tree) = (&self.cache, e.ty) {
            let stored = cache.get_range(self.backend(), &name, offset, len)?;
            match self.open_blob(loc.format, e, stored) {
                Ok(plain) => return Ok(plain),
                Err(_) => cache.drop_object(Kind::Pack, &name),
            }
        }
        let stored = self.backend().get_range(Kind::Pack, &name, offset, len)?;
        Ok(self.open_blob(loc.format, e, stored)?)
    }

    pub fn load_tree(&self, id: &TreeId) -> Result<Tree> {
        let bytes = self.read_blob(&id.blob())?;
        Tree::decode(&bytes).map_err(|source| RepoError::Tree { id: *id, source })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::repo::config::ChunkerParams;

    pub(crate) fn test_repo(dir: &Path) -> Repository {
        let backend = Arc::new(LocalBackend::new(dir.join("repo")));
        let config = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        Repository::init(backend, b"pw", config, KdfParams::new(64, 1)).unwrap()
    }

    #[test]
    fn init_open_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
        let opened = Repository::open(backend.clone(), b"pw").unwrap();
        assert_eq!(opened.config(), repo.config());
        assert!(matches!(
            Repository::open(backend.clone(), b"bad"),
            Err(RepoError::WrongPassword)
        ));
        let second = repo.add_key(b"two", KdfParams::new(64, 1)).unwrap();
        assert_eq!(
            Repository::open(backend.clone(), b"two").unwrap().key_id(),
            second
        );
        assert!(matches!(
            repo.remove_key(repo.key_id()),
            Err(RepoError::KeyInUse(_))
        ));
        repo.remove_key(second).unwrap();
        assert!(Repository::open(backend, b"two").is_err());
        let missing = Arc::new(LocalBackend::new(dir.path().join("nothing")));
        assert!(matches!(
            Repository::open(missing, b"pw"),
            Err(RepoError::NoRepository(_))
        ));
    }

    /// A store whose listing of key files answers only once a key file is being read (or
    /// after 10 s), and leaves out `hidden`: it tells whether the two requests were in flight
    /// at once, and stands for a key file removed while the listing was asked for. It counts
    /// the key files read.
    struct KeyGate {
        inner: Arc<dyn Backend>,
        hidden: Option<String>,
        key_reads: std::sync::atomic::AtomicUsize,
        reading: std::sync::Mutex<bool>,
        started: std::sync::Condvar,
        overlapped: std::sync::atomic::AtomicBool,
    }

    impl Backend for KeyGate {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> crate::backend::Result<()> {
            self.inner.create()
        }
        fn put(&self, kind: Kind, name: &str, data: &[u8]) -> crate::backend::Result<()> {
            self.inner.put(kind, name, data)
        }
        fn replace(&self, kind: Kind, name: &str, data: &[u8]) -> crate::backend::Result<()> {
            self.inner.replace(kind, name, data)
        }
        fn get(&self, kind: Kind, name: &str) -> crate::backend::Result<Vec<u8>> {
            if kind == Kind::Key {
                (self.key_reads).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                *self.reading.lock().unwrap() = true;
                self.started.notify_all();
            }
            self.inner.get(kind, name)
        }
        fn get_range(
            &self,
            kind: Kind,
            name: &str,
            offset: u64,
            len: u64,
        ) -> crate::backend::Result<Vec<u8>> {
            self.inner.get_range(kind, name, offset, len)
        }
        fn head(&self, kind: Kind, name: &str) -> crate::backend::Result<u64> {
            self.inner.head(kind, name)
        }
        fn list(&self, kind: Kind) -> crate::backend::Result<Vec<crate::backend::Entry>> {
            if kind != Kind::Key {
                return self.inner.list(kind);
            }
            let reading = self.reading.lock().unwrap();
            let wait = Duration::from_secs(10);
            let (reading, _) = (self.started.wait_timeout_while(reading, wait, |r| !*r)).unwrap();
            (self.overlapped).store(*reading, std::sync::atomic::Ordering::SeqCst);
            let mut listed = self.inner.list(kind)?;
            listed.retain(|e| Some(&e.name) != self.hidden.as_ref());
            Ok(listed)
        }
        fn remove(&self, kind: Kind, name: &str) -> crate::backend::Result<()> {
            self.inner.remove(kind, name)
        }
        fn connections(&self) -> usize {
            self.inner.connections()
        }
        fn is_remote(&self) -> bool {
            self.inner.is_remote()
        }
    }

    #[test]
    fn the_remembered_key_file_is_read_while_the_key_files_are_listed() {
        let store: Arc<dyn Backend> = Arc::new(crate::backend::object::ObjectBackend::memory());
        let config = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        let repo = Repository::init(store.clone(), b"pw", config, KdfParams::new(64, 1)).unwrap();
        let other = repo.add_key(b"other", KdfParams::new(64, 1)).unwrap();
        let cache = tempfile::tempdir().unwrap();
        // The first open through this cache remembers the key file that opened it.
        Repository::open_cached(store.clone(), b"other", Some(cache.path())).unwrap();
        let open = |password: &[u8], hidden: Option<KeyId>| {
            let gate = Arc::new(KeyGate {
                inner: store.clone(),
                hidden: hidden.map(|k| k.0.to_hex()),
                key_reads: 0.into(),
                reading: std::sync::Mutex::new(false),
                started: std::sync::Condvar::new(),
                overlapped: false.into(),
            });
            let opened = Repository::open_cached(gate.clone(), password, Some(cache.path()));
            let overlapped = gate.overlapped.load(std::sync::atomic::Ordering::SeqCst);
            let reads = gate.key_reads.load(std::sync::atomic::Ordering::SeqCst);
            (opened.map(|r| r.key_id()).ok(), overlapped, reads)
        };
        // The remembered key file is read while the key files are listed, and opens it: the
        // other key file is not read.
        assert_eq!(open(b"other", None), (Some(other), true, 1));
        // It is not the password's: all are read and tried, and the one that opens is
        // remembered instead.
        assert_eq!(open(b"pw", None), (Some(repo.key_id()), true, 3));
        // The remembered key file, read at once, is left out of the listing (removed
        // meanwhile): it opens nothing.
        assert_eq!(open(b"pw", Some(repo.key_id())), (None, true, 2));
        assert_eq!(open(b"other", Some(repo.key_id())), (Some(other), true, 2));
    }

    #[test]
    fn snapshot_lookup_by_prefix_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        assert!(matches!(
            repo.find_snapshot("latest"),
            Err(RepoError::NoSnapshot(_))
        ));
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h", "username": "u",
            "uid": 0, "gid": 0, "paths": ["/x"], "tree": "00".repeat(32), "program_version": "t"});
        let mut snap: Snapshot = serde_json::from_value(json).unwrap();
        let locked = crate::repo::locked::exclusive(&repo);
        let old = locked.save_snapshot(&snap).unwrap();
        snap.time = "2021-01-01T00:00:00Z".parse().unwrap();
        let new = locked.save_snapshot(&snap).unwrap();
        assert_eq!(repo.find_snapshot("latest").unwrap().0, new);
        assert_eq!(repo.find_snapshot(&old.0.to_hex()[..10]).unwrap().0, old);
        assert_eq!(repo.snapshots().unwrap().0.len(), 2);
    }
}
