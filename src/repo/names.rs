//! Serde for raw-byte names (file names, symlink targets): bytes in binary formats; in JSON a
//! string when the bytes are UTF-8, otherwise an array of byte values.
use serde::{Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(b) {
        Ok(text) if s.is_human_readable() => s.serialize_str(text),
        _ if s.is_human_readable() => s.collect_seq(b),
        _ => s.serialize_bytes(b),
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    serde_bytes::deserialize::<serde_bytes::ByteBuf, D>(d).map(|b| b.into_vec())
}
