//! MongoDB test servers: SecantusDB (`secantusd-py` from the virtualenv that `.ci/run`
//! installs, found through `$STRATA_SECANTUS_BIN` or the default path) started on a free port
//! with a temporary storage path, or the server at `$MONGODB_URI` when that is set. Tests
//! talk to a server only through the `mongodb` crate, via [`Mongo`].
use bson::{Document, RawDocumentBuf, doc};
use futures_util::TryStreamExt;
use std::future::IntoFuture;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A server for one test binary, shared by its tests (each test uses its own databases).
pub fn shared() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| match external() {
        Some(uri) => uri,
        None => {
            let (tx, rx) = std::sync::mpsc::channel();
            // The server is spawned by a thread that lives as long as the process, with
            // PR_SET_PDEATHSIG, so it dies with the tests however they end; when they end
            // normally, `stop_shared` also removes its storage (hundreds of MB).
            std::thread::spawn(move || {
                let server = Server::start(&[]);
                let uri = server.uri.clone();
                *SHARED_SERVER.lock().expect("shared server") = Some(server);
                // SAFETY: registers a plain function with no arguments.
                unsafe { libc::atexit(stop_shared) };
                tx.send(uri).expect("send uri");
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("the shared server started")
        }
    })
}

static SHARED_SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Stops the shared server and removes its storage when the test process exits.
extern "C" fn stop_shared() {
    if let Ok(mut server) = SHARED_SERVER.try_lock() {
        drop(server.take());
    }
}

fn external() -> Option<String> {
    std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty())
}

/// Whether the tests run against `$MONGODB_URI` instead of servers of their own.
pub fn is_external() -> bool {
    external().is_some()
}

/// A SecantusDB server of one test, stopped when dropped.
pub struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    pub uri: String,
}

fn secantus_bin() -> PathBuf {
    let path = std::env::var_os("STRATA_SECANTUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/strata-test/secantus-venv/bin/secantusd-py")
        });
    assert!(
        path.exists(),
        "the MongoDB test server {path:?} is missing: run .ci/run (it installs SecantusDB into \
         a virtualenv), set STRATA_SECANTUS_BIN to secantusd-py, or set MONGODB_URI"
    );
    path
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts SecantusDB with `extra` flags and waits until it answers.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("secantus-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let mut cmd = Command::new(secantus_bin());
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
        ])
        .arg(dir.path().join("data"))
        .args(["--log-level", "WARNING"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
        dies_with_the_tests(&mut cmd);
        let child = cmd.spawn().expect("start secantusd-py");
        let server = Server {
            child,
            _dir: dir,
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        let port = self
            .uri
            .split(':')
            .nth(2)
            .and_then(|p| p.split('/').next())
            .expect("port");
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "SecantusDB did not answer within 60 s; its log:\n{}",
                std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Mongo::new(&self.uri).run("admin", doc! {"ping": 1});
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server to restore into that starts empty: a new SecantusDB, or with `$MONGODB_URI`
/// the same server (callers then use database names of their own).
pub enum Fresh {
    Own(Server),
    External(String),
}

impl Fresh {
    pub fn start() -> Fresh {
        match external() {
            Some(uri) => Fresh::External(uri),
            None => Fresh::Own(Server::start(&[])),
        }
    }

    pub fn uri(&self) -> &str {
        match self {
            Fresh::Own(s) => &s.uri,
            Fresh::External(u) => u,
        }
    }
}

/// A blocking client for tests.
pub struct Mongo {
    rt: tokio::runtime::Runtime,
    pub client: mongodb::Client,
}

impl Mongo {
    pub fn new(uri: &str) -> Mongo {
        // A worker thread keeps the driver's monitor running while the caller does other
        // work: on a current-thread runtime its check would time out during a long strata
        // command and then cut the next operation's connection.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut opts = rt
            .block_on(mongodb::options::ClientOptions::parse(uri).into_future())
            .expect("client options");
        // A busy server (dropping a large database) must not have its connections cut by a
        // monitor check that timed out.
        opts.connect_timeout = Some(Duration::from_secs(60));
        let client = {
            let _runtime = rt.enter();
            mongodb::Client::with_options(opts).expect("client")
        };
        Mongo { rt, client }
    }

    pub fn block<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.rt.block_on(f.into_future())
    }

    /// Runs a command; panics with the command on failure.
    pub fn run(&self, db: &str, cmd: Document) -> Document {
        self.try_run(db, cmd.clone())
            .unwrap_or_else(|e| panic!("{cmd} on {db}: {e}"))
    }

    pub fn try_run(&self, db: &str, cmd: Document) -> mongodb::error::Result<Document> {
        self.block(self.client.database(db).run_command(cmd))
    }

    pub fn insert(&self, db: &str, coll: &str, docs: Vec<Document>) {
        let c = self.client.database(db).collection::<Document>(coll);
        self.block(c.insert_many(docs)).expect("insert_many");
    }

    /// Every document's raw bytes, in `_id` order.
    pub fn raw_docs(&self, db: &str, coll: &str) -> Vec<RawDocumentBuf> {
        let c = self.client.database(db).collection::<RawDocumentBuf>(coll);
        self.block(async {
            c.find(doc! {})
                .sort(doc! {"_id": 1})
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .expect("find")
    }

    pub fn count(&self, db: &str, coll: &str) -> u64 {
        let c = self.client.database(db).collection::<Document>(coll);
        self.block(c.count_documents(doc! {})).expect("count")
    }

    /// `listCollections` entries by name, without `info` (uuid and read-only flag).
    pub fn collections(&self, db: &str) -> Vec<(String, Document)> {
        let specs = self.cursor(db, doc! {"listCollections": 1});
        let mut out: Vec<(String, Document)> = specs
            .into_iter()
            .map(|mut s| {
                s.remove("info");
                (s.get_str("name").expect("name").to_string(), s)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Index specs of a collection, sorted by name.
    pub fn indexes(&self, db: &str, coll: &str) -> Vec<Document> {
        let mut specs = self.cursor(db, doc! {"listIndexes": coll});
        specs.sort_by(|a, b| a.get_str("name").ok().cmp(&b.get_str("name").ok()));
        specs
    }

    fn cursor(&self, db: &str, cmd: Document) -> Vec<Document> {
        let database = self.client.database(db);
        self.block(async {
            database
                .run_cursor_command(cmd)
                .await?
                .try_collect::<Vec<Document>>()
                .await
        })
        .expect("cursor command")
    }

    /// The newest oplog entry's time as `SECONDS:INCREMENT`.
    pub fn cluster_time(&self) -> String {
        let c = self
            .client
            .database("local")
            .collection::<Document>("oplog.rs");
        let e = self
            .block(c.find_one(doc! {}).sort(doc! {"$natural": -1}))
            .expect("oplog")
            .expect("an oplog entry");
        let ts = e.get_timestamp("ts").expect("ts");
        format!("{}:{}", ts.time, ts.increment)
    }

    pub fn drop_db(&self, db: &str) {
        self.run(db, doc! {"dropDatabase": 1});
    }

    /// Writes `g.c` (`_id` 1 to 1099) until SecantusDB started with `--oplog-max-entries`
    /// pruned its oplog (it does after every 1000 single-document writes): the entries
    /// before them are gone. Bounded to a minute.
    pub fn roll_over_oplog(&self) {
        for i in 1..1100 {
            self.insert("g", "c", vec![doc! {"_id": i}]);
        }
        let oplog = (self.client.database("local")).collection::<Document>("oplog.rs");
        let start = Instant::now();
        while self.block(oplog.count_documents(doc! {})).unwrap() > 1000 {
            assert!(start.elapsed().as_secs() < 60, "the oplog was not pruned");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A database name unique to this test run.
/// `restore latest --mongo URI --ns-from 'FROM.*' --ns-to 'TO.*'`.
pub fn renamed_restore(uri: &str, from: &str, to: &str) -> Vec<String> {
    let args = ["restore", "latest", "--mongo", uri, "--ns-from"];
    let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    v.extend([format!("{from}.*"), "--ns-to".into(), format!("{to}.*")]);
    v
}

pub fn unique_db(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .subsec_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

/// What a database holds, per namespace: documents (raw, in `_id` order), the
/// `listCollections` entry (without `info` and `ns`) and the index specs (without `ns`).
pub type DbState =
    std::collections::BTreeMap<String, (Vec<RawDocumentBuf>, Document, Vec<Document>)>;

impl Mongo {
    pub fn state(&self, db: &str) -> DbState {
        self.collections(db)
            .into_iter()
            .map(|(name, mut spec)| {
                if let Ok(id) = spec.get_document_mut("idIndex") {
                    id.remove("ns");
                }
                let is_view = spec.get_str("type").ok() == Some("view");
                let indexes = match is_view {
                    true => Vec::new(),
                    false => self
                        .indexes(db, &name)
                        .into_iter()
                        .map(|mut i| {
                            i.remove("ns");
                            i
                        })
                        .collect(),
                };
                (name.clone(), (self.raw_docs(db, &name), spec, indexes))
            })
            .collect()
    }
}

/// Seven steps of changes to `db` (which holds collections `a` and `b`), calling `after_step`
/// after each: inserts; updates (operators, array edits and a replacement); deletes; a
/// transaction over both collections; two indexes created; `b` dropped and re-created capped;
/// `a` renamed to `c`.
pub fn scripted_changes(m: &Mongo, db: &str, after_step: &mut dyn FnMut(&Mongo)) {
    m.insert(
        db,
        "a",
        (100..110)
            .map(|i| doc! {"_id": i, "v": i, "arr": [1, 2, 3, 4]})
            .collect(),
    );
    after_step(m);
    m.run(
        db,
        doc! {"update": "a", "updates": [
            {"q": {"_id": 1}, "u": {"$set": {"v": "changed", "sub.x": 1}, "$unset": {"gone": ""}}},
            {"q": {"_id": 100}, "u": {"$push": {"arr": {"$each": [], "$slice": 2}}}},
            {"q": {"_id": 101}, "u": {"$set": {"arr.1": "two"}}},
            {"q": {"_id": 2}, "u": {"_id": 2, "replaced": true}},
        ]},
    );
    after_step(m);
    m.run(
        db,
        doc! {"delete": "a", "deletes": [{"q": {"_id": {"$in": [3, 4, 105]}}, "limit": 0}]},
    );
    after_step(m);
    let coll = m.client.database(db).collection::<bson::Document>("a");
    let other = m.client.database(db).collection::<bson::Document>("b");
    let mut session = m.block(m.client.start_session()).unwrap();
    m.block(session.start_transaction()).unwrap();
    m.block(
        coll.insert_one(doc! {"_id": 500, "in": "txn"})
            .session(&mut session),
    )
    .unwrap();
    m.block(
        other
            .update_one(doc! {"_id": 1}, doc! {"$set": {"txn": true}})
            .session(&mut session),
    )
    .unwrap();
    m.block(session.commit_transaction()).unwrap();
    after_step(m);
    m.run(db, doc! {"createIndexes": "a", "indexes": [{"key": {"v": 1}, "name": "v_1"}, {"key": {"k": 1}, "name": "k_u", "unique": true, "sparse": true}]});
    after_step(m);
    m.run(db, doc! {"drop": "b"});
    m.run(db, doc! {"create": "b", "capped": true, "size": 65536});
    m.insert(db, "b", vec![doc! {"_id": "new"}]);
    after_step(m);
    m.run(
        "admin",
        doc! {"renameCollection": format!("{db}.a"), "to": format!("{db}.c")},
    );
    after_step(m);
}

/// Asserts two database states are equal, naming the first namespace that differs.
pub fn assert_same_state(want: &DbState, got: &DbState, what: &str) {
    let names = |s: &DbState| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(want), names(got), "{what}: namespaces");
    for (ns, (docs, spec, indexes)) in want {
        let (gdocs, gspec, gindexes) = &got[ns];
        assert_eq!(spec, gspec, "{what}: options of {ns}");
        let by_name = |v: &[Document]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.get_str("name").ok().cmp(&b.get_str("name").ok()));
            v
        };
        // By name: a restore builds the dump's indexes after replaying the oplog, so those
        // created during it come first.
        assert_eq!(
            by_name(indexes),
            by_name(gindexes),
            "{what}: indexes of {ns}"
        );
        assert_eq!(docs.len(), gdocs.len(), "{what}: document count of {ns}");
        for (a, b) in docs.iter().zip(gdocs) {
            assert!(a.as_bytes() == b.as_bytes(), "{what}: {ns}: {a:?} != {b:?}");
        }
    }
}

/// Makes a server the tests start die with them (SIGKILL when the test process exits).
/// Here rather than in `common/mod.rs` because the MongoDB benchmark includes this file alone;
/// the S3 server uses it too.
pub fn dies_with_the_tests(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
