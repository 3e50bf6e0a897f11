//! The local cache of a remote repository (issue 15), against a moto server: a backup keeps
//! the snapshot and tree packs it writes; `ls` then reads the trees from the cache (the tree
//! packs can vanish from the store and `ls` still lists every file), while `check` reads the
//! store itself and finds them gone; a snapshot the store no longer lists leaves the cache.

mod common;

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
    for (k, v) in CREDENTIALS {
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
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
