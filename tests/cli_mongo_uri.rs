//! Finding 12 of issue 12: the MongoDB URI, password included, could only be given on the
//! command line, where every user sees it in the process list. It is now also read from
//! `--mongo-uri-file PATH` or `STRATA_MONGO_URI`, and a password on the command line gets a
//! warning. The servers named here are dead ports on 127.0.0.1, told apart by port: the
//! connection error names the one that was used.

mod common;

use std::process::Output;

use common::e2e::*;
use common::*;

const QUICK: &str = "serverSelectionTimeoutMS=500&connectTimeoutMS=500";
const WARNING: &str = "holds a password";

fn uri(port: u16, password: bool) -> String {
    let user = if password { "user:secret@" } else { "" };
    format!("mongodb://{user}127.0.0.1:{port}/?{QUICK}")
}

fn run_with_env(repo: &TestRepo, args: &[&str], env: Option<&str>) -> Output {
    let mut cmd = repo.cmd(args);
    if let Some(uri) = env {
        cmd.env("STRATA_MONGO_URI", uri);
    }
    let out = cmd.output().expect("run strata");
    assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
    out
}

/// Fails to connect, naming `port`; warns about a password exactly when `warned`.
fn assert_tried(out: &Output, port: u16, warned: bool) {
    let err = stderr(out);
    let at = format!("MongoDB at 127.0.0.1:{port}");
    assert!(err.contains(&at), "expected {at:?} in: {err}");
    assert_eq!(err.contains(WARNING), warned, "warning: {err}");
    assert!(
        !err.contains("secret"),
        "the password is never printed: {err}"
    );
}

#[test]
fn mongo_uri_is_read_from_a_file_or_the_environment_and_a_password_in_argv_is_warned_about() {
    let (repo, src) = init_with_src();
    std::fs::write(src.join("f"), b"x").unwrap();
    let file = repo.path().join("uri");
    std::fs::write(&file, format!("{}\n", uri(1, true))).unwrap();
    let (file, src) = (file.to_str().unwrap(), src.to_str().unwrap());
    let (env, argv, argv_plain) = (uri(2, true), uri(3, true), uri(3, false));
    let (env, argv, argv_plain) = (Some(env.as_str()), argv.as_str(), argv_plain.as_str());
    let backup = |extra: &[&str], env: Option<&str>| {
        let args = [&["backup", src, "--mongo"], extra].concat();
        run_with_env(&repo, &args, env)
    };
    assert_tried(&backup(&["--mongo-uri-file", file], env), 1, false);
    assert_tried(&backup(&[], env), 2, false);
    assert_tried(&backup(&[argv], env), 3, true);
    assert_tried(&backup(&[argv_plain], None), 3, false);
    let none = backup(&[], None);
    assert!(
        stderr(&none).contains("no MongoDB URI"),
        "{}",
        stderr(&none)
    );

    let follow = |args: &[&str], env: Option<&str>| {
        run_with_env(&repo, &[&["mongo", "follow", "--once"], args].concat(), env)
    };
    assert_tried(&follow(&["--mongo-uri-file", file], None), 1, false);
    assert_tried(&follow(&[], env), 2, false);
    assert_tried(&follow(&[argv], None), 3, true);

    // scan names the server it found no snapshot of; restore reads the file first.
    let scan = run_with_env(&repo, &["scan", "--mongo", "--mongo-uri-file", file], None);
    assert!(
        stderr(&scan).contains("snapshot of 127.0.0.1:1"),
        "{}",
        stderr(&scan)
    );
    let missing = repo.path().join("missing").to_str().unwrap().to_string();
    let restore = ["restore", "latest", "--mongo", "--mongo-uri-file", &missing];
    let err = stderr(&run_with_env(&repo, &restore, None));
    assert!(err.contains("reading MongoDB URI file"), "{err}");
}
