//! Tree comparison: paths, types, contents, symlink targets, modes, mtimes
//! and (optionally) owners, never following symlinks.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What `compare_trees` checks besides paths, types, contents and targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareOpts {
    /// mtime of files, symlinks and other non-directories, to the nanosecond.
    pub mtime: bool,
    /// Permission bits (`mode & 0o7777`) of everything but symlinks.
    pub mode: bool,
    /// mtime of directories, to the nanosecond.
    pub dir_mtime: bool,
    /// uid and gid.
    pub owner: bool,
}

impl Default for CompareOpts {
    fn default() -> Self {
        CompareOpts {
            mtime: true,
            mode: true,
            dir_mtime: true,
            owner: false,
        }
    }
}

impl CompareOpts {
    /// Only paths, types, contents and symlink targets.
    pub fn content_only() -> Self {
        CompareOpts {
            mtime: false,
            mode: false,
            dir_mtime: false,
            owner: false,
        }
    }
}

/// Differences between the trees below `a` and `b` (the roots themselves
/// are not compared), as human-readable lines; empty means identical.
/// Paths in the report are relative and `{:?}`-quoted.
pub fn compare_trees(a: &Path, b: &Path, opts: CompareOpts) -> Vec<String> {
    let left = walk(a);
    let right = walk(b);
    let mut diffs = Vec::new();
    only_in("a", &left, &right, &mut diffs);
    only_in("b", &right, &left, &mut diffs);
    for (rel, ma) in &left {
        if let Some(mb) = right.get(rel) {
            compare_entry(
                rel,
                (&a.join(rel), ma),
                (&b.join(rel), mb),
                opts,
                &mut diffs,
            );
        }
    }
    diffs
}

/// Panic listing (up to 50) differences if the trees differ.
pub fn assert_trees_equal(a: &Path, b: &Path) {
    assert_trees_equal_with(a, b, CompareOpts::default());
}

pub fn assert_trees_equal_with(a: &Path, b: &Path, opts: CompareOpts) {
    let diffs = compare_trees(a, b, opts);
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(50).map(String::as_str).collect();
        panic!(
            "trees differ ({} differences; a = {a:?}, b = {b:?}):\n  {}",
            diffs.len(),
            shown.join("\n  ")
        );
    }
}

/// Relative path -> lstat metadata for every entry below `root`.
fn walk(root: &Path) -> BTreeMap<PathBuf, Metadata> {
    let mut out = BTreeMap::new();
    walk_into(root, Path::new(""), &mut out);
    out
}

fn walk_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Metadata>) {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"));
        let child = rel.join(entry.file_name());
        let md = fs::symlink_metadata(entry.path())
            .unwrap_or_else(|e| panic!("lstat {:?}: {e}", entry.path()));
        if md.is_dir() {
            walk_into(root, &child, out);
        }
        out.insert(child, md);
    }
}

/// Report entries of `this` missing from `other`, but not the contents of
/// a directory that is itself reported.
fn only_in(
    side: &str,
    this: &BTreeMap<PathBuf, Metadata>,
    other: &BTreeMap<PathBuf, Metadata>,
    diffs: &mut Vec<String>,
) {
    let mut reported: HashSet<&Path> = HashSet::new();
    for (rel, md) in this {
        if other.contains_key(rel) || rel.ancestors().any(|p| reported.contains(p)) {
            continue;
        }
        diffs.push(format!(
            "only in {side}: {rel:?} ({})",
            kind(md.file_type())
        ));
        reported.insert(rel);
    }
}

fn kind(ft: FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "char device"
    } else {
        "unknown"
    }
}

fn compare_entry(
    rel: &Path,
    (pa, ma): (&Path, &Metadata),
    (pb, mb): (&Path, &Metadata),
    opts: CompareOpts,
    diffs: &mut Vec<String>,
) {
    let (ka, kb) = (kind(ma.file_type()), kind(mb.file_type()));
    if ka != kb {
        diffs.push(format!("type differs: {rel:?}: a is {ka}, b is {kb}"));
        return;
    }
    match ka {
        "file" => compare_contents(rel, (pa, ma), (pb, mb), diffs),
        "symlink" => compare_targets(rel, pa, pb, diffs),
        _ => {}
    }
    if opts.mode && ka != "symlink" {
        compare_modes(rel, ma, mb, diffs);
    }
    if (ka == "dir" && opts.dir_mtime) || (ka != "dir" && opts.mtime) {
        compare_mtimes(rel, ma, mb, diffs);
    }
    if opts.owner {
        compare_owners(rel, ma, mb, diffs);
    }
}

fn compare_contents(
    rel: &Path,
    (pa, ma): (&Path, &Metadata),
    (pb, mb): (&Path, &Metadata),
    diffs: &mut Vec<String>,
) {
    if ma.len() != mb.len() {
        diffs.push(format!(
            "size differs: {rel:?}: a has {} bytes, b has {} bytes",
            ma.len(),
            mb.len()
        ));
    } else if let Some(off) = first_difference(pa, pb) {
        diffs.push(format!(
            "content differs: {rel:?}: first difference at byte {off}"
        ));
    }
}

/// Offset of the first differing byte of two files, streaming both.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let open = |p: &Path| fs::File::open(p).unwrap_or_else(|e| panic!("open {p:?}: {e}"));
    let (mut fa, mut fb) = (open(a), open(b));
    let mut ba = vec![0u8; 256 * 1024];
    let mut bb = vec![0u8; 256 * 1024];
    let mut pos = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if ba[..na] != bb[..nb] {
            let same = ba[..na].iter().zip(&bb[..nb]).take_while(|(x, y)| x == y);
            return Some(pos + same.count() as u64);
        }
        if na == 0 {
            return None;
        }
        pos += na as u64;
    }
}

/// Fill `buf` as far as possible; returns bytes read (short only at EOF).
fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

fn compare_targets(rel: &Path, pa: &Path, pb: &Path, diffs: &mut Vec<String>) {
    let read = |p: &Path| fs::read_link(p).unwrap_or_else(|e| panic!("readlink {p:?}: {e}"));
    let (ta, tb) = (read(pa), read(pb));
    if ta != tb {
        diffs.push(format!(
            "symlink target differs: {rel:?}: a -> {ta:?}, b -> {tb:?}"
        ));
    }
}

fn compare_modes(rel: &Path, ma: &Metadata, mb: &Metadata, diffs: &mut Vec<String>) {
    let (xa, xb) = (ma.mode() & 0o7777, mb.mode() & 0o7777);
    if xa != xb {
        diffs.push(format!(
            "mode differs: {rel:?}: a is {xa:04o}, b is {xb:04o}"
        ));
    }
}

fn compare_mtimes(rel: &Path, ma: &Metadata, mb: &Metadata, diffs: &mut Vec<String>) {
    let ta = (ma.mtime(), ma.mtime_nsec());
    let tb = (mb.mtime(), mb.mtime_nsec());
    if ta != tb {
        diffs.push(format!(
            "mtime differs: {rel:?}: a is {}s+{}ns, b is {}s+{}ns",
            ta.0, ta.1, tb.0, tb.1
        ));
    }
}

fn compare_owners(rel: &Path, ma: &Metadata, mb: &Metadata, diffs: &mut Vec<String>) {
    let (oa, ob) = ((ma.uid(), ma.gid()), (mb.uid(), mb.gid()));
    if oa != ob {
        diffs.push(format!(
            "owner differs: {rel:?}: a is {}:{}, b is {}:{}",
            oa.0, oa.1, ob.0, ob.1
        ));
    }
}
