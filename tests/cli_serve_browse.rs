//! `strata serve` (issue 16), the browse and action routes end to end: the real binary on a
//! free port of 127.0.0.1 driven by a `reqwest` client: every new route against tokens and
//! roles, directory listings by pages, file downloads whole and by ranges, stats and diff,
//! restore, forget, prune and check as operations, tokens managed through the API, the
//! refusal of an address that fails to authenticate too often, command notification
//! targets and named time zones.
mod common;

use common::e2e::*;
use common::serve::*;
use common::*;
use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;

/// A setup whose repository holds one backup of its source (made by the CLI), with a file
/// `data.bin` of `size` random bytes and a directory `many` of `entries` files.
fn backed_up(size: usize, entries: usize) -> Setup {
    let setup = Setup::new(HOURLY);
    let mut data = vec![0u8; size];
    Rng::new(7).fill(&mut data);
    fs::write(setup.src.join("data.bin"), data).unwrap();
    fs::create_dir(setup.src.join("many")).unwrap();
    for i in 0..entries {
        fs::write(setup.src.join(format!("many/f{i:05}")), i.to_string()).unwrap();
    }
    setup.repo.ok(os_args!["backup", &setup.src]);
    setup
}

/// `/api/v1/repositories/main/snapshots/latest/KIND?path=` for `rel` below the source.
fn in_latest(setup: &Setup, kind: &str, rel: &str) -> String {
    let path = setup.src.join(rel);
    format!(
        "/api/v1/repositories/main/snapshots/latest/{kind}?path={}",
        path.display()
    )
}

/// Prepends top-level keys to the configuration file.
fn with_top_level(setup: &Setup, keys: &str) {
    let text = fs::read_to_string(&setup.config).unwrap();
    fs::write(&setup.config, format!("{keys}\n{text}")).unwrap();
}

#[test]
fn every_browse_and_action_route_checks_the_token_and_its_role() {
    let setup = backed_up(1000, 3);
    with_top_level(&setup, "auth_lockout_after = 1000");
    let tokens: BTreeMap<&str, String> = ["read", "operate", "admin"]
        .into_iter()
        .map(|role| (role, setup.token(&format!("t-{role}"), role)))
        .collect();
    let server = setup.start();
    let target = setup.repo.scratch("matrix-restore");
    let file = in_latest(&setup, "file", "data.bin");
    let tree = in_latest(&setup, "tree", "");
    // (method, path, role, body)
    let routes: Vec<(&str, &str, &str, Value)> = vec![
        ("GET", "/api/v1/version", "read", Value::Null),
        ("GET", "/api/v1/repositories", "read", Value::Null),
        ("GET", "/api/v1/repositories/main", "read", Value::Null),
        ("GET", &tree, "read", Value::Null),
        ("GET", &file, "read", Value::Null),
        (
            "GET",
            "/api/v1/repositories/main/diff?from=latest&to=latest",
            "read",
            Value::Null,
        ),
        (
            "POST",
            "/api/v1/repositories/main/restore",
            "operate",
            json!({"target": target, "dry_run": true}),
        ),
        (
            "POST",
            "/api/v1/repositories/main/check",
            "operate",
            json!({}),
        ),
        (
            "POST",
            "/api/v1/repositories/main/forget",
            "admin",
            json!({"policy": {"keep_last": 10}}),
        ),
        (
            "POST",
            "/api/v1/repositories/main/prune",
            "admin",
            json!({"dry_run": true}),
        ),
        ("GET", "/api/v1/tokens", "admin", Value::Null),
        (
            "POST",
            "/api/v1/tokens",
            "admin",
            json!({"name": "made", "role": "read"}),
        ),
        ("DELETE", "/api/v1/tokens/made", "admin", Value::Null),
    ];
    let template = |path: &str| {
        let path = path.split('?').next().unwrap();
        path.replace("/repositories/main", "/repositories/{name}")
            .replace("/snapshots/latest/", "/snapshots/{id}/")
            .replace("/tokens/made", "/tokens/{name}")
    };
    let covered: Vec<(&str, String)> = (routes.iter())
        .map(|(method, path, _, _)| (*method, template(path)))
        .collect();
    let listed: Vec<(&str, String)> = (BROWSE_ROUTES.iter())
        .map(|(method, path)| (*method, path.to_string()))
        .collect();
    assert_eq!(
        covered, listed,
        "the matrix covers the routes the OpenAPI test expects"
    );
    for (method, path, role, body) in &routes {
        let body = (!body.is_null()).then_some(body);
        let none = server.send(method, path, None, body);
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let problem: Value = none.json().unwrap();
        assert_eq!(problem["code"], "unauthorized");
        let wrong = server.send(method, path, Some("strata_0000"), body);
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        if let Some(low) = role_below(role) {
            let r = server.send(method, path, Some(&tokens[low]), body);
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} as {low}"
            );
            let problem: Value = r.json().unwrap();
            assert_eq!(problem["code"], "forbidden");
        }
        let right = server.send(method, path, Some(&tokens[role]), body);
        let status = right.status();
        assert!(
            status.is_success(),
            "{method} {path} as {role}: {status} {}",
            right.text().unwrap()
        );
    }
    let audit = server.json("GET", "/api/v1/audit", &tokens["admin"], StatusCode::OK);
    let actions: Vec<(&str, &str)> = (audit.as_array().unwrap().iter())
        .map(|a| (a["who"].as_str().unwrap(), a["action"].as_str().unwrap()))
        .collect();
    for (who, action) in [
        ("t-operate", "repository.restore"),
        ("t-operate", "repository.check"),
        ("t-admin", "repository.forget.dry_run"),
        ("t-admin", "repository.prune"),
        ("t-admin", "token.create"),
        ("t-admin", "token.revoke"),
    ] {
        assert!(
            actions.contains(&(who, action)),
            "{action} by {who}: {audit}"
        );
    }
    let log = server.log();
    assert!(
        !log.contains(&setup.repo.password),
        "the password in the log"
    );
}

#[test]
fn a_file_downloads_whole_and_by_ranges_equal_to_the_source() {
    let size = 3 << 20;
    let setup = backed_up(size, 0);
    let token = setup.token("reader", "read");
    let server = setup.start();
    let source = fs::read(setup.src.join("data.bin")).unwrap();
    let path = in_latest(&setup, "file", "data.bin");
    let whole = server.request("GET", &path, Some(&token));
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes");
    assert_eq!(
        whole.headers()[header::CONTENT_LENGTH],
        size.to_string().as_str()
    );
    assert!(
        whole.bytes().unwrap() == source,
        "the whole file equals the source"
    );
    // (Range, expected Content-Range, expected bytes)
    let ranges = [
        (
            "bytes=1000-1999",
            format!("bytes 1000-1999/{size}"),
            1000..2000,
        ),
        (
            "bytes=-100",
            format!("bytes {}-{}/{size}", size - 100, size - 1),
            size - 100..size,
        ),
        (
            "bytes=3000000-",
            format!("bytes 3000000-{}/{size}", size - 1),
            3_000_000..size,
        ),
        (
            "bytes=5-9999999",
            format!("bytes 5-{}/{size}", size - 1),
            5..size,
        ),
    ];
    for (range, content_range, want) in ranges {
        let r = server
            .client
            .get(server.url(&path))
            .bearer_auth(&token)
            .header(header::RANGE, range)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.headers()[header::CONTENT_RANGE], content_range.as_str());
        assert!(
            r.bytes().unwrap() == source[want],
            "{range}: the bytes of the source"
        );
    }
    let past = (server.client.get(server.url(&path)))
        .bearer_auth(&token)
        .header(header::RANGE, format!("bytes={size}-"))
        .send()
        .unwrap();
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers()[header::CONTENT_RANGE],
        format!("bytes */{size}").as_str()
    );
    let problem: Value = past.json().unwrap();
    assert_eq!(problem["code"], "range_not_satisfiable");
    // (path, status, code, field)
    let cases = [
        (
            in_latest(&setup, "file", ""),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("path"),
        ),
        (
            in_latest(&setup, "file", "nope"),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "/api/v1/repositories/main/snapshots/latest/file".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("path"),
        ),
        (
            path.replace("/latest/", "/ffffffff/"),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
    ];
    for (path, status, code, field) in cases {
        let answer = server.json("GET", &path, &token, status);
        assert_eq!(
            (answer["code"].as_str(), answer["field"].as_str()),
            (Some(code), field),
            "{path}: {answer}"
        );
    }
}

#[test]
fn a_directory_lists_by_pages_as_ls_lists_it() {
    let setup = backed_up(10, 250);
    let token = setup.token("reader", "read");
    let server = setup.start();
    let base = in_latest(&setup, "tree", "many");
    let mut names = Vec::new();
    let mut offset = Some(0);
    let mut pages = 0;
    while let Some(at) = offset {
        let page = server.json(
            "GET",
            &format!("{base}&limit=100&offset={at}"),
            &token,
            StatusCode::OK,
        );
        assert_eq!(page["total"], 250);
        assert_eq!(page["offset"], at);
        for e in page["entries"].as_array().unwrap() {
            assert_eq!(e["type"], "file", "{e}");
            names.push(e["path"].as_str().unwrap().to_string());
        }
        offset = page["next_offset"].as_u64();
        pages += 1;
        assert!(pages <= 3, "three pages of 100, 100 and 50");
    }
    let listed = setup
        .repo
        .ok(os_args!["ls", "latest", setup.src.join("many")]);
    let want: Vec<String> = stdout(&listed).lines().map(str::to_string).collect();
    assert_eq!(names, want, "the pages together are `strata ls`");
    let root = server.json(
        "GET",
        &in_latest(&setup, "tree", ""),
        &token,
        StatusCode::OK,
    );
    let top: Vec<&str> = (root["entries"].as_array().unwrap().iter())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(top.contains(&"many") && top.contains(&"data.bin"), "{root}");
    let file = server.json(
        "GET",
        &in_latest(&setup, "tree", "data.bin"),
        &token,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(file["field"], "path", "{file}");
    let limit = server.json(
        "GET",
        &format!("{base}&limit=0"),
        &token,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(limit["field"], "limit", "{limit}");
    let gone = server.json(
        "GET",
        &in_latest(&setup, "tree", "nope"),
        &token,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(gone["code"], "not_found");
}

#[test]
fn repositories_show_their_figures_and_a_diff_is_the_cli_one() {
    let setup = Setup::new(HOURLY);
    let token = setup.token("op", "operate");
    let server = setup.start();
    let first = server.run_now(&token);
    assert_eq!(server.wait_ended(first, &token)["status"], "success");
    fs::write(setup.src.join("new.txt"), b"a new file").unwrap();
    let second = server.run_now(&token);
    assert_eq!(server.wait_ended(second, &token)["status"], "success");
    let stats = setup.repo.json(["stats"]);
    let listed = server.json("GET", "/api/v1/repositories", &token, StatusCode::OK);
    assert_eq!(listed[0]["name"], "main");
    assert_eq!(listed[0]["snapshots"], 2);
    assert_eq!(
        listed[0]["size_bytes"], stats["repository_size"],
        "{listed}"
    );
    let one = server.json("GET", "/api/v1/repositories/main", &token, StatusCode::OK);
    for field in [
        "snapshots",
        "files",
        "logical_size",
        "unique_blobs",
        "repository_size",
    ] {
        assert_eq!(one["stats"][field], stats[field], "{field}: {one}");
    }
    let ids = snapshot_ids(&setup.repo);
    let path = format!(
        "/api/v1/repositories/main/diff?from={}&to={}",
        ids[0], ids[1]
    );
    let diff = server.json("GET", &path, &token, StatusCode::OK);
    let cli = setup.repo.json(["diff", &ids[0], &ids[1]]);
    assert_eq!(diff, cli, "the API's diff is `strata diff --json`");
    assert_eq!(diff["summary"]["files_added"], 1, "{diff}");
    let missing = server.json(
        "GET",
        "/api/v1/repositories/main/diff?from=latest",
        &token,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(missing["field"], "to");
}

#[test]
fn a_restore_through_the_api_equals_the_snapshot_and_follows_the_conflict_mode() {
    let setup = backed_up(100_000, 20);
    let token = setup.token("op", "operate");
    let server = setup.start();
    let target = setup.repo.scratch("restored");
    let restore = |body: Value| {
        let started = server.json_with(
            "POST",
            "/api/v1/repositories/main/restore",
            &token,
            &body,
            StatusCode::ACCEPTED,
        );
        let id = started["operation"].as_i64().unwrap();
        let events = server.events(id, &token, |_| {});
        assert_eq!(events.last().unwrap()["kind"], "report");
        server.wait_ended(id, &token)
    };
    let op = restore(json!({"target": target}));
    assert_eq!(op["status"], "success", "{op}");
    assert_eq!(op["kind"], "restore");
    assert_trees_equal(&setup.src, &restored_path(&target, &setup.src));
    // Again into the same target: conflicts fail by default, and skip writes nothing.
    let op = restore(json!({"target": target}));
    assert_eq!(op["status"], "failed");
    assert!(
        op["error"].as_str().unwrap().contains("already exist"),
        "{op}"
    );
    let op = restore(json!({"target": target, "on_conflict": "skip"}));
    assert_eq!(op["status"], "success", "{op}");
    assert_eq!(op["report"]["files"], 0, "{op}");
    // A path inside the snapshot, with an include pattern.
    let part = setup.repo.scratch("part");
    let sub = setup.src.join("many");
    let op = restore(json!({
        "target": part,
        "path": sub,
        "include": [format!("{}/f0000*", sub.display())],
    }));
    assert_eq!(op["status"], "success", "{op}");
    let mut got: Vec<String> = fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    let want: Vec<String> = (0..10).map(|i| format!("f{i:05}")).collect();
    assert_eq!(got, want);
    let relative = server.json_with(
        "POST",
        "/api/v1/repositories/main/restore",
        &token,
        &json!({"target": "relative/dir"}),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(relative["field"], "target");
    let unknown = server.json_with(
        "POST",
        "/api/v1/repositories/main/restore",
        &token,
        &json!({"target": target, "colour": "blue"}),
        StatusCode::BAD_REQUEST,
    );
    assert!(
        unknown["detail"].as_str().unwrap().contains("colour"),
        "{unknown}"
    );
    let nowhere = server.json_with(
        "POST",
        "/api/v1/repositories/nope/restore",
        &token,
        &json!({"target": target}),
        StatusCode::NOT_FOUND,
    );
    assert_eq!(nowhere["code"], "not_found");
}

/// Starts a repository action and waits for it; the ended operation.
fn act(server: &Server, token: &str, action: &str, body: Value) -> Value {
    let path = format!("/api/v1/repositories/main/{action}");
    let started = server.json_with("POST", &path, token, &body, StatusCode::ACCEPTED);
    server.wait_ended(started["operation"].as_i64().unwrap(), token)
}

#[test]
fn forget_runs_dry_first_then_for_real_and_prune_and_check_follow() {
    let setup = Setup::new(HOURLY);
    for i in 0..3 {
        fs::write(setup.src.join("changing"), format!("version {i}")).unwrap();
        setup.repo.ok(os_args!["backup", &setup.src]);
    }
    let ids = snapshot_ids(&setup.repo);
    let token = setup.token("boss", "admin");
    let server = setup.start();
    let dry = act(
        &server,
        &token,
        "forget",
        json!({"policy": {"keep_last": 1}}),
    );
    assert_eq!(dry["status"], "success", "{dry}");
    assert_eq!(dry["report"]["dry_run"], true);
    let mut planned: Vec<&str> = (dry["report"]["remove"].as_array().unwrap().iter())
        .map(|v| v.as_str().unwrap())
        .collect();
    planned.sort();
    let mut older = [ids[0].as_str(), ids[1].as_str()];
    older.sort();
    assert_eq!(planned, older, "the two older ones: {dry}");
    assert_eq!(snapshot_ids(&setup.repo), ids, "a dry run removes nothing");
    let real = act(
        &server,
        &token,
        "forget",
        json!({"policy": {"keep_last": 1}, "dry_run": false}),
    );
    assert_eq!(real["status"], "success", "{real}");
    assert_eq!(real["report"]["removed"].as_array().unwrap().len(), 2);
    assert_eq!(snapshot_ids(&setup.repo), [ids[2].clone()]);
    let before = dir_size(&setup.repo.repo_path());
    let pruned = act(&server, &token, "prune", json!({"max_unused": 0}));
    assert_eq!(pruned["status"], "success", "{pruned}");
    assert!(
        dir_size(&setup.repo.repo_path()) < before,
        "prune freed space"
    );
    let checked = act(&server, &token, "check", json!({"read_data_subset": "all"}));
    assert_eq!(checked["status"], "success", "{checked}");
    assert!(
        checked["report"]["packs_read"].as_u64() > Some(0),
        "{checked}"
    );
    setup.repo.ok(["check", "--read-data"]);
    let repos = server.json("GET", "/api/v1/repositories", &token, StatusCode::OK);
    assert_eq!(repos[0]["snapshots"], 1);
    assert_eq!(repos[0]["last_check"]["success"], true, "{repos}");
    let empty = act(&server, &token, "forget", json!({"policy": {}}));
    assert_eq!(
        empty["status"], "failed",
        "an empty policy removes nothing: {empty}"
    );
    let bad = server.json_with(
        "POST",
        "/api/v1/repositories/main/check",
        &token,
        &json!({"read_data_subset": "half"}),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(bad["field"], "read_data_subset");
    let bad = server.json_with(
        "POST",
        "/api/v1/repositories/main/prune",
        &token,
        &json!({"max_unused": 150}),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(bad["field"], "max_unused");
    assert_eq!(setup.locks_left(), 0);
}

#[test]
fn tokens_are_created_listed_and_revoked_through_the_api() {
    let setup = Setup::new(HOURLY);
    let admin = setup.token("boss", "admin");
    let server = setup.start();
    let made = server.json_with(
        "POST",
        "/api/v1/tokens",
        &admin,
        &json!({"name": "grafana", "role": "read"}),
        StatusCode::CREATED,
    );
    let secret = made["token"].as_str().unwrap().to_string();
    assert_eq!(made["role"], "read");
    server.json("GET", "/api/v1/plans", &secret, StatusCode::OK);
    let denied = server.request("POST", "/api/v1/plans/app/run", Some(&secret));
    assert_eq!(
        denied.status(),
        StatusCode::FORBIDDEN,
        "a read token runs nothing"
    );
    let listed = server.json("GET", "/api/v1/tokens", &admin, StatusCode::OK);
    let names: Vec<&str> = (listed.as_array().unwrap().iter())
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boss", "grafana"]);
    assert!(!listed.to_string().contains(&secret), "no secret is listed");
    let again = server.json_with(
        "POST",
        "/api/v1/tokens",
        &admin,
        &json!({"name": "grafana", "role": "read"}),
        StatusCode::CONFLICT,
    );
    assert_eq!(again["code"], "token_exists");
    let bad = server.json_with(
        "POST",
        "/api/v1/tokens",
        &admin,
        &json!({"name": "x", "role": "root"}),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(bad["field"], "role");
    let revoked = server.json("DELETE", "/api/v1/tokens/grafana", &admin, StatusCode::OK);
    assert_eq!(revoked["revoked"], true);
    let refused = server.request("GET", "/api/v1/plans", Some(&secret));
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    server.json(
        "DELETE",
        "/api/v1/tokens/grafana",
        &admin,
        StatusCode::NOT_FOUND,
    );
    let cli = setup.cmd(&["token", "list"]).output().unwrap();
    assert!(!stdout(&cli).contains("grafana"), "{}", stdout(&cli));
    let audit = server.json("GET", "/api/v1/audit", &admin, StatusCode::OK);
    let text = audit.to_string();
    assert!(!text.contains(&secret), "no secret in the audit log");
    for action in ["token.create", "token.revoke"] {
        let found = (audit.as_array().unwrap().iter())
            .any(|a| a["action"] == action && a["who"] == "boss" && a["target"] == "grafana");
        assert!(found, "{action}: {audit}");
    }
}

#[test]
fn an_address_that_fails_to_authenticate_too_often_is_refused_for_a_while() {
    let setup = Setup::new(HOURLY);
    with_top_level(&setup, "auth_lockout_after = 3");
    let token = setup.token("reader", "read");
    let server = setup.start();
    server.json("GET", "/api/v1/plans", &token, StatusCode::OK);
    for _ in 0..3 {
        let r = server.request("GET", "/api/v1/plans", Some("strata_guess"));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    for presented in ["strata_guess", token.as_str()] {
        let r = server.request("GET", "/api/v1/plans", Some(presented));
        assert_eq!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "even the right token"
        );
        let wait: u64 = (r.headers()[header::RETRY_AFTER].to_str().unwrap())
            .parse()
            .unwrap();
        assert!((1..=61).contains(&wait), "Retry-After: {wait}");
        let problem: Value = r.json().unwrap();
        assert_eq!(problem["code"], "too_many_failures");
    }
    let health = server.request("GET", "/api/v1/health", None);
    assert_eq!(health.status(), StatusCode::OK, "health needs no token");
}

#[test]
fn a_command_target_gets_the_alert_on_stdin_and_its_failures_are_recorded() {
    let setup = Setup::new(ONE_SECOND);
    let got = setup.repo.path().join("alert.json");
    let env = setup.repo.path().join("alert.env");
    let notify = format!(
        "[[notify]]\nname = \"script\"\ncommand = \"cat > {got}; echo $STRATA_EVENT $STRATA_PLAN > {env}\"\nevents = [\"failure\"]\n\n\
         [[notify]]\nname = \"broken\"\ncommand = \"exit 3\"\nevents = [\"failure\"]\n",
        got = got.display(),
        env = env.display(),
    );
    setup.write_config(ONE_SECOND, &notify);
    let test = setup.cmd(&["notify-test", "script"]).output().unwrap();
    assert!(test.status.success(), "{}", stderr(&test));
    let body: Value = serde_json::from_slice(&fs::read(&got).unwrap()).unwrap();
    assert_eq!(body["event"], "test");
    fs::remove_dir_all(&setup.src).unwrap();
    let token = setup.token("reader", "read");
    let server = setup.start();
    let all = "/api/v1/operations?limit=1000";
    let failed = server.wait_ops(all, &token, 1, |o| o["kind"] == "notify");
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["report"]["target"], "broken", "{failed:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{failed:?}"
    );
    let body: Value = serde_json::from_slice(&fs::read(&got).unwrap()).unwrap();
    assert_eq!(body["event"], "failure", "{body}");
    assert_eq!(body["plan"], "app");
    assert_eq!(fs::read_to_string(&env).unwrap().trim(), "failure app");
    let both = "[[notify]]\nname = \"x\"\ncommand = \"true\"\nwebhook = \"http://127.0.0.1:1/\"\nevents = []\n";
    setup.write_config(ONE_SECOND, both);
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("give exactly one of webhook and command"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_named_time_zone_is_taken_and_a_bad_one_refused_naming_its_place() {
    let setup = Setup::new(&format!("{HOURLY}\ntime_zone = \"Europe/Paris\""));
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    setup.write_config(&format!("{HOURLY}\ntimezone = \"America/New_York\""), "");
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert!(
        out.status.success(),
        "`timezone` reads too: {}",
        stderr(&out)
    );
    setup.write_config(&format!("{HOURLY}\ntime_zone = \"Mars/Olympus\""), "");
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let file = setup.config.display().to_string();
    let e = stderr(&out);
    assert!(
        e.contains(&format!("{file}:15:"))
            && e.contains("time_zone: invalid time zone \"Mars/Olympus\""),
        "{e}"
    );
}

#[test]
fn a_prune_through_the_api_waits_for_the_lock_of_a_running_backup_and_a_second_conflicts() {
    let setup = Setup::new(HOURLY);
    let (server, token, backup) = big_backup_running(&setup);
    let admin = setup.token("boss", "admin");
    let started = server.json_with(
        "POST",
        "/api/v1/repositories/main/prune",
        &admin,
        &json!({}),
        StatusCode::ACCEPTED,
    );
    // The first prune waits for the backup (which has just started reading 256 MiB): a
    // second one meanwhile is a conflict.
    let second = server.json_with(
        "POST",
        "/api/v1/repositories/main/prune",
        &admin,
        &json!({}),
        StatusCode::CONFLICT,
    );
    assert_eq!(second["code"], "action_running", "{second}");
    let prune = server.wait_ended(started["operation"].as_i64().unwrap(), &admin);
    let backup = server.wait_ended(backup, &token);
    assert_eq!(backup["status"], "success", "{backup}");
    assert_eq!(
        prune["status"], "success",
        "the prune waited instead of failing: {prune}"
    );
    let time = |op: &Value, field: &str| -> chrono::DateTime<chrono::Utc> {
        op[field].as_str().unwrap().parse().unwrap()
    };
    assert!(
        time(&prune, "started") < time(&backup, "ended")
            && time(&prune, "ended") >= time(&backup, "ended"),
        "the prune started during the backup and ended after it: {prune} {backup}"
    );
    assert_eq!(setup.locks_left(), 0);
}

#[test]
fn a_check_through_the_api_that_finds_damage_fails_and_alerts() {
    let (port, alerts) = webhook_receiver();
    let setup = backed_up(10_000, 0);
    let notify = format!(
        "[[notify]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\nevents = [\"damage\"]\n"
    );
    setup.write_config(HOURLY, &notify);
    let pack = list_files(&setup.repo.repo_path().join("data"))
        .into_iter()
        .next()
        .unwrap();
    fs::remove_file(&pack).unwrap();
    let token = setup.token("op", "operate");
    let server = setup.start();
    let checked = act(&server, &token, "check", json!({}));
    assert_eq!(checked["status"], "failed", "{checked}");
    assert!(
        !checked["report"]["errors"].as_array().unwrap().is_empty(),
        "{checked}"
    );
    let alert = alerts.recv_timeout(PATIENCE).unwrap();
    assert_eq!(alert["event"], "damage", "{alert}");
    assert_eq!(alert["repository"], "main");
    assert_eq!(alert["operation"], checked["id"]);
}
