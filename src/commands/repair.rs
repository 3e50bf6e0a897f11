//! `strata repair index|snapshots`: rebuild the index from the packs, and salvage snapshots
//! that reference missing or damaged data.
use super::{Context, Outcome, escape};
use anyhow::Result;
use strata::ops::repair::{
    self, IndexRepair, IndexRepairOptions, SnapshotRepair, SnapshotRepairOptions,
};
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rebuild the index from the pack headers alone
    Index {
        /// Also verify every blob and leave damaged ones out of the index
        #[arg(long)]
        read_data: bool,
    },
    /// For each snapshot that references missing or damaged data, write a copy without the
    /// affected files (tagged `repaired`) and list what was lost
    Snapshots {
        /// Verify every referenced blob's content, not only that the index lists it
        #[arg(long)]
        read_data: bool,
        /// Remove each damaged original once its repaired copy is written, and every
        /// snapshot object that cannot be read at all
        #[arg(long)]
        forget: bool,
        /// Report what would be cut, write nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    // Repair judges what is stored, so nothing is read from the local cache.
    let repo = ctx.open()?.without_cache();
    let (repo, guard) = ctx.index_locked(repo, LockMode::Exclusive, "repair")?;
    let repo = Locked::new(&repo, guard)?;
    let progress = ctx.progress("repair");
    match args.what {
        What::Index { read_data } => {
            let opts = IndexRepairOptions {
                read_data,
                cancel: ctx.cancel.clone(),
            };
            let report = repair::repair_index(&repo, &opts, progress.as_ref())?;
            drop(progress);
            index_report(ctx, &report)
        }
        What::Snapshots {
            read_data,
            forget,
            dry_run,
        } => {
            let opts = SnapshotRepairOptions {
                read_data,
                forget,
                dry_run,
                cancel: ctx.cancel.clone(),
            };
            let report = repair::repair_snapshots(&repo, &opts, progress.as_ref())?;
            drop(progress);
            snapshots_report(ctx, &report)
        }
    }
}

fn index_report(ctx: &Context, r: &IndexRepair) -> Result<Outcome> {
    if ctx.args.json {
        ctx.print_json(r)?;
    } else {
        for e in &r.unreadable_packs {
            let why = escape(&e.message);
            ctx.warn(&format!("pack {}: header unreadable: {why}", e.path));
        }
        for e in &r.damaged_blobs {
            ctx.warn(&format!("blob {} left out: {}", e.path, escape(&e.message)));
        }
        for pack in &r.packs_rewritten {
            ctx.say(&format!(
                "pack {pack}: intact blobs copied to a new pack, damaged pack removed"
            ))?;
        }
        ctx.say(&format!(
            "indexed {} blobs in {} packs: wrote {} index files, removed {} old ones",
            r.blobs, r.packs, r.index_files_written, r.index_files_removed
        ))?;
    }
    Ok(
        match r.unreadable_packs.is_empty() && r.damaged_blobs.is_empty() {
            true => Outcome::Ok,
            false => Outcome::Partial,
        },
    )
}

fn snapshots_report(ctx: &Context, r: &SnapshotRepair) -> Result<Outcome> {
    if ctx.args.json {
        ctx.print_json(r)?;
    } else {
        for e in &r.unreadable {
            ctx.warn(&format!(
                "snapshot {} is unreadable and cannot be salvaged: {}",
                e.path,
                escape(&e.message)
            ));
        }
        for s in &r.salvaged {
            let copy = s
                .repaired
                .map(|id| id.0.short())
                .unwrap_or_else(|| "none".into());
            ctx.say(&format!(
                "snapshot {} -> {copy}: {} path(s) lost",
                s.original.0.short(),
                s.lost.len()
            ))?;
            for e in &s.lost {
                ctx.say(&format!(
                    "  lost {}: {}",
                    escape(&e.path),
                    escape(&e.message)
                ))?;
            }
        }
        ctx.say(&format!(
            "{} snapshots checked, {} repaired, {} originals removed",
            r.snapshots_checked,
            r.salvaged.len(),
            r.originals_removed
        ))?;
    }
    Ok(match r.salvaged.is_empty() && r.unreadable.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    })
}
