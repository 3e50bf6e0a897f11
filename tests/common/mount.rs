//! Running `strata mount` in tests: a check that this machine can run FUSE (the tests fail,
//! never skip, without it), whether a directory is mounted, and [`Mounted`], a mount by the
//! real binary that is killed and detached when dropped.
use super::TestRepo;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a mount may take to appear, or a refresh to show a new snapshot.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Fails (never skips) when this machine cannot run FUSE tests.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "the mount tests need FUSE, but /dev/fuse is missing (.ci/run installs fuse3; run as root)"
    );
    let uid = fs::metadata("/proc/self").expect("stat /proc/self").uid();
    assert!(
        uid == 0 || which("fusermount3"),
        "the mount tests need root or fusermount3 (apt-get install fuse3)"
    );
}

fn which(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(tool).is_file())
}

/// Whether `dir` is a mount point, by /proc/self/mountinfo.
pub fn is_mounted(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let want = dir.to_str().expect("test paths are UTF-8");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// A running `strata mount`; dropped, it is killed and its mount detached.
pub struct Mounted {
    child: Child,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Mounted {
    /// Starts `strata mount MOUNTPOINT extra...` and waits until the filesystem is there.
    pub fn start(repo: &TestRepo, mountpoint: &Path, extra: &[&str]) -> Mounted {
        let log = repo.path().join(format!("mount-{}", rand_suffix()));
        let mut cmd = repo.cmd(["mount".as_ref(), mountpoint.as_os_str()]);
        cmd.args(extra)
            .stdout(File::create(log.with_extension("out")).expect("log file"))
            .stderr(File::create(log.with_extension("err")).expect("log file"));
        let child = cmd.spawn().expect("spawn strata mount");
        let mut mounted = Mounted {
            child,
            mountpoint: mountpoint.to_path_buf(),
            log,
        };
        mounted.wait_ready();
        mounted
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while !self.mountpoint.join("snapshots").exists() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("strata mount exited with {status}:\n{}", self.output().1);
            }
            assert!(started.elapsed() < PATIENCE, "the mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// stdout and stderr so far.
    pub fn output(&self) -> (String, String) {
        let read = |ext| fs::read_to_string(self.log.with_extension(ext)).unwrap_or_default();
        (read("out"), read("err"))
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "strata mount did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .status();
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
