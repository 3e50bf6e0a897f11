//! Running operations for the service: a plan's run (before hook, backup, forget with its
//! retention, after hook) and a repository job (check, prune), each on a blocking thread
//! with its own cancellation token, its progress fed to live subscribers and its outcome
//! written to the history. The work itself is the engine's; this module only calls it.
use super::Service;
use super::config::{Hook, JobKind, Plan, Repository};
use super::follower;
use super::state::Status;
use crate::commands::prune::{PruneArgs, prune_locked};
use crate::commands::{Context, GlobalArgs};
use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{Local, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata::cancel::Cancel;
use strata::observer::{Counters, EntryError, Observer, Phase};
use strata::ops::archiver::{self, BackupOptions, ParentChoice, TreeSource};
use strata::ops::checker::{self, ReadData};
use strata::ops::forget;
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;
use strata::repo::repository::IndexedRepo;
use strata::select::filter::Patterns;
use tokio::sync::broadcast;

/// One event of an operation, as the events endpoint sends it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// 0, 1, 2, … in the order they happened.
    pub seq: u64,
    /// `phase`, `progress`, `error`, `log` or `report` (always the last).
    pub kind: &'static str,
    pub data: Value,
}

/// What subscribers need of a running operation: the events so far and a channel for the
/// next ones, behind one lock so that none is missed or seen twice.
struct Feed {
    events: Vec<Event>,
    sender: Option<broadcast::Sender<Event>>,
}

/// A running operation.
pub struct Running {
    pub id: i64,
    pub cancel: Cancel,
    feed: Mutex<Feed>,
    counters: Mutex<(Counters, Instant)>,
    /// What the counters will reach (zero fields: unknown), and the item worked on.
    ahead: Mutex<(Counters, String)>,
}

/// Progress events are sent at most this often (phase changes and errors always are).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Running {
    pub fn new(id: i64) -> Running {
        let (sender, _) = broadcast::channel(4096);
        Running {
            id,
            cancel: Cancel::default(),
            feed: Mutex::new(Feed {
                events: Vec::new(),
                sender: Some(sender),
            }),
            counters: Mutex::new((Counters::default(), Instant::now())),
            ahead: Mutex::new((Counters::default(), String::new())),
        }
    }

    fn push(&self, kind: &'static str, data: Value) {
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        let event = Event {
            seq: feed.events.len() as u64,
            kind,
            data,
        };
        if let Some(sender) = &feed.sender {
            let _ = sender.send(event.clone());
        }
        feed.events.push(event);
    }

    /// The events so far and, unless the operation ended, a receiver of the next ones.
    pub fn subscribe(&self) -> (Vec<Event>, Option<broadcast::Receiver<Event>>) {
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        (
            feed.events.clone(),
            feed.sender.as_ref().map(|s| s.subscribe()),
        )
    }

    /// The log lines: every event but progress, as text.
    fn log(&self) -> Vec<String> {
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        (feed.events.iter())
            .filter(|e| e.kind != "progress")
            .map(|e| format!("{} {}", e.kind, e.data))
            .collect()
    }

    /// Sends the final report and closes the feed.
    fn finish(&self, status: Status, report: &Value, error: Option<&str>) {
        let data = json!({"status": status, "report": report, "error": error});
        self.push("report", data);
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        feed.sender = None;
    }

    fn progress(&self, force: bool) {
        let mut guard = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if !force && guard.1.elapsed() < PROGRESS_EVERY {
            return;
        }
        guard.1 = Instant::now();
        let c = guard.0;
        drop(guard);
        let (total, item) = self.ahead.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut data =
            json!({"files": c.files, "bytes_read": c.bytes_read, "bytes_added": c.bytes_added});
        if total.files > 0 {
            data["total_files"] = total.files.into();
        }
        if total.bytes_added > 0 {
            data["total_bytes_added"] = total.bytes_added.into();
        }
        if !item.is_empty() {
            data["item"] = item.into();
        }
        self.push("progress", data);
    }

    pub fn log_line(&self, text: String) {
        self.push("log", Value::String(text));
    }
}

impl Observer for Running {
    fn phase(&self, phase: Phase) {
        self.progress(true);
        self.push("phase", Value::String(phase.name().to_string()));
    }
    fn total(&self, expected: Counters) {
        self.ahead.lock().unwrap_or_else(|e| e.into_inner()).0 = expected;
    }
    fn add(&self, done: Counters) {
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).0 += done;
        self.progress(false);
    }
    fn item(&self, name: &str) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.1.clear();
        ahead.1.push_str(name);
    }
    fn error(&self, e: &EntryError) {
        self.push("error", json!({"path": e.path, "message": e.message}));
    }
}

/// What a run ended with, before it is recorded.
pub struct Outcome {
    pub status: Status,
    pub report: Value,
    pub error: Option<String>,
}

impl Service {
    /// A command context for `repo`'s operations: its location and options, the service's
    /// cache, waiting for conflicting locks, cancelled by `cancel`.
    pub(super) fn context(&self, repo: &Repository, cancel: Cancel) -> Context {
        let args = GlobalArgs {
            repo: Some(repo.location.get_ref().clone()),
            options: (repo.options.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            password_file: None,
            cache_dir: Some(self.config.state_dir.join("cache")),
            no_cache: false,
            json: false,
            quiet: true,
            no_lock: false,
            retry_lock: Some(repo.retry_lock),
        };
        Context { args, cancel }
    }

    /// Opens `repo` with its password and loads its index, locked in `mode` for `command`.
    fn open_locked<'a>(
        &self,
        ctx: &Context,
        repo: &Repository,
        indexed: &'a mut Option<IndexedRepo>,
        mode: LockMode,
        command: &str,
    ) -> Result<Locked<'a, IndexedRepo>> {
        let (repo, guard) = ctx.index_locked(open(ctx, repo)?, mode, command)?;
        Ok(Locked::new(indexed.insert(repo), guard)?)
    }

    /// Opens `repo` and records its figures: the check at start that every repository is
    /// reachable with its password. With `clean`, stale locks (such as those
    /// of this service killed with `kill -9`) are removed, as `strata unlock` does.
    pub fn probe(&self, repo: &Repository, clean: bool) -> Result<()> {
        let ctx = self.context(repo, Cancel::default());
        let opened = open(&ctx, repo)?;
        let removed = match clean {
            true => opened.unlock(false, ctx.cache().as_deref())?.removed,
            false => 0,
        };
        let name = repo.name.get_ref();
        if removed > 0 {
            eprintln!("strata serve: {name}: removed {removed} stale locks");
        }
        self.record_figures(name, &opened)
    }

    /// Records what the service shows of the repository `name` without opening it again: the
    /// size of its objects (from the store's listings; no object is read), and from one
    /// listing of its snapshots their number and summed summaries.
    pub(super) fn record_figures(&self, name: &str, repo: &strata::Repository) -> Result<()> {
        let size = strata::ops::stats::repository_size(repo.backend())?;
        self.state.set_repository_size(name, size)?;
        let (all, _) = repo.snapshots()?;
        self.state.set_snapshot_count(name, all.len())?;
        let totals = super::state::Totals::of(all.iter().map(|(_, s)| s));
        Ok(self.state.set_repository_totals(name, totals)?)
    }

    /// A plan's run: before hook, backup, forget (when it has a retention), after hook.
    pub fn run_plan(&self, plan: &Plan, op: &Running) -> Outcome {
        let result = self.try_run_plan(plan, op);
        let after = plan.after.as_ref().map(|hook| {
            let status = match &result {
                Ok((status, _)) => status.name(),
                Err(_) if op.cancel.is_cancelled() => "cancelled",
                Err(_) => "failed",
            };
            run_hook(hook, "after", plan.name.get_ref(), status, op)
        });
        outcome(result, after, op)
    }

    fn try_run_plan(&self, plan: &Plan, op: &Running) -> Result<(Status, Value)> {
        if let Some(hook) = &plan.before {
            run_hook(hook, "before", plan.name.get_ref(), "running", op)?;
        }
        let repo = self.repository(plan.repository.get_ref())?;
        let ctx = self.context(repo, op.cancel.clone());
        let (indexed, guard) = ctx.index_locked(open(&ctx, repo)?, LockMode::Shared, "backup")?;
        let locked = Locked::new(&indexed, guard)?;
        let opts = BackupOptions {
            cancel: op.cancel.clone(),
            paths: plan.paths.clone(),
            exclude: Patterns::new(&plan.excludes)?,
            one_file_system: false,
            parent: ParentChoice::Auto,
            tags: (plan.tags.iter().cloned())
                .chain([plan_tag(plan.name.get_ref())])
                .collect(),
            host: (plan.host.clone()).unwrap_or_else(strata::sysinfo::hostname),
            dry_run: false,
            time: None,
        };
        let export = match &plan.mongo {
            Some(source) => Some(super::mongo::export(source, &indexed.snapshots()?.0)?),
            None => None,
        };
        let sources: Vec<&dyn TreeSource> = export.iter().map(|e| e as &dyn TreeSource).collect();
        let result = archiver::backup_with(&locked, &opts, &sources, op)?;
        drop(locked);
        let id = result.id.map(|id| id.0.to_hex());
        op.log_line(format!("snapshot {} saved", id.as_deref().unwrap_or("-")));
        // The repository opened for the backup (one key derivation, one index load per run).
        let forgotten = match &plan.retention {
            Some(policy) => Some(self.forget((&ctx, repo), &indexed, policy, false, op)?),
            None => None,
        };
        self.record_figures(repo.name.get_ref(), &indexed)?;
        let status = match result.errors.is_empty() {
            true => Status::Success,
            false => Status::Partial,
        };
        let report = json!({
            "snapshot_id": id,
            "summary": result.snapshot.summary,
            "errors": result.errors,
            "mongodb": export.map(|e| e.report()),
            "forget": forgotten,
        });
        Ok((status, report))
    }

    /// Applies `retention` to `indexed` under an exclusive lock, its index brought up to
    /// date once the lock is held (with `dry_run`, only decides): the report (which
    /// snapshots go, which went, how many are left).
    pub(super) fn forget(
        &self,
        (ctx, repo): (&Context, &Repository),
        indexed: &IndexedRepo,
        retention: &crate::commands::forget::PolicyArgs,
        dry_run: bool,
        op: &Running,
    ) -> Result<Value> {
        let _followers = follower::hold(self, repo.name.get_ref(), repo.retry_lock);
        let guard = ctx.lock(indexed, LockMode::Exclusive, "forget")?;
        indexed.sync_index()?;
        let locked = Locked::new(indexed, guard)?;
        let (all, _damaged) = locked.snapshots()?;
        let group_by = Default::default();
        let policy = retention.policy();
        let oplog = retention.keep_oplog_within;
        let plan = forget::Plan::by_policy(&all, &policy, oplog, group_by, &Local, Utc::now())?;
        let remove: Vec<String> = plan.remove.iter().map(|(id, _)| id.0.to_hex()).collect();
        let applied = match dry_run {
            true => forget::Applied::default(),
            false => forget::apply(&locked, &plan, &op.cancel)?,
        };
        let removed: Vec<String> = applied.removed.iter().map(|id| id.0.to_hex()).collect();
        op.log_line(match dry_run {
            true => format!("forget would remove {} snapshots", remove.len()),
            false => format!("forget removed {} snapshots", removed.len()),
        });
        Ok(json!({
            "dry_run": dry_run,
            "remove": remove,
            "left": all.len() - removed.len(),
            "removed": removed,
            "failed": applied.failed.len(),
        }))
    }

    /// A repository job: `check` (with its read-data subset) or `prune`.
    pub fn run_job(&self, job: &super::config::Job, op: &Running) -> Outcome {
        let repo = self.repository(job.repository.get_ref());
        let result = repo.and_then(|repo| match job.kind {
            JobKind::Check => {
                let subset = job.read_data_subset.as_ref().map(|s| s.get_ref().as_str());
                self.check(repo, subset, op)
            }
            JobKind::Prune => self.prune(repo, job.max_unused, false, op),
        });
        outcome(result, None, op)
    }

    /// Checks `repo`, reading the packs of `subset` (`n/m`, `N%` or `all`) if given;
    /// failed when it finds damage.
    pub(super) fn check(
        &self,
        repo: &Repository,
        subset: Option<&str>,
        op: &Running,
    ) -> Result<(Status, Value)> {
        let ctx = self.context(repo, op.cancel.clone());
        let read = match subset {
            Some("all") => ReadData::All,
            Some(s) => ReadData::parse(s).map_err(anyhow::Error::msg)?,
            None => ReadData::None,
        };
        let opened = open(&ctx, repo)?.without_cache();
        let (checked, _lock) = ctx.index_reading(opened, "check")?;
        let report = checker::check(&checked, read, &op.cancel, op)?;
        let status = match report.errors.is_empty() {
            true => Status::Success,
            false => Status::Failed,
        };
        Ok((status, serde_json::to_value(&report)?))
    }

    /// Prunes `repo` under an exclusive lock (with `dry_run`, only reports what it would).
    pub(super) fn prune(
        &self,
        repo: &Repository,
        max_unused: f64,
        dry_run: bool,
        op: &Running,
    ) -> Result<(Status, Value)> {
        let ctx = self.context(repo, op.cancel.clone());
        let mut indexed = None;
        let _followers = follower::hold(self, repo.name.get_ref(), repo.retry_lock);
        let locked = self.open_locked(&ctx, repo, &mut indexed, LockMode::Exclusive, "prune")?;
        let args = PruneArgs {
            max_unused,
            dry_run,
        };
        let report = prune_locked(&ctx, &locked, &args)?;
        self.record_figures(repo.name.get_ref(), &locked)?;
        Ok((Status::Success, serde_json::to_value(&report)?))
    }

    pub(super) fn repository(&self, name: &str) -> Result<&Repository> {
        (self.config.repository(name)).ok_or_else(|| anyhow!("no repository named {name:?}"))
    }
}

/// Opens `repo` in `ctx` with its password.
pub(super) fn open(ctx: &Context, repo: &Repository) -> Result<strata::Repository> {
    ctx.open_at(ctx.backend()?, &repo.password()?)
}

/// The outcome of a run from its result and its after hook's.
pub(super) fn outcome(
    result: Result<(Status, Value)>,
    after: Option<Result<()>>,
    op: &Running,
) -> Outcome {
    let (status, report, error) = match result {
        Ok((status, report)) => (status, report, None),
        Err(_) if op.cancel.is_cancelled() => (Status::Cancelled, Value::Null, None),
        Err(e) => (Status::Failed, Value::Null, Some(message(&e))),
    };
    let (status, error) = match (after, error) {
        (Some(Err(e)), None) => (Status::Failed, Some(message(&e))),
        (_, error) => (status, error),
    };
    Outcome {
        status,
        report,
        error,
    }
}

/// The error's message, any URI password in it hidden.
fn message(e: &anyhow::Error) -> String {
    super::mongo::redact(&strata::errors::message(e.as_ref()))
}

/// Runs `hook` through `sh -c` with `STRATA_PLAN`, `STRATA_HOOK` and `STRATA_STATUS` set,
/// killed after its timeout or when the operation is cancelled.
fn run_hook(hook: &Hook, which: &str, plan: &str, status: &str, op: &Running) -> Result<()> {
    op.log_line(format!("{which} hook started"));
    let mut child = std::process::Command::new("sh")
        .args(["-c", &hook.command])
        .env("STRATA_PLAN", plan)
        .env("STRATA_HOOK", which)
        .env("STRATA_STATUS", status)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting the {which} hook"))?;
    let deadline = Instant::now() + hook.timeout;
    loop {
        if let Some(exit) = child.try_wait()? {
            match exit.success() {
                true => return Ok(()),
                false => bail!("the {which} hook failed: {exit}"),
            }
        }
        if Instant::now() >= deadline || op.cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {which} hook was stopped after {:?}", hook.timeout);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records `op`'s end in the history, then closes its feed with the final report (so a
/// subscriber that saw the report finds the operation ended in the history).
pub fn record(service: &Service, op: &Arc<Running>, out: &Outcome) {
    let report = (!out.report.is_null()).then_some(&out.report);
    let log = op.log();
    if let Err(e) =
        (service.state).finish_operation(op.id, out.status, report, out.error.as_deref(), &log)
    {
        eprintln!("strata serve: error: recording operation {}: {e}", op.id);
    }
    op.finish(out.status, &out.report, out.error.as_deref());
}

/// The tag of the snapshots a plan's runs make (`plan:NAME`, as Backrest tags them), by
/// which the API and the dashboard list a plan's snapshots.
pub(super) fn plan_tag(plan: &str) -> String {
    format!("plan:{plan}")
}
