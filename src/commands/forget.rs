//! `strata forget`: the command line of [`strata::ops::forget`], printing per group what is kept
//! and why, and which MongoDB oplog slices go with them.
use super::prune::{PruneArgs, print as print_prune, prune_locked};
use super::{Context, Outcome, escape};
use anyhow::Result;
use chrono::{Local, Utc};
use strata::ops::forget::{self, Plan};
use strata::ops::pruner::PruneReport;
use strata::repo::id::SnapshotId;
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;
use strata::repo::repository::IndexedRepo;
use strata::repo::snapshot::BsonTime;
use strata::select::policy::{Count, Entry, GroupBy, Policy, Reason, Span, TagList};
use strata::sources::mongodb::retention::SliceVerdict;

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
/// A service plan's `retention` table is the same options in snake case (`keep_tags` for
/// the repeated `--keep-tag`).
#[derive(clap::Args, Debug, serde::Deserialize)]
#[group(id = "policy", multiple = true)]
#[command(next_help_heading = "Policy")]
#[serde(deny_unknown_fields)]
pub struct PolicyArgs {
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
    #[serde(default)]
    keep_tags: Vec<TagList>,
    /// Remove MongoDB oplog slices ending DURATION or more before the newest slice of their
    /// server, even where a kept snapshot could use them (alone: snapshots are all kept)
    #[arg(long, value_name = "DURATION")]
    pub keep_oplog_within: Option<Span>,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within,
            tags: self.keep_tags.clone(),
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
    let (repo, guard) = ctx.open_locked(LockMode::Exclusive, "forget")?;
    let repo = Locked::new(&repo, guard)?;
    let prune = args.prune.then_some(PruneArgs {
        max_unused: args.max_unused,
        dry_run: args.dry_run,
    });
    if !args.snapshots.is_empty() {
        let chosen = forget::resolve(&repo, &args.snapshots)?;
        return finish(ctx, &repo, &Plan::named(&chosen), prune, args.dry_run);
    }
    let (all, damaged) = repo.snapshots()?;
    for (id, e) in &damaged {
        ctx.warn(&format!("snapshot {} is left alone: {e}", id.0.short()));
    }
    let oplog_within = args.policy.keep_oplog_within;
    let policy = args.policy.policy();
    let plan = Plan::by_policy(
        &all,
        &policy,
        oplog_within,
        args.group_by,
        &Local,
        Utc::now(),
    )?;
    finish(ctx, &repo, &plan, prune, args.dry_run)
}

/// Prints the plan, removes its snapshots unless `dry_run`, prunes if asked, and reports
/// what happened.
fn finish(
    ctx: &Context,
    repo: &Locked<'_, IndexedRepo>,
    plan: &Plan,
    prune: Option<PruneArgs>,
    dry_run: bool,
) -> Result<Outcome> {
    print_plan(ctx, plan)?;
    let applied = match dry_run {
        true => forget::Applied::default(),
        false => forget::apply(repo, plan, &ctx.cancel)?,
    };
    for (id, e) in &applied.failed {
        ctx.warn(&format!("cannot remove snapshot {}: {e}", id.0.short()));
    }
    // Pruning right after removing needs the removals to have happened; a dry run
    // prunes as if they had not, so its figures are a lower bound.
    let pruned = match &prune {
        Some(p) if applied.failed.is_empty() => Some(prune_locked(ctx, repo, p)?),
        _ => None,
    };
    let removed: Vec<&Entry> = (plan.remove.iter().copied())
        .filter(|(id, _)| applied.removed.contains(id))
        .collect();
    if ctx.args.json {
        print_json(
            ctx,
            plan,
            &removed,
            &applied.failed,
            pruned.as_ref(),
            dry_run,
        )?;
    } else {
        print_summary(ctx, &plan.remove, &removed, dry_run)?;
        if let Some(report) = &pruned {
            print_prune(ctx, report)?;
        }
    }
    Ok(match applied.failed.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    })
}

/// Per group what is kept (and why) and removed, then the same per server for oplog slices;
/// without either, the snapshots named.
fn print_plan(ctx: &Context, plan: &Plan) -> Result<()> {
    if plan.groups.is_empty() && plan.slices.is_empty() {
        for entry in &plan.remove {
            ctx.say(&line("remove", entry, ""))?;
        }
    }
    for g in &plan.groups {
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
    print_slices(ctx, &plan.slices)
}

/// `oplog slices of SERVER: keep N, remove M`, then a line per slice: its end in the local
/// zone (as `line` shows snapshot times), its exact oplog range, and its reasons.
fn print_slices(ctx: &Context, slices: &[SliceVerdict]) -> Result<()> {
    for (nr, v) in slices.iter().enumerate() {
        let server = &v.slice.server;
        if nr == 0 || slices[nr - 1].slice.server != *server {
            let mine = slices.iter().filter(|o| o.slice.server == *server);
            let kept = mine.clone().filter(|o| o.keep).count();
            let removed = mine.count() - kept;
            let server = escape(server);
            ctx.say(&format!(
                "oplog slices of {server}: keep {kept}, remove {removed}"
            ))?;
        }
        let verb = if v.keep { "keep" } else { "remove" };
        let reasons: Vec<String> = v.reasons.iter().map(|r| r.to_string()).collect();
        let (start, end) = (v.slice.start, v.slice.end);
        ctx.say(&format!(
            "  {verb:<6}  {}  {}  ({start}..{end})  {}",
            v.slice.id.0.short(),
            local(end),
            reasons.join(", ")
        ))?;
    }
    Ok(())
}

/// An oplog time's second in the local zone.
fn local(t: BsonTime) -> String {
    (chrono::DateTime::from_timestamp(t.t.into(), 0))
        .map(|d| {
            d.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| t.to_string())
}

/// `  keep    1a2b3c4d  2024-05-01 12:00:00  <detail>`, the time in the local zone.
fn line(verb: &str, (id, s): &Entry, detail: &str) -> String {
    let time = s.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
    format!("  {verb:<6}  {}  {time}  {detail}", id.0.short())
        .trim_end()
        .to_string()
}

fn print_summary(
    ctx: &Context,
    remove: &[&Entry],
    removed: &[&Entry],
    dry_run: bool,
) -> Result<()> {
    match dry_run {
        true => ctx.say(&format!("dry run: would remove {}", count(remove))),
        false => ctx.say(&format!("removed {}", count(removed))),
    }
}

/// `N snapshots`, and how many of them are oplog slices when any are.
fn count(entries: &[&Entry]) -> String {
    let slices = entries.iter().filter(|(_, s)| s.is_oplog_slice()).count();
    match slices {
        0 => format!("{} snapshots", entries.len()),
        n => format!("{} snapshots ({n} of them oplog slices)", entries.len()),
    }
}

fn print_json(
    ctx: &Context,
    plan: &Plan,
    removed: &[&Entry],
    failed: &[(SnapshotId, String)],
    pruned: Option<&PruneReport>,
    dry_run: bool,
) -> Result<()> {
    let groups: Vec<_> = (plan.groups.iter())
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
        "oplog_slices": plan.slices,
        "remove": plan.remove.iter().map(|e| listed(e, None)).collect::<Vec<_>>(),
        "removed": removed.iter().map(|(id, _)| id.0.to_hex()).collect::<Vec<_>>(),
        "failed": failed,
        "prune": pruned,
    }))
}
