//! Where a test's repository lives, for the tests that run against every kind of store
//! ([`on_every_store!`](crate::on_every_store)): a directory of the test, or a prefix of a
//! bucket on a moto S3 server of the test. The tests read the repository's objects through
//! strata's own backend, which lists both alike.
use super::TestRepo;
use super::e2e::FAST_INIT;
use super::s3::{CREDENTIALS, Moto};
use super::server::credentials_in_env;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use strata::backend::{self, Backend, Kind};

pub enum Store {
    /// A directory below the test's temporary directory.
    Local,
    /// One prefix per repository in one bucket of a moto server, stopped when dropped.
    S3 { moto: Moto, repos: AtomicUsize },
}

const BUCKET: &str = "strata";

impl Store {
    pub fn local() -> Store {
        Store::Local
    }

    /// A moto server with an empty bucket; the credentials are put into this process's
    /// environment too, for [`backend_of`].
    pub fn s3() -> Store {
        credentials_in_env(&CREDENTIALS);
        let moto = Moto::start();
        moto.create_bucket(BUCKET);
        Store::S3 {
            moto,
            repos: AtomicUsize::new(0),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Store::Local)
    }

    /// A client of a new repository location (not initialised).
    pub fn repo(&self) -> TestRepo {
        match self {
            Store::Local => TestRepo::new(),
            Store::S3 { moto, repos } => {
                let n = repos.fetch_add(1, Ordering::Relaxed);
                moto.repo(BUCKET, &format!("repo{n}"))
            }
        }
    }

    /// [`Store::repo`] initialised with a cheap KDF.
    pub fn fast_repo(&self) -> TestRepo {
        let repo = self.repo();
        repo.ok(FAST_INIT);
        repo
    }
}

/// The backend of `repo`'s location, opened in this process.
pub fn backend_of(repo: &TestRepo) -> Arc<dyn Backend> {
    let location = repo.location().into_string().expect("a UTF-8 location");
    backend::open(&location, &[]).unwrap_or_else(|e| panic!("open {location}: {e}"))
}

/// Every object of `repo` but the locks, as (kind, name, size), sorted. Object names are
/// content hashes or random, so an object that keeps its name and size and still passes
/// `check` is unchanged.
pub fn objects(repo: &TestRepo) -> Vec<(String, String, u64)> {
    let store = backend_of(repo);
    let mut all: Vec<_> = (Kind::ALL.iter().filter(|k| **k != Kind::Lock))
        .flat_map(|kind| {
            let listed = store.list(*kind).unwrap_or_else(|e| panic!("list: {e}"));
            listed
                .into_iter()
                .map(|e| (kind.to_string(), e.name, e.size))
        })
        .collect();
    all.sort();
    all
}

/// The names of the locks `repo` holds, sorted.
pub fn locks(repo: &TestRepo) -> Vec<String> {
    let listed = backend_of(repo).list(Kind::Lock);
    let mut names: Vec<String> = (listed.unwrap_or_else(|e| panic!("list locks: {e}")))
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

/// `on_every_store!(a, b)`: for each test body `fn a(store: &Store)` of the calling test
/// crate, the tests `local::a` (a directory) and `s3::a` (a moto server of its own).
#[macro_export]
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[test]
                fn $test() {
                    super::$test(&$crate::common::store::Store::local())
                }
            )*
        }
        mod s3 {
            $(
                #[test]
                fn $test() {
                    super::$test(&$crate::common::store::Store::s3())
                }
            )*
        }
    };
}
