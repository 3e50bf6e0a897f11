//! The observer (issue 14, item 3): backup, restore, check and prune report their phases
//! in order and counters that only grow and end at the figures of their final report, and
//! an entry they leave out arrives as a typed error that the report lists too.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::backend::Kind;
use strata::backend::local::LocalBackend;
use strata::cancel::Cancel;
use strata::observer::{Counters, EntryError, EntryErrorKind, Observer, Phase};
use strata::ops::archiver::{self, BackupOptions, BackupResult, ParentChoice};
use strata::ops::checker::{self, ReadData};
use strata::ops::pruner::{self, PruneOptions};
use strata::ops::restorer::{self, RestoreOptions};
use strata::ops::sandbox::OnConflict;
use strata::repo::config::{ChunkerParams, Config};
use strata::repo::key::KdfParams;
use strata::repo::lock::LockMode;
use strata::repo::repository::{IndexedRepo, Repository};
use strata::select::filter::Patterns;

/// Everything an operation told its observer.
#[derive(Default)]
struct Recording {
    phases: Vec<Phase>,
    /// The counters after each increment.
    seen: Vec<Counters>,
    errors: Vec<EntryError>,
    items: u64,
}

/// Records what it is told; deletes the file named `vanish` when it becomes the item at
/// hand, that is between the backup examining it and reading it.
#[derive(Default)]
struct Recorder {
    log: Mutex<Recording>,
    vanish: Option<PathBuf>,
}

impl Observer for Recorder {
    fn phase(&self, phase: Phase) {
        self.log.lock().unwrap().phases.push(phase);
    }
    fn add(&self, done: Counters) {
        let mut log = self.log.lock().unwrap();
        let mut now = log.seen.last().copied().unwrap_or_default();
        now += done;
        log.seen.push(now);
    }
    fn item(&self, name: &str) {
        if self.vanish.as_deref() == Some(Path::new(name)) {
            std::fs::remove_file(name).unwrap();
        }
        self.log.lock().unwrap().items += 1;
    }
    fn error(&self, error: &EntryError) {
        self.log.lock().unwrap().errors.push(error.clone());
    }
}

impl Recorder {
    fn take(&self) -> Recording {
        std::mem::take(&mut self.log.lock().unwrap())
    }
}

impl Recording {
    /// The final counters, after checking that no field ever went down.
    fn last(&self) -> Counters {
        for pair in self.seen.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                b.files >= a.files
                    && b.bytes_read >= a.bytes_read
                    && b.bytes_added >= a.bytes_added
                    && b.blobs >= a.blobs
                    && b.packs >= a.packs,
                "{a:?} then {b:?}"
            );
        }
        self.seen.last().copied().unwrap_or_default()
    }
}

fn repository(dir: &Path) -> IndexedRepo {
    let backend = Arc::new(LocalBackend::new(dir.join("repo")));
    let config = Config::new(ChunkerParams::FILES, 1 << 20, 3);
    let repo = Repository::init(backend, b"pw", config, KdfParams::new(64, 1)).unwrap();
    repo.open_index(None).unwrap()
}

fn backup(repo: &IndexedRepo, src: &Path, observer: &dyn Observer) -> BackupResult {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        exclude: Patterns::new::<&str>(&[]).unwrap(),
        one_file_system: false,
        parent: ParentChoice::Auto,
        tags: Vec::new(),
        host: "engine-observer".into(),
        dry_run: false,
        time: None,
        cancel: Cancel::default(),
    };
    let lock = repo.lock(LockMode::Shared, "backup", Duration::ZERO, None);
    archiver::backup(&lock.unwrap(), &opts, observer).unwrap()
}

#[test]
fn backup_counts_what_its_summary_says_and_reports_a_vanished_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let src = dir.path().join("src");
    common::generate_small_tree(&src, 7, 40);
    common::digest::write_random_file(&src.join("big.bin"), 3 << 20, 1);
    let gone = src.join("d0/vanishes.txt");
    std::fs::write(&gone, b"read me if you can").unwrap();
    let observer = Recorder {
        vanish: Some(gone.clone()),
        ..Recorder::default()
    };

    let result = backup(&repo, &src, &observer);
    let log = observer.take();
    let s = &result.snapshot.summary;
    let last = log.last();
    assert_eq!(
        (last.files, last.bytes_read, last.bytes_added),
        (s.total_files, s.bytes_read, s.bytes_added)
    );
    assert_eq!(last.blobs, s.data_blobs_added + s.tree_blobs_added);
    assert!(last.packs > 0 && log.items > 40);
    assert_eq!(log.phases, [Phase::Reading, Phase::Indexing]);

    let gone = gone.display().to_string();
    assert_eq!(log.errors.len(), 1, "{:?}", log.errors);
    assert_eq!(log.errors[0].path, gone);
    assert_eq!(log.errors[0].kind, EntryErrorKind::Vanished);
    assert_eq!(result.errors, log.errors);
    assert_eq!(s.errors, 1);
}

#[test]
fn restore_counts_what_it_wrote_and_reports_a_socket_it_cannot_make() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let src = dir.path().join("src");
    common::generate_small_tree(&src, 8, 30);
    let _socket = UnixListener::bind(src.join("sock")).unwrap();
    let snap = backup(&repo, &src, &strata::observer::Quiet).snapshot;

    for on_conflict in [OnConflict::Fail, OnConflict::Overwrite] {
        let mut opts = RestoreOptions::new(dir.path().join(format!("to-{on_conflict:?}")));
        opts.on_conflict = on_conflict;
        let observer = Recorder::default();
        let report = restorer::restore(&repo, snap.tree, &opts, u64::MAX, &observer).unwrap();
        let log = observer.take();
        let last = log.last();
        assert_eq!(
            (last.files, last.bytes_added),
            (report.files, report.bytes_written)
        );
        assert_eq!((last.files, last.bytes_read), (30, 0));
        let phases: &[Phase] = match on_conflict {
            OnConflict::Fail => &[Phase::Scanning, Phase::Writing],
            _ => &[Phase::Writing],
        };
        assert_eq!(log.phases, phases);
        assert_eq!(log.errors.len(), 1, "{:?}", log.errors);
        assert!(log.errors[0].path.ends_with("/sock"), "{:?}", log.errors);
        assert_eq!(log.errors[0].kind, EntryErrorKind::Write);
        assert_eq!(report.errors, log.errors);
    }
}

#[test]
fn restore_reports_a_large_file_chunk_by_chunk_as_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    common::digest::write_random_file(&src.join("big.bin"), 8 << 20, 7);
    let snap = backup(&repo, &src, &strata::observer::Quiet).snapshot;

    let observer = Recorder::default();
    let opts = RestoreOptions::new(dir.path().join("to"));
    let report = restorer::restore(&repo, snap.tree, &opts, u64::MAX, &observer).unwrap();
    let log = observer.take();
    let last = log.last();
    assert_eq!((last.files, last.bytes_added), (1, 8 << 20));
    assert_eq!(report.bytes_written, 8 << 20);
    let before_done: Vec<u64> = (log.seen.iter())
        .filter(|c| c.files == 0 && c.bytes_added > 0)
        .map(|c| c.bytes_added)
        .collect();
    assert!(
        before_done.len() >= 2,
        "the bar moved only {} times before the file was done: {:?}",
        before_done.len(),
        log.seen
    );
}

#[test]
fn check_counts_the_packs_and_blobs_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let src = dir.path().join("src");
    common::generate_small_tree(&src, 9, 20);
    common::digest::write_random_file(&src.join("big.bin"), 3 << 20, 2);
    backup(&repo, &src, &strata::observer::Quiet);

    let observer = Recorder::default();
    let report = checker::check(&repo, ReadData::All, &Cancel::default(), &observer).unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    let log = observer.take();
    let last = log.last();
    assert_eq!(
        (last.packs, last.blobs),
        (report.packs_read, report.blobs_read)
    );
    assert!(last.packs > 1 && last.bytes_read > 3 << 20, "{last:?}");
    assert_eq!(
        log.phases,
        [Phase::Indexing, Phase::Scanning, Phase::Verifying]
    );
    assert!(log.errors.is_empty());
}

#[test]
fn prune_counts_the_packs_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let src = dir.path().join("src");
    common::generate_small_tree(&src, 10, 20);
    let first = backup(&repo, &src, &strata::observer::Quiet);
    common::digest::write_random_file(&src.join("big.bin"), 2 << 20, 3);
    backup(&repo, &src, &strata::observer::Quiet);
    let first = first.id.unwrap().0.to_hex();
    repo.backend().remove(Kind::Snapshot, &first).unwrap();

    let observer = Recorder::default();
    let opts = PruneOptions {
        max_unused_percent: 0.0,
        dry_run: false,
        cancel: Cancel::default(),
    };
    let lock = repo.lock(LockMode::Exclusive, "prune", Duration::ZERO, None);
    let report = pruner::prune(&lock.unwrap(), &opts, &observer).unwrap();
    let log = observer.take();
    let last = log.last();
    assert_eq!(
        (last.packs, last.bytes_added),
        (report.packs_written as u64, report.bytes_written)
    );
    assert!(
        last.packs > 0,
        "the first snapshot's trees were repacked away"
    );
    assert_eq!(
        log.phases,
        [
            Phase::Scanning,
            Phase::Repacking,
            Phase::Indexing,
            Phase::Removing
        ]
    );
}
