//! Repositories on object storage (S3 and S3-compatible stores, Google Cloud Storage, Azure
//! Blob Storage, and memory for tests) through Apache OpenDAL: one object per repository
//! object, at the paths of [`Kind::dir`] below an optional prefix. The engine is synchronous
//! and calls from many threads; each request runs on this backend's private tokio runtime
//! while the calling thread waits on a channel, so no call ever blocks inside an async task.
use super::location::{Location, Options};
use super::{Backend, BackendError, Entry, Kind, Request, Result, ShortRead, validate_name};
use opendal::{ErrorKind, Operator, services};
use std::future::Future;
use std::time::Duration;

/// How long one request may take before it counts as a transient failure (and is retried
/// by [`super::retry::Retry`]), and how long it may wait for the next chunk of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub request: Duration,
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request: Duration::from_secs(120),
            io: Duration::from_secs(30),
        }
    }
}

pub(crate) struct ObjectBackend {
    op: Operator,
    runtime: tokio::runtime::Runtime,
    location: String,
    connections: usize,
}

/// Requests in flight at once on an object store by default: latency, not bandwidth, is
/// what limits one request.
const CONNECTIONS: usize = 8;

impl ObjectBackend {
    /// A backend over `op` (whose root is the repository's prefix), named `location` in
    /// messages, with a timeout on every request.
    pub(crate) fn new(op: Operator, location: String, timeouts: Timeouts) -> Result<ObjectBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-objstore")
            .enable_all()
            .build()
            .map_err(|source| BackendError::Io {
                op: "start the runtime of",
                path: location.clone(),
                source,
            })?;
        let timeout = opendal::layers::TimeoutLayer::new()
            .with_timeout(timeouts.request)
            .with_io_timeout(timeouts.io);
        Ok(ObjectBackend {
            op: op.layer(timeout),
            runtime,
            location,
            connections: CONNECTIONS,
        })
    }

    /// The backend of an object-store `location` (not `Location::Local`), configured by
    /// `options` and by the credentials in the environment: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`, `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`; `GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_CONNECTION_STRING`
    /// or `AZURE_ACCOUNT_NAME` and `AZURE_ACCOUNT_KEY`.
    pub(crate) fn open(location: &Location, options: &Options) -> Result<ObjectBackend> {
        let described = location.describe();
        let invalid = |e: opendal::Error| BackendError::InvalidLocation {
            location: described.clone(),
            reason: describe(&e),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        // OpenDAL's HTTP transport (reqwest, installed as opendal's own facade would) takes
        // the process's rustls provider and brings none, so that ring, already built in for
        // MongoDB, serves both. Failing to install means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
        let op = match location {
            Location::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                let region = (options.s3_region.clone())
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                let mut b = services::S3::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(&region);
                if options.s3_virtual_host {
                    b = b.enable_virtual_host_style();
                }
                if let Some(class) = &options.s3_storage_class {
                    b = b.default_storage_class(class);
                }
                if let (Some(id), Some(secret)) =
                    (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
                {
                    b = b.access_key_id(&id).secret_access_key(&secret);
                    if let Some(token) = env("AWS_SESSION_TOKEN") {
                        b = b.session_token(&token);
                    }
                }
                if let Some(profile) = env("AWS_PROFILE") {
                    b = b.profile(&profile);
                }
                Operator::new(b).map_err(invalid)?
            }
            Location::Gcs { bucket, prefix } => {
                let mut b = services::Gcs::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"));
                if let Some(endpoint) = &options.gs_endpoint {
                    b = b.endpoint(endpoint);
                }
                if options.gs_anonymous {
                    b = b.skip_signature();
                } else if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
                    b = b.credential_path(&path);
                }
                Operator::new(b).map_err(invalid)?
            }
            Location::Azure { container, prefix } => {
                let connection = env("AZURE_STORAGE_CONNECTION_STRING");
                let mut b = match &connection {
                    Some(text) => {
                        services::Azblob::from_connection_string(text).map_err(invalid)?
                    }
                    None => services::Azblob::default(),
                };
                b = b.container(container).root(&format!("/{prefix}"));
                let account = env("AZURE_ACCOUNT_NAME");
                if let Some(name) = &account {
                    b = b.account_name(name);
                }
                if let Some(key) = env("AZURE_ACCOUNT_KEY") {
                    b = b.account_key(&key);
                }
                // A connection string names its endpoint (BlobEndpoint, EndpointSuffix or
                // UseDevelopmentStorage), which an account name must not replace.
                match (&options.azure_endpoint, &account, &connection) {
                    (Some(endpoint), _, _) => b = b.endpoint(endpoint),
                    (None, Some(name), None) => {
                        b = b.endpoint(&format!("https://{name}.blob.core.windows.net"))
                    }
                    (None, _, _) => {}
                }
                Operator::new(b).map_err(invalid)?
            }
            Location::Memory => Operator::new(services::Memory::default()).map_err(invalid)?,
            Location::Local(_) => {
                return Err(BackendError::InvalidLocation {
                    location: described.clone(),
                    reason: "a directory is not an object store".into(),
                });
            }
        };
        let timeouts = match options.timeout {
            Some(t) => Timeouts {
                request: t,
                io: t.min(Timeouts::default().io),
            },
            None => Timeouts::default(),
        };
        let backend = ObjectBackend::new(op, described, timeouts)?;
        Ok(ObjectBackend {
            connections: options.connections.unwrap_or(CONNECTIONS),
            ..backend
        })
    }

    /// A backend in memory, for tests.
    #[cfg(test)]
    pub(crate) fn memory() -> ObjectBackend {
        ObjectBackend::open(&Location::Memory, &Options::default()).expect("memory opens")
    }

    /// The path of an object below the root: `data/<xx>/<id>` for packs, `<dir>/<id>`
    /// otherwise, `config` for the config.
    fn path(&self, kind: Kind, name: &str) -> Result<String> {
        validate_name(kind, name)?;
        Ok(match kind.folder_of(name) {
            folder if folder.is_empty() => name.to_string(),
            folder => format!("{folder}/{name}"),
        })
    }

    /// Runs one request on the runtime and waits for its answer.
    fn run<T, F>(&self, request: impl FnOnce(Operator) -> F) -> opendal::Result<T>
    where
        T: Send + 'static,
        F: Future<Output = opendal::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = request(self.op.clone());
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .expect("the runtime runs every task until it answers")
    }

    /// What a failed request means, for requests on `path`.
    fn error(&self, op: &'static str, path: &str, e: opendal::Error) -> BackendError {
        let detail = describe(&e);
        let unsigned = detail.contains(NO_CREDENTIAL);
        let request = Box::new(Request {
            detail: match unsigned {
                true => no_credential(&self.location),
                false => detail,
            },
            location: self.location.clone(),
            op,
            path: path.to_string(),
        });
        match e.kind() {
            _ if unsigned => BackendError::PermissionDenied(request),
            ErrorKind::PermissionDenied => BackendError::PermissionDenied(request),
            ErrorKind::ConditionNotMatch => BackendError::PreconditionFailed(request),
            _ if e.is_temporary() || e.kind() == ErrorKind::RateLimited => {
                BackendError::Transient(request)
            }
            _ => BackendError::Failed(request),
        }
    }

    /// As [`ObjectBackend::error`], except that a missing object is `NotFound`.
    fn read_error(
        &self,
        op: &'static str,
        kind: Kind,
        name: &str,
        e: opendal::Error,
    ) -> BackendError {
        match e.kind() {
            ErrorKind::NotFound => BackendError::NotFound {
                location: self.location.clone(),
                kind,
                name: name.to_string(),
            },
            _ => self.error(op, name, e),
        }
    }

    /// The objects of `kind` (not the config), from a listing of its folder (and, for
    /// packs, its subfolders), with their sizes (asked for separately where the listing
    /// does not give them).
    fn list_folder(&self, kind: Kind) -> Result<Vec<Entry>> {
        let dir = format!("{}/", kind.dir());
        let (path, recursive) = (dir.clone(), kind == Kind::Pack);
        let listed = self
            .run(|op| async move { op.list_with(&path).recursive(recursive).await })
            .map_err(|e| self.error("list", &dir, e))?;
        let mut out = Vec::new();
        for entry in listed {
            let (name, meta) = (entry.name().to_string(), entry.metadata());
            if meta.is_dir() || validate_name(kind, &name).is_err() {
                continue;
            }
            let size = match meta.is_file() {
                true => meta.content_length(),
                false => match self.stat(entry.path()) {
                    Ok(size) => size,
                    // Removed between listing and asking (a lock released, a pack pruned).
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.error("stat", entry.path(), e)),
                },
            };
            out.push(Entry { name, size });
        }
        Ok(out)
    }

    fn stat(&self, path: &str) -> opendal::Result<u64> {
        let path = path.to_string();
        self.run(|op| async move { op.stat(&path).await.map(|m| m.content_length()) })
    }
}

/// A failed request in one line: its kind and the store's message, and the innermost cause
/// (a refused connection, a timeout) where there is one.
fn describe(e: &opendal::Error) -> String {
    let mut text = e.kind().to_string();
    if !e.message().is_empty() {
        let message = service_error(e.message()).unwrap_or_else(|| e.message().to_string());
        text.push_str(&format!(": {message}"));
    }
    let mut cause = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    if let Some(c) = innermost {
        text.push_str(&format!(" ({c})"));
    }
    text.replace('\n', " ")
}

/// What OpenDAL says when it found no credentials to sign a request with.
const NO_CREDENTIAL: &str = "failed to load signing credential";

/// The detail of a request that could not be signed: which variables give credentials.
fn no_credential(location: &str) -> String {
    let variables = match location.split(':').next() {
        Some("gs") => {
            "GOOGLE_APPLICATION_CREDENTIALS (or -o gs.anonymous=true for a server that takes \
             unsigned requests, such as an emulator)"
        }
        Some("azure") => {
            "AZURE_STORAGE_CONNECTION_STRING, or AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY"
        }
        _ => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
    };
    format!("no credentials found: set {variables}")
}

/// The store's own error code and text (`NoSuchBucket: The specified bucket does not
/// exist`) out of the debug form OpenDAL puts in its message (`S3Error { code: "...",
/// message: "...", resource: ..., request_id: ... }`, or Google Cloud Storage's
/// `GcsErrorResponse { error: GcsError { code: 404, message: "...", ... } }`), when it has
/// that form.
fn service_error(message: &str) -> Option<String> {
    let field = |name: &str| {
        let start = message.find(&format!("{name}: "))? + name.len() + 2;
        let value = &message[start..];
        match value.strip_prefix('"') {
            Some(quoted) => Some(&quoted[..quoted.find('"')?]),
            None => Some(&value[..value.find([',', ' ', '}'])?]),
        }
    };
    Some(format!("{}: {}", field("code")?, field("message")?))
}

impl Backend for ObjectBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    /// Object stores have no folders to make: this only checks that no config exists.
    fn create(&self) -> Result<()> {
        match self.head(Kind::Config, "config") {
            Ok(_) => Err(BackendError::AlreadyExists {
                location: self.location.clone(),
                kind: Kind::Config,
                name: "config".into(),
            }),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(kind, name)?;
        let (p, body) = (path.clone(), data.to_vec());
        let written = self
            .run(|op| async move { op.write_with(&p, body).if_not_exists(true).await.map(drop) });
        match written {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists
                ) =>
            {
                if kind.is_content_named() || self.get(kind, name)? == data {
                    return Ok(());
                }
                Err(BackendError::AlreadyExists {
                    location: self.location.clone(),
                    kind,
                    name: name.to_string(),
                })
            }
            Err(e) => Err(self.error("write", &path, e)),
        }
    }

    fn replace(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(kind, name)?;
        let (p, body) = (path.clone(), data.to_vec());
        self.run(|op| async move { op.write(&p, body).await.map(drop) })
            .map_err(|e| self.error("replace", &path, e))
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        self.run(|op| async move { op.read(&path).await.map(|b| b.to_vec()) })
            .map_err(|e| self.read_error("read", kind, name, e))
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let end = offset.saturating_add(len);
        let read = self.run(|op| async move {
            op.read_with(&path)
                .range(offset..end)
                .await
                .map(|b| b.to_vec())
        });
        match read {
            Ok(buf) if buf.len() as u64 == len => Ok(buf),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(self.read_error("read", kind, name, e))
            }
            // Stores answer a range past the end with 416 or with fewer bytes (which OpenDAL
            // may report as "too little data"): the object's size tells which case this is.
            outcome => {
                let size = self.head(kind, name)?;
                match outcome {
                    Err(e) if end <= size => Err(self.read_error("read", kind, name, e)),
                    _ => Err(BackendError::ShortRead(Box::new(ShortRead {
                        location: self.location.clone(),
                        kind,
                        name: name.to_string(),
                        offset,
                        len,
                        size,
                    }))),
                }
            }
        }
    }

    fn head(&self, kind: Kind, name: &str) -> Result<u64> {
        let path = self.path(kind, name)?;
        self.stat(&path)
            .map_err(|e| self.read_error("stat", kind, name, e))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Entry>> {
        let mut out = match kind {
            Kind::Config => match self.head(Kind::Config, "config") {
                Ok(size) => vec![Entry {
                    name: "config".into(),
                    size,
                }],
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e),
            },
            _ => self.list_folder(kind)?,
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        let p = path.clone();
        match self.run(|op| async move { op.delete(&p).await }) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(self.error("remove", &path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_error_is_shown_as_its_code_and_text() {
        let debug = r#"S3Error { code: "NoSuchBucket", message: "The specified bucket does not exist", resource: "", request_id: "x" }"#;
        assert_eq!(
            service_error(debug).as_deref(),
            Some("NoSuchBucket: The specified bucket does not exist")
        );
        let gcs = r#"GcsErrorResponse { error: GcsError { code: 404, message: "The specified bucket does not exist.", errors: [GcsErrorDetail { domain: "global", message: "x", reason: "notFound" }] } }"#;
        assert_eq!(
            service_error(gcs).as_deref(),
            Some("404: The specified bucket does not exist.")
        );
        assert_eq!(service_error("reader got too little data"), None);
    }

    #[test]
    fn missing_credentials_name_the_variables_of_the_store() {
        assert!(no_credential("s3:http://h/b").ends_with("AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"));
        assert!(no_credential("gs:b:/p").contains("set GOOGLE_APPLICATION_CREDENTIALS"));
        assert!(no_credential("gs:b:/p").contains("gs.anonymous=true"));
        assert!(no_credential("azure:c:/p").contains("AZURE_ACCOUNT_KEY"));
    }

    #[test]
    fn memory_backend_meets_the_contract() {
        super::super::contract::run(&ObjectBackend::memory());
    }

    #[test]
    fn objects_live_at_the_repository_layout() {
        let b = ObjectBackend::memory();
        let pack = format!("7f{}", "0".repeat(62));
        b.put(Kind::Pack, &pack, b"p").unwrap();
        b.put(Kind::Key, "0a", b"k").unwrap();
        b.put(Kind::Config, "config", b"c").unwrap();
        let paths: Vec<String> = b
            .run(|op| async move { op.list_with("").recursive(true).await })
            .unwrap()
            .into_iter()
            .filter(|e| !e.metadata().is_dir())
            .map(|e| e.path().to_string())
            .collect();
        let mut paths = paths;
        paths.sort();
        assert_eq!(paths, ["config", &format!("data/7f/{pack}"), "keys/0a"]);
    }
}
