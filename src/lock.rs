//! Repository locks: shared ones for work that adds or reads data (backup, restore, check,
//! mount), exclusive ones for work that deletes (forget, prune, repair), each an encrypted
//! object under `locks/` that its holder refreshes until it lets go.
use crate::backend::{Backend, BackendError, Kind};
use crate::crypto::{MasterKey, ObjectKind, fill_random};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A holder rewrites its lock this often.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale, whoever holds it.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A holder whose lock is older than this stops before its next commit (snapshot, index,
/// deletion), so that it never acts on a lock that others may already consider stale.
pub const VALID_FOR: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("the repository is locked by {0}")]
    Locked(String),
    #[error(
        "our repository lock was removed or could not be refreshed for {0} s; stopping before writing anything that depends on it"
    )]
    Lost(u64),
}

pub type Result<T> = std::result::Result<T, LockError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// The content of a lock object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub mode: LockMode,
    /// When the holder first took the lock.
    pub created: DateTime<Utc>,
    /// When this object was written (the holder's latest refresh).
    pub refreshed: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
    pub username: String,
    pub command: String,
}

impl LockInfo {
    fn new(mode: LockMode, command: &str) -> LockInfo {
        let now = Utc::now();
        LockInfo {
            mode,
            created: now,
            refreshed: now,
            host: crate::sysinfo::hostname(),
            pid: std::process::id(),
            username: crate::sysinfo::username(),
            command: command.to_string(),
        }
    }

    /// Stale: the holder is provably gone (same host, no such process) or has not refreshed
    /// the lock for `STALE_AFTER`.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let age = (now - self.refreshed).to_std().unwrap_or_default();
        age >= STALE_AFTER || (self.host == crate::sysinfo::hostname() && !pid_alive(self.pid))
    }

    fn conflicts_with(&self, mode: LockMode) -> bool {
        self.mode == LockMode::Exclusive || mode == LockMode::Exclusive
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock of `{}` (pid {} on {}, user {}, since {}, refreshed {})",
            match self.mode {
                LockMode::Shared => "a shared",
                LockMode::Exclusive => "an exclusive",
            },
            self.command,
            self.pid,
            self.host,
            self.username,
            self.created.to_rfc3339(),
            self.refreshed.to_rfc3339()
        )
    }
}

fn pid_alive(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    // EPERM means the process exists but belongs to someone else.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// A lock object as found in the repository: its name and content, or why it is unreadable.
pub struct Found {
    pub name: String,
    pub info: std::result::Result<LockInfo, String>,
}

impl Found {
    /// Unreadable lock objects cannot belong to a live holder (objects appear whole), so they
    /// count as stale.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.info.as_ref().map(|i| i.is_stale(now)).unwrap_or(true)
    }
}

/// Every lock object in the repository.
pub fn list(backend: &dyn Backend, key: &MasterKey) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    for e in backend.list(Kind::Lock)? {
        let info = match backend.get(Kind::Lock, &e.name) {
            Err(err) if err.is_not_found() => continue,
            other => other?,
        };
        found.push(Found {
            info: decode(key, &e.name, &info),
            name: e.name,
        });
    }
    Ok(found)
}

fn decode(key: &MasterKey, name: &str, sealed: &[u8]) -> std::result::Result<LockInfo, String> {
    let plain = key
        .decrypt(&key.aad(ObjectKind::Lock, name.as_bytes()), sealed)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

fn write(backend: &dyn Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
    let mut raw = [0u8; 32];
    fill_random(&mut raw);
    let name = hex::encode(raw);
    let sealed = key.encrypt(
        &key.aad(ObjectKind::Lock, name.as_bytes()),
        &serde_json::to_vec(info).expect("serialisable"),
    );
    backend.put(Kind::Lock, &name, &sealed)?;
    Ok(name)
}

/// The first live lock (other than `own`) that conflicts with `mode`.
fn conflict(
    backend: &dyn Backend,
    key: &MasterKey,
    mode: LockMode,
    own: Option<&str>,
) -> Result<Option<LockInfo>> {
    let now = Utc::now();
    Ok(list(backend, key)?
        .into_iter()
        .filter(|f| Some(f.name.as_str()) != own && !f.is_stale(now))
        .filter_map(|f| f.info.ok())
        .find(|i| i.conflicts_with(mode)))
}

/// Removes stale lock objects (every lock object with `all`); returns how many.
pub fn remove_stale(backend: &dyn Backend, key: &MasterKey, all: bool) -> Result<usize> {
    let now = Utc::now();
    let mut removed = 0;
    for f in list(backend, key)? {
        if all || f.is_stale(now) {
            backend.remove(Kind::Lock, &f.name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

struct State {
    name: String,
    info: LockInfo,
    /// When the current object was written, by our clock.
    written: std::time::SystemTime,
    /// Set when a refresh failed or found the object gone.
    lost: bool,
}

/// A held lock: refreshed in the background, removed when dropped.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    state: Arc<Mutex<State>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a lock: writes it, then looks again for conflicting locks written meanwhile and
    /// backs off if there are any, so of two racing takers at most one proceeds. Retries with
    /// a random pause until `wait` has passed.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        key: &MasterKey,
        mode: LockMode,
        command: &str,
        wait: Duration,
    ) -> Result<LockGuard> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match try_acquire(backend.as_ref(), key, mode, command)? {
                Ok(name) => return Ok(LockGuard::hold(backend, key, name, mode, command)),
                Err(holder) if std::time::Instant::now() >= deadline => {
                    return Err(LockError::Locked(holder.describe()));
                }
                Err(_) => std::thread::sleep(retry_pause()),
            }
        }
    }

    fn hold(
        backend: Arc<dyn Backend>,
        key: &MasterKey,
        name: String,
        mode: LockMode,
        command: &str,
    ) -> LockGuard {
        let state = Arc::new(Mutex::new(State {
            name,
            info: LockInfo::new(mode, command),
            written: std::time::SystemTime::now(),
            lost: false,
        }));
        let (stop, stopped) = mpsc::channel();
        let refresher = {
            let (backend, key, state) = (backend.clone(), key.clone(), state.clone());
            std::thread::spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_INTERVAL) {
                    refresh(backend.as_ref(), &key, &state);
                }
            })
        };
        LockGuard {
            backend,
            state,
            stop: Some(stop),
            refresher: Some(refresher),
        }
    }

    /// Fails when the lock may no longer protect us: a refresh failed, the object was
    /// removed, or it is older than `VALID_FOR`. Called before every commit.
    pub fn ensure_valid(&self) -> Result<()> {
        let state = self.state.lock().expect("lock state");
        let age = state.written.elapsed().unwrap_or_default();
        let present = self
            .backend
            .get(Kind::Lock, &state.name)
            .map(|_| true)
            .or_else(|e| e.is_not_found().then_some(false).ok_or(e))?;
        match !state.lost && present && age < VALID_FOR {
            true => Ok(()),
            false => Err(LockError::Lost(age.as_secs())),
        }
    }

    pub fn mode(&self) -> LockMode {
        self.state.lock().expect("lock state").info.mode
    }
}

/// One attempt: Ok(name) when we hold the lock, Err(holder) when someone else does.
fn try_acquire(
    backend: &dyn Backend,
    key: &MasterKey,
    mode: LockMode,
    command: &str,
) -> Result<std::result::Result<String, LockInfo>> {
    if let Some(holder) = conflict(backend, key, mode, None)? {
        return Ok(Err(holder));
    }
    let name = write(backend, key, &LockInfo::new(mode, command))?;
    match conflict(backend, key, mode, Some(&name))? {
        None => Ok(Ok(name)),
        Some(holder) => {
            backend.remove(Kind::Lock, &name)?;
            Ok(Err(holder))
        }
    }
}

fn retry_pause() -> Duration {
    let mut b = [0u8; 2];
    fill_random(&mut b);
    Duration::from_millis(200 + u64::from(u16::from_le_bytes(b)) % 800)
}

/// Writes a fresh object for the lock, then removes the previous one. A lock whose object
/// has vanished (removed by `unlock --remove-all`, or judged stale) is not recreated.
fn refresh(backend: &dyn Backend, key: &MasterKey, state: &Mutex<State>) {
    let mut s = state.lock().expect("lock state");
    if s.lost {
        return;
    }
    let still_there = backend.get(Kind::Lock, &s.name).is_ok();
    let mut info = s.info.clone();
    info.refreshed = Utc::now();
    let written = still_there.then(|| write(backend, key, &info));
    match written {
        Some(Ok(name)) => {
            let _ = backend.remove(Kind::Lock, &s.name);
            s.name = name;
            s.info = info;
            s.written = std::time::SystemTime::now();
        }
        _ => s.lost = true,
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.state.lock().expect("lock state").name.clone();
        let _ = self.backend.remove(Kind::Lock, &name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    fn backend() -> (tempfile::TempDir, Arc<dyn Backend>, MasterKey) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        (dir, Arc::new(b), MasterKey::random())
    }

    fn take(b: &Arc<dyn Backend>, k: &MasterKey, mode: LockMode) -> Result<LockGuard> {
        LockGuard::acquire(b.clone(), k, mode, "test", Duration::ZERO)
    }

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let (_d, b, k) = backend();
        let one = take(&b, &k, LockMode::Shared).unwrap();
        let two = take(&b, &k, LockMode::Shared).unwrap();
        let err = take(&b, &k, LockMode::Exclusive).err().unwrap();
        assert!(err.to_string().contains("shared lock of `test`"), "{err}");
        drop((one, two));
        assert!(b.list(Kind::Lock).unwrap().is_empty());
        let ex = take(&b, &k, LockMode::Exclusive).unwrap();
        assert!(matches!(
            take(&b, &k, LockMode::Shared),
            Err(LockError::Locked(_))
        ));
        drop(ex);
        take(&b, &k, LockMode::Shared).unwrap();
    }

    #[test]
    fn a_waiting_taker_gets_the_lock_once_it_is_released() {
        let (_d, b, k) = backend();
        let ex = take(&b, &k, LockMode::Exclusive).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(ex);
        });
        let got = LockGuard::acquire(
            b.clone(),
            &k,
            LockMode::Shared,
            "t",
            Duration::from_secs(10),
        );
        release.join().unwrap();
        assert_eq!(got.unwrap().mode(), LockMode::Shared);
    }

    fn plant(b: &Arc<dyn Backend>, k: &MasterKey, edit: impl FnOnce(&mut LockInfo)) -> String {
        let mut info = LockInfo::new(LockMode::Exclusive, "planted");
        edit(&mut info);
        write(b.as_ref(), k, &info).unwrap()
    }

    #[test]
    fn dead_pids_old_refreshes_and_unreadable_objects_are_stale() {
        let (_d, b, k) = backend();
        let child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        let mut child = child;
        child.wait().unwrap();
        plant(&b, &k, |i| i.pid = dead);
        plant(&b, &k, |i| {
            i.host = "elsewhere".into();
            i.refreshed = Utc::now() - chrono::Duration::minutes(31);
        });
        b.put(Kind::Lock, "abcd", b"garbage").unwrap();
        take(&b, &k, LockMode::Exclusive).expect("all planted locks are stale");
        assert_eq!(remove_stale(b.as_ref(), &k, false).unwrap(), 3);
    }

    #[test]
    fn live_locks_elsewhere_are_respected_until_removed() {
        let (_d, b, k) = backend();
        plant(&b, &k, |i| i.host = "elsewhere".into());
        assert!(take(&b, &k, LockMode::Shared).is_err());
        assert_eq!(remove_stale(b.as_ref(), &k, false).unwrap(), 0);
        assert_eq!(remove_stale(b.as_ref(), &k, true).unwrap(), 1);
        take(&b, &k, LockMode::Shared).unwrap();
    }

    #[test]
    fn a_removed_lock_is_noticed_before_the_next_commit() {
        let (_d, b, k) = backend();
        let g = take(&b, &k, LockMode::Shared).unwrap();
        g.ensure_valid().unwrap();
        refresh(b.as_ref(), &k, &g.state);
        assert_eq!(
            b.list(Kind::Lock).unwrap().len(),
            1,
            "refresh replaces the object"
        );
        g.ensure_valid().unwrap();
        remove_stale(b.as_ref(), &k, true).unwrap();
        assert!(matches!(g.ensure_valid(), Err(LockError::Lost(_))));
        refresh(b.as_ref(), &k, &g.state);
        assert!(b.list(Kind::Lock).unwrap().is_empty(), "not recreated");
    }
}
