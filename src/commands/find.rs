//! `strata find`: which snapshots hold paths matching patterns, and each version's size
//! and mtime; a snapshot that cannot be searched is reported and the others still are.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;
use strata::ops::finder::{self, Found, Version};
use strata::repo::id::SnapshotId;
use strata::repo::paths;
use strata::repo::snapshot::Snapshot;
use strata::select::filter::Patterns;

#[derive(clap::Args)]
pub struct Args {
    /// Glob matched against each full path; one without `/` against each name
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Search only this snapshot (id prefix or `latest`; repeatable)
    #[arg(long = "snapshot", value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Search only snapshots that include this backup path (repeatable: all must match)
    #[arg(long = "path")]
    paths: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let patterns = Patterns::new(&args.patterns)?;
    let repo = ctx.open_indexed()?;
    let selected = select(&repo, &args, ctx)?;
    let report = finder::find(&repo, &selected, &patterns, &ctx.cancel)?;
    for (id, e) in &report.skipped {
        ctx.warn(&escape(&format!(
            "snapshot {} is skipped: {e}",
            id.0.short()
        )));
    }
    let outcome = match report.skipped.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    };
    if ctx.args.json {
        ctx.print_json(&report.found)?;
        return Ok(outcome);
    }
    for f in &report.found {
        print_found(ctx, f)?;
    }
    ctx.say(&format!(
        "{} matching paths in {} snapshots searched",
        report.found.len(),
        selected.len() - report.skipped.len()
    ))?;
    Ok(outcome)
}

/// The snapshots to search, oldest first.
fn select(
    repo: &strata::repo::repository::IndexedRepo,
    args: &Args,
    ctx: &Context,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut chosen = match args.snapshots.is_empty() {
        true => {
            let (all, damaged) = repo.snapshots()?;
            for (id, e) in &damaged {
                ctx.warn(&format!("snapshot {} is skipped: {e}", id.0.short()));
            }
            all
        }
        false => args
            .snapshots
            .iter()
            .map(|spec| repo.find_snapshot(spec))
            .collect::<Result<Vec<_>, _>>()?,
    };
    chosen.retain(|(_, s)| includes_paths(s, &args.paths));
    chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    chosen.dedup_by_key(|(id, _)| *id);
    Ok(chosen)
}

fn includes_paths(s: &Snapshot, wanted: &[String]) -> bool {
    wanted
        .iter()
        .all(|p| s.paths.iter().any(|sp| sp == p.trim_end_matches('/')))
}

fn print_found(ctx: &Context, f: &Found) -> Result<()> {
    ctx.say(&escape(&paths::display(&f.path)))?;
    for v in &f.versions {
        ctx.say(&version_line(v))?;
    }
    Ok(())
}

fn version_line(v: &Version) -> String {
    let local = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mtime = chrono::DateTime::from_timestamp(v.mtime.sec, v.mtime.nsec)
        .map(local)
        .unwrap_or_default();
    format!(
        "  {}  {}  {:<7}  {:>10}  modified {mtime}",
        v.snapshot.0.short(),
        local(v.time),
        v.kind,
        human_bytes(v.size)
    )
}
