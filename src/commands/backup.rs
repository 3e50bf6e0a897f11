//! `strata backup`: save paths as a new snapshot and print its id and summary.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;
use std::path::PathBuf;
use strata::ops::archiver::{self, BackupOptions, ParentChoice, TreeSource};
use strata::repo::id::SnapshotId;
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;
use strata::repo::snapshot::Snapshot;
use strata::select::filter::Patterns;
use strata::sources::mongodb::Conn;
use strata::sources::mongodb::chain::ChainPolicy;
use strata::sources::mongodb::export::{ExportOptions, ExportReport, MongoExport};

#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up
    #[arg(required_unless_present = "mongo")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    mongo: MongoArgs,
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

#[derive(clap::Args)]
struct MongoArgs {
    /// Also back up the MongoDB server at this URI (into /mongodb of the snapshot); without
    /// a URI, it is read from --mongo-uri-file or $STRATA_MONGO_URI
    #[arg(long, value_name = "URI", num_args = 0..=1)]
    mongo: Option<Option<String>>,
    /// Read the --mongo URI from this file (keeps its password out of the process list)
    #[arg(long, value_name = "PATH", requires = "mongo")]
    mongo_uri_file: Option<PathBuf>,
    #[command(flatten)]
    namespaces: super::NsFilterArgs,
    /// Also back up users and roles
    #[arg(long = "mongo-users", requires = "mongo")]
    users: bool,
    /// Do not capture the oplog window (allows servers without an oplog)
    #[arg(long, requires = "mongo")]
    no_consistency: bool,
    /// Collections read at once
    #[arg(
        long = "mongo-parallel",
        value_name = "N",
        default_value_t = 4,
        requires = "mongo"
    )]
    parallel: usize,
    /// Take a full MongoDB dump, not an incremental one
    #[arg(long, requires = "mongo")]
    full: bool,
    /// Every Nth MongoDB dump of a chain is full (at most N-1 incremental dumps follow a
    /// full one; 0: no bound)
    #[arg(long, value_name = "N", default_value_t = ChainPolicy::default().full_every, requires = "mongo")]
    full_every: u32,
    /// A full MongoDB dump once the chain's oplog has grown past this percentage of its
    /// base's collections
    #[arg(long, value_name = "PERCENT", default_value_t = ChainPolicy::default().max_oplog_percent, requires = "mongo")]
    max_oplog_percent: u32,
}

impl MongoArgs {
    fn export(
        &self,
        ctx: &Context,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> Result<Option<MongoExport>> {
        let Some(given) = &self.mongo else {
            return Ok(None);
        };
        let uri = super::mongo_uri(ctx, given.as_deref(), self.mongo_uri_file.as_deref())?;
        let opts = ExportOptions {
            filter: self.namespaces.filter(),
            users: self.users,
            consistency: !self.no_consistency,
            parallel: self.parallel,
        };
        let export = MongoExport::new(Conn::connect(&uri)?, opts)?;
        let policy = ChainPolicy {
            full: self.full,
            full_every: self.full_every,
            max_oplog_percent: self.max_oplog_percent,
        };
        Ok(Some(export.continuing(snapshots, policy)))
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let (repo, guard) = ctx.open_locked(LockMode::Shared, "backup")?;
    let repo = Locked::new(&repo, guard)?;
    let export = match args.mongo.mongo {
        Some(_) => args.mongo.export(ctx, &repo.snapshots()?.0)?,
        None => None,
    };
    let mut patterns = args.excludes.clone();
    for f in &args.exclude_files {
        patterns.extend(Patterns::read_file(f)?);
    }
    let parent = match &args.parent {
        Some(spec) => ParentChoice::Snapshot(repo.find_snapshot(spec)?.0),
        None => ParentChoice::Auto,
    };
    let opts = BackupOptions {
        cancel: ctx.cancel.clone(),
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
    let sources: Vec<&dyn TreeSource> = export.iter().map(|e| e as &dyn TreeSource).collect();
    let result = archiver::backup_with(&repo, &opts, &sources, progress.as_ref())?;
    drop(progress);
    let mongo = export.map(|e| e.report());
    for e in &result.errors {
        ctx.warn(&format!("{}: {}", escape(&e.path), escape(&e.message)));
    }
    report(ctx, &result, mongo.as_ref())?;
    Ok(match result.errors.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    })
}

fn report(ctx: &Context, r: &archiver::BackupResult, mongo: Option<&ExportReport>) -> Result<()> {
    let s = &r.snapshot.summary;
    if ctx.args.json {
        let errors: Vec<_> = r
            .errors
            .iter()
            .map(|e| serde_json::json!({"path": e.path, "error": e.message}))
            .collect();
        return ctx.print_json(&serde_json::json!({
            "snapshot_id": r.id.map(|id| id.0.to_hex()),
            "dry_run": r.id.is_none(),
            "parent": r.snapshot.parent.map(|id| id.0.to_hex()),
            "summary": s,
            "errors": errors,
            "mongodb": mongo,
        }));
    }
    if let Some(m) = mongo {
        report_mongo(ctx, m)?;
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

fn report_mongo(ctx: &Context, m: &ExportReport) -> Result<()> {
    let docs: u64 = m.collections.iter().map(|c| c.documents).sum();
    let bytes: u64 = m.collections.iter().map(|c| c.bytes).sum();
    let time = match (m.window_start, m.cluster_time) {
        (Some(start), Some(end)) => format!(
            "consistent as of cluster time {end} ({} oplog entries after {start})",
            m.oplog_entries
        ),
        _ => "without a consistency window".to_string(),
    };
    if let Some(inc) = &m.incremental {
        return ctx.say(&format!(
            "MongoDB {}: incremental dump {} of the chain on snapshot {} (read {} oplog entries, \
             {}, after snapshot {}); {time}",
            escape(&m.server),
            inc.depth,
            inc.base.0.short(),
            m.oplog_entries,
            human_bytes(m.oplog_bytes),
            inc.parent.0.short(),
        ));
    }
    ctx.say(&format!(
        "MongoDB {}: {} collections, {} views, {docs} documents ({}); {time}",
        escape(&m.server),
        m.collections.len(),
        m.views,
        human_bytes(bytes)
    ))?;
    match &m.full_reason {
        Some(reason) => ctx.say(&format!("full dump: {reason}")),
        None => Ok(()),
    }
}
