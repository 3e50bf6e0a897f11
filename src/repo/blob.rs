//! Blobs: the unit of deduplication. A blob's plaintext is compressed with zstd (in version 3
//! packs possibly with a repository-trained dictionary) when that makes it smaller, then
//! encrypted (in version 3 packs bound to its type and id); opening reverses both and checks
//! the keyed id.
use crate::repo::crypto::{CryptoError, MasterKey};
use crate::repo::dictionary::DictId;
use crate::repo::id::BlobId;
use crate::repo::pack::{BlobEntry, PackFormat};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// How a blob's stored payload is compressed (the compression byte and dictionary id of
/// version 3 entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Zstd,
    /// zstd with the repository dictionary of this id (never 0).
    Dictionary(DictId),
}

impl Compression {
    /// The compression byte of an entry: 0 none, 1 zstd, 2 zstd with a dictionary.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Dictionary(_) => 2,
        }
    }

    /// The dictionary id of an entry: 0 unless compressed with a dictionary.
    pub(crate) fn dict_id(self) -> DictId {
        match self {
            Compression::Dictionary(d) => d,
            _ => 0,
        }
    }

    /// From an entry's compression byte and dictionary id; None for a combination no
    /// writer produces (a dictionary id without byte 2, or byte 2 with id 0).
    pub(crate) fn from_parts(byte: u8, dict: DictId) -> Option<Compression> {
        match (byte, dict) {
            (0, 0) => Some(Compression::None),
            (1, 0) => Some(Compression::Zstd),
            (2, d) if d != 0 => Some(Compression::Dictionary(d)),
            _ => None,
        }
    }

    pub fn is_compressed(self) -> bool {
        self != Compression::None
    }
}

/// Why a blob inside a downloaded pack is unusable (see `Repository::verified`); the
/// message leaves out the blob's id, which the caller reports beside it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackedBlobError {
    #[error("{offset}+{length} lies beyond the end of the pack ({pack_len} bytes)")]
    OutOfBounds {
        offset: u32,
        length: u32,
        pack_len: usize,
    },
    #[error("{}", unreadable_reason(.0))]
    Unreadable(BlobError),
}

fn unreadable_reason(e: &BlobError) -> String {
    match e {
        BlobError::Crypto { source, .. } => source.to_string(),
        BlobError::Decompress { message, .. } => format!("decompression failed: {message}"),
        BlobError::Length {
            expected, actual, ..
        } => format!("length {actual} differs from the indexed {expected}"),
        BlobError::Hash { .. } => "content does not match its id".to_string(),
        BlobError::Dictionary { dict, reason, .. } => format!(
            "its dictionary {} is unavailable: {reason}",
            crate::repo::dictionary::id_hex(*dict)
        ),
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
    #[error("blob {id}: dictionary {} is unavailable: {reason}", crate::repo::dictionary::id_hex(*dict))]
    Dictionary {
        id: BlobId,
        dict: DictId,
        reason: String,
    },
}

/// A blob ready to be written into a pack.
pub struct Sealed {
    pub id: BlobId,
    pub ty: BlobType,
    pub bytes: Vec<u8>,
    pub raw_len: u32,
    pub compression: Compression,
}

/// A dictionary ready for compressing: its id and zstd's digested form at the repository's
/// level.
pub struct EncoderDict {
    pub id: DictId,
    pub dict: zstd::dict::EncoderDictionary<'static>,
}

impl EncoderDict {
    pub fn new(id: DictId, bytes: &[u8], level: i32) -> std::io::Result<EncoderDict> {
        Ok(EncoderDict {
            id,
            dict: zstd::dict::EncoderDictionary::try_copy(bytes, level)?,
        })
    }
}

thread_local! {
    static DICT_COMPRESSOR: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// zstd at `level`, or None when compression is off or does not shrink the data.
pub(crate) fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
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

/// zstd with `dict` (its level was fixed when it was digested), or None when that does not
/// shrink the data.
pub(crate) fn compress_with(data: &[u8], dict: &EncoderDict) -> Option<Vec<u8>> {
    if data.len() < 16 {
        return None;
    }
    DICT_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let cctx = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::zstd_safe::CCtx::try_create()?),
        };
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        cctx.compress_using_cdict(&mut out, data, dict.dict.as_cdict())
            .ok()?;
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
    seal_with(key, format, ty, id, plain, level, None)
}

/// [`seal`] with a dictionary (version 3 packs only): the blob is compressed with `dict`
/// when that shrinks it, else as [`seal`] does.
pub fn seal_with(
    key: &MasterKey,
    format: PackFormat,
    ty: BlobType,
    id: BlobId,
    plain: &[u8],
    level: i32,
    dict: Option<&EncoderDict>,
) -> Sealed {
    let with_dict = dict
        .filter(|_| format == PackFormat::V3 && level != 0)
        .and_then(|d| Some((compress_with(plain, d)?, Compression::Dictionary(d.id))));
    let (payload, compression) = match with_dict {
        Some(c) => (Some(c.0), c.1),
        None => match compress(plain, level) {
            Some(c) => (Some(c), Compression::Zstd),
            None => (None, Compression::None),
        },
    };
    let aad = format.blob_aad(ty, &id);
    let bytes = key.encrypt(&aad, payload.as_deref().unwrap_or(plain));
    Sealed {
        id,
        ty,
        bytes,
        raw_len: plain.len() as u32,
        compression,
    }
}

/// The dictionary a blob needs, as its reader found it: digested, or why it is unavailable.
pub(crate) type DictLookup<'d> = Option<Result<&'d zstd::dict::DecoderDictionary<'static>, String>>;

/// Decrypts, decompresses and verifies the blob `e` read from a pack of `format`. A blob
/// compressed with a dictionary needs it in `dict` (see `Repository::open_blob`).
pub fn open(
    key: &MasterKey,
    format: PackFormat,
    e: &BlobEntry,
    stored: &[u8],
    dict: DictLookup,
) -> Result<Vec<u8>, BlobError> {
    open_owned(key, format, e, stored.to_vec(), dict)
}

/// [`open`] for a blob read into a buffer of its own, decrypted where it lies.
pub(crate) fn open_owned(
    key: &MasterKey,
    format: PackFormat,
    e: &BlobEntry,
    mut stored: Vec<u8>,
    dict: DictLookup,
) -> Result<Vec<u8>, BlobError> {
    let (id, raw_len) = (e.id, e.raw_length);
    let body = key
        .decrypt_in_place(&format.blob_aad(e.ty, &id), &mut stored)
        .map_err(|source| BlobError::Crypto { id, source })?;
    let decompress_error = |e: std::io::Error| BlobError::Decompress {
        id,
        message: e.to_string(),
    };
    let plain = match e.compression {
        Compression::None => {
            stored.truncate(body.end);
            stored.drain(..body.start);
            stored
        }
        Compression::Zstd => decompress(&stored[body], raw_len).map_err(decompress_error)?,
        Compression::Dictionary(d) => {
            let unavailable = |reason: String| BlobError::Dictionary {
                id,
                dict: d,
                reason,
            };
            let ddict = dict
                .ok_or_else(|| unavailable("no dictionary was given".into()))?
                .map_err(unavailable)?;
            decompress_dict(&stored[body], raw_len, ddict).map_err(decompress_error)?
        }
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
pub(crate) fn reseal(
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

thread_local! {
    static DICT_DECOMPRESSOR: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// zstd decompression with a dictionary, at most `raw_len` bytes, with this thread's
/// reused context (the dictionary is referenced for this call only).
fn decompress_dict(
    data: &[u8],
    raw_len: u32,
    dict: &zstd::dict::DecoderDictionary<'static>,
) -> std::io::Result<Vec<u8>> {
    DICT_DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dctx = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(
                zstd::zstd_safe::DCtx::try_create()
                    .ok_or_else(|| std::io::Error::other("zstd context"))?,
            ),
        };
        let mut out = Vec::with_capacity(raw_len as usize);
        dctx.decompress_using_ddict(&mut out, data, dict.as_ddict())
            .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
        Ok(out)
    })
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
            compression: s.compression,
        }
    }

    #[test]
    fn compressible_blob_round_trips_compressed() {
        let k = MasterKey::random();
        let plain = b"abcabcabc".repeat(1000);
        let id = k.blob_id(&plain);
        let s = seal(&k, V3, BlobType::Data, id, &plain, 3);
        assert!(s.compression == Compression::Zstd && s.bytes.len() < plain.len());
        assert_eq!(open(&k, V3, &entry(&s), &s.bytes, None).unwrap(), plain);
    }

    #[test]
    fn incompressible_blob_is_stored_raw() {
        let k = MasterKey::random();
        let mut plain = vec![0u8; 4096];
        crate::repo::crypto::fill_random(&mut plain);
        let id = k.blob_id(&plain);
        let s = seal(&k, V3, BlobType::Data, id, &plain, 3);
        assert_eq!(s.compression, Compression::None);
        assert_eq!(open(&k, V3, &entry(&s), &s.bytes, None).unwrap(), plain);
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
            open(&k, PackFormat::Legacy, &other, &s.bytes, None),
            Err(BlobError::Hash { .. })
        ));
        let err = open(
            &MasterKey::random(),
            PackFormat::Legacy,
            &entry(&s),
            &s.bytes,
            None,
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
            open(&k, V3, &other, &s.bytes, None),
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
        assert_eq!(open(&k, V3, &e, &v3, None).unwrap(), plain);
        assert!(open(&k, PackFormat::Legacy, &e, &v3, None).is_err());
        let same = reseal(&k, V3, V3, &e, &v3).unwrap();
        assert_eq!(same, v3);
    }
}
