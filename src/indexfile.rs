//! Index files: immutable, encrypted lists of packs and the blobs each holds. They are the
//! repository's truth about where blobs are; the SQLite index is built from them.
use crate::crypto::{Aad, MasterKey};
use crate::id::{Id, PackId};
use crate::pack::{BlobEntry, PackError, decode_entries, encode_entries};

const MAGIC: &[u8; 4] = b"SIX1";

/// One pack and its blobs, as listed in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntries {
    pub pack: PackId,
    pub blobs: Vec<BlobEntry>,
}

pub fn encode(key: &MasterKey, packs: &[PackEntries]) -> Vec<u8> {
    let mut plain = MAGIC.to_vec();
    plain.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        plain.extend_from_slice(&p.pack.0.0);
        encode_entries(&p.blobs, &mut plain);
    }
    key.encrypt(&Aad::legacy(), &plain)
}

pub fn decode(key: &MasterKey, data: &[u8]) -> Result<Vec<PackEntries>, PackError> {
    let plain = key.decrypt(&Aad::legacy(), data)?;
    let body = plain
        .strip_prefix(MAGIC)
        .ok_or(PackError::Malformed("index magic"))?;
    let (count, mut rest) = body
        .split_first_chunk::<4>()
        .ok_or(PackError::Malformed("index pack count"))?;
    let count = u32::from_le_bytes(*count) as usize;
    let mut packs = Vec::with_capacity(count.min(rest.len() / 36));
    for _ in 0..count {
        let (id, after) = rest
            .split_first_chunk::<32>()
            .ok_or(PackError::Malformed("index pack id"))?;
        let (blobs, after) = decode_entries(after)?;
        packs.push(PackEntries {
            pack: PackId(Id(*id)),
            blobs,
        });
        rest = after;
    }
    if !rest.is_empty() {
        return Err(PackError::Malformed("trailing bytes in index"));
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::id::BlobId;

    #[test]
    fn index_file_round_trip_and_damage() {
        let key = MasterKey::random();
        let entry = BlobEntry {
            ty: BlobType::Data,
            id: BlobId(Id::hash_of(b"b")),
            offset: 0,
            length: 60,
            raw_length: 20,
            compressed: false,
        };
        let packs = vec![
            PackEntries {
                pack: PackId(Id::hash_of(b"p")),
                blobs: vec![entry, entry],
            },
            PackEntries {
                pack: PackId(Id::hash_of(b"q")),
                blobs: vec![],
            },
        ];
        let enc = encode(&key, &packs);
        assert_eq!(decode(&key, &enc).unwrap(), packs);
        let mut bad = enc.clone();
        bad[30] ^= 4;
        assert!(matches!(decode(&key, &bad), Err(PackError::Crypto(_))));
    }
}
