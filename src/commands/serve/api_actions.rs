//! The API's repository actions and token management: restore files into a directory of
//! this host (operate), check (operate), forget by a policy and prune (admin), each started
//! as an operation with an id, events and history like a plan's run, waiting for
//! conflicting locks as the scheduler's runs do; and list, create and revoke API tokens
//! (admin). Every state-changing call is audited.
use super::api::{ApiResult, Problem, Remote, Shared, Started, not_started};
use super::config::Repository;
use super::runner::{Running, open, outcome};
use super::state::{StateError, Status, TokenInfo};
use super::tokens::{self, Role};
use super::{Launch, Service};
use crate::commands::forget::PolicyArgs;
use anyhow::Result;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use strata::ops::checker::ReadData;
use strata::ops::restorer::{self, RestoreOptions};
use strata::ops::sandbox::OnConflict;
use strata::select::filter::Patterns;
use utoipa::ToSchema;

/// A JSON request body; bad JSON, an unknown or a missing field is a 400 naming it.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let bytes = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| Problem::invalid("body", e.to_string()))
}

/// What to do where the target already holds an entry (`strata restore --on-conflict`).
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Conflict {
    /// Write nothing, and fail listing the conflicts.
    #[default]
    Fail,
    Skip,
    Overwrite,
    /// Restore as `NAME.strata-restored[-N]` beside the existing entry.
    Rename,
}

impl From<Conflict> for OnConflict {
    fn from(c: Conflict) -> OnConflict {
        match c {
            Conflict::Fail => OnConflict::Fail,
            Conflict::Skip => OnConflict::Skip,
            Conflict::Overwrite => OnConflict::Overwrite,
            Conflict::Rename => OnConflict::Rename,
        }
    }
}

/// A restore of files into a directory of the service's host (`strata restore`).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreRequest {
    /// Snapshot id prefix or `latest` (the default).
    #[serde(default = "latest")]
    snapshot: String,
    /// A path inside the snapshot whose contents go into the target (default: all of it).
    #[serde(default)]
    path: String,
    /// The directory to restore into, absolute (created if missing).
    #[schema(value_type = String)]
    target: PathBuf,
    /// Only paths matching these globs.
    #[serde(default)]
    include: Vec<String>,
    /// Not the paths matching these globs.
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    on_conflict: Conflict,
    /// Plan only: the report lists what would be written.
    #[serde(default)]
    dry_run: bool,
    /// Re-read what was written and compare it with the snapshot.
    #[serde(default)]
    verify: bool,
}

fn latest() -> String {
    "latest".to_string()
}

impl RestoreRequest {
    fn options(&self, cancel: strata::cancel::Cancel) -> ApiResult<RestoreOptions> {
        if !self.target.is_absolute() {
            return Err(Problem::invalid(
                "target",
                "the target must be an absolute path",
            ));
        }
        let patterns = |globs: &[String], field| {
            Patterns::new(globs).map_err(|e| Problem::invalid(field, e.to_string()))
        };
        Ok(RestoreOptions {
            target: self.target.clone(),
            subpath: (strata::vfs::components(self.path.as_bytes()).into_iter())
                .map(<[u8]>::to_vec)
                .collect(),
            include: patterns(&self.include, "include")?,
            exclude: patterns(&self.exclude, "exclude")?,
            on_conflict: self.on_conflict.into(),
            dry_run: self.dry_run,
            verify: self.verify,
            owner: rustix::process::geteuid().is_root(),
            cancel,
        })
    }
}

impl Service {
    /// Restores under a shared lock, as `strata restore` does; partial when entries failed.
    fn restore_files(
        &self,
        repo: &Repository,
        opts: RestoreOptions,
        spec: &str,
        op: &Running,
    ) -> Result<(Status, Value)> {
        let ctx = self.context(repo, op.cancel.clone());
        let (indexed, _lock) = ctx.index_reading(open(&ctx, repo)?, "restore")?;
        let (_, snap) = indexed.find_snapshot(spec)?;
        let budget = strata::walk::entry_budget(&snap);
        let report = restorer::restore(&indexed, snap.tree, &opts, budget, op)?;
        let status = match report.errors.is_empty() && report.verify_failures.is_empty() {
            true => Status::Success,
            false => Status::Partial,
        };
        Ok((status, serde_json::to_value(&report)?))
    }

    /// Forgets by `policy` on its own (not after a backup): the repository opened, its
    /// counts recorded after.
    fn forget_now(
        &self,
        repo: &Repository,
        policy: &PolicyArgs,
        dry_run: bool,
        op: &Running,
    ) -> Result<(Status, Value)> {
        let ctx = self.context(repo, op.cancel.clone());
        let opened = open(&ctx, repo)?;
        opened.ensure_writable()?;
        let indexed = opened.open_index(ctx.cache().as_deref())?;
        let report = self.forget((&ctx, repo), &indexed, policy, dry_run, op)?;
        self.record_figures(repo.name.get_ref(), &indexed)?;
        Ok((Status::Success, report))
    }
}

/// Starts an action on the repository `name` as an operation: `kind` (as the history shows
/// it), keyed by `key` so that one of it runs at a time (else 409 `action_running`).
fn launch(
    api: &super::api::Api,
    name: &str,
    kind: &'static str,
    key: String,
    who: &str,
    work: impl FnOnce(&Service, &Repository, &Running) -> Result<(Status, Value)> + Send + 'static,
) -> ApiResult<i64> {
    let after = |_: &Service, _: &str, _: i64, _: &super::runner::Outcome| {};
    launch_then(api, name, kind, key, who, work, after)
}

/// `launch`, with `after` run once the operation has ended and is recorded (alerts).
fn launch_then(
    api: &super::api::Api,
    name: &str,
    kind: &'static str,
    key: String,
    who: &str,
    work: impl FnOnce(&Service, &Repository, &Running) -> Result<(Status, Value)> + Send + 'static,
    after: impl FnOnce(&Service, &str, i64, &super::runner::Outcome) + Send + 'static,
) -> ApiResult<i64> {
    let repository = name.to_string();
    let launch = Launch {
        key,
        kind,
        plan: None,
        repository: Some(repository.clone()),
    };
    let run = move |service: &Service, op: &Running| {
        let result = service
            .repository(&repository)
            .and_then(|repo| work(service, repo, op));
        outcome(result, None, op)
    };
    (api.service)
        .launch(launch, &format!("{kind} by {who}"), run, after)
        .map_err(|e| not_started(e, "action_running"))
}

/// Restores files of a snapshot into a directory of this host (operate): the operation's
/// id. One restore into a target at a time (409 `action_running`).
#[utoipa::path(post, path = "/api/v1/repositories/{name}/restore", params(("name" = String, Path)),
    request_body = RestoreRequest,
    responses((status = 202, description = "started: the new operation's id", body = Started), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
pub(super) async fn restore(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let caller = api.authorize(&headers, remote, Role::Operate).await?;
    api.known_repository(&name)?;
    let req: RestoreRequest = body(&bytes)?;
    let opts = req.options(strata::cancel::Cancel::default())?;
    let key = format!("restore:{}", req.target.display());
    let target = req.target.display().to_string();
    let id = launch(
        &api,
        &name,
        "restore",
        key,
        &caller.name,
        move |service, repo, op| {
            let opts = RestoreOptions {
                cancel: op.cancel.clone(),
                ..opts
            };
            service.restore_files(repo, opts, &req.snapshot, op)
        },
    )?;
    api.audit(
        &caller,
        "repository.restore",
        &format!("{name} -> {target}"),
        remote,
    )?;
    Ok((StatusCode::ACCEPTED, Json(Started { operation: id })))
}

/// A forget by a retention policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ForgetRequest {
    /// The `forget` options in snake case, as a plan's `retention` (e.g. `{"keep_last": 5}`).
    #[schema(value_type = Object)]
    policy: PolicyArgs,
    /// Only decide: the report lists what would go. True unless given false.
    #[serde(default = "yes")]
    dry_run: bool,
}

fn yes() -> bool {
    true
}

/// Applies a retention policy (admin): a dry run unless `dry_run` is false. The report
/// lists the snapshots it removes (`remove`) and removed (`removed`).
#[utoipa::path(post, path = "/api/v1/repositories/{name}/forget", params(("name" = String, Path)),
    request_body = ForgetRequest,
    responses((status = 202, description = "started: the new operation's id", body = Started), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
pub(super) async fn forget(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let caller = api.authorize(&headers, remote, Role::Admin).await?;
    api.known_repository(&name)?;
    let req: ForgetRequest = body(&bytes)?;
    let key = format!("forget:{name}");
    let dry_run = req.dry_run;
    let id = launch(
        &api,
        &name,
        "forget",
        key,
        &caller.name,
        move |service, repo, op| service.forget_now(repo, &req.policy, req.dry_run, op),
    )?;
    let action = if dry_run {
        "repository.forget.dry_run"
    } else {
        "repository.forget"
    };
    api.audit(&caller, action, &name, remote)?;
    Ok((StatusCode::ACCEPTED, Json(Started { operation: id })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PruneRequest {
    /// Repack packs with more than this percentage unused (default 20).
    #[serde(default = "twenty")]
    max_unused: f64,
    /// Only report what would be deleted and repacked.
    #[serde(default)]
    dry_run: bool,
}

fn twenty() -> f64 {
    20.0
}

/// Deletes unused data and repacks partly used packs (admin).
#[utoipa::path(post, path = "/api/v1/repositories/{name}/prune", params(("name" = String, Path)),
    request_body = PruneRequest,
    responses((status = 202, description = "started: the new operation's id", body = Started), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
pub(super) async fn prune(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let caller = api.authorize(&headers, remote, Role::Admin).await?;
    api.known_repository(&name)?;
    let req: PruneRequest = body(&bytes)?;
    if !(0.0..=100.0).contains(&req.max_unused) {
        return Err(Problem::invalid("max_unused", "a percentage from 0 to 100"));
    }
    let key = format!("prune:{name}");
    let id = launch(
        &api,
        &name,
        "prune",
        key,
        &caller.name,
        move |service, repo, op| service.prune(repo, req.max_unused, req.dry_run, op),
    )?;
    api.audit(&caller, "repository.prune", &name, remote)?;
    Ok((StatusCode::ACCEPTED, Json(Started { operation: id })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckRequest {
    /// Also read and verify packs: `all`, `n/m` (the n-th of m groups) or `N%`.
    read_data_subset: Option<String>,
}

/// Checks the repository's structure, and with `read_data_subset` its data (operate): it
/// changes nothing. Failed when it finds damage; its report lists the problems.
#[utoipa::path(post, path = "/api/v1/repositories/{name}/check", params(("name" = String, Path)),
    request_body = CheckRequest,
    responses((status = 202, description = "started: the new operation's id", body = Started), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 404, description = "no such name or path", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
pub(super) async fn check(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let caller = api.authorize(&headers, remote, Role::Operate).await?;
    api.known_repository(&name)?;
    let req: CheckRequest = body(&bytes)?;
    if let Some(subset) = req.read_data_subset.as_deref().filter(|s| *s != "all") {
        ReadData::parse(subset).map_err(|e| Problem::invalid("read_data_subset", e.to_string()))?;
    }
    let key = format!("check:{name}");
    let work = move |service: &Service, repo: &Repository, op: &Running| {
        service.check(repo, req.read_data_subset.as_deref(), op)
    };
    // Damage found is alerted as a check job's is.
    let checked = name.clone();
    let after = move |service: &Service, _: &str, id: i64, out: &super::runner::Outcome| {
        super::notify::after_check(service, &checked, None, id, out)
    };
    let id = launch_then(&api, &name, "check", key, &caller.name, work, after)?;
    api.audit(&caller, "repository.check", &name, remote)?;
    Ok((StatusCode::ACCEPTED, Json(Started { operation: id })))
}

#[derive(Serialize, ToSchema)]
pub(super) struct TokenView {
    name: String,
    role: String,
    created: String,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> TokenView {
        TokenView {
            name: t.name,
            role: t.role,
            created: t.created,
        }
    }
}

/// The API tokens: name, role, creation time; never a secret (admin).
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, description = "done", body = [TokenView]), (status = 403, description = "the token's role is too low", body = Problem)))]
pub(super) async fn list_tokens(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<TokenView>>> {
    api.authorize(&headers, remote, Role::Admin).await?;
    let listed = api.service.state.tokens().map_err(Problem::internal)?;
    Ok(Json(listed.into_iter().map(TokenView::from).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    /// `read`, `operate` or `admin`.
    role: String,
}

/// A token made: its secret, shown this once (only its hash is stored).
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedToken {
    name: String,
    role: String,
    token: String,
}

/// Makes a token (admin); the answer holds its secret, once. 409 `token_exists` when one
/// has that name.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 201, description = "created", body = CreatedToken), (status = 400, description = "bad input: problem details naming the field", body = Problem), (status = 409, description = "conflict: something of this kind runs already", body = Problem)))]
pub(super) async fn create_token(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let caller = api.authorize(&headers, remote, Role::Admin).await?;
    let req: NewToken = body(&bytes)?;
    if req.name.trim().is_empty() {
        return Err(Problem::invalid("name", "the name must not be empty"));
    }
    let Some(role) = Role::parse(&req.role) else {
        let detail = format!("role {:?} is not read, operate or admin", req.role);
        return Err(Problem::invalid("role", detail));
    };
    let token = tokens::create(&api.service.state, &req.name, role).map_err(|e| match e {
        StateError::TokenExists(_) => {
            Problem::new(StatusCode::CONFLICT, "token_exists", e.to_string())
        }
        e => Problem::internal(e),
    })?;
    api.audit(&caller, "token.create", &req.name, remote)?;
    let created = CreatedToken {
        name: req.name,
        role: role.name().to_string(),
        token,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Revoked {
    name: String,
    revoked: bool,
}

/// Revokes the token `name` (admin): requests bearing it are refused from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "done", body = Revoked), (status = 404, description = "no such name or path", body = Problem)))]
pub(super) async fn revoke_token(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Revoked>> {
    let caller = api.authorize(&headers, remote, Role::Admin).await?;
    api.service.state.revoke_token(&name).map_err(|e| match e {
        StateError::NoToken(_) => Problem::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        e => Problem::internal(e),
    })?;
    api.audit(&caller, "token.revoke", &name, remote)?;
    Ok(Json(Revoked {
        name,
        revoked: true,
    }))
}
