//! `strata key`: list, add and remove passwords, or change the current one.
use super::{Context, Outcome, escape};
use anyhow::{Result, bail};
use strata::repo::key::KdfParams;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List key files
    List,
    /// Add a password (read from --new-password-file, $STRATA_NEW_PASSWORD or a prompt)
    Add(NewPassword),
    /// Remove a key file by id prefix (not the one in use)
    Remove { id: String },
    /// Replace the current password: add the new key, then remove the old one
    Passwd(NewPassword),
}

#[derive(clap::Args)]
struct NewPassword {
    #[arg(long, env = "STRATA_NEW_PASSWORD_FILE")]
    new_password_file: Option<std::path::PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome> {
    let repo = ctx.open()?;
    match args.action {
        Action::List => list(ctx, &repo)?,
        Action::Add(np) => {
            let id = repo.add_key(new_password(&np)?.as_bytes(), KdfParams::recommended())?;
            report(ctx, "added", &id.0.to_hex())?;
        }
        Action::Remove { id } => {
            let id = repo.find_key(&id)?;
            repo.remove_key(id)?;
            report(ctx, "removed", &id.0.to_hex())?;
        }
        Action::Passwd(np) => {
            let password = new_password(&np)?;
            let id = repo.change_password(password.as_bytes(), KdfParams::recommended())?;
            report(ctx, "changed password; new key", &id.0.to_hex())?;
        }
    }
    Ok(Outcome::Ok)
}

fn report(ctx: &Context, what: &str, id: &str) -> Result<()> {
    if ctx.args.json {
        return ctx.print_json(&serde_json::json!({"action": what, "id": id}));
    }
    ctx.say(&format!("{what} key {}", &id[..8]))
}

fn new_password(np: &NewPassword) -> Result<String> {
    let password = match (&np.new_password_file, std::env::var("STRATA_NEW_PASSWORD")) {
        (Some(f), _) => std::fs::read_to_string(f)?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, Ok(p)) => p,
        (None, Err(_)) => {
            let a = rpassword::prompt_password("enter new password: ")?;
            let b = rpassword::prompt_password("enter it again: ")?;
            if a != b {
                bail!("the passwords do not match");
            }
            a
        }
    };
    if password.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(password)
}

fn list(ctx: &Context, repo: &strata::repo::repository::Repository) -> Result<()> {
    let keys = repo.list_keys()?;
    let rows: Vec<serde_json::Value> = keys
        .iter()
        .map(|(id, file)| {
            let (created, host, user) = match file {
                Ok(f) => (f.created.clone(), f.host.clone(), f.username.clone()),
                Err(e) => (format!("unreadable: {e}"), String::new(), String::new()),
            };
            serde_json::json!({"id": id.0.to_hex(), "current": *id == repo.key_id(),
                "created": created, "host": host, "username": user})
        })
        .collect();
    if ctx.args.json {
        return ctx.print_json(&rows);
    }
    for r in &rows {
        let mark = if r["current"] == true { "*" } else { " " };
        let id = r["id"].as_str().unwrap_or_default();
        ctx.say(&format!(
            "{mark}{} {} {}@{}",
            &id[..8],
            escape(r["created"].as_str().unwrap_or_default()),
            escape(r["username"].as_str().unwrap_or_default()),
            escape(r["host"].as_str().unwrap_or_default())
        ))?;
    }
    Ok(())
}
