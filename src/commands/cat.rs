//! `strata cat`: a file's bytes from a snapshot, or a repository object decoded as JSON.
use super::{Context, Outcome};
use anyhow::{Result, bail};
use strata::repo::id::{Id, TreeId};
use strata::vfs;

#[derive(clap::Args)]
pub struct Args {
    /// A snapshot id prefix or `latest` (then PATH is a file in it), or one of
    /// `config`, `snapshot ID`, `tree ID`
    what: String,
    /// The file path in the snapshot, or the object id
    arg: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    match (args.what.as_str(), args.arg) {
        ("config", None) => ctx.print_json(ctx.open()?.config())?,
        ("snapshot", Some(id)) => {
            let repo = ctx.open()?;
            ctx.print_json(&repo.find_snapshot(&id)?.1)?
        }
        ("tree", Some(id)) => {
            let Some(id) = Id::from_hex(&id) else {
                bail!("a tree id is 64 hex digits")
            };
            ctx.print_json(&ctx.open_indexed()?.load_tree(&TreeId(id))?)?
        }
        (snapshot, Some(path)) => cat_file(ctx, snapshot, &path)?,
        (_, None) => bail!("usage: strata cat SNAPSHOT PATH | config | snapshot ID | tree ID"),
    }
    Ok(Outcome::Ok)
}

fn cat_file(ctx: &Context, snapshot: &str, path: &str) -> Result<()> {
    let repo = ctx.open_indexed()?;
    let (_, snap) = repo.find_snapshot(snapshot)?;
    let node = vfs::node_at(&repo, snap.tree, path.as_bytes())?;
    if node.subtree().is_some() || node.type_name() != "file" {
        bail!("{path} is a {}, not a file", node.type_name());
    }
    let mut out = std::io::stdout().lock();
    vfs::copy_file(&repo, &node, &mut out)?;
    Ok(())
}
