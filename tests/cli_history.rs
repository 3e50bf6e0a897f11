//! End-to-end tests of `strata diff` and `strata find`: snapshots of a small generated
//! tree before and after known mutations.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use serde_json::Value;

use common::e2e::*;
use common::*;

const MTIME: i64 = 1_600_000_000;

/// Writes `path` (and its parents) with `bytes` and the mtime `MTIME + offset`.
fn write(path: &Path, bytes: &[u8], offset: i64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    set_mtime(path, MTIME + offset, 0);
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    Rng::new(seed).fill(&mut out);
    out
}

/// `backup src --time T --json` and the new snapshot's id.
fn backup_at(repo: &TestRepo, src: &Path, time: &str) -> String {
    let report = repo.json(os_args!["backup", src, "--time", time]);
    field_str(&report, "snapshot_id").to_string()
}

/// Every directory below (and including) `root` with its mtime.
fn dir_mtimes(root: &Path) -> Vec<(std::path::PathBuf, (i64, i64))> {
    let mut dirs = vec![(root.to_path_buf(), mtime_of(root))];
    for (rel, md) in dir_entries(root) {
        if md.is_dir() {
            let p = root.join(rel);
            dirs.push((p.clone(), mtime_of(&p)));
        }
    }
    dirs
}

/// Sets the mtimes recorded by `dir_mtimes` again (of the directories still there).
fn reset_mtimes(dirs: &[(std::path::PathBuf, (i64, i64))]) {
    for (p, (s, ns)) in dirs {
        if p.is_dir() {
            set_mtime(p, *s, *ns);
        }
    }
}

/// The changes of `diff --json` output outside `src`: the directories above it, whose
/// mtimes other tests may change.
fn outside<'a>(diff: &'a Value, src: &Path) -> Vec<&'a Value> {
    let prefix = format!("{}/", src.display());
    field_array(diff, "changes")
        .iter()
        .filter(|c| !field_str(c, "path").starts_with(&prefix))
        .collect()
}

/// `(marker, path relative to src)` of every change below `src` in `diff --json` output.
fn markers(diff: &Value, src: &Path) -> Vec<(String, String)> {
    let prefix = src.to_str().unwrap();
    field_array(diff, "changes")
        .iter()
        .filter(|c| field_str(c, "path").starts_with(&format!("{prefix}/")))
        .map(|c| {
            let marker = match field_str(c, "change") {
                "added" => "+",
                "removed" => "-",
                "modified" => "M",
                "metadata" => "U",
                other => panic!("unknown change {other}"),
            };
            let path = field_str(c, "path");
            let rel = path.strip_prefix(prefix).unwrap_or(path);
            (marker.to_string(), rel.to_string())
        })
        .collect()
}

fn change<'a>(diff: &'a Value, src: &Path, rel: &str, kind: &str) -> &'a Value {
    let path = format!("{}{rel}", src.display());
    field_array(diff, "changes")
        .iter()
        .find(|c| c["path"] == path.as_str() && c["change"] == kind)
        .unwrap_or_else(|| panic!("no {kind} change of {path} in {diff:#}"))
}

#[test]
fn diff_reports_known_mutations_with_sizes() {
    const BIG: usize = 10 << 20;
    let (repo, src) = init_with_src();
    // Chunk boundaries depend on the repository's random key and files cut between 512 KiB
    // and 8 MiB, so only a file longer than 8 MiB is sure to have a first chunk that ends
    // before a byte flipped near its end (a 3 MiB file was sometimes one chunk).
    let big = random_bytes(1, BIG);
    write(&src.join("big.bin"), &big, 1);
    write(&src.join("a.txt"), b"version one\n", 2);
    write(&src.join("b.txt"), b"mode changes\n", 3);
    write(&src.join("e.txt"), b"mtime changes\n", 4);
    write(&src.join("d/c.txt"), b"to be removed\n", 5);
    write(&src.join("d/same.txt"), b"stays\n", 6);
    write(&src.join("t"), b"becomes a directory\n", 7);
    symlink("a.txt", src.join("l")).unwrap();
    let dirs = dir_mtimes(&src);
    let first = backup_at(&repo, &src, "2024-01-01T00:00:00Z");

    write(&src.join("a.txt"), b"version two, longer\n", 2);
    set_mode(&src.join("b.txt"), 0o600);
    set_mtime(&src.join("e.txt"), MTIME + 400, 0);
    fs::remove_file(src.join("d/c.txt")).unwrap();
    write(&src.join("new.txt"), b"0123456789", 8);
    write(&src.join("newdir/x.bin"), &[7u8; 1000], 9);
    fs::remove_file(src.join("t")).unwrap();
    write(&src.join("t/inner.txt"), b"inner", 10);
    let link_mtime = mtime_of(&src.join("l"));
    fs::remove_file(src.join("l")).unwrap();
    symlink("b.txt", src.join("l")).unwrap();
    set_mtime(&src.join("l"), link_mtime.0, link_mtime.1);
    flip_byte(&src.join("big.bin"), (BIG - (1 << 19)) as u64);
    set_mtime(&src.join("big.bin"), MTIME + 1, 0);
    reset_mtimes(&dirs);
    set_mtime(&src.join("newdir"), MTIME, 0);
    set_mtime(&src.join("t"), MTIME, 0);
    let second = backup_at(&repo, &src, "2024-01-02T00:00:00Z");

    let diff = repo.json(["diff", &first, &second]);
    let want = [
        ("M", "/a.txt"),
        ("U", "/b.txt"),
        ("M", "/big.bin"),
        ("-", "/d/c.txt"),
        ("U", "/e.txt"),
        ("U", "/l"),
        ("+", "/new.txt"),
        ("+", "/newdir"),
        ("+", "/newdir/x.bin"),
        ("-", "/t"),
        ("+", "/t"),
        ("+", "/t/inner.txt"),
    ]
    .map(|(m, p)| (m.to_string(), p.to_string()));
    assert_eq!(markers(&diff, &src), want);
    let above = outside(&diff, &src);
    assert!(
        above
            .iter()
            .all(|c| c["change"] == "metadata" && c["type"] == "dir"),
        "only directories above src may change (their mtimes): {above:#?}"
    );

    let a = change(&diff, &src, "/a.txt", "modified");
    assert_eq!(
        (field_u64(a, "size_before"), field_u64(a, "size_after")),
        (12, 20)
    );
    assert_eq!(
        change(&diff, &src, "/b.txt", "metadata")["fields"],
        serde_json::json!(["mode"])
    );
    assert_eq!(
        change(&diff, &src, "/e.txt", "metadata")["fields"],
        serde_json::json!(["mtime"])
    );
    assert_eq!(
        change(&diff, &src, "/l", "metadata")["fields"],
        serde_json::json!(["target"])
    );
    assert_eq!(
        field_u64(change(&diff, &src, "/new.txt", "added"), "size_after"),
        10
    );
    assert_eq!(
        field_u64(change(&diff, &src, "/d/c.txt", "removed"), "size_before"),
        14
    );
    assert_eq!(change(&diff, &src, "/t", "removed")["type"], "file");
    assert_eq!(change(&diff, &src, "/t", "added")["type"], "dir");

    let s = &diff["summary"];
    let counts: Vec<u64> = [
        "files_added",
        "files_removed",
        "dirs_added",
        "dirs_removed",
        "others_added",
        "modified",
        "metadata",
    ]
    .iter()
    .map(|f| field_u64(s, f))
    .collect();
    let metadata = 3 + above.len() as u64;
    assert_eq!(counts, vec![3, 2, 2, 0, 0, 2, metadata]);
    // New content: new.txt, x.bin, inner.txt, a.txt's new version, and the changed chunk(s)
    // of big.bin, which never include its first chunk.
    let small_added = 10 + 1000 + 5 + 20;
    let added = field_u64(s, "bytes_added");
    assert!(
        added > small_added && added < small_added + BIG as u64,
        "{added}"
    );
    let small_removed = 12 + 14 + 20;
    let removed = field_u64(s, "bytes_removed");
    assert!(
        removed > small_removed && removed < small_removed + BIG as u64,
        "{removed}"
    );

    let text = stdout(&repo.ok(["diff", &first[..8], &second[..8]]));
    let src_s = src.display();
    for line in [
        format!("M {src_s}/a.txt (12 B -> 20 B)"),
        format!("U {src_s}/b.txt (mode)"),
        format!("- {src_s}/d/c.txt (14 B)"),
        format!("+ {src_s}/newdir/"),
        format!("+ {src_s}/new.txt (10 B)"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("added:    3 files, 2 dirs, 0 others"),
        "{text}"
    );
    let line = format!("modified: 2 files; metadata only: {metadata}");
    assert!(text.contains(&line), "{text}");

    let same = repo.json(["diff", &first, &first]);
    assert_eq!(field_array(&same, "changes").len(), 0);
    assert_eq!(field_u64(&same["summary"], "bytes_added"), 0);
    let err = stderr(&repo.fail(["diff", &first, "ffffffffff"]));
    assert!(err.contains("no snapshot matches"), "{err}");
}

/// `find --json` as `path relative to src -> [(snapshot id, size)]`.
fn versions(found: &Value, src: &Path) -> Vec<(String, Vec<(String, u64)>)> {
    let prefix = src.to_str().unwrap();
    found
        .as_array()
        .expect("find --json gives an array")
        .iter()
        .map(|f| {
            let path = field_str(f, "path");
            let vs = field_array(f, "versions")
                .iter()
                .map(|v| (field_str(v, "snapshot").to_string(), field_u64(v, "size")))
                .collect();
            (path.strip_prefix(prefix).unwrap_or(path).to_string(), vs)
        })
        .collect()
}

fn pairs(list: &[(&str, &[(&String, u64)])]) -> Vec<(String, Vec<(String, u64)>)> {
    list.iter()
        .map(|(p, vs)| {
            (
                p.to_string(),
                vs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            )
        })
        .collect()
}

#[test]
fn find_lists_every_version_across_snapshots() {
    let (repo, src) = init_with_src();
    let other = repo.scratch("other");
    write(&other.join("a.txt"), b"another backup path", 0);
    write(&src.join("a.txt"), b"0123456789", 1);
    write(&src.join("logs/x.log"), b"log", 2);
    let s1 = backup_at(&repo, &src, "2024-01-01T00:00:00Z");
    write(&src.join("a.txt"), &[b'x'; 20], 3);
    write(&src.join("sub/b.txt"), b"b", 4);
    let s2 = backup_at(&repo, &src, "2024-01-02T00:00:00Z");
    fs::remove_file(src.join("a.txt")).unwrap();
    let s3 = backup_at(&repo, &src, "2024-01-03T00:00:00Z");
    backup_at(&repo, &other, "2024-01-04T00:00:00Z");

    let src_arg = src.to_str().unwrap();
    let found = repo.json(["find", "*.txt", "--path", src_arg]);
    let want = pairs(&[
        ("/a.txt", &[(&s1, 10), (&s2, 20)]),
        ("/sub/b.txt", &[(&s2, 1), (&s3, 1)]),
    ]);
    assert_eq!(versions(&found, &src), want);
    let a1 = &field_array(&found[0], "versions")[0];
    assert_eq!(field_str(a1, "mtime"), "2020-09-13T12:26:41+00:00");
    assert_eq!(field_str(a1, "time"), "2024-01-01T00:00:00Z");
    assert_eq!(field_str(a1, "type"), "file");

    // Without --path the other backup's a.txt is found too; with both --snapshot only those.
    let all = repo.json(["find", "a.txt"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all:#}");
    let two = repo.json(["find", "*.txt", "--snapshot", &s2[..8], "--snapshot", &s3]);
    let want = pairs(&[
        ("/a.txt", &[(&s2, 20)]),
        ("/sub/b.txt", &[(&s2, 1), (&s3, 1)]),
    ]);
    assert_eq!(versions(&two, &src), want);

    // A pattern with `/` matches the full path, and directories match like files.
    let logs = repo.json(["find", &format!("{src_arg}/l*")]);
    let want = pairs(&[("/logs", &[(&s1, 0), (&s2, 0), (&s3, 0)])]);
    assert_eq!(versions(&logs, &src), want);
    let deep = repo.json(["find", &format!("{src_arg}/**/*.log")]);
    assert_eq!(versions(&deep, &src)[0].0, "/logs/x.log");
    assert_eq!(
        repo.json(["find", "*.txt", "--path", "/nowhere"]),
        serde_json::json!([])
    );

    let text = stdout(&repo.ok(["find", "b.txt", "--path", src_arg]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("{src_arg}/sub/b.txt"));
    assert!(lines[1].starts_with(&format!("  {}  ", &s2[..8])), "{text}");
    assert!(lines[2].starts_with(&format!("  {}  ", &s3[..8])), "{text}");
    assert_eq!(lines[3], "1 matching paths in 3 snapshots searched");

    let err = stderr(&repo.fail(["find", "a[b"]));
    assert!(err.contains("invalid pattern"), "{err}");
}
