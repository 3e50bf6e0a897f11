//! `strata restore`: write a snapshot, or a subpath of it, into a target directory.
use super::{Context, Outcome, escape};
use anyhow::Result;
use std::path::PathBuf;
use strata::filter::Patterns;
use strata::restorer::{self, RestoreError, RestoreOptions, RestoreReport};
use strata::sandbox::OnConflict;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Conflict {
    Fail,
    Skip,
    Overwrite,
    Rename,
}

#[derive(clap::Args)]
pub struct Args {
    /// SNAPSHOT or SNAPSHOT:SUBPATH (the subpath's contents go into the target)
    snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching GLOB (repeatable)
    #[arg(long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Leave out paths matching GLOB (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// What to do where something already exists in the target
    #[arg(long, value_enum, default_value = "fail")]
    on_conflict: Conflict,
    /// List what would be written and where it conflicts; write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Re-read what was written and check it against the snapshot
    #[arg(long)]
    verify: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open_reading("restore")?;
    let (spec, subpath) = args
        .snapshot
        .split_once(':')
        .unwrap_or((&args.snapshot, ""));
    let (_, snap) = repo.find_snapshot(spec)?;
    let opts = RestoreOptions {
        target: args.target,
        subpath: strata::vfs::components(subpath.as_bytes())
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect(),
        include: Patterns::new(&args.includes)?,
        exclude: Patterns::new(&args.excludes)?,
        on_conflict: match args.on_conflict {
            Conflict::Fail => OnConflict::Fail,
            Conflict::Skip => OnConflict::Skip,
            Conflict::Overwrite => OnConflict::Overwrite,
            Conflict::Rename => OnConflict::Rename,
        },
        dry_run: args.dry_run,
        verify: args.verify,
        owner: rustix::process::geteuid().is_root(),
    };
    let progress = ctx.progress("restore");
    let result = restorer::restore(&repo, snap.tree, &opts, progress.as_ref());
    drop(progress);
    let report = match result {
        Err(RestoreError::Conflicts(paths)) => return conflicts(ctx, &paths),
        other => other?,
    };
    print_report(ctx, &report)?;
    let failed = !report.errors.is_empty() || !report.verify_failures.is_empty();
    Ok(if failed {
        Outcome::Partial
    } else {
        Outcome::Ok
    })
}

fn conflicts(ctx: &Context, paths: &[String]) -> Result<Outcome> {
    if ctx.args.json {
        ctx.print_json(&serde_json::json!({"conflicts": paths}))?;
    }
    for p in paths.iter().take(20) {
        eprintln!(
            "strata: conflict: {} already exists in the target",
            escape(p)
        );
    }
    eprintln!(
        "strata: error: {} entries already exist in the target; nothing was written \
         (use --on-conflict skip|overwrite|rename)",
        paths.len()
    );
    Ok(Outcome::Failed)
}

fn print_report(ctx: &Context, r: &RestoreReport) -> Result<()> {
    for (path, err) in &r.errors {
        eprintln!("strata: error: {}: {}", escape(path), escape(err));
    }
    for (path, err) in &r.verify_failures {
        eprintln!("strata: verify failed: {}: {}", escape(path), escape(err));
    }
    if ctx.args.json {
        return ctx.print_json(r);
    }
    for p in &r.planned {
        let note = if p.existing { " (exists)" } else { "" };
        ctx.say(&format!(
            "{:?} {} {}{note}",
            p.action,
            p.kind,
            escape(&p.path)
        ))?;
    }
    for (from, to) in &r.renamed {
        ctx.say(&format!(
            "kept existing {}; restored as {}",
            escape(from),
            escape(to)
        ))?;
    }
    ctx.say(&format!(
        "restored {} files, {} dirs, {} symlinks, {} others, {}; skipped {}; {} errors{}",
        r.files,
        r.dirs,
        r.symlinks,
        r.others,
        super::human_bytes(r.bytes_written),
        r.skipped.len(),
        r.errors.len(),
        if r.verified_files > 0 {
            format!("; verified {} files", r.verified_files)
        } else {
            String::new()
        }
    ))
}
