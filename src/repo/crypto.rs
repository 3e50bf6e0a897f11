//! Authenticated encryption (XChaCha20-Poly1305, random nonces) with each object's kind as
//! associated data, and the keys derived from the master key (blob ids, chunker, MACs).
use crate::repo::id::{BlobId, Id};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::ops::Range;

pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
/// Bytes an encrypted object has beyond its plaintext.
pub(crate) const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is too short ({0} bytes)")]
    TooShort(usize),
    #[error("authentication failed: wrong key or damaged data")]
    Authentication,
}

/// What an encrypted object is. From format version 3 on, the kind (with a binding such as a
/// blob's type and id) is authenticated as the AEAD's associated data, so that the ciphertext of
/// one kind of object never opens as another (a data blob saved as a snapshot, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Config,
    Key,
    Snapshot,
    Index,
    Lock,
    PackHeader,
    Blob,
    Dictionary,
}

impl ObjectKind {
    fn name(self) -> &'static [u8] {
        match self {
            ObjectKind::Config => b"config",
            ObjectKind::Key => b"key",
            ObjectKind::Snapshot => b"snapshot",
            ObjectKind::Index => b"index",
            ObjectKind::Lock => b"lock",
            ObjectKind::PackHeader => b"pack-header",
            ObjectKind::Blob => b"blob",
            ObjectKind::Dictionary => b"dictionary",
        }
    }
}

/// The associated data of one object: `"strata3" 0 kind 0 binding` in format version 3, empty
/// before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    /// No associated data: how format versions 1 and 2 encrypted every object.
    pub(crate) fn legacy() -> Aad {
        Aad(Vec::new())
    }

    /// `kind` and `binding` (empty where nothing about the object is known before it is read).
    pub fn bound(kind: ObjectKind, binding: &[u8]) -> Aad {
        let mut aad = b"strata3\0".to_vec();
        aad.extend_from_slice(kind.name());
        aad.push(0);
        aad.extend_from_slice(binding);
        Aad(aad)
    }

    /// The associated data of `kind` in a repository of format `version`.
    pub(crate) fn for_version(version: u32, kind: ObjectKind, binding: &[u8]) -> Aad {
        if version >= 3 {
            Aad::bound(kind, binding)
        } else {
            Aad::legacy()
        }
    }
}

pub(crate) fn fill_random(buf: &mut [u8]) {
    OsRng.fill_bytes(buf);
}

/// How the keys derived from a master key's id key are made (the config's `keys` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum KeyDerivation {
    /// Formats 1 and 2 (and repositories migrated from them, so that their data keeps
    /// deduplicating): the id key itself keys blob ids, and one u64 derived from it is
    /// XORed into FastCDC's public gear table.
    V2,
    /// Every derived key from its own `blake3::derive_key` context; the whole gear table
    /// from a BLAKE3 XOF.
    V3,
}

impl From<KeyDerivation> for u32 {
    fn from(d: KeyDerivation) -> u32 {
        match d {
            KeyDerivation::V2 => 2,
            KeyDerivation::V3 => 3,
        }
    }
}

impl TryFrom<u32> for KeyDerivation {
    type Error = String;
    fn try_from(n: u32) -> Result<KeyDerivation, String> {
        match n {
            2 => Ok(KeyDerivation::V2),
            3 => Ok(KeyDerivation::V3),
            other => Err(format!("unknown key derivation {other}")),
        }
    }
}

/// The `blake3::derive_key` contexts, one per purpose.
const BLOB_ID_CONTEXT: &str = "strata 2026 blob id";
const GEAR_TABLE_CONTEXT: &str = "strata 2026 chunker gear table";

/// The seed of content-defined chunking's gear table (see [`crate::write::chunker::GearTable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GearSeed {
    /// XORed into FastCDC's public table ([`KeyDerivation::V2`]).
    Xor(u64),
    /// The key of a BLAKE3 XOF that yields the whole table ([`KeyDerivation::V3`]).
    Table([u8; 32]),
}

/// The repository's secret: one key for encryption, one from which blob ids, the chunker's
/// gear table and MAC keys are derived. It also carries the repository's format version and
/// key derivation (set from its config on opening), which select the associated data and the
/// derived keys; neither is stored in key files.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    #[serde(with = "hex_bytes")]
    encrypt: [u8; 32],
    #[serde(with = "hex_bytes")]
    id: [u8; 32],
    #[serde(skip, default = "current_format")]
    format: u32,
    #[serde(skip, default = "current_derivation")]
    derivation: KeyDerivation,
}

fn current_format() -> u32 {
    crate::repo::config::FORMAT_VERSION
}

fn current_derivation() -> KeyDerivation {
    KeyDerivation::V3
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn random() -> MasterKey {
        let mut k = MasterKey::from_encryption_key([0; 32]);
        fill_random(&mut k.encrypt);
        fill_random(&mut k.id);
        k
    }

    /// A key for encrypting only (used for key files: the id key is unused there).
    pub fn from_encryption_key(encrypt: [u8; 32]) -> MasterKey {
        MasterKey {
            encrypt,
            id: [0; 32],
            format: current_format(),
            derivation: current_derivation(),
        }
    }

    /// This key as used in a repository of format `format` with key derivation `derivation`.
    pub(crate) fn for_repository(&self, format: u32, derivation: KeyDerivation) -> MasterKey {
        MasterKey {
            format,
            derivation,
            ..self.clone()
        }
    }

    /// The format version this key encrypts for.
    pub(crate) fn format(&self) -> u32 {
        self.format
    }

    /// The associated data of an object of `kind` in this key's format version.
    pub fn aad(&self, kind: ObjectKind, binding: &[u8]) -> Aad {
        Aad::for_version(self.format, kind, binding)
    }

    /// Keyed BLAKE3 of a blob's plaintext: without the key nobody can test for known content.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        let key = match self.derivation {
            KeyDerivation::V2 => self.id,
            KeyDerivation::V3 => blake3::derive_key(BLOB_ID_CONTEXT, &self.id),
        };
        BlobId(Id(*blake3::keyed_hash(&key, plaintext).as_bytes()))
    }

    /// A keyed BLAKE3 MAC of `data` for one purpose (`context`), with a key derived from the
    /// id key: lets a holder of the master key verify objects it does not encrypt.
    pub(crate) fn mac(&self, context: &str, data: &[u8]) -> [u8; 32] {
        let key = blake3::derive_key(context, &self.id);
        *blake3::keyed_hash(&key, data).as_bytes()
    }

    /// The gear table for content-defined chunking, derived from the id key so that chunk
    /// boundaries do not reveal content to someone without the key.
    pub fn chunker_seed(&self) -> crate::write::chunker::GearTable {
        crate::write::chunker::GearTable::new(self.gear_seed())
    }

    fn gear_seed(&self) -> GearSeed {
        match self.derivation {
            KeyDerivation::V2 => {
                let h = blake3::keyed_hash(&self.id, b"strata chunker seed");
                GearSeed::Xor(u64::from_le_bytes(
                    h.as_bytes()[..8].try_into().expect("8 bytes"),
                ))
            }
            KeyDerivation::V3 => GearSeed::Table(blake3::derive_key(GEAR_TABLE_CONTEXT, &self.id)),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.encrypt))
    }

    /// nonce || ciphertext || tag, with `aad` authenticated but not stored.
    pub fn encrypt(&self, aad: &Aad, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher()
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad.0, &mut out[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 accepts any message length used here");
        out.extend_from_slice(&tag);
        out
    }

    pub fn decrypt(&self, aad: &Aad, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = data.to_vec();
        let body = self.decrypt_in_place(aad, &mut buf)?;
        buf.truncate(body.end);
        buf.drain(..body.start);
        Ok(buf)
    }

    /// Decrypts nonce || ciphertext || tag where it lies; returns where the plaintext is.
    pub(crate) fn decrypt_in_place(
        &self,
        aad: &Aad,
        data: &mut [u8],
    ) -> Result<Range<usize>, CryptoError> {
        if data.len() < OVERHEAD {
            return Err(CryptoError::TooShort(data.len()));
        }
        let (nonce, rest) = data.split_at_mut(NONCE_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(body_len);
        self.cipher()
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad.0,
                body,
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(NONCE_LEN..NONCE_LEN + body_len)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = MasterKey::random();
        let c = k.encrypt(&Aad::legacy(), b"hello");
        assert_eq!(c.len(), 5 + OVERHEAD);
        assert_eq!(k.decrypt(&Aad::legacy(), &c).unwrap(), b"hello");
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let c = MasterKey::random().encrypt(&Aad::legacy(), b"secret");
        assert_eq!(
            MasterKey::random().decrypt(&Aad::legacy(), &c),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn flipped_bit_fails_authentication() {
        let k = MasterKey::random();
        let none = Aad::legacy();
        let mut c = k.encrypt(&none, b"secret data");
        c[NONCE_LEN + 2] ^= 1;
        assert_eq!(k.decrypt(&none, &c), Err(CryptoError::Authentication));
        assert_eq!(k.decrypt(&none, &c[..10]), Err(CryptoError::TooShort(10)));
    }

    #[test]
    fn an_object_of_one_kind_does_not_open_as_another() {
        let k = MasterKey::random();
        let blob = Aad::bound(ObjectKind::Blob, b"\0id");
        let c = k.encrypt(&blob, b"{}");
        assert_eq!(k.decrypt(&blob, &c).unwrap(), b"{}");
        for other in [
            Aad::bound(ObjectKind::Snapshot, b""),
            Aad::bound(ObjectKind::Blob, b"\x01id"),
            Aad::legacy(),
        ] {
            assert_eq!(k.decrypt(&other, &c), Err(CryptoError::Authentication));
        }
        assert_eq!(Aad::for_version(2, ObjectKind::Lock, b"x"), Aad::legacy());
        assert_eq!(
            Aad::for_version(3, ObjectKind::Lock, b"x"),
            Aad::bound(ObjectKind::Lock, b"x")
        );
    }

    #[test]
    fn blob_ids_are_keyed() {
        let (a, b) = (MasterKey::random(), MasterKey::random());
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
    }
}
