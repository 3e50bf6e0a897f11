//! The repository's `config` object: its id, format version and the parameters fixed at
//! `init` for its whole life (chunker sizes, pack size, compression level).
use crate::repo::crypto::KeyDerivation;
use crate::repo::id::Id;
use serde::{Deserialize, Serialize};

/// The on-disk format version this build writes (see repo-format.md).
pub const FORMAT_VERSION: u32 = 3;

/// The first format version whose objects are bound to their kind (AEAD associated data).
/// Older repositories are read but not written: `strata migrate` upgrades them.
pub(crate) const BOUND_OBJECTS_VERSION: u32 = 3;

/// The oldest format version this build still reads: version 1 lacks key-file MACs, defined
/// locks and `bson_chunker` (which then takes its default).
pub(crate) const OLDEST_READABLE_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl ChunkerParams {
    pub const FILES: ChunkerParams = ChunkerParams {
        min_size: 512 * 1024,
        avg_size: 1024 * 1024,
        max_size: 8 * 1024 * 1024,
    };

    /// For BSON documents (MongoDB collections): smaller chunks, so that changing a few
    /// documents stores little.
    pub(crate) const BSON: ChunkerParams = ChunkerParams {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 256 * 1024,
    };
    pub const BSON_AVERAGE_KIB: u32 = 64;

    /// BSON chunking around an average of `avg` bytes: a quarter of it at least, four
    /// times it at most, as [`ChunkerParams::BSON`] has it.
    pub fn bson_with_average(avg: u32) -> ChunkerParams {
        ChunkerParams {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg.saturating_mul(4),
        }
    }

    /// The smallest minimum chunk size a config may set: tiny chunks would expose content
    /// (and multiply the index) if a config were ever forged.
    pub(crate) const SMALLEST_MIN: u32 = 256;
    /// The same for files, whose chunker no command can set below [`ChunkerParams::FILES`].
    pub(crate) const SMALLEST_FILES_MIN: u32 = 64 * 1024;

    /// Within the limits of FastCDC 2020, even (its cut loop reads two bytes a step),
    /// ordered min <= avg <= max, and min at least [`ChunkerParams::SMALLEST_MIN`].
    pub fn validate(&self) -> Result<(), String> {
        self.validate_above(Self::SMALLEST_MIN)
    }

    fn validate_above(&self, smallest_min: u32) -> Result<(), String> {
        use fastcdc::v2020 as f;
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let in_range = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max);
        let even = [min, avg, max].iter().all(|n| n % 2 == 0);
        if in_range && even && min <= avg && avg <= max && self.min_size >= smallest_min {
            Ok(())
        } else {
            Err(format!("chunker sizes {min}/{avg}/{max} are out of range"))
        }
    }
}

fn bson_chunker_default() -> ChunkerParams {
    ChunkerParams::BSON
}

/// Configs written before version 3 have no `keys` field: they derive keys as version 2.
fn keys_default() -> KeyDerivation {
    KeyDerivation::V2
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    pub id: Id,
    pub created: String,
    pub chunker: ChunkerParams,
    /// Chunk sizes for MongoDB collections (cut only between documents). Since version 2.
    #[serde(default = "bson_chunker_default")]
    pub bson_chunker: ChunkerParams,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
    /// zstd level for blobs (0 stores every blob uncompressed).
    pub compression: i32,
    /// How blob ids and the chunker's gear table derive from the master key (2 or 3). Since
    /// version 3; a migrated repository keeps 2, so that its data keeps deduplicating.
    #[serde(default = "keys_default")]
    pub keys: KeyDerivation,
    /// Whether backups train zstd dictionaries for small data blobs and compress with them
    /// (see repo-format.md, "Dictionaries"). Absent (configs written before dictionaries,
    /// migrated repositories): false, so only repositories created since get them; readers
    /// read dictionary-compressed blobs whatever it says.
    #[serde(default)]
    pub dictionaries: bool,
}

impl Config {
    pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
    pub const DEFAULT_COMPRESSION: i32 = 3;

    pub fn new(chunker: ChunkerParams, pack_size: u32, compression: i32) -> Config {
        Config {
            version: FORMAT_VERSION,
            id: Id::random(),
            created: chrono::Utc::now().to_rfc3339(),
            chunker,
            bson_chunker: ChunkerParams::BSON,
            pack_size,
            compression,
            keys: KeyDerivation::V3,
            dictionaries: true,
        }
    }

    /// The smallest pack size a config may set.
    pub(crate) const SMALLEST_PACK_SIZE: u32 = 4096;

    /// Whether this build may write to the repository (older versions: migrate first).
    pub(crate) fn is_writable(&self) -> bool {
        self.version >= BOUND_OBJECTS_VERSION
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&self.version) {
            return Err(format!(
                "repository format version {} is not supported (this strata reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})",
                self.version
            ));
        }
        if self.version < BOUND_OBJECTS_VERSION && self.keys != KeyDerivation::V2 {
            return Err(format!(
                "key derivation {} needs format version 3",
                u32::from(self.keys)
            ));
        }
        if !(Self::SMALLEST_PACK_SIZE..=1 << 30).contains(&self.pack_size) {
            return Err(format!("pack size {} is out of range", self.pack_size));
        }
        if !(0..=22).contains(&self.compression) {
            return Err(format!(
                "compression level {} is out of range",
                self.compression
            ));
        }
        self.chunker
            .validate_above(ChunkerParams::SMALLEST_FILES_MIN)?;
        self.bson_chunker.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bson_chunker_by_average_matches_the_default_and_checks_its_range() {
        let avg = ChunkerParams::BSON_AVERAGE_KIB * 1024;
        assert_eq!(ChunkerParams::bson_with_average(avg), ChunkerParams::BSON);
        assert!(ChunkerParams::bson_with_average(1024).validate().is_ok());
        assert!(ChunkerParams::bson_with_average(16).validate().is_err());
        assert!(
            ChunkerParams::bson_with_average(u32::MAX)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn configs_without_the_dictionaries_field_have_none() {
        let mut c = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        assert!(c.dictionaries, "new repositories train dictionaries");
        let mut json = serde_json::to_value(&c).unwrap();
        json.as_object_mut().unwrap().remove("dictionaries");
        let old: Config = serde_json::from_value(json).unwrap();
        c.dictionaries = false;
        assert_eq!(old, c);
    }

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let c = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        c.validate().unwrap();
        let back: Config = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut c = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        c.version = 99;
        assert!(c.validate().unwrap_err().contains("version 99"));
        c.version = FORMAT_VERSION;
        c.chunker.max_size = 100;
        assert!(c.validate().is_err());
    }

    #[test]
    fn odd_chunk_sizes_are_refused() {
        // FastCDC's cut loop steps two bytes at a time and asserts even sizes; a crafted
        // config with an odd size must be refused, not reach the chunker.
        let good = ChunkerParams::FILES;
        for odd in [
            ChunkerParams {
                min_size: good.min_size + 1,
                ..good
            },
            ChunkerParams {
                avg_size: good.avg_size + 1,
                ..good
            },
            ChunkerParams {
                max_size: good.max_size - 1,
                ..good
            },
        ] {
            assert!(odd.validate().is_err(), "{odd:?}");
        }
        good.validate().unwrap();
    }

    #[test]
    fn config_bounds_refuse_tiny_chunks_and_packs() {
        let good = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        let tiny = ChunkerParams {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        };
        let forged = [
            Config {
                chunker: tiny,
                ..good.clone()
            },
            Config {
                bson_chunker: tiny,
                ..good.clone()
            },
            Config {
                pack_size: 1024,
                ..good.clone()
            },
            Config {
                compression: 23,
                ..good.clone()
            },
            Config {
                version: 2,
                ..good.clone()
            },
        ];
        for c in forged {
            assert!(c.validate().is_err(), "{c:?}");
        }
        good.validate().unwrap();
        assert_eq!(good.keys, KeyDerivation::V3);
        assert!(good.is_writable());
    }

    #[test]
    fn version_1_configs_read_with_the_default_bson_chunker() {
        let c = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        let mut json = serde_json::to_value(&c).unwrap();
        json["version"] = 1.into();
        json.as_object_mut().unwrap().remove("bson_chunker");
        json.as_object_mut().unwrap().remove("keys");
        let old: Config = serde_json::from_value(json).unwrap();
        old.validate().unwrap();
        assert_eq!(old.bson_chunker, ChunkerParams::BSON);
        assert_eq!(old.keys, KeyDerivation::V2);
        assert!(!old.is_writable());
        assert_eq!(c.version, FORMAT_VERSION);
    }
}
