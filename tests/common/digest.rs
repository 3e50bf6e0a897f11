//! Content digests of whole directory trees, for comparing a restore with its source
//! without holding either in memory: relative path -> kind, mode and BLAKE3 of the bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::fsutil::list_files;
use super::rng::Rng;

pub type Digest = BTreeMap<PathBuf, String>;

/// Every entry below `dir` (not `dir` itself): files by content hash and mode, symlinks
/// by target, directories by mode.
pub fn digest_tree(dir: &Path) -> Digest {
    let mut out: Digest = list_files(dir)
        .par_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), describe(p)))
        .collect();
    collect_dirs(dir, dir, &mut out);
    out
}

fn describe(p: &Path) -> String {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {p:?}: {e}"));
    if md.file_type().is_symlink() {
        return format!("link {:?}", fs::read_link(p).unwrap());
    }
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(fs::File::open(p).unwrap_or_else(|e| panic!("open {p:?}: {e}")))
        .unwrap();
    format!(
        "file {:o} {}",
        md.permissions().mode() & 0o7777,
        hasher.finalize()
    )
}

fn collect_dirs(root: &Path, dir: &Path, out: &mut Digest) {
    for e in fs::read_dir(dir).unwrap().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
            out.insert(
                e.path().strip_prefix(root).unwrap().into(),
                format!("dir {mode:o}"),
            );
            collect_dirs(root, &e.path(), out);
        }
    }
}

/// Panics with the first few differences between two digests.
pub fn assert_same_digest(want: &Digest, got: &Digest, what: &str) {
    let mut diffs: Vec<String> = want
        .iter()
        .filter(|(p, d)| got.get(*p) != Some(*d))
        .map(|(p, d)| format!("{p:?}: want {d}, got {:?}", got.get(p)))
        .collect();
    diffs.extend(
        got.keys()
            .filter(|p| !want.contains_key(*p))
            .map(|p| format!("{p:?}: unexpected")),
    );
    assert!(
        diffs.is_empty(),
        "{what}: {} differences, e.g. {:?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
}

/// A file of `size` pseudo-random (incompressible) bytes from `seed`, written in 1 MiB steps.
pub fn write_random_file(path: &Path, size: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}
