//! Builds a large repository for the scale measurements (README, "Performance", "Scale"):
//! `cargo bench --bench scale -- --blobs N --repo DIR [--password PW]`.
//!
//! It writes N small random data blobs (64–256 bytes, so they neither compress nor
//! deduplicate) through the library's own packer, 100 per file and 1,000 files per
//! directory, into three snapshots:
//! - `base` (tag `keep`): most files;
//! - `scattered` (tag `old`): every third file of the first tenth, so that once it is
//!   forgotten those packs are a third unused and prune repacks them;
//! - `tail` (tag `old`): the last 5% of the files, in packs of their own, which prune deletes.
//!
//! `benches/scale.sh` runs the commands on the result. Dictionaries are off (random data
//! gives them nothing to learn) and the key derivation is cheap; everything else is a
//! repository as `strata init` makes it.
//!
//! Its own index is an SQLite file in a temporary directory next to the repository (removed
//! at the end), not an in-memory database, so that generating 10 million blobs takes no
//! memory per blob; it is not left in any cache, so the first command that opens the
//! repository still builds its local index from the index files.
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::backend::local::LocalBackend;
use strata::repo::blob::BlobType;
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::id::TreeId;
use strata::repo::key::KdfParams;
use strata::repo::snapshot::Snapshot;
use strata::repo::tree::{ChunkRef, Node, NodeKind, Timespec, Tree};
use strata::write::packer::Packer;
use strata::{LockMode, Repository};

const CHUNKS_PER_FILE: u64 = 100;
const FILES_PER_DIR: u64 = 1000;
const MIN_CHUNK: u64 = 64;
const MAX_CHUNK: u64 = 256;

/// Deterministic pseudo-random numbers (splitmix64): fast enough to feed 10 million blobs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for part in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            part.copy_from_slice(&word[..part.len()]);
        }
    }
}

struct Args {
    blobs: u64,
    repo: PathBuf,
    password: String,
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let (mut blobs, mut repo, mut password) = (None, None, "scale".to_string());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--blobs" => blobs = args.next().and_then(|n| n.replace('_', "").parse().ok()),
            "--repo" => repo = args.next().map(PathBuf::from),
            "--password" => password = args.next().expect("--password PW"),
            _ => {} // `cargo bench` adds --bench
        }
    }
    let usage = "usage: cargo bench --bench scale -- --blobs N --repo DIR [--password PW]";
    Args {
        blobs: blobs.expect(usage),
        repo: repo.expect(usage),
        password,
    }
}

/// Which snapshot a file belongs to.
#[derive(Clone, Copy, PartialEq)]
enum Owner {
    Base,
    Scattered,
    Tail,
}

fn owner(file: u64, files: u64) -> Owner {
    if file >= files - files / 20 {
        Owner::Tail
    } else if file < files / 10 && file % 3 == 2 {
        Owner::Scattered
    } else {
        Owner::Base
    }
}

fn node(name: String, kind: NodeKind, size: u64) -> Node {
    let now = Timespec {
        sec: 1_767_225_600,
        nsec: 0,
    };
    Node {
        name: name.into_bytes(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: "root".into(),
        group: "root".into(),
        mtime: now,
        ctime: now,
        inode: 0,
        device: 0,
        links: 1,
        size,
        xattrs: vec![],
    }
}

/// Saves file number `file`: its chunks, then its node.
fn save_file(packer: &Packer, file: u64) -> Node {
    let mut rng = SplitMix64(file ^ 0x5ca1_e000_0000_0000);
    let mut buf = [0u8; MAX_CHUNK as usize];
    let content: Vec<ChunkRef> = (0..CHUNKS_PER_FILE)
        .map(|_| {
            let len = MIN_CHUNK + rng.next_u64() % (MAX_CHUNK - MIN_CHUNK + 1);
            let bytes = &mut buf[..len as usize];
            rng.fill(bytes);
            let (id, _) = packer.save(BlobType::Data, bytes).expect("save chunk");
            ChunkRef {
                id,
                len: len as u32,
            }
        })
        .collect();
    let size = content.iter().map(|c| u64::from(c.len)).sum();
    node(format!("f{file:08}"), NodeKind::File { content }, size)
}

fn dir(packer: &Packer, name: String, nodes: Vec<Node>) -> Node {
    let (subtree, _) = packer.save_tree(&Tree::new(nodes)).expect("save tree");
    node(name, NodeKind::Dir { subtree }, 0)
}

fn snapshot(tree: TreeId, tag: &str) -> Snapshot {
    let json = serde_json::json!({"time": chrono::Utc::now(), "host": "scale",
        "username": "root", "uid": 0, "gid": 0, "paths": ["/scale"], "tree": tree,
        "tags": [tag], "program_version": "scale-bench"});
    serde_json::from_value(json).expect("snapshot")
}

fn main() {
    let args = parse_args();
    let started = Instant::now();
    let files = args.blobs.div_ceil(CHUNKS_PER_FILE);
    let dirs = files.div_ceil(FILES_PER_DIR);
    let mut config = Config::new(
        ChunkerParams::FILES,
        Config::DEFAULT_PACK_SIZE,
        Config::DEFAULT_COMPRESSION,
    );
    config.dictionaries = false;
    let backend = Arc::new(LocalBackend::new(&args.repo));
    let kdf = KdfParams::new(64, 1);
    let beside = (args.repo.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(beside).expect("the repository's parent directory");
    let index_dir = tempfile::Builder::new()
        .prefix(".scale-index-")
        .tempdir_in(beside)
        .expect("temporary index directory");
    let repo = Repository::init(backend, args.password.as_bytes(), config, kdf)
        .expect("init repository")
        .open_index(Some(index_dir.path()))
        .expect("open index");
    let lock = repo
        .lock(LockMode::Shared, "scale-bench", Duration::ZERO, None)
        .expect("lock");
    let packer = Packer::new(&lock, false);

    // Per snapshot: its directory nodes, each directory made of that snapshot's files.
    let mut roots: [Vec<Node>; 3] = Default::default();
    for d in 0..dirs {
        let range = d * FILES_PER_DIR..((d + 1) * FILES_PER_DIR).min(files);
        let saved: Vec<(u64, Node)> = range
            .into_par_iter()
            .map(|f| (f, save_file(&packer, f)))
            .collect();
        let mut parts: [Vec<Node>; 3] = Default::default();
        for (f, n) in saved {
            parts[owner(f, files) as usize].push(n);
        }
        for (root, nodes) in roots.iter_mut().zip(parts) {
            if !nodes.is_empty() {
                root.push(dir(&packer, format!("d{d:05}"), nodes));
            }
        }
        eprint!(
            "\r{} of {files} files",
            ((d + 1) * FILES_PER_DIR).min(files)
        );
    }
    eprintln!();
    let mut ids = Vec::new();
    let mut trees = Vec::new();
    for nodes in roots {
        let scale = dir(&packer, "scale".into(), nodes);
        trees.push(packer.save_tree(&Tree::new(vec![scale])).expect("root").0);
    }
    let stats = packer.flush().expect("flush");
    for (tree, (name, tag)) in
        trees
            .into_iter()
            .zip([("base", "keep"), ("scattered", "old"), ("tail", "old")])
    {
        let id = lock.save_snapshot(&snapshot(tree, tag)).expect("snapshot");
        ids.push(format!("{name} {id} (tag {tag})"));
    }
    println!(
        "wrote {} data blobs and {} trees ({:.1} MiB stored) in {} packs, {files} files in {dirs} directories, in {:.1} s",
        stats.data_blobs,
        stats.tree_blobs,
        stats.bytes as f64 / (1024.0 * 1024.0),
        stats.packs,
        started.elapsed().as_secs_f64()
    );
    for line in ids {
        println!("snapshot {line}");
    }
}
