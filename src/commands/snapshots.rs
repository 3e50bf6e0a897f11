//! `strata snapshots`: list snapshots, optionally filtered by host, tag and path.
use super::{Context, Outcome, SnapshotFilterArgs, escape};
use anyhow::Result;
use strata::repo::id::SnapshotId;
use strata::repo::snapshot::Snapshot;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    filter: SnapshotFilterArgs,
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    id: String,
    short_id: String,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
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
        let listed: Vec<Listed> = selected
            .iter()
            .map(|(id, s)| Listed {
                id: id.0.to_hex(),
                short_id: id.0.short(),
                snapshot: s,
            })
            .collect();
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
            "{:<8}  {time}  {:<12}  {:<16}  {}",
            id.0.short(),
            escape(&s.host),
            escape(&s.tags.join(",")),
            escape(&s.paths.join(" "))
        );
        ctx.say(&line)?;
    }
    ctx.say(&format!("{} snapshots", selected.len()))?;
    Ok(Outcome::Ok)
}
