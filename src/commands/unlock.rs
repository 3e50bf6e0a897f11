//! `strata unlock`: remove stale repository locks (or, with `--remove-all`, every lock).
use super::{Context, Outcome, escape};
use anyhow::Result;
use strata::repo::lock::{Judged, STALE_AFTER};

#[derive(clap::Args)]
pub struct Args {
    /// Remove every lock, including those of processes that may still be running
    #[arg(long)]
    remove_all: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open()?;
    let unlocked = repo.unlock(args.remove_all, ctx.cache().as_deref())?;
    if ctx.args.json {
        let held: Vec<_> = unlocked.remaining.iter().map(json).collect();
        ctx.print_json(&serde_json::json!({"removed": unlocked.removed, "remaining": held}))?;
        return Ok(Outcome::Ok);
    }
    ctx.say(&format!("removed {} lock(s)", unlocked.removed))?;
    for judged in &unlocked.remaining {
        ctx.say(&format!(
            "still held: {}; unchanged for {} s as seen from here, stale after {} s",
            describe(judged),
            judged.unchanged_for.as_secs(),
            STALE_AFTER.as_secs()
        ))?;
    }
    Ok(Outcome::Ok)
}

fn json(judged: &Judged) -> serde_json::Value {
    serde_json::json!({
        "lock": describe(judged),
        "unchanged_secs": judged.unchanged_for.as_secs(),
        "stale_after_secs": STALE_AFTER.as_secs(),
    })
}

fn describe(judged: &Judged) -> String {
    let found = &judged.found;
    match &found.info {
        Ok(info) => {
            let short: String = found.name.chars().take(8).collect();
            format!("{} {}", escape(&short), info.describe())
        }
        Err(e) => format!("{} unreadable: {}", escape(&found.name), escape(e)),
    }
}
