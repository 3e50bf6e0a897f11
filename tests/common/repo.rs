//! `TestRepo`: a temporary directory holding a repository path, a cache
//! directory and scratch space, plus helpers to run the `strata` binary.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use tempfile::TempDir;

pub const DEFAULT_PASSWORD: &str = "correct horse";

/// Path of the `strata` binary built by cargo for integration tests.
pub fn strata_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

pub struct TestRepo {
    dir: TempDir,
    /// Password passed as `STRATA_PASSWORD`; change it to test wrong passwords.
    pub password: String,
    /// The repository location passed as `STRATA_REPOSITORY` (default: `repo_path()`), its
    /// backend options, passed as `-o KEY=VALUE` before every command's own arguments, and
    /// further environment variables (credentials of an object store).
    pub location: Option<String>,
    pub options: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl TestRepo {
    /// Fresh temp dir (under cargo's target tmpdir, not /tmp) with
    /// `cache/` and `scratch/` created; `repo/` is not created.
    pub fn new() -> TestRepo {
        let dir = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create temp dir");
        for sub in ["cache", "scratch"] {
            fs::create_dir(dir.path().join(sub)).expect("create temp subdir");
        }
        TestRepo {
            dir,
            password: DEFAULT_PASSWORD.to_string(),
            location: None,
            options: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn repo_path(&self) -> PathBuf {
        self.path().join("repo")
    }

    pub fn cache_path(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// The repository's location as `STRATA_REPOSITORY` gives it: `location`, else
    /// `repo_path()`.
    pub fn location(&self) -> std::ffi::OsString {
        match &self.location {
            Some(location) => location.into(),
            None => self.repo_path().into(),
        }
    }

    /// Another client of this repository, as on another machine: the same location,
    /// password and environment, with a temporary directory (cache, scratch) of its own.
    pub fn another_client(&self) -> TestRepo {
        let mut other = TestRepo::new();
        other.location = Some(self.location().into_string().expect("a UTF-8 location"));
        other.password = self.password.clone();
        other.env = self.env.clone();
        other
    }

    /// A fresh, empty `scratch/<name>` directory (recreated if it existed).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.path().join("scratch").join(name);
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("remove {p:?}: {e}"));
        }
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        p
    }

    /// A `strata` command with the repo/password/cache environment set,
    /// every other `STRATA_*` variable removed and stdin closed.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(strata_bin());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("STRATA_PASSWORD_FILE")
            .env("STRATA_REPOSITORY", self.location())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("STRATA_PASSWORD", &self.password)
            .env("STRATA_CACHE_DIR", self.cache_path())
            .stdin(Stdio::null());
        for (key, value) in &self.options {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd.args(args);
        cmd
    }

    /// Run to completion, capturing stdout and stderr.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd(&mut self.cmd(args))
    }

    /// Run and assert exit code 0 (panic shows the command and its output).
    pub fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_checked(args, "command failed", ExitStatus::success)
    }

    /// Run and assert a non-zero exit (not a signal); returns the output.
    pub fn fail<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_checked(args, "expected a clean failure", |status| {
            !status.success() && status.code().is_some()
        })
    }

    /// Run and panic with `expected`, the command and its output unless
    /// `accept` holds for the exit status.
    pub fn run_checked<I, S>(
        &self,
        args: I,
        expected: &str,
        accept: impl Fn(&ExitStatus) -> bool,
    ) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd(args);
        let out = run_cmd(&mut cmd);
        if !accept(&out.status) {
            panic!("{expected}: {}", describe(&cmd, &out));
        }
        out
    }

    /// `ok(args + ["--json"])` and parse stdout as JSON.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        all.push("--json".into());
        stdout_json(&self.ok(&all), &all)
    }

    /// `strata init`.
    pub fn init(&self) {
        self.ok(["init"]);
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        TestRepo::new()
    }
}

fn run_cmd(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// The command line, exit status, stdout and stderr, for panic messages.
pub fn describe(cmd: &Command, out: &Output) -> String {
    let args: Vec<&OsStr> = cmd.get_args().collect();
    format!(
        "strata {args:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout parsed as JSON; panics naming `what` (the command) and showing
/// stdout and stderr otherwise.
pub fn stdout_json(out: &Output, what: impl Debug) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of {what:?} is not JSON ({e}):\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// stdout as a (lossy) String.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as a (lossy) String.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
