//! `strata scan`: compare the live file system with a snapshot; report missing, modified
//! and new files, where an intact earlier version is and the command that restores it;
//! optionally restore the missing files in place. With `--mongo`, compare a MongoDB server
//! with a snapshot's dump instead (`mongo`).
mod mongo;

use super::{Context, Outcome, escape, human_bytes};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::path::PathBuf;
use strata::observer::EntryError;
use strata::ops::scan::{self, Lost, NewEntry, Restored, ScanOptions, ScanReport};
use strata::repo::paths;

#[derive(clap::Args)]
pub struct Args {
    /// Live paths to compare, each inside the snapshot's paths (default: all of them)
    paths: Vec<PathBuf>,
    /// Snapshot to compare with (id prefix or `latest`; default: the newest of this host
    /// whose paths cover PATH..., or with --mongo the newest MongoDB snapshot of that server)
    #[arg(long, value_name = "SNAPSHOT")]
    snapshot: Option<String>,
    /// Also read files whose size and mtime match and compare their content; with --mongo,
    /// list the missing and changed documents' _ids
    #[arg(long)]
    deep: bool,
    /// Restore the missing files in place (never replacing anything that exists)
    #[arg(long)]
    restore_missing: bool,
    #[command(flatten)]
    mongo: mongo::MongoArgs,
}

/// A missing or modified entry with the command that brings its earlier version back.
#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    lost: &'a Lost,
    restore_command: Option<String>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    snapshot: strata::repo::id::SnapshotId,
    paths: &'a [String],
    missing: Vec<Entry<'a>>,
    modified: Vec<Entry<'a>>,
    new: &'a [NewEntry],
    unchanged: u64,
    errors: &'a [EntryError],
    restored: &'a [Restored],
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    if let Some(uri) = args.mongo.uri(ctx)? {
        return mongo::run(ctx, &args.mongo, &uri, args.snapshot.as_deref(), args.deep);
    }
    let (repo, _lock) = ctx.open_reading("scan")?;
    let history = history(ctx, &repo)?;
    let snapshot = match &args.snapshot {
        Some(spec) => repo.find_snapshot(spec)?,
        None => default_snapshot(&history, &args.paths)?,
    };
    let opts = ScanOptions {
        paths: args.paths,
        deep: args.deep,
        cancel: ctx.cancel.clone(),
    };
    let progress = ctx.progress("scan");
    let report = scan::scan(&repo, &snapshot, &history, &opts, progress.as_ref())?;
    drop(progress);
    let restored = match args.restore_missing {
        true => restore_missing(ctx, &repo, &report)?,
        false => Vec::new(),
    };
    let failed = !report.errors.is_empty() || restored.iter().any(|r| !r.report.errors.is_empty());
    print(ctx, &report, &restored)?;
    Ok(outcome(failed, report.is_clean()))
}

/// Partial when something could not be compared or restored, else Differences unless clean.
fn outcome(failed: bool, clean: bool) -> Outcome {
    match (failed, clean) {
        (true, _) => Outcome::Partial,
        (false, true) => Outcome::Ok,
        (false, false) => Outcome::Differences,
    }
}

/// The readable snapshots, oldest first, with a warning for each damaged one.
fn history(
    ctx: &Context,
    repo: &strata::repo::repository::IndexedRepo,
) -> Result<
    Vec<(
        strata::repo::id::SnapshotId,
        strata::repo::snapshot::Snapshot,
    )>,
> {
    let (history, damaged) = repo.snapshots()?;
    for (id, e) in &damaged {
        ctx.warn(&format!("snapshot {} is skipped: {e}", id.0.short()));
    }
    Ok(history)
}

fn default_snapshot(
    history: &[(
        strata::repo::id::SnapshotId,
        strata::repo::snapshot::Snapshot,
    )],
    paths: &[PathBuf],
) -> Result<(
    strata::repo::id::SnapshotId,
    strata::repo::snapshot::Snapshot,
)> {
    let host = strata::sysinfo::hostname();
    scan::default_snapshot(history, &host, paths)
        .cloned()
        .with_context(|| {
            let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            let what = match shown.is_empty() {
                true => String::new(),
                false => format!(" that includes {}", shown.join(", ")),
            };
            format!("there is no snapshot of host {host:?}{what}; choose one with --snapshot")
        })
}

fn restore_missing(
    ctx: &Context,
    repo: &strata::repo::repository::IndexedRepo,
    report: &ScanReport,
) -> Result<Vec<Restored>> {
    let owner = rustix::process::geteuid().is_root();
    let progress = ctx.progress("restore");
    Ok(scan::restore_missing(
        repo,
        report,
        owner,
        &ctx.cancel,
        progress.as_ref(),
    )?)
}

fn print(ctx: &Context, report: &ScanReport, restored: &[Restored]) -> Result<()> {
    for e in &report.errors {
        eprintln!("strata: error: {}: {}", escape(&e.path), escape(&e.message));
    }
    for e in restored.iter().flat_map(|r| &r.report.errors) {
        eprintln!(
            "strata: error: restoring /{}: {}",
            escape(&e.path),
            escape(&e.message)
        );
    }
    if ctx.args.json {
        return ctx.print_json(&JsonReport {
            snapshot: report.snapshot,
            paths: &report.paths,
            missing: entries(ctx, &report.missing),
            modified: entries(ctx, &report.modified),
            new: &report.new,
            unchanged: report.unchanged,
            errors: &report.errors,
            restored,
        });
    }
    ctx.say(&format!(
        "compared {} with snapshot {}",
        escape(&report.paths.join(" ")),
        report.snapshot.0.short()
    ))?;
    for lost in report.missing.iter().chain(&report.modified) {
        print_lost(ctx, lost)?;
    }
    for new in &report.new {
        let slash = if new.kind == "dir" { "/" } else { "" };
        ctx.say(&format!(
            "new       {}{slash}",
            escape(&paths::display(&new.path))
        ))?;
    }
    for r in restored {
        print_restored(ctx, r)?;
    }
    ctx.say(&format!(
        "{} missing, {} modified, {} new, {} unchanged",
        report.missing.len(),
        report.modified.len(),
        report.new.len(),
        report.unchanged
    ))
}

fn entries<'a>(ctx: &Context, list: &'a [Lost]) -> Vec<Entry<'a>> {
    list.iter()
        .map(|lost| Entry {
            lost,
            restore_command: restore_command(ctx, lost),
        })
        .collect()
}

fn print_lost(ctx: &Context, lost: &Lost) -> Result<()> {
    let path = escape(&paths::display(&lost.path)).into_owned();
    let what = match lost.reason {
        None => format!("missing   {path} ({})", human_bytes(lost.size)),
        Some(reason) => format!("modified  {path} ({})", json_word(&reason)),
    };
    ctx.say(&what)?;
    match (&lost.source, restore_command(ctx, lost)) {
        (Some(source), Some(command)) => ctx.say(&format!(
            "          intact in snapshot {} of {}; restore with:\n          {command}",
            source.snapshot.0.short(),
            local_time(&source.time)
        )),
        _ => ctx.say("          no snapshot holds an intact earlier version"),
    }
}

fn local_time(time: &chrono::DateTime<chrono::Utc>) -> String {
    let local = time.with_timezone(&chrono::Local);
    local.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// How a value is named in JSON (`"mtime"`), for text output.
fn json_word(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn print_restored(ctx: &Context, r: &Restored) -> Result<()> {
    let rep = &r.report;
    ctx.say(&format!(
        "restored {} files, {} symlinks, {} others ({}) from snapshot {}; \
         {} already existed and were left alone; {} errors",
        rep.files,
        rep.symlinks,
        rep.others,
        human_bytes(rep.bytes_written),
        r.snapshot.0.short(),
        rep.skipped.len(),
        rep.errors.len()
    ))
}

/// The `strata restore` command that brings back the earlier version: in place for a
/// missing entry; beside the current one (`NAME.strata-restored`) for a modified one.
fn restore_command(ctx: &Context, lost: &Lost) -> Option<String> {
    let source = lost.source.as_ref()?;
    let mut words = strata_words(ctx);
    let conflict = match lost.reason {
        None => "skip",
        Some(_) => "rename",
    };
    words.extend([
        "restore".into(),
        source.snapshot.0.to_hex(),
        "--target".into(),
        "/".into(),
        "--include".into(),
        shell_quote(&scan::include_pattern(&lost.path)),
        "--on-conflict".into(),
        conflict.into(),
    ]);
    Some(words.join(" "))
}

/// `strata` and the repository option of a printed command.
fn strata_words(ctx: &Context) -> Vec<String> {
    let mut words = vec!["strata".to_string()];
    if let Some(repo) = &ctx.args.repo {
        words.push("-r".into());
        words.push(shell_quote(repo));
    }
    words
}

/// `text` as one shell word: as is when plain, else single-quoted, or `$'…'` with escapes
/// when it holds control characters.
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    if !text.chars().any(char::is_control) {
        return format!("'{}'", text.replace('\'', "'\\''"));
    }
    let mut out = String::from("$'");
    for c in text.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii() && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("/srv/app/a.txt"), "/srv/app/a.txt");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(shell_quote("/a\nb'\\"), "$'/a\\x0ab\\'\\\\'");
        assert_eq!(shell_quote("\u{85}"), "$'\\u0085'");
        assert_eq!(shell_quote(""), "''");
    }
}
