//! What this machine saw of lock objects: when it first saw each one (by name and content)
//! on the boot clock, kept in the local cache so that it holds between commands of a boot.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    /// `sysinfo::boot_identity()` when written: the boot clock of another boot means nothing.
    boot: String,
    seen: BTreeMap<String, Sighting>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Sighting {
    /// BLAKE3 of the lock object's bytes, in hex.
    content: String,
    /// The boot clock, in milliseconds, when this content was first seen under this name.
    first_ms: i64,
}

/// First sightings of lock objects, loaded from (and saved to) `file` when there is one.
pub(super) struct Sightings {
    file: Option<PathBuf>,
    stored: Stored,
}

impl Sightings {
    /// The sightings kept in `file` during boot `boot`; none when the file is missing,
    /// unreadable or from another boot. Without a boot identity nothing is kept, since
    /// sightings from before a reboot could not be told apart.
    pub(super) fn load(file: Option<PathBuf>, boot: &str) -> Sightings {
        let file = file.filter(|_| !boot.is_empty());
        let stored = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
            .filter(|s| s.boot == boot)
            .unwrap_or_else(|| Stored {
                boot: boot.to_string(),
                seen: BTreeMap::new(),
            });
        Sightings { file, stored }
    }

    /// How long the object `name` has held `content` as far as we saw, at `now` on the boot
    /// clock; a new name or changed content counts as first seen now.
    pub(super) fn unchanged_for(
        &mut self,
        name: &str,
        content: &blake3::Hash,
        now: Duration,
    ) -> Duration {
        let content = content.to_hex().to_string();
        let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        let first = Sighting {
            content,
            first_ms: now_ms,
        };
        let seen = self
            .stored
            .seen
            .entry(name.to_string())
            .or_insert(first.clone());
        if seen.content != first.content {
            *seen = first;
        }
        let unchanged = u64::try_from(now_ms.saturating_sub(seen.first_ms)).unwrap_or(0);
        Duration::from_millis(unchanged)
    }

    /// Forgets objects not in `present` and writes the file. Best effort: a sighting lost
    /// (to a full disk, or to another process saving at the same time) only makes a lock
    /// take longer to count as stale.
    pub(super) fn save(&mut self, present: &[&str]) {
        self.stored
            .seen
            .retain(|name, _| present.contains(&name.as_str()));
        if let Some(file) = &self.file {
            let _ = write_atomically(file, &serde_json::to_vec(&self.stored).expect("json"));
        }
    }
}

fn write_atomically(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_sighting_lasts_while_the_content_stays_and_between_loads_of_one_boot() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache/locks.json");
        let (a, b) = (blake3::hash(b"a"), blake3::hash(b"b"));
        let mut s = Sightings::load(Some(file.clone()), "boot1");
        assert_eq!(s.unchanged_for("n", &a, 10 * MIN), Duration::ZERO);
        s.save(&["n"]);
        let mut s = Sightings::load(Some(file.clone()), "boot1");
        assert_eq!(s.unchanged_for("n", &a, 40 * MIN), 30 * MIN);
        assert_eq!(
            s.unchanged_for("n", &b, 41 * MIN),
            Duration::ZERO,
            "new content"
        );
        assert_eq!(s.unchanged_for("n", &b, 42 * MIN), MIN);
        s.save(&[]);
        let mut s = Sightings::load(Some(file.clone()), "boot1");
        assert_eq!(
            s.unchanged_for("n", &b, 50 * MIN),
            Duration::ZERO,
            "forgotten"
        );
        s.save(&["n"]);
        let mut s = Sightings::load(Some(file), "boot2");
        assert_eq!(
            s.unchanged_for("n", &b, 90 * MIN),
            Duration::ZERO,
            "other boot"
        );
    }
}
