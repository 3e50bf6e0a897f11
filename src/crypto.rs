//! Authenticated encryption (XChaCha20-Poly1305, random nonces) and keyed BLAKE3 blob ids.
use crate::id::{BlobId, Id};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::ops::Range;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes an encrypted object has beyond its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is too short ({0} bytes)")]
    TooShort(usize),
    #[error("authentication failed: wrong key or damaged data")]
    Authentication,
}

pub fn fill_random(buf: &mut [u8]) {
    OsRng.fill_bytes(buf);
}

/// The repository's secret: one key for encryption, one for blob ids.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    #[serde(with = "hex_bytes")]
    encrypt: [u8; 32],
    #[serde(with = "hex_bytes")]
    id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn random() -> MasterKey {
        let mut k = MasterKey {
            encrypt: [0; 32],
            id: [0; 32],
        };
        fill_random(&mut k.encrypt);
        fill_random(&mut k.id);
        k
    }

    /// A key for encrypting only (used for key files: the id key is unused there).
    pub fn from_encryption_key(encrypt: [u8; 32]) -> MasterKey {
        MasterKey {
            encrypt,
            id: [0; 32],
        }
    }

    /// Keyed BLAKE3 of a blob's plaintext: without the key nobody can test for known content.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(Id(*blake3::keyed_hash(&self.id, plaintext).as_bytes()))
    }

    /// A keyed BLAKE3 MAC of `data` for one purpose (`context`), with a key derived from the
    /// id key: lets a holder of the master key verify objects it does not encrypt.
    pub fn mac(&self, context: &str, data: &[u8]) -> [u8; 32] {
        let key = blake3::derive_key(context, &self.id);
        *blake3::keyed_hash(&key, data).as_bytes()
    }

    /// The gear-table seed for content-defined chunking, derived from the id key so that
    /// chunk boundaries do not reveal content to someone without the key.
    pub fn chunker_seed(&self) -> u64 {
        let h = blake3::keyed_hash(&self.id, b"strata chunker seed");
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.encrypt))
    }

    /// nonce || ciphertext || tag.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher()
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut out[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 accepts any message length used here");
        out.extend_from_slice(&tag);
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = data.to_vec();
        let body = self.decrypt_in_place(&mut buf)?;
        buf.truncate(body.end);
        buf.drain(..body.start);
        Ok(buf)
    }

    /// Decrypts nonce || ciphertext || tag where it lies; returns where the plaintext is.
    pub fn decrypt_in_place(&self, data: &mut [u8]) -> Result<Range<usize>, CryptoError> {
        if data.len() < OVERHEAD {
            return Err(CryptoError::TooShort(data.len()));
        }
        let (nonce, rest) = data.split_at_mut(NONCE_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(body_len);
        self.cipher()
            .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", body, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Authentication)?;
        Ok(NONCE_LEN..NONCE_LEN + body_len)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
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
        let c = k.encrypt(b"hello");
        assert_eq!(c.len(), 5 + OVERHEAD);
        assert_eq!(k.decrypt(&c).unwrap(), b"hello");
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let c = MasterKey::random().encrypt(b"secret");
        assert_eq!(
            MasterKey::random().decrypt(&c),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn flipped_bit_fails_authentication() {
        let k = MasterKey::random();
        let mut c = k.encrypt(b"secret data");
        c[NONCE_LEN + 2] ^= 1;
        assert_eq!(k.decrypt(&c), Err(CryptoError::Authentication));
        assert_eq!(k.decrypt(&c[..10]), Err(CryptoError::TooShort(10)));
    }

    #[test]
    fn blob_ids_are_keyed() {
        let (a, b) = (MasterKey::random(), MasterKey::random());
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
    }
}
