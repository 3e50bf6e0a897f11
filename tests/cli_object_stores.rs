//! Repositories on Google Cloud Storage and Azure Blob Storage (issue 15), against a
//! fake-gcs-server or an Azurite of each test: the round trip through the binary (init, two
//! backups, restore bit-exact, check --read-data, forget --prune, and reading files through
//! a mount), the backend contract that the other backends also run, conditional creates
//! that the server really refuses (racing inits, a second config or lock), and one-line
//! errors for a missing bucket and for missing or wrong credentials. The tests that every
//! store runs have one generic body each. Mounting needs FUSE (`.ci/setup`, as root).

mod common;

use common::azure::{ACCOUNT, Azurite, KEY};
use common::e2e::{
    FAST_INIT, assert_one_of_racing_inits_wins, fails_in_one_line, restored_path, restores_exactly,
    snapshot_ids,
};
use common::gcs::FakeGcs;
use common::mount::{Mounted, require_fuse};
use common::server::{StoreServer, round_trip};
use common::{CompareOpts, TestRepo, assert_trees_equal_with, generate_small_tree};
use std::ffi::OsStr;
use std::path::Path;
use strata::backend::{BackendError, Kind};

/// Each generic test below, run on each server: `gcs::NAME` and `azure::NAME`.
macro_rules! on_each_store {
    ($($test:ident),* $(,)?) => {
        mod gcs {
            $(#[test]
            fn $test() {
                super::$test::<super::FakeGcs>();
            })*
        }
        mod azure {
            $(#[test]
            fn $test() {
                super::$test::<super::Azurite>();
            })*
        }
    };
}

on_each_store!(
    init_backup_restore_check_prune_and_mount,
    the_backend_meets_the_contract,
    conditional_creates_are_refused,
);

/// The round trip of every store, then snapshot reads through a mount.
fn init_backup_restore_check_prune_and_mount<S: StoreServer>() {
    require_fuse();
    let server = S::start();
    server.create_bucket("strata");
    let repo = server.repo("strata", "hosts/one");
    let (src, kept) = round_trip(&repo, |prefix| server.open("strata", prefix));
    reads_through_a_mount(&repo, &kept, &src);
}

/// Mounts `repo` and reads snapshot `id` through the mount: it holds `src`'s files.
fn reads_through_a_mount(repo: &TestRepo, id: &str, src: &Path) {
    let mnt = repo.scratch("mnt");
    let mut mounted = Mounted::start(repo, &mnt, &[]);
    let root = restored_path(&mnt.join("ids").join(&id[..8]), src);
    let read = std::fs::read(root.join("d0/new.txt"));
    assert_eq!(read.unwrap(), b"a second backup");
    assert_trees_equal_with(src, &root, CompareOpts::content_only());
    let status = mounted.stop_with(libc::SIGTERM);
    assert!(status.success(), "{}", mounted.output().1);
}

fn the_backend_meets_the_contract<S: StoreServer>() {
    let server = S::start();
    server.create_bucket("contract");
    strata::backend::contract::run(server.open("contract", "c").as_ref());
}

/// Of racing inits exactly one wins, and a create-only put of a config or lock that
/// exists fails with `AlreadyExists` and leaves the first: the server refused the write
/// (a server that ignored the condition would have let every init and put succeed).
fn conditional_creates_are_refused<S: StoreServer>() {
    let server = S::start();
    server.create_bucket("race");
    let winner = assert_one_of_racing_inits_wins(|| server.repo("race", "shared"));

    let store = server.open("race", "shared");
    let config = store.get(Kind::Config, "config").unwrap();
    store.put(Kind::Lock, "0d", b"first").unwrap();
    for (kind, name) in [(Kind::Config, "config"), (Kind::Lock, "0d")] {
        let before = store.get(kind, name).unwrap();
        let err = store.put(kind, name, b"a second writer's").unwrap_err();
        assert!(
            matches!(&err, BackendError::AlreadyExists { kind: k, .. } if *k == kind),
            "{err}"
        );
        assert_eq!(store.get(kind, name).unwrap(), before, "{name}");
    }
    assert_eq!(store.get(Kind::Config, "config").unwrap(), config);
    store.remove(Kind::Lock, "0d").unwrap();
    winner.ok(["check"]);
}

/// `init` in a bucket that does not exist fails in one line that names the location and
/// `what` the store said.
fn a_missing_bucket_fails_in_one_line(server: &impl StoreServer, what: &str) {
    let out = server.repo("no-such-bucket", "r").fail(FAST_INIT);
    fails_in_one_line(&out, &[&server.location("no-such-bucket", "r"), what]);
}

#[test]
fn gcs_without_credentials_or_bucket_fails_in_one_line() {
    let server = FakeGcs::start();
    a_missing_bucket_fails_in_one_line(&server, "NotFound: 404: Not Found");

    server.create_bucket("signed");
    let mut repo = server.repo("signed", "r");
    repo.options.retain(|(key, _)| key != "gs.anonymous");
    let mut cmd = repo.cmd(["snapshots"]);
    cmd.env_remove("GOOGLE_APPLICATION_CREDENTIALS");
    let out = cmd.output().expect("run strata");
    let unsigned = "permission denied: no credentials found: set GOOGLE_APPLICATION_CREDENTIALS";
    fails_in_one_line(&out, &["gs:signed:/r", unsigned, "gs.anonymous=true"]);
}

#[test]
fn azure_with_a_wrong_key_or_no_container_fails_in_one_line() {
    let server = Azurite::start();
    a_missing_bucket_fails_in_one_line(&server, "ContainerNotFound");

    server.create_bucket("guarded");
    let mut repo = server.repo("guarded", "r");
    let wrong = KEY.replace('E', "F");
    repo.env.retain(|(name, _)| name != "AZURE_ACCOUNT_KEY");
    repo.env.push(("AZURE_ACCOUNT_KEY".into(), wrong));
    let out = repo.fail(FAST_INIT);
    fails_in_one_line(&out, &["azure:guarded:/r", "permission denied"]);
}

/// A connection string alone (no endpoint option, no account variables) reaches the
/// server, and its endpoint wins over the public one that an account name would imply.
#[test]
fn an_azure_connection_string_gives_account_key_and_endpoint() {
    let server = Azurite::start();
    server.create_bucket("strung");
    let mut repo = server.repo("strung", "r");
    repo.options.clear();
    repo.env = vec![(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        server.connection_string(),
    )];
    repo.ok(FAST_INIT);
    let src = repo.scratch("src");
    generate_small_tree(&src, 3, 20);
    repo.ok([OsStr::new("backup"), src.as_os_str()]);
    restores_exactly(&repo, "latest", &src, "target");

    repo.env.push(("AZURE_ACCOUNT_NAME".into(), ACCOUNT.into()));
    assert_eq!(snapshot_ids(&repo).len(), 1);
}
