//! Repository locks: shared ones for work that adds or reads data (backup, restore, check,
//! mount), exclusive ones for work that deletes (forget, prune, repair), each an encrypted
//! object under `locks/` that its holder refreshes until it lets go. Whether another's lock
//! is stale is judged from what this machine saw (see `Judge`), not from others' clocks.
//! A held lock is a [`LockGuard`]; the repository's writes take the typed proof built on
//! it, [`crate::repo::locked::Locked`]. One process may hold several locks at once (on several
//! repositories, or several shared ones on one): its own shared locks never conflict with
//! each other, while an exclusive one conflicts with every other lock, its own included.
mod sightings;

use crate::backend::pool::IoPool;
use crate::backend::{Backend, BackendError, Kind};
use crate::repo::crypto::{MasterKey, ObjectKind, fill_random};
use crate::sysinfo::{boot_clock, boot_identity};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sightings::Sightings;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A holder rewrites its lock this often.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A lock seen unchanged for this long (on this machine's boot clock) is stale, whoever
/// holds it.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How far another machine's clock may be off from ours. A lock dated more than
/// `STALE_AFTER + CLOCK_SKEW` in the past is stale at first sight; a date in the future
/// counts for nothing (it cannot keep a lock alive: only refreshes seen here can).
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(30 * 60);
/// A holder whose lock is older than this stops before its next commit (snapshot, index,
/// deletion), so that it never acts on a lock that others may already consider stale.
pub(crate) const VALID_FOR: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the repository is locked by {0}")]
    Locked(String),
    #[error(
        "our repository lock was removed or could not be refreshed for {0} s; stopping before writing anything that depends on it"
    )]
    Lost(u64),
    #[error("a lock can only vouch for the repository it was taken on")]
    OtherRepository,
}

pub(crate) type Result<T> = std::result::Result<T, LockError>;

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
    /// The holder's `sysinfo::boot_identity()`: its pid is only checked on that boot of
    /// that machine. Empty in locks of earlier versions.
    #[serde(default)]
    pub boot: String,
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
            boot: boot_identity().to_string(),
        }
    }

    /// The holder is provably gone: it ran on this boot of this machine, and its process
    /// no longer exists.
    fn holder_is_gone(&self) -> bool {
        !self.boot.is_empty() && self.boot == boot_identity() && !pid_alive(self.pid)
    }

    /// Dated so long ago that no clock within `CLOCK_SKEW` of ours can have refreshed it
    /// within `STALE_AFTER`.
    fn dated_stale(&self, now: DateTime<Utc>) -> bool {
        (now - self.refreshed)
            .to_std()
            .is_ok_and(|age| age >= STALE_AFTER + CLOCK_SKEW)
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
            self.command.escape_debug(),
            self.pid,
            self.host.escape_debug(),
            self.username.escape_debug(),
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
    /// BLAKE3 of the object's bytes: a refresh changes them.
    content: blake3::Hash,
}

/// A lock object and what this machine makes of it.
pub struct Judged {
    pub found: Found,
    /// How long this machine has seen the object unchanged.
    pub unchanged_for: Duration,
    pub stale: bool,
}

/// Every lock object in the repository (for staleness, see `Judge::survey`).
pub(crate) fn list(
    backend: &dyn Backend,
    key: &MasterKey,
    own: Option<&str>,
) -> Result<Vec<Found>> {
    let names: Vec<String> = (backend.list(Kind::Lock)?.into_iter())
        .map(|e| e.name)
        .filter(|name| Some(name.as_str()) != own)
        .collect();
    let read = |name: String| -> Result<Option<Found>> {
        let sealed = match backend.get(Kind::Lock, &name) {
            Err(err) if err.is_not_found() => return Ok(None),
            other => other?,
        };
        Ok(Some(Found {
            info: decode(key, &name, &sealed),
            content: blake3::hash(&sealed),
            name,
        }))
    };
    let read_all = || names.into_par_iter().map(read).collect::<Result<Vec<_>>>();
    let found = IoPool::for_backend(backend).install(read_all)?;
    Ok(found.into_iter().flatten().collect())
}

/// The clocks a judgement is made at.
#[derive(Clone, Copy)]
struct Clocks {
    wall: DateTime<Utc>,
    boot: Duration,
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            wall: Utc::now(),
            boot: boot_clock(),
        }
    }
}

/// Judges locks by what this machine saw: a lock is stale when it has been seen unchanged
/// for `STALE_AFTER` on the boot clock, when its holder ran on this boot and is gone, when
/// it is dated more than `STALE_AFTER + CLOCK_SKEW` ago, or when it is unreadable (objects
/// appear whole, so no live holder wrote it). Sightings are kept in `sightings` (a file in
/// the local cache) between commands.
pub(crate) struct Judge {
    sightings: Sightings,
}

impl Judge {
    pub(crate) fn new(sightings: Option<PathBuf>) -> Judge {
        Judge {
            sightings: Sightings::load(sightings, boot_identity()),
        }
    }

    /// Every lock object in the repository but `own` (which its holder need not read
    /// back), judged now; the objects are read in parallel.
    pub(crate) fn survey(
        &mut self,
        backend: &dyn Backend,
        key: &MasterKey,
        own: Option<&str>,
    ) -> Result<Vec<Judged>> {
        let found = list(backend, key, own)?;
        Ok(self.judge_all(found, Clocks::now()))
    }

    fn judge_all(&mut self, found: Vec<Found>, at: Clocks) -> Vec<Judged> {
        let judged: Vec<Judged> = found.into_iter().map(|f| self.judge(f, at)).collect();
        let present: Vec<&str> = judged.iter().map(|j| j.found.name.as_str()).collect();
        self.sightings.save(&present);
        judged
    }

    fn judge(&mut self, found: Found, at: Clocks) -> Judged {
        let unchanged_for = self
            .sightings
            .unchanged_for(&found.name, &found.content, at.boot);
        let stale = unchanged_for >= STALE_AFTER
            || found
                .info
                .as_ref()
                .map_or(true, |i| i.holder_is_gone() || i.dated_stale(at.wall));
        Judged {
            found,
            unchanged_for,
            stale,
        }
    }
}

/// A lock object's content from its stored bytes, or why it is unreadable.
pub fn decode(key: &MasterKey, name: &str, sealed: &[u8]) -> std::result::Result<LockInfo, String> {
    let plain = key
        .decrypt(&key.aad(ObjectKind::Lock, name.as_bytes()), sealed)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

/// Writes a lock object for `info` under a new random name, which it returns.
pub fn write(backend: &dyn Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
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
    sightings: Option<&Path>,
) -> Result<Option<LockInfo>> {
    Ok(Judge::new(sightings.map(Path::to_path_buf))
        .survey(backend, key, own)?
        .into_iter()
        .filter(|j| !j.stale)
        .filter_map(|j| j.found.info.ok())
        .find(|i| i.conflicts_with(mode)))
}

/// What `remove_stale` did.
pub struct Unlocked {
    pub removed: usize,
    /// The locks left in place, none of them stale.
    pub remaining: Vec<Judged>,
}

/// Removes stale lock objects (every lock object with `all`).
pub(crate) fn remove_stale(
    backend: &dyn Backend,
    key: &MasterKey,
    all: bool,
    sightings: Option<&Path>,
) -> Result<Unlocked> {
    let mut judge = Judge::new(sightings.map(Path::to_path_buf));
    let mut unlocked = Unlocked {
        removed: 0,
        remaining: Vec::new(),
    };
    for j in judge.survey(backend, key, None)? {
        match all || j.stale {
            true => {
                backend.remove(Kind::Lock, &j.found.name)?;
                unlocked.removed += 1;
            }
            false => unlocked.remaining.push(j),
        }
    }
    Ok(unlocked)
}

struct State {
    name: String,
    info: LockInfo,
    /// When the current object was written, on the boot clock (which no one can set back).
    written: Duration,
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
    /// a random pause until `wait` has passed. `sightings`: see `Judge`.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        key: &MasterKey,
        mode: LockMode,
        command: &str,
        wait: Duration,
        sightings: Option<&Path>,
    ) -> Result<LockGuard> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match try_acquire(backend.as_ref(), key, mode, command, sightings)? {
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
            written: boot_clock(),
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
    pub(crate) fn ensure_valid(&self) -> Result<()> {
        let state = self.state.lock().expect("lock state");
        let age = boot_clock().saturating_sub(state.written);
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

    /// Whether this lock was taken on `backend` (the very object, not just its location).
    pub(crate) fn is_on(&self, backend: &Arc<dyn Backend>) -> bool {
        Arc::ptr_eq(&self.backend, backend)
    }
}

/// One attempt: Ok(name) when we hold the lock, Err(holder) when someone else does.
fn try_acquire(
    backend: &dyn Backend,
    key: &MasterKey,
    mode: LockMode,
    command: &str,
    sightings: Option<&Path>,
) -> Result<std::result::Result<String, LockInfo>> {
    // The check after the write is the one that decides. An exclusive taker also looks
    // first, so that it does not disturb a running operation with a lock it would remove at
    // once; a shared taker skips that look, a round trip less on object storage.
    if mode == LockMode::Exclusive
        && let Some(holder) = conflict(backend, key, mode, None, sightings)?
    {
        return Ok(Err(holder));
    }
    let name = write(backend, key, &LockInfo::new(mode, command))?;
    match conflict(backend, key, mode, Some(&name), sightings)? {
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
            s.written = boot_clock();
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
        LockGuard::acquire(b.clone(), k, mode, "test", Duration::ZERO, None)
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
            None,
        );
        release.join().unwrap();
        assert_eq!(
            got.unwrap().state.lock().unwrap().info.mode,
            LockMode::Shared
        );
    }

    fn plant(b: &Arc<dyn Backend>, k: &MasterKey, edit: impl FnOnce(&mut LockInfo)) -> String {
        let mut info = LockInfo::new(LockMode::Exclusive, "planted");
        edit(&mut info);
        write(b.as_ref(), k, &info).unwrap()
    }

    fn removed(b: &Arc<dyn Backend>, k: &MasterKey, all: bool) -> usize {
        remove_stale(b.as_ref(), k, all, None).unwrap().removed
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    #[test]
    fn dead_pids_old_dates_and_unreadable_objects_are_stale() {
        let (_d, b, k) = backend();
        plant(&b, &k, |i| i.pid = dead_pid());
        plant(&b, &k, |i| {
            i.host = "elsewhere".into();
            i.boot = "elsewhere".into();
            i.refreshed = Utc::now() - chrono::Duration::minutes(61);
        });
        b.put(Kind::Lock, "abcd", b"garbage").unwrap();
        take(&b, &k, LockMode::Exclusive).expect("all planted locks are stale");
        assert_eq!(removed(&b, &k, false), 3);
    }

    #[test]
    fn live_locks_elsewhere_are_respected_until_removed() {
        let (_d, b, k) = backend();
        plant(&b, &k, |i| i.host = "elsewhere".into());
        assert!(take(&b, &k, LockMode::Shared).is_err());
        assert_eq!(removed(&b, &k, false), 0);
        assert_eq!(removed(&b, &k, true), 1);
        take(&b, &k, LockMode::Shared).unwrap();
    }

    const MIN: Duration = Duration::from_secs(60);

    /// A lock object as `list` finds it, written by a holder whose clock shows `dated`.
    fn found(name: &str, dated: DateTime<Utc>, edit: impl FnOnce(&mut LockInfo)) -> Found {
        let mut info = LockInfo::new(LockMode::Shared, "elsewhere");
        (info.host, info.boot) = ("elsewhere".into(), "other".into());
        (info.created, info.refreshed) = (dated, dated);
        edit(&mut info);
        Found {
            name: name.to_string(),
            content: blake3::hash(&serde_json::to_vec(&info).unwrap()),
            info: Ok(info),
        }
    }

    fn at(wall: DateTime<Utc>, boot: Duration) -> Clocks {
        Clocks { wall, boot }
    }

    /// Judges one lock at `at`; returns it and whether it is stale.
    fn judge_one(judge: &mut Judge, f: Found, at: Clocks) -> (Found, bool) {
        let j = judge.judge_all(vec![f], at).pop().unwrap();
        (j.found, j.stale)
    }

    #[test]
    fn lock_of_a_holder_25_minutes_behind_is_not_stale_while_it_keeps_refreshing() {
        let mut judge = Judge::new(None);
        let start = Utc::now();
        let minutes = |m: u32| chrono::Duration::minutes(m.into());
        let mut current = found("r0", start - minutes(25), |_| {});
        for m in 0..180u32 {
            if m % 5 == 0 {
                current = found(&format!("r{m}"), start + minutes(m) - minutes(25), |_| {});
            }
            let now = at(start + minutes(m), m * MIN);
            let stale;
            (current, stale) = judge_one(&mut judge, current, now);
            assert!(!stale, "judged stale at minute {m} while refreshed");
        }
        // It stops refreshing: its last object (written at minute 175) is left.
        let mut stale_at = Vec::new();
        for m in 180..240u32 {
            let stale;
            (current, stale) = judge_one(&mut judge, current, at(start + minutes(m), m * MIN));
            stale_at.extend(stale.then_some(m));
        }
        assert_eq!(
            stale_at.first(),
            Some(&205),
            "stale once seen unchanged for 30 minutes"
        );
    }

    #[test]
    fn lock_dated_9999_is_stale_once_seen_unchanged_for_the_stale_time() {
        let year_9999 = "9999-12-31T23:59:59Z".parse::<DateTime<Utc>>().unwrap();
        let mut judge = Judge::new(None);
        let now = Utc::now();
        let mut seen = |m: u32| {
            let f = found("future", year_9999, |_| {});
            judge.judge_all(vec![f], at(now, Duration::from_secs(7) + m * MIN))[0].stale
        };
        assert!(
            !seen(0) && !seen(29),
            "not stale before the stale time observed"
        );
        assert!(seen(30), "a date in the future does not keep a lock alive");
    }

    #[test]
    fn dead_process_shortcut_needs_the_same_machine_and_boot() {
        let mut judge = Judge::new(None);
        let now = Utc::now();
        let here = crate::sysinfo::hostname();
        let dead = dead_pid();
        let stale = |boot: &str, judge: &mut Judge| {
            let f = found(boot, now, |i| {
                (i.host, i.boot, i.pid) = (here.clone(), boot.into(), dead)
            });
            judge.judge_all(vec![f], at(now, MIN))[0].stale
        };
        assert!(
            !stale("another boot", &mut judge),
            "same host name, other boot"
        );
        assert!(!stale("", &mut judge), "a lock of an earlier version");
        assert!(
            stale(boot_identity(), &mut judge),
            "this boot, no such process"
        );
    }

    #[test]
    fn own_lock_age_is_measured_on_the_boot_clock() {
        let (_d, b, k) = backend();
        let g = take(&b, &k, LockMode::Shared).unwrap();
        g.ensure_valid().unwrap();
        g.state.lock().unwrap().written = boot_clock().saturating_sub(VALID_FOR);
        assert!(matches!(g.ensure_valid(), Err(LockError::Lost(_))));
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
        assert_eq!(removed(&b, &k, true), 1);
        assert!(matches!(g.ensure_valid(), Err(LockError::Lost(_))));
        refresh(b.as_ref(), &k, &g.state);
        assert!(b.list(Kind::Lock).unwrap().is_empty(), "not recreated");
    }
}
