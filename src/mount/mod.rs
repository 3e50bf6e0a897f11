//! The repository's snapshots as a read-only FUSE filesystem: checking that FUSE can be
//! used, mounting, refreshing the snapshot list while mounted, and unmounting.
mod attr;
mod cache;
mod fs;
mod inodes;
mod layout;
mod state;

use crate::select::selection::Selection;

use crate::repo::id::SnapshotId;
use crate::repo::repository::{IndexedRepo, RepoError};
use crossbeam_channel::Receiver;
use fuser::{Config, MountOption, Session, SessionACL};
use layout::Layout;
use state::State;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the kernel's FUSE device lives.
const FUSE_DEVICE: &str = "/dev/fuse";
/// How long to wait for the request loop to finish after a clean unmount.
const END_WAIT: Duration = Duration::from_secs(10);
/// How long to retry an unmount that fails, e.g. because the kernel is still releasing a file
/// that was closed a moment ago, before detaching the filesystem lazily.
const UNMOUNT_RETRY: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "FUSE is not available: {FUSE_DEVICE} does not exist (load the module with `modprobe fuse`; in a container, pass the device in)"
    )]
    NoDevice,
    #[error(
        "FUSE is not available: fusermount3 is not installed (on Debian and Ubuntu: `apt-get install fuse3`)"
    )]
    NoFusermount,
    #[error("mount point {0}: {1}")]
    Mountpoint(String, io::Error),
    #[error("mount point {0} is not a directory")]
    NotADirectory(String),
    #[error(
        "{0} is a stale FUSE mount whose process was killed; clear it with `fusermount3 -u {0}` (as root, `umount {0}` also works), then mount again"
    )]
    Stale(String),
    #[error("cannot mount at {0}: {1}")]
    Mount(String, io::Error),
    #[error("cannot unmount {0}: {1}")]
    Unmount(String, String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

pub(crate) type Result<T> = std::result::Result<T, MountError>;

#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Memory for decoded file chunks, in bytes.
    pub cache_bytes: u64,
    /// Threads answering kernel requests.
    pub threads: usize,
    /// Let other users see the filesystem (with the kernel checking each file's owner and
    /// mode); by default only the mounting user can.
    pub allow_other: bool,
}

/// How the filesystem went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// It was busy and was detached lazily: programs still using it get errors.
    Detached,
}

/// What a refresh found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Whether the list of snapshots changed (and the layout was rebuilt).
    pub changed: bool,
    /// Snapshots that could not be read, with the reason (only when `changed`).
    pub damaged: Vec<(SnapshotId, RepoError)>,
}

/// A mounted filesystem, served by its own threads until unmounted.
pub struct Mount {
    state: Arc<State>,
    selection: Selection,
    mountpoint: PathBuf,
    /// The snapshot ids listed at the last refresh.
    listed: Mutex<Vec<SnapshotId>>,
    ended: Receiver<io::Result<()>>,
}

/// Checks that FUSE can be used and that `mountpoint` is a directory (not a stale mount).
pub fn preflight(mountpoint: &Path) -> Result<()> {
    if !Path::new(FUSE_DEVICE).exists() {
        return Err(MountError::NoDevice);
    }
    if !is_root() && fusermount().is_none() {
        return Err(MountError::NoFusermount);
    }
    let shown = mountpoint.display().to_string();
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(MountError::Stale(shown)),
        Err(e) => Err(MountError::Mountpoint(shown, e)),
        Ok(m) if !m.is_dir() => Err(MountError::NotADirectory(shown)),
        Ok(_) => Ok(()),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `fusermount3` (or the older `fusermount`) on the PATH: unprivileged users mount with it.
fn fusermount() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    ["fusermount3", "fusermount"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Mounts the snapshots `selection` picks at `mountpoint` and serves them on background
/// threads; also returns the snapshots that could not be read. Holds no repository lock: the
/// caller takes one first.
pub fn mount(
    repo: Arc<IndexedRepo>,
    selection: Selection,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<(Mount, Refreshed)> {
    preflight(mountpoint)?;
    let state = Arc::new(State::new(repo, Layout::build(&[]), options.cache_bytes));
    let shown = mountpoint.display().to_string();
    let mount_err = |e| MountError::Mount(shown.clone(), e);
    let (done, ended) = crossbeam_channel::bounded(1);
    let mounted = Mount {
        state: state.clone(),
        selection,
        mountpoint: mountpoint.to_path_buf(),
        listed: Mutex::new(Vec::new()),
        ended,
    };
    let found = mounted.refresh()?;
    let session =
        Session::new(fs::MountFs(state), mountpoint, &config(options)).map_err(mount_err)?;
    std::thread::Builder::new()
        .name("strata-mount".into())
        .spawn(move || drop(done.send(session.run())))
        .map_err(mount_err)?;
    Ok((mounted, found))
}

/// Read-only, and never honouring set-user-id bits or device nodes from the repository
/// (`fusermount3` adds `nosuid,nodev` for ordinary users, but a mount by root gets only
/// what is asked for).
fn config(options: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::FSName("strata".into()),
        MountOption::Subtype("strata".into()),
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    config
}

impl Mount {
    /// How many snapshots are shown.
    pub fn snapshot_count(&self) -> usize {
        self.state.layout().snapshot_count()
    }

    /// Receives the request loop's end (with its error, if any) when the filesystem was
    /// unmounted from outside, e.g. with `fusermount3 -u`.
    pub fn ended(&self) -> &Receiver<io::Result<()>> {
        &self.ended
    }

    /// Looks for new or removed snapshots; when there are, loads the new index files and
    /// rebuilds the generated directories.
    pub fn refresh(&self) -> Result<Refreshed> {
        let repo = self.state.repo();
        let ids = repo.snapshot_ids()?;
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if same_ids(&listed, &ids) {
            return Ok(Refreshed::default());
        }
        repo.sync_index()?;
        let (all, damaged) = repo.snapshots()?;
        self.state
            .set_layout(Layout::build(&self.selection.apply(&all)));
        *listed = ids;
        Ok(Refreshed {
            changed: true,
            damaged,
        })
    }

    /// Unmounts; when the filesystem is busy (a program has a file open or its working
    /// directory in it), detaches it lazily instead so that nothing stale is left behind.
    pub fn unmount(self) -> Result<Unmounted> {
        let deadline = Instant::now() + UNMOUNT_RETRY;
        let unmounted = loop {
            match unmount(&self.mountpoint, false) {
                Ok(()) => break Unmounted::Clean,
                Err(_) if Instant::now() < deadline => std::thread::sleep(RETRY_PAUSE),
                Err(_) => break unmount(&self.mountpoint, true).map(|()| Unmounted::Detached)?,
            }
        };
        if unmounted == Unmounted::Clean {
            let _ = self.ended.recv_timeout(END_WAIT);
        }
        Ok(unmounted)
    }
}

fn same_ids(a: &[SnapshotId], b: &[SnapshotId]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// `umount` as root, else `fusermount3 -u`; `lazy` detaches a busy filesystem.
fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let shown = mountpoint.display().to_string();
    if is_root() {
        let flags = match lazy {
            true => rustix::mount::UnmountFlags::DETACH,
            false => rustix::mount::UnmountFlags::empty(),
        };
        return rustix::mount::unmount(mountpoint, flags)
            .map_err(|e| MountError::Unmount(shown, e.to_string()));
    }
    let tool = fusermount().ok_or(MountError::NoFusermount)?;
    let mut cmd = Command::new(tool);
    cmd.arg("-u")
        .args(lazy.then_some("-z"))
        .arg("--")
        .arg(mountpoint);
    let out = cmd
        .output()
        .map_err(|e| MountError::Unmount(shown.clone(), e.to_string()))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(MountError::Unmount(
            shown,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
}
