//! `strata snapshots`: list snapshots, optionally filtered by host, tag and path.
use super::{Context, Outcome, SnapshotFilterArgs, escape};
use anyhow::Result;
use strata::repo::id::SnapshotId;
use strata::repo::snapshot::{Chain, Snapshot, Source};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: SnapshotFilterArgs,
}

/// A snapshot as `--json` and the service's API list it.
#[derive(serde::Serialize)]
pub struct Listed<'a> {
    pub id: String,
    pub short_id: String,
    #[serde(flatten)]
    pub snapshot: &'a Snapshot,
}

impl<'a> Listed<'a> {
    pub fn new((id, snapshot): &'a (SnapshotId, Snapshot)) -> Listed<'a> {
        Listed {
            id: id.0.to_hex(),
            short_id: id.0.short(),
            snapshot,
        }
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open()?;
    let (all, damaged) = repo.snapshots()?;
    for (id, e) in &damaged {
        ctx.warn(&format!("snapshot {}: {e}", id.0.short()));
    }
    let selected: Vec<&(SnapshotId, Snapshot)> =
        args.filter.selection(Vec::new(), false).apply(&all);
    if ctx.args.json {
        let listed: Vec<Listed> = selected.iter().map(|e| Listed::new(e)).collect();
        ctx.print_json(&listed)?;
        return Ok(Outcome::Ok);
    }
    ctx.say(&format!(
        "{:<8}  {:<19}  {:<12}  {:<16}  paths",
        "id", "time", "host", "tags"
    ))?;
    for (id, s) in &selected {
        let time = s
            .time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        let line = format!(
            "{:<8}  {time}  {:<12}  {:<16}  {}{}",
            id.0.short(),
            escape(&s.host),
            escape(&s.tags.join(",")),
            escape(&s.paths.join(" ")),
            chain_note(s)
        );
        ctx.say(&line)?;
    }
    ctx.say(&format!("{} snapshots", selected.len()))?;
    Ok(Outcome::Ok)
}

/// How the list shows a MongoDB dump that continues another: its depth and base.
fn chain_note(s: &Snapshot) -> String {
    match s.mongodb() {
        Some(Source::MongoDB {
            chain:
                Some(Chain {
                    incremental: Some(inc),
                    ..
                }),
            ..
        }) => format!(
            "  (mongodb: incremental {} on {})",
            inc.depth,
            inc.base.0.short()
        ),
        _ => String::new(),
    }
}
