//! The engine called from an async server (issue 14, "async-friendly edges"): MongoDB
//! functions run on the caller's tokio runtime (`Conn::connect_on`) instead of owning one,
//! and engine operations called through `spawn_blocking` on that runtime finish without
//! deadlocks, two at a time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use common::mongo::{self, Mongo};
use strata::backend::local::LocalBackend;
use strata::cancel::Cancel;
use strata::observer::Quiet;
use strata::ops::archiver::{
    self, ArchiveError, BackupOptions, BackupResult, ParentChoice, TreeSource,
};
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::key::KdfParams;
use strata::repo::lock::LockMode;
use strata::repo::repository::{IndexedRepo, Repository};
use strata::select::filter::Patterns;
use strata::sources::mongodb::export::{ExportOptions, MongoExport};
use strata::sources::mongodb::{Conn, NsFilter};

fn repository(dir: &std::path::Path) -> IndexedRepo {
    let backend = Arc::new(LocalBackend::new(dir.join("repo")));
    let config = Config::new(ChunkerParams::FILES, Config::DEFAULT_PACK_SIZE, 3);
    let repo = Repository::init(backend, b"pw", config, KdfParams::new(64, 1)).unwrap();
    repo.open_index(None).unwrap()
}

/// A MongoDB backup of `db` into `repo` on `handle`'s runtime: the documents exported.
fn backup_on(handle: tokio::runtime::Handle, uri: &str, db: &str, repo: &IndexedRepo) -> u64 {
    let (result, exported) = mongo_backup(handle, uri, db, repo, Cancel::default());
    assert!(result.unwrap().id.is_some());
    exported
}

/// A MongoDB backup of `db` that `cancel` may stop: its result and the documents read.
fn mongo_backup(
    handle: tokio::runtime::Handle,
    uri: &str,
    db: &str,
    repo: &IndexedRepo,
    cancel: Cancel,
) -> (Result<BackupResult, ArchiveError>, u64) {
    let conn = Conn::connect_on(uri, handle).expect("connect on the caller's runtime");
    let opts = ExportOptions {
        filter: NsFilter {
            databases: vec![db.to_string()],
            ..NsFilter::default()
        },
        users: false,
        consistency: false,
        parallel: 2,
    };
    let export = MongoExport::new(conn, opts).unwrap();
    let backup = BackupOptions {
        paths: Vec::new(),
        exclude: Patterns::new::<&str>(&[]).unwrap(),
        one_file_system: false,
        parent: ParentChoice::None,
        tags: Vec::new(),
        host: "engine-async".into(),
        dry_run: false,
        time: None,
        cancel,
    };
    let sources: [&dyn TreeSource; 1] = [&export];
    let lock = (repo.lock(LockMode::Shared, "backup", Duration::ZERO, None)).unwrap();
    let result = archiver::backup_with(&lock, &backup, &sources, &Quiet);
    let report = export.report();
    (result, report.collections.iter().map(|c| c.documents).sum())
}

#[test]
fn mongo_backups_run_from_spawn_blocking_on_the_callers_runtime() {
    let uri = mongo::shared().to_string();
    let m = Mongo::new(&uri);
    let dbs = [mongo::unique_db("async_a"), mongo::unique_db("async_b")];
    for (n, db) in dbs.iter().enumerate() {
        let docs = (0..500 * (n + 1))
            .map(|i| doc! {"_id": i as i64, "v": "x"})
            .collect();
        m.insert(db, "c", docs);
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(repository(dir.path()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let exported = rt.block_on(async {
        let tasks = dbs.iter().map(|db| {
            let (uri, db, repo) = (uri.clone(), db.clone(), repo.clone());
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || backup_on(handle, &uri, &db, &repo))
        });
        let all = futures_util::future::try_join_all(tasks);
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("no deadlock: both backups finish")
            .expect("no panic")
    });
    assert_eq!(exported, vec![500, 1000]);
    let (snapshots, _) = repo.snapshots().unwrap();
    assert_eq!(snapshots.len(), 2);
    for db in &dbs {
        m.drop_db(db);
    }
}

#[test]
fn a_cancelled_mongo_backup_stops_and_writes_no_snapshot() {
    let uri = mongo::shared().to_string();
    let m = Mongo::new(&uri);
    let db = mongo::unique_db("async_cancel");
    m.insert(&db, "c", (0..2000i64).map(|i| doc! {"_id": i}).collect());
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = Cancel::default();
    cancel.cancel();
    let (result, _) = mongo_backup(rt.handle().clone(), &uri, &db, &repo, cancel);
    let err = result.err().expect("cancelled");
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(repo.snapshots().unwrap().0.is_empty());
    m.drop_db(&db);
}

#[test]
fn a_current_thread_runtime_is_refused_with_a_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = Conn::connect_on("mongodb://127.0.0.1:9", rt.handle().clone())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("multi-thread"), "{err}");
}
