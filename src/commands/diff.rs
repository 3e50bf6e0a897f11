//! `strata diff`: what changed between two snapshots, path by path, with a summary.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;
use strata::ops::diff::{self, Change, ChangeKind, DiffSummary};
use strata::repo::paths;
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
    let (id1, s1) = repo.find_snapshot(&args.before)?;
    let (id2, s2) = repo.find_snapshot(&args.after)?;
    let budget = walk::entry_budget(&s1).saturating_add(walk::entry_budget(&s2));
    let report = diff::diff(&repo, s1.tree, s2.tree, Budget::new(budget), &ctx.cancel)?;
    let mongo = changes::between(&repo, (id1, &s1), (id2, &s2), &ctx.cancel)?;
    if ctx.args.json {
        ctx.print_json(&serde_json::json!({
            "before": id1, "after": id2,
            "changes": report.changes, "summary": report.summary,
            "mongodb": mongo,
        }))?;
        return Ok(Outcome::Ok);
    }
    ctx.say(&format!(
        "comparing snapshot {} to {}:",
        id1.0.short(),
        id2.0.short()
    ))?;
    for change in &report.changes {
        ctx.say(&line(change))?;
    }
    ctx.say(&summary(&report.summary))?;
    if let Some(m) = &mongo {
        ctx.say(&mongo_summary(m))?;
    }
    Ok(Outcome::Ok)
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
