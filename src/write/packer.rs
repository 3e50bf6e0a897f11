//! Saving blobs: deduplicates against the index and this run, seals new blobs, groups them
//! into packs by type, writes full packs, and writes index files for written packs in
//! batches so memory stays bounded however much is saved. One data pack and one tree pack
//! are open at a time; the archiver's workers save chunks of several files concurrently, so
//! a data pack mixes the files backed up around the same time. Full packs go to the
//! backend's [`Uploader`] pool (as many uploads at once as the backend has connections), and
//! a pack enters an index batch only once it is stored. Small data blobs go through
//! the dictionary [`Trainer`] first (see [`crate::write::trainer`]).
use crate::backend::Kind;
use crate::cancel::Cancel;
use crate::index::idfilter::IdFilter;
use crate::observer::{Counters, Observer, Quiet};
use crate::repo::blob::{self, BlobType, Compression, Sealed};
use crate::repo::crypto::OVERHEAD;
use crate::repo::dictionary::{self, DictId};
use crate::repo::id::{BlobId, Id, TreeId};
use crate::repo::indexfile::{IndexBatch, PackEntries};
use crate::repo::locked::Locked;
use crate::repo::pack::{FinishedPack, PackBuilder, PackFormat};
use crate::repo::repository::{IndexedRepo, Result};
use crate::repo::tree::Tree;
use crate::write::trainer::{Current, Limits, Offer, SMALL_BLOB, Samples, Trainer};
use crate::write::uploader::Uploader;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Once this many blobs of a run turned out new, the packer loads a filter of the index's
/// ids so that further new blobs cost no index query (a run adding nothing never loads it).
const FILTER_AFTER_MISSES: u32 = 1024;

/// Indexes with more blobs than this are queried blob by blob instead: the filter would
/// take over 16 MiB.
const FILTER_MAX_BLOBS: u64 = 4_000_000;

/// What the packer added to the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackerStats {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Stored (sealed) bytes of new blobs.
    pub bytes: u64,
    /// Plaintext bytes of new blobs.
    pub raw_bytes: u64,
    pub packs: u64,
    /// Of those, the blobs compressed with a dictionary: how many, their stored bytes and
    /// their plaintext bytes.
    pub dict_blobs: u64,
    pub dict_bytes: u64,
    pub dict_raw_bytes: u64,
    /// Dictionaries trained and stored by this run.
    pub dictionaries: u64,
}

#[derive(Default)]
struct Unindexed {
    /// Blobs saved by this run that no index file lists yet (sealed or already in a pack).
    ids: HashSet<BlobId>,
    packs: IndexBatch,
    filter: Filter,
}

/// Which ids the index may hold, as far as this run knows. Blobs other processes index
/// meanwhile are missed, so at worst stored twice, as with any two concurrent backups.
enum Filter {
    /// Not loaded yet: every id is looked up in the index.
    Pending {
        misses: u32,
    },
    Loaded(IdFilter),
    /// The index is too large to filter in bounded memory.
    Off,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter::Pending { misses: 0 }
    }
}

impl Filter {
    fn may_contain(&self, id: &BlobId) -> bool {
        match self {
            Filter::Loaded(f) => f.may_contain(id),
            Filter::Pending { .. } | Filter::Off => true,
        }
    }

    /// Records that the index lacked an id; true when the filter should now be loaded.
    fn missed(&mut self) -> bool {
        match self {
            Filter::Pending { misses } => {
                *misses += 1;
                *misses >= FILTER_AFTER_MISSES
            }
            Filter::Loaded(_) | Filter::Off => false,
        }
    }

    /// Adds ids that just got indexed; a filter grown past its size is dropped, to be
    /// loaded again, larger, after as many misses again.
    fn indexed<'a>(&mut self, ids: impl Iterator<Item = &'a BlobId>) {
        if let Filter::Loaded(f) = self {
            ids.for_each(|id| f.insert(id));
            if f.is_full() {
                *self = Filter::default();
            }
        }
    }
}

pub struct Packer<'r> {
    lock: &'r Locked<'r, IndexedRepo>,
    dry_run: bool,
    format: PackFormat,
    /// The open data pack, then the open tree pack.
    open: [Mutex<PackBuilder>; 2],
    unindexed: Mutex<Unindexed>,
    counters: [AtomicU64; 9],
    /// What the trainer samples and watches.
    limits: Limits,
    /// Dictionary training for small data blobs (None: the repository has dictionaries off),
    /// set up when the first new small data blob arrives, so a run that stores none reads
    /// no dictionary.
    trainer: OnceLock<Option<Trainer>>,
    /// Started when the first pack is written (never in a dry run).
    uploader: OnceLock<Uploader>,
    /// Once cancelled, `save` refuses new blobs.
    cancel: Cancel,
    /// Told of every blob stored and every pack written.
    observer: &'r dyn Observer,
}

impl<'r> Packer<'r> {
    /// With `dry_run`, blobs are sealed and counted but nothing is written.
    pub fn new(lock: &'r Locked<'r, IndexedRepo>, dry_run: bool) -> Packer<'r> {
        Packer::with_limits(lock, dry_run, Limits::from_env())
    }

    /// [`Packer::new`] with dictionary training on `limits`.
    pub(crate) fn with_limits(
        lock: &'r Locked<'r, IndexedRepo>,
        dry_run: bool,
        limits: Limits,
    ) -> Packer<'r> {
        let format = PackFormat::for_version(lock.config().version);
        Packer {
            lock,
            dry_run,
            format,
            open: std::array::from_fn(|_| Mutex::new(PackBuilder::new(format))),
            unindexed: Default::default(),
            counters: Default::default(),
            limits,
            trainer: OnceLock::new(),
            uploader: OnceLock::new(),
            cancel: Cancel::default(),
            observer: &Quiet,
        }
    }

    /// A packer whose `save` fails with `Cancelled` once `cancel` is cancelled.
    pub(crate) fn cancelled_by(mut self, cancel: &Cancel) -> Packer<'r> {
        self.cancel = cancel.clone();
        self
    }

    /// A packer that tells `observer` of each blob it stores (`bytes_added`, `blobs`) and
    /// each pack it writes (`packs`), as its stats will count them.
    pub(crate) fn observed_by(mut self, observer: &'r dyn Observer) -> Packer<'r> {
        self.observer = observer;
        self
    }

    pub(crate) fn repo(&self) -> &'r IndexedRepo {
        self.lock.repo()
    }

    /// The lock the packer writes under, for the writes that follow its flush (a snapshot).
    pub(crate) fn locked(&self) -> &'r Locked<'r, IndexedRepo> {
        self.lock
    }

    /// Saves `plain` unless an identical blob is already stored; returns its id and whether
    /// it was new.
    pub fn save(&self, ty: BlobType, plain: &[u8]) -> Result<(BlobId, bool)> {
        self.cancel.check()?;
        let id = self.repo().key().blob_id(plain);
        if !self.claim(id)? {
            return Ok((id, false));
        }
        let small = ty == BlobType::Data && plain.len() <= SMALL_BLOB;
        if let Some(t) = small.then(|| self.trainer()).flatten() {
            match t.offer(id, plain) {
                Offer::Held => {}
                Offer::Seal(dict) => {
                    let sealed = self.seal(ty, id, plain, dict.as_deref());
                    if dict.is_some() {
                        t.observe(plain, (sealed.bytes.len() - OVERHEAD) as u64);
                    }
                    self.add(sealed)?;
                }
                Offer::Train(samples) => self.train(t, samples)?,
            }
            return Ok((id, true));
        }
        self.add(self.seal(ty, id, plain, None))?;
        Ok((id, true))
    }

    /// Saves a directory's tree; returns its id and whether it was new.
    pub fn save_tree(&self, tree: &Tree) -> Result<(TreeId, bool)> {
        let (id, new) = self.save(BlobType::Tree, &tree.encode())?;
        Ok((TreeId(id.0), new))
    }

    fn trainer(&self) -> Option<&Trainer> {
        self.trainer
            .get_or_init(|| trainer_for(self.repo(), self.format, self.limits))
            .as_ref()
    }

    fn seal(&self, ty: BlobType, id: BlobId, plain: &[u8], dict: Option<&Current>) -> Sealed {
        let level = self.repo().config().compression;
        let dict = dict.map(|c| &c.enc);
        blob::seal_with(self.repo().key(), self.format, ty, id, plain, level, dict)
    }

    /// Trains a dictionary on `samples` (stored unless this is a dry run), then seals the
    /// samples, and the small blobs held back meanwhile, with it (or with the dictionary in
    /// use if it is not kept).
    fn train(&self, t: &Trainer, samples: Samples) -> Result<()> {
        let store = |name: &Id, sealed: &[u8]| -> Result<()> {
            if !self.dry_run {
                let name = name.to_hex();
                self.lock.put(Kind::Dictionary, &name, sealed)?;
            }
            self.counters[8].fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        let (current, held) = t.train(&samples, store, self.repo().key())?;
        self.seal_samples(samples, current.as_deref())?;
        self.seal_samples(held, current.as_deref())
    }

    fn seal_samples(&self, samples: Samples, dict: Option<&Current>) -> Result<()> {
        for (id, plain) in samples.iter() {
            self.add(self.seal(BlobType::Data, id, plain, dict))?;
        }
        Ok(())
    }

    /// Puts a sealed blob into its open pack, writing the pack once it is full.
    fn add(&self, sealed: Sealed) -> Result<()> {
        let ty = sealed.ty;
        self.count(&sealed);
        let full = {
            let mut open = self.open[self.slot(ty)].lock().expect("pack lock");
            open.add(sealed);
            (open.size() >= self.repo().config().pack_size as usize)
                .then(|| std::mem::replace(&mut *open, PackBuilder::new(self.format)))
        };
        if let Some(builder) = full {
            self.write_pack(builder, ty)?;
        }
        Ok(())
    }

    /// The open pack a blob of type `ty` goes to.
    fn slot(&self, ty: BlobType) -> usize {
        usize::from(ty == BlobType::Tree)
    }

    /// True when this caller must store `id`: it is neither indexed nor claimed by this run.
    fn claim(&self, id: BlobId) -> Result<bool> {
        let maybe_indexed = {
            let u = self.unindexed.lock().expect("packer lock");
            if u.ids.contains(&id) {
                return Ok(false);
            }
            u.filter.may_contain(&id)
        };
        if maybe_indexed && self.repo().index().contains(&id)? {
            return Ok(false);
        }
        let mut u = self.unindexed.lock().expect("packer lock");
        if maybe_indexed && u.filter.missed() {
            u.filter = self.load_filter()?;
        }
        Ok(u.ids.insert(id))
    }

    /// Called with the packer lock held, so that no index file this run writes meanwhile
    /// can fall between the filter and the in-memory set.
    fn load_filter(&self) -> Result<Filter> {
        let index = self.repo().index();
        let (blobs, _) = index.counts()?;
        if blobs > FILTER_MAX_BLOBS {
            return Ok(Filter::Off);
        }
        let mut filter = IdFilter::with_capacity(2 * blobs as usize);
        index.for_each_id(|id| filter.insert(id))?;
        Ok(Filter::Loaded(filter))
    }

    fn count(&self, sealed: &Sealed) {
        let [data, tree, b, r, _, db, dbytes, draw, _] = &self.counters;
        let (bytes, raw) = (sealed.bytes.len() as u64, sealed.raw_len as u64);
        match sealed.ty {
            BlobType::Data => data.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => tree.fetch_add(1, Ordering::Relaxed),
        };
        b.fetch_add(bytes, Ordering::Relaxed);
        r.fetch_add(raw, Ordering::Relaxed);
        self.observer.add(Counters {
            bytes_added: bytes,
            blobs: 1,
            ..Counters::default()
        });
        if let Compression::Dictionary(_) = sealed.compression {
            db.fetch_add(1, Ordering::Relaxed);
            dbytes.fetch_add(bytes, Ordering::Relaxed);
            draw.fetch_add(raw, Ordering::Relaxed);
        }
    }

    /// Hands a full pack of `ty` blobs to the upload pool (keeping a tree pack in the local
    /// cache of a remote repository too: it is only read once an index lists it, so after its
    /// upload), and indexes the packs the pool has stored meanwhile.
    fn write_pack(&self, builder: PackBuilder, ty: BlobType) -> Result<()> {
        let FinishedPack { bytes, listing } = builder.finish(self.repo().key());
        if self.dry_run {
            return self.stored(vec![listing]);
        }
        if ty == BlobType::Tree {
            let name = listing.pack.0.to_hex();
            self.repo().cache_written(Kind::Pack, &name, &bytes);
        }
        let uploader = self.uploader.get_or_init(|| {
            let backend = self.repo().shared_backend();
            let connections = backend.connections();
            Uploader::start(backend, connections)
        });
        uploader.submit(bytes, listing)?;
        self.stored(uploader.take_stored())
    }

    /// Counts packs now durable and adds them to the index batch, writing an index file
    /// whenever a batch is full.
    fn stored(&self, packs: Vec<PackEntries>) -> Result<()> {
        for listing in packs {
            self.counters[4].fetch_add(1, Ordering::Relaxed);
            self.observer.add(Counters::packs(1));
            let batch = self
                .unindexed
                .lock()
                .expect("packer lock")
                .packs
                .push(listing);
            if let Some(packs) = batch {
                self.write_index(packs)?;
            }
        }
        Ok(())
    }

    /// Writes an index file for `packs`; only then may their ids leave the in-memory set,
    /// since from then on the SQLite index answers for them.
    fn write_index(&self, packs: Vec<PackEntries>) -> Result<()> {
        if !self.dry_run {
            self.lock.save_index_file(&packs)?;
        }
        let mut u = self.unindexed.lock().expect("packer lock");
        if !self.dry_run {
            let ids = || packs.iter().flat_map(|p| &p.blobs).map(|b| &b.id);
            u.filter.indexed(ids());
            for id in ids() {
                u.ids.remove(id);
            }
        }
        Ok(())
    }

    /// Writes the open packs and an index file for everything not yet indexed. After this
    /// returns, every blob saved so far is durable and indexed.
    pub fn flush(&self) -> Result<PackerStats> {
        if let Some(t) = self.trainer.get().and_then(Option::as_ref) {
            match t.take_held() {
                Some(Ok(enough)) => self.train(t, enough)?,
                Some(Err(few)) => self.seal_samples(few, t.current().as_deref())?,
                None => {}
            }
        }
        for (slot, ty) in self.open.iter().zip([BlobType::Data, BlobType::Tree]) {
            let fresh = PackBuilder::new(self.format);
            let builder = std::mem::replace(&mut *slot.lock().expect("pack lock"), fresh);
            if !builder.is_empty() {
                self.write_pack(builder, ty)?;
            }
        }
        if let Some(uploader) = self.uploader.get() {
            self.stored(uploader.finish()?)?;
        }
        let packs = self.unindexed.lock().expect("packer lock").packs.take();
        if !packs.is_empty() {
            self.write_index(packs)?;
        }
        Ok(self.stats())
    }

    pub(crate) fn stats(&self) -> PackerStats {
        let [d, t, b, r, p, db, dbytes, draw, dicts] = &self.counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PackerStats {
            data_blobs: get(d),
            tree_blobs: get(t),
            bytes: get(b),
            raw_bytes: get(r),
            packs: get(p),
            dict_blobs: get(db),
            dict_bytes: get(dbytes),
            dict_raw_bytes: get(draw),
            dictionaries: get(dicts),
        }
    }
}

/// The trainer of a packer writing `format` packs into `repo`: none unless the repository
/// has dictionaries on (and compresses); it starts with the newest stored dictionary that
/// opens.
fn trainer_for(repo: &IndexedRepo, format: PackFormat, limits: Limits) -> Option<Trainer> {
    let config = repo.config();
    if !config.dictionaries || config.compression == 0 || format != PackFormat::V3 {
        return None;
    }
    let known: HashMap<DictId, Vec<Id>> = dictionary::list(repo.backend()).unwrap_or_default();
    let newest = known
        .iter()
        .filter(|(id, names)| **id != 0 && names.len() == 1)
        .filter_map(|(id, _)| repo.dictionary(*id).ok())
        .max_by_key(|d| (d.meta.created, d.name));
    let current = newest.and_then(|d| {
        let enc = blob::EncoderDict::new(
            dictionary::id_of(&d.name),
            &d.meta.bytes,
            config.compression,
        );
        Some(Arc::new(Current {
            enc: enc.ok()?,
            ratio: d.meta.dict_ratio,
            plain_ratio: d.meta.plain_ratio,
        }))
    });
    Some(Trainer::new(limits, config.compression, current, known))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::repo::config::{ChunkerParams, Config};
    use crate::repo::id::PackId;
    use crate::repo::key::KdfParams;
    use crate::repo::repository::Repository;
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;

    /// A fresh repository with small packs, indexed in memory (lock it with
    /// `crate::repo::locked::exclusive` to write).
    pub(crate) fn indexed_repo(dir: &Path, pack_size: u32) -> IndexedRepo {
        let backend = Arc::new(LocalBackend::new(dir.join("repo")));
        let config = Config::new(ChunkerParams::FILES, pack_size, 3);
        let repo = Repository::init(backend, b"pw", config, KdfParams::new(64, 1)).unwrap();
        repo.open_index(None).unwrap()
    }

    pub(crate) fn random_blob(seed: u32) -> Vec<u8> {
        let mut out = vec![0u8; 1000];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn saves_dedupes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let blobs: Vec<Vec<u8>> = (0..50u32).map(random_blob).collect();
        let ids: Vec<BlobId> = blobs
            .iter()
            .map(|b| packer.save(BlobType::Data, b).unwrap())
            .map(|(id, new)| {
                assert!(new);
                id
            })
            .collect();
        assert!(
            !packer.save(BlobType::Data, &blobs[3]).unwrap().1,
            "duplicate in the same run"
        );
        let stats = packer.flush().unwrap();
        assert_eq!(stats.data_blobs, 50);
        assert!(stats.packs > 1, "small packs split: {stats:?}");
        for (id, plain) in ids.iter().zip(&blobs) {
            assert_eq!(&repo.read_blob(id).unwrap(), plain);
        }
        let again = Packer::new(&lock, false);
        assert!(
            !again.save(BlobType::Data, &blobs[0]).unwrap().1,
            "duplicate of an indexed blob"
        );
        assert_eq!(repo.backend().list(Kind::Index).unwrap().len(), 1);
    }

    #[test]
    fn blobs_indexed_before_and_after_the_filter_loads_are_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let total = FILTER_AFTER_MISSES + 100;
        let save = |seed| packer.save(BlobType::Data, &random_blob(seed)).unwrap().1;
        assert!((0..100).all(save));
        packer.flush().unwrap();
        let filter_loaded = || {
            let u = packer.unindexed.lock().unwrap();
            matches!(u.filter, Filter::Loaded(_))
        };
        assert!(
            !filter_loaded(),
            "loaded before {FILTER_AFTER_MISSES} misses"
        );
        assert!((100..total).all(save));
        assert!(filter_loaded());
        packer.flush().unwrap();
        let stored_again: Vec<u32> = (0..total).filter(|&seed| save(seed)).collect();
        assert!(
            stored_again.is_empty(),
            "{} stored twice, the first from seed {:?}",
            stored_again.len(),
            stored_again.first()
        );
        assert_eq!(packer.flush().unwrap().data_blobs, total as u64);
    }

    #[test]
    fn data_blobs_share_a_pack_and_trees_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        for seed in 0..40 {
            packer.save(BlobType::Data, &random_blob(seed)).unwrap();
        }
        packer.save(BlobType::Tree, b"a tree").unwrap();
        assert_eq!(packer.flush().unwrap().packs, 2, "a data pack, a tree pack");
        let mut per_pack: HashMap<PackId, Vec<BlobType>> = HashMap::new();
        repo.index()
            .for_each(|loc| per_pack.entry(loc.pack).or_default().push(loc.entry.ty))
            .unwrap();
        assert!(
            per_pack
                .values()
                .any(|types| types == &[BlobType::Data; 40])
        );
        assert!(per_pack.values().any(|types| types == &[BlobType::Tree]));
    }

    #[test]
    fn dry_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 4096);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, true);
        packer.save(BlobType::Data, &[1u8; 10000]).unwrap();
        assert_eq!(packer.flush().unwrap().data_blobs, 1);
        assert!(repo.backend().list(Kind::Pack).unwrap().is_empty());
        assert!(repo.backend().list(Kind::Index).unwrap().is_empty());
    }

    fn page(i: u32) -> Vec<u8> {
        crate::write::trainer::tests::text_file(0, i)
    }

    #[test]
    fn small_blobs_are_held_until_a_dictionary_is_trained_then_stored_once_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let limits = Limits {
            sample_blobs: 64,
            min_samples: 32,
            window_blobs: 64,
            ..Limits::DEFAULT
        };
        let packer = Packer::with_limits(&lock, false, limits);
        let ids: Vec<BlobId> = (0..100)
            .map(|i| packer.save(BlobType::Data, &page(i)).unwrap().0)
            .collect();
        assert!(
            !packer.save(BlobType::Data, &page(3)).unwrap().1,
            "a held-back blob is not stored twice"
        );
        let stats = packer.flush().unwrap();
        assert_eq!(
            (stats.data_blobs, stats.dictionaries),
            (100, 1),
            "{stats:?}"
        );
        assert_eq!(
            stats.dict_blobs, 100,
            "samples and later blobs use it: {stats:?}"
        );
        assert!(stats.dict_bytes * 2 < stats.dict_raw_bytes, "{stats:?}");
        assert_eq!(repo.backend().list(Kind::Dictionary).unwrap().len(), 1);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.read_blob(id).unwrap(), page(i as u32));
        }
        let again = Packer::with_limits(&lock, false, limits);
        again.save(BlobType::Data, &page(500)).unwrap();
        let stats = again.flush().unwrap();
        assert_eq!(
            (stats.dict_blobs, stats.dictionaries),
            (1, 0),
            "the next run uses the stored dictionary: {stats:?}"
        );
    }

    #[test]
    fn too_few_small_blobs_are_stored_without_a_dictionary_and_dry_runs_store_none() {
        let dir = tempfile::tempdir().unwrap();
        let repo = indexed_repo(dir.path(), 1 << 20);
        let lock = crate::repo::locked::exclusive(&repo);
        let packer = Packer::new(&lock, false);
        let id = packer.save(BlobType::Data, &page(1)).unwrap().0;
        let stats = packer.flush().unwrap();
        assert_eq!((stats.data_blobs, stats.dict_blobs), (1, 0));
        assert_eq!(repo.read_blob(&id).unwrap(), page(1));
        let limits = Limits {
            sample_blobs: 40,
            ..Limits::DEFAULT
        };
        let dry = Packer::with_limits(&lock, true, limits);
        for i in 0..40 {
            dry.save(BlobType::Data, &page(i + 10)).unwrap();
        }
        assert_eq!(dry.flush().unwrap().dictionaries, 1);
        assert!(repo.backend().list(Kind::Dictionary).unwrap().is_empty());
    }
}
