//! Repository-trained zstd dictionaries (`dictionaries/<name>`): the stored object, its
//! parser, and the per-process cache through which every reader gets the dictionary a blob
//! needs. Training lives in [`crate::write::trainer`].
//!
//! A dictionary's plaintext is `"SDC3" || created (u64 LE, Unix nanoseconds) || dict ratio (u32
//! LE) || plain ratio (u32 LE) || zstd dictionary`; the ratios are plaintext bytes per stored
//! byte × 1000 on the samples held out of training, with and without the dictionary. Its
//! name is the keyed hash of that plaintext, and it is encrypted bound to its name, so it
//! opens only under its own name. Entries refer to it by the u32 LE of its name's first four
//! bytes (see repo-format.md, "Dictionaries").
use crate::backend::{Backend, BackendError, Kind};
use crate::repo::crypto::{Aad, CryptoError, MasterKey, ObjectKind};
use crate::repo::id::Id;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The id blob entries use for a dictionary: the first four bytes of its name (u32 LE).
/// Never 0, which means "no dictionary".
pub(crate) type DictId = u32;

const MAGIC: &[u8; 4] = b"SDC3";
/// Magic of a zstd dictionary with entropy tables (what zstd's trainer writes).
const ZSTD_DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();
const HEADER_LEN: usize = 4 + 8 + 4 + 4;
/// The largest dictionary this build writes or reads (the trainer makes at most 110 KiB).
pub(crate) const MAX_DICT_LEN: usize = 1 << 20;
/// `derive_key` context of dictionary names.
const NAME_CONTEXT: &str = "strata 2026 dictionary name";
/// How many digested dictionaries a process keeps (each about 4-5× its size in zstd's
/// tables); others are loaded again when needed.
const CACHED: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DictError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("content does not match its name")]
    Name,
}

/// A dictionary and what training measured of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dictionary {
    /// When it was trained: Unix time in nanoseconds (the newest is used first).
    pub created: u64,
    /// Plaintext bytes per stored byte × 1000 on held-out samples, with the dictionary.
    pub dict_ratio: u32,
    /// The same with plain zstd at the repository's level.
    pub plain_ratio: u32,
    /// The zstd dictionary (magic, id, entropy tables, content).
    pub bytes: Vec<u8>,
}

impl Dictionary {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.bytes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.dict_ratio.to_le_bytes());
        out.extend_from_slice(&self.plain_ratio.to_le_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }

    /// Parses a plaintext written by [`Dictionary::encode`]; the dictionary must start with
    /// zstd's dictionary magic and be at most [`MAX_DICT_LEN`] bytes.
    pub(crate) fn decode(b: &[u8]) -> Result<Dictionary, DictError> {
        let body = b.strip_prefix(MAGIC).ok_or(DictError::Malformed("magic"))?;
        let (created, body) = body
            .split_first_chunk::<8>()
            .ok_or(DictError::Malformed("header"))?;
        let (dict_ratio, body) = body
            .split_first_chunk::<4>()
            .ok_or(DictError::Malformed("header"))?;
        let (plain_ratio, bytes) = body
            .split_first_chunk::<4>()
            .ok_or(DictError::Malformed("header"))?;
        if bytes.len() < 8 || bytes[..4] != ZSTD_DICT_MAGIC {
            return Err(DictError::Malformed("not a zstd dictionary"));
        }
        if bytes.len() > MAX_DICT_LEN {
            return Err(DictError::Malformed("dictionary too large"));
        }
        Ok(Dictionary {
            created: u64::from_le_bytes(*created),
            dict_ratio: u32::from_le_bytes(*dict_ratio),
            plain_ratio: u32::from_le_bytes(*plain_ratio),
            bytes: bytes.to_vec(),
        })
    }

    /// Its name (keyed hash of its plaintext) and stored form.
    pub(crate) fn seal(&self, key: &MasterKey) -> (Id, Vec<u8>) {
        let plain = self.encode();
        let name = name_of(key, &plain);
        (name, key.encrypt(&aad(&name), &plain))
    }

    /// Opens the stored dictionary `name`: it must decrypt bound to that name and its
    /// plaintext must hash to it.
    pub(crate) fn open(key: &MasterKey, name: &Id, sealed: &[u8]) -> Result<Dictionary, DictError> {
        let plain = key.decrypt(&aad(name), sealed)?;
        if name_of(key, &plain) != *name {
            return Err(DictError::Name);
        }
        Dictionary::decode(&plain)
    }
}

/// The name of a dictionary whose plaintext is `plain`: keyed BLAKE3 under a key derived
/// from the id key, so that names reveal nothing of the content.
pub fn name_of(key: &MasterKey, plain: &[u8]) -> Id {
    Id(key.mac(NAME_CONTEXT, plain))
}

/// The associated data of the dictionary `name`: its kind and name (64 hex digits).
pub fn aad(name: &Id) -> Aad {
    Aad::bound(ObjectKind::Dictionary, name.to_hex().as_bytes())
}

/// The id entries use for the dictionary named `name` (0 is not an id: such a dictionary is
/// never used).
pub(crate) fn id_of(name: &Id) -> DictId {
    u32::from_le_bytes(name.0[..4].try_into().expect("4 bytes"))
}

/// A dictionary id as people see it: the first 8 hex digits of the dictionary's name.
pub(crate) fn id_hex(dict: DictId) -> String {
    hex::encode(dict.to_le_bytes())
}

/// A dictionary as readers use it.
pub struct Loaded {
    pub name: Id,
    pub meta: Dictionary,
    pub decoder: zstd::dict::DecoderDictionary<'static>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loaded({})", self.name.short())
    }
}

impl Loaded {
    /// Opens the stored dictionary `name` and has zstd digest it.
    pub fn from_stored(key: &MasterKey, name: Id, sealed: &[u8]) -> Result<Loaded, String> {
        let damaged =
            |e: &dyn std::fmt::Display| format!("dictionary {} is damaged: {e}", name.to_hex());
        let meta = Dictionary::open(key, &name, sealed).map_err(|e| damaged(&e))?;
        let decoder =
            zstd::dict::DecoderDictionary::try_copy(&meta.bytes).map_err(|e| damaged(&e))?;
        Ok(Loaded {
            name,
            meta,
            decoder,
        })
    }
}

/// A dictionary as loaded, or why it cannot be used.
pub(crate) type Lookup = Result<Arc<Loaded>, String>;

/// The dictionaries a process has read, by id: digested, or why they cannot be used (kept
/// too, so that a damaged dictionary is read and reported once, not once per blob).
#[derive(Default)]
pub(crate) struct DictCache {
    /// Dictionary names by id, from the last listing (None: not listed yet).
    names: Mutex<Option<HashMap<DictId, Vec<Id>>>>,
    /// By id: when it was last asked for (a tick), and what loading it gave.
    loaded: Mutex<HashMap<DictId, (u64, Lookup)>>,
    tick: std::sync::atomic::AtomicU64,
}

impl DictCache {
    /// The dictionary with id `dict`, loaded once per process (the last [`CACHED`] used are
    /// kept). Err says why it cannot be used: missing, damaged, or two dictionaries share
    /// the id.
    pub(crate) fn get(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        dict: DictId,
    ) -> Result<Arc<Loaded>, String> {
        let tick = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((used, r)) = self.loaded.lock().expect("dictionary cache").get_mut(&dict) {
            *used = tick;
            return r.clone();
        }
        let r = self.load(backend, key, dict);
        let mut loaded = self.loaded.lock().expect("dictionary cache");
        if loaded.len() >= CACHED {
            let oldest = loaded.iter().min_by_key(|(_, (t, _))| *t).map(|(d, _)| *d);
            if let Some(d) = oldest {
                loaded.remove(&d);
            }
        }
        loaded.insert(dict, (tick, r.clone()));
        r
    }

    fn load(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        dict: DictId,
    ) -> Result<Arc<Loaded>, String> {
        let mut names = self.names_for(backend, dict, false)?;
        if names.is_empty() {
            // Written since the listing (by this process's packer, say): list again.
            names = self.names_for(backend, dict, true)?;
        }
        let name = match names.as_slice() {
            [] => return Err(format!("no dictionary {} in the repository", id_hex(dict))),
            [one] => *one,
            _ => {
                return Err(format!(
                    "{} dictionaries share the id {}",
                    names.len(),
                    id_hex(dict)
                ));
            }
        };
        let sealed = backend
            .get(Kind::Dictionary, &name.to_hex())
            .map_err(|e| e.to_string())?;
        Loaded::from_stored(key, name, &sealed).map(Arc::new)
    }

    fn names_for(
        &self,
        backend: &dyn Backend,
        dict: DictId,
        relist: bool,
    ) -> Result<Vec<Id>, String> {
        let mut names = self.names.lock().expect("dictionary names");
        if names.is_none() || relist {
            *names = Some(list(backend).map_err(|e| e.to_string())?);
        }
        Ok(names
            .as_ref()
            .and_then(|n| n.get(&dict))
            .cloned()
            .unwrap_or_default())
    }
}

/// The names of the stored dictionaries, by id (names that are not ids are ignored).
pub(crate) fn list(backend: &dyn Backend) -> Result<HashMap<DictId, Vec<Id>>, BackendError> {
    let mut by_id: HashMap<DictId, Vec<Id>> = HashMap::new();
    for e in backend.list(Kind::Dictionary)? {
        if let Some(name) = Id::from_hex(&e.name) {
            by_id.entry(id_of(&name)).or_default().push(name);
        }
    }
    Ok(by_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample_dictionary() -> Dictionary {
        let samples: Vec<Vec<u8>> = (0..400u32)
            .map(|i| {
                format!(
                    "<html><body><p>entry {i} of the manual: {}</p></body></html>",
                    i * 7919
                )
                .into_bytes()
            })
            .collect();
        let bytes = zstd::dict::from_samples(&samples, 4096).unwrap();
        Dictionary {
            created: 1_800_000_000,
            dict_ratio: 9000,
            plain_ratio: 3000,
            bytes,
        }
    }

    #[test]
    fn dictionary_round_trips_and_opens_only_under_its_name() {
        let key = MasterKey::random();
        let d = sample_dictionary();
        assert_eq!(Dictionary::decode(&d.encode()).unwrap(), d);
        let (name, sealed) = d.seal(&key);
        assert_eq!(Dictionary::open(&key, &name, &sealed).unwrap(), d);
        let other = Id::hash_of(b"another name");
        assert!(matches!(
            Dictionary::open(&key, &other, &sealed),
            Err(DictError::Crypto(_))
        ));
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(matches!(
            Dictionary::open(&key, &name, &bad),
            Err(DictError::Crypto(_))
        ));
        let forged = key.encrypt(&aad(&other), &d.encode());
        assert_eq!(
            Dictionary::open(&key, &other, &forged),
            Err(DictError::Name)
        );
        assert_eq!(
            id_of(&name),
            u32::from_le_bytes(name.0[..4].try_into().unwrap())
        );
    }

    #[test]
    fn malformed_plaintexts_are_errors() {
        let d = sample_dictionary().encode();
        assert_eq!(
            Dictionary::decode(b"SDC"),
            Err(DictError::Malformed("magic"))
        );
        assert_eq!(
            Dictionary::decode(&d[..10]),
            Err(DictError::Malformed("header"))
        );
        let mut raw = d[..HEADER_LEN].to_vec();
        raw.extend_from_slice(b"raw content, not a trained dictionary");
        assert_eq!(
            Dictionary::decode(&raw),
            Err(DictError::Malformed("not a zstd dictionary"))
        );
    }

    #[test]
    fn the_cache_reports_a_missing_or_damaged_dictionary_once_and_finds_new_ones() {
        use crate::backend::local::LocalBackend;
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let key = MasterKey::random();
        let cache = DictCache::default();
        let d = sample_dictionary();
        let (name, sealed) = d.seal(&key);
        let id = id_of(&name);
        assert!(
            cache
                .get(&backend, &key, id)
                .unwrap_err()
                .contains("no dictionary")
        );
        backend
            .put(Kind::Dictionary, &name.to_hex(), &sealed)
            .unwrap();
        let again = cache.get(&backend, &key, id);
        assert!(again.is_err(), "a failure is remembered");
        let fresh = DictCache::default();
        assert_eq!(
            fresh.get(&backend, &key, id).unwrap().meta,
            d,
            "new ones are found"
        );
        let (other, _) = Dictionary {
            created: 1,
            ..sample_dictionary()
        }
        .seal(&key);
        let mut damaged = sealed.clone();
        damaged[40] ^= 1;
        backend
            .put(Kind::Dictionary, &other.to_hex(), &damaged)
            .unwrap();
        let err = DictCache::default()
            .get(&backend, &key, id_of(&other))
            .unwrap_err();
        assert!(err.contains("is damaged"), "{err}");
    }
}
