//! Key files: the master key encrypted under a key derived from a password with Argon2id.
//! A repository may hold several, one per password.
use crate::repo::crypto::{Aad, CryptoError, MasterKey, ObjectKind};
use crate::repo::id::{Id, KeyId};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file is not valid JSON: {0}")]
    Format(#[from] serde_json::Error),
    #[error("unsupported key derivation {0:?}")]
    UnsupportedKdf(String),
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("Argon2 parameters out of bounds: {0}")]
    OutOfBounds(String),
    #[error("key file has no MAC, which format version 3 requires")]
    MissingMac,
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
    pub(crate) const DEFAULT_PARALLELISM: u32 = 4;

    pub fn new(memory_kib: u32, iterations: u32) -> KdfParams {
        let mut salt = [0u8; 16];
        crate::repo::crypto::fill_random(&mut salt);
        KdfParams {
            algorithm: "argon2id".into(),
            memory_kib,
            iterations,
            parallelism: Self::DEFAULT_PARALLELISM,
            salt: hex::encode(salt),
        }
    }

    /// Bounds on what a key file may ask of every command that opens the repository: a
    /// planted key file with huge parameters must not hang them (it is skipped instead).
    pub(crate) const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
    pub(crate) const MAX_ITERATIONS: u32 = 64;
    pub(crate) const MAX_PARALLELISM: u32 = 16;
    /// Memory times iterations: 4 GiB of passes, a few seconds on one core.
    pub(crate) const MAX_WORK_KIB: u64 = 4 * 1024 * 1024;

    /// Refuses parameters beyond the bounds above.
    pub(crate) fn check_bounds(&self) -> Result<(), KeyError> {
        let work = self.memory_kib as u64 * self.iterations as u64;
        let within = self.memory_kib <= Self::MAX_MEMORY_KIB
            && (1..=Self::MAX_ITERATIONS).contains(&self.iterations)
            && (1..=Self::MAX_PARALLELISM).contains(&self.parallelism)
            && work <= Self::MAX_WORK_KIB;
        match within {
            true => Ok(()),
            false => Err(KeyError::OutOfBounds(format!(
                "{} KiB x {} iterations x {} lanes (at most {} KiB, {} iterations, {} lanes, {} KiB x iterations)",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                Self::MAX_MEMORY_KIB,
                Self::MAX_ITERATIONS,
                Self::MAX_PARALLELISM,
                Self::MAX_WORK_KIB
            ))),
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
        self.check_bounds()?;
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
    /// The format version of the repository this key file belongs to (absent: 2). Covered
    /// by the MAC, so a client holding it refuses a config of a lower version. From 3 on,
    /// `data` is encrypted with the key kind as associated data, except in key files
    /// migrated from version 2, whose `data` only their password could re-encrypt.
    #[serde(default = "legacy_version", skip_serializing_if = "is_legacy")]
    pub version: u32,
    /// Hex of `MasterKey::mac(KEY_MAC_CONTEXT, …)` over the other fields, so that anyone
    /// holding the master key can tell a damaged key file from one with another password.
    /// Absent in key files written by format version 1; required from version 3 on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

const KEY_MAC_CONTEXT: &str = "strata 2026 key file mac";
const LEGACY_VERSION: u32 = 2;
const BOUND_VERSION: u32 = 3;

fn legacy_version() -> u32 {
    LEGACY_VERSION
}

fn is_legacy(version: &u32) -> bool {
    *version == LEGACY_VERSION
}

impl KeyFile {
    pub fn new(master: &MasterKey, password: &[u8], kdf: KdfParams) -> Result<KeyFile, KeyError> {
        let wrapping = kdf.derive(password)?;
        let plain = serde_json::to_vec(master)?;
        let mut file = KeyFile {
            created: chrono::Utc::now().to_rfc3339(),
            host: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            kdf,
            data: hex::encode(wrapping.encrypt(&data_aad(BOUND_VERSION), &plain)),
            version: BOUND_VERSION,
            mac: String::new(),
        };
        file.sign(master);
        Ok(file)
    }

    /// Sets the MAC for `master` (migration adds one to key files that lack it).
    pub(crate) fn sign(&mut self, master: &MasterKey) {
        self.mac = hex::encode(self.expected_mac(master));
    }

    pub(crate) fn has_mac(&self) -> bool {
        !self.mac.is_empty()
    }

    /// The MAC input: every other field, as compact JSON in declaration order (the version
    /// only where it is not the legacy one, so that older MACs stay valid).
    fn expected_mac(&self, master: &MasterKey) -> [u8; 32] {
        let mut signed =
            serde_json::json!([self.created, self.host, self.username, self.kdf, self.data]);
        if !is_legacy(&self.version) {
            signed
                .as_array_mut()
                .expect("an array")
                .push(self.version.into());
        }
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

    pub(crate) fn random_id() -> KeyId {
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
            .decrypt(&data_aad(self.version), &data)
            .or_else(|_| wrapping.decrypt(&Aad::legacy(), &data))
            .map_err(|e| match e {
                CryptoError::Authentication => KeyError::WrongPassword,
                other => KeyError::Damaged(other),
            })?;
        let master: MasterKey = serde_json::from_slice(&plain)?;
        self.verify(&master)?;
        Ok(master)
    }
}

/// The associated data of a key file's `data` in key files of `version`.
fn data_aad(version: u32) -> Aad {
    Aad::for_version(version, ObjectKind::Key, b"")
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
    fn kdf_parameters_out_of_bounds_are_refused_before_any_work() {
        let kf = KeyFile::new(&MasterKey::random(), b"pw", fast()).unwrap();
        let huge = [
            (64, u32::MAX, 4),
            (u32::MAX, 1, 4),
            (64, 1, 1000),
            (KdfParams::MAX_MEMORY_KIB, 8, 4),
            (64, 0, 4),
        ];
        for (memory_kib, iterations, parallelism) in huge {
            let mut planted = kf.clone();
            planted.kdf = KdfParams {
                memory_kib,
                iterations,
                parallelism,
                ..fast()
            };
            let err = planted.open(b"pw").unwrap_err();
            assert!(matches!(err, KeyError::OutOfBounds(_)), "{err}");
        }
        KdfParams::recommended().check_bounds().unwrap();
    }

    #[test]
    fn key_file_data_is_bound_to_its_kind_and_version() {
        let master = MasterKey::random();
        let kf = KeyFile::new(&master, b"pw", fast()).unwrap();
        assert_eq!(kf.version, 3);
        assert!(
            String::from_utf8(kf.to_bytes())
                .unwrap()
                .contains("\"version\"")
        );
        let mut downgraded = kf.clone();
        downgraded.version = 2;
        downgraded.sign(&master);
        assert!(matches!(
            downgraded.open(b"pw"),
            Err(KeyError::WrongPassword)
        ));
        let mut unsigned = kf.clone();
        unsigned.version = 4;
        assert!(matches!(unsigned.open(b"pw"), Err(KeyError::Damaged(_))));
    }

    #[test]
    fn migrated_key_files_keep_their_legacy_data_under_a_signed_version() {
        let master = MasterKey::random();
        let mut old = KeyFile::new(&master, b"pw", fast()).unwrap();
        let wrapping = old.kdf.derive(b"pw").unwrap();
        let plain = serde_json::to_vec(&master).unwrap();
        old.data = hex::encode(wrapping.encrypt(&Aad::legacy(), &plain));
        old.version = 2;
        old.mac.clear();
        assert!(old.open(b"pw").is_ok());
        old.version = 3;
        old.sign(&master);
        assert!(old.verify(&master).unwrap());
        assert_eq!(old.open(b"pw").unwrap().blob_id(b"a"), master.blob_id(b"a"));
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
