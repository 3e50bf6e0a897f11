//! `strata check`: verify structure, and with --read-data the data itself; list damage.
use super::{Context, Outcome, escape};
use anyhow::Result;
use strata::ops::checker::{self, ReadData};

#[derive(clap::Args)]
pub struct Args {
    /// Read and verify every pack
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read and verify a subset: `n/m` (the n-th of m groups) or `N%`
    #[arg(long, value_name = "n/m|N%")]
    read_data_subset: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let read = match (&args.read_data_subset, args.read_data) {
        (Some(s), _) => ReadData::parse(s).map_err(anyhow::Error::msg)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    // Check judges what is stored, so nothing is read from the local cache.
    let (repo, _lock) = ctx.index_reading(ctx.open()?.without_cache(), "check")?;
    let progress = ctx.progress("check");
    let report = checker::check(&repo, read, &ctx.cancel, progress.as_ref())?;
    drop(progress);
    if ctx.args.json {
        ctx.print_json(&report)?;
    } else {
        for p in &report.errors {
            eprintln!(
                "strata: damage: {} {}: {}",
                p.kind,
                escape(&p.object),
                escape(&p.message)
            );
        }
        ctx.say(&format!(
            "{} snapshots, {} trees, {} blobs referenced, {} packs ({} read, {} blobs verified)",
            report.snapshots,
            report.trees,
            report.blobs_referenced,
            report.packs,
            report.packs_read,
            report.blobs_read
        ))?;
        if report.dictionaries > 0 {
            ctx.say(&format!("{} dictionaries", report.dictionaries))?;
        }
        if !report.unused_packs.is_empty()
            || report.unused_blobs > 0
            || !report.unused_dictionaries.is_empty()
        {
            ctx.say(&format!(
                "unused data (not damage): {} packs in no index, {} blobs no snapshot uses, \
                 {} dictionaries no indexed blob uses",
                report.unused_packs.len(),
                report.unused_blobs,
                report.unused_dictionaries.len()
            ))?;
        }
        let verdict = match report.errors.len() {
            0 => "no errors were found".to_string(),
            n => format!("{n} problems found"),
        };
        ctx.say(&verdict)?;
    }
    Ok(if report.errors.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
