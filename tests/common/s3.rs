//! S3 test servers: moto (`moto_server` from the virtualenv that `.ci/setup` installs, found
//! through `$STRATA_MOTO_BIN` or the default path) on a free port of 127.0.0.1, stopped
//! when dropped, with buckets made by a plain HTTP PUT. Moto accepts any credentials,
//! except a server started by [`Moto::checking_credentials`].
use super::TestRepo;
use super::server::{Process, installed, repo_at};

pub use super::server::free_port;

/// Credentials and region for the test server (any are accepted), and nothing of the
/// caller's own AWS configuration.
pub const CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "strata-test"),
    ("AWS_SECRET_ACCESS_KEY", "strata-test-secret"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

/// A moto server of one test, stopped when dropped.
pub struct Moto {
    server: Process,
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
        let bin = installed(
            "STRATA_MOTO_BIN",
            "moto-venv/bin/moto_server",
            "S3 test server (moto_server)",
        );
        let args = |port: u16, _: &std::path::Path| {
            vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string().into(),
            ]
        };
        let server = Process::start("moto", &bin, args, env);
        Moto {
            port: server.port,
            server,
        }
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Creates `bucket` (a plain PUT: moto does not ask for a signature).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, answer) = self.server.request("PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(status, 200, "create bucket {bucket}: {answer}");
    }

    /// The location of `bucket/prefix` on this server.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:{}/{bucket}/{prefix}", self.server.url())
    }

    /// A test repository at `bucket/prefix` on this server, with its credentials.
    pub fn repo(&self, bucket: &str, prefix: &str) -> TestRepo {
        repo_at(self.location(bucket, prefix), Vec::new(), &CREDENTIALS)
    }
}
