//! Restore hardening of issue 12: any depth the backup recorded restores
//! with a bounded number of descriptors (finding 8), and special files get
//! their metadata (finding 9). Trees deeper than PATH_MAX are built and
//! compared one component at a time, relative to directory descriptors.

mod common;

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::e2e::{code, fast_repo, restored_path};
use common::stderr;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};

/// Levels of the deep tree: with two bytes per level its paths are longer
/// than PATH_MAX (4096), and deeper than the old restore limit of 1024.
const DEPTH: usize = 2_030;
/// Every this many levels hold a file besides the next directory.
const FILE_EVERY: usize = 100;
/// The soft limit of open descriptors the restore runs under.
const NOFILE: u64 = 256;

fn open_dir(at: &OwnedFd, name: &str) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(at, name, flags, Mode::empty()).unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn open_path(path: &Path) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rfs::open(path, flags, Mode::empty()).unwrap_or_else(|e| panic!("open {path:?}: {e}"))
}

fn file_content(level: usize) -> Vec<u8> {
    format!("level {level}\n")
        .repeat(level % 7 + 1)
        .into_bytes()
}

/// `DEPTH` nested directories `d` below `top`, with a file `f` at every
/// `FILE_EVERY`th level and at the bottom, built relative to descriptors.
fn build_deep_tree(top: &Path) {
    let mut dir = open_path(top);
    for level in 1..=DEPTH {
        rfs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        dir = open_dir(&dir, "d");
        if level % FILE_EVERY == 0 || level == DEPTH {
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let f = rfs::openat(&dir, "f", flags, Mode::from_raw_mode(0o640)).unwrap();
            rustix::io::write(&f, &file_content(level)).unwrap();
        }
    }
}

fn names(dir: &OwnedFd) -> Vec<Vec<u8>> {
    let mut dir = rfs::Dir::read_from(dir).unwrap();
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let name = entry.unwrap().file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            out.push(name);
        }
    }
    out.sort();
    out
}

fn read_file(dir: &OwnedFd, name: &str) -> Vec<u8> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = rustix::io::read(&fd, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Walks the restored chain level by level: the same names, the files'
/// bytes and modes, and the directories' modes.
fn assert_deep_tree(restored: &Path) {
    let mut dir = open_path(restored);
    for level in 1..=DEPTH {
        dir = open_dir(&dir, "d");
        let st = rfs::fstat(&dir).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o755, "mode of level {level}");
        let has_file = level % FILE_EVERY == 0 || level == DEPTH;
        let want: Vec<Vec<u8>> = match (has_file, level == DEPTH) {
            (true, true) => vec![b"f".to_vec()],
            (true, false) => vec![b"d".to_vec(), b"f".to_vec()],
            (false, _) => vec![b"d".to_vec()],
        };
        assert_eq!(names(&dir), want, "entries of level {level}");
        if has_file {
            assert_eq!(read_file(&dir, "f"), file_content(level), "level {level}");
            let st = rfs::statat(&dir, "f", AtFlags::SYMLINK_NOFOLLOW).unwrap();
            assert_eq!(st.st_mode & 0o7777, 0o640, "file mode at level {level}");
        }
    }
}

/// Finding 8 of issue 12: a genuine 2,030-level directory backs up and
/// restores byte-identical under a soft limit of 256 open descriptors (the
/// old restore stopped at depth 1024 and held a descriptor per level).
#[test]
fn restore_restores_a_2030_level_directory_under_256_descriptors() {
    let repo = fast_repo();
    // The deepest restored and backed-up paths are longer than PATH_MAX:
    // both sides work relative to directory descriptors.
    let src = repo.path().join("source");
    std::fs::create_dir(&src).unwrap();
    build_deep_tree(&src);
    let out = repo
        .cmd([OsStr::new("backup"), src.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "backup failed: {}", stderr(&out));

    let target = repo.path().join("target");
    let mut cmd = repo.cmd([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    // SAFETY: setrlimit is a single system call, async-signal-safe, and
    // touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(NOFILE),
                maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                .map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "restore failed: {}", stderr(&out));
    assert_deep_tree(&restored_path(&target, &src));
}

/// Finding 9 of issue 12, end to end: a restored fifo and symlink get their
/// mode and times (set through the descriptor that pins the created inode).
#[test]
fn restore_sets_metadata_of_special_files_on_the_created_inode() {
    let repo = fast_repo();
    let src = repo.scratch("src");
    let dir = open_path(&src);
    rfs::mknodat(
        &dir,
        "p",
        rfs::FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rfs::symlinkat("p", &dir, "l").unwrap();
    for (name, sec) in [("p", 1_000_000_001), ("l", 1_000_000_002)] {
        let t = Timespec {
            tv_sec: sec,
            tv_nsec: 5,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rfs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    let target = repo.path().join("target");
    repo.ok([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    let restored = open_path(&restored_path(&target, &src));
    let st = rfs::statat(&restored, "p", AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(
        rfs::FileType::from_raw_mode(st.st_mode),
        rfs::FileType::Fifo
    );
    assert_eq!(st.st_mode & 0o7777, 0o640);
    assert_eq!((st.st_mtime, st.st_mtime_nsec), (1_000_000_001, 5));
    let st = rfs::statat(&restored, "l", AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(
        rfs::FileType::from_raw_mode(st.st_mode),
        rfs::FileType::Symlink
    );
    assert_eq!((st.st_mtime, st.st_mtime_nsec), (1_000_000_002, 5));
}
