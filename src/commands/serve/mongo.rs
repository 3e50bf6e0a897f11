//! MongoDB for the service: a plan's server as a source of its backup, a restore into a
//! server (from a snapshot or to a point in time) as an operation, and the one rule every
//! text the service shows about a server follows: URI passwords are replaced by `***`.
use super::Service;
use super::config::{MongoSource, Repository};
use super::runner::{Running, open};
use super::state::Status;
use anyhow::{Result, anyhow};
use serde::Deserialize;
use serde_json::{Value, json};
use strata::cancel::Cancel;
use strata::repo::id::SnapshotId;
use strata::repo::snapshot::BsonTime;
use strata::repo::snapshot::Snapshot;
use strata::sources::mongodb::chain::ChainPolicy;
use strata::sources::mongodb::export::{ExportOptions, MongoExport};
use strata::sources::mongodb::follow;
use strata::sources::mongodb::import::{self, ImportOptions, ImportReport, Mode};
use strata::sources::mongodb::{Conn, NsFilter, Renames};

/// `text` with the password of every `scheme://user:password@host` in it replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || "/?#\"'`,;<>".contains(c))
            .unwrap_or(after.len());
        let authority = &after[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(host), Some(colon)) if colon < host => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[host..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Connects to `uri` on the service's runtime (the caller is one of its blocking threads);
/// errors never show the password.
pub fn connect(uri: &str) -> Result<Conn> {
    let handle = tokio::runtime::Handle::current();
    Conn::connect_on(uri, handle).map_err(|e| anyhow!(redact(&e.to_string())))
}

/// The export of a plan's MongoDB source, as `backup --mongo` makes it (consistent, four
/// collections at a time, incremental on the newest dump of `snapshots` it may continue).
pub fn export(source: &MongoSource, snapshots: &[(SnapshotId, Snapshot)]) -> Result<MongoExport> {
    let conn = connect(&source.uri().read()?)?;
    let opts = ExportOptions {
        filter: source.filter(),
        users: source.users,
        consistency: true,
        parallel: 4,
    };
    let defaults = ChainPolicy::default();
    let policy = ChainPolicy {
        full: false,
        full_every: source.full_every.unwrap_or(defaults.full_every),
        max_oplog_percent: (source.max_oplog_percent).unwrap_or(defaults.max_oplog_percent),
    };
    Ok(MongoExport::new(conn, opts)?.continuing(snapshots, policy))
}

/// What to do with documents whose `_id` exists already (`restore --mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InsertMode {
    #[default]
    Insert,
    Upsert,
    SkipExisting,
}

/// `restore --ns-from FROM --ns-to TO`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// A MongoDB restore as `restore --mongo` takes it: into `uri`, from `snapshot` (default
/// `latest`) or as of `at` (point in time), with namespace filters, renames and modes.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MongoRestore {
    /// The server to restore into (its password is never recorded or shown).
    pub uri: String,
    /// A snapshot id (or prefix) or `latest`; not with `at`.
    pub snapshot: Option<String>,
    /// A point in time: RFC 3339 (every entry of that second) or `SECONDS:INCREMENT`.
    pub at: Option<String>,
    /// Only namespaces matching `db.coll` (`*` wildcards).
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub renames: Vec<Rename>,
    /// Drop each collection before restoring it.
    #[serde(default)]
    pub drop: bool,
    #[serde(default)]
    pub mode: InsertMode,
    /// Build the indexes (default true).
    #[serde(default = "yes")]
    pub indexes: bool,
    /// Also users and roles.
    #[serde(default)]
    pub users: bool,
    #[serde(default)]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

/// Why a restore request is refused: the field at fault and what is wrong.
pub struct Invalid(pub &'static str, pub String);

impl MongoRestore {
    /// The point in time asked for, checked against `snapshot`.
    pub fn point_in_time(&self) -> Result<Option<BsonTime>, Invalid> {
        let Some(at) = &self.at else {
            return Ok(None);
        };
        if self.snapshot.is_some() {
            let message = "give a snapshot or a point in time (at), not both".to_string();
            return Err(Invalid("at", message));
        }
        let at = crate::commands::restore::parse_at(at).map_err(|e| Invalid("at", e))?;
        Ok(Some(at))
    }

    /// The import's options (the operation gives its cancellation token).
    pub fn options(&self, at: Option<BsonTime>) -> Result<ImportOptions, Invalid> {
        let (from, to): (Vec<String>, Vec<String>) = (self.renames.iter())
            .map(|r| (r.from.clone(), r.to.clone()))
            .unzip();
        let renames = Renames::new(&from, &to).map_err(|e| Invalid("renames", e.to_string()))?;
        Ok(ImportOptions {
            filter: NsFilter {
                databases: vec![],
                include: self.include.clone(),
                exclude: self.exclude.clone(),
            },
            renames,
            drop: self.drop,
            mode: match self.mode {
                InsertMode::Insert => Mode::Insert,
                InsertMode::Upsert => Mode::Upsert,
                InsertMode::SkipExisting => Mode::SkipExisting,
            },
            indexes: self.indexes,
            users: self.users,
            parallel: 4,
            batch_size: 1000,
            dry_run: self.dry_run,
            until: at,
            after: None,
            cancel: Cancel::default(),
        })
    }
}

impl Service {
    /// The timeline of the repository `name`'s MongoDB snapshots and oplog slices (of
    /// `server` if given), as `mongo timeline --json` prints it.
    pub fn timeline(&self, name: &str, server: Option<&str>) -> Result<Value> {
        let repo = (self.config.repository(name))
            .ok_or_else(|| anyhow!("no repository named {name:?}"))?;
        let ctx = self.context(repo, Cancel::default());
        let (all, _damaged) = open(&ctx, repo)?.snapshots()?;
        Ok(serde_json::to_value(follow::timeline(&all, server))?)
    }

    /// Restores into `req.uri` from `repo`, as `restore --mongo` does: the report, partial
    /// when documents, indexes, views or users failed.
    pub fn restore_mongo(
        &self,
        repo: &Repository,
        req: &MongoRestore,
        opts: &ImportOptions,
        op: &Running,
    ) -> Result<(Status, Value)> {
        let ctx = self.context(repo, op.cancel.clone());
        let (indexed, _lock) = ctx.index_reading(open(&ctx, repo)?, "restore")?;
        let conn = connect(&req.uri)?;
        let (snapshot, report) = match opts.until {
            Some(at) => {
                let plan = import::plan_at(&indexed, at)?;
                op.log_line(format!(
                    "restoring snapshot {} ({}) and {} oplog slices up to {at}",
                    plan.snapshot.0.short(),
                    plan.time,
                    plan.slices()
                ));
                let report = import::restore_at(&indexed, &conn, &plan, opts, op)?;
                (plan.snapshot, report)
            }
            None => {
                let spec = req.snapshot.as_deref().unwrap_or("latest");
                let (id, snap) = indexed.find_snapshot(spec)?;
                op.log_line(format!("restoring snapshot {}", id.0.short()));
                let dump = import::read_dump(&indexed, snap.tree, &opts.filter, &opts.renames)?;
                (id, import::import(&indexed, &conn, &dump, &[], opts, op)?)
            }
        };
        let status = status_of(&report);
        let report = json!({
            "snapshot_id": snapshot.0.to_hex(),
            "target": conn.server,
            "mongodb": report,
        });
        Ok((status, report))
    }
}

/// Partial when documents, indexes, views or users failed (`restore`'s exit code 3).
fn status_of(report: &ImportReport) -> Status {
    match report.total.failed > 0 || !report.errors.is_empty() {
        true => Status::Partial,
        false => Status::Success,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_in_uris_are_hidden_wherever_they_are() {
        assert_eq!(
            redact("cannot connect to mongodb://app:s3cr%40t@db1:27017,db2/?tls=true now"),
            "cannot connect to mongodb://app:***@db1:27017,db2/?tls=true now"
        );
        assert_eq!(
            redact("\"mongodb+srv://u:p@x\" and http://h:80/p"),
            "\"mongodb+srv://u:***@x\" and http://h:80/p"
        );
        assert_eq!(redact("mongodb://user@h/"), "mongodb://user@h/");
        assert_eq!(redact("no uri"), "no uri");
    }
}
