//! `strata scan --mongo URI`: compare a MongoDB server with a snapshot's dump; print what is
//! missing or changed and the `strata restore --mongo` command that brings each back.
use super::super::{Context, Outcome, escape, human_bytes};
use super::shell_quote;
use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use strata::observer::EntryError;
use strata::repo::id::SnapshotId;
use strata::repo::repository::IndexedRepo;
use strata::repo::snapshot::Snapshot;
use strata::sources::mongodb::Conn;
use strata::sources::mongodb::connection::server_of;
use strata::sources::mongodb::scan::{
    self, Finding, IdList, RestoreMode, ScanOptions, ScanReport, What,
};

/// `_id`s listed per collection in text output (JSON lists all of them).
const ID_LIMIT: usize = 20;

#[derive(clap::Args)]
pub struct MongoArgs {
    /// Compare the MongoDB server at this URI with a snapshot's dump (instead of files);
    /// without a URI, it is read from --mongo-uri-file or $STRATA_MONGO_URI
    #[arg(long, value_name = "URI", num_args = 0..=1,
          conflicts_with_all = ["paths", "restore_missing"])]
    mongo: Option<Option<String>>,
    /// Read the --mongo URI from this file (keeps its password out of the process list)
    #[arg(long, value_name = "PATH", requires = "mongo")]
    mongo_uri_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    namespaces: super::super::NsFilterArgs,
}

impl MongoArgs {
    /// The URI, when `--mongo` was given.
    pub fn uri(&self, ctx: &Context) -> Result<Option<String>> {
        let Some(given) = &self.mongo else {
            return Ok(None);
        };
        let file = self.mongo_uri_file.as_deref();
        Ok(Some(super::super::mongo_uri(ctx, given.as_deref(), file)?))
    }
}

/// What the restore commands need besides a finding.
struct Restore<'a> {
    ctx: &'a Context,
    snapshot: SnapshotId,
    time: String,
    /// The URI as given, without its password.
    uri: String,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    #[serde(flatten)]
    finding: &'a Finding,
    snapshot: SnapshotId,
    restore_command: String,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    server: &'a str,
    snapshot: SnapshotId,
    deep: bool,
    findings: Vec<JsonFinding<'a>>,
    unchanged: u64,
    errors: &'a [EntryError],
    /// Whether the restore commands' URI had a password taken out.
    password_left_out: bool,
}

pub fn run(
    ctx: &Context,
    args: &MongoArgs,
    uri: &str,
    snapshot: Option<&str>,
    deep: bool,
) -> Result<Outcome> {
    let (repo, _lock) = ctx.open_reading("scan")?;
    let (id, snap) = choose_snapshot(ctx, &repo, uri, snapshot)?;
    let conn = Conn::connect(uri)?;
    let opts = ScanOptions {
        filter: args.namespaces.filter(),
        deep,
        id_limit: (!ctx.args.json).then_some(ID_LIMIT),
        cancel: ctx.cancel.clone(),
    };
    let progress = ctx.progress("scan");
    let report = scan::scan(&repo, &conn, &snap, &opts, progress.as_ref())?;
    drop(progress);
    let (uri, password_left_out) = scan::uri_without_password(uri);
    let restore = Restore {
        ctx,
        snapshot: id,
        time: super::local_time(&snap.time),
        uri,
    };
    for e in &report.errors {
        eprintln!("strata: error: {}: {}", escape(&e.path), escape(&e.message));
    }
    match ctx.args.json {
        true => print_json(&restore, &report, deep, password_left_out)?,
        false => print_text(&restore, &report, password_left_out)?,
    }
    Ok(super::outcome(!report.errors.is_empty(), report.is_clean()))
}

/// `--snapshot`, else the newest MongoDB snapshot of the URI's server.
fn choose_snapshot(
    ctx: &Context,
    repo: &IndexedRepo,
    uri: &str,
    spec: Option<&str>,
) -> Result<(SnapshotId, Snapshot)> {
    let server = server_of(uri)?;
    let (id, snap) = match spec {
        Some(spec) => repo.find_snapshot(spec)?,
        None => {
            let history = super::history(ctx, repo)?;
            scan::default_snapshot(&history, &server)
                .cloned()
                .with_context(|| {
                    format!("there is no MongoDB snapshot of {server}; choose one with --snapshot")
                })?
        }
    };
    match scan::snapshot_server(&snap) {
        None => bail!("snapshot {} holds no MongoDB dump", id.0.short()),
        Some(s) if s != server => ctx.warn(&format!(
            "snapshot {} was taken from {s}, not {server}",
            id.0.short()
        )),
        Some(_) => {}
    }
    Ok((id, snap))
}

fn print_json(r: &Restore, report: &ScanReport, deep: bool, left_out: bool) -> Result<()> {
    let findings = report
        .findings
        .iter()
        .map(|finding| JsonFinding {
            finding,
            snapshot: r.snapshot,
            restore_command: r.command(finding),
        })
        .collect();
    r.ctx.print_json(&JsonReport {
        server: &report.server,
        snapshot: r.snapshot,
        deep,
        findings,
        unchanged: report.unchanged,
        errors: &report.errors,
        password_left_out: left_out,
    })
}

fn print_text(r: &Restore, report: &ScanReport, left_out: bool) -> Result<()> {
    let ctx = r.ctx;
    ctx.say(&format!(
        "compared MongoDB at {} with snapshot {} of {}",
        escape(&report.server),
        r.snapshot.0.short(),
        r.time
    ))?;
    for f in &report.findings {
        ctx.say(&describe(f))?;
        for line in details(f) {
            ctx.say(&format!("          {line}"))?;
        }
        ctx.say(&format!(
            "          in snapshot {} of {}; restore with:\n          {}",
            r.snapshot.0.short(),
            r.time,
            r.command(f)
        ))?;
    }
    if left_out && !report.findings.is_empty() {
        ctx.say("(the password is left out of the URI in these commands: add it back)")?;
    }
    ctx.say(&format!(
        "{} findings, {} namespaces unchanged, {} errors",
        report.findings.len(),
        report.unchanged,
        report.errors.len()
    ))
}

/// The first line of a finding.
fn describe(f: &Finding) -> String {
    let ns = escape(&f.ns);
    match &f.what {
        What::Database { namespaces } => {
            format!("missing database   {ns} ({} namespaces)", namespaces.len())
        }
        What::Collection { bytes } => format!(
            "missing collection {ns} ({} of documents)",
            human_bytes(*bytes)
        ),
        What::View => format!("missing view       {ns}"),
        What::Index { index } => format!("missing index      {ns}: {}", escape(index)),
        What::Documents {
            snapshot_count,
            live_count,
            missing: Some(missing),
            changed: Some(changed),
        } => format!(
            "documents          {ns}: {} missing, {} changed ({snapshot_count} in the snapshot, {live_count} now)",
            missing.total, changed.total
        ),
        What::Documents {
            snapshot_count,
            live_count,
            ..
        } => format!("count fell         {ns}: {snapshot_count} in the snapshot, {live_count} now"),
    }
}

/// Further lines: the `_id`s of a deep scan; what an index restore also does.
fn details(f: &Finding) -> Vec<String> {
    match &f.what {
        What::Documents {
            missing, changed, ..
        } => [("missing", missing), ("changed", changed)]
            .into_iter()
            .filter_map(|(word, list)| list.as_ref().filter(|l| l.total > 0).map(|l| (word, l)))
            .map(|(word, list)| format!("{word} _ids: {}", id_line(list)))
            .collect(),
        What::Index { .. } => {
            vec!["(the restore also brings back documents deleted since the snapshot)".into()]
        }
        _ => Vec::new(),
    }
}

fn id_line(list: &IdList) -> String {
    let shown: Vec<String> = list.ids.iter().map(|id| escape(id).into_owned()).collect();
    let more = list.total.saturating_sub(list.ids.len() as u64);
    match more {
        0 => shown.join(", "),
        n => format!("{}, … and {n} more", shown.join(", ")),
    }
}

impl Restore<'_> {
    /// `strata restore SNAPSHOT --mongo URI --ns-include PATTERN [--mode MODE]`.
    fn command(&self, f: &Finding) -> String {
        let mut words = super::strata_words(self.ctx);
        words.extend([
            "restore".into(),
            self.snapshot.0.to_hex(),
            "--mongo".into(),
            shell_quote(&self.uri),
            "--ns-include".into(),
            shell_quote(&f.include),
        ]);
        match f.mode {
            RestoreMode::Insert => {}
            RestoreMode::SkipExisting => words.extend(["--mode".into(), "skip-existing".into()]),
            RestoreMode::Upsert => words.extend(["--mode".into(), "upsert".into()]),
        }
        words.join(" ")
    }
}
