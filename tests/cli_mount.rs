//! End-to-end tests of `strata mount`: repositories with several snapshots of generated trees
//! are mounted by the real binary over FUSE and read with ordinary file operations and `find`.
//! FUSE is required (CI's `.ci/run` installs fuse3 and runs as root): without it these tests
//! fail with a message saying so; they are never skipped.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::e2e::*;
use common::mount::*;
use common::repo::strata_bin;
use common::tree::*;
use common::*;

/// The large file of the main test and its size.
const BIG: &str = "big/hundred-mib.bin";
const BIG_LEN: u64 = 100 * MIB;
/// What a test compares for each entry: type, size, content digest, symlink target, mode,
/// mtime, owner, link count of files and device number.
#[derive(Debug, PartialEq)]
struct Meta {
    kind: &'static str,
    size: u64,
    digest: Option<String>,
    target: Option<PathBuf>,
    mode: u32,
    mtime: (i64, i64),
    owner: (u32, u32),
    nlink: u64,
    rdev: u64,
}

fn kind(md: &fs::Metadata) -> &'static str {
    let t = md.file_type();
    match () {
        _ if t.is_symlink() => "symlink",
        _ if t.is_dir() => "dir",
        _ if t.is_file() => "file",
        _ if t.is_fifo() => "fifo",
        _ if t.is_char_device() => "chardev",
        _ if t.is_block_device() => "blockdev",
        _ => "socket",
    }
}

fn digest(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    h.update_reader(file)
        .unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    h.finalize().to_hex().to_string()
}

fn meta(path: &Path, md: &fs::Metadata) -> Meta {
    let kind = kind(md);
    Meta {
        kind,
        size: if matches!(kind, "file" | "symlink") {
            md.len()
        } else {
            0
        },
        digest: (kind == "file").then(|| digest(path)),
        target: (kind == "symlink").then(|| fs::read_link(path).expect("readlink")),
        mode: if kind == "symlink" {
            0
        } else {
            md.mode() & 0o7777
        },
        mtime: (md.mtime(), md.mtime_nsec()),
        owner: (md.uid(), md.gid()),
        nlink: if kind == "file" { md.nlink() } else { 0 },
        rdev: if kind.ends_with("dev") { md.rdev() } else { 0 },
    }
}

/// Every entry below `root` with its `Meta`.
fn manifest(root: &Path) -> BTreeMap<PathBuf, Meta> {
    dir_entries(root)
        .into_iter()
        .map(|(rel, md)| {
            let m = meta(&root.join(&rel), &md);
            (rel, m)
        })
        .collect()
}

fn assert_same_manifest(got: &BTreeMap<PathBuf, Meta>, want: &BTreeMap<PathBuf, Meta>, what: &str) {
    let mut diffs: Vec<String> = want
        .iter()
        .filter(|(p, m)| got.get(*p) != Some(m))
        .map(|(p, m)| format!("{p:?}: want {m:?}, got {:?}", got.get(p)))
        .collect();
    diffs.extend(
        got.keys()
            .filter(|p| !want.contains_key(*p))
            .map(|p| format!("{p:?}: not in the original")),
    );
    let shown: Vec<&String> = diffs.iter().take(20).collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{shown:#?}",
        diffs.len()
    );
}

/// The paths `find` lists below `root`, raw bytes, sorted.
fn find_paths(root: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-printf", "%P\\0"])
        .output()
        .expect("run find");
    assert!(out.status.success(), "find {root:?}: {}", stderr(&out));
    let mut paths: Vec<Vec<u8>> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    paths.sort();
    paths
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// A snapshot as the tests remember it: id, and the source's manifest and `find` listing.
struct Taken {
    id: String,
    manifest: BTreeMap<PathBuf, Meta>,
    found: Vec<Vec<u8>>,
}

impl Taken {
    fn short(&self) -> &str {
        &self.id[..8]
    }
}

fn backup(repo: &TestRepo, src: &Path, extra: &[&str]) -> Taken {
    let mut args = vec![OsStr::new("backup"), src.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let report = repo.json(&args);
    Taken {
        id: field_str(&report, "snapshot_id").to_string(),
        manifest: manifest(src),
        found: find_paths(src),
    }
}

/// The generated tree plus a 100 MiB file, 3,000 small files, a fifo, a character device
/// and a pair of hard links.
fn build_source(src: &Path) {
    generate_tree(&src.join("edge"), 31);
    generate_small_tree(&src.join("small"), 31, 3000);
    let big = src.join(BIG);
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    let mut rng = Rng::new(99);
    let mut block = vec![0u8; MIB as usize];
    let file = File::create(&big).unwrap();
    for i in 0..BIG_LEN / MIB {
        rng.fill(&mut block);
        file.write_all_at(&block, i * MIB).unwrap();
    }
    let special = src.join("special");
    fs::create_dir(&special).unwrap();
    run_ok(Command::new("mkfifo").arg(special.join("fifo")));
    run_ok(
        Command::new("mknod")
            .arg(special.join("null"))
            .args(["c", "1", "3"]),
    );
    fs::write(special.join("one"), b"linked twice\n").unwrap();
    fs::hard_link(special.join("one"), special.join("two")).unwrap();
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

/// Changes between snapshots: contents, a deleted and an added file, a retargeted symlink,
/// a mode, and a renamed directory.
fn change_source(src: &Path, round: u64) {
    mutate_file(&src.join("edge").join(HELLO_FILE), round);
    mutate_file(
        &src.join(format!("small/d0/e0/f{:05}.txt", 32 * round)),
        round,
    );
    fs::write(
        src.join(format!("added-{round}.txt")),
        format!("round {round}\n"),
    )
    .unwrap();
    fs::remove_file(src.join(format!("small/d1/e1/f{:05}.txt", 9 + 32 * round))).unwrap();
    let link = src.join("edge").join(SYMLINK_REL);
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(format!("../files/round-{round}"), &link).unwrap();
    set_mode(&src.join("edge").join(EXEC_FILE), 0o700 + round as u32);
    let (from, to) = (
        format!("small/d{}", round + 2),
        format!("small/d{}-renamed", round + 2),
    );
    fs::rename(src.join(from), src.join(to)).unwrap();
}

/// The directory of snapshot `short` under `dir` (named `<time>_<short>`).
fn snapshot_dir(dir: &Path, short: &str) -> PathBuf {
    let suffix = format!("_{short}");
    let found: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| n.ends_with(&suffix))
        .collect();
    assert_eq!(found.len(), 1, "one {suffix} in {dir:?}: {:?}", names(dir));
    dir.join(&found[0])
}

/// Chunk lengths of the file at absolute `path` in snapshot `id`, from `strata cat tree`.
fn chunk_lengths(repo: &TestRepo, id: &str, path: &Path) -> Vec<u64> {
    let json = |args: &[&str]| stdout_json(&repo.ok(args), args);
    let mut tree = json(&["cat", "snapshot", id])["tree"]
        .as_str()
        .unwrap()
        .to_string();
    let names: Vec<&OsStr> = path.iter().skip(1).collect();
    for (i, name) in names.iter().enumerate() {
        let t = json(&["cat", "tree", &tree]);
        let nodes = t["nodes"].as_array().unwrap();
        let node = nodes
            .iter()
            .find(|n| json_name(&n["name"]) == name.as_bytes())
            .unwrap_or_else(|| panic!("{name:?} not in tree {tree}"));
        if i + 1 == names.len() {
            let content = node["kind"]["file"]["content"].as_array().unwrap();
            return content.iter().map(|c| c["len"].as_u64().unwrap()).collect();
        }
        tree = node["kind"]["dir"]["subtree"].as_str().unwrap().to_string();
    }
    panic!("empty path")
}

/// Reads up to `len` bytes at `offset` with seek + read (short only at the end).
fn seek_read(file: &mut File, offset: u64, len: usize) -> Vec<u8> {
    file.seek(SeekFrom::Start(offset)).expect("seek");
    let mut out = Vec::new();
    file.by_ref()
        .take(len as u64)
        .read_to_end(&mut out)
        .expect("read");
    out
}

/// Seek + read of odd sizes at and across every chunk boundary and at random offsets.
fn check_random_reads(mounted: &Path, original: &Path, chunks: &[u64]) {
    let mut offsets: Vec<(u64, usize)> = Vec::new();
    let mut boundary = 0;
    for len in chunks {
        boundary += len;
        offsets.extend([
            (boundary - 1, 2),
            (boundary.saturating_sub(4097), 8193),
            (boundary, 3),
        ]);
    }
    assert_eq!(boundary, BIG_LEN, "the chunks add up to the file");
    let mut rng = Rng::new(5);
    offsets.extend((0..60).map(|_| (rng.below(BIG_LEN), 1 + rng.below(MIB) as usize)));
    offsets.extend([(BIG_LEN - 3, 100), (BIG_LEN + 10, 5), (0, 1)]);
    let mut file = File::open(mounted).expect("open the mounted file");
    let source = File::open(original).expect("open the original");
    for (offset, len) in offsets {
        let got = seek_read(&mut file, offset, len);
        let want_len = len.min(BIG_LEN.saturating_sub(offset) as usize);
        let mut want = vec![0u8; want_len];
        source
            .read_exact_at(&mut want, offset)
            .expect("read the original");
        assert!(
            got == want,
            "{len} bytes at {offset} differ ({} read)",
            got.len()
        );
    }
}

#[test]
fn mount_shows_every_snapshot_as_it_was() {
    require_fuse();
    let (repo, src) = init_with_src();
    build_source(&src);
    let a = backup(&repo, &src, &["--tag", "first"]);
    change_source(&src, 1);
    let b = backup(&repo, &src, &["--host", "other-host", "--parent", &a.id]);
    change_source(&src, 2);
    let c = backup(&repo, &src, &["--tag", "second"]);
    let mnt = repo.scratch("mnt");
    let mut mounted = Mounted::start(&repo, &mnt, &["--refresh", "1"]);

    check_layout(&mnt, [&a, &b, &c]);
    for taken in [&a, &b, &c] {
        let root = restored_path(&snapshot_dir(&mnt.join("snapshots"), taken.short()), &src);
        assert_same_manifest(&manifest(&root), &taken.manifest, taken.short());
        assert_eq!(find_paths(&root), taken.found, "find below {root:?}");
    }
    let c_root = restored_path(&mnt.join("ids").join(c.short()), &src);
    check_hard_links(&c_root.join("special"));
    let chunks = chunk_lengths(&repo, &c.id, &src.join(BIG));
    assert!(
        chunks.len() > 50,
        "the big file has many chunks: {chunks:?}"
    );
    check_random_reads(&c_root.join(BIG), &src.join(BIG), &chunks);
    check_concurrent_readers(&mnt, &src, [&a, &b, &c]);

    fs::write(src.join("after-mount.txt"), b"written after mounting\n").unwrap();
    let d = backup(&repo, &src, &[]);
    let latest = wait_for_latest(&mnt.join("snapshots"), d.short());
    let new_file = restored_path(&latest, &src).join("after-mount.txt");
    assert_eq!(fs::read(new_file).unwrap(), b"written after mounting\n");

    let status = mounted.stop_with(libc::SIGTERM);
    let (out, err) = mounted.output();
    assert!(status.success(), "exit {status}: {err}");
    assert!(out.contains("unmounted"), "stdout: {out}");
    assert_unmounted_and_gone(&mnt);
}

/// `snapshots/` names every snapshot and links `latest` to the newest; `ids/`, `hosts/` and
/// `tags/` group them.
fn check_layout(mnt: &Path, [a, b, c]: [&Taken; 3]) {
    assert_eq!(names(mnt), ["hosts", "ids", "snapshots", "tags"]);
    let snapshots = mnt.join("snapshots");
    assert_eq!(names(&snapshots).len(), 4, "{:?}", names(&snapshots));
    let newest = snapshot_dir(&snapshots, c.short());
    assert_eq!(
        fs::read_link(snapshots.join("latest")).unwrap(),
        Path::new(newest.file_name().unwrap())
    );
    let name = newest.file_name().unwrap().to_str().unwrap();
    let time = &name[..19];
    assert!(
        chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "{name} starts with the local time"
    );
    let mut ids = vec![a.short(), b.short(), c.short()];
    ids.sort();
    assert_eq!(names(&mnt.join("ids")), ids);
    assert_eq!(
        names(&mnt.join("hosts")).len(),
        2,
        "{:?}",
        names(&mnt.join("hosts"))
    );
    snapshot_dir(&mnt.join("hosts/other-host"), b.short());
    assert_eq!(names(&mnt.join("tags")), ["first", "second"]);
    snapshot_dir(&mnt.join("tags/first"), a.short());
    snapshot_dir(&mnt.join("tags/second"), c.short());
    let attrs = fs::metadata(mnt.join("snapshots")).unwrap();
    assert_eq!(
        attrs.mode() & 0o7777,
        0o555,
        "generated directories are read-only"
    );
    assert!(
        fs::write(newest.join("x"), b"no").is_err(),
        "the mount is read-only"
    );
}

fn check_hard_links(special: &Path) {
    let one = fs::symlink_metadata(special.join("one")).unwrap();
    let two = fs::symlink_metadata(special.join("two")).unwrap();
    assert_eq!(
        (one.ino(), one.nlink()),
        (two.ino(), 2),
        "hard links share an inode"
    );
    let null = fs::symlink_metadata(special.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
}

/// Eight threads read different files (the big file in three snapshots, and sized files)
/// at the same time; each content matches its snapshot.
fn check_concurrent_readers(mnt: &Path, src: &Path, taken: [&Taken; 3]) {
    let mut jobs: Vec<(PathBuf, String)> = Vec::new();
    for (i, t) in taken.iter().enumerate() {
        let root = restored_path(&mnt.join("ids").join(t.short()), src);
        let mut files = vec![PathBuf::from(BIG)];
        files.extend(
            SIZED_FILES[2 * i..2 * i + 2]
                .iter()
                .map(|(p, _)| Path::new("edge").join(p)),
        );
        for rel in files {
            let want = t.manifest[&rel].digest.clone().expect("a file");
            jobs.push((root.join(rel), want));
        }
    }
    std::thread::scope(|s| {
        for (path, want) in &jobs {
            s.spawn(move || assert_eq!(&digest(path), want, "concurrent read of {path:?}"));
        }
    });
}

/// Waits (refresh is 1 s) until `snapshots/latest` names snapshot `short`; returns its dir.
fn wait_for_latest(snapshots: &Path, short: &str) -> PathBuf {
    let started = Instant::now();
    loop {
        let target = fs::read_link(snapshots.join("latest")).unwrap();
        if target.to_string_lossy().ends_with(short) {
            return snapshots.join(target);
        }
        assert!(
            started.elapsed() < PATIENCE,
            "snapshot {short} did not appear"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The mount point is an empty, unmounted directory and no process refers to it.
fn assert_unmounted_and_gone(mnt: &Path) {
    assert!(!is_mounted(mnt), "{mnt:?} is still mounted");
    assert_empty_dir(mnt);
    let needle = mnt.as_os_str().as_bytes();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let hit = cmdline.windows(needle.len()).any(|w| w == needle);
        assert!(!hit, "a process still refers to {mnt:?}: {cmdline:?}");
    }
}

/// A small repository with three snapshots of two sources, on two hosts, with tags and
/// fixed times.
fn small_history() -> (TestRepo, [String; 3]) {
    let (repo, src) = init_with_src();
    let (one, two) = (src.join("one"), src.join("two"));
    generate_small_tree(&one, 1, 20);
    generate_small_tree(&two, 2, 20);
    let mut ids = Vec::new();
    for (dir, host, tag, day) in [
        (&one, "h1", "a", 1),
        (&one, "h2", "b", 2),
        (&two, "h1", "b", 3),
    ] {
        let time = format!("2024-01-0{day} 10:00:00");
        let args = os_args!["backup", dir, "--host", host, "--tag", tag, "--time", time];
        ids.push(field_str(&repo.json(&args), "snapshot_id").to_string());
    }
    (repo, ids.try_into().unwrap())
}

/// The short ids under `ids/` of a mount with `extra` options.
fn shown_ids(repo: &TestRepo, extra: &[&str]) -> Vec<String> {
    let mnt = repo.scratch("filtered");
    let mut mounted = Mounted::start(repo, &mnt, extra);
    let shown = names(&mnt.join("ids"));
    assert!(
        mounted.stop_with(libc::SIGINT).success(),
        "{}",
        mounted.output().1
    );
    shown
}

#[test]
fn snapshot_host_tag_and_path_options_limit_what_is_shown() {
    require_fuse();
    let (repo, [s1, s2, s3]) = small_history();
    let short = |id: &String| id[..8].to_string();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = sorted(vec![short(&s1), short(&s2), short(&s3)]);
    assert_eq!(shown_ids(&repo, &[]), all);
    let picked = shown_ids(&repo, &["--snapshot", &s1[..10], "--snapshot", "latest"]);
    assert_eq!(picked, sorted(vec![short(&s1), short(&s3)]));
    assert_eq!(
        shown_ids(&repo, &["--host", "h1", "--tag", "b"]),
        [short(&s3)]
    );
    let one_dir = repo.path().join("scratch/src/one");
    let by_path = shown_ids(&repo, &["--path", one_dir.to_str().unwrap()]);
    assert_eq!(by_path, sorted(vec![short(&s1), short(&s2)]));
    assert!(shown_ids(&repo, &["--tag", "nope"]).is_empty());

    let mnt = repo.scratch("named");
    let mut mounted = Mounted::start(&repo, &mnt, &["--host", "h1", "--json"]);
    let names_h1 = names(&mnt.join("hosts/h1"));
    let local = |day| format!("2024-01-0{day}T10:00:00");
    let want = [
        format!("{}_{}", local(1), short(&s1)),
        format!("{}_{}", local(3), short(&s3)),
    ];
    assert_eq!(
        names_h1,
        [want[0].clone(), want[1].clone(), "latest".into()]
    );
    // The mount holds a shared lock: exclusive work waits for it to end.
    let refused = repo.run(["prune"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("shared lock of `mount`"),
        "{}",
        stderr(&refused)
    );
    assert!(mounted.stop_with(libc::SIGTERM).success());
    repo.ok(["prune"]);
    let json: Value = serde_json::from_str(&mounted.output().0).expect("JSON on stdout");
    assert_eq!(field_u64(&json, "snapshots"), 2);
    assert_eq!(field_str(&json, "mountpoint"), mnt.to_str().unwrap());
}

#[test]
fn a_stale_mount_is_reported_and_a_busy_one_is_detached() {
    require_fuse();
    let (repo, _) = small_history();
    let mnt = repo.scratch("mnt");
    let mut killed = Mounted::start(&repo, &mnt, &[]);
    assert!(!killed.stop_with(libc::SIGKILL).success());
    let out = repo.fail(os_args!["mount", &mnt]);
    let err = stderr(&out);
    let clear = format!("fusermount3 -u {}", mnt.display());
    assert!(
        err.contains("stale") && err.contains(&clear),
        "stderr: {err}"
    );
    run_ok(Command::new("fusermount3").args(["-u"]).arg(&mnt));
    assert!(!is_mounted(&mnt));

    let mut busy = Mounted::start(&repo, &mnt, &[]);
    let latest = mnt.join("snapshots/latest");
    let file = fs::read_dir(restored_path(
        &latest,
        &repo.path().join("scratch/src/two/d0/e0"),
    ))
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let open = File::open(&file).expect("open a file in the mount");
    let status = busy.stop_with(libc::SIGTERM);
    let (_, err) = busy.output();
    assert!(status.success(), "exit {status}: {err}");
    assert!(
        err.contains("busy") && err.contains("detached"),
        "stderr: {err}"
    );
    assert!(!is_mounted(&mnt), "detached");
    drop(open);
}

/// The options of the mount at `dir`, from /proc/mounts.
fn mount_options(dir: &Path) -> Vec<String> {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let want = dir.to_str().expect("test paths are UTF-8");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want))
        .unwrap_or_else(|| panic!("{want} is not in /proc/mounts:\n{mounts}"));
    line.split(' ')
        .nth(3)
        .unwrap()
        .split(',')
        .map(String::from)
        .collect()
}

/// Issue 12, finding 10: a mount by root got neither `nosuid` nor `nodev`, so a set-user-id
/// file or a device node stored in the repository would take effect in it.
#[test]
fn mount_as_root_is_nosuid_nodev_read_only_and_shared_only_with_allow_other() {
    require_fuse();
    let (repo, _) = small_history();
    let mnt = repo.scratch("options");
    for (extra, shared) in [(&[][..], false), (&["--allow-other"][..], true)] {
        let mut mounted = Mounted::start(&repo, &mnt, extra);
        let options = mount_options(&mnt);
        for want in ["ro", "nosuid", "nodev"] {
            assert!(options.iter().any(|o| o == want), "{want}: {options:?}");
        }
        let others = options.iter().any(|o| o == "allow_other");
        let checked = options.iter().any(|o| o == "default_permissions");
        assert_eq!(
            (others, checked),
            (shared, shared),
            "{extra:?}: {options:?}"
        );
        assert!(
            mounted.stop_with(libc::SIGINT).success(),
            "{}",
            mounted.output().1
        );
    }
}

#[test]
fn missing_fuse_and_bad_arguments_are_clear_errors() {
    require_fuse();
    let script = r#"mount -t tmpfs none /dev && exec "$0" mount /"#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .arg(strata_bin())
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/dev/fuse does not exist"),
        "{}",
        stderr(&out)
    );

    // A copy of the binary that the unprivileged user can surely reach.
    let public = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    set_mode(public.path(), 0o755);
    let bin = public.path().join("strata");
    fs::copy(strata_bin(), &bin).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            "PATH=/nowhere",
        ])
        .arg(&bin)
        .args(["mount", "/"])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fusermount3 is not installed"),
        "{}",
        stderr(&out)
    );

    let (repo, _) = small_history();
    let file = repo.path().join("scratch/src/one/d0/e0/f00000.txt");
    let cases: [(Vec<std::ffi::OsString>, &str); 3] = [
        (
            os_args!["mount", repo.path().join("nowhere")],
            "No such file",
        ),
        (os_args!["mount", &file], "is not a directory"),
        (
            os_args!["mount", repo.path(), "--snapshot", "ffffffff"],
            "no snapshot matches",
        ),
    ];
    for (args, message) in cases {
        let out = run_expect(&repo, &args, 1);
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    run_expect(&repo, ["mount", "/tmp", "--refresh", "0"], 2);
    run_expect(&repo, ["mount", "/tmp", "--cache-mib", "1"], 2);
}
