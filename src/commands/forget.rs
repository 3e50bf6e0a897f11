//! `strata forget`: remove snapshots named by id, or those a retention policy does not keep,
//! printing per group what is kept and why. Only snapshot files are removed, never packs.
use super::prune::{PruneArgs, print as print_prune, prune_locked};
use super::{Context, Outcome, escape};
use anyhow::Result;
use chrono::{Local, Utc};
use strata::backend::Kind;
use strata::id::SnapshotId;
use strata::lock::LockMode;
use strata::policy::{self, Count, Entry, Group, GroupBy, Policy, Reason, Span, TagList};
use strata::pruner::PruneReport;
use strata::repository::{IndexedRepo, Repository};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to remove (unique id prefixes, or `latest`) instead of applying a policy
    #[arg(value_name = "SNAPSHOT", conflicts_with = "policy")]
    snapshots: Vec<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Apply the policy separately to each group of snapshots sharing these fields
    /// (comma-separated: host, paths, tags; '' for one group)
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    group_by: GroupBy,
    /// Show what would be removed, but remove nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Then prune: delete the data that no remaining snapshot uses
    #[arg(long)]
    prune: bool,
    /// With --prune: repack packs with more than this percentage unused (see `prune`)
    #[arg(long, value_name = "PERCENT", default_value_t = 20.0,
          value_parser = super::prune::percent, requires = "prune")]
    max_unused: f64,
}

/// The `--keep-*` options (see README, "Retention policies"). Counts take -1 or `unlimited`.
#[derive(clap::Args)]
#[group(id = "policy", multiple = true)]
#[command(next_help_heading = "Policy")]
struct PolicyArgs {
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_hourly: Option<Count>,
    /// Keep the newest snapshot of each of the last N days that have snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_daily: Option<Count>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_weekly: Option<Count>,
    /// Keep the newest snapshot of each of the last N months that have snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_monthly: Option<Count>,
    /// Keep the newest snapshot of each of the last N years that have snapshots
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_yearly: Option<Count>,
    /// Keep snapshots less than DURATION (e.g. 1y6m, 7d12h) older than the group's newest
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<Span>,
    /// Keep snapshots carrying all these tags (comma-separated; '' = untagged; repeatable)
    #[arg(long = "keep-tag", value_name = "TAGS")]
    keep_tags: Vec<TagList>,
}

impl PolicyArgs {
    fn policy(self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within,
            tags: self.keep_tags,
        }
    }
}

/// A snapshot as `--json` shows it, with the reasons it is kept.
#[derive(serde::Serialize)]
struct Listed<'a> {
    id: String,
    short_id: String,
    time: chrono::DateTime<Utc>,
    host: &'a str,
    paths: &'a [String],
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<&'a [Reason]>,
}

fn listed<'a>(entry: &'a Entry, reasons: Option<&'a [Reason]>) -> Listed<'a> {
    let (id, s) = entry;
    Listed {
        id: id.0.to_hex(),
        short_id: id.0.short(),
        time: s.time,
        host: &s.host,
        paths: &s.paths,
        tags: &s.tags,
        reasons,
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open_locked(LockMode::Exclusive, "forget")?;
    let prune = args.prune.then_some(PruneArgs {
        max_unused: args.max_unused,
        dry_run: args.dry_run,
    });
    if !args.snapshots.is_empty() {
        let chosen = resolve(&repo, &args.snapshots)?;
        let chosen: Vec<&Entry> = chosen.iter().collect();
        return finish(ctx, &repo, &[], &chosen, prune, args.dry_run);
    }
    let (mut all, damaged) = repo.snapshots()?;
    // Oplog slices serve point-in-time recovery between backups; no keep rule removes them
    // (name them to remove them).
    all.retain(|(_, s)| !s.is_oplog_slice());
    for (id, e) in &damaged {
        ctx.warn(&format!("snapshot {} is left alone: {e}", id.0.short()));
    }
    let policy = args.policy.policy();
    let groups = policy::apply(&all, &policy, args.group_by, &Local, Utc::now())?;
    let remove: Vec<&Entry> = groups.iter().flat_map(|g| g.remove.clone()).collect();
    finish(ctx, &repo, &groups, &remove, prune, args.dry_run)
}

/// The snapshots named on the command line, each once, in the order given.
fn resolve(repo: &Repository, specs: &[String]) -> Result<Vec<Entry>> {
    let mut chosen: Vec<Entry> = Vec::new();
    for spec in specs {
        let entry = repo.find_snapshot(spec)?;
        if chosen.iter().all(|(id, _)| *id != entry.0) {
            chosen.push(entry);
        }
    }
    Ok(chosen)
}

/// Prints the plan, removes `remove` unless `dry_run`, prunes if asked, and reports what
/// happened.
fn finish(
    ctx: &Context,
    repo: &IndexedRepo,
    groups: &[Group],
    remove: &[&Entry],
    prune: Option<PruneArgs>,
    dry_run: bool,
) -> Result<Outcome> {
    print_plan(ctx, groups, remove)?;
    let failed = match dry_run {
        true => Vec::new(),
        false => remove_all(ctx, repo, remove),
    };
    // Pruning right after removing needs the removals to have happened; a dry run
    // prunes as if they had not, so its figures are a lower bound.
    let pruned = match &prune {
        Some(p) if failed.is_empty() => Some(prune_locked(ctx, repo, p)?),
        _ => None,
    };
    let removed: Vec<String> = (remove.iter())
        .filter(|(id, _)| !dry_run && failed.iter().all(|(f, _)| f != id))
        .map(|(id, _)| id.0.to_hex())
        .collect();
    if ctx.args.json {
        print_json(
            ctx,
            groups,
            remove,
            &removed,
            &failed,
            pruned.as_ref(),
            dry_run,
        )?;
    } else {
        print_summary(ctx, remove, removed.len(), dry_run)?;
        if let Some(report) = &pruned {
            print_prune(ctx, report)?;
        }
    }
    Ok(match failed.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    })
}

/// Removes each snapshot file; returns the ones that could not be removed, with the error.
fn remove_all(ctx: &Context, repo: &Repository, remove: &[&Entry]) -> Vec<(SnapshotId, String)> {
    let mut failed = Vec::new();
    for (id, _) in remove {
        if let Err(e) = repo.backend().remove(Kind::Snapshot, &id.0.to_hex()) {
            ctx.warn(&format!("cannot remove snapshot {}: {e}", id.0.short()));
            failed.push((*id, e.to_string()));
        }
    }
    failed
}

/// Per group what is kept (and why) and removed; without groups, the snapshots named.
fn print_plan(ctx: &Context, groups: &[Group], remove: &[&Entry]) -> Result<()> {
    if groups.is_empty() {
        for entry in remove {
            ctx.say(&line("remove", entry, ""))?;
        }
    }
    for g in groups {
        ctx.say(&format!(
            "{}: keep {}, remove {}",
            escape(&g.key.to_string()),
            g.keep.len(),
            g.remove.len()
        ))?;
        for k in &g.keep {
            let reasons: Vec<String> = k.reasons.iter().map(Reason::to_string).collect();
            ctx.say(&line("keep", k.snapshot, &escape(&reasons.join(", "))))?;
        }
        for entry in &g.remove {
            ctx.say(&line("remove", entry, ""))?;
        }
    }
    Ok(())
}

/// `  keep    1a2b3c4d  2024-05-01 12:00:00  <detail>`, the time in the local zone.
fn line(verb: &str, (id, s): &Entry, detail: &str) -> String {
    let time = s.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
    format!("  {verb:<6}  {}  {time}  {detail}", id.0.short())
        .trim_end()
        .to_string()
}

fn print_summary(ctx: &Context, remove: &[&Entry], removed: usize, dry_run: bool) -> Result<()> {
    match dry_run {
        true => ctx.say(&format!("dry run: would remove {} snapshots", remove.len())),
        false => ctx.say(&format!("removed {removed} snapshots")),
    }
}

fn print_json(
    ctx: &Context,
    groups: &[Group],
    remove: &[&Entry],
    removed: &[String],
    failed: &[(SnapshotId, String)],
    pruned: Option<&PruneReport>,
    dry_run: bool,
) -> Result<()> {
    let groups: Vec<_> = (groups.iter())
        .map(|g| {
            serde_json::json!({
                "group": g.key,
                "keep": g.keep.iter().map(|k| listed(k.snapshot, Some(&k.reasons))).collect::<Vec<_>>(),
                "remove": g.remove.iter().map(|e| listed(e, None)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failed: Vec<_> = (failed.iter())
        .map(|(id, e)| serde_json::json!({"id": id.0.to_hex(), "error": e}))
        .collect();
    ctx.print_json(&serde_json::json!({
        "dry_run": dry_run,
        "groups": groups,
        "remove": remove.iter().map(|e| listed(e, None)).collect::<Vec<_>>(),
        "removed": removed,
        "failed": failed,
        "prune": pruned,
    }))
}
