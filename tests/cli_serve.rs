//! `strata serve` (issue 16), end to end: the real binary serving its API on a free port of
//! 127.0.0.1, driven by a `reqwest` client: configuration checks, scheduled runs and their
//! history, tokens and roles on every route, run-now, cancel, Server-Sent Events, SIGTERM,
//! `kill -9` and restart, failure alerts to a webhook, metrics and the OpenAPI document.
mod common;

use common::e2e::*;
use common::serve::*;
use common::server::free_port;
use common::*;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

#[test]
fn the_minimal_config_of_the_issue_works_as_written() {
    let (repo, src) = init_with_src();
    generate_small_tree(&src, 5, 10);
    let pw = repo.path().join("repo.pw");
    fs::write(&pw, &repo.password).unwrap();
    let port = free_port();
    let hook_port = free_port();
    let state = repo.path().join("state");
    // The issue's file, with its paths, ports and URL replaced by this test's.
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
state_dir = "{state}"          # the service database, history and audit log

[[repository]]
name = "main"
location = "{location}"          # any location -r accepts
password_file = "{pw}"

[[plan]]
name = "app"
repository = "main"
paths = ["{src}"]
schedule = "*/10 * * * * *"            # cron with optional seconds; or "every 6h"
retention = {{ keep_last = 5 }}          # the forget options, snake_case

[[notify]]
name = "ops"
webhook = "http://127.0.0.1:{hook_port}/hook"
events = ["failure", "stale"]
"#,
        state = state.display(),
        location = repo.repo_path().display(),
        pw = pw.display(),
        src = src.display(),
    );
    let config = repo.path().join("strata.toml");
    fs::write(&config, text).unwrap();
    let check = repo.ok(os_args!["serve", "--check-config", "--config", &config]);
    assert!(
        stdout(&check).contains("the configuration is valid"),
        "{}",
        stdout(&check)
    );
    let setup = Setup {
        repo,
        src,
        port,
        config,
    };
    let token = setup.token("reader", "read");
    let server = setup.start();
    let runs = server.wait_history(&token, 1, |o| o["status"] == "success");
    assert_eq!(runs[0]["kind"], "backup");
    let snaps = setup.repo.json(["snapshots"]);
    assert!(
        !snaps.as_array().unwrap().is_empty(),
        "the scheduled run wrote a snapshot"
    );
    assert!(state.join("state.db").exists());
}

#[test]
fn a_one_second_plan_runs_on_schedule_and_unchanged_backups_succeed() {
    let setup = Setup::new(&format!("{ONE_SECOND}\nretention = {{ keep_last = 2 }}"));
    let token = setup.token("op", "operate");
    let server = setup.start();
    let runs = server.wait_history(&token, 3, |o| o["status"] == "success");
    for run in &runs {
        assert_eq!(run["plan"], "app");
        assert!(run["ended"].is_string(), "{run}");
    }
    let newest = server.json(
        "GET",
        &format!("/api/v1/operations/{}", runs[0]["id"]),
        &token,
        StatusCode::OK,
    );
    let summary = &newest["report"]["summary"];
    assert_eq!(
        summary["files_new"], 0,
        "nothing changed, still a success: {newest}"
    );
    assert!(
        summary["files_unmodified"].as_u64().unwrap() > 0,
        "{newest}"
    );
    assert!(
        !newest["log"].as_array().unwrap().is_empty(),
        "the log is kept: {newest}"
    );
    let plans = server.json("GET", "/api/v1/plans", &token, StatusCode::OK);
    assert_eq!(plans[0]["name"], "app");
    assert!(plans[0]["next_run"].is_string(), "{plans}");
    assert_eq!(plans[0]["schedule"], "* * * * * *");
    // Paused, the plan is not run (the run in progress, if any, ends); resumed, it is.
    server.json("POST", "/api/v1/plans/app/pause", &token, StatusCode::OK);
    let ended = |o: &Value| o["status"] != "running";
    let before = server.wait_history(&token, 1, ended).len();
    let all = |_: &Value| true;
    let settled = server.wait_history(&token, before, all).len();
    std::thread::sleep(Duration::from_secs(3));
    let plans = server.json("GET", "/api/v1/plans", &token, StatusCode::OK);
    assert_eq!(plans[0]["paused"], true);
    let paused = server.wait_history(&token, 1, all).len();
    assert!(
        paused <= settled + 1,
        "runs while paused: {settled} then {paused}"
    );
    server.json("POST", "/api/v1/plans/app/resume", &token, StatusCode::OK);
    server.wait_history(&token, paused + 1, all);
    drop(server);
    let kept = setup.repo.json(["snapshots"]);
    assert!(
        kept.as_array().unwrap().len() <= 3,
        "retention keep_last = 2 applies after each backup: {kept}"
    );
}

/// Every route, the role it needs, and a path that exists for it.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/openapi.json", "read"),
    ("GET", "/api/v1/plans", "read"),
    ("GET", "/api/v1/operations", "read"),
    ("GET", "/api/v1/operations/1", "read"),
    ("GET", "/api/v1/operations/1/events", "read"),
    ("GET", "/api/v1/repositories/main/snapshots", "read"),
    ("GET", "/metrics", "read"),
    ("GET", "/api/v1/alerts", "read"),
    ("POST", "/api/v1/plans/app/pause", "operate"),
    ("POST", "/api/v1/plans/app/resume", "operate"),
    ("POST", "/api/v1/plans/app/run", "operate"),
    ("POST", "/api/v1/operations/1/cancel", "operate"),
    ("GET", "/api/v1/audit", "admin"),
];

/// The MongoDB routes (tests/cli_serve_mongo.rs checks their tokens and roles).
const MONGO_ROUTES: [(&str, &str); 3] = [
    ("GET", "/api/v1/followers"),
    ("GET", "/api/v1/repositories/{name}/timelines"),
    ("POST", "/api/v1/repositories/{name}/restore/mongo"),
];

#[test]
fn every_route_checks_the_token_and_its_role() {
    let setup = Setup::new(&format!("{HOURLY}\nbefore = {{ command = \"sleep 30\" }}"));
    let tokens: BTreeMap<&str, String> = ["read", "operate", "admin"]
        .into_iter()
        .map(|role| (role, setup.token(&format!("t-{role}"), role)))
        .collect();
    let server = setup.start();
    // Operation 1 exists (and runs for a while) before the matrix starts.
    let id = server.run_now(&tokens["operate"]);
    assert_eq!(id, 1);
    let health = server.request("GET", "/api/v1/health", None);
    assert_eq!(health.status(), StatusCode::OK, "health needs no token");
    for (method, path, role) in ROUTES {
        let none = server.request(method, path, None);
        assert_eq!(
            none.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let problem: Value = none.json().unwrap();
        assert_eq!(problem["code"], "unauthorized");
        let wrong = server.request(method, path, Some("strata_0000"));
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        if let Some(low) = role_below(role) {
            let r = server.request(method, path, Some(&tokens[low]));
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} with role {low}"
            );
            let problem: Value = r.json().unwrap();
            assert_eq!(problem["code"], "forbidden");
        }
        let right = server.request(method, path, Some(&tokens[role]));
        let status = right.status();
        // Run-now while operation 1 runs is a conflict, and cancelling it is accepted: both
        // passed the role check.
        assert!(
            status.is_success()
                || (*path == "/api/v1/plans/app/run" && status == StatusCode::CONFLICT),
            "{method} {path} with role {role}: {status} {}",
            right.text().unwrap()
        );
    }
    let audit = server.json("GET", "/api/v1/audit", &tokens["admin"], StatusCode::OK);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for action in [
        "plan.run",
        "plan.pause",
        "plan.resume",
        "operation.cancel",
        "token.create",
    ] {
        assert!(actions.contains(&action), "{action} audited: {audit}");
    }
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["who"] == "t-operate"),
        "{audit}"
    );
    let log = server.log();
    for secret in tokens.values() {
        assert!(!log.contains(secret.as_str()), "a token in the log");
        assert!(
            !audit.to_string().contains(secret.as_str()),
            "a token in the audit log"
        );
    }
    assert!(
        !log.contains(&setup.repo.password),
        "the password in the log"
    );
}

#[test]
fn bad_input_and_unknown_names_answer_problem_details() {
    let setup = Setup::new(HOURLY);
    let token = setup.token("op", "operate");
    let server = setup.start();
    let bad_request = StatusCode::BAD_REQUEST;
    let not_found = StatusCode::NOT_FOUND;
    // (method, path, status, code, field)
    let cases = [
        (
            "GET",
            "/api/v1/operations/abc",
            bad_request,
            "invalid",
            Some("id"),
        ),
        (
            "GET",
            "/api/v1/operations?limit=0",
            bad_request,
            "invalid",
            Some("limit"),
        ),
        (
            "POST",
            "/api/v1/plans/nope/run",
            not_found,
            "not_found",
            None,
        ),
        ("GET", "/api/v1/operations/99", not_found, "not_found", None),
        (
            "GET",
            "/api/v1/repositories/nope/snapshots",
            not_found,
            "not_found",
            None,
        ),
    ];
    for (method, path, status, code, field) in cases {
        let answer = server.json(method, path, &token, status);
        assert_eq!(
            (answer["code"].as_str(), answer["field"].as_str()),
            (Some(code), field),
            "{method} {path}: {answer}"
        );
    }
}

#[test]
fn run_now_answers_an_id_a_second_one_conflicts_and_events_end_with_the_report() {
    let setup = Setup::new(&format!("{HOURLY}\nbefore = {{ command = \"sleep 2\" }}"));
    let token = setup.token("op", "operate");
    let server = setup.start();
    let id = server.run_now(&token);
    let second = server.json(
        "POST",
        "/api/v1/plans/app/run",
        &token,
        StatusCode::CONFLICT,
    );
    assert_eq!(second["code"], "plan_running", "{second}");
    let events = server.events(id, &token, |_| {});
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..events.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "events arrive in order, none missing: {events:?}"
    );
    let phases: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "phase")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["reading", "indexing"], "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "report");
    assert_eq!(last["data"]["status"], "success", "{last}");
    let snapshot = last["data"]["report"]["snapshot_id"].as_str().unwrap();
    let op = server.wait_ended(id, &token);
    assert_eq!(op["status"], "success");
    assert_eq!(op["report"]["snapshot_id"], snapshot);
    let listed = server.json(
        "GET",
        "/api/v1/repositories/main/snapshots",
        &token,
        StatusCode::OK,
    );
    assert_eq!(listed[0]["id"], snapshot, "{listed}");
    // The events of an ended operation: its log, then the same report.
    let again = server.events(id, &token, |_| {});
    assert_eq!(
        again.last().unwrap()["data"]["report"]["snapshot_id"],
        snapshot
    );
}

fn assert_clean(setup: &Setup) {
    assert_eq!(setup.locks_left(), 0, "no lock is left");
    setup.repo.ok(["check"]);
}

#[test]
fn cancel_mid_backup_leaves_the_repository_clean() {
    let setup = Setup::new(HOURLY);
    let (server, token, id) = big_backup_running(&setup);
    let cancelled = server.json(
        "POST",
        &format!("/api/v1/operations/{id}/cancel"),
        &token,
        StatusCode::ACCEPTED,
    );
    assert_eq!(cancelled["cancelling"], true);
    let op = server.wait_ended(id, &token);
    assert_eq!(op["status"], "cancelled", "{op}");
    let again = server.json(
        "POST",
        &format!("/api/v1/operations/{id}/cancel"),
        &token,
        StatusCode::CONFLICT,
    );
    assert_eq!(again["code"], "not_running");
    drop(server);
    assert_clean(&setup);
    assert!(
        setup
            .repo
            .json(["snapshots"])
            .as_array()
            .unwrap()
            .is_empty(),
        "no snapshot from a cancelled backup"
    );
}

#[test]
fn sigterm_during_a_backup_exits_0_within_the_bound_and_releases_the_lock() {
    let setup = Setup::new(HOURLY);
    let (mut server, token, id) = big_backup_running(&setup);
    server.signal(rustix::process::Signal::TERM);
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0), "{}", server.log());
    assert_clean(&setup);
    let restarted = setup.start();
    let op = restarted.json(
        "GET",
        &format!("/api/v1/operations/{id}"),
        &token,
        StatusCode::OK,
    );
    assert_eq!(op["status"], "cancelled", "{op}");
}

#[test]
fn after_kill_9_the_run_shows_as_interrupted_and_the_next_one_succeeds() {
    let setup = Setup::new(HOURLY);
    let (mut server, token, id) = big_backup_running(&setup);
    server.signal(rustix::process::Signal::KILL);
    server.wait_exit(PATIENCE);
    let restarted = setup.start();
    let op = restarted.json(
        "GET",
        &format!("/api/v1/operations/{id}"),
        &token,
        StatusCode::OK,
    );
    assert_eq!(op["status"], "interrupted", "{op}");
    let next = restarted.run_now(&token);
    let op = restarted.wait_ended(next, &token);
    assert_eq!(op["status"], "success", "{op}\n{}", restarted.log());
    drop(restarted);
    assert_clean(&setup);
}

/// `serve --check-config` with the plan's extra keys `plan` and the lines `extra`, expected
/// to fail; its stderr.
fn refused(setup: &Setup, plan: &str, extra: &str) -> String {
    setup.write_config(plan, extra);
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    stderr(&out)
}

#[test]
fn bad_configs_are_refused_naming_file_line_and_field() {
    let setup = Setup::new(HOURLY);
    let file = setup.config.display().to_string();
    let e = refused(&setup, &format!("{HOURLY}\ncolour = \"blue\""), "");
    assert!(
        e.contains(&format!("{file}:15:")) && e.contains("unknown field `colour`"),
        "{e}"
    );
    let e = refused(&setup, r#"schedule = "61 * * * *""#, "");
    assert!(
        e.contains(&format!("{file}:14:")) && e.contains("schedule: invalid cron pattern"),
        "{e}"
    );
    let e = refused(
        &setup,
        &format!("{HOURLY}\nretention = {{ keep_lots = 3 }}"),
        "",
    );
    assert!(
        e.contains(&format!("{file}:15:")) && e.contains("keep_lots"),
        "{e}"
    );
    fs::remove_file(setup.repo.path().join("repo.pw")).unwrap();
    let e = refused(&setup, HOURLY, "");
    assert!(
        e.contains(&format!("{file}:7:")) && e.contains("password_file"),
        "{e}"
    );
    fs::write(setup.repo.path().join("repo.pw"), &setup.repo.password).unwrap();
    let unreachable = "[[repository]]\nname = \"gone\"\nlocation = \"/nonexistent/strata-repo\"\npassword_env = \"HOME\"\n";
    let e = refused(&setup, HOURLY, unreachable);
    assert!(
        e.contains(&format!("{file}:17:")) && e.contains("repository \"gone\": location"),
        "{e}"
    );
    let e = refused(
        &setup,
        "schedule = \"0 * * * *\"\nrepository = \"main\"",
        "",
    );
    assert!(
        e.contains(&format!("{file}:15:")) && e.contains("duplicate key"),
        "{e}"
    );
    setup.write_config(HOURLY, "");
    setup.repo.ok(os_args![
        "serve",
        "--check-config",
        "--config",
        &setup.config
    ]);
}

#[test]
fn a_remote_bind_without_tls_needs_the_flag() {
    let setup = Setup::new(HOURLY);
    let text = fs::read_to_string(&setup.config)
        .unwrap()
        .replace("127.0.0.1:", "0.0.0.0:");
    fs::write(&setup.config, text).unwrap();
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--allow-remote-without-tls"),
        "{}",
        stderr(&out)
    );
    let out = setup
        .cmd(&["--check-config", "--allow-remote-without-tls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_plan_whose_source_vanished_sends_exactly_one_failure_alert() {
    let (port, alerts) = webhook_receiver();
    let setup = Setup::new(ONE_SECOND);
    let notify = format!(
        "[[notify]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\nevents = [\"failure\"]\n"
    );
    setup.write_config(ONE_SECOND, &notify);
    let test = setup.cmd(&["notify-test", "ops"]).output().unwrap();
    assert!(test.status.success(), "{}", stderr(&test));
    let got = alerts.recv_timeout(PATIENCE).unwrap();
    assert_eq!(got["event"], "test");
    let token = setup.token("reader", "read");
    let server = setup.start();
    server.wait_history(&token, 1, |o| o["status"] == "success");
    fs::remove_dir_all(&setup.src).unwrap();
    let failed = |o: &Value| o["status"] == "failed" || o["status"] == "partial";
    server.wait_history(&token, 3, failed);
    let alert = alerts.recv_timeout(PATIENCE).unwrap();
    assert_eq!(alert["event"], "failure", "{alert}");
    assert_eq!(alert["plan"], "app");
    // Two more failed runs after the alert: still only that one.
    let seen = server.wait_history(&token, 1, failed).len();
    server.wait_history(&token, seen + 2, failed);
    assert!(alerts.try_recv().is_err(), "exactly one failure alert");
}

/// `/metrics` checked line by line: comments are `# HELP`, `# TYPE` or `# EOF`, and every
/// sample is `name{labels} value` with a number; the samples by name and labels.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let word = comment.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "EOF"].contains(&word), "{line}");
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let name_end = key.find('{').unwrap_or(key.len());
        assert!(
            key[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if name_end < key.len() {
            assert!(key.ends_with('}'), "{line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

#[test]
fn metrics_parse_and_show_the_runs() {
    let setup = Setup::new(HOURLY);
    let token = setup.token("op", "operate");
    let server = setup.start();
    for _ in 0..2 {
        let id = server.run_now(&token);
        assert_eq!(server.wait_ended(id, &token)["status"], "success");
    }
    let r = server.request("GET", "/metrics", Some(&token));
    assert_eq!(r.status(), StatusCode::OK);
    let samples = parse_metrics(&r.text().unwrap());
    let get = |k: &str| {
        *samples
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {samples:?}"))
    };
    assert_eq!(
        get(r#"strata_plan_runs_total{plan="app",status="success"}"#),
        2.0
    );
    assert_eq!(
        get(r#"strata_repository_snapshots{repository="main"}"#),
        2.0
    );
    assert_eq!(get("strata_operations_running"), 0.0);
    let snapshots = setup.repo.json(["snapshots"]);
    let summary = |n: usize, field: &str| snapshots[n]["summary"][field].as_f64().unwrap();
    assert_eq!(
        get(r#"strata_plan_last_files{plan="app"}"#),
        summary(1, "total_files")
    );
    // The second run adds no data, only the trees of the source's ancestors when other
    // tests changed the temporary directory they share in between.
    let added = get(r#"strata_plan_last_bytes_added{plan="app"}"#);
    assert_eq!(added, summary(1, "bytes_added"));
    assert!(added < summary(0, "bytes_added") / 10.0, "{added}");
    let success = get(r#"strata_plan_last_success_timestamp_seconds{plan="app"}"#);
    let attempt = get(r#"strata_plan_last_attempt_timestamp_seconds{plan="app"}"#);
    assert!(success >= attempt && attempt > 1.7e9, "{success} {attempt}");
}

#[test]
fn the_openapi_document_lists_every_route_served() {
    let setup = Setup::new(HOURLY);
    let token = setup.token("reader", "read");
    let server = setup.start();
    let doc = server.json("GET", "/api/v1/openapi.json", &token, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut served: Vec<(&str, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| {
            (
                *method,
                path.replace("/1", "/{id}")
                    .replace("/app/", "/{name}/")
                    .replace("/main/", "/{name}/"),
            )
        })
        .collect();
    served.push(("GET", "/api/v1/health".to_string()));
    served.extend(MONGO_ROUTES.map(|(method, path)| (method, path.to_string())));
    served.extend(BROWSE_ROUTES.iter().map(|(m, p)| (*m, p.to_string())));
    for (method, path) in &served {
        let entry = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from {paths:?}"));
        assert!(
            entry.get(method.to_lowercase()).is_some(),
            "{method} {path}"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        served.len(),
        "the document lists exactly the routes served"
    );
    let file = setup.repo.path().join("openapi.json");
    fs::write(&file, doc.to_string()).unwrap();
    let validate = "import json, sys\n\
                    from openapi_spec_validator import validate\n\
                    validate(json.load(open(sys.argv[1])))\n\
                    print('valid')";
    let said = validators_python(validate, &[&file]);
    assert_eq!(
        said.trim(),
        "valid",
        "openapi-spec-validator accepts the document"
    );
}

/// `/metrics` as the `prometheus_client` parser of PyPI reads it: every sample by name and
/// labels (`name{k="v",…}`, labels sorted).
fn prometheus_samples(text: &str, dir: &Path) -> BTreeMap<String, f64> {
    let file = dir.join("metrics.txt");
    fs::write(&file, text).unwrap();
    let parse = "import json, sys\n\
                 from prometheus_client.parser import text_string_to_metric_families\n\
                 out = {}\n\
                 for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
                 \x20   for s in family.samples:\n\
                 \x20       labels = ','.join('%s=\"%s\"' % kv for kv in sorted(s.labels.items()))\n\
                 \x20       out[s.name + '{' + labels + '}'] = s.value\n\
                 print(json.dumps(out))";
    let printed = validators_python(parse, &[&file]);
    serde_json::from_str(&printed).unwrap()
}

#[test]
fn metrics_parsed_by_prometheus_client_hold_the_values_of_known_runs() {
    let setup = Setup::new(HOURLY);
    let token = setup.token("op", "operate");
    let server = setup.start();
    for _ in 0..2 {
        let id = server.run_now(&token);
        assert_eq!(server.wait_ended(id, &token)["status"], "success");
    }
    fs::remove_dir_all(&setup.src).unwrap();
    let id = server.run_now(&token);
    let ended = server.wait_ended(id, &token);
    let status = ended["status"].as_str().unwrap().to_string();
    assert!(status == "failed" || status == "partial", "{ended}");
    let text = server
        .request("GET", "/metrics", Some(&token))
        .text()
        .unwrap();
    let samples = prometheus_samples(&text, setup.repo.path());
    let get = |k: &str| {
        *samples
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {samples:?}"))
    };
    let stats = setup.repo.json(["stats"]);
    // The last finished run (the failed one) read no file.
    let expected = [
        (
            r#"strata_plan_runs_total{plan="app",status="success"}"#,
            2.0,
        ),
        (r#"strata_repository_snapshots{repository="main"}"#, 2.0),
        (
            r#"strata_repository_size_bytes{repository="main"}"#,
            stats["repository_size"].as_f64().unwrap(),
        ),
        (r#"strata_plan_last_files{plan="app"}"#, 0.0),
        ("strata_operations_running{}", 0.0),
    ];
    for (key, value) in expected {
        assert_eq!(get(key), value, "{key}");
    }
    let failed = format!(r#"strata_plan_runs_total{{plan="app",status="{status}"}}"#);
    assert_eq!(get(&failed), 1.0);
    let success = get(r#"strata_plan_last_success_timestamp_seconds{plan="app"}"#);
    let attempt = get(r#"strata_plan_last_attempt_timestamp_seconds{plan="app"}"#);
    assert!(attempt > success && success > 1.7e9, "{success} {attempt}");
}

#[test]
fn tokens_are_listed_without_secrets_and_revoked_ones_are_refused() {
    let setup = Setup::new(HOURLY);
    let token = setup.token("reader", "read");
    let out = setup.cmd(&["token", "list"]).output().unwrap();
    let listed = stdout(&out);
    assert!(listed.contains("reader\tread"), "{listed}");
    assert!(!listed.contains(&token), "the secret is never listed");
    let db = fs::read(setup.repo.path().join("state/state.db")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "only a hash is stored"
    );
    let server = setup.start();
    server.json("GET", "/api/v1/plans", &token, StatusCode::OK);
    let out = setup.cmd(&["token", "revoke", "reader"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = server.request("GET", "/api/v1/plans", Some(&token));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let dup = setup
        .cmd(&["token", "create", "--name", "x", "--role", "read"])
        .output()
        .unwrap();
    assert!(dup.status.success());
    let dup = setup
        .cmd(&["token", "create", "--name", "x", "--role", "read"])
        .output()
        .unwrap();
    assert_eq!(
        dup.status.code(),
        Some(1),
        "a second token of one name is refused"
    );
}

#[test]
fn repository_jobs_run_and_operations_on_one_repository_wait_for_each_others_locks() {
    let setup = Setup::new(&format!("{ONE_SECOND}\nretention = {{ keep_last = 1 }}"));
    let jobs = r#"[[job]]
name = "verify"
repository = "main"
kind = "check"
schedule = "* * * * * *"
read_data_subset = "50%"

[[job]]
name = "tidy"
repository = "main"
kind = "prune"
schedule = "* * * * * *"
"#;
    setup.write_config(
        &format!("{ONE_SECOND}\nretention = {{ keep_last = 1 }}"),
        jobs,
    );
    let token = setup.token("reader", "read");
    let server = setup.start();
    let all = "/api/v1/operations?limit=1000";
    for kind in ["backup", "check", "prune"] {
        let done = server.wait_ops(all, &token, 2, |o| {
            o["kind"] == kind && o["status"] == "success"
        });
        assert!(done.iter().all(|o| o["repository"] == "main"), "{done:?}");
    }
    let failed = server.wait_ops(all, &token, 0, |o| {
        o["status"] == "failed" || o["status"] == "partial"
    });
    assert!(
        failed.is_empty(),
        "shared and exclusive locks waited for each other: {failed:?}"
    );
    let check = server.wait_ops(all, &token, 1, |o| {
        o["kind"] == "check" && o["status"] == "success"
    });
    let report = server.json(
        "GET",
        &format!("/api/v1/operations/{}", check[0]["id"]),
        &token,
        StatusCode::OK,
    );
    assert!(
        report["report"]["packs_read"].as_u64() > Some(0),
        "50% of the packs read: {report}"
    );
    let mut server = server;
    server.signal(rustix::process::Signal::TERM);
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0));
    assert_clean(&setup);
}

#[test]
fn a_failing_before_hook_fails_the_run_and_the_after_hook_sees_the_status() {
    let marker = std::env::temp_dir().join(format!("strata-hook-{}", now_nanos()));
    let status = marker.with_extension("status");
    let hooks = format!(
        "{HOURLY}\nbefore = {{ command = \"test -e {m}\", timeout = \"10s\" }}\nafter = {{ command = \"echo $STRATA_HOOK $STRATA_STATUS > {s}\" }}",
        m = marker.display(),
        s = status.display()
    );
    let setup = Setup::new(&hooks);
    let token = setup.token("op", "operate");
    let server = setup.start();
    let id = server.run_now(&token);
    let op = server.wait_ended(id, &token);
    assert_eq!(op["status"], "failed");
    assert!(
        op["error"]
            .as_str()
            .unwrap()
            .contains("the before hook failed"),
        "{op}"
    );
    assert_eq!(fs::read_to_string(&status).unwrap().trim(), "after failed");
    assert!(
        setup
            .repo
            .json(["snapshots"])
            .as_array()
            .unwrap()
            .is_empty(),
        "no backup without the before hook"
    );
    fs::write(&marker, b"").unwrap();
    let id = server.run_now(&token);
    assert_eq!(server.wait_ended(id, &token)["status"], "success");
    assert_eq!(fs::read_to_string(&status).unwrap().trim(), "after success");
    let _ = fs::remove_file(&marker);
    let _ = fs::remove_file(&status);
}

/// Moves the next run of plan `app` in the state database into the past, as if the service
/// had been stopped when it fell due.
fn miss_the_next_run(setup: &Setup) {
    let db = rusqlite::Connection::open(setup.repo.path().join("state/state.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE plans SET next_run = '2000-01-01 00:00:00+00:00' WHERE name = 'app'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[test]
fn a_missed_run_runs_once_at_start_only_when_the_plan_says_so() {
    let yearly = r#"schedule = "0 0 1 1 *""#;
    let setup = Setup::new(&format!("{yearly}\nmissed = \"run_once\""));
    let token = setup.token("reader", "read");
    let mut server = setup.start();
    server.signal(rustix::process::Signal::TERM);
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0));
    miss_the_next_run(&setup);
    let server = setup.start();
    let ran = server.wait_history(&token, 1, |o| o["status"] == "success");
    assert_eq!(ran.len(), 1, "{ran:?}");
    let mut server = server;
    server.signal(rustix::process::Signal::TERM);
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0));
    setup.write_config(yearly, "");
    miss_the_next_run(&setup);
    let server = setup.start();
    let plans = server.json("GET", "/api/v1/plans", &token, StatusCode::OK);
    let next: chrono::DateTime<chrono::Utc> =
        plans[0]["next_run"].as_str().unwrap().parse().unwrap();
    assert!(
        next > chrono::Utc::now(),
        "skip: the missed run is not run, the next is in the future"
    );
    assert_eq!(plans[0]["running"], Value::Null);
}

#[test]
fn a_plan_without_success_sends_one_stale_alert() {
    let (port, alerts) = webhook_receiver();
    let setup = Setup::new(ONE_SECOND);
    let notify = format!(
        "[[notify]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\nevents = [\"stale\"]\n"
    );
    setup.write_config(&format!("{ONE_SECOND}\nstale_after = 3"), &notify);
    fs::remove_dir_all(&setup.src).unwrap();
    let token = setup.token("reader", "read");
    let server = setup.start();
    let alert = alerts.recv_timeout(PATIENCE).unwrap();
    assert_eq!(alert["event"], "stale", "{alert}");
    assert_eq!(alert["plan"], "app");
    let failed = |o: &Value| o["status"] == "failed" || o["status"] == "partial";
    let seen = server.wait_history(&token, 1, failed).len();
    server.wait_history(&token, seen + 2, failed);
    assert!(
        alerts.try_recv().is_err(),
        "one stale alert, and no failure alert to this target"
    );
}

#[test]
fn the_api_is_served_over_tls_when_a_certificate_is_configured() {
    let setup = Setup::new(HOURLY);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve-tls");
    let tls = format!(
        "tls_certificate = \"{}\"\ntls_key = \"{}\"\n",
        fixtures.join("cert.pem").display(),
        fixtures.join("key.pem").display()
    );
    let text = fs::read_to_string(&setup.config).unwrap();
    // A remote address needs no flag with TLS (checked only: tests listen on loopback).
    fs::write(
        &setup.config,
        format!("{tls}{}", text.replace("127.0.0.1:", "0.0.0.0:")),
    )
    .unwrap();
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(&setup.config, format!("{tls}{text}")).unwrap();
    let token = setup.token("reader", "read");
    let pem = fs::read(fixtures.join("ca.pem")).unwrap();
    let trusted = reqwest::Certificate::from_pem(&pem).unwrap();
    let server = setup.start_with("https", Client::builder().tls_certs_only([trusted]));
    let plans = server.json("GET", "/api/v1/plans", &token, StatusCode::OK);
    assert_eq!(plans[0]["name"], "app");
    let plain = Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/health", setup.port))
        .send();
    assert!(plain.is_err(), "no clear text beside TLS: {plain:?}");
    let key_only = format!(
        "tls_key = \"{}\"\n{text}",
        fixtures.join("key.pem").display()
    );
    fs::write(&setup.config, key_only).unwrap();
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("strata.toml:1:11: give both tls_certificate and tls_key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn metrics_answer_without_a_token_only_when_configured_open() {
    let setup = Setup::new(HOURLY);
    let text = fs::read_to_string(&setup.config).unwrap();
    fs::write(&setup.config, format!("metrics_open = true\n{text}")).unwrap();
    let server = setup.start();
    let r = server.request("GET", "/metrics", None);
    assert_eq!(r.status(), StatusCode::OK);
    let samples = parse_metrics(&r.text().unwrap());
    assert_eq!(samples.get("strata_operations_running"), Some(&0.0));
    let plans = server.request("GET", "/api/v1/plans", None);
    assert_eq!(
        plans.status(),
        StatusCode::UNAUTHORIZED,
        "only /metrics is open"
    );
}

#[test]
fn a_check_job_that_finds_damage_sends_a_damage_alert() {
    let (port, alerts) = webhook_receiver();
    let setup = Setup::new(HOURLY);
    setup.repo.ok(os_args!["backup", &setup.src]);
    let pack = list_files(&setup.repo.repo_path().join("data"))
        .into_iter()
        .next()
        .unwrap();
    fs::remove_file(&pack).unwrap();
    let job = format!(
        "[[job]]\nname = \"verify\"\nrepository = \"main\"\nkind = \"check\"\nschedule = \"* * * * * *\"\n\n\
         [[notify]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\nevents = [\"damage\"]\n"
    );
    setup.write_config(HOURLY, &job);
    let _server = setup.start();
    let alert = alerts.recv_timeout(PATIENCE).unwrap();
    assert_eq!(alert["event"], "damage", "{alert}");
    assert_eq!(alert["repository"], "main");
    assert!(alert["problems"].as_u64() > Some(0), "{alert}");
}
