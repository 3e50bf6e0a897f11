//! Error messages name what the user gave and show each cause once (issue 14: "config repo
//! already exists: config repo already exists" and the like).

mod common;

use std::ffi::OsStr;
use std::fs;

use common::e2e::*;
use common::*;

/// The error line, checked for a cause printed twice: no ": X: X" anywhere in it.
fn error_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.starts_with("strata: error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"))
        .to_string();
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            assert!(a.len() < 8 || a != b, "{a:?} repeated in {line:?}");
        }
    }
    line
}

#[test]
fn init_of_an_existing_repository_names_it_once() {
    let (repo, _src) = init_with_src();
    let out = run_expect(&repo, ["init"], 1);
    let line = error_line(&out);
    let location = repo.repo_path().display().to_string();
    assert!(line.contains("there is already a repository at"), "{line}");
    assert_eq!(line.matches(&location).count(), 1, "{line}");
}

#[test]
fn backup_of_a_missing_path_shows_the_os_error_once() {
    let (repo, src) = init_with_src();
    let missing = src.join("no-such-dir");
    let out = run_expect(&repo, [OsStr::new("backup"), missing.as_os_str()], 1);
    let line = error_line(&out);
    assert!(line.contains(&missing.display().to_string()), "{line}");
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

#[test]
fn restore_into_a_file_names_it_once() {
    let (repo, src) = init_with_src();
    fs::write(src.join("f"), b"x").unwrap();
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    let target = repo.scratch("t").join("afile");
    fs::write(&target, b"not a directory").unwrap();
    let out = run_expect(&repo, restore_args("latest", &target, &[]), 1);
    let line = error_line(&out);
    assert_eq!(line.matches("not a directory").count(), 1, "{line}");
}
