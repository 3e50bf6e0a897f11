//! `strata prune`: delete unused data and repack partly used packs; report space freed.
use super::{Context, Outcome, human_bytes};
use anyhow::Result;
use strata::ops::pruner::{self, PruneOptions, PruneReport};
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;
use strata::repo::repository::IndexedRepo;

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Repack packs whose unused share is above this percentage (0 repacks every pack
    /// holding anything unused; 100 only deletes wholly unused packs)
    #[arg(long, value_name = "PERCENT", default_value_t = 20.0, value_parser = percent)]
    pub max_unused: f64,
    /// Show what would be deleted and repacked without changing anything
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

pub fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    match (0.0..=100.0).contains(&v) {
        true => Ok(v),
        false => Err(format!("{s} is not between 0 and 100")),
    }
}

pub fn run(ctx: &Context, args: PruneArgs) -> Result<Outcome> {
    let (repo, guard) = ctx.open_locked(LockMode::Exclusive, "prune")?;
    let repo = Locked::new(&repo, guard)?;
    let report = prune_locked(ctx, &repo, &args)?;
    match ctx.args.json {
        true => ctx.print_json(&report)?,
        false => print(ctx, &report)?,
    }
    Ok(Outcome::Ok)
}

/// Prunes a repository the caller holds an exclusive lock on (also used by `forget --prune`).
pub fn prune_locked(
    ctx: &Context,
    repo: &Locked<'_, IndexedRepo>,
    args: &PruneArgs,
) -> Result<PruneReport> {
    let opts = PruneOptions {
        max_unused_percent: args.max_unused,
        dry_run: args.dry_run,
        cancel: ctx.cancel.clone(),
    };
    let progress = ctx.progress("repack");
    Ok(pruner::prune(repo, &opts, progress.as_ref())?)
}

pub fn print(ctx: &Context, r: &PruneReport) -> Result<()> {
    let would = if r.dry_run { "would " } else { "" };
    ctx.say(&format!(
        "{} snapshots use {} of {} in {} packs",
        r.snapshots,
        human_bytes(r.used_bytes),
        human_bytes(r.bytes),
        r.packs
    ))?;
    ctx.say(&format!(
        "{would}delete {} unused packs and {} packs no index lists; {would}repack {} packs",
        r.packs_deleted, r.packs_unindexed, r.packs_repacked
    ))?;
    if r.dictionaries_deleted > 0 {
        ctx.say(&format!(
            "{would}delete {} dictionaries no remaining blob uses",
            r.dictionaries_deleted
        ))?;
    }
    if r.dry_run {
        return ctx.say(&format!("would free about {}", human_bytes(r.bytes_freed)));
    }
    ctx.say(&format!(
        "wrote {} packs ({}) and {} index files, removed {} index files",
        r.packs_written,
        human_bytes(r.bytes_written),
        r.index_files_written,
        r.index_files_removed
    ))?;
    ctx.say(&format!(
        "freed {}; {} unused left in kept packs",
        human_bytes(r.bytes_freed),
        human_bytes(r.unused_bytes_kept)
    ))
}
