//! `strata mount`: serve the repository's snapshots as a read-only FUSE filesystem in the
//! foreground, refreshing the snapshot list, until Ctrl-C or SIGTERM unmounts it.
use super::{Context, Outcome, SnapshotFilterArgs};
use anyhow::{Context as _, Result};
use crossbeam_channel::RecvTimeoutError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::mount::{self, Mount, MountOptions, Unmounted};
use strata::repo::id::SnapshotId;
use strata::repo::repository::{IndexedRepo, RepoError};
use strata::select::selection::Selection;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to mount on
    mountpoint: PathBuf,
    /// Show only this snapshot: an id prefix or `latest` (repeatable)
    #[arg(long = "snapshot", value_name = "SNAP")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: SnapshotFilterArgs,
    /// Look for new snapshots every SECONDS
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    refresh: u64,
    /// Memory for decoded file data, in MiB
    #[arg(long, value_name = "MIB", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    cache_mib: u64,
    /// Let other users read the mount too (each file as its recorded owner and mode allow);
    /// for ordinary users this needs `user_allow_other` in /etc/fuse.conf
    #[arg(long)]
    allow_other: bool,
}

/// How often serving looks whether a signal arrived.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Why serving stopped.
enum Stop {
    Signal,
    /// Unmounted from outside; the request loop's result.
    Ended(std::io::Result<()>),
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    mount::preflight(&args.mountpoint)?;
    // The shared lock is held (and refreshed) until `_lock` is dropped after unmounting.
    let (repo, _lock) = ctx.open_reading("mount")?;
    let selection = selection(&repo, &args)?;
    let options = MountOptions {
        cache_bytes: args.cache_mib << 20,
        threads: 2 * std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2),
        allow_other: args.allow_other,
    };
    let (mounted, found) = mount::mount(Arc::new(repo), selection, &args.mountpoint, &options)?;
    warn_damaged(ctx, found.damaged);
    announce(ctx, &args, &mounted)?;
    match serve(ctx, &mounted, Duration::from_secs(args.refresh)) {
        Stop::Signal => finish(ctx, &args, mounted.unmount()?),
        Stop::Ended(result) => {
            result.context("the FUSE connection failed")?;
            ctx.say(&format!("{} was unmounted", args.mountpoint.display()))?;
            Ok(Outcome::Ok)
        }
    }
}

/// `latest` stays dynamic (the newest selected snapshot at each refresh); other values are
/// resolved to one snapshot now, so a typo fails at once.
fn selection(repo: &IndexedRepo, args: &Args) -> Result<Selection> {
    let mut ids = Vec::new();
    for spec in args.snapshots.iter().filter(|s| *s != "latest") {
        ids.push(repo.find_snapshot(spec)?.0);
    }
    let latest = args.snapshots.iter().any(|s| s == "latest");
    Ok(args.filter.selection(ids, latest))
}

fn announce(ctx: &Context, args: &Args, mounted: &Mount) -> Result<()> {
    let shown = args.mountpoint.display();
    if ctx.args.json {
        return ctx.print_json(&serde_json::json!({
            "mountpoint": args.mountpoint,
            "snapshots": mounted.snapshot_count(),
            "refresh_seconds": args.refresh,
        }));
    }
    ctx.say(&format!(
        "serving {} snapshots at {shown} (new ones appear within {} s); press Ctrl-C to unmount",
        mounted.snapshot_count(),
        args.refresh
    ))
}

/// Refreshes every `every` until a signal cancels the context (looked at every
/// [`SIGNAL_POLL`]) or the filesystem goes away.
fn serve(ctx: &Context, mounted: &Mount, every: Duration) -> Stop {
    let mut next = Instant::now() + every;
    loop {
        if ctx.cancel.is_cancelled() {
            return Stop::Signal;
        }
        match mounted.ended().recv_timeout(SIGNAL_POLL) {
            Ok(r) => return Stop::Ended(r),
            Err(RecvTimeoutError::Disconnected) => return Stop::Ended(Ok(())),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next {
            refresh(ctx, mounted);
            next = Instant::now() + every;
        }
    }
}

fn refresh(ctx: &Context, mounted: &Mount) {
    match mounted.refresh() {
        Ok(found) => warn_damaged(ctx, found.damaged),
        Err(e) => ctx.warn(&format!("refreshing the snapshot list failed: {e}")),
    }
}

fn warn_damaged(ctx: &Context, damaged: Vec<(SnapshotId, RepoError)>) {
    for (id, e) in damaged {
        ctx.warn(&format!("snapshot {} is not shown: {e}", id.0.short()));
    }
}

fn finish(ctx: &Context, args: &Args, how: Unmounted) -> Result<Outcome> {
    let shown = args.mountpoint.display();
    match how {
        Unmounted::Clean => ctx.say(&format!("unmounted {shown}"))?,
        Unmounted::Detached => ctx.warn(&format!(
            "{shown} was busy and was detached: programs still using it get errors"
        )),
    }
    Ok(Outcome::Ok)
}
