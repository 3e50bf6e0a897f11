//! End-to-end tests of format version 3's defences (issue 12): objects bound to their kind
//! (finding 2), the config pinned in the client's cache and bounds-checked, key files with
//! bounded KDF parameters (finding 5) and a required MAC (finding 6), and old formats read
//! but not written.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::e2e::*;
use common::*;
use strata::backend::local::LocalBackend;
use strata::backend::{Backend, Kind};
use strata::repo::crypto::{Aad, ObjectKind};
use strata::repo::repository::Repository;

/// A fast repository storing blobs uncompressed, so that a backed-up file's blob is its
/// content encrypted: what an attacker who gets a chosen file backed up can carve out.
fn uncompressed_repo() -> TestRepo {
    let repo = TestRepo::new();
    let mut args = FAST_INIT.to_vec();
    args.extend(["--compression", "0"]);
    repo.ok(args);
    repo
}

/// Backs up a file holding `content`, then returns the stored ciphertext of its blob, cut
/// out of its pack. The test uses the key only to find where the blob lies; an attacker
/// finds it from sizes.
fn back_up_and_carve(repo: &TestRepo, content: &[u8]) -> Vec<u8> {
    let dir = repo.scratch("chosen");
    fs::write(dir.join("file.json"), content).unwrap();
    repo.ok(os_args!["backup", &dir]);
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let opened = Repository::open(backend, repo.password.as_bytes()).unwrap();
    let indexed = opened.open_index(None).unwrap();
    let loc = indexed.locate(&indexed.key().blob_id(content)).unwrap();
    let (offset, length) = (loc.entry.offset as u64, loc.entry.length as u64);
    let pack = loc.pack.0.to_hex();
    indexed
        .backend()
        .get_range(Kind::Pack, &pack, offset, length)
        .unwrap()
}

/// Stores `bytes` as an object of `kind` the way an attacker with write access would.
fn plant(repo: &TestRepo, kind: Kind, name: &str, bytes: &[u8]) {
    LocalBackend::new(repo.repo_path())
        .put(kind, name, bytes)
        .unwrap();
}

/// (id, time) of every snapshot `snapshots` lists.
fn snapshot_list(listed: &Value) -> Vec<(String, String)> {
    let all = listed.as_array().expect("snapshots --json lists an array");
    all.iter()
        .map(|s| {
            (
                field_str(s, "id").to_string(),
                field_str(s, "time").to_string(),
            )
        })
        .collect()
}

fn snapshot_times(repo: &TestRepo) -> Vec<(String, String)> {
    snapshot_list(&repo.json(["snapshots"]))
}

#[test]
fn object_kind_confusion_data_blob_saved_as_snapshot_is_rejected() {
    let repo = uncompressed_repo();
    let src = repo.scratch("src");
    fs::write(src.join("a"), "first").unwrap();
    repo.ok(os_args!["backup", &src]);
    fs::write(src.join("a"), "second").unwrap();
    repo.ok(os_args!["backup", &src]);
    let genuine = snapshot_times(&repo);
    let newest = genuine.last().unwrap().0.clone();
    let mut forged = repo.json(["cat", "snapshot", &newest]);
    forged["time"] = json!("2099-01-01T00:00:00Z");
    let carved = back_up_and_carve(&repo, &serde_json::to_vec(&forged).unwrap());
    let name = blake3::hash(&carved).to_hex().to_string();
    plant(&repo, Kind::Snapshot, &name, &carved);

    let listed = repo.ok(["snapshots", "--json"]);
    let times = snapshot_list(&stdout_json(&listed, "snapshots"));
    assert!(
        times.iter().all(|(_, t)| !t.starts_with("2099")),
        "a carved data blob was accepted as a snapshot: {times:?}"
    );
    assert!(stderr(&listed).contains(&name[..8]), "{}", stderr(&listed));
    repo.ok(["forget", "--keep-last", "1"]);
    let left: Vec<String> = snapshot_times(&repo).into_iter().map(|s| s.0).collect();
    assert!(
        left.contains(&newest),
        "forget deleted the newest genuine snapshot: {left:?}"
    );
}

#[test]
fn object_kind_confusion_data_blob_saved_as_lock_is_rejected() {
    let repo = uncompressed_repo();
    let lock = json!({"mode": "exclusive", "created": "9999-01-01T00:00:00Z",
        "refreshed": "9999-01-01T00:00:00Z", "host": "elsewhere", "pid": 1,
        "username": "mallory", "command": "prune"});
    let carved = back_up_and_carve(&repo, &serde_json::to_vec(&lock).unwrap());
    let name = "ab".repeat(32);
    plant(&repo, Kind::Lock, &name, &carved);

    repo.ok(["forget", "--keep-last", "5"]);
    repo.ok(["unlock"]);
    let locks = LocalBackend::new(repo.repo_path())
        .list(Kind::Lock)
        .unwrap();
    assert!(
        locks.iter().all(|e| e.name != name),
        "the carved lock survived unlock: {locks:?}"
    );
}

/// The config an attacker would like: tiny chunks and packs, no compression.
fn crafted_config(genuine: &Value, version: u32) -> Value {
    let mut c = genuine.clone();
    c["version"] = json!(version);
    c["chunker"] = json!({"min_size": 64, "avg_size": 256, "max_size": 1024});
    c["pack_size"] = json!(1024);
    c["compression"] = json!(0);
    c
}

#[test]
fn object_kind_confusion_data_blob_saved_as_config_is_rejected() {
    let repo = uncompressed_repo();
    let genuine = repo.json(["cat", "config"]);
    let original = fs::read(repo.repo_path().join("config")).unwrap();
    for version in [3, 2] {
        let wanted = crafted_config(&genuine, version);
        let carved = back_up_and_carve(&repo, &serde_json::to_vec(&wanted).unwrap());
        fs::write(repo.repo_path().join("config"), &carved).unwrap();
        for cache in [&[][..], &["--no-cache"][..]] {
            let mut args = vec!["cat", "config"];
            args.extend(cache);
            let out = repo.fail(&args);
            assert!(
                !stdout(&out).contains("1024"),
                "forged config (version {version}) accepted: {}",
                stdout(&out)
            );
        }
        fs::write(repo.repo_path().join("config"), &original).unwrap();
        assert_eq!(repo.json(["cat", "config"]), genuine);
    }
}

#[test]
fn config_pin_refuses_a_config_from_another_repository_with_the_same_key() {
    let repo = fast_repo();
    let src = repo.scratch("src");
    fs::write(src.join("a"), "data").unwrap();
    repo.ok(os_args!["backup", &src]);
    let genuine = fs::read(repo.repo_path().join("config")).unwrap();
    let backend = Arc::new(LocalBackend::new(repo.repo_path()));
    let opened = Repository::open(backend, repo.password.as_bytes()).unwrap();
    let mut other = opened.config().clone();
    other.id = strata::repo::id::Id::random();
    let plain = serde_json::to_vec(&other).unwrap();
    let sealed = opened
        .key()
        .encrypt(&Aad::bound(ObjectKind::Config, b""), &plain);
    fs::write(repo.repo_path().join("config"), &sealed).unwrap();

    let out = repo.fail(["snapshots"]);
    assert!(
        stderr(&out).contains("config changed since this client last used it"),
        "{}",
        stderr(&out)
    );
    fs::write(repo.repo_path().join("config"), &genuine).unwrap();
    repo.ok(["snapshots"]);
}

/// The first key file of the repository, as JSON, and its path.
fn key_file(repo: &TestRepo) -> (std::path::PathBuf, Value) {
    let keys = repo.repo_path().join("keys");
    let path = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let json = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    (path, json)
}

/// Runs `child` to its end, or kills it after `limit`: a hung command fails the test
/// instead of hanging it.
fn finish_within(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("the command still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn kdf_parameters_unbounded_planted_key_file_is_skipped_with_a_warning() {
    let repo = fast_repo();
    let (_, mut planted) = key_file(&repo);
    planted["kdf"]["iterations"] = json!(u32::MAX);
    let name = "00".repeat(32);
    let path = repo.repo_path().join("keys").join(&name);
    fs::write(&path, serde_json::to_vec(&planted).unwrap()).unwrap();

    for args in [&["snapshots", "--no-cache"][..], &["key", "list"][..]] {
        let child = repo
            .cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_within(child, Duration::from_secs(120));
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&name[..8]) && err.contains("out of bounds"),
            "{err}"
        );
    }
}

#[test]
fn key_file_without_mac_is_refused_and_reported_by_check() {
    let repo = fast_repo();
    let second = repo.path().join("second-password");
    fs::write(&second, "second").unwrap();
    repo.ok(os_args!["key", "add", "--new-password-file", &second]);
    repo.ok(["key", "list"]);
    let keys = repo.repo_path().join("keys");
    let mut stripped = 0;
    for entry in fs::read_dir(&keys).unwrap() {
        let path = entry.unwrap().path();
        let mut json: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        if !opens_with(&path, "second") {
            continue;
        }
        json.as_object_mut().unwrap().remove("mac");
        json["host"] = json!("edited");
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        stripped += 1;
    }
    assert_eq!(stripped, 1);

    let mut with_second = TestRepo::new();
    with_second.password = "second".into();
    let out = with_second
        .cmd(["snapshots", "--no-cache"])
        .env("STRATA_REPOSITORY", repo.repo_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no MAC"), "{}", stderr(&out));

    let out = repo.fail(["check"]);
    let report = stdout(&out) + &stderr(&out);
    assert!(report.contains("no MAC"), "{report}");
}

/// A MAC-less copy of the genuine key file, planted where it is tried first, does not keep
/// the genuine one from opening the repository (it is tried after every file with a MAC).
#[test]
fn key_file_without_mac_planted_first_does_not_hide_the_genuine_one() {
    let repo = fast_repo();
    let keys = repo.repo_path().join("keys");
    let genuine = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let mut json: Value = serde_json::from_slice(&fs::read(&genuine).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("mac");
    fs::write(
        keys.join("00".repeat(32)),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    let out = repo.cmd(["snapshots", "--no-cache"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Whether the key file at `path` is the one `password` opens (checked with the library).
fn opens_with(path: &Path, password: &str) -> bool {
    let file = strata::repo::key::KeyFile::parse(&fs::read(path).unwrap()).unwrap();
    file.open(password.as_bytes()).is_ok()
}

#[test]
fn old_format_fixtures_are_read_but_not_written() {
    for version in [1, 2] {
        let repo = fixture::fixture_repo(version);
        assert_eq!(
            field_u64(&repo.json(["cat", "config"]), "version"),
            version as u64
        );
        fixture::assert_fixture_snapshots_restore(&repo, version);
        repo.ok(["check", "--read-data"]);
        repo.ok(["ls", "latest"]);

        let src = repo.scratch("src");
        fs::write(src.join("new"), "new data").unwrap();
        let second = repo.path().join("second-password");
        fs::write(&second, "second").unwrap();
        let writes = [
            os_args!["backup", &src],
            os_args!["forget", "--keep-last", "1"],
            os_args!["prune"],
            os_args!["key", "add", "--new-password-file", &second],
        ];
        for args in writes {
            let out = repo.fail(&args);
            assert!(
                stderr(&out).contains("strata migrate"),
                "v{version} {args:?}: {}",
                stderr(&out)
            );
        }
        fixture::assert_fixture_snapshots_restore(&repo, version);
    }
}
