//! The HTTP API under `/api/v1` (and `/metrics`): routes, bearer-token checks by role,
//! problem-details errors with stable codes, the audit of state-changing calls, and the
//! OpenAPI 3.1 document generated from these handlers. Every handler only translates: the
//! work is the service's.
use super::runner::Event;
use super::state::{Operation, Status};
use super::tokens::{self, Caller, Role};
use super::{Service, StartError, Task, api_actions, api_browse};
use crate::commands::snapshots::Listed;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// What every handler gets: the service, recent failed authentications per address, and
/// the OpenAPI document.
pub struct Api {
    pub(super) service: Arc<Service>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    openapi: utoipa::openapi::OpenApi,
    /// The repositories the browse routes read, each opened once.
    pub(super) opened: super::api_browse::Opened,
    /// The dashboard's login sessions.
    pub(super) sessions: super::dashboard::Sessions,
}

pub(super) type Shared = State<Arc<Api>>;
pub(super) type Remote = ConnectInfo<SocketAddr>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "strata serve",
        description = "The strata backup service's API. Every route but /api/v1/health needs `Authorization: Bearer TOKEN`; a token's role (read < operate < admin) decides what it may do."
    ),
    components(schemas(Problem, Operation, Status))
)]
struct ApiDoc;

pub fn router(service: Arc<Service>) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_document))
        .routes(routes!(list_plans))
        .routes(routes!(run_plan))
        .routes(routes!(pause_plan))
        .routes(routes!(resume_plan))
        .routes(routes!(list_operations))
        .routes(routes!(get_operation))
        .routes(routes!(operation_events))
        .routes(routes!(cancel_operation))
        .routes(routes!(list_snapshots))
        .routes(routes!(audit_log))
        .routes(routes!(recent_alerts))
        .routes(routes!(metrics))
        .routes(routes!(super::api_mongo::list_followers))
        .routes(routes!(super::api_mongo::timelines))
        .routes(routes!(super::api_mongo::restore_mongo))
        // Browsing and repository actions (api_browse.rs, api_actions.rs).
        .routes(routes!(api_browse::version))
        .routes(routes!(api_browse::list_repositories))
        .routes(routes!(api_browse::get_repository))
        .routes(routes!(api_browse::tree))
        .routes(routes!(api_browse::download))
        .routes(routes!(api_browse::diff))
        .routes(routes!(api_actions::restore))
        .routes(routes!(api_actions::forget))
        .routes(routes!(api_actions::prune))
        .routes(routes!(api_actions::check))
        .routes(routes!(api_actions::list_tokens, api_actions::create_token))
        .routes(routes!(api_actions::revoke_token))
        .split_for_parts();
    let api = Arc::new(Api {
        service,
        failures: Mutex::new(HashMap::new()),
        openapi,
        opened: Default::default(),
        sessions: Default::default(),
    });
    router
        .merge(super::dashboard::router())
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(api)
}

/// An error as RFC 9457 problem details, with a stable `code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `code` says which error it is.
    #[serde(rename = "type")]
    kind: &'static str,
    title: String,
    status: u16,
    /// Stable: `unauthorized`, `forbidden`, `not_found`, `invalid`, `plan_running`,
    /// `restore_running`, `not_running`, `action_running`, `token_exists`,
    /// `range_not_satisfiable`, `too_many_failures`, `stopping`, `internal`.
    code: &'static str,
    detail: String,
    /// For `invalid`: the parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    /// For `too_many_failures`: the seconds to wait, sent as `Retry-After`.
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            code,
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    pub(super) fn invalid(field: &'static str, detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid", detail);
        p.field = Some(field);
        p
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Problem {
        eprintln!("strata serve: error: {e}");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub(super) type ApiResult<T> = Result<T, Problem>;

/// Failed authentications from one address within this window slow its next answers.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The extra wait per recent failure, and its ceiling.
const FAILURE_DELAY: Duration = Duration::from_millis(50);
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(2);

impl Api {
    /// 404 unless the configuration names a repository `name`.
    pub(super) fn known_repository(&self, name: &str) -> Result<(), Problem> {
        match self.service.config.repository(name) {
            Some(_) => Ok(()),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no repository is named {name:?}"),
            )),
        }
    }

    /// The caller of a request needing `role`: its bearer token (or else its dashboard
    /// session) must exist and have at least that role. Failures from one address are
    /// answered ever more slowly.
    pub(super) async fn authorize(
        &self,
        headers: &HeaderMap,
        remote: SocketAddr,
        role: Role,
    ) -> ApiResult<Caller> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(presented) = presented else {
            let caller = super::dashboard::session_caller(self, headers, role)?;
            return at_least(caller, role);
        };
        if let Some(wait) = self.locked_out(remote.ip()) {
            let detail = "too many failed authentications from this address: try again later";
            let mut problem =
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_failures", detail);
            problem.retry_after = Some(wait.as_secs() + 1);
            return Err(problem);
        }
        let found =
            tokens::find(&self.service.state, presented.trim()).map_err(Problem::internal)?;
        let Some(caller) = found else {
            self.slow_down(remote.ip()).await;
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token is not valid",
            ));
        };
        at_least(caller, role)
    }

    /// How long `ip` stays refused, when it failed `auth_lockout_after` times within the
    /// window: until the window has passed since its last failure.
    fn locked_out(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, last) = failures.get(&ip)?;
        let limit = self.service.config.auth_lockout_after;
        (*count >= limit).then(|| FAILURE_WINDOW.checked_sub(last.elapsed()))?
    }

    async fn slow_down(&self, ip: IpAddr) {
        let delay = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            failures.retain(|_, (_, last)| last.elapsed() < FAILURE_WINDOW);
            let entry = failures.entry(ip).or_insert((0, Instant::now()));
            *entry = (entry.0 + 1, Instant::now());
            (FAILURE_DELAY * entry.0).min(MAX_FAILURE_DELAY)
        };
        eprintln!("strata serve: failed authentication from {ip}");
        tokio::time::sleep(delay).await;
    }

    pub(super) fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        remote: SocketAddr,
    ) -> ApiResult<()> {
        let state = &self.service.state;
        (state.audit(&caller.name, action, target, &remote.ip().to_string()))
            .map_err(Problem::internal)
    }

    fn plan(&self, name: &str) -> ApiResult<Task<'_>> {
        match self.service.config.plan(name) {
            Some(plan) => Ok(Task::Plan(plan)),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no plan is named {name:?}"),
            )),
        }
    }
}

fn at_least(caller: Caller, role: Role) -> ApiResult<Caller> {
    if caller.role < role {
        let detail = format!("this needs a token of role {} or above", role.name());
        return Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", detail));
    }
    Ok(caller)
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
    version: &'static str,
}

/// Whether the service is up; needs no token.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, description = "done", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// This document (read).
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, description = "the OpenAPI 3.1 document")))]
async fn openapi_document(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Response> {
    api.authorize(&headers, remote, Role::Read).await?;
    Ok(Json(&api.openapi).into_response())
}

#[derive(Serialize, ToSchema)]
struct PlanView {
    name: String,
    repository: String,
    schedule: String,
    paused: bool,
    /// A stale alert stands: no success for `stale_after` schedule intervals.
    stale: bool,
    next_run: Option<chrono::DateTime<chrono::Utc>>,
    /// The operation running this plan now.
    running: Option<i64>,
    /// The last finished run (without its log).
    last_run: Option<Operation>,
    last_success: Option<chrono::DateTime<chrono::Utc>>,
}

/// Plans with their next run, the last run and its status (read).
#[utoipa::path(get, path = "/api/v1/plans", responses((status = 200, description = "done", body = [PlanView])))]
async fn list_plans(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<PlanView>>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let service = &api.service;
    let finished = [
        Status::Success,
        Status::Partial,
        Status::Failed,
        Status::Cancelled,
        Status::Interrupted,
    ];
    let mut views = Vec::new();
    for plan in &service.config.plans {
        let name = plan.name.get_ref();
        let state = service.state.plan(name).map_err(Problem::internal)?;
        let mut last_run = service
            .state
            .last_of(name, &finished)
            .map_err(Problem::internal)?;
        if let Some(op) = &mut last_run {
            op.log.clear();
        }
        let last_success = service
            .state
            .last_of(name, &[Status::Success])
            .map_err(Problem::internal)?;
        views.push(PlanView {
            name: name.clone(),
            repository: plan.repository.get_ref().clone(),
            schedule: plan.schedule.to_string(),
            paused: state.paused,
            stale: state.alerted_stale,
            next_run: state.next_run,
            running: service.busy_with(&Task::Plan(plan)),
            last_run,
            last_success: last_success.and_then(|op| op.ended),
        });
    }
    Ok(Json(views))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Started {
    pub(super) operation: i64,
}

/// A problem for an operation that was not started; `busy` is the code when what it would
/// run runs already.
pub(super) fn not_started(e: StartError, busy: &'static str) -> Problem {
    match e {
        StartError::Busy(..) => Problem::new(StatusCode::CONFLICT, busy, e.to_string()),
        StartError::Stopping => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
        }
        StartError::State(e) => Problem::internal(e),
    }
}

/// Runs the plan now (operate): the new operation's id; 409 while it runs already.
#[utoipa::path(post, path = "/api/v1/plans/{name}/run", params(("name" = String, Path)),
    responses((status = 202, description = "started: the new operation's id", body = Started), (status = 404, description = "no such name or path", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
async fn run_plan(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let caller = api.authorize(&headers, remote, Role::Operate).await?;
    let task = api.plan(&name)?;
    let id = (api.service)
        .start(task, &format!("run by {}", caller.name))
        .map_err(|e| not_started(e, "plan_running"))?;
    api.audit(&caller, "plan.run", &name, remote)?;
    Ok((StatusCode::ACCEPTED, Json(Started { operation: id })))
}

#[derive(Serialize, ToSchema)]
struct Paused {
    plan: String,
    paused: bool,
}

async fn set_paused(
    api: &Api,
    headers: &HeaderMap,
    remote: SocketAddr,
    name: &str,
    paused: bool,
) -> ApiResult<Json<Paused>> {
    let caller = api.authorize(headers, remote, Role::Operate).await?;
    api.plan(name)?;
    api.service
        .state
        .set_paused(name, paused)
        .map_err(Problem::internal)?;
    let action = if paused { "plan.pause" } else { "plan.resume" };
    api.audit(&caller, action, name, remote)?;
    Ok(Json(Paused {
        plan: name.to_string(),
        paused,
    }))
}

/// Stops scheduling the plan (operate); a run in progress goes on.
#[utoipa::path(post, path = "/api/v1/plans/{name}/pause", params(("name" = String, Path)),
    responses((status = 200, description = "done", body = Paused), (status = 404, description = "no such name or path", body = Problem)))]
async fn pause_plan(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Paused>> {
    set_paused(&api, &headers, remote, &name, true).await
}

/// Schedules the plan again (operate).
#[utoipa::path(post, path = "/api/v1/plans/{name}/resume", params(("name" = String, Path)),
    responses((status = 200, description = "done", body = Paused), (status = 404, description = "no such name or path", body = Problem)))]
async fn resume_plan(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Paused>> {
    set_paused(&api, &headers, remote, &name, false).await
}

#[derive(Deserialize, utoipa::IntoParams)]
struct OperationsQuery {
    /// Only this plan's operations.
    plan: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    limit: Option<String>,
}

/// A `limit` parameter: 1 to `max`, `default` when absent.
pub(super) fn limit(given: Option<&str>, default: u32, max: u32) -> ApiResult<u32> {
    let Some(text) = given else {
        return Ok(default);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Problem::invalid(
            "limit",
            format!("limit {text:?} is not a number from 1 to {max}"),
        )),
    }
}

/// The history, newest first, without logs (read).
#[utoipa::path(get, path = "/api/v1/operations", params(OperationsQuery),
    responses((status = 200, description = "done", body = [Operation]), (status = 400, description = "bad input: problem details naming the field", body = Problem)))]
async fn list_operations(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Query(q): Query<OperationsQuery>,
) -> ApiResult<Json<Vec<Operation>>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    let ops = api
        .service
        .state
        .operations(q.plan.as_deref(), limit)
        .map_err(Problem::internal)?;
    Ok(Json(ops))
}

fn operation_id(text: &str) -> ApiResult<i64> {
    text.parse()
        .map_err(|_| Problem::invalid("id", format!("operation id {text:?} is not a number")))
}

fn operation(api: &Api, id: i64) -> ApiResult<Operation> {
    match api.service.state.operation(id).map_err(Problem::internal)? {
        Some(op) => Ok(op),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no operation {id}"),
        )),
    }
}

/// One operation with its report and log (read).
#[utoipa::path(get, path = "/api/v1/operations/{id}", params(("id" = i64, Path)),
    responses((status = 200, description = "done", body = Operation), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem)))]
async fn get_operation(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    api.authorize(&headers, remote, Role::Read).await?;
    Ok(Json(operation(&api, operation_id(&id)?)?))
}

/// The operation's events as Server-Sent Events (read): `phase`, `progress`, `error` and
/// `log` in the order they happened, ending with `report` (status, report, error). For an
/// operation that has ended: its log lines, then the report.
#[utoipa::path(get, path = "/api/v1/operations/{id}/events", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "events, each `data` a JSON object {seq, kind, data}"), (status = 404, description = "no such name or path", body = Problem)))]
async fn operation_events(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    api.authorize(&headers, remote, Role::Read).await?;
    let id = operation_id(&id)?;
    let events: std::pin::Pin<Box<dyn Stream<Item = Event> + Send>> = match api.service.running(id)
    {
        Some(op) => {
            let (past, live) = op.subscribe();
            let live = stream::unfold(live, |rx| async move {
                let mut rx = rx?;
                rx.recv().await.ok().map(|e| (e, Some(rx)))
            });
            Box::pin(stream::iter(past).chain(live))
        }
        None => Box::pin(stream::iter(replay(&operation(&api, id)?))),
    };
    let sse = events.map(|e| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .id(e.seq.to_string())
                .event(e.kind)
                .json_data(&e)
                .unwrap_or_default(),
        )
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The events of an operation that has ended: its log lines, then its report.
fn replay(op: &Operation) -> Vec<Event> {
    let mut events: Vec<Event> = (op.log.iter().enumerate())
        .map(|(seq, line)| Event {
            seq: seq as u64,
            kind: "log",
            data: serde_json::Value::String(line.clone()),
        })
        .collect();
    events.push(Event {
        seq: events.len() as u64,
        kind: "report",
        data: serde_json::json!({"status": op.status, "report": op.report, "error": op.error}),
    });
    events
}

#[derive(Serialize, ToSchema)]
struct Cancelling {
    operation: i64,
    cancelling: bool,
}

/// Cancels a running operation (operate); it stops at its next entry, chunk or pack and
/// releases its lock. 409 when it has ended.
#[utoipa::path(post, path = "/api/v1/operations/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 202, description = "started: the new operation's id", body = Cancelling), (status = 404, description = "no such name or path", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
async fn cancel_operation(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Cancelling>)> {
    let caller = api.authorize(&headers, remote, Role::Operate).await?;
    let id = operation_id(&id)?;
    let Some(op) = api.service.running(id) else {
        let op = operation(&api, id)?;
        let detail = format!(
            "operation {id} is not running: it ended {}",
            op.status.name()
        );
        return Err(Problem::new(StatusCode::CONFLICT, "not_running", detail));
    };
    op.cancel.cancel();
    api.audit(&caller, "operation.cancel", &id.to_string(), remote)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelling {
            operation: id,
            cancelling: true,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct SnapshotQuery {
    /// Only snapshots from this host.
    host: Option<String>,
    /// Only snapshots with this tag.
    tag: Option<String>,
    /// Only snapshots that include this path.
    path: Option<String>,
    /// Only snapshots this plan's runs made (tagged `plan:NAME`).
    plan: Option<String>,
}

/// The repository's snapshots, oldest first, filtered by host, tag, path and plan (read).
#[utoipa::path(get, path = "/api/v1/repositories/{name}/snapshots", params(("name" = String, Path), SnapshotQuery),
    responses((status = 200, description = "snapshots as `strata snapshots --json` lists them"), (status = 404, description = "no such name or path", body = Problem)))]
async fn list_snapshots(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<SnapshotQuery>,
) -> ApiResult<Response> {
    api.authorize(&headers, remote, Role::Read).await?;
    let repo = api.open(&name).await?;
    let selection = strata::select::selection::Selection {
        ids: Vec::new(),
        latest: false,
        host: q.host,
        tags: (q.tag.into_iter())
            .chain(q.plan.as_deref().map(super::runner::plan_tag))
            .collect(),
        paths: q.path.into_iter().collect(),
    };
    let listed = api_browse::blocking(move || {
        let all = repo.snapshots()?;
        let listed: Vec<Listed> = selection.apply(&all).into_iter().map(Listed::new).collect();
        Ok(serde_json::to_vec(&listed)?)
    });
    let kind = [(header::CONTENT_TYPE, "application/json")];
    Ok((kind, listed.await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AuditQuery {
    /// At most this many lines, 1 to 1000 (default 100).
    limit: Option<String>,
}

/// The audit log, newest first: who (token name), what, on what, when, from where (admin).
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, description = "audit lines"), (status = 403, description = "the token's role is too low", body = Problem)))]
async fn audit_log(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    api.authorize(&headers, remote, Role::Admin).await?;
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    Ok(Json(
        api.service
            .state
            .audit_log(limit)
            .map_err(Problem::internal)?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AlertsQuery {
    /// At most this many, 1 to 100 (default 20).
    limit: Option<String>,
}

/// The alerts that fired lately (as sent to the notify targets, whether or not any takes
/// them), newest first; kept in memory, so none from before the service's start (read).
#[utoipa::path(get, path = "/api/v1/alerts", params(AlertsQuery),
    responses((status = 200, description = "the alerts' bodies"), (status = 400, description = "bad input: problem details naming the field", body = Problem)))]
async fn recent_alerts(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Query(q): Query<AlertsQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    api.authorize(&headers, remote, Role::Read).await?;
    let limit = limit(q.limit.as_deref(), 20, 100)?;
    Ok(Json(api.service.alerts.latest(limit as usize)))
}

/// Prometheus metrics in the text format (read, or no token with `metrics_open`).
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "application/openmetrics-text", description = "the metrics")))]
async fn metrics(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !api.service.config.metrics_open {
        api.authorize(&headers, remote, Role::Read).await?;
    }
    let text = super::metrics::render(&api.service).map_err(Problem::internal)?;
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, kind)], text).into_response())
}
