//! What the object-store test servers (moto, fake-gcs-server, Azurite) share: the program
//! that `.ci/setup` installed (or the one an environment variable names), a free port of
//! 127.0.0.1, a process that logs to a temp dir, dies with the tests and is stopped when
//! dropped, a bounded wait until it answers, plain HTTP/1.1 requests to make buckets, and
//! the test repository of a location with its `-o` options and credentials, and the round
//! trip that every store runs.
use super::TestRepo;
use super::e2e::{FAST_INIT, restores_exactly, snapshot_ids};
use super::tree::generate_small_tree;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::backend::{self, Backend, Kind};

/// How long a test server may take to answer after it was started.
const PATIENCE: Duration = Duration::from_secs(60);

/// `$env_var`, else `default` below `$STRATA_TEST_CACHE` (else `~/.cache/strata-test`),
/// asserted to exist; the message names `what` and how `.ci/setup` installs it.
pub fn installed(env_var: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("STRATA_TEST_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").expect("HOME is set");
                    PathBuf::from(home).join(".cache/strata-test")
                });
            cache.join(default)
        });
    assert!(
        path.exists(),
        "the {what} {path:?} is missing: run .ci/setup (it installs it) or set {env_var}"
    );
    path
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A test server's process, listening on `port` of 127.0.0.1, with a temp dir for its
/// data and its log; killed when dropped.
pub struct Process {
    child: Child,
    dir: tempfile::TempDir,
    name: &'static str,
    pub port: u16,
}

impl Process {
    /// Starts `program` with the arguments `args(port, dir)` and `env`, and waits until its
    /// port takes connections.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: impl FnOnce(u16, &Path) -> Vec<OsString>,
        env: &[(&str, &str)],
    ) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(args(port, dir.path()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        super::mongo::dies_with_the_tests(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({program:?}): {e}"));
        let mut process = Process {
            child,
            dir,
            name,
            port,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} did not answer within {PATIENCE:?}; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The server's temp dir, for data it keeps on disk.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request to the server: see [`request`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        request(self.port, method, path, headers, body)
    }
}

/// One HTTP/1.1 request to `port` of 127.0.0.1 (`Host`, `Content-Length` and `Connection:
/// close` added), answered with its status code and the whole answer as text.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("receive");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = (answer.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {answer:?}"));
    (status, answer)
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test repository at `location`, opened with the backend `options` (`-o KEY=VALUE`)
/// and the environment `env` (credentials).
pub fn repo_at(location: String, options: Vec<(String, String)>, env: &[(&str, &str)]) -> TestRepo {
    let mut repo = TestRepo::new();
    repo.location = Some(location);
    repo.options = options;
    repo.env = (env.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    repo
}

/// An object-store test server, as the tests that every store runs use it.
pub trait StoreServer {
    /// Starts one and waits until it answers.
    fn start() -> Self
    where
        Self: Sized;

    /// Makes a bucket (a container on Azure).
    fn create_bucket(&self, bucket: &str);

    /// The location of `prefix` in `bucket` on this server.
    fn location(&self, bucket: &str, prefix: &str) -> String;

    /// The backend options (`-o KEY=VALUE`) that reach this server.
    fn options(&self) -> Vec<(String, String)>;

    /// The environment that gives a client its credentials.
    fn credentials(&self) -> &'static [(&'static str, &'static str)];

    fn log(&self) -> String;

    /// A test repository at `prefix` in `bucket`, with the options and credentials.
    fn repo(&self, bucket: &str, prefix: &str) -> TestRepo {
        repo_at(
            self.location(bucket, prefix),
            self.options(),
            self.credentials(),
        )
    }

    /// The backend of `prefix` in `bucket`, opened in this process (see
    /// [`credentials_in_env`]).
    fn open(&self, bucket: &str, prefix: &str) -> Arc<dyn Backend> {
        credentials_in_env(self.credentials());
        let location = self.location(bucket, prefix);
        backend::open(&location, &self.options())
            .unwrap_or_else(|e| panic!("open {location}: {e}\nthe server's log:\n{}", self.log()))
    }
}

/// Puts a test server's credentials into this process's environment, where in-process
/// `backend::open` reads them; each variable once, so call it before the calling test
/// starts threads of its own.
pub fn credentials_in_env(vars: &[(&str, &str)]) {
    static SET: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut set = SET.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in vars {
        if !set.iter().any(|done| done == k) {
            // SAFETY: set once, to the value every test of the binary expects, while no
            // thread of this process calls C code that reads the environment.
            unsafe { std::env::set_var(k, v) };
            set.push(k.to_string());
        }
    }
}

/// The round trip through the binary on a fresh repository `repo` at `hosts/one` of a
/// bucket, whose backend at another prefix `open` gives: init, a backup, a second one,
/// restore bit-exact, check --read-data, forget --keep-last 1 --prune, check --read-data
/// again and restore again; and the objects lie below the prefix as repo-format.md says.
/// Returns the source (whose `d0/new.txt` only the second backup has) and the snapshot kept.
pub fn round_trip(repo: &TestRepo, open: impl Fn(&str) -> Arc<dyn Backend>) -> (PathBuf, String) {
    repo.ok(FAST_INIT);
    let src = repo.scratch("src");
    generate_small_tree(&src, 15, 300);
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    std::fs::write(src.join("d0/new.txt"), b"a second backup").unwrap();
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    let ids = snapshot_ids(repo);
    assert_eq!(ids.len(), 2);

    restores_exactly(repo, "latest", &src, "target");
    repo.ok(["check", "--read-data"]);

    repo.ok(["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(snapshot_ids(repo), vec![ids[1].clone()]);
    repo.ok(["check", "--read-data"]);
    restores_exactly(repo, &ids[1], &src, "again");

    // The objects are where repo-format.md puts them, below the prefix.
    let store = open("hosts/one");
    assert_eq!(store.list(Kind::Config).unwrap().len(), 1);
    assert_eq!(store.list(Kind::Key).unwrap().len(), 1);
    assert_eq!(store.list(Kind::Snapshot).unwrap().len(), 1);
    assert!(store.list(Kind::Lock).unwrap().is_empty());
    assert!(!store.list(Kind::Pack).unwrap().is_empty());
    assert!(open("hosts/two").list(Kind::Config).unwrap().is_empty());
    (src, ids[1].clone())
}
