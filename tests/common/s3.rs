//! S3 test servers: moto (`moto_server` from the virtualenv that `.ci/setup` installs, found
//! through `$STRATA_MOTO_BIN` or the default path) on a free port of 127.0.0.1, stopped
//! when dropped, with buckets made by a plain HTTP PUT. Moto accepts any credentials,
//! except a server started by [`Moto::checking_credentials`].
use super::TestRepo;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials and region for the test server (any are accepted), and nothing of the
/// caller's own AWS configuration.
pub const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "strata-test"),
    ("AWS_SECRET_ACCESS_KEY", "strata-test-secret"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

fn moto_bin() -> PathBuf {
    let path = std::env::var_os("STRATA_MOTO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("STRATA_TEST_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").expect("HOME is set");
                    PathBuf::from(home).join(".cache/strata-test")
                });
            cache.join("moto-venv/bin/moto_server")
        });
    assert!(
        path.exists(),
        "the S3 test server {path:?} is missing: run .ci/setup (it installs moto into a \
         virtualenv) or set STRATA_MOTO_BIN to moto_server"
    );
    path
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A moto server of one test, stopped when dropped.
pub struct Moto {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// A server that accepts one unsigned request (to create a bucket), then checks every
    /// request's credentials against its own (empty) IAM, refusing all with 403.
    pub fn checking_credentials() -> Moto {
        Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")])
    }

    fn start_with(env: &[(&str, &str)]) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("moto-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let mut cmd = Command::new(moto_bin());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        super::mongo::dies_with_the_tests(&mut cmd);
        let child = cmd.spawn().expect("start moto_server");
        let moto = Moto { child, dir, port };
        moto.wait_ready();
        moto
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not answer within 60 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Creates `bucket` (a plain PUT: moto does not ask for a signature).
    pub fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("receive");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {answer}"
        );
    }

    /// The location of `bucket/prefix` on this server.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:http://127.0.0.1:{}/{bucket}/{prefix}", self.port)
    }

    /// A test repository at `bucket/prefix` on this server, with its credentials.
    pub fn repo(&self, bucket: &str, prefix: &str) -> TestRepo {
        let mut repo = TestRepo::new();
        repo.location = Some(self.location(bucket, prefix));
        repo.env = CREDENTIALS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        repo
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts the test server's [`CREDENTIALS`] into this process's environment, where
/// `strata::backend::open` reads them, once, before the calling test starts any thread of
/// its own.
pub fn credentials_in_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in CREDENTIALS {
            // SAFETY: set once, to the same values every test expects, while no thread of
            // this process calls C code that reads the environment.
            unsafe { std::env::set_var(k, v) };
        }
    });
}
