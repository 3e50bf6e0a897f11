//! `strata stats`: logical and stored sizes, deduplication and compression ratios; a
//! snapshot that cannot be walked is reported, left out, and makes the exit code 3.
use super::{Context, Outcome, escape, human_bytes};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Only this snapshot (id prefix or `latest`); default: all
    snapshot: Option<String>,
    /// Also measure what the dictionaries save: read every dictionary-compressed blob and
    /// compress it again with plain zstd
    #[arg(long)]
    recompress: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let selected = match &args.snapshot {
        Some(spec) => vec![repo.find_snapshot(spec)?],
        None => repo.snapshots()?.0,
    };
    let progress = ctx.progress("stats");
    let s = strata::ops::stats::stats(
        &repo,
        &selected,
        &strata::ops::stats::Options {
            recompress: args.recompress,
            cancel: ctx.cancel.clone(),
        },
        progress.as_ref(),
    )?;
    drop(progress);
    for skipped in &s.skipped {
        let id = skipped.snapshot.0.short();
        ctx.warn(&escape(&format!(
            "snapshot {id} is skipped: {}",
            skipped.reason
        )));
    }
    let outcome = match s.skipped.is_empty() {
        true => Outcome::Ok,
        false => Outcome::Partial,
    };
    if ctx.args.json {
        ctx.print_json(&s)?;
        return Ok(outcome);
    }
    ctx.say(&format!(
        "snapshots:          {}\nfiles:              {}\nlogical size:       {}\n\
         unique blobs:       {} ({} data, {} tree) in {} packs\n\
         unique size:        {} before compression\nstored size:        {}\n\
         repository size:    {}\ndeduplication:      {:.2}x\ncompression:        {:.2}x",
        s.snapshots,
        s.files,
        human_bytes(s.logical_size),
        s.unique_blobs,
        s.data_blobs,
        s.tree_blobs,
        s.packs,
        human_bytes(s.unique_raw_size),
        human_bytes(s.stored_size),
        human_bytes(s.repository_size),
        s.dedup_ratio,
        s.compression_ratio
    ))?;
    if s.dictionary_blobs > 0 {
        ctx.say(&format!(
            "dictionaries:       {} ({}), used by {} blobs: {} stored as {}\n\
             without them:       {}",
            s.dictionaries,
            human_bytes(s.dictionaries_size),
            s.dictionary_blobs,
            human_bytes(s.dictionary_raw_size),
            human_bytes(s.dictionary_stored_size),
            without_dictionaries(&s)
        ))?;
    }
    Ok(outcome)
}

/// The line on plain zstd: measured, or how to measure it.
fn without_dictionaries(s: &strata::ops::stats::Stats) -> String {
    match (
        s.stored_size_without_dictionaries,
        s.compression_ratio_without_dictionaries,
    ) {
        (Some(size), Some(ratio)) => format!(
            "{} stored, compression {ratio:.2}x (measured by recompressing)",
            human_bytes(size)
        ),
        _ => "not measured (`stats --recompress` measures it)".to_string(),
    }
}
