//! Connecting: a client on the caller's tokio runtime (a server's) or a private one,
//! checked with a `ping` so that an unreachable server or wrong credentials fail at once
//! with a clear message.
use super::{MongoError, Result, cmd_err};
use crate::repo::snapshot::BsonTime;
use bson::{Document, doc};
use mongodb::Client;
use mongodb::options::ClientOptions;
use std::future::IntoFuture;
use std::time::Duration;

/// How long to look for a server when the URI does not say.
const SELECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection attempt or a monitor's check may take when the URI does not say:
/// generous, because a monitor check that times out interrupts the export's cursors, and a
/// busy server may answer slowly (an unreachable one still fails at `SELECT_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Conn {
    /// Always Some until dropped: taken in `drop` to be dropped inside the runtime.
    client: Option<Client>,
    /// The multi-thread runtime the driver runs on: the caller's (blocking calls must then
    /// come from outside its worker threads, from `spawn_blocking` as an HTTP server calls
    /// the engine) or `own`'s.
    handle: tokio::runtime::Handle,
    /// A private runtime, for callers without one (the CLI); kept alive here.
    _own: Option<tokio::runtime::Runtime>,
    /// host:port list, without credentials: what snapshots and messages show.
    pub server: String,
}

impl Conn {
    /// Connects on a private runtime.
    pub fn connect(uri: &str) -> Result<Conn> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Conn::connect_with(uri, rt.handle().clone(), Some(rt))
    }

    /// Connects on `handle`, a multi-thread runtime's: the connection's blocking calls
    /// (every engine function taking a `Conn`) must then be made outside the runtime's
    /// worker threads, for example from `tokio::task::spawn_blocking`.
    pub fn connect_on(uri: &str, handle: tokio::runtime::Handle) -> Result<Conn> {
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(MongoError::Connect {
                server: "the given URI".into(),
                message: "a MongoDB connection needs a multi-thread tokio runtime".into(),
            });
        }
        Conn::connect_with(uri, handle, None)
    }

    fn connect_with(
        uri: &str,
        handle: tokio::runtime::Handle,
        own: Option<tokio::runtime::Runtime>,
    ) -> Result<Conn> {
        let connect_err = |server: &str, e: &dyn std::fmt::Display| MongoError::Connect {
            server: server.to_string(),
            message: e.to_string(),
        };
        let mut conn = Conn {
            client: None,
            handle,
            _own: own,
            server: String::new(),
        };
        let mut opts = conn
            .block_on(ClientOptions::parse(uri))
            .map_err(|e| connect_err("the given URI", &e))?;
        conn.server = opts
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        opts.server_selection_timeout.get_or_insert(SELECT_TIMEOUT);
        opts.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        opts.app_name.get_or_insert_with(|| "strata".to_string());
        let client = {
            let _runtime = conn.handle().enter();
            Client::with_options(opts).map_err(|e| connect_err(&conn.server, &e))?
        };
        conn.client = Some(client);
        conn.block_on(
            conn.client()
                .database("admin")
                .run_command(doc! {"ping": 1}),
        )
        .map_err(|e| connect_err(&conn.server, &e))?;
        Ok(conn)
    }

    pub(crate) fn client(&self) -> &Client {
        self.client.as_ref().expect("a client until dropped")
    }

    pub(crate) fn block_on<F: IntoFuture>(&self, f: F) -> F::Output {
        self.handle.block_on(f.into_future())
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    pub(crate) fn command(&self, db: &str, cmd: Document) -> Result<Document> {
        let what = format!("{} on {db}", cmd.keys().next().map_or("", |k| k.as_str()));
        self.block_on(self.client().database(db).run_command(cmd))
            .map_err(cmd_err(what))
    }

    /// Whether the server keeps an oplog (`local.oplog.rs`): replica set members do.
    pub(crate) fn has_oplog(&self) -> Result<bool> {
        let hello = self.command("admin", doc! {"hello": 1})?;
        if !hello.contains_key("setName") {
            return Ok(false);
        }
        let names = self
            .block_on(self.client().database("local").list_collection_names())
            .map_err(cmd_err("listing collections of local"))?;
        Ok(names.iter().any(|n| n == "oplog.rs"))
    }

    /// The timestamp of the newest oplog entry.
    pub(crate) fn newest_oplog_time(&self) -> Result<Option<BsonTime>> {
        self.oplog_edge(-1)
    }

    /// The time of the last write as `hello` reports it (at or after the newest oplog
    /// entry; answered at once by servers whose oplog has no index), else the newest entry.
    pub fn last_write_time(&self) -> Result<Option<BsonTime>> {
        let hello = self.command("admin", doc! {"hello": 1})?;
        let last_write = hello
            .get_document("lastWrite")
            .and_then(|w| w.get_document("opTime"))
            .and_then(|o| o.get_timestamp("ts"));
        match last_write {
            Ok(ts) => Ok(Some(from_ts(ts))),
            Err(_) => self.newest_oplog_time(),
        }
    }

    pub(crate) fn oldest_oplog_time(&self) -> Result<Option<BsonTime>> {
        self.oplog_edge(1)
    }

    fn oplog_edge(&self, order: i32) -> Result<Option<BsonTime>> {
        let coll = self
            .client()
            .database("local")
            .collection::<Document>("oplog.rs");
        let found = self
            .block_on(coll.find_one(doc! {}).sort(doc! {"$natural": order}))
            .map_err(cmd_err("reading local.oplog.rs"))?;
        Ok(found.and_then(|d| d.get_timestamp("ts").ok()).map(from_ts))
    }
}

/// The `host:port` list of a URI (what snapshots record), without connecting.
pub fn server_of(uri: &str) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let opts = rt
        .block_on(ClientOptions::parse(uri).into_future())
        .map_err(|e| MongoError::Connect {
            server: "the given URI".into(),
            message: e.to_string(),
        })?;
    Ok(opts
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _runtime = self.handle().enter();
        self.client.take();
    }
}

pub(crate) fn from_ts(ts: bson::Timestamp) -> BsonTime {
    BsonTime {
        t: ts.time,
        i: ts.increment,
    }
}

pub(crate) fn to_ts(t: BsonTime) -> bson::Timestamp {
    bson::Timestamp {
        time: t.t,
        increment: t.i,
    }
}
