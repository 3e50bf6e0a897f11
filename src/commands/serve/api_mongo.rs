//! The MongoDB routes: the followers' state, a repository's MongoDB timelines (windows
//! restorable to any point in time, and gaps), and a restore into a server (from a
//! snapshot or to a point in time) run as an operation. Handlers only translate.
use super::api::{ApiResult, Problem, Remote, Shared, Started, not_started};
use super::follower::FollowerView;
use super::mongo::{Invalid, MongoRestore, redact};
use super::tokens::Role;
use super::{Launch, Service, runner};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use strata::sources::mongodb::connection::server_of;
use strata::sources::mongodb::import::ImportOptions;

impl From<Invalid> for Problem {
    fn from(Invalid(field, detail): Invalid) -> Problem {
        Problem::invalid(field, redact(&detail))
    }
}

/// The `host:port` list of `uri` (what snapshots record), refused as `field` when it is not
/// a MongoDB URI. Parsed on a blocking thread: the driver's parser runs a runtime of its own.
async fn server_of_uri(uri: String, field: &'static str) -> ApiResult<String> {
    let parsed = tokio::task::spawn_blocking(move || server_of(&uri))
        .await
        .map_err(Problem::internal)?;
    parsed.map_err(|e| Problem::invalid(field, redact(&e.to_string())))
}

/// The MongoDB followers: running, last archived time, lag, restarts, last error (read).
#[utoipa::path(get, path = "/api/v1/followers", responses((status = 200, description = "every follower's state", body = [FollowerView])))]
pub(super) async fn list_followers(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<FollowerView>>> {
    api.authorize(&headers, remote, Role::Read).await?;
    Ok(Json(
        api.service.followers.iter().map(|w| w.view()).collect(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct TimelineQuery {
    /// Only this server: `host:port` as snapshots record it, or a URI.
    server: Option<String>,
}

/// The repository's MongoDB timelines as `strata mongo timeline --json` shows them:
/// windows (a snapshot and how far the archived oplog carries it), gaps, and the oplog
/// slices (read).
#[utoipa::path(get, path = "/api/v1/repositories/{name}/timelines", params(("name" = String, Path), TimelineQuery),
    responses((status = 200, description = "{windows, gaps, slices}"), (status = 400, description = "a bad parameter, named in field", body = Problem), (status = 404, description = "no such repository", body = Problem)))]
pub(super) async fn timelines(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult<Json<Value>> {
    api.authorize(&headers, remote, Role::Read).await?;
    api.known_repository(&name)?;
    let server = match q.server {
        Some(s) if s.contains("://") => Some(server_of_uri(s, "server").await?),
        other => other,
    };
    let service = api.service.clone();
    let timeline = tokio::task::spawn_blocking(move || service.timeline(&name, server.as_deref()))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| Problem::internal(redact(&strata::errors::message(e.as_ref()))))?;
    Ok(Json(timeline))
}

/// Restores MongoDB from the repository into the server at `uri` (operate): from a
/// snapshot, or to a point in time (`at`) from the newest snapshot before it and the
/// archived oplog. Runs as an operation (`restore_mongo`); answers its id. One restore
/// into a server at a time (409 `restore_running`). The URI's password is never recorded.
#[utoipa::path(post, path = "/api/v1/repositories/{name}/restore/mongo", params(("name" = String, Path)),
    request_body = MongoRestore,
    responses((status = 202, description = "the restore started as this operation", body = Started), (status = 400, description = "a bad parameter, named in field", body = Problem), (status = 404, description = "no such repository or snapshot", body = Problem), (status = 409, description = "a restore into that server is running", body = Problem)))]
pub(super) async fn restore_mongo(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let caller = api.authorize(&headers, remote, Role::Operate).await?;
    api.known_repository(&name)?;
    let req: MongoRestore = serde_json::from_slice(&body)
        .map_err(|e| Problem::invalid("body", redact(&e.to_string())))?;
    let server = server_of_uri(req.uri.clone(), "uri").await?;
    let at = req.point_in_time()?;
    let opts = req.options(at)?;
    let work = Launch {
        key: format!("restore_mongo:{server}"),
        kind: "restore_mongo",
        plan: None,
        repository: Some(name.clone()),
    };
    let repository = name.clone();
    let run = move |service: &Service, op: &runner::Running| {
        let opts = ImportOptions {
            cancel: op.cancel.clone(),
            ..opts
        };
        let result = (service.config.repository(&repository))
            .ok_or_else(|| anyhow::anyhow!("no repository named {repository:?}"))
            .and_then(|repo| service.restore_mongo(repo, &req, &opts, op));
        runner::outcome(result, None, op)
    };
    let why = format!("restore into {server} by {}", caller.name);
    let id = (api.service)
        .launch(work, &why, run, |_, _, _, _| {})
        .map_err(|e| not_started(e, "restore_running"))?;
    let target = format!("{name} into {server}");
    api.audit(&caller, "repository.restore_mongo", &target, remote)?;
    Ok((StatusCode::ACCEPTED, Json(Started { operation: id })))
}
