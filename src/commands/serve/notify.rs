//! Alerts: a plan's run failed (sent once when a plan starts failing, again only after a
//! success), a plan is stale (no success for `stale_after` intervals), or a check job found
//! damage (each time); each goes as a
//! JSON POST to the webhooks that take its event, retried with back-off, and every
//! delivery that finally fails is an operation `notify` in the history.
use super::Service;
use super::config::{Event, Job, JobKind, Plan};
use super::runner::Outcome;
use super::state::Status;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;

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

/// After a repository job: a damage alert when a check found damage (it failed with a
/// report listing errors; a check that could not run at all is not damage).
pub fn after_job(service: &Service, job: &Job, operation: i64, out: &Outcome) {
    let errors = out.report.get("errors").and_then(|e| e.as_array());
    let Some(errors) = errors.filter(|e| job.kind == JobKind::Check && !e.is_empty()) else {
        return;
    };
    let repository = job.repository.get_ref();
    let body = json!({
        "event": Event::Damage,
        "repository": repository,
        "job": job.name.get_ref(),
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

/// Sends `body` (about `plan`, if any) to every target taking `event`, in the background.
pub(super) fn send(service: &Service, event: Event, plan: Option<&str>, body: Value) {
    for target in service
        .config
        .notify
        .iter()
        .filter(|n| n.events.contains(&event))
    {
        let url = target.webhook.get_ref().clone();
        let name = target.name.get_ref().clone();
        let body = body.clone();
        let plan = plan.map(str::to_string);
        let state = service.state.clone();
        tokio::runtime::Handle::current().spawn(async move {
            if let Err(e) = deliver_async(&url, &body).await {
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

/// POSTs `body` to `url`, retrying with back-off; the last error.
async fn deliver_async(url: &str, body: &Value) -> anyhow::Result<()> {
    let client = client()?;
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        let result = client.post(url).json(body).send().await;
        let error = match result.map(|r| r.error_for_status()) {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) | Err(e) => e.without_url(),
        };
        if attempt == ATTEMPTS {
            anyhow::bail!("{ATTEMPTS} attempts failed, the last with: {error}");
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

/// `deliver_async` for the command line (`notify-test`).
pub fn deliver(url: &str, body: &Value) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(deliver_async(url, body))
}
