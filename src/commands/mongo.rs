//! `strata mongo follow` (archive the oplog as slices), `strata mongo timeline` (the
//! recoverable windows and gaps of MongoDB servers) and `strata mongo consolidate` (a full
//! dump computed from an incremental one).
use super::{Context, Outcome, escape};
use anyhow::Result;
use strata::repo::lock::LockMode;
use strata::repo::locked::Locked;
use strata::repo::snapshot::BsonTime;
use strata::sources::mongodb::Conn;
use strata::sources::mongodb::connection::server_of;
use strata::sources::mongodb::consolidate::{self, ConsolidateReport};
use strata::sources::mongodb::follow::{self, FollowOptions, GapKind, Slice, Timeline};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Tail the oplog and store it in the repository as slices
    Follow {
        /// The server's URI (else read from --mongo-uri-file or $STRATA_MONGO_URI: a
        /// password here stays visible in the process list while `follow` runs)
        uri: Option<String>,
        /// Read the server's URI from this file
        #[arg(long, value_name = "PATH", conflicts_with = "uri")]
        mongo_uri_file: Option<std::path::PathBuf>,
        /// Oplog time one slice covers at most (e.g. 10m, 1h)
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        slice: std::time::Duration,
        /// Archive up to now, then exit
        #[arg(long)]
        once: bool,
        /// Host name to record (default: this machine's)
        #[arg(long)]
        host: Option<String>,
    },
    /// Show recoverable windows (snapshot times and oplog coverage) and gaps
    Timeline {
        /// Only this server: a URI or the host:port that snapshots record
        server: Option<String>,
    },
    /// Write a full MongoDB dump computed from an incremental one (its base and the oplog
    /// since), without the server, as a new snapshot that later backups continue
    Consolidate {
        /// The snapshot whose dump to consolidate (an id prefix or `latest`)
        snapshot: String,
    },
}

impl Args {
    /// `follow` and `consolidate` stop cleanly when cancelled; `timeline` exits at once.
    pub fn honours_cancel(&self) -> bool {
        matches!(
            self.command,
            Command::Follow { .. } | Command::Consolidate { .. }
        )
    }
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    match args.command {
        Command::Follow {
            uri,
            mongo_uri_file,
            slice,
            once,
            host,
        } => {
            let uri = super::mongo_uri(ctx, uri.as_deref(), mongo_uri_file.as_deref())?;
            let opts = FollowOptions {
                slice,
                once,
                host: host.unwrap_or_else(strata::sysinfo::hostname),
                cancel: ctx.cancel.clone(),
            };
            run_follow(ctx, &uri, &opts)
        }
        Command::Timeline { server } => run_timeline(ctx, server.as_deref()),
        Command::Consolidate { snapshot } => run_consolidate(ctx, &snapshot),
    }
}

fn run_consolidate(ctx: &Context, spec: &str) -> Result<Outcome> {
    let (repo, guard) = ctx.open_locked(LockMode::Shared, "mongo consolidate")?;
    let repo = Locked::new(&repo, guard)?;
    let found = repo.find_snapshot(spec)?;
    let r = consolidate::consolidate(&repo, (found.0, &found.1), &ctx.cancel)?;
    if ctx.args.json {
        ctx.print_json(&r)?;
    } else {
        ctx.say(&describe_consolidation(&r))?;
    }
    Ok(Outcome::Ok)
}

fn describe_consolidation(r: &ConsolidateReport) -> String {
    format!(
        "snapshot {} saved: the dump of {} as a full one ({} collections, {} views, {} \
         documents; {} oplog entries applied; {} bytes added)",
        r.snapshot_id.0.short(),
        r.from.0.short(),
        r.collections,
        r.views,
        r.documents,
        r.oplog_entries,
        r.bytes_added
    )
}

fn run_follow(ctx: &Context, uri: &str, opts: &FollowOptions) -> Result<Outcome> {
    // Its packs are unindexed until each slice is saved: prune must not run meanwhile.
    let (repo, guard) = ctx.open_locked(LockMode::Shared, "mongo follow")?;
    let repo = Locked::new(&repo, guard)?;
    let conn = Conn::connect(uri)?;
    let mut say = |s: &Slice| {
        let _ = ctx.say(&describe_slice(s));
    };
    let slices = follow::follow(&repo, &conn, opts, &mut say)?;
    for s in slices.iter().filter(|s| s.gap_from.is_some()) {
        ctx.warn(&format!(
            "the oplog no longer reaches back to {}: entries up to {} are lost (a gap)",
            s.gap_from.expect("filtered"),
            s.start
        ));
    }
    if ctx.args.json {
        ctx.print_json(&slices)?;
    } else if slices.is_empty() {
        ctx.say("nothing new in the oplog")?;
    }
    Ok(Outcome::Ok)
}

fn describe_slice(s: &Slice) -> String {
    format!(
        "slice {} of {}: {} entries after {} up to {}",
        s.id.0.short(),
        escape(&s.server),
        s.entries,
        when(s.start),
        when(s.end)
    )
}

/// `SECONDS:INCREMENT (RFC 3339)`.
fn when(t: BsonTime) -> String {
    let date = chrono::DateTime::from_timestamp(t.t as i64, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    format!("{t} ({date})")
}

fn run_timeline(ctx: &Context, server: Option<&str>) -> Result<Outcome> {
    if let Some(s) = server {
        super::warn_if_password(ctx, s);
    }
    let repo = ctx.open()?;
    let server = match server {
        Some(s) if s.contains("://") => Some(server_of(s)?),
        other => other.map(str::to_string),
    };
    let (all, _) = repo.snapshots()?;
    let t = follow::timeline(&all, server.as_deref());
    if ctx.args.json {
        ctx.print_json(&t)?;
    } else {
        print_timeline(ctx, &t)?;
    }
    Ok(Outcome::Ok)
}

fn print_timeline(ctx: &Context, t: &Timeline) -> Result<()> {
    if t.windows.is_empty() {
        ctx.say("no consistent MongoDB snapshots")?;
    }
    for w in &t.windows {
        let reach = match w.to == w.from {
            true => "that time only (no archived oplog after it)".to_string(),
            false => format!("any time up to {}", when(w.to)),
        };
        ctx.say(&format!(
            "{}: snapshot {} at {}: recoverable to {reach}",
            escape(&w.server),
            w.snapshot.0.short(),
            when(w.from)
        ))?;
    }
    for g in &t.gaps {
        let why = match g.kind {
            GapKind::RolledOver => "the oplog rolled over before it was archived",
            GapKind::Missing => {
                "not recoverable: its oplog slices were forgotten or are unreadable"
            }
        };
        ctx.say(&format!(
            "{}: gap after {} up to {} ({why})",
            escape(&g.server),
            when(g.from),
            when(g.to)
        ))?;
    }
    ctx.say(&format!("{} oplog slices", t.slices.len()))
}
