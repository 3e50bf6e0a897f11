//! Throughput and latency of the backup pipeline's stages: chunking, blob ids, sealing and
//! opening blobs, the SQLite index (and the packer's filter of it) and tree (de)serialisation.
//!
//! Run with `cargo bench --bench pipeline` (add `-- --quick` for a fast smoke run). Sample
//! sizes and measurement times are kept modest so the whole run takes a couple of minutes.
//!
//! The index benchmark fills an on-disk index with 1,000,000 blobs by default. The goal is
//! that lookups stay fast at 10 million blobs; to measure that, raise the size with the
//! environment variable `STRATA_BENCH_BLOBS`, e.g. `STRATA_BENCH_BLOBS=10000000 cargo bench
//! --bench pipeline -- index_lookup` (the setup then takes a few minutes and ~1 GB of disk).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use strata::index::Index;
use strata::index::idfilter::IdFilter;
use strata::repo::blob::{self, BlobType, Compression};
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::crypto::{GearSeed, MasterKey};
use strata::repo::id::{BlobId, Id, PackId};
use strata::repo::indexfile::PackEntries;
use strata::repo::pack::{BlobEntry, PackFormat};
use strata::write::chunker::{Chunker, GearTable};

/// Benchmarks seal and index what new (version 3) repositories write.
const V3: PackFormat = PackFormat::V3;
use strata::repo::tree::{ChunkRef, Node, NodeKind, Timespec, Tree};

const MIB: usize = 1024 * 1024;

/// Deterministic pseudo-random numbers (splitmix64), so every run sees the same data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn id(&mut self) -> Id {
        let mut b = [0u8; 32];
        for part in b.chunks_exact_mut(8) {
            part.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        Id(b)
    }
}

/// Text-like data: words from a small vocabulary with varying case, numbers, punctuation
/// and line breaks, so it compresses well but not trivially.
fn text_like(rng: &mut SplitMix64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "backup",
        "repository",
        "snapshot",
        "chunk",
        "index",
        "pack",
        "blob",
        "tree",
        "file",
        "directory",
        "restore",
        "encrypted",
        "deduplicated",
        "content",
        "defined",
        "boundary",
        "key",
        "password",
        "prune",
        "forget",
        "check",
        "cache",
        "lock",
        "of",
        "and",
        "to",
        "in",
        "is",
        "a",
        "with",
        "for",
        "that",
        "on",
        "data",
        "size",
        "error",
        "warning",
        "info",
        "debug",
        "request",
        "response",
        "server",
        "client",
        "timeout",
        "retry",
        "user",
        "group",
        "mode",
        "owner",
        "modified",
        "created",
        "deleted",
        "copied",
        "bytes",
        "seconds",
    ];
    let mut out = Vec::with_capacity(len + 32);
    let mut line_words = 0;
    while out.len() < len {
        let word = WORDS[rng.below(WORDS.len())];
        match rng.below(16) {
            0 => {
                let mut w = word.as_bytes().to_vec();
                w[0] = w[0].to_ascii_uppercase();
                out.extend_from_slice(&w);
            }
            1 => out.extend_from_slice(rng.below(100_000).to_string().as_bytes()),
            _ => out.extend_from_slice(word.as_bytes()),
        }
        line_words += 1;
        match rng.below(12) {
            0 => out.extend_from_slice(b", "),
            1 => out.extend_from_slice(b". "),
            _ => out.push(b' '),
        }
        if line_words >= 8 + rng.below(8) {
            out.push(b'\n');
            line_words = 0;
        }
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = SplitMix64(1).bytes(64 * MIB);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let gear = GearTable::new(GearSeed::Table([0x5e; 32]));
    g.bench_function("fastcdc_64MiB", |b| {
        b.iter(|| {
            let bytes: usize = Chunker::new(black_box(&data[..]), ChunkerParams::FILES, &gear)
                .map(|c| black_box(c.expect("reading a slice cannot fail")).len())
                .sum();
            black_box(bytes)
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let key = MasterKey::random();
    let data = SplitMix64(2).bytes(MIB);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("blob_id_1MiB", |b| b.iter(|| key.blob_id(black_box(&data))));
    g.finish();
}

fn seal(c: &mut Criterion) {
    let key = MasterKey::random();
    let level = Config::DEFAULT_COMPRESSION;
    let mut rng = SplitMix64(3);
    let inputs = [
        ("compressible", text_like(&mut rng, MIB)),
        ("incompressible", rng.bytes(MIB)),
    ];
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(MIB as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, plain) in &inputs {
        let id = key.blob_id(plain);
        let sealed = blob::seal(&key, V3, BlobType::Data, id, plain, level);
        let entry = BlobEntry {
            ty: BlobType::Data,
            id,
            offset: 0,
            length: sealed.bytes.len() as u32,
            raw_length: sealed.raw_len,
            compression: sealed.compression,
        };
        assert_eq!(sealed.compression.is_compressed(), *name == "compressible");
        g.bench_function(BenchmarkId::new("seal", name), |b| {
            b.iter(|| blob::seal(&key, V3, BlobType::Data, id, black_box(plain), level))
        });
        g.bench_function(BenchmarkId::new("open", name), |b| {
            b.iter(|| {
                blob::open(&key, V3, &entry, black_box(&sealed.bytes), None)
                    .expect("a freshly sealed blob opens")
            })
        });
    }
    g.finish();
}

/// Number of blobs in the index benchmark: `STRATA_BENCH_BLOBS` or 1,000,000.
fn bench_blobs() -> usize {
    match std::env::var("STRATA_BENCH_BLOBS") {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .expect("STRATA_BENCH_BLOBS must be a number of blobs"),
        Err(_) => 1_000_000,
    }
}

const PROBES: usize = 1 << 16;

/// An on-disk index of `n` blobs plus random probe ids that are in it and that are not.
struct IndexFixture {
    index: Index,
    /// The packer's filter of the index's ids, loaded as a backup loads it.
    filter: IdFilter,
    hits: Vec<BlobId>,
    misses: Vec<BlobId>,
    // Dropped after `index`, which holds the database open.
    _dir: tempfile::TempDir,
}

impl IndexFixture {
    /// Fills the index the way `strata` does from index files: one `add_file` per ~50k
    /// blobs, 100 blobs per pack. Takes some seconds at 1M blobs (not timed).
    fn build(n: usize) -> IndexFixture {
        const FILE_BATCH: usize = 50_000;
        const BLOBS_PER_PACK: usize = 100;

        let dir = tempfile::tempdir().expect("temporary directory");
        let index = Index::open(&dir.path().join("index.sqlite")).expect("open index");
        // Blob ids come from one seeded stream; every id is kept so probes can pick hits.
        let mut rng = SplitMix64(4);
        let mut pack_rng = SplitMix64(5);
        let mut ids = Vec::with_capacity(n);
        for (file_no, start) in (0..n).step_by(FILE_BATCH).enumerate() {
            let end = (start + FILE_BATCH).min(n);
            let mut packs = Vec::with_capacity((end - start).div_ceil(BLOBS_PER_PACK));
            for pack_start in (start..end).step_by(BLOBS_PER_PACK) {
                let mut offset = 0u32;
                let blobs = (0..BLOBS_PER_PACK.min(end - pack_start))
                    .map(|_| {
                        let id = BlobId(rng.id());
                        ids.push(id);
                        let raw_length = (512 * 1024 + rng.below(MIB)) as u32;
                        let length = raw_length / 2 + 40;
                        let entry = BlobEntry {
                            ty: BlobType::Data,
                            id,
                            offset,
                            length,
                            raw_length,
                            compression: Compression::Zstd,
                        };
                        offset = offset.wrapping_add(length);
                        entry
                    })
                    .collect();
                packs.push(PackEntries {
                    pack: PackId(pack_rng.id()),
                    format: V3,
                    length: None,
                    blobs,
                });
            }
            index
                .add_file(&format!("bench-{file_no:06}"), &packs)
                .expect("add index file");
        }
        assert_eq!(index.counts().expect("counts").0, n as u64);

        let mut probe_rng = SplitMix64(6);
        let hits: Vec<BlobId> = (0..PROBES)
            .map(|_| ids[probe_rng.below(ids.len())])
            .collect();
        let misses: Vec<BlobId> = (0..PROBES).map(|_| BlobId(probe_rng.id())).collect();
        assert!(hits.iter().all(|id| index.contains(id).expect("contains")));
        assert!(
            !misses
                .iter()
                .any(|id| index.contains(id).expect("contains"))
        );
        assert_eq!(
            index.lookup(&hits[0]).expect("lookup").map(|l| l.entry.id),
            Some(hits[0])
        );
        let mut filter = IdFilter::with_capacity(2 * n);
        index.for_each_id(|id| filter.insert(id)).expect("ids");
        assert!(hits.iter().all(|id| filter.may_contain(id)));
        IndexFixture {
            index,
            filter,
            hits,
            misses,
            _dir: dir,
        }
    }
}

fn index_lookup(c: &mut Criterion) {
    let n = bench_blobs();
    // Built on first use, so filtering to other benchmarks skips the slow setup.
    let fixture = std::cell::OnceCell::new();
    let fixture = || fixture.get_or_init(|| IndexFixture::build(n));

    let mut g = c.benchmark_group("index_lookup");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Each benchmark walks its probe list across samples rather than restarting it.
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("contains_hit", n), |b| {
        let f = fixture();
        b.iter(|| {
            i = (i + 1) % PROBES;
            f.index.contains(black_box(&f.hits[i])).expect("contains")
        })
    });
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("contains_miss", n), |b| {
        let f = fixture();
        b.iter(|| {
            i = (i + 1) % PROBES;
            f.index.contains(black_box(&f.misses[i])).expect("contains")
        })
    });
    // What a backup adding new data pays per blob once the filter is loaded.
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("filter_miss", n), |b| {
        let f = fixture();
        b.iter(|| {
            i = (i + 1) % PROBES;
            f.filter.may_contain(black_box(&f.misses[i]))
        })
    });
    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("lookup_hit", n), |b| {
        let f = fixture();
        b.iter(|| {
            i = (i + 1) % PROBES;
            f.index.lookup(black_box(&f.hits[i])).expect("lookup")
        })
    });
    g.finish();
}

fn tree(c: &mut Criterion) {
    const FILES: usize = 1_000;
    let mut rng = SplitMix64(7);
    let nodes = (0..FILES)
        .map(|i| {
            let content: Vec<ChunkRef> = (0..4)
                .map(|_| ChunkRef {
                    id: BlobId(rng.id()),
                    len: (512 * 1024 + rng.below(MIB)) as u32,
                })
                .collect();
            Node {
                name: format!("file-{i:05}.dat").into_bytes(),
                size: content.iter().map(|c| c.len as u64).sum(),
                kind: NodeKind::File { content },
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                user: "user".into(),
                group: "users".into(),
                mtime: Timespec {
                    sec: 1_700_000_000 + rng.below(10_000_000) as i64,
                    nsec: rng.below(1_000_000_000) as u32,
                },
                ctime: Timespec {
                    sec: 1_700_000_000 + rng.below(10_000_000) as i64,
                    nsec: rng.below(1_000_000_000) as u32,
                },
                inode: 1_000_000 + i as u64,
                device: 2049,
                links: 1,
                xattrs: vec![],
            }
        })
        .collect();
    let tree = Tree::new(nodes);
    let encoded = tree.encode();
    assert_eq!(Tree::decode(&encoded).expect("decode"), tree);

    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Bytes(encoded.len() as u64))
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("encode_1000_files", |b| {
        b.iter(|| black_box(&tree).encode())
    });
    g.bench_function("decode_1000_files", |b| {
        b.iter(|| Tree::decode(black_box(&encoded)).expect("decode"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Fewer bootstrap resamples than the default 100,000 keep the analysis between
    // benchmarks short on small machines; the estimates are still stable.
    config = Criterion::default().nresamples(20_000);
    targets = chunking, hashing, seal, index_lookup, tree
}
criterion_main!(benches);
