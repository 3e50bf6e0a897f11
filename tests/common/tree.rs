//! Deterministic generation of test trees.
//!
//! `generate_tree` builds a tree full of edge cases (chunker boundary sizes,
//! odd names, symlinks, modes, unusual mtimes). The paths of the special
//! entries are exported as constants so tests can refer to them.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::fsutil::{read_byte_at, set_mode, set_mtime, with_writable, write_byte_at};
use super::rng::Rng;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// Files of pseudo-random content at the chunker boundaries
/// (min 512 KiB / avg 1 MiB / max 8 MiB).
pub const SIZED_FILES: &[(&str, u64)] = &[
    ("sizes/min-minus-1.bin", 512 * KIB - 1),
    ("sizes/min.bin", 512 * KIB),
    ("sizes/min-plus-1.bin", 512 * KIB + 1),
    ("sizes/avg.bin", MIB),
    ("sizes/max-minus-1.bin", 8 * MIB - 1),
    ("sizes/max.bin", 8 * MIB),
    ("sizes/max-plus-1.bin", 8 * MIB + 1),
];
pub const ZERO_FILE: &str = "files/zero.bin";
pub const HELLO_FILE: &str = "files/hello.txt";
/// 50 MiB, each MiB half random and half a repeated phrase (compressible).
pub const BIG_FILE: &str = "big/mixed-50m.bin";
pub const BIG_SIZE: u64 = 50 * MIB;
/// Three files with the same 3 MiB random content.
pub const DUP_FILES: [&str; 3] = [
    "dup/a/same-3m.bin",
    "dup/b/same-3m.bin",
    "deep/l1/l2/same-3m.bin",
];
pub const DUP_SIZE: u64 = 3 * MIB;
pub const EMPTY_DIRS: [&str; 2] = ["empty", "deep/l1/l2/l3/empty-leaf"];
pub const DEEP_FILE: &str = "deep/l1/l2/l3/leaf.txt";
pub const SPACE_NAME: &str = "names/with some spaces.txt";
pub const NEWLINE_NAME: &str = "names/new\nline.txt";
pub const NON_UTF8_NAME: &[u8] = b"names/bad\xff\xfename";
pub const UNICODE_NAME: &str = "names/ünïcødé-日本.txt";
pub const SYMLINK_REL: &str = "links/rel-file";
pub const SYMLINK_REL_TARGET: &str = "../files/hello.txt";
pub const SYMLINK_ABS: &str = "links/abs";
pub const SYMLINK_ABS_TARGET: &str = "/etc/passwd";
pub const SYMLINK_DANGLING: &str = "links/dangling";
pub const SYMLINK_DANGLING_TARGET: &str = "../no/such/file";
pub const SYMLINK_DIR: &str = "links/dir";
pub const SYMLINK_DIR_TARGET: &str = "../deep/l1";
pub const EXEC_FILE: &str = "modes/exec.sh";
pub const READONLY_FILE: &str = "modes/readonly.txt";
pub const PRIVATE_FILE: &str = "modes/private.txt";
pub const PRIVATE_DIR: &str = "modes/private-dir";
pub const NANOS_FILE: &str = "times/nanos.txt";
pub const NANOS_MTIME: (i64, i64) = (1_234_567_890, 123_456_789);
pub const PRE1970_FILE: &str = "times/pre-1970.txt";
pub const PRE1970_MTIME: (i64, i64) = (-123_456_789, 0);
/// A directory whose mtime is before 1970 and has a sub-second part.
pub const PRE1970_DIR: &str = "times/old-dir";
pub const PRE1970_DIR_MTIME: (i64, i64) = (-86_400, 500_000_000);

/// The non-UTF-8 name as a relative path.
pub fn non_utf8_name() -> &'static Path {
    Path::new(OsStr::from_bytes(NON_UTF8_NAME))
}

/// Builder that records created directories so their mtimes can be set
/// after all children exist.
struct Gen {
    root: PathBuf,
    seed: u64,
    rng: Rng,
    dirs: Vec<(PathBuf, (i64, i64))>,
}

impl Gen {
    fn new(root: &Path, seed: u64) -> Gen {
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {root:?}: {e}"));
        Gen {
            root: root.to_path_buf(),
            seed,
            rng: Rng::new(seed),
            dirs: Vec::new(),
        }
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// A pseudo-random mtime between 2001 and 2023 with nanoseconds.
    fn random_mtime(&mut self) -> (i64, i64) {
        let secs = 1_000_000_000 + self.rng.below(700_000_000) as i64;
        (secs, self.rng.below(1_000_000_000) as i64)
    }

    /// Create `rel` and missing parents (mode 0o755), remembering each.
    fn dir(&mut self, rel: impl AsRef<Path>) {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() || self.abs(rel).exists() {
            return;
        }
        if let Some(parent) = rel.parent() {
            self.dir(parent);
        }
        let path = self.abs(rel);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
        set_mode(&path, 0o755);
        let mtime = self.random_mtime();
        self.dirs.push((rel.to_path_buf(), mtime));
    }

    fn set_dir_mtime(&mut self, rel: &str, mtime: (i64, i64)) {
        let entry = self.dirs.iter_mut().find(|(p, _)| p == Path::new(rel));
        entry.expect("set_dir_mtime: unknown directory").1 = mtime;
    }

    /// Create parents of `rel` and return its absolute path.
    fn prepare(&mut self, rel: &Path) -> PathBuf {
        if let Some(parent) = rel.parent() {
            self.dir(parent);
        }
        self.abs(rel)
    }

    /// chmod + random mtime for a freshly written file.
    fn finish_file(&mut self, path: &Path, mode: u32) {
        set_mode(path, mode);
        let (s, ns) = self.random_mtime();
        set_mtime(path, s, ns);
    }

    fn file(&mut self, rel: impl AsRef<Path>, contents: &[u8], mode: u32) {
        let path = self.prepare(rel.as_ref());
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        self.finish_file(&path, mode);
    }

    /// A file of `len` random bytes drawn from a stream seeded by `label`.
    fn random_file(&mut self, rel: impl AsRef<Path>, len: u64, label: &[u8]) {
        let path = self.prepare(rel.as_ref());
        let mut rng = Rng::derive(self.seed, label);
        write_stream(&path, len, |buf| rng.fill(buf));
        self.finish_file(&path, 0o644);
    }

    fn big_file(&mut self, rel: &str) {
        let path = self.prepare(Path::new(rel));
        write_mixed(&path, BIG_SIZE, Rng::derive(self.seed, rel.as_bytes()));
        self.finish_file(&path, 0o644);
    }

    fn symlink(&mut self, rel: &str, target: &str) {
        let path = self.prepare(Path::new(rel));
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {path:?} -> {target:?}: {e}"));
        let (s, ns) = self.random_mtime();
        set_mtime(&path, s, ns);
    }

    fn text(&mut self, label: &str) -> Vec<u8> {
        let mut rng = Rng::derive(self.seed, label.as_bytes());
        let lines = 1 + rng.below(20) as usize;
        text_lines(&mut rng, lines).into_bytes()
    }

    /// Set all directory mtimes (root included); children exist by now.
    fn finish(mut self) {
        let root_mtime = self.random_mtime();
        for (rel, (s, ns)) in &self.dirs {
            set_mtime(&self.abs(rel), *s, *ns);
        }
        set_mtime(&self.root, root_mtime.0, root_mtime.1);
    }
}

/// Write `len` bytes to `path`, produced 64 KiB at a time by `fill`.
fn write_stream(path: &Path, len: u64, mut fill: impl FnMut(&mut [u8])) {
    let file = fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let mut out = BufWriter::new(file);
    let mut buf = vec![0u8; 64 * KIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n]);
        out.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    out.flush()
        .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
}

/// Each MiB: first half random, second half a repeated phrase naming the MiB.
fn write_mixed(path: &Path, len: u64, mut rng: Rng) {
    let mut segment = vec![0u8; MIB as usize];
    let mut pos = 0u64;
    // `write_stream` hands out 64 KiB pieces, which never straddle a MiB.
    write_stream(path, len, |buf| {
        let off = (pos % MIB) as usize;
        if off == 0 {
            fill_mixed_segment(&mut segment, &mut rng, pos / MIB);
        }
        buf.copy_from_slice(&segment[off..off + buf.len()]);
        pos += buf.len() as u64;
    });
}

fn fill_mixed_segment(segment: &mut [u8], rng: &mut Rng, n: u64) {
    let half = segment.len() / 2;
    rng.fill(&mut segment[..half]);
    let phrase = format!("strata test data, repeated segment {n}; ");
    let repeated = phrase.bytes().cycle();
    for (dst, src) in segment[half..].iter_mut().zip(repeated) {
        *dst = src;
    }
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
];

/// `lines` lines of random words.
fn text_lines(rng: &mut Rng, lines: usize) -> String {
    let mut s = String::new();
    for _ in 0..lines {
        let words = 1 + rng.below(12);
        for w in 0..words {
            if w > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        }
        s.push('\n');
    }
    s
}

/// Build the full edge-case tree under `root` (created if missing).
/// Deterministic in `seed`; about 86 MiB of data.
pub fn generate_tree(root: &Path, seed: u64) {
    let mut g = Gen::new(root, seed);
    gen_dirs(&mut g);
    gen_sized(&mut g);
    gen_dups(&mut g);
    gen_names(&mut g);
    gen_modes(&mut g);
    gen_times(&mut g);
    gen_links(&mut g);
    g.finish();
}

fn gen_dirs(g: &mut Gen) {
    for d in EMPTY_DIRS {
        g.dir(d);
    }
    let leaf = g.text(DEEP_FILE);
    g.file(DEEP_FILE, &leaf, 0o644);
    let side = g.text("deep/l1/side.txt");
    g.file("deep/l1/side.txt", &side, 0o644);
}

fn gen_sized(g: &mut Gen) {
    g.file(ZERO_FILE, b"", 0o644);
    let hello = format!("hello from strata test seed {}\n", g.seed);
    g.file(HELLO_FILE, hello.as_bytes(), 0o644);
    for &(rel, len) in SIZED_FILES {
        g.random_file(rel, len, rel.as_bytes());
    }
    g.big_file(BIG_FILE);
}

fn gen_dups(g: &mut Gen) {
    for rel in DUP_FILES {
        g.random_file(rel, DUP_SIZE, b"dup-3m-content");
    }
}

fn gen_names(g: &mut Gen) {
    for rel in [SPACE_NAME, NEWLINE_NAME, UNICODE_NAME] {
        let body = g.text(rel);
        g.file(rel, &body, 0o644);
    }
    let body = g.text("non-utf8");
    g.file(non_utf8_name(), &body, 0o644);
    let body = g.text("unicode-dir");
    g.file("names/ünïcødé-日本/inner file.txt", &body, 0o644);
}

fn gen_modes(g: &mut Gen) {
    g.file(EXEC_FILE, b"#!/bin/sh\necho strata\n", 0o755);
    let body = g.text(READONLY_FILE);
    g.file(READONLY_FILE, &body, 0o444);
    let body = g.text(PRIVATE_FILE);
    g.file(PRIVATE_FILE, &body, 0o600);
    let body = g.text(PRIVATE_DIR);
    g.file(format!("{PRIVATE_DIR}/secret.txt"), &body, 0o600);
    set_mode(&g.abs(Path::new(PRIVATE_DIR)), 0o700);
}

fn gen_times(g: &mut Gen) {
    for (rel, (s, ns)) in [(NANOS_FILE, NANOS_MTIME), (PRE1970_FILE, PRE1970_MTIME)] {
        let body = g.text(rel);
        g.file(rel, &body, 0o644);
        set_mtime(&g.abs(Path::new(rel)), s, ns);
    }
    let body = g.text(PRE1970_DIR);
    g.file(format!("{PRE1970_DIR}/inside.txt"), &body, 0o644);
    g.set_dir_mtime(PRE1970_DIR, PRE1970_DIR_MTIME);
}

fn gen_links(g: &mut Gen) {
    g.symlink(SYMLINK_REL, SYMLINK_REL_TARGET);
    g.symlink(SYMLINK_ABS, SYMLINK_ABS_TARGET);
    g.symlink(SYMLINK_DANGLING, SYMLINK_DANGLING_TARGET);
    g.symlink(SYMLINK_DIR, SYMLINK_DIR_TARGET);
}

/// `files` small text files spread over two directory levels under `root`
/// (`d{0..8}/e{0..4}/f{i:05}.txt`), with deterministic content and mtimes.
pub fn generate_small_tree(root: &Path, seed: u64, files: usize) {
    let mut g = Gen::new(root, seed);
    for i in 0..files {
        let rel = format!("d{}/e{}/f{i:05}.txt", i % 8, (i / 8) % 4);
        let mut rng = Rng::derive(seed, rel.as_bytes());
        let lines = rng.below(60) as usize;
        let body = text_lines(&mut rng, lines);
        g.file(&rel, body.as_bytes(), 0o644);
    }
    g.finish();
}

/// Change 1–3 distinct bytes of the (non-empty) file at `path` in place,
/// keeping its length. Its mtime becomes "now" as with any write.
pub fn mutate_file(path: &Path, seed: u64) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path:?}: {e}"))
        .len();
    assert!(len > 0, "mutate_file: {path:?} is empty");
    let mut rng = Rng::derive(seed, path.as_os_str().as_bytes());
    let count = (1 + rng.below(3)).min(len);
    let mut offsets = BTreeSet::new();
    while (offsets.len() as u64) < count {
        offsets.insert(rng.below(len));
    }
    with_writable(path, |file| {
        for &off in &offsets {
            let delta = 1 + rng.below(255) as u8;
            let b = read_byte_at(file, off);
            write_byte_at(file, off, b ^ delta);
        }
    });
}

/// Large files of random bytes (incompressible, all new), `n` of `mib` MiB each.
pub fn write_big(dir: &Path, n: u64, mib: usize) {
    fs::create_dir_all(dir).unwrap();
    for f in 0..n {
        let mut rng = Rng::new(77 + f);
        let mut data = vec![0u8; mib << 20];
        for word in data.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        fs::write(dir.join(format!("big-{f}.bin")), data).unwrap();
    }
}
