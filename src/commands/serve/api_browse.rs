//! The API's read routes over repositories (role `read`): the version, repositories with
//! their figures, a snapshot's directory listing by pages, a file's download (streamed, with
//! HTTP range requests) and the diff of two snapshots. Each repository is opened once (one
//! key derivation), its index brought up to date at each use and each snapshot read once;
//! the work is the engine's.
use super::Service;
use super::api::{Api, ApiResult, Problem, Remote, Shared, limit};
use super::tokens::Role;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::ConnectInfo, extract::State};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use strata::cancel::Cancel;
use strata::repo::id::SnapshotId;
use strata::repo::id::TreeId;
use strata::repo::repository::{IndexedRepo, RepoError};
use strata::repo::snapshot::Snapshot;
use strata::repo::tree::{Node, Tree};
use strata::vfs;
use utoipa::ToSchema;

/// The repositories the browse routes read, by name, each opened once.
#[derive(Default)]
pub struct Opened(Mutex<HashMap<String, Arc<Browsed>>>);

impl Opened {
    /// The repository `name` with its index up to date (opened at the first call).
    fn get(&self, service: &Service, name: &str) -> anyhow::Result<Arc<Browsed>> {
        let cached = self.lock().get(name).cloned();
        if let Some(browsed) = cached {
            browsed.repo.sync_index()?;
            return Ok(browsed);
        }
        let config = service.repository(name)?;
        let ctx = service.context(config, Cancel::default());
        let repo = super::runner::open(&ctx, config)?.open_index(ctx.cache().as_deref())?;
        let browsed = Arc::new(Browsed {
            repo,
            seen: Mutex::default(),
            trees: Mutex::default(),
        });
        self.lock().insert(name.to_string(), browsed.clone());
        Ok(browsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Browsed>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An opened repository and the snapshots read from it so far: a snapshot never changes,
/// so each is read once, and a listing after the first only lists their names.
pub(super) struct Browsed {
    pub(super) repo: IndexedRepo,
    seen: Mutex<Seen>,
    /// The directories listed last, decoded, for the pages that follow.
    trees: Mutex<Vec<(TreeId, Arc<Tree>)>>,
}

/// The snapshots of the last listing.
#[derive(Default)]
struct Seen {
    /// The names listed.
    listed: HashSet<SnapshotId>,
    /// The readable ones among them, oldest first.
    all: Arc<Vec<(SnapshotId, Snapshot)>>,
}

/// How many decoded directories `Browsed` keeps.
const TREES_KEPT: usize = 4;

impl Browsed {
    /// Every readable snapshot, oldest first, as `Repository::snapshots` gives them: the
    /// previous answer while the names listed are the same, else that answer with the
    /// snapshots gone left out and only the new ones read.
    pub(super) fn snapshots(&self) -> anyhow::Result<Arc<Vec<(SnapshotId, Snapshot)>>> {
        let ids: HashSet<SnapshotId> = self.repo.snapshot_ids()?.into_iter().collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if ids != seen.listed {
            let mut known: HashMap<SnapshotId, Snapshot> = (seen.all.iter())
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, s)| (*id, s.clone()))
                .collect();
            for id in &ids {
                if known.contains_key(id) {
                    continue;
                }
                if let Ok(snapshot) = self.repo.load_snapshot(*id) {
                    known.insert(*id, snapshot);
                }
            }
            let mut all: Vec<_> = known.into_iter().collect();
            all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
            *seen = Seen {
                listed: ids,
                all: Arc::new(all),
            };
        }
        Ok(seen.all.clone())
    }

    /// The tree `id`, decoded once for the next pages of its listing.
    fn tree(&self, id: TreeId) -> anyhow::Result<Arc<Tree>> {
        let kept = |trees: &Vec<(TreeId, Arc<Tree>)>| {
            (trees.iter())
                .find(|(t, _)| *t == id)
                .map(|(_, tree)| tree.clone())
        };
        if let Some(tree) = kept(&self.trees.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(tree);
        }
        let tree = Arc::new(self.repo.load_tree(&id)?);
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        trees.insert(0, (id, tree.clone()));
        trees.truncate(TREES_KEPT);
        Ok(tree)
    }

    /// The snapshot `spec` names: `latest` (the newest backup) or a unique id prefix.
    fn find(&self, spec: &str) -> anyhow::Result<(SnapshotId, Snapshot)> {
        if spec != "latest" {
            return Ok(self.repo.find_snapshot(spec)?);
        }
        let all = self.snapshots()?;
        let newest = all.iter().rev().find(|(_, s)| !s.is_oplog_slice()).cloned();
        Ok(newest.ok_or_else(|| RepoError::NoSnapshot(spec.into()))?)
    }
}

impl Api {
    /// The repository `name`, opened (404 when the configuration has none of that name).
    pub(super) async fn open(self: &Arc<Self>, name: &str) -> ApiResult<Arc<Browsed>> {
        if self.service.config.repository(name).is_none() {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no repository is named {name:?}"),
            ));
        }
        let api = self.clone();
        let name = name.to_string();
        blocking(move || api.opened.get(&api.service, &name)).await
    }
}

/// Runs `work` on a blocking thread; its error as a problem: 404 for a snapshot or path
/// that does not exist, 400 for an ambiguous snapshot prefix, else 500.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let result = tokio::task::spawn_blocking(work)
        .await
        .map_err(Problem::internal)?;
    result.map_err(|e| {
        let detail = strata::errors::message(e.as_ref());
        match e.downcast_ref::<RepoError>() {
            Some(RepoError::NoSnapshot(_) | RepoError::NoSuchPath(_)) => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
            }
            Some(RepoError::AmbiguousSnapshot(_)) => Problem::invalid("id", detail),
            _ => Problem::internal(detail),
        }
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct Version {
    version: &'static str,
    api: &'static str,
}

/// The service's version and API version (read).
#[utoipa::path(get, path = "/api/v1/version", responses((status = 200, description = "done", body = Version)))]
pub(super) async fn version(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Json<Version>> {
    api.authorize(&headers, remote, Role::Read).await?;
    Ok(Json(Version {
        version: env!("CARGO_PKG_VERSION"),
        api: "v1",
    }))
}

/// A repository as listed: what the service last saw of it, without opening it.
#[derive(Serialize, ToSchema)]
pub(super) struct RepositoryView {
    name: String,
    /// Snapshots, as last counted (at start and after each run).
    snapshots: Option<i64>,
    /// Bytes of all its objects but locks, as last listed.
    size_bytes: Option<i64>,
    /// The last check's end and whether it found the repository sound.
    last_check: Option<LastCheck>,
    /// Bytes of files its snapshots hold per plaintext byte they added, from their summaries
    /// as last listed (at start and after each backup, forget and prune).
    deduplication: Option<f64>,
    /// Plaintext bytes its snapshots added per byte stored for them, likewise.
    compression: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct LastCheck {
    operation: i64,
    ended: Option<chrono::DateTime<chrono::Utc>>,
    success: bool,
}

fn view(service: &Service, name: &str) -> ApiResult<RepositoryView> {
    let state = &service.state;
    let check = state.last_check(name).map_err(Problem::internal)?;
    let totals = state.repository_totals(name).map_err(Problem::internal)?;
    Ok(RepositoryView {
        deduplication: totals.and_then(|t| t.deduplication()),
        compression: totals.and_then(|t| t.compression()),
        name: name.to_string(),
        snapshots: state.snapshot_count(name).map_err(Problem::internal)?,
        size_bytes: state.repository_size(name).map_err(Problem::internal)?,
        last_check: check.map(|op| LastCheck {
            operation: op.id,
            ended: op.ended,
            success: op.status == super::state::Status::Success,
        }),
    })
}

/// The configured repositories with their snapshot count, size and last check (read).
#[utoipa::path(get, path = "/api/v1/repositories", responses((status = 200, description = "done", body = [RepositoryView])))]
pub(super) async fn list_repositories(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<RepositoryView>>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let names = api
        .service
        .config
        .repositories
        .iter()
        .map(|r| r.name.get_ref());
    Ok(Json(
        names
            .map(|n| view(&api.service, n))
            .collect::<ApiResult<_>>()?,
    ))
}

#[derive(Serialize, ToSchema)]
pub(super) struct RepositoryStats {
    #[serde(flatten)]
    view: RepositoryView,
    /// `strata stats --json` over every snapshot, measured now (it walks every tree).
    #[schema(value_type = Object)]
    stats: strata::ops::stats::Stats,
}

/// One repository with the `stats` command's figures over all its snapshots (read).
#[utoipa::path(get, path = "/api/v1/repositories/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "done", body = RepositoryStats), (status = 404, description = "no such name or path", body = Problem)))]
pub(super) async fn get_repository(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<RepositoryStats>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let repo = api.open(&name).await?;
    let service = api.service.clone();
    let measured = name.clone();
    let stats = blocking(move || {
        let all = repo.snapshots()?;
        let options = strata::ops::stats::Options::default();
        let observer = strata::observer::Quiet;
        let stats = strata::ops::stats::stats(&repo.repo, &all, &options, &observer)?;
        let state = &service.state;
        state.set_snapshot_count(&measured, all.len())?;
        state.set_repository_size(&measured, stats.repository_size)?;
        let totals = super::state::Totals::of(all.iter().map(|(_, s)| s));
        state.set_repository_totals(&measured, totals)?;
        Ok(stats)
    })
    .await?;
    let view = view(&api.service, &name)?;
    Ok(Json(RepositoryStats { view, stats }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct TreeQuery {
    /// The directory in the snapshot (default `/`).
    path: Option<String>,
    /// At most this many entries, 1 to 10000 (default 1000).
    limit: Option<String>,
    /// Skip this many entries first (default 0): the previous page's `next_offset`.
    offset: Option<String>,
}

/// One page of a directory's entries.
#[derive(Serialize, ToSchema)]
pub(super) struct Listing {
    /// The directory, normalized (`/a/b`; empty for the root).
    path: String,
    /// Entries in the directory.
    total: usize,
    offset: usize,
    /// Entries as `strata ls --json` lists them, in the tree's (name) order.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<Value>,
    /// The `offset` of the next page; absent on the last one.
    next_offset: Option<usize>,
}

fn offset(given: Option<&str>) -> ApiResult<usize> {
    let Some(text) = given else {
        return Ok(0);
    };
    (text.parse())
        .map_err(|_| Problem::invalid("offset", format!("offset {text:?} is not a number")))
}

/// A snapshot's directory at `path`, a page of `limit` entries from `offset` (read).
#[utoipa::path(get, path = "/api/v1/repositories/{name}/snapshots/{id}/tree",
    params(("name" = String, Path), ("id" = String, Path, description = "snapshot id prefix or `latest`"), TreeQuery),
    responses((status = 200, description = "done", body = Listing), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem)))]
pub(super) async fn tree(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<TreeQuery>,
) -> ApiResult<Json<Listing>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let limit = limit(q.limit.as_deref(), 1000, 10_000)? as usize;
    let offset = offset(q.offset.as_deref())?;
    let path = q.path.unwrap_or_else(|| "/".to_string());
    let repo = api.open(&name).await?;
    let dir = path.clone();
    let (node, tree) = blocking(move || {
        let node = node_in(&repo, &id, &dir)?;
        let tree = node.subtree().map(|t| repo.tree(t)).transpose()?;
        Ok((node, tree))
    })
    .await?;
    let Some(tree) = tree else {
        let detail = format!("{path} is a {}, not a directory", node.type_name());
        return Err(Problem::invalid("path", detail));
    };
    let prefix = crate::commands::ls::normalize(path.as_bytes());
    let total = tree.nodes.len();
    let entries = (tree.nodes.iter().skip(offset).take(limit))
        .map(|n| crate::commands::ls::json(&child(&prefix, &n.name), n))
        .collect();
    Ok(Json(Listing {
        path: String::from_utf8_lossy(&prefix).into_owned(),
        total,
        offset,
        entries,
        next_offset: (offset + limit < total).then_some(offset + limit),
    }))
}

fn child(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    [prefix, b"/", name].concat()
}

/// The node at `path` in the snapshot `id` (prefix or `latest`).
fn node_in(repo: &Browsed, id: &str, path: &str) -> anyhow::Result<Node> {
    let (_, snap) = repo.find(id)?;
    Ok(vfs::node_at(&repo.repo, snap.tree, path.as_bytes())?)
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct FileQuery {
    /// The file in the snapshot.
    path: Option<String>,
}

/// A file of a snapshot, streamed (read). A `Range: bytes=…` header (one range) answers
/// 206 with that part, or 416 when it starts past the end.
#[utoipa::path(get, path = "/api/v1/repositories/{name}/snapshots/{id}/file",
    params(("name" = String, Path), ("id" = String, Path, description = "snapshot id prefix or `latest`"), FileQuery),
    responses((status = 200, content_type = "application/octet-stream", description = "the file"),
        (status = 206, content_type = "application/octet-stream", description = "the range asked for"),
        (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem), (status = 416, description = "the range is not within the file", body = Problem)))]
pub(super) async fn download(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Response> {
    api.authorize(&headers, remote, Role::Read).await?;
    let Some(path) = q.path else {
        return Err(Problem::invalid("path", "give the file's path"));
    };
    let repo = api.open(&name).await?;
    let (reader, at) = (repo.clone(), path.clone());
    let node = blocking(move || node_in(&reader, &id, &at)).await?;
    if node.type_name() != "file" {
        let detail = format!("{path} is a {}, not a file", node.type_name());
        return Err(Problem::invalid("path", detail));
    }
    let size = node.size;
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match asked.and_then(|text| byte_range(text, size)) {
        Some(Ok(range)) => Some(range),
        Some(Err(())) => return Ok(unsatisfiable(size)),
        None => None,
    };
    let disposition = format!("attachment; filename=\"{}\"", safe_name(&node.name));
    let body = stream_file(repo, node, range.clone().unwrap_or(0..size));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, header_value(disposition));
    let length = range.as_ref().map_or(size, |r| r.end - r.start);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = range {
        let content_range = format!("bytes {}-{}/{size}", r.start, r.end - 1);
        h.insert(header::CONTENT_RANGE, header_value(content_range));
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The file name for `Content-Disposition`: printable ASCII, with `"` and `\` replaced.
fn safe_name(name: &[u8]) -> String {
    let keep = |c: char| c.is_ascii_graphic() || c == ' ';
    (String::from_utf8_lossy(name).chars())
        .map(|c| match keep(c) && c != '"' && c != '\\' {
            true => c,
            false => '_',
        })
        .collect()
}

/// 416, with the file's size in `Content-Range` as RFC 9110 asks.
fn unsatisfiable(size: u64) -> Response {
    let detail = format!("the range is not within the file's {size} bytes");
    let code = "range_not_satisfiable";
    let mut response =
        Problem::new(StatusCode::RANGE_NOT_SATISFIABLE, code, detail).into_response();
    let value = header_value(format!("bytes */{size}"));
    response.headers_mut().insert(header::CONTENT_RANGE, value);
    response
}

/// A single range of a `Range` header for a file of `size` bytes: `None` when the header is
/// not one that this server honours (several ranges, another unit, bad syntax: the whole
/// file is sent, as RFC 9110 allows), `Some(Err(()))` when it cannot be satisfied.
fn byte_range(header: &str, size: u64) -> Option<Result<Range<u64>, ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            size.saturating_sub(n)..size
        }
        (first, "") => first.parse().ok()?..size,
        (first, last) => {
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            if last < first {
                return None;
            }
            first..last.saturating_add(1).min(size)
        }
    };
    Some(match range.start < range.end {
        true => Ok(range),
        false => Err(()),
    })
}

/// The bytes `range` of the file `node`, read on a blocking thread and sent as they come:
/// at most a few chunks wait in memory, and a client that goes away stops the reading.
fn stream_file(repo: Arc<Browsed>, node: Node, range: Range<u64>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Sender(tx);
        if let Err(e) = vfs::copy_range(&repo.repo, &node, range, &mut out) {
            let message = strata::errors::message(&e);
            eprintln!("strata serve: error: download: {message}");
            let _ = out.0.blocking_send(Err(std::io::Error::other(message)));
        }
    });
    Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A `Write` into the channel of a response body.
struct Sender(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for Sender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let gone = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        (self.0.blocking_send(Ok(Bytes::copy_from_slice(buf)))).map_err(|_| gone())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct DiffQuery {
    /// The earlier snapshot (id prefix or `latest`).
    from: Option<String>,
    /// The later snapshot (id prefix or `latest`).
    to: Option<String>,
}

/// What changed between two snapshots, as `strata diff --json` reports it (read).
#[utoipa::path(get, path = "/api/v1/repositories/{name}/diff", params(("name" = String, Path), DiffQuery),
    responses((status = 200, description = "`strata diff --json`: before, after, changes, summary"), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem)))]
pub(super) async fn diff(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Value>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let from = q
        .from
        .ok_or_else(|| Problem::invalid("from", "give the earlier snapshot"))?;
    let to =
        q.to.ok_or_else(|| Problem::invalid("to", "give the later snapshot"))?;
    let repo = api.open(&name).await?;
    let report = blocking(move || {
        let (before, after) = (repo.find(&from)?, repo.find(&to)?);
        let never = Cancel::default();
        Ok(crate::commands::diff::compare(&repo.repo, before, after, &never)?.json())
    })
    .await?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(byte_range("bytes=0-9", 100), Some(Ok(0..10)));
        assert_eq!(byte_range("bytes=90-200", 100), Some(Ok(90..100)));
        assert_eq!(byte_range("bytes=95-", 100), Some(Ok(95..100)));
        assert_eq!(byte_range("bytes=-10", 100), Some(Ok(90..100)));
        assert_eq!(byte_range("bytes=-500", 100), Some(Ok(0..100)));
        assert_eq!(byte_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(byte_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
        assert_eq!(byte_range("bytes=5-1", 100), None);
    }
}
