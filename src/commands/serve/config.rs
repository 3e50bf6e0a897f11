//! The service's configuration file: its TOML form, and the checks that make a bad file fail
//! at start with the file, line, column and field of the mistake.
use super::schedule::{Schedule, Zone};
use crate::commands::forget::PolicyArgs;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API.
    #[serde(default = "default_listen")]
    pub listen: Spanned<SocketAddr>,
    /// The service database (state, history, tokens, audit log) and the repositories' cache.
    pub state_dir: PathBuf,
    /// `/metrics` answers without a token.
    #[serde(default)]
    pub metrics_open: bool,
    /// After this many failed authentications from one address within a minute, its
    /// requests are refused (429) until a minute has passed since its last failure.
    #[serde(default = "default_auth_lockout_after")]
    pub auth_lockout_after: u32,
    /// PEM certificate chain and private key: the API is then served over TLS only.
    pub tls_certificate: Option<Spanned<PathBuf>>,
    pub tls_key: Option<Spanned<PathBuf>>,
    /// Operations kept in the history, at most this many days.
    #[serde(default = "default_history_days")]
    pub history_days: u32,
    /// Operations kept in the history, at most this many.
    #[serde(default = "default_history_max")]
    pub history_max: u32,
    /// Log lines kept per operation.
    #[serde(default = "default_log_lines")]
    pub log_lines: u32,
    #[serde(default, rename = "repository")]
    pub repositories: Vec<Repository>,
    #[serde(default, rename = "plan")]
    pub plans: Vec<Plan>,
    #[serde(default, rename = "job")]
    pub jobs: Vec<Job>,
    #[serde(default, rename = "notify")]
    pub notify: Vec<Notify>,
    #[serde(default, rename = "follower")]
    pub followers: Vec<Follower>,
}

fn default_listen() -> Spanned<SocketAddr> {
    Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 8420)))
}

fn default_auth_lockout_after() -> u32 {
    20
}

fn default_history_days() -> u32 {
    90
}

fn default_history_max() -> u32 {
    10_000
}

fn default_log_lines() -> u32 {
    1_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: Spanned<String>,
    /// Any location `-r` accepts.
    pub location: Spanned<String>,
    /// Backend options, as `-o KEY=VALUE` gives them.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub password_env: Option<Spanned<String>>,
    pub password_command: Option<Spanned<String>>,
    /// How long an operation waits for another's conflicting lock (`--retry-lock`).
    #[serde(default = "default_retry_lock", with = "duration_text")]
    pub retry_lock: Duration,
}

fn default_retry_lock() -> Duration {
    Duration::from_secs(3600)
}

/// What to do at start about a run that fell due while the service was not running.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    #[default]
    Skip,
    RunOnce,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: Spanned<String>,
    pub repository: Spanned<String>,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub excludes: Vec<String>,
    /// A MongoDB server backed up into `/mongodb` of the same snapshot.
    pub mongo: Option<MongoSource>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshots (default: this machine's).
    pub host: Option<String>,
    pub schedule: Schedule,
    /// `local`, `UTC`, an offset or an IANA name (`Europe/Paris`); `timezone` also reads.
    #[serde(default, alias = "timezone")]
    pub time_zone: Zone,
    /// The `forget` options applied after each backup; none keeps every snapshot.
    pub retention: Option<PolicyArgs>,
    #[serde(default)]
    pub missed: Missed,
    pub before: Option<Hook>,
    pub after: Option<Hook>,
    /// A `stale` alert when no run succeeded for this many schedule intervals.
    #[serde(default = "default_stale_after")]
    pub stale_after: f64,
}

fn default_stale_after() -> f64 {
    3.0
}

/// A command run through `sh -c` before or after a plan's run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub command: String,
    #[serde(default = "default_hook_timeout", with = "duration_text")]
    pub timeout: Duration,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Check,
    Prune,
}

/// A repository's own job: `check` or `prune` on a schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: Spanned<String>,
    pub repository: Spanned<String>,
    pub kind: JobKind,
    pub schedule: Schedule,
    /// `local`, `UTC`, an offset or an IANA name (`Europe/Paris`); `timezone` also reads.
    #[serde(default, alias = "timezone")]
    pub time_zone: Zone,
    /// check: `n/m` or `N%`, as `--read-data-subset` takes.
    pub read_data_subset: Option<Spanned<String>>,
    /// prune: as `--max-unused`.
    #[serde(default = "default_max_unused")]
    pub max_unused: f64,
}

fn default_max_unused() -> f64 {
    20.0
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A plan's run failed or was partial.
    Failure,
    /// A plan had no success for `stale_after` intervals.
    Stale,
    /// A `check` job found damage.
    Damage,
    /// A follower's archive is further behind its server than its `lag_alert`.
    FollowerLag,
    /// A follower recorded a gap: the oplog rolled over before it was archived.
    FollowerGap,
}

/// A notification target: a webhook, or a command given each alert on its standard input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub name: Spanned<String>,
    pub webhook: Option<Spanned<String>>,
    /// Run through `sh -c` with the alert's JSON on stdin and `STRATA_EVENT`, `STRATA_PLAN`,
    /// `STRATA_REPOSITORY` and `STRATA_TEXT` set; a delivery fails on a non-zero exit.
    pub command: Option<Spanned<String>>,
    /// How long the command may run before it is killed (the delivery then fails).
    #[serde(default = "default_notify_timeout", with = "duration_text")]
    pub timeout: Duration,
    pub events: Vec<Event>,
}

/// A plan's MongoDB source: the server (`uri`, `uri_file` or `uri_env`, see [`MongoUri`])
/// and which namespaces (`backup --mongo-db`, `--ns-include`, `--ns-exclude`,
/// `--mongo-users`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSource {
    pub uri: Option<Spanned<String>>,
    pub uri_file: Option<Spanned<PathBuf>>,
    pub uri_env: Option<Spanned<String>>,
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub users: bool,
    /// `backup --full-every`: every Nth dump of a chain is full (0: no bound).
    pub full_every: Option<u32>,
    /// `backup --max-oplog-percent`.
    pub max_oplog_percent: Option<u32>,
}

/// A continuous `mongo follow` of one server into one repository.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Follower {
    pub name: Spanned<String>,
    pub repository: Spanned<String>,
    pub uri: Option<Spanned<String>>,
    pub uri_file: Option<Spanned<PathBuf>>,
    pub uri_env: Option<Spanned<String>>,
    /// Oplog time one slice covers at most (`mongo follow --slice`).
    #[serde(default = "default_slice", with = "duration_text")]
    pub slice: Duration,
    /// Host name recorded in the slices (default: this machine's).
    pub host: Option<String>,
    /// A `follower_lag` alert when the archive is further behind the server than this.
    #[serde(default, with = "optional_duration_text")]
    pub lag_alert: Option<Duration>,
}

fn default_slice() -> Duration {
    Duration::from_secs(600)
}

/// Where a MongoDB URI comes from: exactly one of the configuration itself, a file or an
/// environment variable. Its password is never shown (see `mongo::redact`).
pub struct MongoUri<'a> {
    uri: Option<&'a Spanned<String>>,
    file: Option<&'a Spanned<PathBuf>>,
    env: Option<&'a Spanned<String>>,
}

impl MongoSource {
    pub fn uri(&self) -> MongoUri<'_> {
        MongoUri {
            uri: self.uri.as_ref(),
            file: self.uri_file.as_ref(),
            env: self.uri_env.as_ref(),
        }
    }

    /// The namespaces to back up.
    pub fn filter(&self) -> strata::sources::mongodb::NsFilter {
        strata::sources::mongodb::NsFilter {
            databases: self.databases.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

fn default_notify_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Where a target's alerts go.
#[derive(Clone, Debug)]
pub enum Target {
    Webhook(String),
    Command { command: String, timeout: Duration },
}

impl Notify {
    pub fn target(&self) -> Target {
        match (&self.webhook, &self.command) {
            (Some(url), _) => Target::Webhook(url.get_ref().clone()),
            (None, command) => Target::Command {
                command: command
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_default(),
                timeout: self.timeout,
            },
        }
    }

    fn validate(&self, src: &Source) -> Result<(), ConfigError> {
        match (&self.webhook, &self.command) {
            (Some(url), None) => {
                let text = url.get_ref();
                match text.starts_with("http://") || text.starts_with("https://") {
                    true => Ok(()),
                    false => {
                        Err(src.field(url, "webhook", "not an http:// or https:// URL".to_string()))
                    }
                }
            }
            (None, Some(_)) => Ok(()),
            _ => {
                let message = format!(
                    "notify {:?}: give exactly one of webhook and command",
                    self.name.get_ref()
                );
                Err(src.error(self.name.span(), message))
            }
        }
    }
}

impl Follower {
    pub fn uri(&self) -> MongoUri<'_> {
        MongoUri {
            uri: self.uri.as_ref(),
            file: self.uri_file.as_ref(),
            env: self.uri_env.as_ref(),
        }
    }
}

impl MongoUri<'_> {
    /// Checks that exactly one source is given and can be read; errors point at `owner`'s
    /// name when none is.
    fn validate(
        &self,
        src: &Source,
        what: &str,
        owner: &Spanned<String>,
    ) -> Result<(), ConfigError> {
        let given = [
            self.uri.map(|u| u.span()),
            self.file.map(|f| f.span()),
            self.env.map(|e| e.span()),
        ];
        let spans: Vec<_> = given.into_iter().flatten().collect();
        if spans.len() != 1 {
            let message = format!("{what}: give exactly one of uri, uri_file and uri_env");
            let at = spans.get(1).cloned().unwrap_or(owner.span());
            return Err(src.error(at, message));
        }
        if let Some(file) = self.file
            && let Err(e) = std::fs::metadata(file.get_ref())
        {
            let message = format!("cannot read {}: {e}", file.get_ref().display());
            return Err(src.field(file, &format!("{what}: uri_file"), message));
        }
        if let Some(var) = self.env
            && std::env::var_os(var.get_ref()).is_none()
        {
            let message = format!("the environment variable {} is not set", var.get_ref());
            return Err(src.field(var, &format!("{what}: uri_env"), message));
        }
        Ok(())
    }

    /// The URI, read now from its one source.
    pub fn read(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let text = match (self.uri, self.file, self.env) {
            (Some(uri), _, _) => uri.get_ref().clone(),
            (_, Some(file), _) => std::fs::read_to_string(file.get_ref()).with_context(|| {
                format!("reading the MongoDB URI file {}", file.get_ref().display())
            })?,
            (_, _, Some(var)) => std::env::var(var.get_ref()).with_context(|| {
                format!("the environment variable {} is not set", var.get_ref())
            })?,
            _ => anyhow::bail!("no MongoDB URI is configured"),
        };
        Ok(text.trim().to_string())
    }
}

/// Optional durations written as `30s`, `10m`, `1h`.
mod optional_duration_text {
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_text::deserialize(d).map(Some)
    }
}

/// Durations written as `30s`, `10m`, `1h`.
mod duration_text {
    use serde::Deserialize;
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// The file being checked, to turn byte spans into line and column.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::At {
            file: self.file.display().to_string(),
            line,
            column,
            message,
        }
    }

    /// A TOML error at `span`, its message prefixed with the key whose value the span is in
    /// (`schedule: invalid cron pattern …`), when it is in one.
    fn parse_error(&self, span: std::ops::Range<usize>, message: &str) -> ConfigError {
        let at = span.start.min(self.text.len());
        let line_start = self.text[..at].rfind('\n').map_or(0, |i| i + 1);
        let key = (self.text[line_start..at].rsplit_once('=')).map(|(before, _)| {
            let before = before.trim_end();
            let start = before
                .rfind(|c: char| !(c.is_alphanumeric() || "_-.\"".contains(c)))
                .map_or(0, |i| i + 1);
            before[start..].trim_matches('"')
        });
        match key {
            Some(key) if !key.is_empty() => self.error(span, format!("{key}: {message}")),
            _ => self.error(span, message.to_string()),
        }
    }

    fn field<T>(&self, value: &Spanned<T>, what: &str, message: String) -> ConfigError {
        self.error(value.span(), format!("{what}: {message}"))
    }
}

impl Config {
    /// Reads and checks `file`: syntax, unknown fields, schedules, names and references,
    /// password sources. Repositories are not opened (see `serve::preflight`).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.display().to_string(),
            source,
        })?;
        let src = Source { file, text: &text };
        let config: Config = toml::from_str(&text)
            .map_err(|e| src.parse_error(e.span().unwrap_or(0..0), e.message()))?;
        config.validate(&src)?;
        Ok(config)
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.iter().find(|r| *r.name.get_ref() == name)
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| *p.name.get_ref() == name)
    }

    /// The TLS certificate and key files, when both are given.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        let cert = self.tls_certificate.as_ref()?;
        let key = self.tls_key.as_ref()?;
        Some((cert.get_ref(), key.get_ref()))
    }

    fn validate_tls(&self, src: &Source) -> Result<(), ConfigError> {
        match (&self.tls_certificate, &self.tls_key) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(one), None) | (None, Some(one)) => {
                let message = "give both tls_certificate and tls_key, or neither".to_string();
                return Err(src.error(one.span(), message));
            }
        }
        for (file, what) in [
            (&self.tls_certificate, "tls_certificate"),
            (&self.tls_key, "tls_key"),
        ] {
            if let Some(file) = file
                && let Err(e) = std::fs::metadata(file.get_ref())
            {
                let message = format!("cannot read {}: {e}", file.get_ref().display());
                return Err(src.field(file, what, message));
            }
        }
        Ok(())
    }

    fn validate(&self, src: &Source) -> Result<(), ConfigError> {
        self.validate_tls(src)?;
        unique(
            src,
            self.repositories.iter().map(|r| &r.name),
            "[[repository]] name",
        )?;
        unique(src, self.plans.iter().map(|p| &p.name), "[[plan]] name")?;
        unique(src, self.jobs.iter().map(|j| &j.name), "[[job]] name")?;
        unique(src, self.notify.iter().map(|n| &n.name), "[[notify]] name")?;
        unique(
            src,
            self.followers.iter().map(|f| &f.name),
            "[[follower]] name",
        )?;
        for f in &self.followers {
            self.known_repository(src, &f.repository, "follower", &f.name)?;
            let what = format!("follower {:?}", f.name.get_ref());
            f.uri().validate(src, &what, &f.name)?;
        }
        for r in &self.repositories {
            r.validate(src)?;
        }
        for p in &self.plans {
            self.known_repository(src, &p.repository, "plan", &p.name)?;
            if p.paths.is_empty() && p.mongo.is_none() {
                let message = format!(
                    "plan {:?}: paths: give at least one path, or a mongo source",
                    p.name.get_ref()
                );
                return Err(src.error(p.name.span(), message));
            }
            if let Some(mongo) = &p.mongo {
                let what = format!("plan {:?}: mongo", p.name.get_ref());
                mongo.uri().validate(src, &what, &p.name)?;
            }
        }
        for j in &self.jobs {
            self.known_repository(src, &j.repository, "job", &j.name)?;
            if let Some(subset) = &j.read_data_subset {
                strata::ops::checker::ReadData::parse(subset.get_ref())
                    .map_err(|e| src.field(subset, "read_data_subset", e.to_string()))?;
            }
        }
        for n in &self.notify {
            n.validate(src)?;
        }
        Ok(())
    }

    fn known_repository(
        &self,
        src: &Source,
        repository: &Spanned<String>,
        what: &str,
        name: &Spanned<String>,
    ) -> Result<(), ConfigError> {
        match self.repository(repository.get_ref()) {
            Some(_) => Ok(()),
            None => Err(src.field(
                repository,
                &format!("{what} {:?}: repository", name.get_ref()),
                format!("no [[repository]] is named {:?}", repository.get_ref()),
            )),
        }
    }
}

fn unique<'a>(
    src: &Source,
    names: impl Iterator<Item = &'a Spanned<String>>,
    what: &str,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if name.get_ref().is_empty() {
            return Err(src.field(name, what, "must not be empty".to_string()));
        }
        if !seen.insert(name.get_ref()) {
            return Err(src.field(name, what, format!("{:?} is used twice", name.get_ref())));
        }
    }
    Ok(())
}

impl Repository {
    fn validate(&self, src: &Source) -> Result<(), ConfigError> {
        let what = format!("repository {:?}", self.name.get_ref());
        let given = [
            self.password_file.is_some(),
            self.password_env.is_some(),
            self.password_command.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            let message = format!(
                "{what}: give exactly one of password_file, password_env and password_command"
            );
            return Err(src.error(self.name.span(), message));
        }
        if let Some(file) = &self.password_file
            && let Err(e) = std::fs::metadata(file.get_ref())
        {
            let message = format!("cannot read {}: {e}", file.get_ref().display());
            return Err(src.field(file, &format!("{what}: password_file"), message));
        }
        if let Some(var) = &self.password_env
            && std::env::var_os(var.get_ref()).is_none()
        {
            let message = format!("the environment variable {} is not set", var.get_ref());
            return Err(src.field(var, &format!("{what}: password_env"), message));
        }
        Ok(())
    }

    /// The password, from the one source the file gives.
    pub fn password(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        if let Some(file) = &self.password_file {
            let hint = "the password file";
            return crate::commands::read_password(Some(file.get_ref()), "", "", hint);
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var.get_ref())
                .with_context(|| format!("the environment variable {} is not set", var.get_ref()));
        }
        let command = self.password_command.as_ref().map(|c| c.get_ref().as_str());
        let output = std::process::Command::new("sh")
            .args(["-c", command.unwrap_or("false")])
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running password_command")?;
        anyhow::ensure!(
            output.status.success(),
            "password_command failed: {}",
            output.status
        );
        let text =
            String::from_utf8(output.stdout).context("password_command printed non-UTF-8")?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Where in the file this repository's location is, for errors found when opening it.
    pub fn location_error(&self, file: &Path, message: String) -> ConfigError {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let src = Source { file, text: &text };
        let what = format!("repository {:?}: location", self.name.get_ref());
        src.field(&self.location, &what, message)
    }
}
