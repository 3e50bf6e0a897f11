//! The web dashboard served at `/`: its pages and assets (embedded in the binary with
//! `include_str!`), login and logout, and the sessions that let the pages call the JSON API
//! with an HttpOnly cookie instead of a bearer token, calls needing more than `read` also
//! carrying the session's CSRF token in a header. The pages only call the API: nothing here
//! reads the repositories or acts on them.
use super::api::{Api, ApiResult, Problem, Remote, Shared};
use super::tokens::{self, Caller, Role};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

const COOKIE: &str = "strata_session";
/// The header a page sends its session's CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends this long after its login, whatever is done with it.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

const INDEX: &str = include_str!("dashboard/index.html");
const LOGIN: &str = include_str!("dashboard/login.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
const ICON: &str = include_str!("dashboard/icon.svg");

/// The routes of the pages, of login and logout, and of the assets.
pub(super) fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/", get(page))
        .route("/plans/{name}", get(page))
        .route("/operations/{id}", get(page))
        .route("/repositories/{name}", get(page))
        .route("/repositories/{name}/snapshots/{id}", get(page))
        .route("/repositories/{name}/restore", get(page))
        .route("/repositories/{name}/timeline", get(page))
        .route("/repositories/{name}/compare", get(page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/session", get(whoami))
        .route("/assets/app.js", get(|| asset("text/javascript", SCRIPT)))
        .route("/assets/style.css", get(|| asset("text/css", STYLE)))
        .route("/assets/icon.svg", get(|| asset("image/svg+xml", ICON)))
}

/// One login: the hash of the token it was made with (never the token), so that a revoked
/// token ends its sessions, and the CSRF token its pages send back.
struct Session {
    token: [u8; 32],
    csrf: String,
    expires: Instant,
}

/// The open sessions by id, in memory: a restart of the service logs everyone out.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn open(&self, token: [u8; 32]) -> String {
        let id = random_hex();
        let session = Session {
            token,
            csrf: random_hex(),
            expires: Instant::now() + LIFETIME,
        };
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > Instant::now());
        sessions.insert(id.clone(), session);
        id
    }

    /// The token hash and CSRF token of the live session `id`.
    fn get(&self, id: &str) -> Option<([u8; 32], String)> {
        let sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = sessions.get(id).filter(|s| s.expires > Instant::now())?;
        Some((s.token, s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The session id in the request's cookies.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    (headers.get_all(header::COOKIE).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The caller of a request by its session cookie, with the session's id and CSRF token;
/// with `csrf`, the request must also carry that CSRF token in its header.
fn session(api: &Api, headers: &HeaderMap, csrf: bool) -> ApiResult<(String, Caller, String)> {
    let unauthorized = || {
        let detail = "a bearer token or a session is needed";
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    };
    let id = session_id(headers).ok_or_else(unauthorized)?;
    let (token, expected) = api.sessions.get(id).ok_or_else(unauthorized)?;
    if csrf {
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        let equal: bool = sent.ct_eq(expected.as_bytes()).into();
        if !equal {
            let detail = "a session needs its CSRF token in the X-CSRF-Token header for this";
            return Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", detail));
        }
    }
    let state = &api.service.state;
    let caller = tokens::find_hash(state, &token).map_err(Problem::internal)?;
    let caller = caller.ok_or_else(unauthorized)?;
    Ok((id.to_string(), caller, expected))
}

/// The caller of an API request without a bearer token, by its session: reading needs the
/// cookie, anything more also the CSRF header.
pub(super) fn session_caller(api: &Api, headers: &HeaderMap, role: Role) -> ApiResult<Caller> {
    Ok(session(api, headers, role > Role::Read)?.1)
}

fn cookie(api: &Api, id: &str, max_age: u64) -> HeaderValue {
    let secure = if api.service.config.tls().is_some() {
        "; Secure"
    } else {
        ""
    };
    let text =
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).expect("a cookie of hex digits")
}

/// An HTML page, which may load only the dashboard's own assets.
fn html(text: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, text).into_response()
}

async fn asset(kind: &'static str, text: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, kind),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, text).into_response()
}

/// Every page but login: the same document, whose script draws the page its path names;
/// without a session, the login page.
async fn page(State(api): Shared, headers: HeaderMap) -> Response {
    match session(&api, &headers, false) {
        Ok(_) => html(INDEX),
        Err(_) => Redirect::to("/login").into_response(),
    }
}

async fn login_page() -> Response {
    html(LOGIN)
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

#[derive(Serialize)]
struct Me {
    name: String,
    role: &'static str,
    /// Only for the session's own pages (`GET /session`).
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
}

/// Checks the token as the API does (the same slowing down and lockout after failures) and
/// opens a session for it.
async fn login(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    Json(body): Json<Login>,
) -> ApiResult<Response> {
    let token = body.token.trim();
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Problem::invalid("token", "a token is printable ASCII"))?;
    let headers = HeaderMap::from_iter([(header::AUTHORIZATION, bearer)]);
    let caller = api.authorize(&headers, remote, Role::Read).await?;
    let id = api.sessions.open(tokens::hash(token));
    api.audit(&caller, "session.login", &caller.name, remote)?;
    let me = Me {
        name: caller.name,
        role: caller.role.name(),
        csrf: None,
    };
    let set = [(header::SET_COOKIE, cookie(&api, &id, LIFETIME.as_secs()))];
    Ok((set, Json(me)).into_response())
}

async fn logout(
    State(api): Shared,
    ConnectInfo(remote): Remote,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (id, caller, _) = session(&api, &headers, true)?;
    api.sessions.close(&id);
    api.audit(&caller, "session.logout", &caller.name, remote)?;
    let set = [(header::SET_COOKIE, cookie(&api, "", 0))];
    Ok((set, StatusCode::NO_CONTENT).into_response())
}

/// The session's token name and role, and the CSRF token its pages send back.
async fn whoami(State(api): Shared, headers: HeaderMap) -> ApiResult<Json<Me>> {
    let (_, caller, csrf) = session(&api, &headers, false)?;
    Ok(Json(Me {
        name: caller.name,
        role: caller.role.name(),
        csrf: Some(csrf),
    }))
}
