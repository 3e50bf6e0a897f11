//! The backup source file system, read relative to directory file descriptors. An entry is
//! examined with `lstat` in its parent directory and opened in that same directory with
//! `O_NOFOLLOW|O_NONBLOCK|O_NOCTTY`; the opened inode must be the one examined (same device,
//! inode and type), so an entry swapped for a symlink, a FIFO or another file between the two
//! is never read through. FIFOs, sockets and devices are never opened.
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RawDir};
use std::ffi::OsStr;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(transparent)]
    Io(#[from] rustix::io::Errno),
    #[error("changed during backup: it was replaced after it was examined, and was not read")]
    Changed,
    #[error("not a regular file")]
    NotRegular,
}

impl From<SourceError> for std::io::Error {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Io(errno) => errno.into(),
            other => std::io::Error::other(other),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, SourceError>;

/// What `lstat` (or `fstat`) said about an entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat(rfs::Stat);

impl Stat {
    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.0.st_mode)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub(crate) fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    pub(crate) fn dev(&self) -> u64 {
        self.0.st_dev
    }

    pub(crate) fn ino(&self) -> u64 {
        self.0.st_ino
    }

    pub(crate) fn mode(&self) -> u32 {
        self.0.st_mode
    }

    pub(crate) fn uid(&self) -> u32 {
        self.0.st_uid
    }

    pub(crate) fn gid(&self) -> u32 {
        self.0.st_gid
    }

    pub(crate) fn nlink(&self) -> u64 {
        self.0.st_nlink
    }

    pub(crate) fn rdev(&self) -> u64 {
        self.0.st_rdev
    }

    pub(crate) fn size(&self) -> u64 {
        self.0.st_size as u64
    }

    /// Seconds and nanoseconds.
    pub(crate) fn mtime(&self) -> (i64, i64) {
        (self.0.st_mtime, self.0.st_mtime_nsec as i64)
    }

    /// Seconds and nanoseconds.
    pub(crate) fn ctime(&self) -> (i64, i64) {
        (self.0.st_ctime, self.0.st_ctime_nsec as i64)
    }

    /// The same inode, of the same type: what was opened is what was examined.
    pub(crate) fn same_entry(&self, other: &Stat) -> bool {
        (self.dev(), self.ino(), self.file_type()) == (other.dev(), other.ino(), other.file_type())
    }
}

/// The flags every open of a source entry uses: never follow a final symlink, never block
/// on a FIFO or device, never acquire a controlling terminal.
fn safe_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// An open directory of the backup source.
pub(crate) struct SourceDir {
    fd: OwnedFd,
}

impl SourceDir {
    /// The directory at `path` as the user named it (symlinks in it are followed), with what
    /// `fstat` says about it. For the directories above the backup paths only.
    pub(crate) fn open_named(path: &Path) -> Result<(SourceDir, Stat)> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rfs::open(path, flags, Mode::empty())?;
        let stat = Stat(rfs::fstat(&fd)?);
        Ok((SourceDir { fd }, stat))
    }

    /// The subdirectory `name` as the user named it: like [`SourceDir::open_named`], one level
    /// down.
    pub(crate) fn open_named_child(&self, name: &[u8]) -> Result<(SourceDir, Stat)> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, OsStr::from_bytes(name), flags, Mode::empty())?;
        let stat = Stat(rfs::fstat(&fd)?);
        Ok((SourceDir { fd }, stat))
    }

    /// `lstat` of the entry `name`.
    pub(crate) fn stat(&self, name: &[u8]) -> Result<Stat> {
        let st = rfs::statat(&self.fd, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(Stat(st))
    }

    /// The subdirectory `name`, which must still be the directory `seen` describes.
    pub(crate) fn open_dir(&self, name: &[u8], seen: &Stat) -> Result<SourceDir> {
        if !seen.is_dir() {
            return Err(SourceError::Changed);
        }
        let fd = self.open_checked(name, OFlags::DIRECTORY, seen)?;
        Ok(SourceDir { fd })
    }

    /// The regular file `name` for reading, which must still be the file `seen` describes.
    pub(crate) fn open_file(&self, name: &[u8], seen: &Stat) -> Result<File> {
        if !seen.is_file() {
            return Err(SourceError::NotRegular);
        }
        blocking(self.open_checked(name, OFlags::empty(), seen)?)
    }

    fn open_checked(&self, name: &[u8], extra: OFlags, seen: &Stat) -> Result<OwnedFd> {
        let name = OsStr::from_bytes(name);
        let fd = rfs::openat(&self.fd, name, safe_flags() | extra, Mode::empty())
            .map_err(|e| changed_if_swapped(e, extra))?;
        match Stat(rfs::fstat(&fd)?).same_entry(seen) {
            true => Ok(fd),
            false => Err(SourceError::Changed),
        }
    }

    /// The target of the symlink `name` (`EINVAL`: it is no longer a symlink).
    pub(crate) fn read_link(&self, name: &[u8]) -> Result<Vec<u8>> {
        match rfs::readlinkat(&self.fd, OsStr::from_bytes(name), Vec::new()) {
            Ok(target) => Ok(target.into_bytes()),
            Err(rustix::io::Errno::INVAL) => Err(SourceError::Changed),
            Err(e) => Err(SourceError::Io(e)),
        }
    }

    /// The names in this directory, without `.` and `..`, sorted.
    pub(crate) fn names(&self) -> Result<Vec<Vec<u8>>> {
        let mut buf = vec![MaybeUninit::uninit(); 64 << 10];
        let mut entries = RawDir::new(self.fd.as_fd(), &mut buf);
        let mut names = Vec::new();
        while let Some(entry) = entries.next() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// `O_NOFOLLOW` on a symlink fails with `ELOOP`, `O_DIRECTORY` on a non-directory with
/// `ENOTDIR`: the entry examined as something else has been swapped.
fn changed_if_swapped(e: rustix::io::Errno, extra: OFlags) -> SourceError {
    match e {
        rustix::io::Errno::LOOP => SourceError::Changed,
        rustix::io::Errno::NOTDIR if extra.contains(OFlags::DIRECTORY) => SourceError::Changed,
        e => SourceError::Io(e),
    }
}

/// A regular file opened with [`safe_flags`], switched back to blocking reads. `F_SETFL` sets
/// only the status flags (`O_APPEND`, `O_ASYNC`, `O_DIRECT`, `O_NOATIME`, `O_NONBLOCK`), and of
/// those the file was opened with `O_NONBLOCK` alone: one call, no `F_GETFL`.
fn blocking(fd: OwnedFd) -> Result<File> {
    rfs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// Raises the soft limit on open files to the hard limit: a walk holds one descriptor per
/// directory level it is inside, on every thread. Best effort: the walk reports any entry it
/// then cannot open.
pub(crate) fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fixture() -> (tempfile::TempDir, SourceDir) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("file"), b"public").unwrap();
        std::fs::write(tmp.path().join("secret"), b"secret").unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        let (dir, _) = SourceDir::open_named(tmp.path()).unwrap();
        (tmp, dir)
    }

    fn swap_for_symlink(tmp: &Path, name: &str, target: &str) {
        std::fs::remove_file(tmp.join(name)).unwrap();
        std::os::unix::fs::symlink(target, tmp.join(name)).unwrap();
    }

    #[test]
    fn same_entry_compares_device_inode_and_type() {
        let (_tmp, dir) = fixture();
        let file = dir.stat(b"file").unwrap();
        let secret = dir.stat(b"secret").unwrap();
        assert!(file.same_entry(&dir.stat(b"file").unwrap()));
        assert!(!file.same_entry(&secret), "another inode");
        let mut other_dev = file;
        other_dev.0.st_dev ^= 1;
        assert!(!file.same_entry(&other_dev), "another device");
        let mut other_type = file;
        other_type.0.st_mode = (other_type.0.st_mode & 0o7777) | 0o010000;
        assert!(
            !file.same_entry(&other_type),
            "a FIFO with the same inode number"
        );
    }

    #[test]
    fn a_file_swapped_for_a_symlink_is_not_read_through() {
        let (tmp, dir) = fixture();
        let seen = dir.stat(b"file").unwrap();
        swap_for_symlink(tmp.path(), "file", "secret");
        let err = dir.open_file(b"file", &seen).unwrap_err();
        assert!(matches!(err, SourceError::Changed), "{err}");
    }

    #[test]
    fn a_file_swapped_for_another_file_is_not_read() {
        let (tmp, dir) = fixture();
        let seen = dir.stat(b"file").unwrap();
        std::fs::rename(tmp.path().join("secret"), tmp.path().join("file")).unwrap();
        let err = dir.open_file(b"file", &seen).unwrap_err();
        assert!(matches!(err, SourceError::Changed), "{err}");
    }

    #[test]
    fn a_file_swapped_for_a_fifo_is_not_read_and_does_not_block() {
        let (tmp, dir) = fixture();
        let seen = dir.stat(b"file").unwrap();
        std::fs::remove_file(tmp.path().join("file")).unwrap();
        let fifo = tmp.path().join("file");
        rfs::mknodat(rfs::CWD, &fifo, FileType::Fifo, Mode::from(0o600), 0).unwrap();
        let err = dir.open_file(b"file", &seen).unwrap_err();
        assert!(matches!(err, SourceError::Changed), "{err}");
    }

    #[test]
    fn a_symlink_swapped_for_a_file_is_reported_as_changed() {
        let (tmp, dir) = fixture();
        std::os::unix::fs::symlink("secret", tmp.path().join("link")).unwrap();
        assert_eq!(dir.read_link(b"link").unwrap(), b"secret");
        std::fs::rename(tmp.path().join("file"), tmp.path().join("link")).unwrap();
        let err = dir.read_link(b"link").unwrap_err();
        assert!(matches!(err, SourceError::Changed), "{err}");
    }

    #[test]
    fn a_fifo_is_never_opened() {
        let (tmp, dir) = fixture();
        let fifo = tmp.path().join("fifo");
        rfs::mknodat(rfs::CWD, &fifo, FileType::Fifo, Mode::from(0o600), 0).unwrap();
        let seen = dir.stat(b"fifo").unwrap();
        let err = dir.open_file(b"fifo", &seen).unwrap_err();
        assert!(matches!(err, SourceError::NotRegular), "{err}");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_not_entered() {
        let (tmp, dir) = fixture();
        let seen = dir.stat(b"dir").unwrap();
        std::fs::remove_dir(tmp.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(".", tmp.path().join("dir")).unwrap();
        let err = dir.open_dir(b"dir", &seen).err().unwrap();
        assert!(matches!(err, SourceError::Changed), "{err}");
    }

    #[test]
    fn an_unchanged_file_is_read_in_blocking_mode() {
        let (_tmp, dir) = fixture();
        let seen = dir.stat(b"file").unwrap();
        let mut file = dir.open_file(b"file", &seen).unwrap();
        let flags = rfs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "public");
        assert_eq!(dir.names().unwrap(), [&b"dir"[..], b"file", b"secret"]);
    }
}
