//! `strata diff`: what changed between two snapshots, path by path, with a summary.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;
use strata::ops::diff::{self, Change, ChangeKind, DiffReport, DiffSummary};
use strata::repo::id::SnapshotId;
use strata::repo::paths;
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
    if ctx.args.json {
        ctx.print_json(&json(id1, id2, &report))?;
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
    Ok(Outcome::Ok)
}

/// The report as `--json` prints it (and the service answers it).
pub fn json(before: SnapshotId, after: SnapshotId, report: &DiffReport) -> serde_json::Value {
    serde_json::json!({
        "before": before, "after": after,
        "changes": report.changes, "summary": report.summary,
    })
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
