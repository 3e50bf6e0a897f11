//! `strata ls`: list the entries of a snapshot, below a path, optionally recursively.
use super::{Context, Outcome, escape};
use anyhow::Result;
use strata::tree::{Node, NodeKind};
use strata::vfs;

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
    let mut entries = Vec::new();
    let prefix = format!(
        "/{}",
        vfs::components(args.path.as_bytes())
            .join(&b'/')
            .escape_ascii()
    );
    if start.subtree().is_none() {
        entries.push((prefix.as_bytes().to_vec(), start.clone()));
    }
    vfs::walk(
        &repo,
        &start,
        args.path.as_bytes(),
        args.recursive,
        &mut |p, n| {
            entries.push((normalize(p), n.clone()));
            Ok(())
        },
    )?;
    if ctx.args.json {
        let listed: Vec<_> = entries.iter().map(|(p, n)| json(p, n)).collect();
        ctx.print_json(&listed)?;
        return Ok(Outcome::Ok);
    }
    for (path, node) in &entries {
        let name = String::from_utf8_lossy(path);
        let shown = escape(&name);
        match args.long {
            true => ctx.say(&long_line(&shown, node))?,
            false => ctx.say(&shown)?,
        }
    }
    Ok(Outcome::Ok)
}

fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1);
    for c in vfs::components(path) {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

fn json(path: &[u8], n: &Node) -> serde_json::Value {
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
