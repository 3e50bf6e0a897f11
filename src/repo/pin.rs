//! What this client remembers about a repository in its local cache: the config it accepted
//! (so that a config swapped or downgraded in storage is refused) and the key file that
//! opened it (tried first next time).
use crate::repo::config::Config;
use crate::repo::crypto::MasterKey;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "the repository's config changed since this client last used it ({0}); if that was \
         not you, the storage was tampered with. If it was (a new repository at the same \
         place), remove {1}"
    )]
    Changed(String, String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

const PIN_CONTEXT: &str = "strata 2026 cache config pin";

/// The cache of one client: `dir` is the cache root (`--cache-dir`).
pub(crate) struct LocalState<'a> {
    dir: &'a Path,
}

impl<'a> LocalState<'a> {
    pub(crate) fn new(dir: &'a Path) -> LocalState<'a> {
        LocalState { dir }
    }

    /// Where the pin of the repository with master key `key` lives: named by a MAC of the
    /// master key, so a config cannot pass for another repository's by carrying its id.
    fn pin_path(&self, key: &MasterKey) -> PathBuf {
        let name = hex::encode(key.mac(PIN_CONTEXT, b"pin file name"));
        self.dir.join("pins").join(name)
    }

    /// Accepts `config` if it is the one pinned, or the pinned one at a higher format
    /// version (a migration); pins it on first use. Anything else is refused.
    pub(crate) fn check_config(&self, key: &MasterKey, config: &Config) -> Result<(), PinError> {
        let path = self.pin_path(key);
        let pinned: Option<Config> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match pinned {
            Some(p) if &p == config => Ok(()),
            Some(p) => match difference(&p, config) {
                Some(what) => Err(PinError::Changed(what, path.display().to_string())),
                None => write(&path, config),
            },
            None => write(&path, config),
        }
    }

    fn key_hint_path(&self, location: &str) -> PathBuf {
        let name = blake3::hash(location.as_bytes()).to_hex();
        self.dir.join("keys").join(&name[..32])
    }

    /// The name of the key file that last opened the repository at `location`.
    pub(crate) fn remembered_key(&self, location: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.key_hint_path(location)).ok()?;
        Some(text.trim().to_string())
    }

    pub(crate) fn remember_key(&self, location: &str, name: &str) -> Result<(), PinError> {
        let path = self.key_hint_path(location);
        if self.remembered_key(location).as_deref() == Some(name) {
            return Ok(());
        }
        write_bytes(&path, name.as_bytes())
    }
}

/// What differs between the pinned config and `now`, unless `now` is only an upgrade of it.
fn difference(pinned: &Config, now: &Config) -> Option<String> {
    if now.version < pinned.version {
        return Some(format!(
            "format version {} is older than version {} seen before",
            now.version, pinned.version
        ));
    }
    let same_but_version = Config {
        version: pinned.version,
        ..now.clone()
    };
    match &same_but_version == pinned {
        true => None,
        false => Some(format!(
            "it was {}, it is now {}",
            serde_json::to_string(pinned).expect("config"),
            serde_json::to_string(now).expect("config")
        )),
    }
}

fn write(path: &Path, config: &Config) -> Result<(), PinError> {
    write_bytes(
        path,
        &serde_json::to_vec(config).expect("config serializes"),
    )
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash leaves the old
/// content or the new, never a part.
fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), PinError> {
    let dir = path.parent().expect("pin paths have a parent");
    let io = |op| {
        move |source| PinError::Io {
            op,
            path: dir.display().to_string(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("write in"))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io("write in"))?;
    tmp.persist(path).map_err(|e| io("replace in")(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::config::ChunkerParams;

    #[test]
    fn config_pin_refuses_changes_and_downgrades_but_follows_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let state = LocalState::new(dir.path());
        let key = MasterKey::random();
        let mut old = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
        old.version = 2;
        state.check_config(&key, &old).unwrap();
        state.check_config(&key, &old).unwrap();
        let tiny = Config {
            pack_size: 4096,
            ..old.clone()
        };
        assert!(matches!(
            state.check_config(&key, &tiny),
            Err(PinError::Changed(..))
        ));
        let other_id = Config {
            id: crate::repo::id::Id::random(),
            ..old.clone()
        };
        assert!(state.check_config(&key, &other_id).is_err());
        let upgraded = Config {
            version: 3,
            ..old.clone()
        };
        state.check_config(&key, &upgraded).unwrap();
        let err = state.check_config(&key, &old).unwrap_err().to_string();
        assert!(err.contains("older than version 3"), "{err}");
        state.check_config(&MasterKey::random(), &tiny).unwrap();
    }

    #[test]
    fn key_hints_are_per_location() {
        let dir = tempfile::tempdir().unwrap();
        let state = LocalState::new(dir.path());
        assert_eq!(state.remembered_key("/a"), None);
        state.remember_key("/a", "00ff").unwrap();
        assert_eq!(state.remembered_key("/a").as_deref(), Some("00ff"));
        assert_eq!(state.remembered_key("/b"), None);
    }
}
