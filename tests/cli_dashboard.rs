//! The web dashboard of `strata serve` (issue 17), end to end: the real binary on a free
//! port of 127.0.0.1; its sessions (cookie flags, CSRF, logout, revocation) driven by a
//! `reqwest` client, and its pages driven in headless Chromium by the Playwright script
//! tests/dashboard/dashboard.py, with the Chromium and the virtualenv that `.ci/setup`
//! installs.
mod common;

use common::serve::*;
use common::{Rng, write_big};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Logs in with `token`: the answer, asserted to be a success.
fn login(server: &Server, token: &str) -> Response {
    let answer = (server.client.post(server.url("/login")))
        .json(&json!({ "token": token }))
        .send()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "{}", server.log());
    answer
}

/// The `strata_session=ID` pair of a login's Set-Cookie, and the whole header.
fn session_cookie(answer: &Response) -> (String, String) {
    let set = answer.headers()[header::SET_COOKIE].to_str().unwrap();
    let pair = set.split(';').next().unwrap().to_string();
    assert!(pair.starts_with("strata_session="), "{set}");
    (pair, set.to_string())
}

/// A request carrying the session cookie `cookie` and, if any, the CSRF token `csrf`.
fn with_session(
    server: &Server,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = (server.client.request(method, server.url(path))).header(header::COOKIE, cookie);
    if let Some(csrf) = csrf {
        req = req.header("X-CSRF-Token", csrf);
    }
    req.send().unwrap()
}

#[test]
fn sessions_use_an_httponly_strict_cookie_and_changes_need_the_csrf_token() {
    let setup = Setup::new(HOURLY);
    let operator = setup.token("operator", "operate");
    let server = setup.start();
    let page = server.client.get(server.url("/")).send().unwrap();
    assert!(
        page.url().path().ends_with("/login"),
        "no session: the login page"
    );
    let login_page = page.text().unwrap();
    assert!(login_page.contains(">Token</label>"), "{login_page}");

    let (cookie, set) = session_cookie(&login(&server, &operator));
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(&operator),
        "the cookie is not the token: {set}"
    );
    let me: Value = with_session(&server, "GET", "/session", &cookie, None)
        .json()
        .unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("operator"), Some("operate"))
    );
    let csrf = me["csrf"].as_str().unwrap().to_string();

    // Reading needs the cookie alone; running a plan also the CSRF token.
    let plans = with_session(&server, "GET", "/api/v1/plans", &cookie, None);
    assert_eq!(plans.status(), StatusCode::OK);
    let run = "/api/v1/plans/app/run";
    for wrong in [None, Some("0".repeat(64).as_str())] {
        let refused = with_session(&server, "POST", run, &cookie, wrong);
        assert_eq!(
            refused.status(),
            StatusCode::FORBIDDEN,
            "CSRF token {wrong:?}"
        );
    }
    let started = with_session(&server, "POST", run, &cookie, Some(&csrf));
    assert_eq!(started.status(), StatusCode::ACCEPTED, "{}", server.log());
    let id = started.json::<Value>().unwrap()["operation"]
        .as_i64()
        .unwrap();
    assert_eq!(server.wait_ended(id, &operator)["status"], "success");
    let page = with_session(&server, "GET", &format!("/operations/{id}"), &cookie, None);
    assert!(
        page.url().path().ends_with(&format!("/operations/{id}")),
        "a page for a session"
    );

    // Logout ends the session; revoking the token ends the others.
    let logout = with_session(&server, "POST", "/logout", &cookie, Some(&csrf));
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = with_session(&server, "GET", "/api/v1/plans", &cookie, None);
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let (cookie, _) = session_cookie(&login(&server, &operator));
    let revoke = setup
        .cmd(&["token", "revoke", "operator"])
        .output()
        .unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let after = with_session(&server, "GET", "/api/v1/plans", &cookie, None);
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "a revoked token's session ends"
    );
}

/// Runs the scenario `scenario` of tests/dashboard/dashboard.py with `args` against
/// `server`, asserting it succeeds; the directory of its screenshots, and what it printed.
fn browse(server: &Server, scenario: &str, args: &[&str]) -> (PathBuf, String) {
    let python = playwright_python();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{}", now_nanos()));
    fs::create_dir_all(&out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/dashboard.py");
    let run = Command::new(python)
        .arg(script)
        .arg(scenario)
        .arg(&out)
        .arg(&server.base)
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the browser script failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
        server.log()
    );
    eprintln!("screenshots in {}", out.display());
    (out, String::from_utf8_lossy(&run.stdout).trim().to_string())
}

/// The python of the virtualenv with Playwright, asserting it and Chromium are installed.
fn playwright_python() -> PathBuf {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/setup (it installs Debian's chromium)"
    );
    common::server::installed(
        "STRATA_PLAYWRIGHT_PYTHON",
        "playwright-venv/bin/python",
        "Playwright virtualenv's python",
    )
}

#[test]
fn the_dashboard_in_chromium_runs_a_plan_by_role_and_browses_its_snapshot_to_a_download() {
    let setup = Setup::new(HOURLY);
    let file = setup.src.join("deep/er/data.bin");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut data = vec![0u8; 300_000];
    Rng::new(17).fill(&mut data);
    fs::write(&file, &data).unwrap();
    let many = setup.src.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..250 {
        fs::write(many.join(format!("f{i:03}")), i.to_string()).unwrap();
    }
    let reader = setup.token("reader", "read");
    let operator = setup.token("operator", "operate");
    let server = setup.start();
    let (file_arg, many_arg) = (file.to_str().unwrap(), many.to_str().unwrap());
    let args = [&reader, &operator, "app", file_arg, many_arg];
    let (out, printed) = browse(&server, "run", &args);
    let id: i64 = printed.parse().unwrap();
    let op = server.json(
        "GET",
        &format!("/api/v1/operations/{id}"),
        &reader,
        StatusCode::OK,
    );
    assert_eq!(op["status"], "success", "the run the browser started");
    assert_eq!(
        (&op["kind"], &op["plan"]),
        (&json!("backup"), &json!("app"))
    );
    let downloaded = fs::read(out.join("download.bin")).unwrap();
    assert!(downloaded == data, "the downloaded file equals the source");
    for shot in [
        "login",
        "overview-read",
        "overview-phone",
        "overview",
        "operation",
        "plan",
        "repository",
        "tree",
    ] {
        let file = out.join(format!("{shot}.png"));
        let size = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "no screenshot {file:?}");
    }
}

#[test]
fn a_running_backup_is_cancelled_from_its_operation_page_and_the_repository_checks_clean() {
    let setup = Setup::new(HOURLY);
    write_big(&setup.src.join("big"), 4, 64);
    let token = setup.token("operator", "operate");
    let server = setup.start();
    let (_, printed) = browse(&server, "cancel", &[&token, "app"]);
    let id: i64 = printed.parse().unwrap();
    let op = server.wait_ended(id, &token);
    assert_eq!(op["status"], "cancelled", "{op}");
    assert_eq!(
        setup.locks_left(),
        0,
        "the cancelled backup released its lock"
    );
    setup.repo.ok(["check"]);
}

#[test]
fn a_plan_whose_last_run_failed_shows_as_failing_on_the_overview_with_its_alert() {
    let setup = Setup::new(HOURLY);
    fs::remove_dir_all(&setup.src).unwrap();
    let reader = setup.token("reader", "read");
    let operator = setup.token("operator", "operate");
    let server = setup.start();
    let id = server.run_now(&operator);
    assert_eq!(server.wait_ended(id, &reader)["status"], "failed");
    // The alert follows the run's record.
    let deadline = std::time::Instant::now() + PATIENCE;
    let alerts = loop {
        let alerts = server.json("GET", "/api/v1/alerts", &reader, StatusCode::OK);
        if !alerts.as_array().unwrap().is_empty() || std::time::Instant::now() > deadline {
            break alerts;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(alerts[0]["event"], "failure", "{alerts}");
    assert_eq!(alerts[0]["operation"], id, "{alerts}");
    let anonymous = server.request("GET", "/api/v1/alerts", None);
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    browse(&server, "failing", &[&reader, "app"]);
}

#[test]
fn a_directory_restored_through_the_wizard_after_its_dry_run_equals_the_source_and_snapshots_compare()
 {
    let setup = Setup::new(HOURLY);
    let dir = setup.src.join("d1");
    let mut data = vec![0u8; 200_000];
    Rng::new(23).fill(&mut data);
    fs::create_dir_all(dir.join("deep/er")).unwrap();
    fs::write(dir.join("deep/er/data.bin"), &data).unwrap();
    let reader = setup.token("reader", "read");
    let operator = setup.token("operator", "operate");
    let admin = setup.token("admin", "admin");
    let server = setup.start();
    let id = server.run_now(&operator);
    assert_eq!(server.wait_ended(id, &reader)["status"], "success");
    let target = setup.repo.path().join("restored/here");
    let args = [
        reader.as_str(),
        &operator,
        "main",
        dir.to_str().unwrap(),
        target.to_str().unwrap(),
    ];
    let (out, printed) = browse(&server, "restore", &args);
    let id: i64 = printed.parse().unwrap();
    let op = server.wait_ended(id, &reader);
    assert_eq!(
        (&op["kind"], &op["status"]),
        (&json!("restore"), &json!("success")),
        "{op}"
    );
    let want = common::e2e::dir_contents(&dir);
    assert!(want.len() >= 4, "{:?}", want.keys());
    assert_eq!(
        common::e2e::dir_contents(&target),
        want,
        "the restored directory equals the source"
    );
    let history = server.json("GET", "/api/v1/operations", &reader, StatusCode::OK);
    let dry_runs = (history.as_array().unwrap().iter())
        .filter(|o| {
            o["kind"] == "restore"
                && o["report"]["planned"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
        })
        .count();
    assert_eq!(
        dry_runs, 2,
        "two dry runs listed what would be written: {history}"
    );
    for shot in ["restore", "restore-operation"] {
        let size = fs::metadata(out.join(format!("{shot}.png"))).map(|m| m.len());
        assert!(size.unwrap_or(0) > 0, "no screenshot {shot}");
    }

    // A second snapshot, compared with the first on the repository's page.
    let (added, removed, changed) = (
        setup.src.join("d2/new.txt"),
        setup.src.join("d3/e0/f00003.txt"),
        setup.src.join("d0/e0/f00000.txt"),
    );
    fs::write(&added, "new\n").unwrap();
    fs::remove_file(&removed).unwrap();
    fs::write(&changed, "changed for the comparison\n").unwrap();
    let id = server.run_now(&operator);
    assert_eq!(server.wait_ended(id, &reader)["status"], "success");
    let paths = [&added, &removed, &changed].map(|p| p.to_str().unwrap());
    let args = [
        reader.as_str(),
        &admin,
        "main",
        paths[0],
        paths[1],
        paths[2],
    ];
    browse(&server, "compare", &args);
    let history = server.json("GET", "/api/v1/operations", &reader, StatusCode::OK);
    for kind in ["check", "prune"] {
        let op = (history.as_array().unwrap().iter()).find(|o| o["kind"] == kind);
        assert_eq!(
            op.map(|o| &o["status"]),
            Some(&json!("success")),
            "the {kind} the admin started: {history}"
        );
    }
}

#[test]
fn a_collection_restored_to_a_second_picked_on_the_timeline_equals_its_state_then() {
    use bson::doc;
    use common::mongo::{Mongo, assert_same_state, shared, unique_db};
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("dash");
    m.insert(&db, "a", (0..50).map(|i| doc! {"_id": i, "v": i}).collect());
    let setup = Setup::new(HOURLY);
    setup.repo.ok(["backup", "--mongo", uri, "--mongo-db", &db]);
    let at_backup = m.state(&db);
    let file = uri_file(&setup.repo, "mongo.uri", uri);
    setup.write_config(HOURLY, &follower("f", &file, ""));
    let operator = setup.token("operator", "operate");
    let server = setup.start();
    m.insert(
        &db,
        "a",
        (50..80).map(|i| doc! {"_id": i, "v": i}).collect(),
    );
    m.run(
        &db,
        doc! {"update": "a", "updates": [{"q": {"_id": 3}, "u": {"$set": {"v": "three"}}}]},
    );
    let then = ts(&m.cluster_time()).0;
    let want = m.state(&db);
    // The timeline picks whole seconds: the changes after come in a later one.
    while now_nanos() / 1_000_000_000 <= then as u128 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    m.run(
        &db,
        doc! {"delete": "a", "deletes": [{"q": {"_id": {"$lt": 20}}, "limit": 0}]},
    );
    m.insert(&db, "b", vec![doc! {"_id": "later"}]);
    let after = ts(&m.cluster_time());
    assert!(after.0 > then, "the changes came after the second picked");
    let tick_db = unique_db("tick");
    let deadline = std::time::Instant::now() + PATIENCE;
    for tick in 0.. {
        m.insert(&tick_db, "tick", vec![doc! {"_id": tick}]);
        let view = server.follower(&operator, "f");
        if view["last_archived_ts"].as_str().map(ts) >= Some(after) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not archived: {view}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let (copy, copy_of_snapshot) = (unique_db("dash_at"), unique_db("dash_snap"));
    let args = [
        operator.as_str(),
        "main",
        &then.to_string(),
        uri,
        &format!("{db}.*"),
        &format!("{copy}.*"),
        &format!("{copy_of_snapshot}.*"),
    ];
    let (out, printed) = browse(&server, "timeline", &args);
    let (id, of_snapshot) = printed.split_once(' ').unwrap();
    let (id, of_snapshot): (i64, i64) = (id.parse().unwrap(), of_snapshot.parse().unwrap());
    let op = server.wait_ended(id, &operator);
    assert_eq!(
        (&op["kind"], &op["status"]),
        (&json!("restore_mongo"), &json!("success")),
        "{op}"
    );
    assert!(
        op["report"]["mongodb"]["oplog_applied"].as_u64() > Some(0),
        "{op}"
    );
    assert_same_state(&want, &m.state(&copy), "restored to the second picked");
    let history = server.json("GET", "/api/v1/operations", &operator, StatusCode::OK);
    let dry_runs: Vec<i64> = (history.as_array().unwrap().iter())
        .filter(|o| o["kind"] == "restore_mongo" && o["report"]["mongodb"]["dry_run"] == true)
        .map(|o| o["id"].as_i64().unwrap())
        .collect();
    assert!(
        dry_runs.iter().any(|d| *d < id) && dry_runs.iter().any(|d| *d > id && *d < of_snapshot),
        "a dry run before each restore: {history}"
    );
    let op = server.wait_ended(of_snapshot, &operator);
    assert_eq!(op["status"], "success", "{op}");
    assert_eq!(op["report"]["mongodb"]["oplog_applied"], 0, "{op}");
    assert_same_state(
        &at_backup,
        &m.state(&copy_of_snapshot),
        "restored from the snapshot",
    );
    let size = fs::metadata(out.join("timeline.png")).map(|m| m.len());
    assert!(size.unwrap_or(0) > 0, "no timeline screenshot");
}
