//! Alerts: a plan's run failed (sent once when a plan starts failing, again only after a
//! success), a plan is stale (no success for `stale_after` intervals), or a check (a job's
//! or the API's) found damage (each time); each goes as a
//! JSON POST to the webhooks that take its event, or on the standard input of the commands
//! that take it, retried with back-off, and every delivery that finally fails is an
//! operation `notify` in the history.
use super::Service;
use super::config::{Event, Job, JobKind, Plan, Target};
use super::runner::Outcome;
use super::state::Status;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// How many of the latest alerts the service keeps for the dashboard.
const RECENT: usize = 100;

/// The latest alerts that fired, whether or not a target takes them, in memory (a restart
/// forgets them): what the dashboard's overview shows.
#[derive(Default)]
pub struct Recent(Mutex<VecDeque<Value>>);

impl Recent {
    fn push(&self, alert: Value) {
        let mut alerts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if alerts.len() == RECENT {
            alerts.pop_front();
        }
        alerts.push_back(alert);
    }

    /// The latest `limit` alerts, newest first.
    pub fn latest(&self, limit: usize) -> Vec<Value> {
        let alerts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        alerts.iter().rev().take(limit).cloned().collect()
    }
}

/// Attempts per delivery, and the pause before the second (doubled each time after).
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(10);

/// After a run of `plan`: a failure alert if it failed and the plan was not failing
/// already; a success clears both alerts.
pub fn after_run(service: &Service, plan: &Plan, operation: i64, out: &Outcome) {
    let name = plan.name.get_ref();
    let result = match out.status {
        Status::Success => service.state.set_alerted(name, Some(false), Some(false)),
        Status::Failed | Status::Partial => match service.state.plan(name) {
            Ok(s) if s.alerted_failure => Ok(()),
            Ok(_) => {
                let body = json!({
                    "event": Event::Failure,
                    "plan": name,
                    "operation": operation,
                    "status": out.status,
                    "error": out.error,
                    "text": format!("strata: plan {name} failed: {}", out.error.as_deref().unwrap_or(out.status.name())),
                    "time": Utc::now(),
                });
                send(service, Event::Failure, Some(name), body);
                service.state.set_alerted(name, Some(true), None)
            }
            Err(e) => Err(e),
        },
        _ => Ok(()),
    };
    if let Err(e) = result {
        eprintln!("strata serve: error: alert state of {name}: {e}");
    }
}

/// After a repository job: a damage alert when a check found damage.
pub fn after_job(service: &Service, job: &Job, operation: i64, out: &Outcome) {
    if job.kind == JobKind::Check {
        let repository = job.repository.get_ref();
        after_check(
            service,
            repository,
            Some(job.name.get_ref()),
            operation,
            out,
        );
    }
}

/// After a check of `repository` (by the job `job`, or through the API): a damage alert
/// when it found damage (it failed with a report listing errors; a check that could not
/// run at all is not damage).
pub fn after_check(
    service: &Service,
    repository: &str,
    job: Option<&str>,
    operation: i64,
    out: &Outcome,
) {
    let errors = out.report.get("errors").and_then(|e| e.as_array());
    let Some(errors) = errors.filter(|e| !e.is_empty()) else {
        return;
    };
    let body = json!({
        "event": Event::Damage,
        "repository": repository,
        "job": job,
        "operation": operation,
        "problems": errors.len(),
        "text": format!("strata: check of {repository} found {} problems", errors.len()),
        "time": Utc::now(),
    });
    send(service, Event::Damage, None, body);
}

/// A stale alert for each plan with no success for longer than `stale_after` times its
/// interval (counted from the service's start when it never succeeded).
pub fn check_stale(service: &Service, now: DateTime<Utc>) {
    for plan in &service.config.plans {
        if let Err(e) = check_plan_stale(service, plan, now) {
            eprintln!(
                "strata serve: error: stale check of {}: {e}",
                plan.name.get_ref()
            );
        }
    }
}

fn check_plan_stale(service: &Service, plan: &Plan, now: DateTime<Utc>) -> anyhow::Result<()> {
    let name = plan.name.get_ref();
    let state = service.state.plan(name)?;
    if state.alerted_stale || state.paused {
        return Ok(());
    }
    let Some(interval) = plan.schedule.interval(now, plan.time_zone) else {
        return Ok(());
    };
    let last = service.state.last_of(name, &[Status::Success])?;
    let since = last.and_then(|op| op.ended).unwrap_or(service.started);
    let limit = chrono::Duration::from_std(interval.mul_f64(plan.stale_after))?;
    if now - since <= limit {
        return Ok(());
    }
    let body = json!({
        "event": Event::Stale,
        "plan": name,
        "last_success": last_time(service, name),
        "text": format!("strata: plan {name} has not succeeded since {since}"),
        "time": now,
    });
    send(service, Event::Stale, Some(name), body);
    service.state.set_alerted(name, None, Some(true))?;
    Ok(())
}

fn last_time(service: &Service, plan: &str) -> Option<DateTime<Utc>> {
    let last = service.state.last_of(plan, &[Status::Success]).ok()??;
    last.ended
}

/// Keeps `body` among the recent alerts and sends it (about `plan`, if any) to every target
/// taking `event`, in the background.
pub(super) fn send(service: &Service, event: Event, plan: Option<&str>, body: Value) {
    service.alerts.push(body.clone());
    for target in service
        .config
        .notify
        .iter()
        .filter(|n| n.events.contains(&event))
    {
        let to = target.target();
        let name = target.name.get_ref().clone();
        let body = body.clone();
        let plan = plan.map(str::to_string);
        let state = service.state.clone();
        tokio::runtime::Handle::current().spawn(async move {
            if let Err(e) = deliver_async(&to, &body).await {
                eprintln!("strata serve: error: alert to {name}: {e}");
                let record = || -> Result<(), super::state::StateError> {
                    let id = state.start_operation("notify", plan.as_deref(), None)?;
                    let report = json!({"target": name, "event": event});
                    state.finish_operation(
                        id,
                        Status::Failed,
                        Some(&report),
                        Some(&e.to_string()),
                        &[],
                    )
                };
                if let Err(e) = record() {
                    eprintln!("strata serve: error: recording a failed alert: {e}");
                }
            }
        });
    }
}

fn client() -> reqwest::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(TIMEOUT).build()
}

/// Delivers `body` to `target`, retrying with back-off; the last error.
async fn deliver_async(target: &Target, body: &Value) -> anyhow::Result<()> {
    let client = client()?;
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        let error = match attempt_delivery(&client, target, body).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if attempt == ATTEMPTS {
            anyhow::bail!("{ATTEMPTS} attempts failed, the last with: {error}");
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

async fn attempt_delivery(
    client: &reqwest::Client,
    target: &Target,
    body: &Value,
) -> anyhow::Result<()> {
    match target {
        Target::Webhook(url) => {
            let result = client.post(url).json(body).send().await;
            match result.map(|r| r.error_for_status()) {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) | Err(e) => Err(e.without_url().into()),
            }
        }
        Target::Command { command, timeout } => {
            let (command, timeout, body) = (command.clone(), *timeout, body.clone());
            tokio::task::spawn_blocking(move || run_command(&command, timeout, &body)).await?
        }
    }
}

/// Runs `command` through `sh -c` with `body` on its standard input and its fields in the
/// environment; killed after `timeout`.
fn run_command(command: &str, timeout: Duration, body: &Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let mut child = std::process::Command::new("sh")
        .args(["-c", command])
        .env("STRATA_EVENT", field("event"))
        .env("STRATA_PLAN", field("plan"))
        .env("STRATA_REPOSITORY", field("repository"))
        .env("STRATA_TEXT", field("text"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input may have closed it: not a failure.
        let _ = stdin.write_all(body.to_string().as_bytes());
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(exit) = child.try_wait()? {
            anyhow::ensure!(exit.success(), "the command failed: {exit}");
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the command was stopped after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `deliver_async` for the command line (`notify-test`).
pub fn deliver(target: &Target, body: &Value) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(deliver_async(target, body))
}
