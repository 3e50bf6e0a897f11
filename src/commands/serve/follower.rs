//! The service's MongoDB followers: one continuous `mongo follow` per `[[follower]]` on a
//! blocking thread, restarted with bounded back-off when it fails and stopped by the
//! service's cancellation; what each is doing (for the API and the metrics) and its alerts:
//! the archive lags the server by more than `lag_alert`, or a slice recorded a gap. An
//! operation that needs a repository's exclusive lock (forget, prune) holds its followers
//! stopped meanwhile: their shared locks would otherwise keep it waiting for ever.
use super::Service;
use super::config::{Event, Follower};
use super::mongo::{connect, redact};
use super::runner::open;
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use strata::cancel::Cancel;
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;
use strata::repo::repository::IndexedRepo;
use strata::repo::snapshot::BsonTime;
use strata::sources::mongodb::Conn;
use strata::sources::mongodb::follow::{self, FollowOptions, Slice};

/// The pause before the first restart, doubled after each failure up to `MAX_PAUSE`, and
/// back to `FIRST_PAUSE` once a run lasted `STEADY`.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(300);
const STEADY: Duration = Duration::from_secs(60);
/// How often a running follower asks its server for the time of its last write (the lag).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// A follower as the API shows it.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct FollowerView {
    pub name: String,
    pub repository: String,
    /// The server's host:port list (never its credentials), once connected.
    pub server: Option<String>,
    /// Connected and tailing the oplog now.
    pub running: bool,
    /// The latest time restorable from the repository: the end of the archived oplog (the
    /// newest snapshot's time before any slice).
    pub last_archived: Option<DateTime<Utc>>,
    /// The same as a BSON timestamp `SECONDS:INCREMENT`.
    pub last_archived_ts: Option<String>,
    /// The server's last write, as last asked.
    pub server_time: Option<DateTime<Utc>>,
    /// Seconds of oplog between the server's last write and the end of the archive
    /// (the slice being written counts as not archived yet); none before anything is, and
    /// while the follower does not run.
    pub lag_seconds: Option<f64>,
    /// Slices saved, and gaps recorded, since the service started.
    pub slices: u64,
    pub gaps: u64,
    /// Restarts after a failure since the service started.
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// One follower's thread and state.
pub struct Watch {
    pub cancel: Cancel,
    /// Stops the current `mongo follow` run only (a hold, or the service stopping).
    run: Mutex<Cancel>,
    /// Holding its repository's shared lock now.
    locked: AtomicBool,
    view: Mutex<FollowerView>,
    alive: AtomicBool,
    lag_alerted: AtomicBool,
}

impl Watch {
    pub fn new(f: &Follower) -> Watch {
        let view = FollowerView {
            name: f.name.get_ref().clone(),
            repository: f.repository.get_ref().clone(),
            ..FollowerView::default()
        };
        Watch {
            cancel: Cancel::default(),
            run: Mutex::new(Cancel::default()),
            locked: AtomicBool::new(false),
            view: Mutex::new(view),
            alive: AtomicBool::new(false),
            lag_alerted: AtomicBool::new(false),
        }
    }

    pub fn view(&self) -> FollowerView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut FollowerView)) {
        change(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Whether its thread still runs (it ends once cancelled).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Stops the follower for good (the service stops).
    pub fn stop(&self) {
        self.cancel.cancel();
        self.run.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }

    fn repository(&self) -> String {
        self.view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .repository
            .clone()
    }
}

/// Repositories that exclusive operations hold, with how many hold each.
#[derive(Default)]
pub struct Holds {
    held: Mutex<HashMap<String, usize>>,
    released: Condvar,
}

impl Holds {
    fn is_held(&self, repository: &str) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(repository).is_some_and(|n| *n > 0)
    }

    /// Waits while `repository` is held, or until `cancel`.
    fn wait_free(&self, repository: &str, cancel: &Cancel) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.get(repository).is_some_and(|n| *n > 0) && !cancel.is_cancelled() {
            let tick = Duration::from_millis(100);
            held = (self.released.wait_timeout(held, tick))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// While alive, the followers of one repository stay stopped.
pub struct Hold<'a> {
    holds: &'a Holds,
    repository: String,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut held = self.holds.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.repository) {
            *n = n.saturating_sub(1);
        }
        self.holds.released.notify_all();
    }
}

/// Stops the followers of `repository` and keeps them stopped until the hold is dropped,
/// waiting at most `patience` for them to release their shared locks (after that, the
/// exclusive lock waits or fails as any other would).
pub fn hold<'a>(service: &'a Service, repository: &str, patience: Duration) -> Hold<'a> {
    let holds = &service.holds;
    *(holds.held.lock().unwrap_or_else(|e| e.into_inner()))
        .entry(repository.to_string())
        .or_default() += 1;
    let mine: Vec<&Watch> = (service.followers.iter())
        .filter(|w| w.repository() == repository)
        .collect();
    for w in &mine {
        w.run.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }
    let start = Instant::now();
    while mine.iter().any(|w| w.locked.load(Ordering::Relaxed)) && start.elapsed() < patience {
        std::thread::sleep(Duration::from_millis(20));
    }
    Hold {
        holds,
        repository: repository.to_string(),
    }
}

/// Starts every configured follower on a blocking thread of the service's runtime.
pub fn start_all(service: &Arc<Service>) {
    for (index, watch) in service.followers.iter().enumerate() {
        watch.alive.store(true, Ordering::Relaxed);
        let service = service.clone();
        tokio::task::spawn_blocking(move || {
            let f = &service.config.followers[index];
            let watch = &service.followers[index];
            supervise(&service, f, watch);
            watch.alive.store(false, Ordering::Relaxed);
        });
    }
}

/// Runs the follower until cancelled, restarting it after each failure with back-off.
fn supervise(service: &Service, f: &Follower, watch: &Watch) {
    let name = f.name.get_ref();
    let mut pause = FIRST_PAUSE;
    while !watch.cancel.is_cancelled() {
        service
            .holds
            .wait_free(f.repository.get_ref(), &watch.cancel);
        let run = Cancel::default();
        *watch.run.lock().unwrap_or_else(|e| e.into_inner()) = run.clone();
        // A stop or a hold that came before this run's token was in place.
        if watch.cancel.is_cancelled() || service.holds.is_held(f.repository.get_ref()) {
            continue;
        }
        let started = Instant::now();
        let result = follow_until_stopped(service, f, watch, &run);
        watch.locked.store(false, Ordering::Relaxed);
        watch.update(|v| {
            v.running = false;
            v.lag_seconds = None;
        });
        if watch.cancel.is_cancelled() {
            break;
        }
        if run.is_cancelled() {
            eprintln!("strata serve: follower {name}: paused for an exclusive operation");
            continue;
        }
        let error = match result {
            Ok(()) => "the oplog cursor ended".to_string(),
            Err(e) => redact(&strata::errors::message(e.as_ref())),
        };
        if started.elapsed() >= STEADY {
            pause = FIRST_PAUSE;
        }
        eprintln!("strata serve: follower {name}: {error}; restarting in {pause:?}");
        watch.update(|v| {
            v.restarts += 1;
            v.last_error = Some(error);
        });
        nap(&watch.cancel, pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
    eprintln!("strata serve: follower {name}: stopped");
}

/// One `mongo follow`: opens the repository (shared lock, as the CLI), connects, and
/// archives until cancelled (Ok) or failed; a second thread meanwhile measures the lag.
fn follow_until_stopped(
    service: &Service,
    f: &Follower,
    watch: &Watch,
    run: &Cancel,
) -> Result<()> {
    let repo = (service.config.repository(f.repository.get_ref()))
        .ok_or_else(|| anyhow!("no repository named {:?}", f.repository.get_ref()))?;
    let ctx = service.context(repo, run.clone());
    let (indexed, guard) = ctx.index_locked(open(&ctx, repo)?, LockMode::Shared, "mongo follow")?;
    watch.locked.store(true, Ordering::Relaxed);
    let locked = Locked::new(&indexed, guard)?;
    let conn = connect(&f.uri().read()?)?;
    let archived = latest_restorable(&locked, &conn.server)?;
    watch.update(|v| {
        v.server = Some(conn.server.clone());
        v.running = true;
        v.last_error = None;
        if let Some(end) = archived {
            set_archived(v, end);
        }
    });
    let opts = FollowOptions {
        slice: f.slice,
        once: false,
        host: (f.host.clone()).unwrap_or_else(strata::sysinfo::hostname),
        cancel: run.clone(),
    };
    let done = Cancel::default();
    let handle = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _runtime = handle.enter();
            probe(service, f, watch, &conn, &done);
        });
        let mut on_saved = |s: &Slice| saved(service, f, watch, s);
        let result = follow::follow(&locked, &conn, &opts, &mut on_saved);
        done.cancel();
        match result {
            Err(_) if run.is_cancelled() => Ok(()),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    })
}

/// The latest time of `server` that `repo` can restore: the end of its archived oplog, or
/// its newest snapshot's time before any slice.
fn latest_restorable(repo: &IndexedRepo, server: &str) -> Result<Option<BsonTime>> {
    let (all, _) = repo.snapshots()?;
    let timeline = follow::timeline(&all, Some(server));
    let slice_ends = timeline.slices.iter().map(|s| s.end);
    Ok(slice_ends
        .chain(timeline.windows.iter().map(|w| w.to))
        .max())
}

fn set_archived(v: &mut FollowerView, end: BsonTime) {
    v.last_archived = DateTime::from_timestamp(end.t.into(), 0);
    v.last_archived_ts = Some(end.to_string());
}

/// After each saved slice: the archive's new end, and a gap alert when the oplog had
/// rolled over before the slice was read.
fn saved(service: &Service, f: &Follower, watch: &Watch, s: &Slice) {
    watch.update(|v| {
        set_archived(v, s.end);
        v.slices += 1;
        v.gaps += u64::from(s.gap_from.is_some());
    });
    let Some(from) = s.gap_from else {
        return;
    };
    let name = f.name.get_ref();
    let body = json!({
        "event": Event::FollowerGap,
        "follower": name,
        "server": s.server,
        "from": from.to_string(),
        "to": s.start.to_string(),
        "text": format!("strata: follower {name}: the oplog of {} rolled over before it was archived: entries after {from} up to {} are lost (a gap)", s.server, s.start),
        "time": Utc::now(),
    });
    super::notify::send(service, Event::FollowerGap, None, body);
}

/// Until `done`: the server's last write time every `PROBE_EVERY`, the lag, and the lag
/// alert (sent once when the lag passes `lag_alert`, again only after it fell below).
fn probe(service: &Service, f: &Follower, watch: &Watch, conn: &Conn, done: &Cancel) {
    while !done.is_cancelled() {
        if let Ok(Some(now)) = conn.last_write_time() {
            let mut lag = None;
            watch.update(|v| {
                v.server_time = DateTime::from_timestamp(now.t.into(), 0);
                lag =
                    (v.last_archived).map(|end| (i64::from(now.t) - end.timestamp()).max(0) as f64);
                v.lag_seconds = lag;
            });
            if let (Some(lag), Some(bound)) = (lag, f.lag_alert) {
                lag_alert(service, f, watch, lag, bound);
            }
        }
        nap(done, PROBE_EVERY);
    }
}

/// Sleeps `total`, or less once `cancel` is cancelled.
fn nap(cancel: &Cancel, total: Duration) {
    let until = Instant::now() + total;
    while !cancel.is_cancelled() && Instant::now() < until {
        std::thread::sleep(
            Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

fn lag_alert(service: &Service, f: &Follower, watch: &Watch, lag: f64, bound: Duration) {
    let over = lag > bound.as_secs_f64();
    if watch.lag_alerted.swap(over, Ordering::Relaxed) || !over {
        return;
    }
    let name = f.name.get_ref();
    let body = json!({
        "event": Event::FollowerLag,
        "follower": name,
        "lag_seconds": lag,
        "text": format!("strata: follower {name} is {lag:.0} s behind its server (alert above {} s)", bound.as_secs()),
        "time": Utc::now(),
    });
    super::notify::send(service, Event::FollowerLag, None, body);
}
