//! The `strata` command line: parses arguments, dispatches to one module per command, and
//! maps outcomes to the documented exit codes.
mod commands;

use clap::{Parser, Subcommand};
use commands::{Context, GlobalArgs};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "strata", version, about = "Encrypted, deduplicated backups of files", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init(commands::init::Args),
    /// Back up files and directories into a new snapshot
    Backup(commands::backup::Args),
    /// List snapshots
    Snapshots(commands::snapshots::Args),
    /// List the contents of a snapshot
    Ls(commands::ls::Args),
    /// Print a file from a snapshot, or a repository object as JSON
    Cat(commands::cat::Args),
    /// Restore a snapshot (or part of it) into a directory
    Restore(commands::restore::Args),
    /// Verify the repository's structure and, optionally, its data
    Check(commands::check::Args),
    /// Manage the passwords (key files) of the repository
    Key(commands::key::Args),
    /// Show sizes, deduplication and compression
    Stats(commands::stats::Args),
    /// Remove snapshots by id or by a retention policy (then `--prune` to free space)
    Forget(commands::forget::Args),
    /// Delete data no snapshot uses
    Prune(commands::prune::PruneArgs),
    /// Copy snapshots from another repository (--from-repo) into this one
    Copy(commands::copy::Args),
    /// Rebuild the index, or salvage damaged snapshots
    Repair(commands::repair::Args),
    /// Remove stale repository locks
    Unlock(commands::unlock::Args),
    /// Show what changed between two snapshots
    Diff(commands::diff::Args),
    /// Find paths matching patterns in snapshots, with each version
    Find(commands::find::Args),
    /// Compare files on disk with a snapshot: missing, modified and new files (with --mongo: what a MongoDB server lost)
    Scan(commands::scan::Args),
    /// Browse all snapshots as a read-only filesystem (FUSE) until Ctrl-C
    Mount(commands::mount::Args),
    /// MongoDB point-in-time recovery: archive the oplog, show recoverable times
    Mongo(commands::mongo::Args),
    /// Upgrade a repository of format version 1 or 2 in place to version 3
    Migrate(commands::migrate::Args),
    /// Run as a service: scheduled backups, an HTTP API, metrics and alerts (see README)
    Serve(commands::serve::Args),
}

impl Command {
    /// Whether the command's operations stop cleanly when `Context::cancel` is set.
    fn honours_cancel(&self) -> bool {
        match self {
            Command::Mongo(a) => a.honours_cancel(),
            Command::Init(_)
            | Command::Snapshots(_)
            | Command::Ls(_)
            | Command::Cat(_)
            | Command::Key(_)
            | Command::Unlock(_) => false,
            _ => true,
        }
    }
}

fn main() -> ExitCode {
    one_malloc_arena();
    deep_worker_stacks();
    let cli = Cli::parse();
    let ctx = Context::new(cli.global);
    if let Err(e) = ctx.cancel_on_signals(cli.command.honours_cancel()) {
        eprintln!("strata: warning: {e:#}");
    }
    let result = match cli.command {
        Command::Init(a) => commands::init::run(&ctx, a),
        Command::Backup(a) => commands::backup::run(&ctx, a),
        Command::Snapshots(a) => commands::snapshots::run(&ctx, a),
        Command::Ls(a) => commands::ls::run(&ctx, a),
        Command::Cat(a) => commands::cat::run(&ctx, a),
        Command::Restore(a) => commands::restore::run(&ctx, a),
        Command::Check(a) => commands::check::run(&ctx, a),
        Command::Key(a) => commands::key::run(&ctx, a),
        Command::Stats(a) => commands::stats::run(&ctx, a),
        Command::Forget(a) => commands::forget::run(&ctx, a),
        Command::Prune(a) => commands::prune::run(&ctx, a),
        Command::Copy(a) => commands::copy::run(&ctx, a),
        Command::Repair(a) => commands::repair::run(&ctx, a),
        Command::Unlock(a) => commands::unlock::run(&ctx, a),
        Command::Diff(a) => commands::diff::run(&ctx, a),
        Command::Find(a) => commands::find::run(&ctx, a),
        Command::Scan(a) => commands::scan::run(&ctx, a),
        Command::Mount(a) => commands::mount::run(&ctx, a),
        Command::Mongo(a) => commands::mongo::run(&ctx, a),
        Command::Migrate(a) => commands::migrate::run(&ctx, a),
        Command::Serve(a) => commands::serve::run(&ctx, a),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) if commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(_) if ctx.cancel.is_cancelled() => {
            eprintln!("strata: cancelled");
            commands::Outcome::Cancelled.into()
        }
        Err(e) => {
            let message = strata::errors::message(e.as_ref());
            eprintln!("strata: error: {}", commands::terminal_safe(&message));
            commands::Outcome::Failed.into()
        }
    }
}

/// glibc gives each thread that allocates its own heap arena, and memory freed into one is
/// not reused by the others: with multi-MiB chunk and pack buffers passing between worker
/// threads, a first backup of 2 GiB of large files peaked at 155-165 MB resident. One
/// arena peaks at 110-119 MB in the same time (`benches/compare`, corpus `large`), since
/// almost all allocation is a few large buffers per chunk.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    // SAFETY: mallopt only changes allocator settings; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// Stack of each rayon worker. Backup descends one directory level per call on the workers
/// (every other walk is iterative), so the stack bounds the depth it can read: 2 MiB, the
/// default, overflowed at about 2,000 levels in the dev profile. Only the pages touched are
/// ever resident.
const WORKER_STACK: usize = 256 << 20;

fn deep_worker_stacks() {
    // Fails only if a pool exists already, which then keeps its own stacks.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
}
