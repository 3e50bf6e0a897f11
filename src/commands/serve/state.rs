//! The service's SQLite database in `state_dir`: per plan its pause flag, next run and alert
//! state; the operation history (bounded in count and age); API tokens (hashes only); the
//! audit log; per repository the snapshot count and size seen last.
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("service database {path}: {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("no token is named {0:?}")]
    NoToken(String),
    #[error("a token named {0:?} exists already")]
    TokenExists(String),
}

pub type Result<T> = std::result::Result<T, StateError>;

/// The schema this build writes; an older database is upgraded by `migrate`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    next_run TEXT,
    alerted_failure INTEGER NOT NULL DEFAULT 0,
    alerted_stale INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    plan TEXT,
    repository TEXT,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,
    report TEXT,
    error TEXT,
    log TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS operations_plan ON operations (plan, id);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    remote TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repositories (name TEXT PRIMARY KEY, snapshots INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS repository_sizes (name TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS repository_totals (name TEXT PRIMARY KEY, logical INTEGER NOT NULL,
    raw INTEGER NOT NULL, stored INTEGER NOT NULL);
";

/// A repository's snapshots' summaries, summed: the bytes of files they hold (`logical`),
/// the plaintext bytes they added (`raw`) and the bytes stored for those (`stored`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub logical: u64,
    pub raw: u64,
    pub stored: u64,
}

impl Totals {
    pub fn of<'a>(
        snapshots: impl IntoIterator<Item = &'a strata::repo::snapshot::Snapshot>,
    ) -> Totals {
        snapshots
            .into_iter()
            .fold(Totals::default(), |t, s| Totals {
                logical: t.logical + s.summary.total_bytes,
                raw: t.raw + s.summary.bytes_added_raw,
                stored: t.stored + s.summary.bytes_added,
            })
    }

    /// The bytes the snapshots hold per plaintext byte stored for them (None before any).
    pub fn deduplication(&self) -> Option<f64> {
        ratio(self.logical, self.raw)
    }

    /// Plaintext bytes per byte stored (None before any).
    pub fn compression(&self) -> Option<f64> {
        ratio(self.raw, self.stored)
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (a > 0 && b > 0).then(|| a as f64 / b as f64)
}

/// How an operation ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Success,
    /// Done, but some entries could not be read (the CLI's exit code 3).
    Partial,
    Failed,
    Cancelled,
    /// The service stopped (crash, `kill -9`) while it ran.
    Interrupted,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Running,
        Status::Success,
        Status::Partial,
        Status::Failed,
        Status::Cancelled,
        Status::Interrupted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Success => "success",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Status {
        Status::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .unwrap_or(Status::Failed)
    }
}

/// One entry of the history.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Operation {
    pub id: i64,
    /// `backup` (a plan's run: backup, then forget), `check`, `prune` or `notify`.
    pub kind: String,
    pub plan: Option<String>,
    pub repository: Option<String>,
    pub started: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub status: Status,
    /// The engine's report as JSON.
    #[schema(value_type = Object)]
    pub report: Option<serde_json::Value>,
    pub error: Option<String>,
    pub log: Vec<String>,
}

/// What the database keeps of a plan.
#[derive(Clone, Debug, Default)]
pub struct PlanState {
    pub paused: bool,
    pub next_run: Option<DateTime<Utc>>,
    pub alerted_failure: bool,
    pub alerted_stale: bool,
}

/// A token as listed: never its secret.
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub created: String,
}

/// Bounds of the history.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub days: u32,
    pub operations: u32,
    pub log_lines: u32,
}

pub struct State {
    conn: Mutex<Connection>,
    path: String,
    limits: Limits,
}

impl State {
    /// Opens (creating) `dir/state.db`.
    pub fn open(dir: &Path, limits: Limits) -> Result<State> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let file = dir.join("state.db");
        let path = file.display().to_string();
        let sql = |source| StateError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&file).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?1)",
            [SCHEMA_VERSION],
        )
        .map_err(sql)?;
        Ok(State {
            conn: Mutex::new(conn),
            path,
            limits,
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Marks what was running when the service last stopped as interrupted; how many.
    pub fn mark_interrupted(&self) -> Result<usize> {
        self.db()
            .execute(
                "UPDATE operations SET status = 'interrupted', ended = ?1 WHERE status = 'running'",
                [Utc::now()],
            )
            .map_err(self.sql())
    }

    pub fn plan(&self, name: &str) -> Result<PlanState> {
        let db = self.db();
        let row = db
            .query_row(
                "SELECT paused, next_run, alerted_failure, alerted_stale FROM plans WHERE name = ?1",
                [name],
                |r| {
                    Ok(PlanState {
                        paused: r.get(0)?,
                        next_run: r.get(1)?,
                        alerted_failure: r.get(2)?,
                        alerted_stale: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.sql())?;
        Ok(row.unwrap_or_default())
    }

    fn set_plan(&self, name: &str, column: &str, value: &dyn rusqlite::ToSql) -> Result<()> {
        let db = self.db();
        db.execute("INSERT OR IGNORE INTO plans (name) VALUES (?1)", [name])
            .map_err(self.sql())?;
        let update = format!("UPDATE plans SET {column} = ?2 WHERE name = ?1");
        db.execute(&update, params![name, value])
            .map_err(self.sql())?;
        Ok(())
    }

    pub fn set_next_run(&self, plan: &str, next: Option<DateTime<Utc>>) -> Result<()> {
        self.set_plan(plan, "next_run", &next)
    }

    pub fn set_paused(&self, plan: &str, paused: bool) -> Result<()> {
        self.set_plan(plan, "paused", &paused)
    }

    pub fn set_alerted(
        &self,
        plan: &str,
        failure: Option<bool>,
        stale: Option<bool>,
    ) -> Result<()> {
        if let Some(f) = failure {
            self.set_plan(plan, "alerted_failure", &f)?;
        }
        if let Some(s) = stale {
            self.set_plan(plan, "alerted_stale", &s)?;
        }
        Ok(())
    }

    /// Records a new running operation; its id.
    pub fn start_operation(
        &self,
        kind: &str,
        plan: Option<&str>,
        repository: Option<&str>,
    ) -> Result<i64> {
        let db = self.db();
        db.execute(
            "INSERT INTO operations (kind, plan, repository, started, status) VALUES (?1, ?2, ?3, ?4, 'running')",
            params![kind, plan, repository, Utc::now()],
        )
        .map_err(self.sql())?;
        Ok(db.last_insert_rowid())
    }

    /// Records how operation `id` ended, with its last `log_lines` lines, and drops history
    /// beyond the limits.
    pub fn finish_operation(
        &self,
        id: i64,
        status: Status,
        report: Option<&serde_json::Value>,
        error: Option<&str>,
        log: &[String],
    ) -> Result<()> {
        let keep = log.len().saturating_sub(self.limits.log_lines as usize);
        let log = serde_json::to_string(&log[keep..]).unwrap_or_else(|_| "[]".into());
        let report = report.map(|r| r.to_string());
        let db = self.db();
        db.execute(
            "UPDATE operations SET status = ?2, ended = ?3, report = ?4, error = ?5, log = ?6 WHERE id = ?1",
            params![id, status.name(), Utc::now(), report, error, log],
        )
        .map_err(self.sql())?;
        let oldest = Utc::now() - chrono::Duration::days(self.limits.days.into());
        db.execute(
            "DELETE FROM operations WHERE status != 'running' AND (started < ?1 OR id <= ?2 - ?3)",
            params![oldest, id, self.limits.operations],
        )
        .map_err(self.sql())?;
        Ok(())
    }

    pub fn operation(&self, id: i64) -> Result<Option<Operation>> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!("{SELECT_OPERATION} WHERE id = ?1"))
            .map_err(self.sql())?;
        stmt.query_row([id], operation_row)
            .optional()
            .map_err(self.sql())
    }

    /// The newest operations first, of one plan or all, without their logs.
    pub fn operations(&self, plan: Option<&str>, limit: u32) -> Result<Vec<Operation>> {
        let db = self.db();
        let query =
            format!("{SELECT_OPERATION} WHERE ?1 IS NULL OR plan = ?1 ORDER BY id DESC LIMIT ?2");
        let mut stmt = db.prepare(&query).map_err(self.sql())?;
        let rows = stmt
            .query_map(params![plan, limit], operation_row)
            .map_err(self.sql())?;
        let mut all: Vec<Operation> = rows.collect::<rusqlite::Result<_>>().map_err(self.sql())?;
        for op in &mut all {
            op.log.clear();
        }
        Ok(all)
    }

    /// The newest finished operation of `plan` with one of `statuses`.
    pub fn last_of(&self, plan: &str, statuses: &[Status]) -> Result<Option<Operation>> {
        let names: Vec<&str> = statuses.iter().map(|s| s.name()).collect();
        let db = self.db();
        let query = format!(
            "{SELECT_OPERATION} WHERE plan = ?1 AND kind = 'backup' AND status IN (SELECT value FROM json_each(?2)) ORDER BY id DESC LIMIT 1"
        );
        let list = serde_json::to_string(&names).unwrap_or_default();
        let mut stmt = db.prepare(&query).map_err(self.sql())?;
        stmt.query_row(params![plan, list], operation_row)
            .optional()
            .map_err(self.sql())
    }

    /// The newest finished `check` of `repository`.
    pub fn last_check(&self, repository: &str) -> Result<Option<Operation>> {
        let db = self.db();
        let query = format!(
            "{SELECT_OPERATION} WHERE repository = ?1 AND kind = 'check' AND status != 'running' ORDER BY id DESC LIMIT 1"
        );
        let mut stmt = db.prepare(&query).map_err(self.sql())?;
        stmt.query_row([repository], operation_row)
            .optional()
            .map_err(self.sql())
    }

    /// How many of `plan`'s runs in the history ended with each status.
    pub fn runs_by_status(&self, plan: &str) -> Result<Vec<(Status, u64)>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT status, COUNT(*) FROM operations WHERE plan = ?1 AND kind = 'backup' GROUP BY status")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([plan], |r| {
                let count: i64 = r.get(1)?;
                Ok((Status::parse(&r.get::<_, String>(0)?), count as u64))
            })
            .map_err(self.sql())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sql())
    }

    pub fn add_token(&self, name: &str, role: &str, hash: &[u8]) -> Result<()> {
        let inserted = self
            .db()
            .execute(
                "INSERT OR IGNORE INTO tokens (name, role, hash, created) VALUES (?1, ?2, ?3, ?4)",
                params![name, role, hash, Utc::now().to_rfc3339()],
            )
            .map_err(self.sql())?;
        match inserted {
            0 => Err(StateError::TokenExists(name.to_string())),
            _ => Ok(()),
        }
    }

    pub fn revoke_token(&self, name: &str) -> Result<()> {
        let removed = self
            .db()
            .execute("DELETE FROM tokens WHERE name = ?1", [name])
            .map_err(self.sql())?;
        match removed {
            0 => Err(StateError::NoToken(name.to_string())),
            _ => Ok(()),
        }
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT name, role, created FROM tokens ORDER BY name")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    name: r.get(0)?,
                    role: r.get(1)?,
                    created: r.get(2)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sql())
    }

    /// Every token's name, role and hash, for the caller to compare in constant time.
    pub fn token_hashes(&self) -> Result<Vec<(String, String, Vec<u8>)>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT name, role, hash FROM tokens")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.sql())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sql())
    }

    /// Writes one line of the audit log.
    pub fn audit(&self, who: &str, action: &str, target: &str, remote: &str) -> Result<()> {
        self.db()
            .execute(
                "INSERT INTO audit (time, who, action, target, remote) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![Utc::now().to_rfc3339(), who, action, target, remote],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// The newest `limit` audit lines: time, who, action, target, remote address.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<serde_json::Value>> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT time, who, action, target, remote FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(serde_json::json!({
                    "time": r.get::<_, String>(0)?,
                    "who": r.get::<_, String>(1)?,
                    "action": r.get::<_, String>(2)?,
                    "target": r.get::<_, String>(3)?,
                    "remote": r.get::<_, String>(4)?,
                }))
            })
            .map_err(self.sql())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sql())
    }

    pub fn set_snapshot_count(&self, repository: &str, count: usize) -> Result<()> {
        self.db()
            .execute(
                "INSERT OR REPLACE INTO repositories (name, snapshots) VALUES (?1, ?2)",
                params![repository, count as i64],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Records the size in bytes of `repository`'s objects, as last listed.
    pub fn set_repository_size(&self, repository: &str, bytes: u64) -> Result<()> {
        self.db()
            .execute(
                "INSERT OR REPLACE INTO repository_sizes (name, bytes) VALUES (?1, ?2)",
                params![repository, bytes as i64],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    pub fn repository_size(&self, repository: &str) -> Result<Option<i64>> {
        self.db()
            .query_row(
                "SELECT bytes FROM repository_sizes WHERE name = ?1",
                [repository],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }

    /// Records the summed summaries of `repository`'s snapshots, as last listed.
    pub fn set_repository_totals(&self, repository: &str, t: Totals) -> Result<()> {
        let n = |v: u64| v.min(i64::MAX as u64) as i64;
        self.db()
            .execute(
                "INSERT OR REPLACE INTO repository_totals (name, logical, raw, stored) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![repository, n(t.logical), n(t.raw), n(t.stored)],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    pub fn repository_totals(&self, repository: &str) -> Result<Option<Totals>> {
        self.db()
            .query_row(
                "SELECT logical, raw, stored FROM repository_totals WHERE name = ?1",
                [repository],
                |r| {
                    Ok(Totals {
                        logical: r.get::<_, i64>(0)? as u64,
                        raw: r.get::<_, i64>(1)? as u64,
                        stored: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(self.sql())
    }

    pub fn snapshot_count(&self, repository: &str) -> Result<Option<i64>> {
        self.db()
            .query_row(
                "SELECT snapshots FROM repositories WHERE name = ?1",
                [repository],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }
}

const SELECT_OPERATION: &str =
    "SELECT id, kind, plan, repository, started, ended, status, report, error, log FROM operations";

fn operation_row(r: &rusqlite::Row) -> rusqlite::Result<Operation> {
    let report: Option<String> = r.get(7)?;
    let log: String = r.get(9)?;
    Ok(Operation {
        id: r.get(0)?,
        kind: r.get(1)?,
        plan: r.get(2)?,
        repository: r.get(3)?,
        started: r.get(4)?,
        ended: r.get(5)?,
        status: Status::parse(&r.get::<_, String>(6)?),
        report: report.and_then(|r| serde_json::from_str(&r).ok()),
        error: r.get(8)?,
        log: serde_json::from_str(&log).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_newest_operations_and_the_last_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            days: 90,
            operations: 2,
            log_lines: 2,
        };
        let state = State::open(dir.path(), limits).unwrap();
        let log: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = (state.start_operation("backup", Some("app"), Some("main"))).unwrap();
            (state.finish_operation(id, Status::Success, None, None, &log)).unwrap();
            ids.push(id);
        }
        let kept: Vec<i64> = state
            .operations(None, 10)
            .unwrap()
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(
            kept,
            [ids[2], ids[1]],
            "the oldest beyond the limit is dropped"
        );
        let newest = state.operation(ids[2]).unwrap().unwrap();
        assert_eq!(newest.log, ["line 3", "line 4"]);
        assert_eq!(state.runs_by_status("app").unwrap(), [(Status::Success, 2)]);
    }

    #[test]
    fn what_ran_when_the_service_stopped_is_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            days: 90,
            operations: 10,
            log_lines: 10,
        };
        let state = State::open(dir.path(), limits).unwrap();
        let id = (state.start_operation("check", None, Some("main"))).unwrap();
        drop(state);
        let state = State::open(dir.path(), limits).unwrap();
        assert_eq!(state.mark_interrupted().unwrap(), 1);
        let op = state.operation(id).unwrap().unwrap();
        assert_eq!(op.status, Status::Interrupted);
        assert!(op.ended.is_some());
    }
}
