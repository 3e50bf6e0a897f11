//! `strata unlock`: remove stale repository locks (or, with `--remove-all`, every lock).
use super::{Context, Outcome};
use anyhow::Result;
use strata::lock;

#[derive(clap::Args)]
pub struct Args {
    /// Remove every lock, including those of processes that may still be running
    #[arg(long)]
    remove_all: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open()?;
    let removed = lock::remove_stale(repo.backend(), repo.key(), args.remove_all)?;
    let remaining = lock::list(repo.backend(), repo.key())?;
    if ctx.args.json {
        let held: Vec<_> = remaining.iter().map(describe).collect();
        ctx.print_json(&serde_json::json!({"removed": removed, "remaining": held}))?;
        return Ok(Outcome::Ok);
    }
    ctx.say(&format!("removed {removed} lock(s)"))?;
    for found in &remaining {
        ctx.say(&format!("still held: {}", describe(found)))?;
    }
    Ok(Outcome::Ok)
}

fn describe(found: &lock::Found) -> String {
    match &found.info {
        Ok(info) => format!(
            "{} {}",
            &found.name[..8.min(found.name.len())],
            info.describe()
        ),
        Err(e) => format!("{} unreadable: {e}", found.name),
    }
}
