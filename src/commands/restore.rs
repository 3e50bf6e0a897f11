//! `strata restore`: write a snapshot, or a subpath of it, into a target directory.
use super::{Context, Outcome, escape};
use anyhow::Result;
use serde::Serialize;
use std::cell::RefCell;
use std::path::PathBuf;
use strata::cancel::Cancel;
use strata::ops::restorer::{self, RestoreError, RestoreOptions, RestoreReport};
use strata::ops::sandbox::OnConflict;
use strata::repo::snapshot::BsonTime;
use strata::select::filter::Patterns;
use strata::sources::mongodb::import::{self, ImportOptions, ImportReport, Mode};
use strata::sources::mongodb::{Conn, NsFilter, Renames};

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
    #[arg(required_unless_present = "at")]
    snapshot: Option<String>,
    /// Directory to restore into (created if missing)
    #[arg(short, long, required_unless_present = "mongo")]
    target: Option<PathBuf>,
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
    #[command(flatten)]
    mongo: MongoArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InsertMode {
    Insert,
    Upsert,
    SkipExisting,
}

#[derive(clap::Args)]
struct MongoArgs {
    /// Restore the snapshot's MongoDB dump into the server at this URI; without a URI, it is
    /// read from --mongo-uri-file or $STRATA_MONGO_URI
    #[arg(long, value_name = "URI", num_args = 0..=1)]
    mongo: Option<Option<String>>,
    /// Read the --mongo URI from this file (keeps its password out of the process list)
    #[arg(long, value_name = "PATH", requires = "mongo")]
    mongo_uri_file: Option<PathBuf>,
    /// Only namespaces matching db.coll (`*` wildcards; repeatable)
    #[arg(long = "ns-include", value_name = "PATTERN", requires = "mongo")]
    include: Vec<String>,
    /// Leave out namespaces matching db.coll (repeatable)
    #[arg(long = "ns-exclude", value_name = "PATTERN", requires = "mongo")]
    exclude: Vec<String>,
    /// Rename namespaces matching this pattern (with --ns-to; repeatable)
    #[arg(long = "ns-from", value_name = "PATTERN", requires = "mongo")]
    from: Vec<String>,
    /// The new name for the matching --ns-from (`*` takes what the `*` there matched)
    #[arg(long = "ns-to", value_name = "PATTERN", requires = "mongo")]
    to: Vec<String>,
    /// Drop each collection before restoring it
    #[arg(long, requires = "mongo")]
    drop: bool,
    /// What to do with documents whose _id already exists
    #[arg(long, value_enum, default_value = "insert", requires = "mongo")]
    mode: InsertMode,
    /// Do not build the indexes
    #[arg(long, requires = "mongo")]
    no_indexes: bool,
    /// Insert batches in flight at once
    #[arg(long, value_name = "N", default_value_t = 4, requires = "mongo")]
    parallel: usize,
    /// Documents per insert batch
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "mongo")]
    batch_size: usize,
    /// Also restore users and roles (`--mongo-users` backups)
    #[arg(long = "mongo-users", requires = "mongo")]
    users: bool,
    /// Restore MongoDB as of this time: RFC 3339 (every entry of that second) or a BSON
    /// timestamp SECONDS:INCREMENT (up to and including that entry)
    #[arg(long, value_name = "TIMESTAMP", requires = "mongo", conflicts_with_all = ["snapshot", "target"], value_parser = parse_at)]
    at: Option<BsonTime>,
}

/// `SECONDS:INCREMENT`, or a time (RFC 3339 or local) standing for the last entry of its
/// second.
pub(crate) fn parse_at(text: &str) -> Result<BsonTime, String> {
    if let Some((t, i)) = text.split_once(':')
        && let (Ok(t), Ok(i)) = (t.parse(), i.parse())
    {
        return Ok(BsonTime { t, i });
    }
    let time = super::parse_time(text)?;
    let t = u32::try_from(time.timestamp()).map_err(|_| format!("{text:?} is out of range"))?;
    Ok(BsonTime { t, i: u32::MAX })
}

impl MongoArgs {
    fn options(&self, dry_run: bool, cancel: &Cancel) -> Result<ImportOptions> {
        Ok(ImportOptions {
            filter: NsFilter {
                databases: vec![],
                include: self.include.clone(),
                exclude: self.exclude.clone(),
            },
            renames: Renames::new(&self.from, &self.to)?,
            drop: self.drop,
            mode: match self.mode {
                InsertMode::Insert => Mode::Insert,
                InsertMode::Upsert => Mode::Upsert,
                InsertMode::SkipExisting => Mode::SkipExisting,
            },
            indexes: !self.no_indexes,
            users: self.users,
            parallel: self.parallel,
            batch_size: self.batch_size,
            dry_run,
            until: self.at,
            after: None,
            cancel: cancel.clone(),
        })
    }
}

/// Where `--json` reports go: printed at once, or gathered into one document
/// (`{"files": …, "mongodb": …}`) when one command restores both.
struct JsonOut<'c> {
    ctx: &'c Context,
    gather: bool,
    parts: RefCell<serde_json::Map<String, serde_json::Value>>,
}

impl JsonOut<'_> {
    fn emit<T: Serialize>(&self, part: &str, report: &T) -> Result<()> {
        if !self.gather {
            return self.ctx.print_json(report);
        }
        let value = serde_json::to_value(report)?;
        self.parts.borrow_mut().insert(part.to_string(), value);
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let parts = self.parts.into_inner();
        match self.gather && !parts.is_empty() {
            true => self.ctx.print_json(&parts),
            false => Ok(()),
        }
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let uri = match &args.mongo.mongo {
        Some(given) => Some(super::mongo_uri(
            ctx,
            given.as_deref(),
            args.mongo.mongo_uri_file.as_deref(),
        )?),
        None => None,
    };
    let (repo, _lock) = ctx.open_reading("restore")?;
    let out = JsonOut {
        ctx,
        gather: args.target.is_some() && uri.is_some(),
        parts: RefCell::default(),
    };
    if let (Some(at), Some(uri)) = (args.mongo.at, &uri) {
        return restore_at(&out, &repo, uri, at, &args);
    }
    let spec = args.snapshot.as_deref().unwrap_or("latest");
    let (spec, subpath) = spec.split_once(':').unwrap_or((spec, ""));
    let (_, snap) = repo.find_snapshot(spec)?;
    let mut outcome = Outcome::Ok;
    if let Some(target) = &args.target {
        outcome = restore_files(&out, &repo, &snap, subpath, target, &args)?;
    }
    if let (Some(uri), Outcome::Ok | Outcome::Partial) = (&uri, outcome) {
        let mongo = restore_mongo(&out, &repo, &snap, uri, &args)?;
        outcome = worst(outcome, mongo);
    }
    out.finish()?;
    Ok(outcome)
}

fn worst(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
        (Outcome::Partial, _) | (_, Outcome::Partial) => Outcome::Partial,
        _ => Outcome::Ok,
    }
}

/// Point in time: the newest dump at or before `at`, its window, and the archived slices.
fn restore_at(
    out: &JsonOut,
    repo: &strata::repo::repository::IndexedRepo,
    uri: &str,
    at: BsonTime,
    args: &Args,
) -> Result<Outcome> {
    let plan = import::plan_at(repo, at)?;
    let opts = args.mongo.options(args.dry_run, &out.ctx.cancel)?;
    let conn = Conn::connect(uri)?;
    out.ctx.say(&format!(
        "restoring snapshot {} ({}) and {} oplog slices up to {at}",
        plan.snapshot.0.short(),
        plan.time,
        plan.slices()
    ))?;
    let progress = out.ctx.progress("restore");
    let report = import::restore_at(repo, &conn, &plan, &opts, progress.as_ref())?;
    drop(progress);
    print_mongo(out, &report)
}

fn restore_mongo(
    out: &JsonOut,
    repo: &strata::repo::repository::IndexedRepo,
    snap: &strata::repo::snapshot::Snapshot,
    uri: &str,
    args: &Args,
) -> Result<Outcome> {
    let opts = args.mongo.options(args.dry_run, &out.ctx.cancel)?;
    let dump = import::read_dump(repo, snap.tree, &opts.filter, &opts.renames)?;
    let conn = Conn::connect(uri)?;
    let progress = out.ctx.progress("restore");
    let report = import::import(repo, &conn, &dump, &[], &opts, progress.as_ref())?;
    drop(progress);
    print_mongo(out, &report)
}

/// Prints the counts; Partial when documents, indexes, views or users failed.
fn print_mongo(out: &JsonOut, r: &ImportReport) -> Result<Outcome> {
    print_counts(out, r)?;
    let failed = r.total.failed > 0 || !r.errors.is_empty();
    Ok(if failed {
        Outcome::Partial
    } else {
        Outcome::Ok
    })
}

fn print_counts(out: &JsonOut, r: &ImportReport) -> Result<()> {
    let ctx = out.ctx;
    for e in &r.errors {
        ctx.warn(&escape(e));
    }
    for n in &r.namespaces {
        for e in &n.errors {
            ctx.warn(&format!("{}: {}", escape(&n.ns), escape(e)));
        }
    }
    if ctx.args.json {
        return out.emit("mongodb", r);
    }
    if r.dry_run {
        for n in &r.namespaces {
            ctx.say(&format!("would restore {}", escape(&n.ns)))?;
        }
        return ctx.say("dry run: nothing was written to MongoDB");
    }
    for n in r.namespaces.iter().chain([&r.total]) {
        ctx.say(&format!(
            "{}: {} inserted, {} replaced, {} skipped, {} failed",
            escape(&n.ns),
            n.inserted,
            n.replaced,
            n.skipped,
            n.failed
        ))?;
    }
    ctx.say(&format!(
        "{} indexes built, {} views created, {} oplog entries replayed{}",
        r.indexes_built,
        r.views.len(),
        r.oplog_applied,
        r.replayed_until
            .map(|t| format!(" (up to {t})"))
            .unwrap_or_default()
    ))
}

fn restore_files(
    out: &JsonOut,
    repo: &strata::repo::repository::IndexedRepo,
    snap: &strata::repo::snapshot::Snapshot,
    subpath: &str,
    target: &std::path::Path,
    args: &Args,
) -> Result<Outcome> {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
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
        cancel: out.ctx.cancel.clone(),
    };
    let progress = out.ctx.progress("restore");
    let budget = strata::walk::entry_budget(snap);
    let result = restorer::restore(repo, snap.tree, &opts, budget, progress.as_ref());
    drop(progress);
    let report = match result {
        Err(RestoreError::Conflicts(paths)) => return conflicts(out, &paths),
        other => other?,
    };
    print_report(out, &report)?;
    let failed = !report.errors.is_empty() || !report.verify_failures.is_empty();
    Ok(if failed {
        Outcome::Partial
    } else {
        Outcome::Ok
    })
}

fn conflicts(out: &JsonOut, paths: &[String]) -> Result<Outcome> {
    if out.ctx.args.json {
        out.emit("files", &serde_json::json!({"conflicts": paths}))?;
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

fn print_report(out: &JsonOut, r: &RestoreReport) -> Result<()> {
    let ctx = out.ctx;
    for e in &r.errors {
        eprintln!("strata: error: {}: {}", escape(&e.path), escape(&e.message));
    }
    for e in &r.verify_failures {
        eprintln!(
            "strata: verify failed: {}: {}",
            escape(&e.path),
            escape(&e.message)
        );
    }
    if ctx.args.json {
        return out.emit("files", r);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_bson_timestamps_and_whole_seconds() {
        assert_eq!(
            parse_at("1700000000:7"),
            Ok(BsonTime {
                t: 1_700_000_000,
                i: 7
            })
        );
        let whole = parse_at("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(
            whole,
            BsonTime {
                t: 1_700_000_000,
                i: u32::MAX
            }
        );
        assert!(parse_at("soon").is_err());
    }
}
