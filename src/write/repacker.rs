//! Copying blobs out of packs into new ones: each blob is verified, then copied still sealed
//! (no re-compression; re-encryption only to move a legacy blob into a version 3 pack), so
//! prune and repair can rewrite packs cheaply.
use crate::backend::Kind;
use crate::repo::blob::{self, Sealed};
use crate::repo::indexfile::PackEntries;
use crate::repo::locked::Locked;
use crate::repo::pack::{BlobEntry, FinishedPack, PackBuilder, PackFormat};
use crate::repo::repository::{IndexedRepo, RepoError, Result};

/// Collects verified blobs into packs of the repository's pack size and format and writes
/// them.
pub(crate) struct Repacker<'r> {
    lock: &'r Locked<'r, IndexedRepo>,
    builder: PackBuilder,
    written: Vec<(PackEntries, u64)>,
}

impl<'r> Repacker<'r> {
    pub(crate) fn new(lock: &'r Locked<'r, IndexedRepo>) -> Repacker<'r> {
        Repacker {
            lock,
            builder: PackBuilder::new(PackFormat::for_version(lock.config().version)),
            written: Vec::new(),
        }
    }

    /// Verifies the blob `e` inside `pack_bytes` (the pack named `pack`, of `format`) and
    /// queues it; a blob that fails verification is an error naming it.
    pub(crate) fn copy(
        &mut self,
        pack: &str,
        format: PackFormat,
        pack_bytes: &[u8],
        e: &BlobEntry,
    ) -> Result<()> {
        let damaged = |reason: String| RepoError::Damaged {
            kind: Kind::Pack,
            name: pack.to_string(),
            reason: format!("blob {}: {reason}", e.id),
        };
        let stored =
            (self.lock.verified(format, pack_bytes, e)).map_err(|x| damaged(x.to_string()))?;
        let to = self.builder.format();
        let bytes = blob::reseal(self.lock.key(), format, to, e, stored)
            .map_err(|x| damaged(x.to_string()))?;
        self.builder.add(Sealed {
            id: e.id,
            ty: e.ty,
            bytes,
            raw_len: e.raw_length,
            compression: e.compression,
        });
        if self.builder.size() >= self.lock.config().pack_size as usize {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<()> {
        let fresh = PackBuilder::new(self.builder.format());
        let builder = std::mem::replace(&mut self.builder, fresh);
        let FinishedPack { bytes, listing } = builder.finish(self.lock.key());
        self.lock
            .put(Kind::Pack, &listing.pack.0.to_hex(), &bytes)?;
        self.written.push((listing, bytes.len() as u64));
        Ok(())
    }

    /// The packs written since the last call (or since the start), with their index entries
    /// and sizes, so that a caller copying many blobs need not hold all their entries.
    pub(crate) fn take_written(&mut self) -> Vec<(PackEntries, u64)> {
        std::mem::take(&mut self.written)
    }

    /// Writes what is queued; returns every pack written (and not taken) with its index
    /// entries and size.
    pub(crate) fn finish(mut self) -> Result<Vec<(PackEntries, u64)>> {
        if !self.builder.is_empty() {
            self.write()?;
        }
        Ok(self.written)
    }
}
