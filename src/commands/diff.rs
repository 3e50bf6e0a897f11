//! `strata diff`: what changed between two snapshots, path by path, with a summary.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;
use strata::cancel::Cancel;
use strata::ops::diff::{self, Change, ChangeKind, DiffReport, DiffSummary};
use strata::repo::id::SnapshotId;
use strata::repo::paths;
use strata::repo::repository::IndexedRepo;
use strata::repo::snapshot::Snapshot;
use strata::sources::mongodb::changes::{self, MongoChanges};
use strata::walk::{self, Budget};

#[derive(clap::Args)]
pub struct Args {
    /// The earlier snapshot (id prefix or `latest`)
    before: String,
    /// The later snapshot (id prefix or `latest`)
    after: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let before = repo.find_snapshot(&args.before)?;
    let after = repo.find_snapshot(&args.after)?;
    let c = compare(&repo, before, after, &ctx.cancel)?;
    if ctx.args.json {
        ctx.print_json(&c.json())?;
        return Ok(Outcome::Ok);
    }
    ctx.say(&format!(
        "comparing snapshot {} to {}:",
        c.before.0.short(),
        c.after.0.short()
    ))?;
    for change in &c.report.changes {
        ctx.say(&line(change))?;
    }
    ctx.say(&summary(&c.report.summary))?;
    if let Some(m) = &c.mongo {
        ctx.say(&mongo_summary(m))?;
    }
    Ok(Outcome::Ok)
}

/// Two snapshots compared: their trees, and for two dumps of one MongoDB chain, the writes
/// between them.
pub struct Compared {
    pub before: SnapshotId,
    pub after: SnapshotId,
    pub report: DiffReport,
    pub mongo: Option<MongoChanges>,
}

impl Compared {
    /// The comparison as `--json` prints it (and the service answers it).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "before": self.before, "after": self.after,
            "changes": self.report.changes, "summary": self.report.summary,
            "mongodb": self.mongo,
        })
    }
}

/// Compares `before` with `after`, walking at most the entries both snapshots allow.
pub fn compare(
    repo: &IndexedRepo,
    (id1, s1): (SnapshotId, Snapshot),
    (id2, s2): (SnapshotId, Snapshot),
    cancel: &Cancel,
) -> Result<Compared> {
    let budget = walk::entry_budget(&s1).saturating_add(walk::entry_budget(&s2));
    let report = diff::diff(repo, s1.tree, s2.tree, Budget::new(budget), cancel)?;
    let mongo = changes::between(repo, (id1, &s1), (id2, &s2), cancel)?;
    Ok(Compared {
        before: id1,
        after: id2,
        report,
        mongo,
    })
}

/// Per collection, the writes between two dumps of one MongoDB chain.
fn mongo_summary(m: &MongoChanges) -> String {
    let mut out = format!("\nMongoDB, cluster time {} to {}:", m.from, m.to);
    for n in &m.namespaces {
        out.push_str(&format!(
            "\n  {}: {} inserted, {} updated, {} deleted",
            escape(&n.ns),
            n.inserted,
            n.updated,
            n.deleted
        ));
    }
    out.push_str(&format!("\n  commands: {}", m.commands));
    out
}

/// `+ /path (size)`, `M /path (before -> after)`, `U /dir/ (mode, mtime)`.
fn line(c: &Change) -> String {
    let mut path = escape(&paths::display(&c.path)).into_owned();
    if c.kind == "dir" {
        path.push('/');
    }
    let detail = match (c.change, c.size_before, c.size_after) {
        (ChangeKind::Metadata, ..) => c.fields.join(", "),
        (ChangeKind::Modified, Some(a), Some(b)) => {
            format!("{} -> {}", human_bytes(a), human_bytes(b))
        }
        (_, Some(size), None) | (_, None, Some(size)) => human_bytes(size),
        _ => String::new(),
    };
    match detail.is_empty() {
        true => format!("{} {path}", c.change.marker()),
        false => format!("{} {path} ({detail})", c.change.marker()),
    }
}

fn summary(s: &DiffSummary) -> String {
    format!(
        "\nadded:    {} files, {} dirs, {} others\n\
         removed:  {} files, {} dirs, {} others\n\
         modified: {} files; metadata only: {}\n\
         data:     {} added, {} removed",
        s.files_added,
        s.dirs_added,
        s.others_added,
        s.files_removed,
        s.dirs_removed,
        s.others_removed,
        s.modified,
        s.metadata,
        human_bytes(s.bytes_added),
        human_bytes(s.bytes_removed)
    )
}
