//! Key files: the master key encrypted under a key derived from a password with Argon2id.
//! A repository may hold several, one per password.
use crate::crypto::{Aad, CryptoError, MasterKey};
use crate::id::{Id, KeyId};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file is not valid JSON: {0}")]
    Format(#[from] serde_json::Error),
    #[error("unsupported key derivation {0:?}")]
    UnsupportedKdf(String),
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("wrong password")]
    WrongPassword,
    #[error("key file is damaged: {0}")]
    Damaged(CryptoError),
}

/// Argon2id parameters, stored in each key file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

impl KdfParams {
    /// 32 MiB: as memory-hard as restic's scrypt key (N = 2^15, r = 8), which is what
    /// every command pays in peak memory before its own work; `init --kdf-memory-mib`
    /// raises it (RFC 9106's second recommended setting is 64 MiB).
    pub const DEFAULT_MEMORY_KIB: u32 = 32 * 1024;
    pub const DEFAULT_ITERATIONS: u32 = 3;
    /// Lanes, computed on parallel threads, so that opening a repository takes a fraction
    /// of the single-lane time on a multi-core machine at the same hardness.
    pub const DEFAULT_PARALLELISM: u32 = 4;

    pub fn new(memory_kib: u32, iterations: u32) -> KdfParams {
        let mut salt = [0u8; 16];
        crate::crypto::fill_random(&mut salt);
        KdfParams {
            algorithm: "argon2id".into(),
            memory_kib,
            iterations,
            parallelism: Self::DEFAULT_PARALLELISM,
            salt: hex::encode(salt),
        }
    }

    /// The default strength with a fresh salt.
    pub fn recommended() -> KdfParams {
        KdfParams::new(Self::DEFAULT_MEMORY_KIB, Self::DEFAULT_ITERATIONS)
    }

    fn derive(&self, password: &[u8]) -> Result<MasterKey, KeyError> {
        if self.algorithm != "argon2id" {
            return Err(KeyError::UnsupportedKdf(self.algorithm.clone()));
        }
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| KeyError::Params(e.to_string()))?;
        let salt = hex::decode(&self.salt).map_err(|e| KeyError::Params(e.to_string()))?;
        let mut out = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(password, &salt, &mut out)
            .map_err(|e| KeyError::Params(e.to_string()))?;
        Ok(MasterKey::from_encryption_key(out))
    }
}

/// The stored form of a key file (plain JSON; `data` is the encrypted master key, hex).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub created: String,
    pub host: String,
    pub username: String,
    pub kdf: KdfParams,
    pub data: String,
    /// Hex of `MasterKey::mac(KEY_MAC_CONTEXT, …)` over the other fields, so that anyone
    /// holding the master key can tell a damaged key file from one with another password.
    /// Absent in key files written by format version 1.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

const KEY_MAC_CONTEXT: &str = "strata 2026 key file mac";

impl KeyFile {
    pub fn new(master: &MasterKey, password: &[u8], kdf: KdfParams) -> Result<KeyFile, KeyError> {
        let wrapping = kdf.derive(password)?;
        let plain = serde_json::to_vec(master)?;
        let mut file = KeyFile {
            created: chrono::Utc::now().to_rfc3339(),
            host: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            kdf,
            data: hex::encode(wrapping.encrypt(&Aad::legacy(), &plain)),
            mac: String::new(),
        };
        file.mac = hex::encode(file.expected_mac(master));
        Ok(file)
    }

    /// The MAC input: every other field, as compact JSON in declaration order.
    fn expected_mac(&self, master: &MasterKey) -> [u8; 32] {
        let signed =
            serde_json::json!([self.created, self.host, self.username, self.kdf, self.data]);
        master.mac(KEY_MAC_CONTEXT, signed.to_string().as_bytes())
    }

    /// Checks the file against the repository's master key: Ok(false) when it carries no
    /// MAC (format version 1), an error when it has been altered.
    pub fn verify(&self, master: &MasterKey) -> Result<bool, KeyError> {
        if self.mac.is_empty() {
            return Ok(false);
        }
        match hex::encode(self.expected_mac(master)) == self.mac {
            true => Ok(true),
            false => Err(KeyError::Damaged(CryptoError::Authentication)),
        }
    }

    pub fn random_id() -> KeyId {
        KeyId(Id::random())
    }

    pub fn parse(bytes: &[u8]) -> Result<KeyFile, KeyError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn open(&self, password: &[u8]) -> Result<MasterKey, KeyError> {
        let wrapping = self.kdf.derive(password)?;
        let data =
            hex::decode(&self.data).map_err(|_| KeyError::Damaged(CryptoError::TooShort(0)))?;
        let plain = wrapping
            .decrypt(&Aad::legacy(), &data)
            .map_err(|e| match e {
                CryptoError::Authentication => KeyError::WrongPassword,
                other => KeyError::Damaged(other),
            })?;
        let master: MasterKey = serde_json::from_slice(&plain)?;
        self.verify(&master)?;
        Ok(master)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams::new(64, 1)
    }

    #[test]
    fn key_file_round_trip() {
        let master = MasterKey::random();
        let kf = KeyFile::new(&master, b"pw", fast()).unwrap();
        let parsed = KeyFile::parse(&kf.to_bytes()).unwrap();
        let opened = parsed.open(b"pw").unwrap();
        assert_eq!(opened.blob_id(b"a"), master.blob_id(b"a"));
    }

    #[test]
    fn altered_key_files_fail_verification_with_the_master_key() {
        let master = MasterKey::random();
        let file = KeyFile::new(&master, b"pw", fast()).unwrap();
        assert!(file.verify(&master).unwrap());
        let mut altered = file.clone();
        altered.host.push('x');
        assert!(matches!(altered.verify(&master), Err(KeyError::Damaged(_))));
        assert!(matches!(altered.open(b"pw"), Err(KeyError::Damaged(_))));
        let mut old = file.clone();
        old.mac.clear();
        assert!(!old.verify(&master).unwrap());
        old.open(b"pw").unwrap();
    }

    #[test]
    fn wrong_password_is_reported_as_such() {
        let kf = KeyFile::new(&MasterKey::random(), b"pw", fast()).unwrap();
        assert!(matches!(kf.open(b"nope"), Err(KeyError::WrongPassword)));
    }

    #[test]
    fn unknown_kdf_is_refused() {
        let mut kf = KeyFile::new(&MasterKey::random(), b"pw", fast()).unwrap();
        kf.kdf.algorithm = "md5".into();
        assert!(matches!(kf.open(b"pw"), Err(KeyError::UnsupportedKdf(_))));
    }

    #[test]
    fn lanes_are_part_of_the_derivation_and_one_lane_keys_still_open() {
        let master = MasterKey::random();
        assert_eq!(fast().parallelism, KdfParams::DEFAULT_PARALLELISM);
        for lanes in [1, KdfParams::DEFAULT_PARALLELISM] {
            let kdf = KdfParams {
                parallelism: lanes,
                ..fast()
            };
            let mut kf = KeyFile::new(&master, b"pw", kdf).unwrap();
            assert_eq!(kf.open(b"pw").unwrap().blob_id(b"a"), master.blob_id(b"a"));
            kf.kdf.parallelism = if lanes == 1 { 4 } else { 1 };
            kf.mac.clear();
            assert!(matches!(kf.open(b"pw"), Err(KeyError::WrongPassword)));
        }
    }
}
