//! How a long operation tells its caller what it is doing without printing: the phase it is
//! in, counters of work done, the item at hand and the entries it had to leave out. The CLI
//! draws a bar with it; tests record it; `--quiet` passes [`Quiet`].
//!
//! Counters arrive as increments, at most one call per chunk, blob or file, so that an
//! observer costs the pipeline nothing measurable. Summed, they equal the figures of the
//! operation's final report:
//!
//! | operation | phases | counters (summed) |
//! |---|---|---|
//! | backup | Reading, Indexing | `files` = `total_files`, `bytes_read`, `bytes_added`, `blobs` = data + tree blobs added, `packs` written; a MongoDB export adds the documents' bytes to `bytes_read` (its report's `bytes`) |
//! | restore | (Scanning), Writing | `files`, `bytes_added` = `bytes_written`, added per chunk as it is written (so one large file moves the bar smoothly; a file that fails midway has counted chunks the report leaves out) |
//! | check | Indexing, Scanning, Verifying | `packs` = `packs_read`, `blobs` = `blobs_read`, `bytes_read` of those packs |
//! | prune | Scanning, Repacking, Indexing, Removing | `bytes_read` of packs repacked, `packs` = `packs_written`, `bytes_added` = `bytes_written` |
//! | repair index | Reading, Indexing, Removing | `packs` = `packs`, `bytes_read` |
//! | repair snapshots | Scanning, Writing | `blobs`, `bytes_added`, `packs` of the rewritten trees |
//! | copy | Writing | `bytes_read` from the source, `blobs` = `blobs_added`, `bytes_added`, `packs` |
//! | stats | Scanning, Indexing, (Reading) | `files` |
//! | scan | Scanning, (Reading) | `bytes_read` of the files read with `--deep` |
//! | MongoDB import | Writing, Indexing | `files` = documents inserted (`total.documents`) |
//! | MongoDB scan | Scanning | none: the namespace compared is the item |
use serde::ser::{Serialize, SerializeTuple, Serializer};
use std::ops::AddAssign;

/// What an operation is busy with; each operation goes through a few of these, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Walking trees or directories to find the work.
    Scanning,
    /// Reading content: source files, packs, documents.
    Reading,
    /// Writing content: restored files, copied blobs, rewritten snapshots.
    Writing,
    /// Writing index files and the snapshot that make the new data reachable.
    Indexing,
    /// Checking what was stored against what it should be.
    Verifying,
    /// Copying the live blobs out of packs about to go.
    Repacking,
    /// Deleting what is no longer needed.
    Removing,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Scanning => "scanning",
            Phase::Reading => "reading",
            Phase::Writing => "writing",
            Phase::Indexing => "indexing",
            Phase::Verifying => "verifying",
            Phase::Repacking => "repacking",
            Phase::Removing => "removing",
        }
    }
}

/// Work done, as increments or totals. Each operation documents which fields it fills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Files (or documents' collections, snapshots) completed.
    pub files: u64,
    /// Content bytes read: from the source (backup), from packs (check, prune, copy).
    pub bytes_read: u64,
    /// Bytes stored: new blobs in the repository, or file content restored.
    pub bytes_added: u64,
    /// Blobs stored (or checked, for check).
    pub blobs: u64,
    /// Packs written (or read, for check and repair; removed, for prune).
    pub packs: u64,
}

impl Counters {
    pub(crate) fn files(n: u64) -> Counters {
        Counters {
            files: n,
            ..Counters::default()
        }
    }

    pub(crate) fn bytes_read(n: u64) -> Counters {
        Counters {
            bytes_read: n,
            ..Counters::default()
        }
    }

    pub(crate) fn packs(n: u64) -> Counters {
        Counters {
            packs: n,
            ..Counters::default()
        }
    }
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.files += o.files;
        self.bytes_read += o.bytes_read;
        self.bytes_added += o.bytes_added;
        self.blobs += o.blobs;
        self.packs += o.packs;
    }
}

/// Why an entry was left out; the operation went on without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryErrorKind {
    /// It disappeared between being listed and being read.
    Vanished,
    /// Access to it was refused.
    Denied,
    /// Reading it failed otherwise.
    Read,
    /// Writing it failed.
    Write,
    /// It was written, but reading it back found other content.
    Verify,
    /// The snapshot's entry is not acceptable here (a bad name, too many entries).
    Rejected,
}

impl EntryErrorKind {
    /// The kind of a failure to read a source entry.
    pub(crate) fn of_read(e: &std::io::Error) -> EntryErrorKind {
        match e.kind() {
            std::io::ErrorKind::NotFound => EntryErrorKind::Vanished,
            std::io::ErrorKind::PermissionDenied => EntryErrorKind::Denied,
            _ => EntryErrorKind::Read,
        }
    }
}

/// One entry an operation could not process. Ordered by path, then message, like the
/// `(path, message)` pairs it replaces, and serialized as that pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{path}: {message}")]
pub struct EntryError {
    pub path: String,
    pub message: String,
    pub kind: EntryErrorKind,
}

impl EntryError {
    pub(crate) fn new(
        kind: EntryErrorKind,
        path: impl Into<String>,
        message: impl ToString,
    ) -> Self {
        EntryError {
            path: path.into(),
            message: message.to_string(),
            kind,
        }
    }
}

impl Serialize for EntryError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.path)?;
        t.serialize_element(&self.message)?;
        t.end()
    }
}

/// Receives an operation's progress. Calls may come from several threads at once.
pub trait Observer: Send + Sync {
    /// The operation entered `phase`.
    fn phase(&self, _phase: Phase) {}
    /// What the counters will reach, when known in advance (zero fields: unknown).
    fn total(&self, _expected: Counters) {}
    /// Work done since the last call.
    fn add(&self, _done: Counters) {}
    /// The item being worked on (a path), for display.
    fn item(&self, _name: &str) {}
    /// An entry was left out; the operation goes on and lists it in its report.
    fn error(&self, _error: &EntryError) {}
}

/// Observes nothing: for tests and `--quiet`.
pub struct Quiet;

impl Observer for Quiet {}

/// An observer that keeps the entry errors it is told of, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct ErrorLog(std::sync::Mutex<Vec<EntryError>>);

#[cfg(test)]
impl ErrorLog {
    pub(crate) fn take(&self) -> Vec<EntryError> {
        std::mem::take(&mut self.0.lock().expect("error log"))
    }
}

#[cfg(test)]
impl Observer for ErrorLog {
    fn error(&self, e: &EntryError) {
        self.0.lock().expect("error log").push(e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_error_serializes_as_the_pair_it_replaces() {
        let e = EntryError::new(EntryErrorKind::Write, "a/b", "no space");
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"["a/b","no space"]"#);
        assert_eq!(e.to_string(), "a/b: no space");
    }

    #[test]
    fn a_vanished_file_is_told_from_a_refused_one() {
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        let refused = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(EntryErrorKind::of_read(&gone), EntryErrorKind::Vanished);
        assert_eq!(EntryErrorKind::of_read(&refused), EntryErrorKind::Denied);
    }
}
