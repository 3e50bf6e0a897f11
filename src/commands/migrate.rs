//! `strata migrate`: upgrade a version 1 or 2 repository in place to version 3.
use super::{Context, Outcome};
use anyhow::Result;
use strata::ops::migrate;
use strata::repo::lock::LockMode;

#[derive(clap::Args)]
pub struct Args {}

/// Testing hook: the process aborts (as if killed) once the named step of the migration has
/// ended, e.g. `snapshot-1`, `index`, `config` (see src/ops/migrate.rs).
const CRASH_AT: &str = "STRATA_MIGRATE_CRASH_AT";

pub fn run(ctx: &Context, _args: Args) -> Result<Outcome> {
    let repo = ctx.open()?;
    let crash_at = std::env::var(CRASH_AT).ok();
    let step = |name: &str| {
        if crash_at.as_deref() == Some(name) {
            std::process::abort();
        }
    };
    let wait = ctx.args.retry_lock.unwrap_or_default();
    let lock = repo.lock(LockMode::Exclusive, "migrate", wait, None)?;
    let opts = migrate::MigrateOptions {
        wait,
        cancel: ctx.cancel.clone(),
        step: Some(&step),
    };
    let report = migrate::migrate(&lock, &opts)?;
    if ctx.args.json {
        ctx.print_json(&report)?;
        return Ok(Outcome::Ok);
    }
    ctx.say(&format!(
        "repository at format version {} (was {}): {} snapshots and {} index files rewritten, {} key files updated, {} old objects removed",
        strata::repo::config::FORMAT_VERSION,
        report.from,
        report.snapshots,
        report.index_files,
        report.key_files,
        report.removed
    ))?;
    Ok(Outcome::Ok)
}
