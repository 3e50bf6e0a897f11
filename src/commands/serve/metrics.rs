//! `/metrics` in the Prometheus text format, built at each scrape from the state database:
//! per plan the last success and attempt, the last run's duration, bytes and files, runs by
//! status (over the history kept); per repository the snapshot count, the size and the last
//! check's time and result; operations running; per MongoDB follower its lag, last archived
//! time, restarts and gaps. Labels are plan, repository, follower and status names only.
use super::Service;
use super::state::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The metric families of one scrape.
#[derive(Default)]
struct Families {
    last_success: Family<Labels, FloatGauge>,
    last_attempt: Family<Labels, FloatGauge>,
    duration: Family<Labels, FloatGauge>,
    bytes_read: Family<Labels, Gauge>,
    bytes_added: Family<Labels, Gauge>,
    files: Family<Labels, Gauge>,
    errors: Family<Labels, Gauge>,
    runs: Family<Labels, Counter>,
    snapshots: Family<Labels, Gauge>,
    size: Family<Labels, Gauge>,
    check_time: Family<Labels, FloatGauge>,
    check_ok: Family<Labels, Gauge>,
    running: Gauge,
}

pub fn render(service: &Service) -> anyhow::Result<String> {
    let f = Families::default();
    for plan in &service.config.plans {
        plan_metrics(service, &f, plan.name.get_ref())?;
    }
    for repo in &service.config.repositories {
        repository_metrics(service, &f, repo.name.get_ref())?;
    }
    f.running.set(service.running_count() as i64);
    let mut registry = Registry::with_prefix("strata");
    register(&mut registry, f);
    register_followers(&mut registry, service);
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

fn repository_metrics(service: &Service, f: &Families, name: &str) -> anyhow::Result<()> {
    let labels = vec![("repository", name.to_string())];
    if let Some(n) = service.state.snapshot_count(name)? {
        f.snapshots.get_or_create(&labels).set(n);
    }
    if let Some(bytes) = service.state.repository_size(name)? {
        f.size.get_or_create(&labels).set(bytes);
    }
    if let Some(check) = service.state.last_check(name)? {
        let ended = check.ended.unwrap_or(check.started);
        f.check_time.get_or_create(&labels).set(seconds(ended));
        let ok = check.status == Status::Success;
        f.check_ok.get_or_create(&labels).set(i64::from(ok));
    }
    Ok(())
}

fn plan_metrics(service: &Service, f: &Families, plan: &str) -> anyhow::Result<()> {
    let labels = vec![("plan", plan.to_string())];
    let state = &service.state;
    if let Some(op) = state.last_of(plan, &[Status::Success])? {
        let ended = op.ended.unwrap_or(op.started);
        f.last_success.get_or_create(&labels).set(seconds(ended));
    }
    let finished = [
        Status::Success,
        Status::Partial,
        Status::Failed,
        Status::Cancelled,
    ];
    if let Some(op) = state.last_of(plan, &finished)? {
        f.last_attempt
            .get_or_create(&labels)
            .set(seconds(op.started));
        let took = op.ended.map(|e| (e - op.started).as_seconds_f64());
        f.duration.get_or_create(&labels).set(took.unwrap_or(0.0));
        let summary = op.report.as_ref().and_then(|r| r.get("summary"));
        let field = |name: &str| {
            summary
                .and_then(|s| s.get(name))
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
        };
        f.bytes_read.get_or_create(&labels).set(field("bytes_read"));
        f.bytes_added
            .get_or_create(&labels)
            .set(field("bytes_added"));
        f.files.get_or_create(&labels).set(field("total_files"));
        let errors = op.report.as_ref().and_then(|r| r.get("errors"));
        let errors = errors.and_then(|e| e.as_array()).map_or(0, |e| e.len());
        f.errors.get_or_create(&labels).set(errors as i64);
    }
    for (status, n) in state.runs_by_status(plan)? {
        let labels = vec![
            ("plan", plan.to_string()),
            ("status", status.name().to_string()),
        ];
        f.runs.get_or_create(&labels).inc_by(n);
    }
    Ok(())
}

fn seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn register(r: &mut Registry, f: Families) {
    r.register(
        "plan_last_success_timestamp_seconds",
        "When the plan's last successful run ended",
        f.last_success,
    );
    r.register(
        "plan_last_attempt_timestamp_seconds",
        "When the plan's last finished run started",
        f.last_attempt,
    );
    r.register(
        "plan_last_duration_seconds",
        "How long the plan's last finished run took",
        f.duration,
    );
    r.register(
        "plan_last_bytes_read",
        "Bytes the plan's last finished run read",
        f.bytes_read,
    );
    r.register(
        "plan_last_bytes_added",
        "Bytes the plan's last finished run added to the repository",
        f.bytes_added,
    );
    r.register(
        "plan_last_files",
        "Files in the plan's last finished run's snapshot",
        f.files,
    );
    r.register(
        "plan_last_errors",
        "Entries the plan's last finished run could not read",
        f.errors,
    );
    r.register(
        "plan_runs",
        "The plan's runs in the history, by status",
        f.runs,
    );
    r.register(
        "repository_snapshots",
        "Snapshots in the repository, as last seen",
        f.snapshots,
    );
    r.register(
        "repository_size_bytes",
        "Bytes of the repository's objects but locks, as last listed (at start and after each backup, forget and prune)",
        f.size,
    );
    r.register(
        "repository_last_check_timestamp_seconds",
        "When the repository's last check job ended",
        f.check_time,
    );
    r.register(
        "repository_last_check_success",
        "1 when the repository's last check job found no damage (and finished), else 0",
        f.check_ok,
    );
    r.register("operations_running", "Operations running now", f.running);
}

/// Per follower (label `follower`): whether it runs, its lag and last archived time (once
/// known), and its restarts and gaps since the service started.
fn register_followers(r: &mut Registry, service: &Service) {
    let running = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, FloatGauge>::default();
    let archived = Family::<Labels, FloatGauge>::default();
    let restarts = Family::<Labels, Counter>::default();
    let gaps = Family::<Labels, Counter>::default();
    for watch in &service.followers {
        let v = watch.view();
        let labels = vec![("follower", v.name.clone())];
        running.get_or_create(&labels).set(i64::from(v.running));
        if let Some(l) = v.lag_seconds {
            lag.get_or_create(&labels).set(l);
        }
        if let Some(t) = v.last_archived {
            archived.get_or_create(&labels).set(seconds(t));
        }
        restarts.get_or_create(&labels).inc_by(v.restarts);
        gaps.get_or_create(&labels).inc_by(v.gaps);
    }
    r.register(
        "follower_running",
        "1 while the follower tails its server's oplog",
        running,
    );
    r.register(
        "follower_lag_seconds",
        "Oplog seconds between the server's last write and the end of the archive",
        lag,
    );
    r.register(
        "follower_last_archived_timestamp_seconds",
        "The end of the follower's archived oplog",
        archived,
    );
    r.register(
        "follower_restarts",
        "The follower's restarts after failures since the service started",
        restarts,
    );
    r.register(
        "follower_gaps",
        "Gaps (oplog rolled over before it was archived) the follower recorded since the service started",
        gaps,
    );
}
