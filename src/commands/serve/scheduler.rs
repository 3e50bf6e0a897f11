//! When plans and jobs run: each has a next run time in the state database; a due task that
//! is not paused or still running is started, and its next time computed from now. At start
//! a run missed while the service was down is run once or skipped, as the plan says.
use super::config::Missed;
use super::{Service, StartError, Task};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The longest the scheduler sleeps, so that pauses, resumes and stale checks take effect.
const TICK: Duration = Duration::from_secs(1);

pub async fn run(service: Arc<Service>) {
    let now = Utc::now();
    for task in service.tasks() {
        if let Err(e) = first_run(&service, task, now) {
            eprintln!("strata serve: error: scheduling {}: {e}", task.key());
        }
    }
    loop {
        let now = Utc::now();
        let mut wake = now + TICK;
        for task in service.tasks() {
            match due(&service, task, now) {
                Ok(next) => wake = wake.min(next.unwrap_or(wake)),
                Err(e) => eprintln!("strata serve: error: scheduling {}: {e}", task.key()),
            }
        }
        super::notify::check_stale(&service, now);
        let sleep = (wake - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(sleep.min(TICK)).await;
    }
}

fn schedule_of(task: Task<'_>) -> (&super::schedule::Schedule, super::schedule::Zone) {
    match task {
        Task::Plan(p) => (&p.schedule, p.time_zone),
        Task::Job(j) => (&j.schedule, j.time_zone),
    }
}

/// The next run of `task` after `now`.
pub fn next_after(task: Task, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (schedule, zone) = schedule_of(task);
    schedule.next_after(now, zone)
}

/// Sets the first next run: a time missed while the service was down stays (so it runs at
/// once) only for a plan whose `missed` is `run_once`.
fn first_run(service: &Service, task: Task, now: DateTime<Utc>) -> anyhow::Result<()> {
    let key = task.key();
    let stored = service.state.plan(&key)?.next_run;
    let run_once = matches!(task, Task::Plan(p) if p.missed == Missed::RunOnce);
    let next = match stored {
        Some(t) if t <= now && run_once => Some(t),
        _ => next_after(task, now),
    };
    service.state.set_next_run(&key, next)?;
    Ok(())
}

/// Starts `task` if it is due; its next run time.
fn due(
    service: &Arc<Service>,
    task: Task,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let key = task.key();
    let state = service.state.plan(&key)?;
    let Some(next) = state.next_run else {
        return Ok(None);
    };
    if next > now {
        return Ok(Some(next));
    }
    if !state.paused {
        match service.start(task, "schedule") {
            Ok(_) => {}
            Err(StartError::Busy(..)) => {
                eprintln!("strata serve: {key}: still running, run skipped")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let next = next_after(task, now);
    service.state.set_next_run(&key, next)?;
    Ok(next)
}
