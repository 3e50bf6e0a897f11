//! `strata backup`: save paths as a new snapshot and print its id and summary.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;
use std::path::PathBuf;
use strata::archiver::{self, BackupOptions, ParentChoice};
use strata::filter::Patterns;
use strata::lock::LockMode;

#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Add a tag to the snapshot (repeatable)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    host: Option<String>,
    /// Leave out paths matching GLOB (repeatable; see README for the syntax)
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Do not cross into other filesystems
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Compare with this snapshot instead of the newest with the same host and paths
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,
    /// Read everything and count what would be added, but write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Record this time instead of now: RFC 3339, or `YYYY-MM-DD HH:MM:SS` in the local zone
    #[arg(long, value_name = "TIMESTAMP", value_parser = super::parse_time)]
    time: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open_locked(LockMode::Shared, "backup")?;
    let mut patterns = args.excludes.clone();
    for f in &args.exclude_files {
        patterns.extend(Patterns::read_file(f)?);
    }
    let parent = match &args.parent {
        Some(spec) => ParentChoice::Snapshot(repo.find_snapshot(spec)?.0),
        None => ParentChoice::Auto,
    };
    let opts = BackupOptions {
        paths: args.paths,
        exclude: Patterns::new(&patterns)?,
        one_file_system: args.one_file_system,
        parent,
        tags: args.tags,
        host: args.host.unwrap_or_else(strata::sysinfo::hostname),
        dry_run: args.dry_run,
        time: args.time,
    };
    let progress = ctx.progress("backup");
    let result = archiver::backup(&repo, &opts, progress.as_ref())?;
    drop(progress);
    for (path, err) in &result.errors {
        ctx.warn(&format!("{}: {}", escape(path), escape(err)));
    }
    report(ctx, &result)?;
    Ok(match result.errors.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    })
}

fn report(ctx: &Context, r: &archiver::BackupResult) -> Result<()> {
    let s = &r.snapshot.summary;
    if ctx.args.json {
        let errors: Vec<_> = r
            .errors
            .iter()
            .map(|(p, e)| serde_json::json!({"path": p, "error": e}))
            .collect();
        return ctx.print_json(&serde_json::json!({
            "snapshot_id": r.id.map(|id| id.0.to_hex()),
            "dry_run": r.id.is_none(),
            "parent": r.snapshot.parent.map(|id| id.0.to_hex()),
            "summary": s,
            "errors": errors,
        }));
    }
    ctx.say(&format!(
        "Files: {} new, {} changed, {} unmodified\nDirs:  {} new, {} changed, {} unmodified\n\
         Read {} of {} in {} files; added {} to the repository ({} blobs, {} before compression)\n\
         Duration {:.2}s",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        s.dirs_new,
        s.dirs_changed,
        s.dirs_unmodified,
        human_bytes(s.bytes_read),
        human_bytes(s.total_bytes),
        s.total_files,
        human_bytes(s.bytes_added),
        s.data_blobs_added + s.tree_blobs_added,
        human_bytes(s.bytes_added_raw),
        s.duration_secs
    ))?;
    match r.id {
        Some(id) => ctx.say(&format!("snapshot {} saved", id.0.short())),
        None => ctx.say("dry run: nothing was written"),
    }
}
