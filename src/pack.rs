//! The pack file format: sealed blobs back to back, then an encrypted header listing them,
//! then a fixed trailer, so the index can always be rebuilt from the packs alone.
use crate::blob::{BlobType, Sealed};
use crate::crypto::{Aad, CryptoError, MasterKey};
use crate::id::{BlobId, Id, PackId};

/// Last 8 bytes of a pack: the encrypted header's length (u32 LE) and this magic.
pub const TRAILER_MAGIC: &[u8; 4] = b"SPK1";
pub const TRAILER_LEN: usize = 8;
const HEADER_MAGIC: &[u8; 4] = b"SPH1";
/// Bytes one blob takes in a pack header or an index file.
pub const ENTRY_LEN: usize = 46;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("pack is too short to hold a trailer")]
    TooShort,
    #[error("pack trailer magic is wrong")]
    BadTrailer,
    #[error("pack header length {0} is impossible")]
    BadHeaderLength(u32),
    #[error("pack header: {0}")]
    Crypto(#[from] CryptoError),
    #[error("pack header is malformed: {0}")]
    Malformed(&'static str),
}

/// Where one blob sits inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    pub ty: BlobType,
    pub id: BlobId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub compressed: bool,
}

impl BlobEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.ty.to_byte());
        out.push(self.compressed as u8);
        out.extend_from_slice(&self.id.0.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Result<BlobEntry, PackError> {
        let b: &[u8; ENTRY_LEN] = b
            .try_into()
            .map_err(|_| PackError::Malformed("entry length"))?;
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(BlobEntry {
            ty: BlobType::from_byte(b[0]).ok_or(PackError::Malformed("blob type"))?,
            compressed: match b[1] {
                0 => false,
                1 => true,
                _ => return Err(PackError::Malformed("compression flag")),
            },
            id: BlobId(Id(b[2..34].try_into().expect("32 bytes"))),
            offset: u32_at(34),
            length: u32_at(38),
            raw_length: u32_at(42),
        })
    }
}

/// Encodes `entries` as a list: a u32 LE count then fixed-size entries.
pub fn encode_entries(entries: &[BlobEntry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(out);
    }
}

/// Decodes a list written by `encode_entries`; returns it and the bytes that follow.
pub fn decode_entries(b: &[u8]) -> Result<(Vec<BlobEntry>, &[u8]), PackError> {
    let count_bytes = b.get(..4).ok_or(PackError::Malformed("entry count"))?;
    let count = u32::from_le_bytes(count_bytes.try_into().expect("4 bytes")) as usize;
    let body_len = count
        .checked_mul(ENTRY_LEN)
        .filter(|n| *n <= b.len() - 4)
        .ok_or(PackError::Malformed("entry count exceeds data"))?;
    let entries = b[4..4 + body_len]
        .chunks_exact(ENTRY_LEN)
        .map(BlobEntry::decode)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((entries, &b[4 + body_len..]))
}

/// Encrypted header bytes followed by the trailer.
fn header_and_trailer(key: &MasterKey, entries: &[BlobEntry]) -> Vec<u8> {
    let mut plain = HEADER_MAGIC.to_vec();
    encode_entries(entries, &mut plain);
    let mut out = key.encrypt(&Aad::legacy(), &plain);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(TRAILER_MAGIC);
    out
}

/// From a pack's last bytes: the length of the encrypted header that precedes the trailer.
pub fn header_length(trailer: &[u8]) -> Result<u32, PackError> {
    if trailer.len() < TRAILER_LEN {
        return Err(PackError::TooShort);
    }
    let t = &trailer[trailer.len() - TRAILER_LEN..];
    if &t[4..] != TRAILER_MAGIC {
        return Err(PackError::BadTrailer);
    }
    Ok(u32::from_le_bytes(t[..4].try_into().expect("4 bytes")))
}

/// Decrypts and parses an encrypted header, checking every blob lies before it.
pub fn decode_header(
    key: &MasterKey,
    enc: &[u8],
    data_len: u64,
) -> Result<Vec<BlobEntry>, PackError> {
    let plain = key.decrypt(&Aad::legacy(), enc)?;
    let body = plain
        .strip_prefix(HEADER_MAGIC)
        .ok_or(PackError::Malformed("header magic"))?;
    let (entries, rest) = decode_entries(body)?;
    if !rest.is_empty() {
        return Err(PackError::Malformed("trailing bytes in header"));
    }
    let in_bounds = |e: &BlobEntry| e.offset as u64 + e.length as u64 <= data_len;
    if !entries.iter().all(in_bounds) {
        return Err(PackError::Malformed("blob beyond the header"));
    }
    Ok(entries)
}

/// Parses the header of a whole pack held in memory.
pub fn read_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<BlobEntry>, PackError> {
    let hlen = header_length(pack)? as usize;
    let data_len = pack
        .len()
        .checked_sub(TRAILER_LEN + hlen)
        .ok_or(PackError::BadHeaderLength(hlen as u32))?;
    decode_header(
        key,
        &pack[data_len..pack.len() - TRAILER_LEN],
        data_len as u64,
    )
}

/// A pack being assembled in memory.
#[derive(Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its bytes, its id and the blobs it holds.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn add(&mut self, blob: Sealed) {
        self.entries.push(BlobEntry {
            ty: blob.ty,
            id: blob.id,
            offset: self.data.len() as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_len,
            compressed: blob.compressed,
        });
        self.data.extend_from_slice(&blob.bytes);
    }

    pub fn size(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        self.data
            .extend_from_slice(&header_and_trailer(key, &self.entries));
        FinishedPack {
            id: PackId(Id::hash_of(&self.data)),
            bytes: self.data,
            entries: self.entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{open, seal};

    fn pack_of(key: &MasterKey, blobs: &[&[u8]]) -> FinishedPack {
        let mut b = PackBuilder::default();
        for (i, p) in blobs.iter().enumerate() {
            let ty = if i % 2 == 0 {
                BlobType::Data
            } else {
                BlobType::Tree
            };
            b.add(seal(key, ty, key.blob_id(p), p, 3));
        }
        b.finish(key)
    }

    #[test]
    fn pack_round_trip() {
        let key = MasterKey::random();
        let blobs: [&[u8]; 3] = [b"one", &[7u8; 5000], b""];
        let pack = pack_of(&key, &blobs);
        assert_eq!(pack.id, PackId(Id::hash_of(&pack.bytes)));
        let entries = read_header(&key, &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, plain) in entries.iter().zip(blobs) {
            let stored = &pack.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(
                open(&key, e.id, stored, e.compressed, e.raw_length).unwrap(),
                plain
            );
        }
        assert_eq!(entries[1].ty, BlobType::Tree);
        assert!(entries[1].compressed);
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        let key = MasterKey::random();
        let pack = pack_of(&key, &[b"abc"]);
        assert_eq!(
            read_header(&key, &pack.bytes[..3]),
            Err(PackError::TooShort)
        );
        let mut bad = pack.bytes.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(read_header(&key, &bad), Err(PackError::BadTrailer));
        let mut bad = pack.bytes.clone();
        bad[n - 10] ^= 1;
        assert!(matches!(read_header(&key, &bad), Err(PackError::Crypto(_))));
        let mut bad = pack.bytes.clone();
        bad[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_header(&key, &bad),
            Err(PackError::BadHeaderLength(_))
        ));
        assert!(read_header(&MasterKey::random(), &pack.bytes).is_err());
    }

    #[test]
    fn entry_lists_reject_impossible_counts() {
        let mut b = Vec::new();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entries(&b).is_err());
    }
}
