//! `strata copy`: copy snapshots from another repository into this one, re-encrypted and
//! deduplicated with this repository's keys, printing what became of each.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use strata::ops::copy::{self, CopyReport, Status};
use strata::repo::id::SnapshotId;
use strata::repo::lock::{LockGuard, LockMode};
use strata::repo::locked::Locked;
use strata::repo::repository::IndexedRepo;
use strata::repo::snapshot::Snapshot;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots of the source to copy (unique id prefixes, or `latest`; default: all)
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// The repository to copy from (any location -r accepts; the -o options apply to both)
    #[arg(long, value_name = "LOCATION", env = "STRATA_FROM_REPOSITORY")]
    from_repo: String,
    /// Read the source repository's password from this file (else $STRATA_FROM_PASSWORD,
    /// else a prompt)
    #[arg(long, value_name = "FILE", env = "STRATA_FROM_PASSWORD_FILE")]
    from_password_file: Option<PathBuf>,
}

/// The source's snapshots that cannot be read, with the reason.
type Unreadable = Vec<(SnapshotId, String)>;

/// The source repository, opened to read, and what to copy from it.
struct Source {
    repo: IndexedRepo,
    /// The shared lock on it (none with `--no-lock`).
    _lock: Option<LockGuard>,
    /// Oldest first.
    snapshots: Vec<(SnapshotId, Snapshot)>,
    unreadable: Unreadable,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let from = &args.from_repo;
    // The source first: a wrong source password must not leave so much as a lock behind in
    // the destination.
    let src = open_source(ctx, &args).with_context(|| format!("source repository {from}"))?;
    let (dst, guard) =
        (ctx.open_locked(LockMode::Shared, "copy")).with_context(|| destination(ctx))?;
    let dst = Locked::new(&dst, guard)?;
    let progress = ctx.progress("copy");
    let report = copy::copy(
        &src.repo,
        &dst,
        &src.snapshots,
        &ctx.cancel,
        progress.as_ref(),
    )?;
    drop(progress);
    print(ctx, &report, &src.unreadable)?;
    let complete = report.snapshots_failed == 0 && src.unreadable.is_empty();
    Ok(match complete {
        true => Outcome::Ok,
        false => Outcome::Partial,
    })
}

/// The destination, as errors name it.
fn destination(ctx: &Context) -> String {
    match &ctx.args.repo {
        Some(location) => format!("destination repository {location}"),
        None => "destination repository".into(),
    }
}

/// The source repository, opened to read, and the snapshots to copy.
fn open_source(ctx: &Context, args: &Args) -> Result<Source> {
    let password = super::read_password(
        args.from_password_file.as_deref(),
        "STRATA_FROM_PASSWORD",
        &format!("enter password for source repository {}: ", args.from_repo),
        "set STRATA_FROM_PASSWORD or use --from-password-file",
    )?;
    let backend = ctx.backend_at(&args.from_repo)?;
    let (repo, _lock) = ctx.index_reading(ctx.open_at(backend, &password)?, "copy")?;
    if args.snapshots.is_empty() {
        let (snapshots, bad) = repo.snapshots()?;
        let unreadable = bad.into_iter().map(|(id, e)| (id, e.to_string())).collect();
        return Ok(Source {
            repo,
            _lock,
            snapshots,
            unreadable,
        });
    }
    let mut snapshots = (args.snapshots.iter())
        .map(|spec| repo.find_snapshot(spec))
        .collect::<strata::repo::repository::Result<Vec<_>>>()?;
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    snapshots.dedup_by_key(|(id, _)| *id);
    Ok(Source {
        repo,
        _lock,
        snapshots,
        unreadable: Vec::new(),
    })
}

fn print(ctx: &Context, r: &CopyReport, unreadable: &Unreadable) -> Result<()> {
    if ctx.args.json {
        let unreadable: Vec<_> = (unreadable.iter())
            .map(|(id, e)| serde_json::json!({"snapshot": id, "error": e}))
            .collect();
        let mut json = serde_json::to_value(r)?;
        json["unreadable"] = unreadable.into();
        return ctx.print_json(&json);
    }
    for (id, why) in unreadable {
        ctx.warn(&format!(
            "snapshot {} of the source is unreadable and was not copied: {}",
            id.0.short(),
            escape(why)
        ));
    }
    for s in &r.snapshots {
        let source = s.source.0.short();
        match &s.status {
            Status::Copied { destination } => ctx.say(&format!(
                "snapshot {source} -> {} ({} new blobs, {})",
                destination.0.short(),
                s.blobs_added,
                human_bytes(s.bytes_added)
            ))?,
            Status::Skipped { destination } => ctx.say(&format!(
                "snapshot {source}: skipped, already copied as {}",
                destination.0.short()
            ))?,
            Status::Failed { error } => ctx.warn(&format!(
                "snapshot {source} was not copied: {}",
                escape(error)
            )),
        }
    }
    ctx.say(&format!(
        "{} snapshots copied, {} skipped (already copied), {} failed; added {} blobs ({}) to \
         the repository",
        r.snapshots_copied,
        r.snapshots_skipped,
        r.snapshots_failed + unreadable.len(),
        r.blobs_added,
        human_bytes(r.bytes_added)
    ))
}
