//! Reading many blobs by pack: the blobs wanted are located, grouped by the pack that holds
//! them, and each pack's neighbouring blobs are read with one ranged request, so a restore
//! makes about one request per pack it needs (as restic's does) rather than one per blob
//! or per file. The requests run on the backend's [`IoPool`], and each blob's plaintext
//! goes at once to every destination that wants it, so memory holds one request per thread
//! whatever the number of blobs. A blob that cannot be read this way is handed back, so the
//! caller reads it alone and gets its error.
use crate::backend::pool::IoPool;
use crate::cancel::Cancel;
use crate::index::Location;
use crate::repo::id::{BlobId, PackId};
use crate::repo::repository::IndexedRepo;
use rayon::prelude::*;
use std::collections::HashMap;

/// Blobs closer than this in a pack are read with one request, the bytes between them
/// read and dropped: on a network that costs less than another round trip.
const GAP: u64 = 1 << 20;

/// A run of blobs stops growing once it spans this much (a default pack), so one request
/// holds at most this plus one gap and one blob, and a whole pack, which ends with the blob
/// that took it past its target size, is still one request.
const MAX_REQUEST: u64 = 16 << 20;

/// A blob to read, with every destination that wants its plaintext.
struct Wanted<D> {
    loc: Location,
    dests: Vec<D>,
}

/// Neighbouring blobs of one pack, read with one request.
struct Run<D> {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<Wanted<D>>,
}

/// Reads each distinct blob of `wanted` once, by pack, and calls `deliver` with its
/// plaintext and every destination that asked for it. Returns the blobs it did not
/// deliver, with their destinations: those the index does not know, those whose request
/// failed or that do not open, and all that were left once `cancel` was cancelled.
pub(crate) fn read_by_pack<D: Send>(
    repo: &IndexedRepo,
    wanted: impl IntoIterator<Item = (BlobId, D)>,
    cancel: &Cancel,
    deliver: impl Fn(&[u8], &[D]) + Sync,
) -> Vec<(BlobId, Vec<D>)> {
    let (located, mut unread) = locate(repo, wanted);
    let runs = runs(located);
    let read = || {
        (runs.into_par_iter())
            .flat_map_iter(|run| read_run(repo, run, cancel, &deliver))
            .collect::<Vec<_>>()
    };
    unread.extend(IoPool::for_backend(repo.backend()).install(read));
    unread
}

/// The wanted blobs the index locates, each once with all its destinations, and the rest.
#[allow(clippy::type_complexity)]
fn locate<D>(
    repo: &IndexedRepo,
    wanted: impl IntoIterator<Item = (BlobId, D)>,
) -> (Vec<Wanted<D>>, Vec<(BlobId, Vec<D>)>) {
    let mut by_id: HashMap<BlobId, Vec<D>> = HashMap::new();
    for (id, dest) in wanted {
        by_id.entry(id).or_default().push(dest);
    }
    let mut located = Vec::with_capacity(by_id.len());
    let mut unknown = Vec::new();
    for (id, dests) in by_id {
        match repo.locate(&id) {
            Ok(loc) => located.push(Wanted { loc, dests }),
            Err(_) => unknown.push((id, dests)),
        }
    }
    (located, unknown)
}

/// Groups `located` into runs of neighbouring blobs of one pack.
fn runs<D>(mut located: Vec<Wanted<D>>) -> Vec<Run<D>> {
    located.sort_by_key(|w| (w.loc.pack, w.loc.entry.offset));
    let mut runs: Vec<Run<D>> = Vec::new();
    for w in located {
        let (start, end) = span(&w.loc);
        match runs.last_mut() {
            Some(run)
                if run.pack == w.loc.pack
                    && start <= run.end + GAP
                    && run.end - run.start < MAX_REQUEST =>
            {
                run.end = run.end.max(end);
                run.blobs.push(w);
            }
            _ => runs.push(Run {
                pack: w.loc.pack,
                start,
                end,
                blobs: vec![w],
            }),
        }
    }
    runs
}

fn span(loc: &Location) -> (u64, u64) {
    let start = loc.entry.offset as u64;
    (start, start + loc.entry.length as u64)
}

/// Reads one run and delivers the blobs that open; returns the others.
fn read_run<D>(
    repo: &IndexedRepo,
    run: Run<D>,
    cancel: &Cancel,
    deliver: &(impl Fn(&[u8], &[D]) + Sync),
) -> Vec<(BlobId, Vec<D>)> {
    let unread = |blobs: Vec<Wanted<D>>| blobs.into_iter().map(|w| (w.loc.entry.id, w.dests));
    if cancel.is_cancelled() {
        return unread(run.blobs).collect();
    }
    let name = run.pack.0.to_hex();
    let got = (repo.backend()).get_range(
        crate::backend::Kind::Pack,
        &name,
        run.start,
        run.end - run.start,
    );
    let whole = |b: &Vec<u8>| b.len() as u64 == run.end - run.start;
    let Some(bytes) = got.ok().filter(whole) else {
        return unread(run.blobs).collect();
    };
    let mut left = Vec::new();
    for w in run.blobs {
        let (start, end) = span(&w.loc);
        let stored = bytes[(start - run.start) as usize..(end - run.start) as usize].to_vec();
        match repo.open_blob(w.loc.format, &w.loc.entry, stored) {
            Ok(plain) if !cancel.is_cancelled() => deliver(&plain, &w.dests),
            _ => left.push((w.loc.entry.id, w.dests)),
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Kind;
    use crate::repo::blob::BlobType;
    use crate::repo::locked::exclusive;
    use crate::write::packer::Packer;
    use crate::write::packer::tests::{indexed_repo, random_blob};
    use std::sync::Mutex;

    #[test]
    fn delivers_every_located_blob_once_to_all_its_destinations_and_hands_back_the_rest() {
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
        let wanted = (ids.iter().enumerate())
            .chain(ids.iter().enumerate().map(|(i, id)| (i + 100, id)))
            .map(|(dest, id)| (*id, dest))
            .chain([(unknown, 999)]);
        let got = Mutex::new(HashMap::new());
        let deliver = |plain: &[u8], dests: &[usize]| {
            for d in dests {
                assert!(got.lock().unwrap().insert(*d, plain.to_vec()).is_none());
            }
        };
        let mut left = read_by_pack(&repo, wanted, &Cancel::default(), deliver);
        let got = got.into_inner().unwrap();
        assert_eq!(got.len(), 78);
        for (i, plain) in blobs.iter().enumerate().skip(1) {
            assert_eq!(got[&i], *plain);
            assert_eq!(got[&(i + 100)], *plain);
        }
        left.sort_by_key(|(_, dests)| dests[0]);
        assert_eq!(left, vec![(ids[0], vec![0, 100]), (unknown, vec![999])]);

        let cancelled = Cancel::default();
        cancelled.cancel();
        let wanted = ids.iter().map(|id| (*id, ()));
        let left = read_by_pack(&repo, wanted, &cancelled, |_, _| panic!("cancelled"));
        assert_eq!(left.len(), ids.len());
    }

    fn wanted(pack: u8, offset: u32, length: u32) -> Wanted<()> {
        let entry = crate::repo::pack::BlobEntry {
            ty: BlobType::Data,
            id: BlobId(crate::repo::id::Id::hash_of(&offset.to_le_bytes())),
            offset,
            length,
            raw_length: length,
            compression: crate::repo::blob::Compression::None,
        };
        let loc = Location {
            pack: PackId(crate::repo::id::Id::hash_of(&[pack])),
            format: crate::repo::pack::PackFormat::for_version(3),
            entry,
        };
        Wanted {
            loc,
            dests: vec![()],
        }
    }

    #[test]
    fn runs_merge_near_blobs_of_one_pack_up_to_the_request_limit() {
        let far = GAP as u32 + 1000;
        let big = MAX_REQUEST as u32 / 2;
        let located = vec![
            wanted(1, 100, 50),
            wanted(1, 0, 100),
            wanted(1, 150 + far, 10),
            wanted(2, 0, 10),
            wanted(3, 0, big),
            wanted(3, big, big),
            wanted(3, 2 * big, 1),
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
