//! Reading many blobs by pack: the blobs wanted are located, grouped by the pack that holds
//! them, and each pack's nearby blobs are read with one ranged request; the requests run on
//! the backend's [`IoPool`]. Over a network this turns one round trip per
//! blob into one per run of neighbouring blobs. A blob that cannot be read is left out, so
//! the caller reads it alone and gets its error.
use crate::backend::pool::IoPool;
use crate::cancel::Cancel;
use crate::index::Location;
use crate::repo::id::{BlobId, PackId};
use crate::repo::repository::IndexedRepo;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;

/// Blobs closer than this in a pack are read with one request, the bytes between them
/// read and dropped: cheaper than another round trip.
const GAP: u64 = 256 << 10;

/// The longest request: a run of blobs is cut there, so requests stay parallel and no one
/// request holds much memory.
const MAX_REQUEST: u64 = 8 << 20;

/// The most plaintext bytes a caller reads ahead at once (see [`windows`]).
pub(crate) const WINDOW: u64 = 32 << 20;

/// Consecutive ranges of the items weighing `weights`, each weighing at most [`WINDOW`]
/// unless it is a single heavier item.
pub(crate) fn windows(weights: impl Iterator<Item = u64>) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut weight = 0;
    for (i, w) in weights.enumerate() {
        match ranges.last_mut() {
            Some(r) if weight + w <= WINDOW => {
                r.end = i + 1;
                weight += w;
            }
            _ => {
                ranges.push(i..i + 1);
                weight = w;
            }
        }
    }
    ranges
}

/// Plaintexts of blobs read ahead of their use.
#[derive(Default)]
pub(crate) struct Prefetched {
    blobs: HashMap<BlobId, Vec<u8>>,
}

/// Neighbouring blobs of one pack, read with one request.
struct Run {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<Location>,
}

impl Prefetched {
    /// Reads the blobs `ids` (repeats are read once) by pack. Stops early, with what it
    /// has, once `cancel` is cancelled.
    pub(crate) fn load(
        repo: &IndexedRepo,
        ids: impl IntoIterator<Item = BlobId>,
        cancel: &Cancel,
    ) -> Prefetched {
        let runs = runs(locate(repo, ids));
        let read = || {
            (runs.par_iter())
                .filter(|_| !cancel.is_cancelled())
                .flat_map_iter(|run| read_run(repo, run))
                .collect()
        };
        Prefetched {
            blobs: IoPool::for_backend(repo.backend()).install(read),
        }
    }

    pub(crate) fn has(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub(crate) fn get(&self, id: &BlobId) -> Option<&[u8]> {
        self.blobs.get(id).map(Vec::as_slice)
    }
}

/// Where each distinct blob is; blobs the index does not know are left out.
fn locate(repo: &IndexedRepo, ids: impl IntoIterator<Item = BlobId>) -> Vec<Location> {
    let mut seen = std::collections::HashSet::new();
    (ids.into_iter())
        .filter(|id| seen.insert(*id))
        .filter_map(|id| repo.locate(&id).ok())
        .collect()
}

/// Groups `located` into runs of neighbouring blobs of one pack.
fn runs(mut located: Vec<Location>) -> Vec<Run> {
    located.sort_by_key(|l| (l.pack, l.entry.offset));
    let mut runs: Vec<Run> = Vec::new();
    for loc in located {
        let (start, end) = span(&loc);
        match runs.last_mut() {
            Some(run)
                if run.pack == loc.pack
                    && start <= run.end + GAP
                    && end.max(run.end) - run.start <= MAX_REQUEST =>
            {
                run.end = run.end.max(end);
                run.blobs.push(loc);
            }
            _ => runs.push(Run {
                pack: loc.pack,
                start,
                end,
                blobs: vec![loc],
            }),
        }
    }
    runs
}

fn span(loc: &Location) -> (u64, u64) {
    let start = loc.entry.offset as u64;
    (start, start + loc.entry.length as u64)
}

/// The run's blobs that read and open; none if the request fails.
fn read_run(repo: &IndexedRepo, run: &Run) -> Vec<(BlobId, Vec<u8>)> {
    let name = run.pack.0.to_hex();
    let backend = repo.backend();
    let Ok(bytes) = backend.get_range(
        crate::backend::Kind::Pack,
        &name,
        run.start,
        run.end - run.start,
    ) else {
        return Vec::new();
    };
    (run.blobs.iter())
        .filter_map(|loc| {
            let (start, end) = span(loc);
            let stored = bytes[(start - run.start) as usize..(end - run.start) as usize].to_vec();
            let plain = repo.open_blob(loc.format, &loc.entry, stored).ok()?;
            Some((loc.entry.id, plain))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Kind;
    use crate::repo::blob::BlobType;
    use crate::repo::locked::exclusive;
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};

    #[test]
    fn reads_every_located_blob_once_and_leaves_out_unknown_and_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let blobs: Vec<Vec<u8>> = (0..40).map(random_blob).collect();
        let ids: Vec<BlobId> = (blobs.iter())
            .map(|b| packer.save(BlobType::Data, b).unwrap().0)
            .collect();
        packer.flush().unwrap();
        assert!(repo.backend().list(Kind::Pack).unwrap().len() > 1);

        let damaged = repo.locate(&ids[0]).unwrap();
        let name = damaged.pack.0.to_hex();
        let path = dir.path().join("repo/data").join(&name[..2]).join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[damaged.entry.offset as usize + 20] ^= 1;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();

        let unknown = repo.key().blob_id(b"never stored");
        let wanted = ids.iter().chain(&ids).copied().chain([unknown]);
        let got = Prefetched::load(&repo, wanted, &Cancel::default());
        for (id, plain) in ids.iter().zip(&blobs).skip(1) {
            assert_eq!(got.get(id), Some(plain.as_slice()));
        }
        assert_eq!(got.get(&ids[0]), None);
        assert_eq!(got.get(&unknown), None);
        assert_eq!(got.blobs.len(), 39);

        let cancelled = Cancel::default();
        cancelled.cancel();
        assert!(
            Prefetched::load(&repo, ids.clone(), &cancelled)
                .blobs
                .is_empty()
        );
    }

    fn loc(pack: u8, offset: u32, length: u32) -> Location {
        let entry = crate::repo::pack::BlobEntry {
            ty: BlobType::Data,
            id: BlobId(crate::repo::id::Id::hash_of(&offset.to_le_bytes())),
            offset,
            length,
            raw_length: length,
            compression: crate::repo::blob::Compression::None,
        };
        Location {
            pack: PackId(crate::repo::id::Id::hash_of(&[pack])),
            format: crate::repo::pack::PackFormat::for_version(3),
            entry,
        }
    }

    #[test]
    fn windows_weigh_at_most_the_window_unless_one_item_is_heavier() {
        let w = WINDOW;
        let got = windows([1, w - 1, 1, 2 * w, 3, 4].into_iter());
        assert_eq!(got, vec![0..2, 2..3, 3..4, 4..6]);
        assert!(windows(std::iter::empty()).is_empty());
    }

    #[test]
    fn runs_merge_near_blobs_of_one_pack_up_to_the_request_limit() {
        let far = GAP as u32 + 1000;
        let big = MAX_REQUEST as u32 / 2;
        let located = vec![
            loc(1, 100, 50),
            loc(1, 0, 100),
            loc(1, 150 + far, 10),
            loc(2, 0, 10),
            loc(3, 0, big),
            loc(3, big, big),
            loc(3, 2 * big, 1),
        ];
        let spans: Vec<(u64, u64, usize)> = runs(located)
            .iter()
            .map(|r| (r.start, r.end, r.blobs.len()))
            .collect();
        let (b, far) = (big as u64, far as u64);
        assert_eq!(spans.len(), 5, "{spans:?}");
        assert!(spans.contains(&(0, 150, 2)));
        assert!(spans.contains(&(150 + far, 160 + far, 1)));
        assert!(spans.contains(&(0, 10, 1)));
        assert!(spans.contains(&(0, 2 * b, 2)));
        assert!(spans.contains(&(2 * b, 2 * b + 1, 1)));
    }
}
