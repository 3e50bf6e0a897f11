//! `strata ls`: list the entries of a snapshot, below a path, optionally recursively,
//! streaming them as the walk reaches them.
use super::{Context, Outcome, escape};
use anyhow::Result;
use std::borrow::Cow;
use std::io::{BufWriter, StdoutLock, Write};
use strata::repo::tree::{Node, NodeKind};
use strata::vfs;
use strata::walk::{self, Budget};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id prefix or `latest`
    snapshot: String,
    /// Directory (or file) inside the snapshot
    #[arg(default_value = "/")]
    path: String,
    /// List everything below the path
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Show mode, owner, size and modification time
    #[arg(short, long)]
    long: bool,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open_indexed()?;
    let (_, snap) = repo.find_snapshot(&args.snapshot)?;
    let start = vfs::node_at(&repo, snap.tree, args.path.as_bytes())?;
    let prefix = normalize(args.path.as_bytes());
    let mut out = Lister::new(ctx, args.long);
    if start.subtree().is_none() {
        out.entry(&prefix, &start)?;
    }
    let mut budget = Budget::of(&snap);
    walk::walk(
        &repo,
        &start,
        &prefix,
        args.recursive,
        &mut budget,
        |p, n| out.entry(p, n),
    )?;
    out.finish()?;
    Ok(Outcome::Ok)
}

/// Writes entries as they are walked (a listing of millions of entries is never held in
/// memory): lines of text, or the elements of one JSON array.
struct Lister {
    out: Option<BufWriter<StdoutLock<'static>>>,
    json: bool,
    long: bool,
    listed: u64,
}

impl Lister {
    fn new(ctx: &Context, long: bool) -> Lister {
        let json = ctx.args.json;
        let shown = json || !ctx.args.quiet;
        Lister {
            out: shown.then(|| BufWriter::new(std::io::stdout().lock())),
            json,
            long,
            listed: 0,
        }
    }

    fn entry(&mut self, path: &[u8], node: &Node) -> Result<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        match (self.json, self.listed) {
            (true, 0) => out.write_all(b"[\n  ")?,
            (true, _) => out.write_all(b",\n  ")?,
            (false, _) => {}
        }
        self.listed += 1;
        if self.json {
            serde_json::to_writer(&mut *out, &json(path, node)).map_err(std::io::Error::from)?;
            return Ok(());
        }
        let shown = shown(path);
        match self.long {
            true => writeln!(out, "{}", long_line(&shown, node))?,
            false => writeln!(out, "{shown}")?,
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        match (self.json, self.listed) {
            (true, 0) => out.write_all(b"[]\n")?,
            (true, _) => out.write_all(b"\n]\n")?,
            (false, _) => {}
        }
        out.flush()?;
        Ok(())
    }
}

/// The path for a terminal: escaped only when it holds a control character, so that deep
/// paths (tens of kilobytes a line) are not copied a character at a time.
fn shown(path: &[u8]) -> Cow<'_, str> {
    let lossy = String::from_utf8_lossy(path);
    match escape(&lossy) {
        Cow::Borrowed(_) => lossy.clone(),
        Cow::Owned(escaped) => Cow::Owned(escaped),
    }
}

/// `/a/b` for the path as given (`a//b/`, `/a/./b`…); empty for the root.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1);
    for c in vfs::components(path) {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

/// An entry as `--json` lists it (and the service's directory listing).
pub fn json(path: &[u8], n: &Node) -> serde_json::Value {
    let target = match &n.kind {
        NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
        _ => None,
    };
    serde_json::json!({
        "path": String::from_utf8_lossy(path),
        "name": String::from_utf8_lossy(&n.name),
        "type": n.type_name(),
        "size": n.size,
        "mode": n.mode,
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "mtime": format_time(n),
        "link_target": target,
    })
}

fn format_time(n: &Node) -> String {
    chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn long_line(path: &str, n: &Node) -> String {
    let kind = match n.kind {
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::CharDev { .. } => 'c',
        NodeKind::BlockDev { .. } => 'b',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::File { .. } => '-',
    };
    let time = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "{kind}{:04o} {:>8} {:>8} {:>12} {time} {path}",
        n.mode,
        escape(&n.user),
        escape(&n.group),
        n.size
    )
}
