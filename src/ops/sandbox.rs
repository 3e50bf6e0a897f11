//! Writes into a restore target directory without ever leaving it.
//!
//! Restore walks the snapshot tree and, for every directory, holds an open
//! directory file descriptor ([`DirHandle`]). Every entry is created, inspected,
//! removed or modified relative to that descriptor with the `*at` system calls
//! and `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, and every name is a single,
//! validated path component ([`validate_name`]). No path string below the
//! target root is ever built or resolved by the kernel, so neither crafted
//! names in a malicious repository (`..`, `a/b`, ...) nor symlinks that
//! already exist inside the target can redirect a write outside of it.
//!
//! Notes for callers:
//! * Set a directory's final metadata ([`DirHandle::set_dir_meta`]) only after
//!   all of its children are written: a restored read-only mode would
//!   otherwise prevent creating them.
//! * Metadata is set through descriptors only, and only on entries this
//!   restore created: files through their open descriptor, directories
//!   through theirs ([`DirHandle::set_dir_meta`]), symlinks, fifos and device
//!   nodes through the `O_PATH|O_NOFOLLOW` descriptor [`DirHandle::symlink`]
//!   and [`DirHandle::mknod`] pin them with right after creating them
//!   ([`Pinned`]). A pre-existing entry may be a hard link to a file outside
//!   the target, whose owner, mode and times would otherwise change.
//! * Linux only: changing the mode of a pinned entry relies on `O_PATH` and
//!   `/proc/self/fd`, and so does [`DirHandle::open_read`] (with a fallback
//!   when `/proc` is not mounted).
//!
//! [`ReadOnlyDir`] inspects the target the same way (e.g. to plan a restore)
//! but never creates, changes or removes anything, not even the target.
//!
//! The library never prints and never exits; everything is reported through
//! [`SandboxError`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;

/// Suffix appended to a name by [`OnConflict::Rename`].
const RENAME_SUFFIX: &[u8] = b".strata-restored";
/// How many `.strata-restored[-N]` candidates [`OnConflict::Rename`] tries.
const MAX_RENAMES: u32 = 10_000;
/// How often an operation is retried when the entry changes under our feet.
const MAX_ATTEMPTS: usize = 8;
/// Path used in errors about an open file whose name is not known here.
const OPEN_FILE: &str = "<open file>";
/// Mode of new files and special files until their final mode is set.
const PRIVATE_FILE: Mode = Mode::from_raw_mode(0o600);
/// Mode of new directories until their final mode is set.
const PRIVATE_DIR: Mode = Mode::from_raw_mode(0o700);

/// Errors of the sandbox. Paths are relative to the target root, lossily
/// converted to UTF-8, and shown quoted (control characters escaped) so a
/// crafted name cannot inject terminal escape sequences into messages.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A name that is not a single, normal path component.
    #[error("invalid file name {name:?}: empty, \".\", \"..\", or contains '/' or NUL")]
    InvalidName { name: String },
    /// Something already exists where an entry was to be created.
    #[error("{path:?}: already exists")]
    Conflict { path: String },
    /// The restore target is not a directory.
    #[error("{path:?}: not a directory")]
    NotADirectory { path: String },
    /// An entry is no longer the inode this restore created or inspected.
    #[error("{path:?}: was replaced meanwhile")]
    Replaced { path: String },
    /// A non-empty directory is in the way of an entry to be overwritten.
    #[error("{path:?}: a non-empty directory is in the way")]
    DirNotEmpty { path: String },
    /// A symlink target that cannot be stored (empty or containing NUL).
    #[error("{path:?}: invalid symlink target {target:?}")]
    InvalidSymlinkTarget { path: String, target: String },
    /// Metadata that cannot be applied (e.g. nanoseconds >= 10^9, id -1).
    #[error("{path:?}: invalid metadata: {reason}")]
    InvalidMeta { path: String, reason: &'static str },
    /// A system call failed.
    #[error("{path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Result type of this module.
pub(crate) type Result<T> = std::result::Result<T, SandboxError>;

/// What to do when something already exists where an entry is to be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Return [`SandboxError::Conflict`].
    Fail,
    /// Leave the existing entry alone and report [`Placed::Skipped`].
    Skip,
    /// Remove the existing entry (never a non-empty directory) and create.
    Overwrite,
    /// Keep the existing entry and create `name.strata-restored[-N]`.
    Rename,
}

/// Metadata to apply to a restored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Meta {
    /// Permission bits including setuid/setgid/sticky (masked with 0o7777).
    pub mode: u32,
    /// Modification time (also used as access time), seconds since the epoch.
    pub mtime_sec: i64,
    /// Nanoseconds part of the modification time; must be < 1_000_000_000.
    pub mtime_nsec: u32,
    /// Owner to set, if any.
    pub uid: Option<u32>,
    /// Group to set, if any.
    pub gid: Option<u32>,
}

/// What exists at a name (without following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    None,
    Dir,
    File,
    Symlink,
    Other,
}

/// A special file [`DirHandle::mknod`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    Fifo,
    CharDevice,
    BlockDevice,
}

impl Special {
    fn file_type(self) -> FileType {
        match self {
            Special::Fifo => FileType::Fifo,
            Special::CharDevice => FileType::CharacterDevice,
            Special::BlockDevice => FileType::BlockDevice,
        }
    }
}

/// Outcome of creating an entry.
#[derive(Debug)]
pub(crate) enum Placed<T> {
    /// The entry was created; the name actually used (differs from the
    /// requested one with [`OnConflict::Rename`]).
    Written(T, Vec<u8>),
    /// Something existed and [`OnConflict::Skip`] left it alone.
    Skipped,
}

/// Rejects names that are empty, ".", "..", or contain b'/' or NUL.
pub(crate) fn validate_name(name: &[u8]) -> Result<()> {
    let bad = name.is_empty()
        || name == b"."
        || name == b".."
        || name.iter().any(|&b| b == b'/' || b == 0);
    if bad {
        return Err(SandboxError::InvalidName { name: lossy(name) });
    }
    Ok(())
}

/// The opened restore target root.
#[derive(Debug)]
pub(crate) struct Sandbox {
    root: DirHandle,
}

impl Sandbox {
    /// Creates the target directory (and parents, with std::fs::create_dir_all — the target path itself is trusted user input) and opens it.
    pub(crate) fn open(target: &Path) -> Result<Sandbox> {
        std::fs::create_dir_all(target).map_err(|source| SandboxError::Io {
            path: target.to_string_lossy().into_owned(),
            op: "create target directory",
            source,
        })?;
        let fd = open_target_dir(target).map_err(|e| target_error(target, e))?;
        let root = DirHandle::root(fd).map_err(|e| target_error(target, e))?;
        Ok(Sandbox { root })
    }

    /// A handle to the root (shares the descriptor).
    pub(crate) fn root(&self) -> DirHandle {
        self.root.clone()
    }
}

/// A directory of the target opened for inspection only: it offers no way to
/// create, change or remove anything. Subdirectories are opened one validated
/// component at a time without following symlinks, as with [`DirHandle`].
#[derive(Debug, Clone)]
pub(crate) struct ReadOnlyDir {
    dir: DirHandle,
}

impl ReadOnlyDir {
    /// Opens the restore target without creating it: `None` when it does not
    /// exist. Like [`Sandbox::open`], a symlink at `target` itself is followed
    /// (the target path is trusted user input).
    pub(crate) fn open_target(target: &Path) -> Result<Option<ReadOnlyDir>> {
        match open_target_dir(target).and_then(DirHandle::root) {
            Ok(dir) => Ok(Some(ReadOnlyDir { dir })),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(target_error(target, e)),
        }
    }

    /// What exists at `name` (lstat semantics, never follows a symlink).
    pub(crate) fn existing(&self, name: &[u8]) -> Result<Existing> {
        self.dir.existing(name)
    }

    /// Opens the existing subdirectory `name`; anything else there (a symlink
    /// included, which is never followed) or nothing is an error.
    pub(crate) fn subdir(&self, name: &[u8]) -> Result<ReadOnlyDir> {
        let dir = self.dir.subdir(name)?;
        Ok(ReadOnlyDir { dir })
    }

    /// Which directory this is (device and inode).
    pub(crate) fn identity(&self) -> Identity {
        self.dir.identity()
    }

    /// Opens the subdirectory `name` again, provided it still is the
    /// directory `id` (see [`DirHandle::reopen`]).
    pub(crate) fn reopen(&self, name: &[u8], id: Identity) -> Result<ReadOnlyDir> {
        let dir = self.dir.reopen(name, id)?;
        Ok(ReadOnlyDir { dir })
    }
}

/// Which file an entry is: its device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(st: &Stat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// An open directory inside the target plus its path relative to the target
/// root (empty for the root itself), used for error messages only.
#[derive(Debug, Clone)]
pub(crate) struct DirHandle {
    fd: Arc<OwnedFd>,
    rel: Vec<u8>,
    id: Identity,
}

impl DirHandle {
    /// Which directory this is (device and inode).
    pub(crate) fn identity(&self) -> Identity {
        self.id
    }

    /// The same directory, for inspection only (shares the descriptor).
    pub(crate) fn read_only(&self) -> ReadOnlyDir {
        ReadOnlyDir { dir: self.clone() }
    }

    /// Opens the existing subdirectory `name` without creating anything; a
    /// symlink there is never followed and, like anything else that is not a
    /// directory, is an error.
    pub(crate) fn subdir(&self, name: &[u8]) -> Result<DirHandle> {
        validate_name(name)?;
        let fd = self
            .open_subdir(name)
            .map_err(|e| self.io_err(name, "open directory", e))?;
        self.child(name, fd)
    }

    /// Opens the subdirectory `name` again after its descriptor was closed,
    /// provided it still is the directory `id`: a directory moved or replaced
    /// meanwhile is [`SandboxError::Replaced`], never entered.
    pub(crate) fn reopen(&self, name: &[u8], id: Identity) -> Result<DirHandle> {
        let dir = self.subdir(name)?;
        if dir.id != id {
            return Err(self.replaced(name));
        }
        Ok(dir)
    }

    /// Path of this directory relative to the target root (empty for the root).
    pub(crate) fn rel_path(&self) -> &[u8] {
        &self.rel
    }

    /// What exists at `name` (lstat semantics, never follows a symlink).
    pub(crate) fn existing(&self, name: &[u8]) -> Result<Existing> {
        validate_name(name)?;
        self.lstat_kind(name)
    }

    /// Opens the subdirectory `name`, creating it (mode 0o700; the final mode
    /// is set later by [`DirHandle::set_dir_meta`]) if missing. A symlink or
    /// other non-directory at `name` is removed with
    /// [`OnConflict::Overwrite`] and is a [`SandboxError::Conflict`]
    /// otherwise. Never follows a symlink.
    pub(crate) fn dir(&self, name: &[u8], on_conflict: OnConflict) -> Result<DirHandle> {
        validate_name(name)?;
        for _ in 0..MAX_ATTEMPTS {
            match self.open_subdir(name) {
                Ok(fd) => return self.child(name, fd),
                Err(Errno::NOENT) => self.mkdir(name)?,
                Err(Errno::NOTDIR | Errno::LOOP) => self.clear_for_dir(name, on_conflict)?,
                Err(e) => return Err(self.io_err(name, "open directory", e)),
            }
        }
        Err(self.conflict(name))
    }

    /// Creates a regular file `name` for writing (`O_CREAT|O_EXCL|O_NOFOLLOW`,
    /// mode 0o600; the final mode is set later), resolving an existing entry
    /// according to `on_conflict`.
    pub(crate) fn create_file(&self, name: &[u8], on_conflict: OnConflict) -> Result<Placed<File>> {
        validate_name(name)?;
        self.place(name, on_conflict, "create file", |n| {
            self.create_excl(n).map(File::from)
        })
    }

    /// Creates a symlink `name` -> `target` and pins it ([`Pinned`]). The
    /// target is stored verbatim (it may point anywhere; it is never followed
    /// by this module). Same conflict rules as [`DirHandle::create_file`].
    pub(crate) fn symlink(
        &self,
        name: &[u8],
        target: &[u8],
        on_conflict: OnConflict,
    ) -> Result<Placed<Pinned>> {
        validate_name(name)?;
        if target.is_empty() || target.contains(&0) {
            return Err(SandboxError::InvalidSymlinkTarget {
                path: self.shown(name),
                target: lossy(target),
            });
        }
        let placed = self.place(name, on_conflict, "create symlink", |n| {
            rfs::symlinkat(target, self.fd(), n)
        })?;
        self.pin_placed(placed, |fd| {
            let st = rfs::fstat(fd)?;
            let link = rfs::readlinkat(fd, "", Vec::new())?;
            Ok(kind_of(&st) == Existing::Symlink && link.as_bytes() == target)
        })
    }

    /// Creates the fifo or device node `name` with `mknodat` (mode 0o600; the
    /// final mode is set later with [`Pinned::set_meta`]) and pins it. Same
    /// conflict rules as [`DirHandle::create_file`]. Device nodes need
    /// privileges.
    pub(crate) fn mknod(
        &self,
        name: &[u8],
        kind: Special,
        rdev: u64,
        on_conflict: OnConflict,
    ) -> Result<Placed<Pinned>> {
        validate_name(name)?;
        let file_type = kind.file_type();
        let placed = self.place(name, on_conflict, "mknod", |n| {
            rfs::mknodat(self.fd(), n, file_type, PRIVATE_FILE, rdev)
        })?;
        self.pin_placed(placed, |fd| {
            let st = rfs::fstat(fd)?;
            let is_device = kind != Special::Fifo;
            Ok(FileType::from_raw_mode(st.st_mode) == file_type
                && (!is_device || st.st_rdev == rdev))
        })
    }

    /// The first of the names [`OnConflict::Rename`] tries for `name`
    /// (`name.strata-restored`, `name.strata-restored-2`, ...) at which
    /// nothing exists right now.
    pub(crate) fn free_name(&self, name: &[u8]) -> Result<Vec<u8>> {
        validate_name(name)?;
        for candidate in rename_candidates(name) {
            if self.lstat_kind(&candidate)? == Existing::None {
                return Ok(candidate);
            }
        }
        Err(self.conflict(name))
    }

    /// Removes the entry `name` provided it still is the file `file` refers
    /// to (same device and inode), e.g. a partially written file.
    pub(crate) fn remove_if_same(&self, name: &[u8], file: &File) -> Result<()> {
        validate_name(name)?;
        let ours = self.fstat(name, file.as_fd())?;
        let there = rfs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io_err(name, "lstat", e))?;
        if !same_inode(&there, &ours) {
            return Err(self.replaced(name));
        }
        rfs::unlinkat(self.fd(), name, AtFlags::empty()).map_err(|e| self.io_err(name, "remove", e))
    }

    /// A new read-only descriptor of exactly the file `file` refers to, which
    /// is `name` in this directory. It is reopened through `/proc/self/fd`,
    /// or by name without following a symlink when `/proc` is not mounted,
    /// and checked to be the same inode either way.
    pub(crate) fn open_read(&self, name: &[u8], file: &File) -> Result<File> {
        validate_name(name)?;
        let ours = self.fstat(name, file.as_fd())?;
        let fd = match reopen_via_procfs(file.as_fd()) {
            Err(Errno::NOENT) => self.open_read_nofollow(name, OFlags::empty()),
            other => other,
        }
        .map_err(|e| self.io_err(name, "reopen for reading", e))?;
        if !same_inode(&self.fstat(name, fd.as_fd())?, &ours) {
            return Err(self.replaced(name));
        }
        Ok(File::from(fd))
    }

    /// Sets owner, mode and times of this directory itself via its descriptor.
    pub(crate) fn set_dir_meta(&self, meta: &Meta) -> Result<()> {
        let path = self.shown_self();
        apply_fd_meta(self.fd(), meta, path)
    }

    fn root(fd: OwnedFd) -> rustix::io::Result<DirHandle> {
        let id = Identity::of(&rfs::fstat(&fd)?);
        Ok(DirHandle {
            fd: Arc::new(fd),
            rel: Vec::new(),
            id,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Relative path of the entry `name` in this directory.
    fn child_rel(&self, name: &[u8]) -> Vec<u8> {
        if self.rel.is_empty() {
            return name.to_vec();
        }
        let mut rel = Vec::with_capacity(self.rel.len() + 1 + name.len());
        rel.extend_from_slice(&self.rel);
        rel.push(b'/');
        rel.extend_from_slice(name);
        rel
    }

    fn child(&self, name: &[u8], fd: OwnedFd) -> Result<DirHandle> {
        let id = Identity::of(&self.fstat(name, fd.as_fd())?);
        Ok(DirHandle {
            fd: Arc::new(fd),
            rel: self.child_rel(name),
            id,
        })
    }

    fn shown(&self, name: &[u8]) -> String {
        lossy(&self.child_rel(name))
    }

    fn shown_self(&self) -> String {
        if self.rel.is_empty() {
            return ".".to_owned();
        }
        lossy(&self.rel)
    }

    fn io_err(&self, name: &[u8], op: &'static str, e: Errno) -> SandboxError {
        io_error(self.shown(name), op, e)
    }

    fn conflict(&self, name: &[u8]) -> SandboxError {
        SandboxError::Conflict {
            path: self.shown(name),
        }
    }

    fn replaced(&self, name: &[u8]) -> SandboxError {
        SandboxError::Replaced {
            path: self.shown(name),
        }
    }

    fn invalid_meta(&self, name: &[u8], reason: &'static str) -> SandboxError {
        SandboxError::InvalidMeta {
            path: self.shown(name),
            reason,
        }
    }

    /// Pins the entry a `place` call created: opens it with
    /// `O_PATH|O_NOFOLLOW` and checks with `is_ours` that it is what was
    /// created (the name may have been swapped in between).
    fn pin_placed(
        &self,
        placed: Placed<()>,
        is_ours: impl Fn(BorrowedFd<'_>) -> rustix::io::Result<bool>,
    ) -> Result<Placed<Pinned>> {
        let Placed::Written((), used) = placed else {
            return Ok(Placed::Skipped);
        };
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(self.fd(), &used, flags, Mode::empty())
            .map_err(|e| self.io_err(&used, "open created entry", e))?;
        if !is_ours(fd.as_fd()).map_err(|e| self.io_err(&used, "inspect created entry", e))? {
            return Err(self.replaced(&used));
        }
        let pinned = Pinned {
            fd,
            dir: self.clone(),
            name: used.clone(),
        };
        Ok(Placed::Written(pinned, used))
    }

    fn lstat_kind(&self, name: &[u8]) -> Result<Existing> {
        match rfs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(kind_of(&st)),
            Err(Errno::NOENT) => Ok(Existing::None),
            Err(e) => Err(self.io_err(name, "lstat", e)),
        }
    }

    fn fstat(&self, name: &[u8], fd: BorrowedFd<'_>) -> Result<Stat> {
        rfs::fstat(fd).map_err(|e| self.io_err(name, "fstat", e))
    }

    fn open_subdir(&self, name: &[u8]) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rfs::openat(self.fd(), name, flags, Mode::empty())
    }

    /// Opens `name` for reading (plus `extra` flags) without following a
    /// symlink and without blocking on a fifo.
    fn open_read_nofollow(&self, name: &[u8], extra: OFlags) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC
            | extra;
        rfs::openat(self.fd(), name, flags, Mode::empty())
    }

    fn create_excl(&self, name: &[u8]) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        rfs::openat(self.fd(), name, flags, PRIVATE_FILE)
    }

    /// Creates the directory `name`; one that appeared meanwhile is fine.
    fn mkdir(&self, name: &[u8]) -> Result<()> {
        match rfs::mkdirat(self.fd(), name, PRIVATE_DIR) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(self.io_err(name, "create directory", e)),
        }
    }

    /// A non-directory is where a directory should be.
    fn clear_for_dir(&self, name: &[u8], on_conflict: OnConflict) -> Result<()> {
        if on_conflict != OnConflict::Overwrite {
            return Err(self.conflict(name));
        }
        self.remove_entry(name)
    }

    /// Removes whatever is at `name` (an empty directory too, never a
    /// non-empty one). Never follows a symlink: unlinking one removes the
    /// link itself.
    fn remove_entry(&self, name: &[u8]) -> Result<()> {
        let (flags, op) = match self.lstat_kind(name)? {
            Existing::None => return Ok(()),
            Existing::Dir => (AtFlags::REMOVEDIR, "remove directory"),
            _ => (AtFlags::empty(), "remove"),
        };
        match rfs::unlinkat(self.fd(), name, flags) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Err(SandboxError::DirNotEmpty {
                path: self.shown(name),
            }),
            Err(e) => Err(self.io_err(name, op, e)),
        }
    }

    /// Runs `create` (which must fail with `EEXIST` rather than replace or
    /// follow anything) for `name`, resolving conflicts per `on_conflict`.
    fn place<T>(
        &self,
        name: &[u8],
        on_conflict: OnConflict,
        op: &'static str,
        create: impl Fn(&[u8]) -> rustix::io::Result<T>,
    ) -> Result<Placed<T>> {
        for _ in 0..MAX_ATTEMPTS {
            match create(name) {
                Ok(v) => return Ok(Placed::Written(v, name.to_vec())),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(self.io_err(name, op, e)),
            }
            match on_conflict {
                OnConflict::Fail => return Err(self.conflict(name)),
                OnConflict::Skip => return Ok(Placed::Skipped),
                OnConflict::Overwrite => self.remove_entry(name)?,
                OnConflict::Rename => return self.place_renamed(name, op, &create),
            }
        }
        Err(self.conflict(name))
    }

    /// Creates `name.strata-restored`, `name.strata-restored-2`, ... whichever
    /// is free first.
    fn place_renamed<T>(
        &self,
        name: &[u8],
        op: &'static str,
        create: &impl Fn(&[u8]) -> rustix::io::Result<T>,
    ) -> Result<Placed<T>> {
        for candidate in rename_candidates(name) {
            match create(&candidate) {
                Ok(v) => return Ok(Placed::Written(v, candidate)),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(self.io_err(&candidate, op, e)),
            }
        }
        Err(self.conflict(name))
    }
}

/// A symlink, fifo or device node this restore created, held by an
/// `O_PATH|O_NOFOLLOW` descriptor: its metadata is set on exactly that inode,
/// even when its name is swapped or renamed away meanwhile.
#[derive(Debug)]
pub(crate) struct Pinned {
    fd: OwnedFd,
    /// Where it was created, for errors and the by-name fallback of times.
    dir: DirHandle,
    name: Vec<u8>,
}

impl Pinned {
    /// Sets owner (when `Some`), mode (not on a symlink, whose mode Linux
    /// cannot change) and mtime/atime (= mtime) of the pinned inode: owner
    /// with `fchownat(fd, "", AT_EMPTY_PATH)`, mode through the
    /// `/proc/self/fd` magic link, times with `utimensat(fd, "",
    /// AT_EMPTY_PATH)` (see [`Pinned::set_times`]).
    pub(crate) fn set_meta(&self, meta: &Meta) -> Result<()> {
        let m = Checked::new(meta).map_err(|reason| self.dir.invalid_meta(&self.name, reason))?;
        let err = |op| move |e| self.dir.io_err(&self.name, op, e);
        if m.uid.is_some() || m.gid.is_some() {
            rfs::chownat(&self.fd, "", m.uid, m.gid, AtFlags::EMPTY_PATH).map_err(err("chown"))?;
        }
        let st = rfs::fstat(&self.fd).map_err(err("fstat"))?;
        if kind_of(&st) != Existing::Symlink {
            chmod_via_procfs(self.fd.as_fd(), m.mode).map_err(err("chmod"))?;
        }
        self.set_times(&m.times, &st)
    }

    /// `utimensat(fd, "", AT_EMPTY_PATH)` acts on the pinned inode itself
    /// (symlinks included). Kernels without `AT_EMPTY_PATH` for `utimensat`
    /// (before 5.8) answer `EINVAL`; then the times are set by name without
    /// following a symlink, and the name is checked to be the pinned inode
    /// right before and after, so a swap is reported as
    /// [`SandboxError::Replaced`].
    fn set_times(&self, times: &Timestamps, pinned: &Stat) -> Result<()> {
        let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
        match rfs::utimensat(&self.fd, "", times, flags) {
            Err(Errno::INVAL) => self.set_times_by_name(times, pinned),
            other => other.map_err(|e| self.dir.io_err(&self.name, "set times", e)),
        }
    }

    fn set_times_by_name(&self, times: &Timestamps, pinned: &Stat) -> Result<()> {
        let (dir, name) = (&self.dir, self.name.as_slice());
        let still_ours = || -> Result<()> {
            let there = rfs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| dir.io_err(name, "lstat", e))?;
            match same_inode(&there, pinned) {
                true => Ok(()),
                false => Err(dir.replaced(name)),
            }
        };
        still_ours()?;
        rfs::utimensat(dir.fd(), name, times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| dir.io_err(name, "set times", e))?;
        still_ours()
    }
}

/// Sets owner, mode and times of an open regular file via its descriptor.
pub(crate) fn set_file_meta(file: &File, meta: &Meta) -> Result<()> {
    apply_fd_meta(file.as_fd(), meta, OPEN_FILE.to_owned())
}

/// `meta` validated and converted for the system calls.
struct Checked {
    uid: Option<Uid>,
    gid: Option<Gid>,
    mode: Mode,
    times: Timestamps,
}

impl Checked {
    fn new(meta: &Meta) -> std::result::Result<Checked, &'static str> {
        if meta.mtime_nsec >= 1_000_000_000 {
            return Err("mtime nanoseconds out of range");
        }
        if meta.uid == Some(u32::MAX) || meta.gid == Some(u32::MAX) {
            return Err("owner id -1");
        }
        let time = Timespec {
            tv_sec: meta.mtime_sec,
            tv_nsec: meta.mtime_nsec.into(),
        };
        Ok(Checked {
            uid: meta.uid.map(Uid::from_raw),
            gid: meta.gid.map(Gid::from_raw),
            mode: Mode::from_bits_truncate(meta.mode & 0o7777),
            times: Timestamps {
                last_access: time,
                last_modification: time,
            },
        })
    }
}

/// Owner first (it may clear setuid/setgid bits), then mode, then times.
fn apply_fd_meta(fd: BorrowedFd<'_>, meta: &Meta, path: String) -> Result<()> {
    let m = match Checked::new(meta) {
        Ok(m) => m,
        Err(reason) => return Err(SandboxError::InvalidMeta { path, reason }),
    };
    if m.uid.is_some() || m.gid.is_some() {
        rfs::fchown(fd, m.uid, m.gid).map_err(|e| io_error(path.clone(), "chown", e))?;
    }
    rfs::fchmod(fd, m.mode).map_err(|e| io_error(path.clone(), "chmod", e))?;
    rfs::futimens(fd, &m.times).map_err(|e| io_error(path, "set times", e))
}

/// `chmod` through the `/proc/self/fd` magic link of a pinned (`O_PATH`)
/// descriptor: it resolves to exactly that inode, not to a path below the
/// target, and the descriptor is known not to be a symlink.
fn chmod_via_procfs(fd: BorrowedFd<'_>, mode: Mode) -> rustix::io::Result<()> {
    rfs::chmod(procfs_path(fd), mode)
}

/// Opens the file of `fd` anew, read-only, through its `/proc/self/fd` magic
/// link (which resolves to exactly that inode).
fn reopen_via_procfs(fd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC;
    rfs::open(procfs_path(fd), flags, Mode::empty())
}

fn procfs_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens the restore target (following a symlink: trusted user input).
fn open_target_dir(target: &Path) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rfs::openat(rfs::CWD, target, flags, Mode::empty())
}

fn target_error(target: &Path, e: Errno) -> SandboxError {
    let path = target.to_string_lossy().into_owned();
    match e {
        Errno::NOTDIR => SandboxError::NotADirectory { path },
        e => io_error(path, "open target directory", e),
    }
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

fn kind_of(st: &Stat) -> Existing {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Existing::Dir,
        FileType::RegularFile => Existing::File,
        FileType::Symlink => Existing::Symlink,
        _ => Existing::Other,
    }
}

/// The names [`OnConflict::Rename`] tries, in order.
fn rename_candidates(name: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (1..=MAX_RENAMES).map(move |n| renamed(name, n))
}

/// `name.strata-restored` for `n == 1`, `name.strata-restored-N` otherwise.
fn renamed(name: &[u8], n: u32) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(RENAME_SUFFIX);
    if n > 1 {
        out.extend_from_slice(format!("-{n}").as_bytes());
    }
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn io_error(path: String, op: &'static str, e: Errno) -> SandboxError {
    SandboxError::Io {
        path,
        op,
        source: io::Error::from(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use tempfile::TempDir;

    /// A temp dir holding `target/` (the sandbox) and `outside/` (must stay empty).
    struct Fixture {
        _tmp: TempDir,
        target: PathBuf,
        outside: PathBuf,
        sandbox: Sandbox,
    }

    fn fixture() -> Fixture {
        let tmp = TempDir::new().unwrap();
        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let sandbox = Sandbox::open(&target).unwrap();
        Fixture {
            _tmp: tmp,
            target,
            outside,
            sandbox,
        }
    }

    fn assert_empty(dir: &Path) {
        let entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            entries.is_empty(),
            "{} not empty: {entries:?}",
            dir.display()
        );
    }

    /// Creates `name` and writes `data` into it (when it was placed).
    fn write_file(dir: &DirHandle, name: &[u8], on: OnConflict, data: &[u8]) -> Placed<File> {
        let mut placed = dir.create_file(name, on).unwrap();
        if let Placed::Written(f, _) = &mut placed {
            f.write_all(data).unwrap();
        }
        placed
    }

    fn meta(mode: u32, mtime_sec: i64, mtime_nsec: u32) -> Meta {
        Meta {
            mode,
            mtime_sec,
            mtime_nsec,
            uid: None,
            gid: None,
        }
    }

    #[test]
    fn validate_name_rejects_and_accepts() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", b"/", b"../x"] {
            assert!(
                matches!(validate_name(bad), Err(SandboxError::InvalidName { .. })),
                "{bad:?} must be rejected"
            );
        }
        for good in [&b"a b"[..], b"\n", b"\xff\xfe", b"...", b".hidden", b"a"] {
            assert!(validate_name(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn methods_validate_names() {
        let fx = fixture();
        let root = fx.sandbox.root();
        assert!(matches!(
            root.existing(b".."),
            Err(SandboxError::InvalidName { .. })
        ));
        assert!(matches!(
            root.dir(b"..", OnConflict::Overwrite),
            Err(SandboxError::InvalidName { .. })
        ));
        assert!(matches!(
            root.create_file(b"../x", OnConflict::Overwrite),
            Err(SandboxError::InvalidName { .. })
        ));
        assert!(matches!(
            root.symlink(b"a/b", b"x", OnConflict::Overwrite),
            Err(SandboxError::InvalidName { .. })
        ));
        assert!(matches!(
            root.mknod(b".", Special::Fifo, 0, OnConflict::Overwrite),
            Err(SandboxError::InvalidName { .. })
        ));
        assert_empty(&fx.target);
        assert_empty(&fx.outside);
    }

    #[test]
    fn handles_are_send_sync_and_track_paths() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DirHandle>();
        assert_send_sync::<Sandbox>();
        let fx = fixture();
        let root = fx.sandbox.root();
        assert_eq!(root.rel_path(), b"");
        let a = root.dir(b"a", OnConflict::Fail).unwrap();
        let b = a.dir(b"b\xff", OnConflict::Fail).unwrap();
        assert_eq!(b.rel_path(), b"a/b\xff");
        assert!(fx.target.join("a").is_dir());
        // Opening an existing directory again works and is the same directory.
        let a2 = root.dir(b"a", OnConflict::Fail).unwrap();
        assert_eq!(a2.existing(b"b\xff").unwrap(), Existing::Dir);
    }

    #[test]
    fn existing_reports_kinds_without_following() {
        let fx = fixture();
        let root = fx.sandbox.root();
        fs::create_dir(fx.target.join("d")).unwrap();
        fs::write(fx.target.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&fx.outside, fx.target.join("l")).unwrap();
        assert_eq!(root.existing(b"d").unwrap(), Existing::Dir);
        assert_eq!(root.existing(b"f").unwrap(), Existing::File);
        assert_eq!(root.existing(b"l").unwrap(), Existing::Symlink);
        assert_eq!(root.existing(b"missing").unwrap(), Existing::None);
    }

    #[test]
    fn dir_through_symlink_fails_and_writes_nothing_outside() {
        let fx = fixture();
        let root = fx.sandbox.root();
        std::os::unix::fs::symlink(&fx.outside, fx.target.join("evil")).unwrap();
        for on in [OnConflict::Fail, OnConflict::Skip, OnConflict::Rename] {
            let err = root.dir(b"evil", on).unwrap_err();
            assert!(
                matches!(&err, SandboxError::Conflict { path } if path == "evil"),
                "{err}"
            );
        }
        assert!(
            fs::symlink_metadata(fx.target.join("evil"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_empty(&fx.outside);
    }

    #[test]
    fn dir_overwrite_replaces_symlink_with_real_dir() {
        let fx = fixture();
        let root = fx.sandbox.root();
        std::os::unix::fs::symlink(&fx.outside, fx.target.join("evil")).unwrap();
        let evil = root.dir(b"evil", OnConflict::Overwrite).unwrap();
        write_file(&evil, b"payload", OnConflict::Fail, b"data");
        let md = fs::symlink_metadata(fx.target.join("evil")).unwrap();
        assert!(md.file_type().is_dir());
        assert_eq!(fs::read(fx.target.join("evil/payload")).unwrap(), b"data");
        assert_empty(&fx.outside);
    }

    #[test]
    fn dir_overwrite_replaces_file_but_not_without_overwrite() {
        let fx = fixture();
        let root = fx.sandbox.root();
        fs::write(fx.target.join("f"), b"x").unwrap();
        assert!(matches!(
            root.dir(b"f", OnConflict::Fail),
            Err(SandboxError::Conflict { .. })
        ));
        assert!(fx.target.join("f").is_file());
        root.dir(b"f", OnConflict::Overwrite).unwrap();
        assert!(fx.target.join("f").is_dir());
    }

    #[test]
    fn create_file_never_writes_through_symlink() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let victim = fx.outside.join("victim");
        fs::write(&victim, b"original").unwrap();
        std::os::unix::fs::symlink(&victim, fx.target.join("link")).unwrap();
        std::os::unix::fs::symlink(fx.outside.join("new"), fx.target.join("dangling")).unwrap();

        for name in [&b"link"[..], b"dangling"] {
            let err = root.create_file(name, OnConflict::Fail).unwrap_err();
            assert!(matches!(err, SandboxError::Conflict { .. }), "{err}");
        }
        for name in [&b"link"[..], b"dangling"] {
            write_file(&root, name, OnConflict::Overwrite, b"restored");
            let md = fs::symlink_metadata(fx.target.join(String::from_utf8_lossy(name).as_ref()))
                .unwrap();
            assert!(md.file_type().is_file());
        }
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert!(!fx.outside.join("new").exists());
        assert_eq!(fs::read(fx.target.join("link")).unwrap(), b"restored");
    }

    #[test]
    fn create_file_conflict_modes() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let path = fx.target.join("f");
        fs::write(&path, b"old").unwrap();

        let err = root.create_file(b"f", OnConflict::Fail).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Conflict { path } if path == "f"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"old");

        assert!(matches!(
            write_file(&root, b"f", OnConflict::Skip, b"new"),
            Placed::Skipped
        ));
        assert_eq!(fs::read(&path).unwrap(), b"old");

        let Placed::Written(_, used) = root.create_file(b"f", OnConflict::Rename).unwrap() else {
            panic!("rename must write");
        };
        assert_eq!(used, b"f.strata-restored");
        let Placed::Written(mut file, used) = root.create_file(b"f", OnConflict::Rename).unwrap()
        else {
            panic!("rename must write");
        };
        assert_eq!(used, b"f.strata-restored-2");
        file.write_all(b"renamed").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(
            fs::read(fx.target.join("f.strata-restored-2")).unwrap(),
            b"renamed"
        );

        let Placed::Written(mut file, used) =
            root.create_file(b"f", OnConflict::Overwrite).unwrap()
        else {
            panic!("overwrite must write");
        };
        assert_eq!(used, b"f");
        file.write_all(b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn create_file_has_private_mode_and_overwrite_respects_dirs() {
        let fx = fixture();
        let root = fx.sandbox.root();
        write_file(&root, b"p", OnConflict::Fail, b"");
        let mode = fs::metadata(fx.target.join("p"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "new files must not be group/world accessible: {mode:o}"
        );

        fs::create_dir(fx.target.join("full")).unwrap();
        fs::write(fx.target.join("full/keep"), b"k").unwrap();
        let err = root
            .create_file(b"full", OnConflict::Overwrite)
            .unwrap_err();
        assert!(matches!(err, SandboxError::DirNotEmpty { .. }), "{err}");
        assert_eq!(fs::read(fx.target.join("full/keep")).unwrap(), b"k");

        fs::create_dir(fx.target.join("empty")).unwrap();
        write_file(&root, b"empty", OnConflict::Overwrite, b"e");
        assert_eq!(fs::read(fx.target.join("empty")).unwrap(), b"e");
    }

    #[test]
    fn symlink_targets_are_stored_verbatim_and_not_followed() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let sub = root.dir(b"sub", OnConflict::Fail).unwrap();
        let abs = fx.outside.join("abs-target");
        let abs_bytes = abs.as_os_str().as_encoded_bytes();

        assert!(matches!(
            sub.symlink(b"abs", abs_bytes, OnConflict::Fail).unwrap(),
            Placed::Written(_, _)
        ));
        assert!(matches!(
            sub.symlink(b"up", b"../../outside/up", OnConflict::Fail)
                .unwrap(),
            Placed::Written(_, _)
        ));
        assert_eq!(fs::read_link(fx.target.join("sub/abs")).unwrap(), abs);
        assert_eq!(
            fs::read_link(fx.target.join("sub/up")).unwrap(),
            Path::new("../../outside/up")
        );

        // Writing a file or directory at those names never goes through them.
        assert!(matches!(
            sub.create_file(b"abs", OnConflict::Fail),
            Err(SandboxError::Conflict { .. })
        ));
        assert!(matches!(
            sub.dir(b"up", OnConflict::Fail),
            Err(SandboxError::Conflict { .. })
        ));
        assert_empty(&fx.outside);

        // Conflict rules apply to symlinks as well.
        assert!(matches!(
            sub.symlink(b"up", b"x", OnConflict::Skip).unwrap(),
            Placed::Skipped
        ));
        let Placed::Written(_, used) = sub.symlink(b"up", b"x", OnConflict::Rename).unwrap() else {
            panic!("rename must write");
        };
        assert_eq!(used, b"up.strata-restored");
        sub.symlink(b"up", b"y", OnConflict::Overwrite).unwrap();
        assert_eq!(
            fs::read_link(fx.target.join("sub/up")).unwrap(),
            Path::new("y")
        );
        let err = sub.symlink(b"up", b"z", OnConflict::Fail).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Conflict { path } if path == "sub/up"),
            "{err}"
        );
        assert!(matches!(
            sub.symlink(b"bad", b"", OnConflict::Fail),
            Err(SandboxError::InvalidSymlinkTarget { .. })
        ));
        assert!(matches!(
            sub.symlink(b"bad", b"a\0b", OnConflict::Fail),
            Err(SandboxError::InvalidSymlinkTarget { .. })
        ));
        assert_empty(&fx.outside);
    }

    /// Creates the fifo `name` and returns its pin.
    fn fifo(dir: &DirHandle, name: &[u8]) -> Pinned {
        match dir.mknod(name, Special::Fifo, 0, OnConflict::Fail).unwrap() {
            Placed::Written(pinned, _) => pinned,
            Placed::Skipped => panic!("must write"),
        }
    }

    /// Creates the symlink `name` -> `target` and returns its pin.
    fn symlink(dir: &DirHandle, name: &[u8], target: &[u8]) -> Pinned {
        match dir.symlink(name, target, OnConflict::Fail).unwrap() {
            Placed::Written(pinned, _) => pinned,
            Placed::Skipped => panic!("must write"),
        }
    }

    #[test]
    fn set_meta_sets_owner_mode_and_mtime() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let pinned = fifo(&root, b"p");
        let mut m = meta(0o751, 1_000_000_000, 123_456_789);
        m.uid = Some(rustix::process::getuid().as_raw());
        m.gid = Some(rustix::process::getgid().as_raw());
        pinned.set_meta(&m).unwrap();
        let md = fs::symlink_metadata(fx.target.join("p")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o751);
        assert_eq!(md.mtime(), 1_000_000_000);
        assert_eq!(md.mtime_nsec(), 123_456_789);
        assert_eq!(md.atime(), 1_000_000_000);
        assert_eq!(md.uid(), m.uid.unwrap());
    }

    #[test]
    fn set_meta_never_touches_a_symlink_target() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let victim = fx.outside.join("victim");
        fs::write(&victim, b"v").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::metadata(&victim).unwrap();
        let pinned = symlink(&root, b"l", victim.as_os_str().as_encoded_bytes());
        pinned.set_meta(&meta(0o4777, 1_234_567, 5)).unwrap();
        let after = fs::metadata(&victim).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!(after.mtime(), before.mtime());
        assert_eq!(after.mtime_nsec(), before.mtime_nsec());
        let link = fs::symlink_metadata(fx.target.join("l")).unwrap();
        assert_eq!((link.mtime(), link.mtime_nsec()), (1_234_567, 5));
    }

    #[test]
    fn set_meta_rejects_bad_meta() {
        let fx = fixture();
        let pinned = fifo(&fx.sandbox.root(), b"p");
        let err = pinned.set_meta(&meta(0o644, 0, 1_000_000_000)).unwrap_err();
        assert!(
            matches!(&err, SandboxError::InvalidMeta { path, .. } if path == "p"),
            "{err}"
        );
        let mut m = meta(0o644, 0, 0);
        m.uid = Some(u32::MAX);
        assert!(matches!(
            pinned.set_meta(&m),
            Err(SandboxError::InvalidMeta { .. })
        ));
    }

    /// Finding 9 of issue 12: owner, mode and times of a symlink, fifo or
    /// device node land on the inode restore created, even when its name was
    /// renamed away and something else put there before the metadata is set
    /// (by name, as before, they landed on the impostor).
    #[test]
    fn restore_sets_metadata_of_special_files_on_the_created_inode() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let pins = [fifo(&root, b"p"), symlink(&root, b"l", b"target")];
        for name in ["p", "l"] {
            let path = fx.target.join(name);
            fs::rename(&path, fx.target.join(format!("{name}.moved"))).unwrap();
            std::os::unix::fs::symlink("impostor", &path).unwrap();
        }
        let impostor = fs::symlink_metadata(fx.target.join("p")).unwrap();
        for pinned in &pins {
            pinned.set_meta(&meta(0o640, 1_111, 22)).unwrap();
        }
        let moved = fs::symlink_metadata(fx.target.join("p.moved")).unwrap();
        assert!(moved.file_type().is_fifo());
        assert_eq!(
            (moved.mode() & 0o7777, moved.mtime(), moved.mtime_nsec()),
            (0o640, 1_111, 22)
        );
        let moved = fs::symlink_metadata(fx.target.join("l.moved")).unwrap();
        assert!(moved.file_type().is_symlink());
        assert_eq!((moved.mtime(), moved.mtime_nsec()), (1_111, 22));
        for name in ["p", "l"] {
            let now = fs::symlink_metadata(fx.target.join(name)).unwrap();
            assert_eq!(
                fs::read_link(fx.target.join(name)).unwrap(),
                Path::new("impostor")
            );
            assert_ne!(now.mtime(), 1_111, "{name}: the impostor's times changed");
        }
        assert_eq!(
            impostor.mtime(),
            fs::symlink_metadata(fx.target.join("p")).unwrap().mtime()
        );
    }

    /// The by-name fallback for kernels without `utimensat(AT_EMPTY_PATH)`
    /// refuses a name that no longer is the pinned inode.
    #[test]
    fn set_times_by_name_refuses_a_swapped_name() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let pinned = fifo(&root, b"p");
        let st = rfs::fstat(&pinned.fd).unwrap();
        let m = Checked::new(&meta(0o600, 5_000, 6)).unwrap();
        pinned.set_times_by_name(&m.times, &st).unwrap();
        let md = fs::symlink_metadata(fx.target.join("p")).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (5_000, 6));

        fs::rename(fx.target.join("p"), fx.target.join("p.moved")).unwrap();
        fs::write(fx.target.join("p"), b"impostor").unwrap();
        let before = fs::symlink_metadata(fx.target.join("p")).unwrap();
        let err = pinned.set_times_by_name(&m.times, &st).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Replaced { path } if path == "p"),
            "{err}"
        );
        let after = fs::symlink_metadata(fx.target.join("p")).unwrap();
        assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    }

    #[test]
    fn pinning_refuses_an_entry_that_is_not_the_created_one() {
        let fx = fixture();
        let root = fx.sandbox.root();
        fs::write(fx.target.join("f"), b"x").unwrap();
        let placed = Placed::Written((), b"f".to_vec());
        let err = root.pin_placed(placed, |_| Ok(false)).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Replaced { path } if path == "f"),
            "{err}"
        );
        assert!(matches!(
            root.pin_placed(Placed::Skipped, |_| Ok(false)).unwrap(),
            Placed::Skipped
        ));
    }

    #[test]
    fn set_dir_meta_and_set_file_meta() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let d = root.dir(b"d", OnConflict::Fail).unwrap();
        let Placed::Written(file, _) = d.create_file(b"f", OnConflict::Fail).unwrap() else {
            panic!("must write");
        };
        set_file_meta(&file, &meta(0o640, 42, 7)).unwrap();
        d.set_dir_meta(&meta(0o750, 86_400, 999_999_999)).unwrap();

        let fmd = fs::metadata(fx.target.join("d/f")).unwrap();
        assert_eq!(
            (fmd.mode() & 0o7777, fmd.mtime(), fmd.mtime_nsec()),
            (0o640, 42, 7)
        );
        let dmd = fs::metadata(fx.target.join("d")).unwrap();
        assert_eq!(
            (dmd.mode() & 0o7777, dmd.mtime(), dmd.mtime_nsec()),
            (0o750, 86_400, 999_999_999)
        );

        let err = set_file_meta(&file, &meta(0o640, 0, 2_000_000_000)).unwrap_err();
        assert!(matches!(err, SandboxError::InvalidMeta { .. }), "{err}");
    }

    #[test]
    fn open_rejects_a_file_as_target() {
        let tmp = TempDir::new().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(Sandbox::open(&file).is_err());
        let nested = tmp.path().join("a/b/c");
        let sandbox = Sandbox::open(&nested).unwrap();
        assert!(nested.is_dir());
        assert_eq!(sandbox.root().existing(b"x").unwrap(), Existing::None);
    }

    #[test]
    fn read_only_dir_inspects_without_creating_or_following() {
        let tmp = TempDir::new().unwrap();
        let missing = tmp.path().join("missing");
        assert!(ReadOnlyDir::open_target(&missing).unwrap().is_none());
        assert!(!missing.exists());
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            ReadOnlyDir::open_target(&file),
            Err(SandboxError::NotADirectory { .. })
        ));

        let fx = fixture();
        fs::create_dir_all(fx.target.join("d/e")).unwrap();
        fs::write(fx.outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&fx.outside, fx.target.join("l")).unwrap();
        let root = ReadOnlyDir::open_target(&fx.target).unwrap().unwrap();
        let d = root.subdir(b"d").unwrap();
        assert_eq!(d.dir.rel_path(), b"d");
        assert_eq!(d.existing(b"e").unwrap(), Existing::Dir);
        assert_eq!(d.existing(b"nope").unwrap(), Existing::None);
        assert_eq!(root.existing(b"l").unwrap(), Existing::Symlink);
        let err = root.subdir(b"l").unwrap_err();
        assert!(
            matches!(&err, SandboxError::Io { path, .. } if path == "l"),
            "{err}"
        );
        assert!(root.subdir(b"nope").is_err());
        assert!(matches!(
            root.subdir(b".."),
            Err(SandboxError::InvalidName { .. })
        ));
        assert_eq!(names(&fx.target), ["d", "l"]);
    }

    #[test]
    fn free_name_skips_taken_candidates() {
        let fx = fixture();
        let root = fx.sandbox.root();
        assert_eq!(root.free_name(b"x").unwrap(), b"x.strata-restored");
        fs::write(fx.target.join("x.strata-restored"), b"").unwrap();
        std::os::unix::fs::symlink("/nonexistent", fx.target.join("x.strata-restored-2")).unwrap();
        assert_eq!(root.free_name(b"x").unwrap(), b"x.strata-restored-3");
        assert!(matches!(
            root.free_name(b"a/b"),
            Err(SandboxError::InvalidName { .. })
        ));
        assert_eq!(
            names(&fx.target),
            ["x.strata-restored", "x.strata-restored-2"]
        );
    }

    #[test]
    fn mknod_creates_fifos_with_conflict_rules() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let fifo = |on| root.mknod(b"p", Special::Fifo, 0, on);
        assert!(matches!(
            fifo(OnConflict::Fail).unwrap(),
            Placed::Written(_, _)
        ));
        let md = fs::symlink_metadata(fx.target.join("p")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!(md.mode() & 0o077, 0, "{:o}", md.mode());
        let err = fifo(OnConflict::Fail).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Conflict { path } if path == "p"),
            "{err}"
        );
        assert!(matches!(fifo(OnConflict::Skip).unwrap(), Placed::Skipped));
        let Placed::Written(_, used) = fifo(OnConflict::Rename).unwrap() else {
            panic!("rename must write");
        };
        assert_eq!(used, b"p.strata-restored");

        // Overwrite replaces a symlink, never creating through it.
        std::os::unix::fs::symlink(fx.outside.join("f"), fx.target.join("l")).unwrap();
        root.mknod(b"l", Special::Fifo, 0, OnConflict::Overwrite)
            .unwrap();
        assert!(
            fs::symlink_metadata(fx.target.join("l"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_empty(&fx.outside);
    }

    /// Creates `name` holding `data` and returns the open file.
    fn created(dir: &DirHandle, name: &[u8], data: &[u8]) -> File {
        match write_file(dir, name, OnConflict::Fail, data) {
            Placed::Written(file, _) => file,
            Placed::Skipped => panic!("must write"),
        }
    }

    #[test]
    fn remove_if_same_removes_only_that_file() {
        let fx = fixture();
        let root = fx.sandbox.root();
        let file = created(&root, b"f", b"partial");
        root.remove_if_same(b"f", &file).unwrap();
        assert!(!fx.target.join("f").exists());

        let file = created(&root, b"g", b"partial");
        fs::remove_file(fx.target.join("g")).unwrap();
        fs::write(fx.target.join("g"), b"someone else's").unwrap();
        let err = root.remove_if_same(b"g", &file).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Replaced { path } if path == "g"),
            "{err}"
        );
        assert_eq!(fs::read(fx.target.join("g")).unwrap(), b"someone else's");
        assert!(root.remove_if_same(b"missing", &file).is_err());
    }

    #[test]
    fn open_read_reopens_exactly_the_written_file() {
        let fx = fixture();
        let sub = fx.sandbox.root().dir(b"sub", OnConflict::Fail).unwrap();
        let file = created(&sub, b"f", b"content");
        let mut reader = sub.open_read(b"f", &file).unwrap();
        let mut buf = String::new();
        io::Read::read_to_string(&mut reader, &mut buf).unwrap();
        assert_eq!(buf, "content");
        assert!(reader.write_all(b"x").is_err(), "must be read-only");

        // The by-name fallback (no /proc) never follows a symlink.
        fs::write(fx.outside.join("victim"), b"v").unwrap();
        std::os::unix::fs::symlink(fx.outside.join("victim"), fx.target.join("sub/l")).unwrap();
        assert_eq!(
            sub.open_read_nofollow(b"l", OFlags::empty()).unwrap_err(),
            Errno::LOOP
        );
        // Whatever the name refers to, only the inode of `file` is opened.
        let other = created(&sub, b"g", b"other");
        let reader = sub.open_read(b"g", &other).unwrap();
        let st = rfs::fstat(&reader).unwrap();
        assert!(same_inode(&st, &rfs::fstat(&other).unwrap()));
    }

    /// The sorted names in a directory (shared with the restorer's tests).
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }
}
