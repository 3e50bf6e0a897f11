//! Small filesystem helpers: timestamps without following symlinks,
//! byte flipping for corruption tests, recursive listings.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path contains a NUL byte")
}

/// Set atime and mtime of `path` (never following a final symlink).
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    let c = c_path(path);
    // SAFETY: `c` is a valid NUL-terminated string and `times` has two entries.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        panic!("utimensat({path:?}, {secs}s+{nsec}ns): {err}");
    }
}

/// `(seconds, nanoseconds)` of the mtime of `path` (not following symlinks).
pub fn mtime_of(path: &Path) -> (i64, i64) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
    (md.mtime(), md.mtime_nsec())
}

/// Give `to` the same mtime as `from` (neither symlink followed).
pub fn copy_mtime(from: &Path, to: &Path) {
    let (secs, nsec) = mtime_of(from);
    set_mtime(to, secs, nsec);
}

/// chmod (follows symlinks; do not use on symlinks).
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?} {mode:o}: {e}"));
}

/// Run `f` on `path` opened read+write, temporarily adding owner write
/// permission if the file is read-only (pack files often are).
pub fn with_writable<T>(path: &Path, f: impl FnOnce(&mut fs::File) -> T) -> T {
    let mode = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path:?}: {e}"))
        .permissions()
        .mode();
    let readonly = mode & 0o200 == 0;
    if readonly {
        set_mode(path, mode | 0o200);
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path:?} for writing: {e}"));
    let out = f(&mut file);
    drop(file);
    if readonly {
        set_mode(path, mode & 0o7777);
    }
    out
}

/// Read one byte at `offset` of an open file.
pub fn read_byte_at(file: &mut fs::File, offset: u64) -> u8 {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut b).expect("read byte");
    b[0]
}

/// Overwrite one byte at `offset` of an open file.
pub fn write_byte_at(file: &mut fs::File, offset: u64, value: u8) {
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&[value]).expect("write byte");
}

/// XOR the byte at `offset` with 0xff, in place. Panics if out of range.
pub fn flip_byte(path: &Path, offset: u64) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path:?}: {e}"))
        .len();
    assert!(
        offset < len,
        "flip_byte: offset {offset} >= length {len} of {path:?}"
    );
    with_writable(path, |file| {
        let b = read_byte_at(file, offset);
        write_byte_at(file, offset, b ^ 0xff);
    });
}

/// Every non-directory entry below `dir` (symlinks not followed), sorted.
/// Returns an empty list if `dir` does not exist.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dir.exists() {
        collect_files(dir, &mut out);
    }
    out.sort();
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"));
        let ft = entry.file_type().expect("file type");
        if ft.is_dir() {
            collect_files(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// Total length in bytes of all files below `dir` (symlinks count their own size).
pub fn dir_size(dir: &Path) -> u64 {
    list_files(dir)
        .iter()
        .map(|p| fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}
