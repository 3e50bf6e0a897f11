//! Google Cloud Storage test servers: fake-gcs-server (the binary of the PyPI wheel that
//! `.ci/setup` installs, linked as `fake-gcs-venv/bin/fake-gcs-server`, or
//! `$STRATA_FAKE_GCS_BIN`) on a free port of 127.0.0.1 with an in-memory store, behind a
//! [`Front`] that gives it GCS's preconditions on resumable uploads; both are stopped when
//! dropped. It checks no credentials: clients reach it with `gs.endpoint` and
//! `gs.anonymous=true` (unsigned requests).
use super::server::{Process, StoreServer, installed, request};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fake-gcs-server of one test, behind its front, stopped when dropped.
pub struct FakeGcs {
    front: Front,
    server: Process,
}

impl StoreServer for FakeGcs {
    fn start() -> FakeGcs {
        let bin = installed(
            "STRATA_FAKE_GCS_BIN",
            "fake-gcs-venv/bin/fake-gcs-server",
            "GCS test server (fake-gcs-server)",
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        let front_port = listener.local_addr().expect("local addr").port();
        let args = |port: u16, _: &std::path::Path| {
            let host = format!("127.0.0.1:{front_port}");
            let url = format!("http://{host}");
            let port = port.to_string();
            // -external-url and -public-host: the address that clients use (the front's),
            // which the server puts into the upload sessions and links it hands out (else
            // https://0.0.0.0:4443 and storage.googleapis.com).
            let args = [
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port,
                "-backend",
                "memory",
                "-external-url",
                &url,
                "-public-host",
                &host,
                "-log-level",
                "warn",
            ];
            args.iter().map(Into::into).collect()
        };
        let server = Process::start("fake-gcs-server", &bin, args, &[]);
        FakeGcs {
            front: Front::start(listener, server.port),
            server,
        }
    }

    /// Creates `bucket` through the JSON API (no credentials asked).
    fn create_bucket(&self, bucket: &str) {
        let body = format!(r#"{{"name":"{bucket}"}}"#);
        let json = [("Content-Type", "application/json".to_string())];
        let (status, answer) =
            (self.server).request("POST", "/storage/v1/b", &json, body.as_bytes());
        assert_eq!(status, 200, "create bucket {bucket}: {answer}");
    }

    fn location(&self, bucket: &str, prefix: &str) -> String {
        format!("gs:{bucket}:/{prefix}")
    }

    fn options(&self) -> Vec<(String, String)> {
        vec![
            (
                "gs.endpoint".into(),
                format!("http://127.0.0.1:{}", self.front.port),
            ),
            ("gs.anonymous".into(), "true".into()),
        ]
    }

    fn credentials(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn log(&self) -> String {
        self.server.log()
    }
}

/// How long the front waits on either side of a connection.
const WAIT: Duration = Duration::from_secs(60);

/// A proxy in front of fake-gcs-server that does what Google Cloud Storage does and
/// fake-gcs-server 1.54 (the one the wheel bundles) does not: it holds a resumable upload
/// to the `ifGenerationMatch=0` its session was opened with. fake-gcs-server honours the
/// precondition on multipart uploads only (resumable ones forget it, fixed upstream after
/// 1.54), while OpenDAL makes every conditional write a resumable upload. The front notes
/// the sessions opened with `ifGenerationMatch=0` and answers an upload to one of them
/// with 412 when the object exists; the check and the upload run under one lock, so of
/// racing creates exactly one wins. Every other request passes through unchanged, one per
/// connection.
struct Front {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// The create-only upload sessions (upload id to bucket and encoded object name), and the
/// lock that makes their check-and-upload atomic.
#[derive(Default)]
struct Sessions {
    create_only: Mutex<HashMap<String, (String, String)>>,
    creating: Mutex<()>,
}

impl Front {
    fn start(listener: TcpListener, upstream: u16) -> Front {
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let sessions = Arc::new(Sessions::default());
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), sessions) = (client, sessions.clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    // A client that went away mid-request has nothing to be answered.
                    let _ = serve(client, upstream, &sessions);
                });
            }
        });
        Front {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Answers one request of `client`: refused with 412, or passed to `upstream`.
fn serve(mut client: TcpStream, upstream: u16, sessions: &Sessions) -> std::io::Result<()> {
    client.set_read_timeout(Some(WAIT))?;
    let Some((target, sent)) = read_request(&client)? else {
        return Ok(());
    };
    let upload = query(&target, "upload_id");
    let create_only = upload.and_then(|id| sessions.create_only.lock().unwrap().get(id).cloned());
    let answer = match create_only {
        Some((bucket, name)) => {
            let _one_at_a_time = sessions.creating.lock().unwrap();
            let object = format!("/storage/v1/b/{bucket}/o/{name}");
            match request(upstream, "GET", &object, &[], b"").0 {
                200 => precondition_failed(),
                _ => forward(upstream, &sent)?,
            }
        }
        None => forward(upstream, &sent)?,
    };
    if sent.starts_with(b"POST ")
        && query(&target, "uploadType") == Some("resumable")
        && query(&target, "ifGenerationMatch") == Some("0")
    {
        note_create_only(&target, &answer, sessions);
    }
    client.write_all(&answer)
}

/// The target of the request that `client` sends, and the request to send on, with
/// `Connection: close` (one request per connection: the answer then ends where the
/// upstream's does); `None` if the client sent nothing.
fn read_request(client: &TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut reader = BufReader::new(client);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let header_of = |name| head.iter().find_map(|l| header(l, name));
    assert!(
        header_of("transfer-encoding").is_none(),
        "chunked: {head:?}"
    );
    let length = header_of("content-length").map_or(0, |v| v.parse().expect("a length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let target = head[0].split(' ').nth(1).unwrap_or_default().to_string();
    head.retain(|l| header(l, "connection").is_none());
    head.push("Connection: close\r\n\r\n".into());
    Ok(Some((target, [head.concat().into_bytes(), body].concat())))
}

/// Notes the upload session that the answer of `target` (a resumable upload opened with
/// `ifGenerationMatch=0`) names as create-only.
fn note_create_only(target: &str, answer: &[u8], sessions: &Sessions) {
    let bucket = target.split('/').nth(5).unwrap_or_default().to_string();
    let name = query(target, "name").unwrap_or_default().to_string();
    let text = String::from_utf8_lossy(answer);
    let location = text.lines().find_map(|l| header(l, "location"));
    if let Some(id) = location.and_then(|l| query(l, "upload_id")) {
        let mut create_only = sessions.create_only.lock().unwrap();
        create_only.insert(id.to_string(), (bucket, name));
    }
}

/// GCS's answer to a precondition that does not hold.
fn precondition_failed() -> Vec<u8> {
    let body = r#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold."}}"#;
    let head = format!(
        "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body.as_bytes()].concat()
}

/// The value of header `name` (lowercase) in the header line `line`, if it is that header.
fn header<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (key, value) = line.split_once(':')?;
    key.eq_ignore_ascii_case(name).then(|| value.trim())
}

/// The value of parameter `name` in the query of `target`, as it stands (still encoded).
fn query<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    (query.split('&')).find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// Sends the whole request `sent` to `upstream` and reads its whole answer.
fn forward(upstream: u16, sent: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", upstream))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.write_all(sent)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}
