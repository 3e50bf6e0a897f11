//! Typed 32-byte identifiers, so that a blob id, a pack id and a snapshot id cannot be mixed up.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Raw 32-byte digest shared by every id type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }

    pub(crate) fn from_slice(b: &[u8]) -> Option<Id> {
        Some(Id(b.try_into().ok()?))
    }

    /// The first 8 hex digits, as shown to people.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    /// Plain (unkeyed) BLAKE3 of `data`: used for names of stored files.
    pub fn hash_of(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    pub fn random() -> Id {
        let mut b = [0u8; 32];
        crate::repo::crypto::fill_random(&mut b);
        Id(b)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Id::from_hex(&s).ok_or_else(|| D::Error::custom("invalid hex id"))
        } else {
            let b: &[u8] = serde_bytes::Deserialize::deserialize(d)?;
            Id::from_slice(b).ok_or_else(|| D::Error::custom("id must be 32 bytes"))
        }
    }
}

macro_rules! typed_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext.
    BlobId
);
typed_id!(
    /// The [`BlobId`] of a tree blob: directories name their subdirectories and snapshots
    /// their root by it, so that a tree and a file's data cannot be mixed up.
    TreeId
);
typed_id!(
    /// Plain BLAKE3 of a pack file's bytes; also its file name.
    PackId
);
typed_id!(
    /// Plain BLAKE3 of a snapshot file's bytes; also its file name.
    SnapshotId
);
typed_id!(
    /// Plain BLAKE3 of an index file's bytes; also its file name.
    IndexId
);
typed_id!(
    /// Random id of a key file; also its file name.
    KeyId
);

impl TreeId {
    /// The tree's id as a blob (for the index, which lists trees and data together).
    pub(crate) fn blob(self) -> BlobId {
        BlobId(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::hash_of(b"strata");
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short().len(), 8);
        assert!(Id::from_hex("zz").is_none());
    }

    #[test]
    fn serde_is_hex_in_json_and_bytes_in_postcard() {
        let id = BlobId(Id::hash_of(b"x"));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.0.to_hex()));
        let bin = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bin.len(), 33);
        assert_eq!(postcard::from_bytes::<BlobId>(&bin).unwrap(), id);
    }
}
