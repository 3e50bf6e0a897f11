//! Index files: immutable, encrypted lists of packs and the blobs each holds. They are the
//! repository's truth about where blobs are; the SQLite index is built from them. Version 3
//! index files (`SIX3`) also record each pack's format and length, and are bound to their
//! kind; versions 1 and 2 wrote `SIX1`.
use crate::repo::crypto::{Aad, MasterKey, ObjectKind};
use crate::repo::id::{Id, PackId};
use crate::repo::pack::{BlobEntry, PackError, PackFormat, decode_entries, encode_entries};

const MAGIC_LEGACY: &[u8; 4] = b"SIX1";
const MAGIC_V3: &[u8; 4] = b"SIX3";

/// One pack and its blobs, as listed in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntries {
    pub pack: PackId,
    /// How the pack is written: legacy packs stay readable after migration to version 3.
    pub format: PackFormat,
    /// The pack's length in bytes; not recorded by `SIX1` index files.
    pub length: Option<u64>,
    pub blobs: Vec<BlobEntry>,
}

/// The index file of a repository of format `version` listing `packs`. `SIX1` files can
/// only list legacy packs.
pub fn encode(key: &MasterKey, version: u32, packs: &[PackEntries]) -> Vec<u8> {
    let v3 = version >= 3;
    let mut plain = if v3 { MAGIC_V3 } else { MAGIC_LEGACY }.to_vec();
    plain.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        plain.extend_from_slice(&p.pack.0.0);
        if v3 {
            plain.push(p.format.to_byte());
            plain.extend_from_slice(&p.length.unwrap_or(0).to_le_bytes());
            encode_entries(PackFormat::V3, &p.blobs, &mut plain);
        } else {
            debug_assert_eq!(p.format, PackFormat::Legacy);
            encode_entries(PackFormat::Legacy, &p.blobs, &mut plain);
        }
    }
    key.encrypt(&aad(version), &plain)
}

/// Decodes an index file of a repository of format `version`.
pub fn decode(key: &MasterKey, version: u32, data: &[u8]) -> Result<Vec<PackEntries>, PackError> {
    let plain = key.decrypt(&aad(version), data)?;
    let v3 = version >= 3;
    let body = plain
        .strip_prefix(if v3 { MAGIC_V3 } else { MAGIC_LEGACY })
        .ok_or(PackError::Malformed("index magic"))?;
    let (count, mut rest) = body
        .split_first_chunk::<4>()
        .ok_or(PackError::Malformed("index pack count"))?;
    let count = u32::from_le_bytes(*count) as usize;
    let mut packs = Vec::with_capacity(count.min(rest.len() / 36));
    for _ in 0..count {
        let (p, after) = if v3 {
            decode_v3_pack(rest)?
        } else {
            decode_legacy_pack(rest)?
        };
        packs.push(p);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(PackError::Malformed("trailing bytes in index"));
    }
    Ok(packs)
}

fn aad(version: u32) -> Aad {
    Aad::for_version(version, ObjectKind::Index, b"")
}

fn decode_legacy_pack(b: &[u8]) -> Result<(PackEntries, &[u8]), PackError> {
    let (id, after) = b
        .split_first_chunk::<32>()
        .ok_or(PackError::Malformed("index pack id"))?;
    let (blobs, after) = decode_entries(PackFormat::Legacy, after)?;
    let p = PackEntries {
        pack: PackId(Id(*id)),
        format: PackFormat::Legacy,
        length: None,
        blobs,
    };
    Ok((p, after))
}

/// A pack of a `SIX3` file: id, `pack_format` byte, length (u64 LE, 0 = not recorded),
/// then its blobs.
fn decode_v3_pack(b: &[u8]) -> Result<(PackEntries, &[u8]), PackError> {
    let (id, after) = b
        .split_first_chunk::<32>()
        .ok_or(PackError::Malformed("index pack id"))?;
    let (&format, after) = after
        .split_first()
        .ok_or(PackError::Malformed("index pack format"))?;
    let format = PackFormat::from_byte(format).ok_or(PackError::Malformed("index pack format"))?;
    let (length, after) = after
        .split_first_chunk::<8>()
        .ok_or(PackError::Malformed("index pack length"))?;
    let length = u64::from_le_bytes(*length);
    let (blobs, after) = decode_entries(PackFormat::V3, after)?;
    let p = PackEntries {
        pack: PackId(Id(*id)),
        format,
        length: (length != 0).then_some(length),
        blobs,
    };
    Ok((p, after))
}

/// Written packs are indexed once this many of their blobs await an index file.
pub(crate) const BATCH_BLOBS: usize = 50_000;

/// How many index files are decoded at once: each lists up to [`BATCH_BLOBS`] blobs, so
/// this bounds the entries in memory (about 400,000) however many files there are.
pub(crate) const FILES_AT_ONCE: usize = 8;

/// ... and at most this many stored bytes of them (an index file strata writes is about
/// 2.5 MB, one written by another tool or an older version may be far larger).
pub(crate) const BYTES_AT_ONCE: u64 = 16 << 20;

/// The batches [`FILES_AT_ONCE`] and [`BYTES_AT_ONCE`] allow.
pub(crate) const AT_ONCE: crate::walk::Limit = crate::walk::Limit {
    items: FILES_AT_ONCE,
    weight: BYTES_AT_ONCE,
};

/// Pack listings waiting for an index file, handed out a batch at a time: once they list
/// [`BATCH_BLOBS`] blobs, and at the end whatever is left. Backup's packer, prune and
/// repair write their index files in these batches.
#[derive(Default)]
pub(crate) struct IndexBatch {
    packs: Vec<PackEntries>,
    blobs: usize,
}

impl IndexBatch {
    /// Adds a pack's listing; returns the batch to write when it is now full.
    pub(crate) fn push(&mut self, pack: PackEntries) -> Option<Vec<PackEntries>> {
        self.blobs += pack.blobs.len();
        self.packs.push(pack);
        (self.blobs >= BATCH_BLOBS).then(|| self.take())
    }

    /// Whatever is waiting (possibly nothing), emptying the batch.
    pub(crate) fn take(&mut self) -> Vec<PackEntries> {
        self.blobs = 0;
        std::mem::take(&mut self.packs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::{BlobType, Compression};
    use crate::repo::id::BlobId;

    #[test]
    fn an_index_batch_fills_at_the_blob_count_and_hands_out_the_rest() {
        let pack = |blobs: usize| PackEntries {
            blobs: vec![packs(PackFormat::V3, None)[0].blobs[0]; blobs],
            ..packs(PackFormat::V3, None).remove(0)
        };
        let mut batch = IndexBatch::default();
        assert!(batch.push(pack(BATCH_BLOBS - 1)).is_none());
        let full = batch.push(pack(1)).expect("full at BATCH_BLOBS");
        assert_eq!(full.len(), 2);
        assert!(batch.take().is_empty());
        assert!(batch.push(pack(3)).is_none());
        assert_eq!(batch.take().len(), 1);
    }

    fn packs(format: PackFormat, length: Option<u64>) -> Vec<PackEntries> {
        let entry = BlobEntry {
            ty: BlobType::Data,
            id: BlobId(Id::hash_of(b"b")),
            offset: 0,
            length: 60,
            raw_length: 20,
            compression: Compression::None,
        };
        let second = BlobEntry {
            compression: match format {
                PackFormat::V3 => Compression::Dictionary(0xfeed_0001),
                PackFormat::Legacy => Compression::Zstd,
            },
            ..entry
        };
        vec![
            PackEntries {
                pack: PackId(Id::hash_of(b"p")),
                format,
                length,
                blobs: vec![entry, second],
            },
            PackEntries {
                pack: PackId(Id::hash_of(b"q")),
                format: PackFormat::Legacy,
                length,
                blobs: vec![],
            },
        ]
    }

    #[test]
    fn index_file_round_trip_and_damage() {
        let key = MasterKey::random();
        let cases = [
            (2, packs(PackFormat::Legacy, None)),
            (3, packs(PackFormat::V3, Some(8192))),
            (3, packs(PackFormat::Legacy, None)),
        ];
        for (version, packs) in cases {
            let enc = encode(&key, version, &packs);
            assert_eq!(decode(&key, version, &enc).unwrap(), packs);
            let mut bad = enc.clone();
            bad[30] ^= 4;
            assert!(matches!(
                decode(&key, version, &bad),
                Err(PackError::Crypto(_))
            ));
        }
    }

    #[test]
    fn index_files_open_only_in_their_own_version() {
        let key = MasterKey::random();
        let v2 = encode(&key, 2, &packs(PackFormat::Legacy, None));
        let v3 = encode(&key, 3, &packs(PackFormat::V3, Some(4096)));
        assert!(matches!(decode(&key, 3, &v2), Err(PackError::Crypto(_))));
        assert!(matches!(decode(&key, 2, &v3), Err(PackError::Crypto(_))));
        let as_index = key.encrypt(&Aad::bound(ObjectKind::Snapshot, b""), b"SIX3\0\0\0\0");
        assert!(decode(&key, 3, &as_index).is_err(), "another kind's object");
        let empty = key.encrypt(&aad(3), b"SIX3\0\0\0\0");
        assert_eq!(decode(&key, 3, &empty).unwrap(), vec![]);
    }

    #[test]
    fn damaged_v3_fields_are_errors() {
        let key = MasterKey::random();
        let mut plain = MAGIC_V3.to_vec();
        plain.extend_from_slice(&1u32.to_le_bytes());
        plain.extend_from_slice(&[0; 32]);
        plain.push(7);
        let bad_format = key.encrypt(&aad(3), &plain);
        assert_eq!(
            decode(&key, 3, &bad_format),
            Err(PackError::Malformed("index pack format"))
        );
        plain.pop();
        plain.push(3);
        plain.extend_from_slice(&[1, 2, 3]);
        let short = key.encrypt(&aad(3), &plain);
        assert_eq!(
            decode(&key, 3, &short),
            Err(PackError::Malformed("index pack length"))
        );
    }
}
