//! The pack file format: sealed blobs back to back, then an encrypted header listing them,
//! then a fixed trailer, so the index can always be rebuilt from the packs alone. Version 3
//! packs bind every blob and the header to what they are, pad the header to whole blocks and
//! fill the pack to whole blocks, so that a storage observer learns neither blob counts nor
//! exact blob lengths (see repo-format.md, "Packs").
use crate::repo::blob::{BlobType, Compression, Sealed};
use crate::repo::crypto::{Aad, CryptoError, MasterKey, OVERHEAD, ObjectKind, fill_random};
use crate::repo::id::{BlobId, Id, PackId};
use crate::repo::indexfile::PackEntries;

/// Length of the trailer that ends every pack: the encrypted header's length (u32 LE) and
/// the magic of the pack's format.
pub const TRAILER_LEN: usize = 8;
/// Version 3 headers are padded to, and version 3 packs filled to, multiples of this.
pub(crate) const BLOCK: usize = 4096;

/// How a pack is laid out and how its blobs and header are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackFormat {
    /// Repository versions 1 and 2: `SPK1`, 46-byte entries, no associated data, no padding.
    Legacy,
    /// Repository version 3: `SPK3`, 50-byte entries, blobs and header bound to their kind,
    /// header padded and pack filled to whole blocks.
    V3,
}

impl PackFormat {
    /// The format a repository of format `version` writes.
    pub(crate) fn for_version(version: u32) -> PackFormat {
        if version >= 3 {
            PackFormat::V3
        } else {
            PackFormat::Legacy
        }
    }

    /// Whether a repository of format `version` may hold packs of this format: version 3
    /// ones keep the legacy packs they were migrated with; older ones know no version 3 packs.
    pub(crate) fn readable_in(self, version: u32) -> bool {
        self == PackFormat::Legacy || version >= 3
    }

    /// The `pack_format` byte of version 3 index files.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            PackFormat::Legacy => 2,
            PackFormat::V3 => 3,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<PackFormat> {
        match b {
            2 => Some(PackFormat::Legacy),
            3 => Some(PackFormat::V3),
            _ => None,
        }
    }

    /// Associated data of a blob: its type byte and id, so a blob opens only as itself.
    pub(crate) fn blob_aad(self, ty: BlobType, id: &BlobId) -> Aad {
        match self {
            PackFormat::Legacy => Aad::legacy(),
            PackFormat::V3 => {
                let mut binding = vec![ty.to_byte()];
                binding.extend_from_slice(&id.0.0);
                Aad::bound(ObjectKind::Blob, &binding)
            }
        }
    }

    fn header_aad(self) -> Aad {
        match self {
            PackFormat::Legacy => Aad::legacy(),
            PackFormat::V3 => Aad::bound(ObjectKind::PackHeader, b""),
        }
    }

    fn trailer_magic(self) -> &'static [u8; 4] {
        match self {
            PackFormat::Legacy => b"SPK1",
            PackFormat::V3 => b"SPK3",
        }
    }

    fn header_magic(self) -> &'static [u8; 4] {
        match self {
            PackFormat::Legacy => b"SPH1",
            PackFormat::V3 => b"SPH3",
        }
    }

    /// Bytes one blob takes in a pack header (and in an index file of the same format).
    pub(crate) fn entry_len(self) -> usize {
        match self {
            PackFormat::Legacy => 46,
            PackFormat::V3 => 50,
        }
    }

    /// Length of the encrypted header listing `blobs` blobs.
    pub(crate) fn header_len(self, blobs: usize) -> u64 {
        let plain = 8 + blobs as u64 * self.entry_len() as u64;
        let sealed = plain + OVERHEAD as u64;
        match self {
            PackFormat::Legacy => sealed,
            PackFormat::V3 => sealed.next_multiple_of(BLOCK as u64),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("pack is too short to hold a trailer")]
    TooShort,
    #[error("pack trailer magic is wrong")]
    BadTrailer,
    #[error("pack header length {0} is impossible")]
    BadHeaderLength(u32),
    #[error("a version 3 pack in a version {0} repository")]
    UnexpectedFormat(u32),
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
    /// Version 3 entries: the compression byte (0 none, 1 zstd, 2 zstd with a dictionary)
    /// and the dictionary's u32 id (0 unless the byte is 2); legacy entries: a `compressed`
    /// byte (0 or 1).
    pub compression: Compression,
}

impl BlobEntry {
    pub(crate) fn encode(&self, format: PackFormat, out: &mut Vec<u8>) {
        out.push(self.ty.to_byte());
        out.push(self.compression.to_byte());
        match format {
            PackFormat::V3 => out.extend_from_slice(&self.compression.dict_id().to_le_bytes()),
            PackFormat::Legacy => debug_assert!(self.compression.dict_id() == 0),
        }
        out.extend_from_slice(&self.id.0.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
    }

    pub(crate) fn decode(format: PackFormat, b: &[u8]) -> Result<BlobEntry, PackError> {
        if b.len() != format.entry_len() {
            return Err(PackError::Malformed("entry length"));
        }
        let (head, rest) = b.split_at(b.len() - 44);
        let u32_at = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        let dict = match format {
            PackFormat::V3 => u32::from_le_bytes(head[2..6].try_into().expect("4 bytes")),
            PackFormat::Legacy => 0,
        };
        let compression = match (format, head[1]) {
            (PackFormat::Legacy, 2) => None,
            (_, byte) => Compression::from_parts(byte, dict),
        };
        Ok(BlobEntry {
            ty: BlobType::from_byte(head[0]).ok_or(PackError::Malformed("blob type"))?,
            compression: compression.ok_or(match head[1] {
                0..=2 => PackError::Malformed("compression dictionary"),
                _ => PackError::Malformed("compression flag"),
            })?,
            id: BlobId(Id(rest[..32].try_into().expect("32 bytes"))),
            offset: u32_at(32),
            length: u32_at(36),
            raw_length: u32_at(40),
        })
    }
}

/// Encodes `entries` as a list: a u32 LE count then fixed-size entries.
pub fn encode_entries(format: PackFormat, entries: &[BlobEntry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(format, out);
    }
}

/// Decodes a list written by `encode_entries`; returns it and the bytes that follow.
pub fn decode_entries(format: PackFormat, b: &[u8]) -> Result<(Vec<BlobEntry>, &[u8]), PackError> {
    let (count, b) = b
        .split_first_chunk::<4>()
        .ok_or(PackError::Malformed("entry count"))?;
    let body_len = (u32::from_le_bytes(*count) as usize)
        .checked_mul(format.entry_len())
        .filter(|n| *n <= b.len())
        .ok_or(PackError::Malformed("entry count exceeds data"))?;
    let entries = b[..body_len]
        .chunks_exact(format.entry_len())
        .map(|e| BlobEntry::decode(format, e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((entries, &b[body_len..]))
}

/// Encrypted header bytes (version 3: padded with zeros to whole blocks) then the trailer.
fn header_and_trailer(key: &MasterKey, format: PackFormat, entries: &[BlobEntry]) -> Vec<u8> {
    let mut plain = format.header_magic().to_vec();
    encode_entries(format, entries, &mut plain);
    plain.resize(format.header_len(entries.len()) as usize - OVERHEAD, 0);
    let mut out = key.encrypt(&format.header_aad(), &plain);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(format.trailer_magic());
    out
}

/// From a pack's last bytes: its format and the length of the encrypted header that
/// precedes the trailer. A repository of format `version` accepts only its packs' formats.
pub fn header_length(trailer: &[u8], version: u32) -> Result<(PackFormat, u32), PackError> {
    let t = trailer
        .len()
        .checked_sub(TRAILER_LEN)
        .map(|start| &trailer[start..])
        .ok_or(PackError::TooShort)?;
    let format = [PackFormat::Legacy, PackFormat::V3]
        .into_iter()
        .find(|f| &t[4..] == f.trailer_magic())
        .ok_or(PackError::BadTrailer)?;
    if !format.readable_in(version) {
        return Err(PackError::UnexpectedFormat(version));
    }
    Ok((
        format,
        u32::from_le_bytes(t[..4].try_into().expect("4 bytes")),
    ))
}

/// Decrypts and parses an encrypted header, checking every blob lies before it.
pub(crate) fn decode_header(
    key: &MasterKey,
    format: PackFormat,
    enc: &[u8],
    data_len: u64,
) -> Result<Vec<BlobEntry>, PackError> {
    let plain = key.decrypt(&format.header_aad(), enc)?;
    let body = plain
        .strip_prefix(format.header_magic())
        .ok_or(PackError::Malformed("header magic"))?;
    let (entries, rest) = decode_entries(format, body)?;
    if enc.len() as u64 != format.header_len(entries.len()) || rest.iter().any(|b| *b != 0) {
        return Err(PackError::Malformed("header padding"));
    }
    let in_bounds = |e: &BlobEntry| e.offset as u64 + e.length as u64 <= data_len;
    if !entries.iter().all(in_bounds) {
        return Err(PackError::Malformed("blob beyond the header"));
    }
    Ok(entries)
}

/// Parses the header of a whole pack held in memory; returns its format and entries.
pub fn read_header(
    key: &MasterKey,
    version: u32,
    pack: &[u8],
) -> Result<(PackFormat, Vec<BlobEntry>), PackError> {
    let (format, hlen) = header_length(pack, version)?;
    let data_len = pack
        .len()
        .checked_sub(TRAILER_LEN + hlen as usize)
        .ok_or(PackError::BadHeaderLength(hlen))?;
    let enc = &pack[data_len..pack.len() - TRAILER_LEN];
    Ok((format, decode_header(key, format, enc, data_len as u64)?))
}

/// A pack being assembled in memory.
pub struct PackBuilder {
    format: PackFormat,
    data: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its bytes and its listing (id, format, length, blobs).
pub struct FinishedPack {
    pub bytes: Vec<u8>,
    pub listing: PackEntries,
}

impl PackBuilder {
    pub fn new(format: PackFormat) -> PackBuilder {
        PackBuilder {
            format,
            data: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn format(&self) -> PackFormat {
        self.format
    }

    /// Adds a blob sealed for this pack's format.
    pub fn add(&mut self, blob: Sealed) {
        self.entries.push(BlobEntry {
            ty: blob.ty,
            id: blob.id,
            offset: self.data.len() as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_len,
            compression: blob.compression,
        });
        self.data.extend_from_slice(&blob.bytes);
    }

    pub(crate) fn size(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the header and trailer; a version 3 pack first gets random filler after its
    /// blobs, so that the whole pack is a multiple of [`BLOCK`] bytes.
    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        if self.format == PackFormat::V3 {
            let end = self.data.len() + TRAILER_LEN;
            let start = self.data.len();
            self.data
                .resize(start + end.next_multiple_of(BLOCK) - end, 0);
            fill_random(&mut self.data[start..]);
        }
        let tail = header_and_trailer(key, self.format, &self.entries);
        self.data.extend_from_slice(&tail);
        FinishedPack {
            listing: PackEntries {
                pack: PackId(Id::hash_of(&self.data)),
                format: self.format,
                length: Some(self.data.len() as u64),
                blobs: self.entries,
            },
            bytes: self.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::{open, seal};

    const FORMATS: [PackFormat; 2] = [PackFormat::Legacy, PackFormat::V3];

    fn pack_of(key: &MasterKey, format: PackFormat, blobs: &[&[u8]]) -> FinishedPack {
        let mut b = PackBuilder::new(format);
        for (i, p) in blobs.iter().enumerate() {
            let ty = if i % 2 == 0 {
                BlobType::Data
            } else {
                BlobType::Tree
            };
            b.add(seal(key, format, ty, key.blob_id(p), p, 3));
        }
        b.finish(key)
    }

    #[test]
    fn pack_round_trip_in_both_formats() {
        let key = MasterKey::random();
        let blobs: [&[u8]; 3] = [b"one", &[7u8; 5000], b""];
        for format in FORMATS {
            let pack = pack_of(&key, format, &blobs);
            let listing = &pack.listing;
            assert_eq!(listing.pack, PackId(Id::hash_of(&pack.bytes)));
            assert_eq!(listing.length, Some(pack.bytes.len() as u64));
            let (read_format, entries) = read_header(&key, 3, &pack.bytes).unwrap();
            assert_eq!((read_format, &entries), (format, &listing.blobs));
            for (e, plain) in entries.iter().zip(blobs) {
                let stored = &pack.bytes[e.offset as usize..(e.offset + e.length) as usize];
                assert_eq!(open(&key, format, e, stored, None).unwrap(), plain);
            }
            assert_eq!(entries[1].ty, BlobType::Tree);
            assert_eq!(entries[1].compression, Compression::Zstd);
        }
    }

    #[test]
    fn v3_packs_hide_blob_counts_and_lengths_in_whole_blocks() {
        let key = MasterKey::random();
        let one = pack_of(&key, PackFormat::V3, &[&[1u8; 10]]);
        let seventy: Vec<Vec<u8>> = (0..70u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = seventy.iter().map(Vec::as_slice).collect();
        let many = pack_of(&key, PackFormat::V3, &refs);
        for pack in [&one, &many] {
            assert_eq!(pack.bytes.len() % BLOCK, 0);
            let (_, hlen) = header_length(&pack.bytes, 3).unwrap();
            assert_eq!(hlen as usize, BLOCK, "one block holds up to 80 entries");
        }
        assert_eq!(
            one.bytes.len(),
            many.bytes.len(),
            "1 and 70 blobs look alike"
        );
        assert_eq!(PackFormat::V3.header_len(80), BLOCK as u64);
        assert_eq!(PackFormat::V3.header_len(81), 2 * BLOCK as u64);
        assert_eq!(PackFormat::Legacy.header_len(1), 40 + 8 + 46);
        let legacy = pack_of(&key, PackFormat::Legacy, &[&[1u8; 10]]);
        assert_eq!(legacy.bytes.len(), (10 + 40) + (40 + 8 + 46) + TRAILER_LEN);
    }

    #[test]
    fn v3_filler_is_random_not_zeros() {
        let key = MasterKey::random();
        let pack = pack_of(&key, PackFormat::V3, &[&[0u8; 10]]);
        let end = pack.listing.blobs[0].length as usize;
        let filler = &pack.bytes[end..pack.bytes.len() - BLOCK - TRAILER_LEN];
        assert!(filler.len() > 3000, "{}", filler.len());
        assert!(filler.iter().filter(|b| **b == 0).count() < filler.len() / 16);
    }

    #[test]
    fn blob_relabelled_as_another_type_or_id_fails_in_v3() {
        let key = MasterKey::random();
        let pack = pack_of(&key, PackFormat::V3, &[b"some data"]);
        let e = pack.listing.blobs[0];
        let stored = &pack.bytes[..e.length as usize];
        let as_tree = BlobEntry {
            ty: BlobType::Tree,
            ..e
        };
        assert!(open(&key, PackFormat::V3, &as_tree, stored, None).is_err());
        assert!(
            open(&key, PackFormat::Legacy, &e, stored, None).is_err(),
            "a v3 blob does not open as a legacy one"
        );
        assert!(open(&key, PackFormat::V3, &e, stored, None).is_ok());
    }

    #[test]
    fn header_does_not_open_with_another_format_or_version() {
        let key = MasterKey::random();
        let pack = pack_of(&key, PackFormat::V3, &[b"abc"]);
        assert_eq!(
            read_header(&key, 2, &pack.bytes),
            Err(PackError::UnexpectedFormat(2))
        );
        let mut relabelled = pack.bytes.clone();
        let n = relabelled.len();
        relabelled[n - 4..].copy_from_slice(b"SPK1");
        assert!(matches!(
            read_header(&key, 3, &relabelled),
            Err(PackError::Crypto(_))
        ));
        let legacy = pack_of(&key, PackFormat::Legacy, &[b"abc"]);
        assert_eq!(
            read_header(&key, 2, &legacy.bytes).unwrap().0,
            PackFormat::Legacy
        );
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        let key = MasterKey::random();
        for format in FORMATS {
            let pack = pack_of(&key, format, &[b"abc"]);
            let read = |b: &[u8]| read_header(&key, 3, b);
            assert_eq!(read(&pack.bytes[..3]), Err(PackError::TooShort));
            let mut bad = pack.bytes.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert_eq!(read(&bad), Err(PackError::BadTrailer));
            let mut bad = pack.bytes.clone();
            bad[n - 10] ^= 1;
            assert!(matches!(read(&bad), Err(PackError::Crypto(_))));
            let mut bad = pack.bytes.clone();
            bad[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(matches!(read(&bad), Err(PackError::BadHeaderLength(_))));
            assert!(read_header(&MasterKey::random(), 3, &pack.bytes).is_err());
        }
    }

    #[test]
    fn entry_lists_reject_impossible_counts_and_dictionaries() {
        let mut b = Vec::new();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entries(PackFormat::V3, &b).is_err());
        let e = BlobEntry {
            ty: BlobType::Data,
            id: BlobId(Id::hash_of(b"x")),
            offset: 1,
            length: 2,
            raw_length: 3,
            compression: Compression::Zstd,
        };
        let mut enc = Vec::new();
        e.encode(PackFormat::V3, &mut enc);
        assert_eq!(enc.len(), PackFormat::V3.entry_len());
        assert_eq!(BlobEntry::decode(PackFormat::V3, &enc), Ok(e));
        let dict = |byte: u8, id: u32| {
            let mut b = enc.clone();
            b[1] = byte;
            b[2..6].copy_from_slice(&id.to_le_bytes());
            BlobEntry::decode(PackFormat::V3, &b).map(|e| e.compression)
        };
        assert_eq!(dict(2, 0x0a0b0c0d), Ok(Compression::Dictionary(0x0a0b0c0d)));
        let refused = Err(PackError::Malformed("compression dictionary"));
        assert_eq!(dict(1, 1), refused, "a dictionary id without byte 2");
        assert_eq!(dict(0, 7), refused);
        assert_eq!(dict(2, 0), refused, "byte 2 without a dictionary id");
        assert_eq!(dict(3, 0), Err(PackError::Malformed("compression flag")));
        let mut legacy = Vec::new();
        e.encode(PackFormat::Legacy, &mut legacy);
        legacy[1] = 2;
        assert!(BlobEntry::decode(PackFormat::Legacy, &legacy).is_err());
    }
}
