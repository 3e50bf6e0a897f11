//! The `strata serve` test harness: a repository, a source tree and a configuration file
//! (`Setup`), the service started on a free port of 127.0.0.1 and driven by a blocking
//! `reqwest` client (`Server`, killed when dropped), and a webhook receiver.
use super::e2e::*;
use super::server::free_port;
use super::*;
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for anything the service does (start, a run, a stop).
pub const PATIENCE: Duration = Duration::from_secs(90);
/// The bound the README gives for SIGTERM, plus the time to notice the exit.
pub const STOP_BOUND: Duration = Duration::from_secs(35);

/// A repository, a source tree and a configuration file for `strata serve`.
pub struct Setup {
    pub repo: TestRepo,
    pub src: PathBuf,
    pub port: u16,
    pub config: PathBuf,
}

impl Setup {
    /// A repository with a small source tree; `plan` is the `[[plan]]` table's extra keys.
    pub fn new(plan: &str) -> Setup {
        let (repo, src) = init_with_src();
        generate_small_tree(&src, 11, 20);
        let pw = repo.path().join("repo.pw");
        fs::write(&pw, format!("{}\n", repo.password)).unwrap();
        let port = free_port();
        let config = repo.path().join("strata.toml");
        let setup = Setup {
            repo,
            src,
            port,
            config,
        };
        setup.write_config(plan, "");
        setup
    }

    pub fn write_config(&self, plan: &str, extra: &str) {
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"

[[repository]]
name = "main"
location = "{location}"
password_file = "{pw}"
retry_lock = "30s"

[[plan]]
name = "app"
repository = "main"
paths = ["{src}"]
{plan}
{extra}"#,
            port = self.port,
            state = self.repo.path().join("state").display(),
            location = self.repo.repo_path().display(),
            pw = self.repo.path().join("repo.pw").display(),
            src = self.src.display(),
        );
        fs::write(&self.config, text).unwrap();
    }

    /// `strata serve ARGS --config FILE`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.repo.cmd(["serve"]);
        cmd.args(args).arg("--config").arg(&self.config);
        cmd
    }

    pub fn token(&self, name: &str, role: &str) -> String {
        let out = self
            .cmd(&["token", "create", "--name", name, "--role", role])
            .output()
            .unwrap();
        assert!(out.status.success(), "token create: {}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 1, "the token alone: {text:?}");
        text.trim().to_string()
    }

    pub fn start(&self) -> Server {
        self.start_with("http", Client::builder())
    }

    /// Starts the service and waits until `scheme://127.0.0.1:PORT/api/v1/health` answers
    /// to a client made by `client` (made before the process, so that nothing can fail
    /// between starting it and owning it).
    pub fn start_with(&self, scheme: &str, client: reqwest::blocking::ClientBuilder) -> Server {
        // reqwest is built without a TLS provider of its own (the service brings rustls
        // with ring), and a client needs one even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = client.timeout(PATIENCE).build().unwrap();
        let log = self.repo.path().join(format!("serve-{}.log", now_nanos()));
        let child = self
            .cmd(&[])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            log,
            base: format!("{scheme}://127.0.0.1:{}", self.port),
            client,
        };
        server.wait_healthy();
        server
    }

    pub fn locks_left(&self) -> usize {
        fs::read_dir(self.repo.repo_path().join("locks"))
            .unwrap()
            .count()
    }
}

/// A file holding `uri`, for `uri_file`.
pub fn uri_file(repo: &TestRepo, name: &str, uri: &str) -> String {
    let file = repo.path().join(name);
    fs::write(&file, format!("{uri}\n")).unwrap();
    file.display().to_string()
}

/// A `[[follower]]` table.
pub fn follower(name: &str, uri_file: &str, extra: &str) -> String {
    format!(
        "[[follower]]\nname = \"{name}\"\nrepository = \"main\"\nuri_file = \"{uri_file}\"\n\
         slice = \"1s\"\n{extra}\n"
    )
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A running `strata serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub log: PathBuf,
    pub base: String,
    pub client: Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.client.get(self.url("/api/v1/health")).send();
            if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            let exited = self.child_exited();
            assert!(
                !exited && Instant::now() < deadline,
                "the service did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn child_exited(&self) -> bool {
        // SAFETY-free check through /proc: the child is ours and not yet reaped.
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> Response {
        self.send(method, path, token, None)
    }

    /// A request with `body` as JSON, if any.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().unwrap()
    }

    /// `send`, asserting the status; the answer's JSON (null when it is none).
    pub fn json_with(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &Value,
        want: StatusCode,
    ) -> Value {
        let r = self.send(method, path, Some(token), Some(body));
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(
            status,
            want,
            "{method} {path} {body}: {text}\n{}",
            self.log()
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub fn json(&self, method: &str, path: &str, token: &str, want: StatusCode) -> Value {
        let r = self.request(method, path, Some(token));
        let status = r.status();
        let body = r.text().unwrap();
        assert_eq!(status, want, "{method} {path}: {body}\n{}", self.log());
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// The follower `name` as `GET /api/v1/followers` shows it.
    pub fn follower(&self, token: &str, name: &str) -> Value {
        let all = self.json("GET", "/api/v1/followers", token, StatusCode::OK);
        let found = all.as_array().unwrap().iter().find(|f| f["name"] == name);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no follower {name}: {all}"))
    }

    pub fn run_now(&self, token: &str) -> i64 {
        let started = self.json("POST", "/api/v1/plans/app/run", token, StatusCode::ACCEPTED);
        started["operation"].as_i64().expect("an operation id")
    }

    /// Waits until operation `id` has ended; the operation.
    pub fn wait_ended(&self, id: i64, token: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let op = self.json(
                "GET",
                &format!("/api/v1/operations/{id}"),
                token,
                StatusCode::OK,
            );
            if op["status"] != "running" {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "operation {id} never ended:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The events of operation `id`; `each` sees every one as it arrives.
    pub fn events(&self, id: i64, token: &str, mut each: impl FnMut(&Value)) -> Vec<Value> {
        let r = self.request(
            "GET",
            &format!("/api/v1/operations/{id}/events"),
            Some(token),
        );
        assert_eq!(r.status(), StatusCode::OK);
        let mut events = Vec::new();
        for line in BufReader::new(r).lines() {
            let line = line.unwrap();
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let event: Value = serde_json::from_str(data).unwrap();
            each(&event);
            let last = event["kind"] == "report";
            events.push(event);
            if last {
                break;
            }
        }
        events
    }

    /// Waits (bounded) until the history of plan `app` holds `n` operations matching `pick`.
    pub fn wait_history(&self, token: &str, n: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.wait_ops("/api/v1/operations?plan=app", token, n, pick)
    }

    /// Waits (bounded) until the operations listed at `path` hold `n` matching `pick`.
    pub fn wait_ops(
        &self,
        path: &str,
        token: &str,
        n: usize,
        pick: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ops = self.json("GET", path, token, StatusCode::OK);
            let matching: Vec<Value> = ops
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| pick(o))
                .cloned()
                .collect();
            if matching.len() >= n {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "history never had {n}: {ops}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits (bounded by `within`) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A plan over `src/big` (256 MiB of random bytes), a run started, and its events read until
/// the backup has read some data; the server, token and operation id.
pub fn big_backup_running(setup: &Setup) -> (Server, String, i64) {
    write_big(&setup.src.join("big"), 4, 64);
    let token = setup.token("op", "operate");
    let server = setup.start();
    let id = server.run_now(&token);
    let r = server.request(
        "GET",
        &format!("/api/v1/operations/{id}/events"),
        Some(&token),
    );
    for line in BufReader::new(r).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let event: Value = serde_json::from_str(data).unwrap();
        assert_ne!(
            event["kind"], "report",
            "the backup ended before it could be stopped: make the data larger"
        );
        if event["kind"] == "progress" && event["data"]["bytes_read"].as_u64() > Some(0) {
            return (server, token, id);
        }
    }
    panic!("the events ended without progress:\n{}", server.log());
}

pub const ONE_SECOND: &str = r#"schedule = "* * * * * *""#;
pub const HOURLY: &str = r#"schedule = "0 * * * *""#;

/// The routes of the browse and action handlers, as the OpenAPI document names them.
pub const BROWSE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/version"),
    ("GET", "/api/v1/repositories"),
    ("GET", "/api/v1/repositories/{name}"),
    ("GET", "/api/v1/repositories/{name}/snapshots/{id}/tree"),
    ("GET", "/api/v1/repositories/{name}/snapshots/{id}/file"),
    ("GET", "/api/v1/repositories/{name}/diff"),
    ("POST", "/api/v1/repositories/{name}/restore"),
    ("POST", "/api/v1/repositories/{name}/check"),
    ("POST", "/api/v1/repositories/{name}/forget"),
    ("POST", "/api/v1/repositories/{name}/prune"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{name}"),
];

/// Runs `script` with the python of the validators' virtualenv that `.ci/setup` makes
/// (openapi-spec-validator, prometheus_client) and `args`; asserts success; its stdout.
pub fn validators_python(script: &str, args: &[&std::path::Path]) -> String {
    let python = super::server::installed(
        "STRATA_VALIDATORS_PYTHON",
        "validators-venv/bin/python",
        "validators' virtualenv python",
    );
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn role_below(role: &str) -> Option<&'static str> {
    match role {
        "operate" => Some("read"),
        "admin" => Some("operate"),
        _ => None,
    }
}

/// A webhook receiver on a free port: every request's body, as JSON, into a channel.
pub fn webhook_receiver() -> (u16, std::sync::mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            if let Some(body) = read_request_body(&mut stream) {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
        }
    });
    (port, rx)
}

/// The body of one HTTP/1.1 request with a content-length.
pub fn read_request_body(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// `SECONDS:INCREMENT` as a pair, to compare.
pub fn ts(text: &str) -> (u64, u64) {
    let (t, i) = text.split_once(':').unwrap();
    (t.parse().unwrap(), i.parse().unwrap())
}
