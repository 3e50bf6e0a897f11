//! `strata serve` with MongoDB (issue 16), end to end on the SecantusDB test server (or
//! `$MONGODB_URI`): a plan with a MongoDB source runs on its schedule and its snapshot
//! restores through the API; a follower archives the oplog, shows in the API and the
//! metrics, and a point-in-time restore through the API equals the state then; a follower
//! that cannot connect is restarted with back-off and one that finds a rolled-over oplog
//! records a gap and alerts; the new routes check tokens and roles; no URI password shows.
mod common;

use bson::doc;
use common::mongo::{Mongo, assert_same_state, shared, unique_db};
use common::serve::{
    HOURLY, PATIENCE, STOP_BOUND, Server, Setup, follower, ts, uri_file, webhook_receiver,
};
use common::server::free_port;
use common::stderr;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

const PASSWORD: &str = "Pw-s3cret-4ll0w3d";

/// `uri` with the user `app` (password [`PASSWORD`]) created on its server and put in it.
fn with_credentials(uri: &str) -> String {
    let m = Mongo::new(uri);
    let created = m.try_run(
        "admin",
        doc! {"createUser": "app", "pwd": PASSWORD, "roles": ["root"]},
    );
    if let Err(e) = created {
        assert!(e.to_string().contains("already exists"), "createUser: {e}");
    }
    let uri = uri.replacen("://", &format!("://app:{PASSWORD}@"), 1);
    Mongo::new(&uri).run("admin", doc! {"ping": 1});
    uri
}

fn started(answer: &Value) -> i64 {
    answer["operation"].as_i64().expect("an operation id")
}

/// Polls `probe` every 100 ms until it gives a value; panics naming `what` after
/// [`PATIENCE`].
fn wait_for<T>(server: &Server, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited in vain for {what}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(server: &Server, path: &str, token: &str) -> Value {
    server.json("GET", path, token, StatusCode::OK)
}

fn metrics(server: &Server, token: &str) -> String {
    let r = server.request("GET", "/metrics", Some(token));
    assert_eq!(r.status(), StatusCode::OK);
    r.text().unwrap()
}

/// Samples of `/metrics` by name and labels.
fn samples(text: &str) -> BTreeMap<String, f64> {
    (text.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

const RESTORE: &str = "/api/v1/repositories/main/restore/mongo";

/// Asserts the password appears nowhere the service shows or keeps: the answers `seen`,
/// its log and its state database (history and audit log).
fn assert_no_password(server: &Server, setup: &Setup, seen: &[&Value]) {
    for v in seen {
        assert!(!v.to_string().contains(PASSWORD), "a password in {v}");
    }
    assert!(!server.log().contains(PASSWORD), "a password in the log");
    let db = fs::read(setup.repo.path().join("state/state.db")).unwrap();
    let needle = PASSWORD.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "a password in the state database"
    );
}

#[test]
fn a_plan_with_a_mongodb_source_runs_on_schedule_and_its_snapshot_restores_through_the_api() {
    let uri = with_credentials(shared());
    let m = Mongo::new(shared());
    let db = unique_db("plan");
    m.insert(
        &db,
        "a",
        (0..200).map(|i| doc! {"_id": i, "v": i * 2}).collect(),
    );
    m.insert(&db, "b", vec![doc! {"_id": "x", "nested": {"k": [1, 2]}}]);
    m.run(
        &db,
        doc! {"createIndexes": "a", "indexes": [{"key": {"v": 1}, "name": "v_1"}]},
    );
    let want = m.state(&db);
    let setup = Setup::new(HOURLY);
    let file = uri_file(&setup.repo, "mongo.uri", &uri);
    let plan = format!(
        "schedule = \"* * * * * *\"\nmongo = {{ uri_file = \"{file}\", databases = [\"{db}\"] }}"
    );
    let alone = format!(
        "[[plan]]\nname = \"alone\"\nrepository = \"main\"\n{HOURLY}\n\
         mongo = {{ uri_file = \"{file}\", include = [\"{db}.b\"] }}\n"
    );
    setup.write_config(&plan, &alone);
    let op = setup.token("op", "operate");
    let admin = setup.token("admin", "admin");
    let server = setup.start();
    let first = wait_for(&server, "a scheduled run", || {
        let ops = get(&server, "/api/v1/operations?plan=app", &op);
        let mut oldest_first = ops.as_array().unwrap().iter().rev();
        oldest_first.find(|o| o["status"] != "running").cloned()
    });
    assert_eq!(first["status"], "success", "{first}");
    server.json("POST", "/api/v1/plans/app/pause", &op, StatusCode::OK);
    let id = wait_for(&server, "run-now to be accepted", || {
        let r = server.request("POST", "/api/v1/plans/app/run", Some(&op));
        (r.status() == StatusCode::ACCEPTED).then(|| started(&r.json().unwrap()))
    });
    let ran = server.wait_ended(id, &op);
    assert_eq!(ran["status"], "success", "{ran}");
    let report = &ran["report"];
    let scheduled = server.wait_ended(first["id"].as_i64().unwrap(), &op);
    let full = &scheduled["report"];
    let dumped: Vec<&str> = (full["mongodb"]["collections"].as_array().unwrap().iter())
        .map(|c| c["ns"].as_str().unwrap())
        .collect();
    assert_eq!(dumped, [format!("{db}.a"), format!("{db}.b")], "{full}");
    // The next run continues the last scheduled run's dump: it reads only the oplog since.
    let incremental = &report["mongodb"]["incremental"];
    assert!(incremental["depth"].as_u64() >= Some(1), "{report}");
    // One snapshot holds the paths and the dump, as `backup PATHS --mongo` makes it.
    let snapshots = setup.repo.json(["snapshots"]);
    let newest = snapshots.as_array().unwrap().last().unwrap();
    assert_eq!(newest["id"], report["snapshot_id"]);
    let before = &snapshots[snapshots.as_array().unwrap().len() - 2];
    assert_eq!(incremental["parent"], before["id"], "{report}");
    assert_eq!(newest["paths"].as_array().unwrap().len(), 1, "{newest}");
    // A plan with a MongoDB source and no paths: a snapshot of the dump alone.
    let answer = server.json("POST", "/api/v1/plans/alone/run", &op, StatusCode::ACCEPTED);
    let alone = server.wait_ended(started(&answer), &op);
    assert_eq!(alone["status"], "success", "{alone}");
    let dumped = &alone["report"]["mongodb"]["collections"];
    assert_eq!(dumped.as_array().unwrap().len(), 1, "{dumped}");
    assert_eq!(dumped[0]["ns"], format!("{db}.b"));
    let snapshots = setup.repo.json(["snapshots"]);
    let newest = snapshots.as_array().unwrap().last().unwrap();
    assert_eq!(newest["id"], alone["report"]["snapshot_id"]);
    assert!(newest["paths"].as_array().unwrap().is_empty(), "{newest}");

    let copy = unique_db("plan_copy");
    let body = json!({
        "uri": uri,
        "snapshot": report["snapshot_id"],
        "renames": [{"from": format!("{db}.*"), "to": format!("{copy}.*")}],
    });
    let answer = server.json_with("POST", RESTORE, &op, &body, StatusCode::ACCEPTED);
    let restored = server.wait_ended(started(&answer), &op);
    assert_eq!(restored["status"], "success", "{restored}");
    assert_eq!(restored["kind"], "restore_mongo");
    assert_same_state(&want, &m.state(&copy), "restored through the API");

    let plans = get(&server, "/api/v1/plans", &op);
    let history = get(&server, "/api/v1/operations", &op);
    let audit = get(&server, "/api/v1/audit", &admin);
    let text = Value::String(metrics(&server, &op));
    assert!(
        audit.to_string().contains("repository.restore_mongo"),
        "{audit}"
    );
    assert_no_password(
        &server,
        &setup,
        &[&plans, &history, &audit, &text, &ran, &alone, &restored],
    );
}

/// Writes to `tick_db` until the follower `name` has archived the oplog up to `at` (its
/// slice is saved when a later entry arrives); bounded by [`PATIENCE`].
fn wait_archived(server: &Server, m: &Mongo, token: &str, name: &str, at: &str, tick_db: &str) {
    let mut tick = 0;
    wait_for(
        server,
        &format!("follower {name} to archive up to {at}"),
        || {
            tick += 1;
            m.insert(tick_db, "tick", vec![doc! {"_id": tick}]);
            let view = server.follower(token, name);
            let end = view["last_archived_ts"].as_str().map(ts);
            end.filter(|e| *e >= ts(at)).map(|_| ())
        },
    );
}

#[test]
fn a_follower_archives_the_oplog_and_a_point_in_time_restore_through_the_api_equals_the_state_then()
{
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("follow");
    m.insert(&db, "a", (0..50).map(|i| doc! {"_id": i, "v": i}).collect());
    let setup = Setup::new(HOURLY);
    setup.repo.ok(["backup", "--mongo", uri, "--mongo-db", &db]);
    let file = uri_file(&setup.repo, "mongo.uri", uri);
    setup.write_config(HOURLY, &follower("f", &file, ""));
    let op = setup.token("op", "operate");
    let mut server = setup.start();
    m.insert(
        &db,
        "a",
        (50..80).map(|i| doc! {"_id": i, "v": i}).collect(),
    );
    m.run(
        &db,
        doc! {"update": "a", "updates": [{"q": {"_id": 3}, "u": {"$set": {"v": "three"}}}]},
    );
    let then = m.cluster_time();
    let want = m.state(&db);
    m.run(
        &db,
        doc! {"delete": "a", "deletes": [{"q": {"_id": {"$lt": 20}}, "limit": 0}]},
    );
    m.insert(&db, "b", vec![doc! {"_id": "later"}]);
    let tick_db = unique_db("tick");
    wait_archived(&server, &m, &op, "f", &then, &tick_db);

    let view = server.follower(&op, "f");
    assert_eq!(view["running"], true, "{view}");
    assert_eq!(view["restarts"], 0, "{view}");
    assert!(view["slices"].as_u64().unwrap() >= 1, "{view}");
    assert!(
        view["server"].as_str().unwrap().contains("127.0.0.1"),
        "{view}"
    );
    let lag = wait_for(&server, "the follower's lag", || {
        server.follower(&op, "f")["lag_seconds"].as_f64()
    });
    assert!(lag >= 0.0, "{lag}");
    let timeline = get(&server, "/api/v1/repositories/main/timelines", &op);
    let window = &timeline["windows"][0];
    let reach = format!("{}:{}", window["to"]["t"], window["to"]["i"]);
    assert!(ts(&reach) >= ts(&then), "{timeline}");
    assert!(
        timeline["gaps"].as_array().unwrap().is_empty(),
        "{timeline}"
    );
    let text = metrics(&server, &op);
    let got = samples(&text);
    assert_eq!(
        got[r#"strata_follower_running{follower="f"}"#], 1.0,
        "{text}"
    );
    let archived = got[r#"strata_follower_last_archived_timestamp_seconds{follower="f"}"#];
    assert!(archived >= ts(&then).0 as f64, "{text}");

    let copy = unique_db("follow_at");
    let body = json!({
        "uri": uri,
        "at": then,
        "include": [format!("{db}.*")],
        "renames": [{"from": format!("{db}.*"), "to": format!("{copy}.*")}],
    });
    let answer = server.json_with("POST", RESTORE, &op, &body, StatusCode::ACCEPTED);
    let restored = server.wait_ended(started(&answer), &op);
    assert_eq!(restored["status"], "success", "{restored}");
    assert!(
        restored["report"]["mongodb"]["oplog_applied"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_same_state(&want, &m.state(&copy), &format!("restored to {then}"));

    // SIGTERM stops the follower too, and its lock goes with it.
    server.signal(rustix::process::Signal::TERM);
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0));
    assert_eq!(setup.locks_left(), 0, "no lock left");
    let slices = setup.repo.json(["snapshots", "--tag", "mongodb-oplog"]);
    assert!(!slices.as_array().unwrap().is_empty(), "slices were saved");
}

#[test]
fn a_failing_follower_is_restarted_with_back_off_and_a_rolled_over_oplog_is_a_gap_alerted() {
    if common::mongo::is_external() {
        // An external server's oplog cannot be made to roll over from here.
        return;
    }
    let mongo = common::mongo::Server::start(&["--oplog-max-entries", "30"]);
    let m = Mongo::new(&mongo.uri);
    m.insert("g", "c", vec![doc! {"_id": 0}]);
    let setup = Setup::new(HOURLY);
    setup.repo.ok(["backup", "--mongo", &mongo.uri]);
    m.roll_over_oplog();
    let (port, alerts) = webhook_receiver();
    let gappy = uri_file(&setup.repo, "gappy.uri", &mongo.uri);
    let nowhere = format!(
        "mongodb://app:{PASSWORD}@127.0.0.1:{}/?serverSelectionTimeoutMS=300",
        free_port()
    );
    let down = uri_file(&setup.repo, "down.uri", &nowhere);
    let notify = format!(
        "[[notify]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\n\
         events = [\"follower_gap\"]\n"
    );
    let extra = [
        follower("gappy", &gappy, ""),
        follower("down", &down, ""),
        notify,
    ]
    .concat();
    setup.write_config(HOURLY, &extra);
    let reader = setup.token("reader", "read");
    let server = setup.start();
    wait_for(&server, "the gap to be recorded", || {
        m.insert("g", "tick", vec![doc! {}]);
        let view = server.follower(&reader, "gappy");
        (view["gaps"].as_u64() == Some(1)).then_some(())
    });
    let alert = alerts.recv_timeout(PATIENCE).unwrap();
    assert_eq!(alert["event"], "follower_gap", "{alert}");
    assert_eq!(alert["follower"], "gappy");
    let timeline = get(&server, "/api/v1/repositories/main/timelines", &reader);
    let gaps = timeline["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{timeline}");
    assert_eq!(gaps[0]["kind"], "rolled_over");

    let view = wait_for(
        &server,
        "two restarts of the follower that cannot connect",
        || {
            let view = server.follower(&reader, "down");
            (view["restarts"].as_u64().unwrap() >= 2).then_some(view)
        },
    );
    assert_eq!(view["running"], false, "{view}");
    let error = view["last_error"].as_str().unwrap();
    assert!(error.contains("127.0.0.1"), "{error}");
    let text = metrics(&server, &reader);
    let got = samples(&text);
    let restarts = got[r#"strata_follower_restarts_total{follower="down"}"#];
    assert!(restarts >= 2.0, "{text}");
    assert_eq!(got[r#"strata_follower_gaps_total{follower="gappy"}"#], 1.0);
    assert_eq!(got[r#"strata_follower_running{follower="gappy"}"#], 1.0);
    let followers = get(&server, "/api/v1/followers", &reader);
    assert_no_password(&server, &setup, &[&followers, &Value::String(text)]);

    // Its server killed, the follower that ran fails and is restarted.
    drop(mongo);
    let view = wait_for(
        &server,
        "a restart of the follower whose server died",
        || {
            let view = server.follower(&reader, "gappy");
            (view["restarts"].as_u64().unwrap() >= 1).then_some(view)
        },
    );
    assert_eq!(view["running"], false, "{view}");
    assert!(view["last_error"].is_string(), "{view}");
}

#[test]
fn a_follower_further_behind_than_its_bound_sends_one_lag_alert() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("lag");
    m.insert(&db, "a", vec![doc! {"_id": 0}]);
    let setup = Setup::new(HOURLY);
    setup.repo.ok(["backup", "--mongo", uri, "--mongo-db", &db]);
    let (port, alerts) = webhook_receiver();
    let file = uri_file(&setup.repo, "mongo.uri", uri);
    // Slices of an hour: nothing is archived while the test writes, so the lag grows.
    let slow = format!(
        "[[follower]]\nname = \"slow\"\nrepository = \"main\"\nuri_file = \"{file}\"\n\
         slice = \"1h\"\nlag_alert = \"1s\"\n"
    );
    let notify = format!(
        "[[notify]]\nname = \"ops\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\n\
         events = [\"follower_lag\"]\n"
    );
    setup.write_config(HOURLY, &[slow, notify].concat());
    let reader = setup.token("reader", "read");
    let server = setup.start();
    let mut tick = 0;
    let alert = wait_for(&server, "a lag alert", || {
        tick += 1;
        m.insert(&db, "tick", vec![doc! {"_id": tick}]);
        alerts.recv_timeout(Duration::from_millis(200)).ok()
    });
    assert_eq!(alert["event"], "follower_lag", "{alert}");
    assert_eq!(alert["follower"], "slow");
    assert!(alert["lag_seconds"].as_f64().unwrap() > 1.0, "{alert}");
    let view = server.follower(&reader, "slow");
    assert!(view["lag_seconds"].as_f64().unwrap() > 1.0, "{view}");
    for _ in 0..10 {
        tick += 1;
        m.insert(&db, "tick", vec![doc! {"_id": tick}]);
    }
    assert!(
        alerts.recv_timeout(Duration::from_secs(3)).is_err(),
        "one alert while it stays behind"
    );
}

/// (method, path, role) of the MongoDB routes.
const ROUTES: [(&str, &str, &str); 3] = [
    ("GET", "/api/v1/followers", "read"),
    ("GET", "/api/v1/repositories/main/timelines", "read"),
    ("POST", RESTORE, "operate"),
];

#[test]
fn the_mongodb_routes_check_the_token_and_its_role_and_refuse_bad_input() {
    let setup = Setup::new(HOURLY);
    let tokens: BTreeMap<&str, String> = ["read", "operate"]
        .into_iter()
        .map(|role| (role, setup.token(&format!("t-{role}"), role)))
        .collect();
    let server = setup.start();
    let unreachable = format!("mongodb://app:{PASSWORD}@127.0.0.1:{}/", free_port());
    let body = json!({"uri": unreachable});
    let mut answers = Vec::new();
    for (method, path, role) in ROUTES {
        let send = |token: Option<&str>| server.send(method, path, token, Some(&body));
        let none = send(None).status();
        assert_eq!(none, StatusCode::UNAUTHORIZED, "{path} without a token");
        let wrong = send(Some("strata_0000")).status();
        assert_eq!(wrong, StatusCode::UNAUTHORIZED, "{path} with a wrong token");
        if role == "operate" {
            let low = send(Some(&tokens["read"]));
            assert_eq!(low.status(), StatusCode::FORBIDDEN, "{path} with role read");
            let problem: Value = low.json().unwrap();
            assert_eq!(problem["code"], "forbidden");
        }
        let right = send(Some(&tokens[role]));
        let status = right.status();
        let answer: Value = right.json().unwrap();
        assert!(
            status.is_success(),
            "{path} with role {role}: {status} {answer}"
        );
        answers.push(answer);
    }
    // The restore was accepted, and fails (nothing to restore, no server there), recorded
    // without the password.
    let failed = server.wait_ended(started(&answers[2]), &tokens["operate"]);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["kind"], "restore_mongo");

    let bad = StatusCode::BAD_REQUEST;
    let cases = [
        (json!({"uri": "mongodb://h/", "at": "soon"}), "at"),
        (
            json!({"uri": "mongodb://h/", "at": "1700000000:1", "snapshot": "latest"}),
            "at",
        ),
        (
            json!({"uri": "mongodb://h/", "renames": [{"from": "a.*", "to": "b"}]}),
            "renames",
        ),
        (
            json!({"uri": format!("mongodb://u:{PASSWORD}@h/"), "mode": "smash"}),
            "body",
        ),
        (json!({"uri": "nonsense://h"}), "uri"),
    ];
    for (body, field) in cases {
        let problem = server.json_with("POST", RESTORE, &tokens["operate"], &body, bad);
        assert_eq!(problem["field"], field, "{body}: {problem}");
        answers.push(problem);
    }
    let unknown = "/api/v1/repositories/nope/restore/mongo";
    let body = json!({"uri": "mongodb://h/"});
    let problem = server.json_with(
        "POST",
        unknown,
        &tokens["operate"],
        &body,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(problem["code"], "not_found");
    let history = get(&server, "/api/v1/operations", &tokens["read"]);
    let openapi = get(&server, "/api/v1/openapi.json", &tokens["read"]);
    for (method, path, _) in ROUTES {
        let path = path.replace("/main/", "/{name}/");
        assert!(
            openapi["paths"][&path][method.to_lowercase()].is_object(),
            "{method} {path} documented"
        );
    }
    let mut seen: Vec<&Value> = answers.iter().collect();
    seen.extend([&history, &failed]);
    assert_no_password(&server, &setup, &seen);
}

/// `serve --check-config` with `extra` after the plan: its stderr when refused.
fn refused(setup: &Setup, plan: &str, extra: &str) -> String {
    setup.write_config(plan, extra);
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert!(!out.status.success(), "accepted: {plan} {extra}");
    stderr(&out)
}

#[test]
fn bad_mongodb_settings_are_refused_naming_file_line_and_field() {
    let setup = Setup::new(HOURLY);
    let file = uri_file(&setup.repo, "mongo.uri", "mongodb://127.0.0.1:1/");
    // Line 14 is the plan's last key, 15 the first of `extra`.
    let plan = "schedule = \"0 * * * *\"\n\n[[plan]]\nname = \"bare\"\nrepository = \"main\"\n\
                schedule = \"0 * * * *\"";
    let err = refused(&setup, plan, "");
    assert!(
        err.contains("strata.toml:17:") && err.contains("or a mongo source"),
        "{err}"
    );
    let two = format!(
        "[[follower]]\nname = \"f\"\nrepository = \"main\"\nuri_file = \"{file}\"\nuri_env = \"HOME\""
    );
    let err = refused(&setup, HOURLY, &two);
    assert!(
        err.contains("strata.toml:19:") && err.contains("exactly one of uri, uri_file and uri_env"),
        "{err}"
    );
    let missing =
        "[[follower]]\nname = \"f\"\nrepository = \"main\"\nuri_file = \"/nonexistent/uri\"";
    let err = refused(&setup, HOURLY, missing);
    assert!(
        err.contains("strata.toml:18:") && err.contains("uri_file"),
        "{err}"
    );
    let event = "[[notify]]\nname = \"n\"\nwebhook = \"http://127.0.0.1:1/\"\nevents = [\"follower_lagging\"]";
    let err = refused(&setup, HOURLY, event);
    assert!(
        err.contains("strata.toml:18:") && err.contains("follower_lag"),
        "{err}"
    );
    let good = format!(
        "{HOURLY}\nmongo = {{ uri_file = \"{file}\", include = [\"app.*\"] }}\n\n{}",
        follower("f", &file, "lag_alert = \"5m\"")
    );
    setup.write_config(&good, "");
    let out = setup.cmd(&["--check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A running follower holds a shared lock on its repository for as long as it runs; forget
/// and prune through the service stop it for their exclusive lock and start it again after.
#[test]
fn forget_and_prune_pause_the_followers_of_their_repository_and_then_resume_them() {
    let uri = shared();
    let m = Mongo::new(uri);
    let db = unique_db("pause");
    m.insert(&db, "a", (0..20).map(|i| doc! {"_id": i}).collect());
    let setup = Setup::new(HOURLY);
    for _ in 0..3 {
        setup.repo.ok(["backup", "--mongo", uri, "--mongo-db", &db]);
    }
    let file = uri_file(&setup.repo, "mongo.uri", uri);
    setup.write_config(HOURLY, &follower("f", &file, ""));
    let admin = setup.token("boss", "admin");
    let server = setup.start();
    let running = |what: &str| {
        wait_for(&server, what, || {
            let view = server.follower(&admin, "f");
            (view["running"] == true).then_some(view)
        })
    };
    running("the follower to start");
    let act = |action: &str, body: Value| {
        let path = format!("/api/v1/repositories/main/{action}");
        let answer = server.json_with("POST", &path, &admin, &body, StatusCode::ACCEPTED);
        server.wait_ended(started(&answer), &admin)
    };
    let forgot = act(
        "forget",
        json!({"policy": {"keep_last": 1}, "dry_run": false}),
    );
    assert_eq!(forgot["status"], "success", "{forgot}");
    assert_eq!(
        forgot["report"]["removed"].as_array().unwrap().len(),
        2,
        "{forgot}"
    );
    running("the follower to resume after forget");
    let pruned = act("prune", json!({"max_unused": 0}));
    assert_eq!(pruned["status"], "success", "{pruned}");
    let view = running("the follower to resume after prune");
    assert_eq!(view["restarts"], 0, "a pause is not a failure: {view}");
    let tick_db = unique_db("pause_tick");
    let now = m.cluster_time();
    wait_archived(&server, &m, &admin, "f", &now, &tick_db);
    m.drop_db(&db);
    m.drop_db(&tick_db);
}
