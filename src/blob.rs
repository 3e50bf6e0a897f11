//! Blobs: the unit of deduplication. A blob's plaintext is compressed with zstd when that
//! makes it smaller, then encrypted (in version 3 packs bound to its type and id); opening
//! reverses both and checks the keyed id.
use crate::crypto::{CryptoError, MasterKey};
use crate::id::BlobId;
use crate::pack::{BlobEntry, PackFormat};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {id}: {source}")]
    Crypto { id: BlobId, source: CryptoError },
    #[error("blob {id}: decompression failed: {message}")]
    Decompress { id: BlobId, message: String },
    #[error("blob {id}: length {actual} differs from the indexed {expected}")]
    Length {
        id: BlobId,
        expected: u32,
        actual: usize,
    },
    #[error("blob {id}: content does not match its id")]
    Hash { id: BlobId },
}

/// A blob ready to be written into a pack.
pub struct Sealed {
    pub id: BlobId,
    pub ty: BlobType,
    pub bytes: Vec<u8>,
    pub raw_len: u32,
    pub compressed: bool,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// zstd at `level`, or None when compression is off or does not shrink the data.
fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || data.len() < 64 {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        let out = c.compress(data).ok()?;
        (out.len() < data.len()).then_some(out)
    })
}

/// Compresses (when it helps) and encrypts a blob whose id has already been computed, for a
/// pack of `format`.
pub fn seal(
    key: &MasterKey,
    format: PackFormat,
    ty: BlobType,
    id: BlobId,
    plain: &[u8],
    level: i32,
) -> Sealed {
    let compressed = compress(plain, level);
    let aad = format.blob_aad(ty, &id);
    let bytes = key.encrypt(&aad, compressed.as_deref().unwrap_or(plain));
    Sealed {
        id,
        ty,
        bytes,
        raw_len: plain.len() as u32,
        compressed: compressed.is_some(),
    }
}

/// Decrypts, decompresses and verifies the blob `e` read from a pack of `format`.
pub fn open(
    key: &MasterKey,
    format: PackFormat,
    e: &BlobEntry,
    stored: &[u8],
) -> Result<Vec<u8>, BlobError> {
    open_owned(key, format, e, stored.to_vec())
}

/// [`open`] for a blob read into a buffer of its own, decrypted where it lies.
pub fn open_owned(
    key: &MasterKey,
    format: PackFormat,
    e: &BlobEntry,
    mut stored: Vec<u8>,
) -> Result<Vec<u8>, BlobError> {
    let (id, raw_len) = (e.id, e.raw_length);
    let body = key
        .decrypt_in_place(&format.blob_aad(e.ty, &id), &mut stored)
        .map_err(|source| BlobError::Crypto { id, source })?;
    let plain = if e.compressed {
        decompress(&stored[body], raw_len).map_err(|e| BlobError::Decompress {
            id,
            message: e.to_string(),
        })?
    } else {
        stored.truncate(body.end);
        stored.drain(..body.start);
        stored
    };
    if plain.len() != raw_len as usize {
        return Err(BlobError::Length {
            id,
            expected: raw_len,
            actual: plain.len(),
        });
    }
    if key.blob_id(&plain) != id {
        return Err(BlobError::Hash { id });
    }
    Ok(plain)
}

/// The sealed bytes of `e`, taken from a pack of format `from`, sealed for a pack of format
/// `to`: unchanged when the formats agree, else decrypted and encrypted again (still
/// compressed). The caller has verified the blob.
pub fn reseal(
    key: &MasterKey,
    from: PackFormat,
    to: PackFormat,
    e: &BlobEntry,
    stored: &[u8],
) -> Result<Vec<u8>, BlobError> {
    if from == to {
        return Ok(stored.to_vec());
    }
    let payload = key
        .decrypt(&from.blob_aad(e.ty, &e.id), stored)
        .map_err(|source| BlobError::Crypto { id: e.id, source })?;
    Ok(key.encrypt(&to.blob_aad(e.ty, &e.id), &payload))
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd decompression with this thread's reused context.
fn decompress(data: &[u8], raw_len: u32) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(data, raw_len as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V3: PackFormat = PackFormat::V3;

    fn entry(s: &Sealed) -> BlobEntry {
        BlobEntry {
            ty: s.ty,
            id: s.id,
            offset: 0,
            length: s.bytes.len() as u32,
            raw_length: s.raw_len,
            compressed: s.compressed,
        }
    }

    #[test]
    fn compressible_blob_round_trips_compressed() {
        let k = MasterKey::random();
        let plain = b"abcabcabc".repeat(1000);
        let id = k.blob_id(&plain);
        let s = seal(&k, V3, BlobType::Data, id, &plain, 3);
        assert!(s.compressed && s.bytes.len() < plain.len());
        assert_eq!(open(&k, V3, &entry(&s), &s.bytes).unwrap(), plain);
    }

    #[test]
    fn incompressible_blob_is_stored_raw() {
        let k = MasterKey::random();
        let mut plain = vec![0u8; 4096];
        crate::crypto::fill_random(&mut plain);
        let id = k.blob_id(&plain);
        let s = seal(&k, V3, BlobType::Data, id, &plain, 3);
        assert!(!s.compressed);
        assert_eq!(open(&k, V3, &entry(&s), &s.bytes).unwrap(), plain);
    }

    #[test]
    fn wrong_id_or_key_is_detected() {
        let k = MasterKey::random();
        let id = k.blob_id(b"data");
        let s = seal(&k, PackFormat::Legacy, BlobType::Data, id, b"data", 3);
        let other = BlobEntry {
            id: k.blob_id(b"other"),
            ..entry(&s)
        };
        assert!(matches!(
            open(&k, PackFormat::Legacy, &other, &s.bytes),
            Err(BlobError::Hash { .. })
        ));
        let err = open(
            &MasterKey::random(),
            PackFormat::Legacy,
            &entry(&s),
            &s.bytes,
        );
        assert!(matches!(err, Err(BlobError::Crypto { .. })));
    }

    #[test]
    fn v3_blob_with_another_id_fails_authentication_not_just_the_hash() {
        let k = MasterKey::random();
        let s = seal(&k, V3, BlobType::Data, k.blob_id(b"data"), b"data", 3);
        let other = BlobEntry {
            id: k.blob_id(b"other"),
            ..entry(&s)
        };
        assert!(matches!(
            open(&k, V3, &other, &s.bytes),
            Err(BlobError::Crypto { .. })
        ));
    }

    #[test]
    fn legacy_blob_resealed_for_v3_opens_only_as_v3() {
        let k = MasterKey::random();
        let plain = b"xyz".repeat(100);
        let s = seal(
            &k,
            PackFormat::Legacy,
            BlobType::Tree,
            k.blob_id(&plain),
            &plain,
            3,
        );
        let e = entry(&s);
        let v3 = reseal(&k, PackFormat::Legacy, V3, &e, &s.bytes).unwrap();
        assert_eq!(open(&k, V3, &e, &v3).unwrap(), plain);
        assert!(open(&k, PackFormat::Legacy, &e, &v3).is_err());
        let same = reseal(&k, V3, V3, &e, &v3).unwrap();
        assert_eq!(same, v3);
    }
}
