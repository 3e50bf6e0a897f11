//! What every command shares: global options, opening the repository with a password,
//! JSON and text output, progress bars and exit codes.
pub mod backup;
pub mod cat;
pub mod check;
pub mod copy;
pub mod diff;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod migrate;
pub mod mongo;
pub mod mount;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod scan;
pub mod serve;
pub mod snapshots;
pub mod stats;
pub mod unlock;

use anyhow::{Context as _, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use strata::backend::Backend;
use strata::cancel::Cancel;
use strata::observer::{Counters, Observer, Phase, Quiet};
use strata::repo::lock::{LockGuard, LockMode};
use strata::repo::repository::{IndexedRepo, Repository};

#[derive(clap::Args)]
pub struct GlobalArgs {
    /// Repository location: a directory (or local:DIR), s3:https://HOST[:PORT]/BUCKET[/PREFIX],
    /// s3:http://..., s3:s3.amazonaws.com/BUCKET[/PREFIX], gs:BUCKET:/PREFIX or
    /// azure:CONTAINER:/PREFIX (see "Repositories on object storage" in the README)
    #[arg(short = 'r', long = "repo", env = "STRATA_REPOSITORY", global = true)]
    repo: Option<String>,
    /// A backend option, e.g. `s3.region=eu-west-1`, `s3.path-style=false`, `timeout=30s`,
    /// `fault.transient=0.05` (repeatable; the README lists them)
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true,
          value_parser = key_value)]
    options: Vec<(String, String)>,
    /// Read the password from this file (else $STRATA_PASSWORD, else a prompt)
    #[arg(long, env = "STRATA_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Where the local cache lives: the index, and for a remote repository its snapshots and
    /// tree packs (default: $XDG_CACHE_HOME/strata or ~/.cache/strata)
    #[arg(long, env = "STRATA_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Keep the index in memory only, and cache nothing on disk
    #[arg(long, global = true)]
    no_cache: bool,
    /// Print results as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Let restore, check and mount (and copy, on its source) run without a shared lock
    /// (they may then fail if a prune runs at the same time); commands that write always lock
    #[arg(long, global = true)]
    no_lock: bool,
    /// Wait up to this long for a conflicting lock to go away, e.g. `5m` (default: fail at once)
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    retry_lock: Option<std::time::Duration>,
}

/// `KEY=VALUE` of `-o`.
fn key_value(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Which MongoDB namespaces `backup --mongo` and `scan --mongo` take.
#[derive(clap::Args)]
pub struct NsFilterArgs {
    /// Only this database (repeatable)
    #[arg(long = "mongo-db", value_name = "DB", requires = "mongo")]
    databases: Vec<String>,
    /// Only namespaces matching db.coll (`*` wildcards; repeatable)
    #[arg(long = "ns-include", value_name = "PATTERN", requires = "mongo")]
    include: Vec<String>,
    /// Leave out namespaces matching db.coll (`*` wildcards; repeatable)
    #[arg(long = "ns-exclude", value_name = "PATTERN", requires = "mongo")]
    exclude: Vec<String>,
}

impl NsFilterArgs {
    pub fn filter(&self) -> strata::sources::mongodb::NsFilter {
        strata::sources::mongodb::NsFilter {
            databases: self.databases.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

/// The MongoDB URI `given` on the command line, else read from `file`, else taken from
/// `$STRATA_MONGO_URI`. A password in a command-line URI is visible to every user in the
/// process list (for as long as `mongo follow` runs), so that case gets a warning.
pub fn mongo_uri(ctx: &Context, given: Option<&str>, file: Option<&Path>) -> Result<String> {
    let from_file = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading MongoDB URI file {}", f.display()))?,
        ),
        None => None,
    };
    let env = std::env::var("STRATA_MONGO_URI").ok();
    let (uri, warn) = choose_mongo_uri(given, from_file, env)?;
    if warn {
        warn_password_in_argv(ctx);
    }
    Ok(uri)
}

/// Warns when `text`, given on the command line, is a URI with a password.
pub fn warn_if_password(ctx: &Context, text: &str) {
    if has_password(text) {
        warn_password_in_argv(ctx);
    }
}

fn warn_password_in_argv(ctx: &Context) {
    ctx.warn(
        "the MongoDB URI on the command line holds a password, which other users can read in \
         the process list; pass it with --mongo-uri-file PATH or STRATA_MONGO_URI instead",
    );
}

fn has_password(uri: &str) -> bool {
    strata::sources::mongodb::scan::uri_without_password(uri).1
}

/// The URI to use and whether to warn about a password on the command line.
fn choose_mongo_uri(
    given: Option<&str>,
    file: Option<String>,
    env: Option<String>,
) -> Result<(String, bool)> {
    match (given, &file) {
        (Some(_), Some(_)) => bail!("give the MongoDB URI once: on the command line or in a file"),
        (Some(uri), None) => return Ok((uri.to_string(), has_password(uri))),
        (None, _) => {}
    }
    file.or(env)
        .map(|text| text.trim().to_string())
        .filter(|uri| !uri.is_empty())
        .map(|uri| (uri, false))
        .ok_or_else(|| {
            anyhow!("no MongoDB URI: give one on the command line, with --mongo-uri-file PATH or in STRATA_MONGO_URI")
        })
}

/// Which snapshots `snapshots` and `mount` show, by host, tag and path.
#[derive(clap::Args)]
pub struct SnapshotFilterArgs {
    /// Only snapshots from this host
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all must match)
    #[arg(long = "path")]
    paths: Vec<String>,
}

impl SnapshotFilterArgs {
    /// The selection by these filters, of the snapshots `ids` (all when empty) and, with
    /// `latest`, the newest matching one.
    pub fn selection(
        &self,
        ids: Vec<strata::repo::id::SnapshotId>,
        latest: bool,
    ) -> strata::select::selection::Selection {
        strata::select::selection::Selection {
            ids,
            latest,
            host: self.host.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// A password read from `file`, else the environment variable `env`, else a prompt on a
/// terminal; `hint` says how to give one when there is no terminal to ask on.
pub fn read_password(file: Option<&Path>, env: &str, prompt: &str, hint: &str) -> Result<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading password file {}", file.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    if let Ok(p) = std::env::var(env) {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: {hint}, or run on a terminal");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

/// Exit codes (documented in README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    /// A fatal error: nothing (more) was done.
    Failed = 1,
    /// The work finished, but some items could not be read or written.
    Partial = 3,
    /// `scan` found missing or modified files.
    Differences = 4,
    /// Stopped by Ctrl-C or SIGTERM; the lock was released.
    Cancelled = 130,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o as u8)
    }
}

pub struct Context {
    pub args: GlobalArgs,
    /// Cancelled by the first Ctrl-C or SIGTERM (see [`Context::cancel_on_signals`]).
    pub cancel: Cancel,
}

impl Context {
    pub fn new(args: GlobalArgs) -> Context {
        Context {
            args,
            cancel: Cancel::default(),
        }
    }

    /// For a command that honours [`Context::cancel`] (`honoured`), the first Ctrl-C or
    /// SIGTERM cancels the running operation, which then stops at its next entry, chunk or
    /// pack and releases its lock; a second one exits at once. Any other command exits at
    /// the first, as if killed.
    pub fn cancel_on_signals(&self, honoured: bool) -> Result<()> {
        let cancel = self.cancel.clone();
        ctrlc::set_handler(move || {
            if !honoured || cancel.is_cancelled() {
                std::process::exit(Outcome::Cancelled as i32);
            }
            cancel.cancel();
        })
        .context("cannot handle Ctrl-C and SIGTERM")
    }

    /// The backend of `-r` (or `STRATA_REPOSITORY`) with the `-o` options.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let Some(location) = &self.args.repo else {
            bail!("no repository given: use -r/--repo or set STRATA_REPOSITORY");
        };
        self.backend_at(location)
    }

    /// The backend of any repository location, with the `-o` options.
    pub fn backend_at(&self, location: &str) -> Result<Arc<dyn Backend>> {
        Ok(strata::backend::open(location, &self.args.options)?)
    }

    /// The password from the file, the environment, or a prompt on a terminal.
    pub fn password(&self, prompt: &str) -> Result<String> {
        read_password(
            self.args.password_file.as_deref(),
            "STRATA_PASSWORD",
            prompt,
            "set STRATA_PASSWORD or STRATA_PASSWORD_FILE",
        )
    }

    pub fn open(&self) -> Result<Repository> {
        let password = self.password("enter password for repository: ")?;
        self.open_at(self.backend()?, &password)
    }

    /// Opens the repository in `backend` with `password` (`open` opens the one of `-r`).
    pub fn open_at(&self, backend: Arc<dyn Backend>, password: &str) -> Result<Repository> {
        let cache = self.cache();
        let repo = Repository::open_cached(backend, password.as_bytes(), cache.as_deref())?;
        for (name, reason) in repo.skipped_key_files() {
            self.warn(&format!("key file {name} was skipped: {reason}"));
        }
        Ok(repo)
    }

    pub fn open_indexed(&self) -> Result<IndexedRepo> {
        self.index(self.open()?)
    }

    /// Opens the repository to write (refused for formats this build only reads) and takes
    /// a lock for `command` before loading the index, so that an exclusive holder sees an
    /// index no one else is changing. Writing needs the two joined: `Locked::new`.
    pub fn open_locked(&self, mode: LockMode, command: &str) -> Result<(IndexedRepo, LockGuard)> {
        self.index_locked(self.open()?, mode, command)
    }

    /// The index of `repo`, opened to write as `open_locked` does.
    pub fn index_locked(
        &self,
        repo: Repository,
        mode: LockMode,
        command: &str,
    ) -> Result<(IndexedRepo, LockGuard)> {
        repo.ensure_writable()?;
        let guard = self.lock(&repo, mode, command)?;
        Ok((self.index(repo)?, guard))
    }

    /// Takes a lock on `repo` for `command`, waiting as `--retry-lock` says.
    pub fn lock(&self, repo: &Repository, mode: LockMode, command: &str) -> Result<LockGuard> {
        let wait = self.args.retry_lock.unwrap_or_default();
        let guard = repo.acquire_lock(mode, command, wait, self.cache().as_deref());
        guard.with_context(|| {
            format!("cannot {command} now (see `strata unlock` if its holder is gone)")
        })
    }

    /// For commands that only read: the index, and a shared lock unless `--no-lock` (held
    /// until the guard is dropped).
    pub fn open_reading(&self, command: &str) -> Result<(IndexedRepo, Option<LockGuard>)> {
        self.index_reading(self.open()?, command)
    }

    /// The index of `repo`, opened to read as `open_reading` does.
    pub fn index_reading(
        &self,
        repo: Repository,
        command: &str,
    ) -> Result<(IndexedRepo, Option<LockGuard>)> {
        let guard = match self.args.no_lock {
            true => None,
            false => Some(self.lock(&repo, LockMode::Shared, command)?),
        };
        Ok((self.index(repo)?, guard))
    }

    fn index(&self, repo: Repository) -> Result<IndexedRepo> {
        let repo = repo.open_index(self.cache().as_deref())?;
        for (name, reason) in &repo.damaged_index_files {
            self.warn(&format!(
                "index file {name} is unreadable and was skipped: {reason}"
            ));
        }
        Ok(repo)
    }

    /// The local cache directory, unless `--no-cache`.
    pub fn cache(&self) -> Option<PathBuf> {
        match self.args.no_cache {
            true => None,
            false => self.cache_dir(),
        }
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.args.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("strata"))
    }

    pub fn warn(&self, msg: &str) {
        eprintln!("strata: warning: {}", terminal_safe(msg));
    }

    /// Human-readable output, unless --json or --quiet.
    pub fn say(&self, text: &str) -> Result<()> {
        if !self.args.json && !self.args.quiet {
            writeln!(std::io::stdout().lock(), "{}", terminal_safe(text))?;
        }
        Ok(())
    }

    pub fn print_json(&self, value: &impl serde::Serialize) -> Result<()> {
        let mut out = std::io::stdout().lock();
        // Through io::Error, so a closed pipe stays recognisable (see `is_broken_pipe`).
        serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
        writeln!(out)?;
        Ok(())
    }

    /// A progress bar on stderr when it is a terminal and output is not quiet.
    pub fn progress(&self, what: &str) -> Box<dyn Observer> {
        if self.args.quiet || self.args.json || !std::io::stderr().is_terminal() {
            return Box::new(Quiet);
        }
        let bar = ProgressBar::no_length();
        bar.set_style(bar_style(false));
        bar.set_prefix(what.to_string());
        Box::new(Bar {
            bar,
            what: what.to_string(),
            follows_added: AtomicBool::new(false),
            files: AtomicU64::new(0),
        })
    }
}

/// An operation's observer drawn as a bar: the phase, bytes (read, or written when that is
/// what the operation announced a total of), files done and the item at hand.
struct Bar {
    bar: ProgressBar,
    what: String,
    /// The bar counts `bytes_added` rather than `bytes_read`.
    follows_added: AtomicBool,
    files: AtomicU64,
}

impl Bar {
    fn bytes(&self, c: &Counters) -> u64 {
        match self.follows_added.load(Ordering::Relaxed) {
            true => c.bytes_added,
            false => c.bytes_read,
        }
    }
}

/// Bytes done, and the total once it is known.
fn bar_style(with_total: bool) -> ProgressStyle {
    let template = match with_total {
        true => "{prefix} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise}] {wide_msg}",
        false => "{prefix} {bytes} {bytes_per_sec} [{elapsed_precise}] {wide_msg}",
    };
    ProgressStyle::with_template(template).expect("valid template")
}

impl Observer for Bar {
    fn phase(&self, phase: Phase) {
        self.bar
            .set_prefix(format!("{} {}", self.what, phase.name()));
    }
    fn total(&self, expected: Counters) {
        let follows_added = expected.bytes_added > 0;
        self.follows_added.store(follows_added, Ordering::Relaxed);
        self.bar.set_style(bar_style(true));
        self.bar.set_length(self.bytes(&expected));
    }
    fn add(&self, done: Counters) {
        self.bar.inc(self.bytes(&done));
        self.files.fetch_add(done.files, Ordering::Relaxed);
    }
    fn item(&self, name: &str) {
        let files = self.files.load(Ordering::Relaxed);
        self.bar.set_message(format!("{files} files  {name}"));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Text from the repository made safe for a terminal: control characters (newlines, ESC,
/// NUL…) are shown escaped, everything else as is. Borrows when there is nothing to escape,
/// which is almost always.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_controls(text, |_| false)
}

/// A whole message made safe for a terminal: like `escape`, but its line breaks are kept.
/// Everything `say`, `warn` and the final error print goes through it, so that a string
/// from the repository that a call site forgot to escape still cannot carry ESC.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    escape_controls(text, |c| c == '\n')
}

fn escape_controls(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && !keep(c);
    let Some(first) = text.find(unsafe_char) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match unsafe_char(c) {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A point in time as users type it: RFC 3339 (`2024-01-31T12:00:00Z`), or
/// `YYYY-MM-DD HH:MM[:SS]` / `YYYY-MM-DD` in the local time zone (as restic's `--time`).
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .ok_or_else(|| format!("{text:?} is not a time: use RFC 3339 or YYYY-MM-DD HH:MM:SS"))?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{text:?} does not exist in the local time zone"))
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::parse_time;
    #[test]
    fn times_parse_in_rfc3339_and_local_forms() {
        let utc = parse_time("2024-01-31T12:00:00Z").unwrap();
        assert_eq!(utc.to_rfc3339(), "2024-01-31T12:00:00+00:00");
        let offset = parse_time("2024-01-31T12:00:00+02:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2024-01-31T10:00:00+00:00");
        let local = parse_time("2024-01-31 12:00:00").unwrap();
        assert_eq!(local, parse_time("2024-01-31T12:00:00").unwrap());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn mongo_uri_comes_from_argv_then_file_then_environment_and_warns_only_for_argv() {
        use super::choose_mongo_uri as choose;
        let (secret, plain) = ("mongodb://u:pw@h:1", "mongodb://h:1");
        let file = || Some(format!("{secret}\n"));
        let env = || Some("mongodb://env:2".to_string());
        assert_eq!(
            choose(Some(secret), None, env()).unwrap(),
            (secret.into(), true)
        );
        assert_eq!(
            choose(Some(plain), None, env()).unwrap(),
            (plain.into(), false)
        );
        assert!(choose(Some(plain), file(), None).is_err(), "given twice");
        assert_eq!(choose(None, file(), env()).unwrap(), (secret.into(), false));
        assert_eq!(choose(None, None, env()).unwrap().0, "mongodb://env:2");
        let none = choose(None, Some(" \n".into()), None)
            .unwrap_err()
            .to_string();
        assert!(none.contains("--mongo-uri-file"), "{none}");
    }

    #[test]
    fn escape_shows_control_characters() {
        assert_eq!(
            super::escape("a\nb\u{1b}[31m\0ü"),
            "a\\nb\\u{1b}[31m\\u{0}ü"
        );
        assert!(matches!(
            super::escape("plain name"),
            std::borrow::Cow::Borrowed("plain name")
        ));
        assert_eq!(
            super::terminal_safe("two\nlines\u{1b}[2J\u{9b}"),
            "two\nlines\\u{1b}[2J\\u{9b}"
        );
    }
}
