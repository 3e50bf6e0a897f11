//! The local cache of a remote repository (issue 15), against a moto server: a backup keeps
//! the snapshot and tree packs it writes; `ls` then reads the trees from the cache (the tree
//! packs can vanish from the store and `ls` still lists every file), while `check` reads the
//! store itself and finds them gone; a snapshot the store no longer lists leaves the cache.
//! A restore reads each data pack it needs with one request.

mod common;

use common::digest::{assert_same_digest, digest_tree, write_random_file};
use common::e2e::FAST_INIT;
use common::s3::{CREDENTIALS, Moto};
use common::{generate_small_tree, stderr};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use strata::backend::{self, Kind};

/// The names of the objects the cache keeps in `folder` (`snapshots` or `data`).
fn cached(cache: &Path, folder: &str) -> Vec<String> {
    let repos: Vec<PathBuf> = (std::fs::read_dir(cache).unwrap().flatten())
        .map(|e| e.path().join("objects").join(folder))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(repos.len(), 1, "one cached repository: {repos:?}");
    let mut names: Vec<String> = (std::fs::read_dir(&repos[0]).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn listed_paths(out: &[u8]) -> usize {
    String::from_utf8_lossy(out).lines().count()
}

#[test]
fn warm_listings_read_trees_from_the_cache_and_check_reads_the_store() {
    common::server::credentials_in_env(&CREDENTIALS);
    let moto = Moto::start();
    moto.create_bucket("cache");
    let repo = moto.repo("cache", "r");
    repo.ok(FAST_INIT);
    let src = repo.scratch("src");
    generate_small_tree(&src, 12, 200);
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    let first = repo.json(["snapshots"]);
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    std::fs::write(src.join("d0/more.txt"), b"second").unwrap();
    repo.ok([OsStr::new("backup"), src.as_os_str()]);

    let cache = repo.cache_path();
    let snapshots = cached(&cache, "snapshots");
    assert_eq!(snapshots.len(), 2, "both backups kept their snapshots");
    assert!(snapshots.contains(&first_id));
    let written = cached(&cache, "data");
    assert!(
        !written.is_empty(),
        "the backups kept the tree packs they wrote"
    );
    let store = backend::open(&moto.location("cache", "r"), &[]).unwrap();
    let stored: Vec<String> = (store.list(Kind::Pack).unwrap().into_iter())
        .map(|e| e.name)
        .collect();
    assert!(
        written.iter().all(|p| stored.contains(p)),
        "only stored packs"
    );
    let listing = repo.ok(["ls", "-R", "latest"]).stdout;
    let tree_packs = cached(&cache, "data");
    assert_eq!(tree_packs, written, "ls needed no other pack");

    for name in &tree_packs {
        store.remove(Kind::Pack, name).unwrap();
    }
    let warm = repo.ok(["ls", "-R", "latest"]).stdout;
    assert_eq!(warm, listing, "the trees came from the cache");
    assert!(listed_paths(&warm) > 200);

    let check = repo.fail(["check"]);
    assert!(
        stderr(&check).contains(&tree_packs[0][..8]),
        "{}",
        stderr(&check)
    );

    store.remove(Kind::Snapshot, &first_id).unwrap();
    assert_eq!(repo.json(["snapshots"]).as_array().unwrap().len(), 1);
    let kept = cached(&cache, "snapshots");
    assert_eq!(kept.len(), 1);
    assert_ne!(
        kept[0], first_id,
        "a snapshot gone from the store left the cache"
    );
}

/// Moto's log lines of ranged reads of pack objects (`GET .../data/...` answered 206).
fn pack_reads(log: &str) -> usize {
    (log.lines())
        .filter(|l| l.contains("GET /") && l.contains("/data/") && l.contains(" 206 "))
        .count()
}

#[test]
fn a_restore_reads_each_data_pack_it_needs_with_one_request() {
    common::server::credentials_in_env(&CREDENTIALS);
    let moto = Moto::start();
    moto.create_bucket("packs");
    let repo = moto.repo("packs", "r");
    repo.ok(FAST_INIT);
    // One directory (one batch of the restore): small files, and files of several chunks
    // chunked at once, so that their chunks interleave in the packs.
    let src = repo.scratch("src");
    for i in 0..40 {
        std::fs::write(src.join(format!("small{i}.txt")), format!("file {i}\n")).unwrap();
    }
    for i in 0..3 {
        write_random_file(&src.join(format!("big{i}.bin")), 7 << 20, 40 + i);
    }
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    let store = backend::open(&moto.location("packs", "r"), &[]).unwrap();
    let packs = store.list(Kind::Pack).unwrap().len();
    let data_packs = packs - cached(&repo.cache_path(), "data").len();

    let before = pack_reads(&moto.log());
    let target = repo.scratch("target");
    let args = [
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
    ];
    repo.ok(args.into_iter().chain([target.as_os_str()]));
    let reads = pack_reads(&moto.log()) - before;
    let restored = common::e2e::restored_path(&target, &src);
    assert_same_digest(&digest_tree(&src), &digest_tree(&restored), "restored tree");
    assert!(
        data_packs >= 2 && reads == data_packs,
        "{reads} ranged reads of {data_packs} data packs (tree packs come from the cache)"
    );
}
