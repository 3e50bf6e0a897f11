//! The local SQLite index: a rebuildable materialisation of the repository's index files,
//! mapping every blob id to its pack, offset and lengths. Kept per repository in the cache
//! directory; it never holds anything the index files do not say.
pub mod idfilter;
pub(crate) mod stored;
use crate::repo::blob::{BlobType, Compression};
use crate::repo::id::{BlobId, Id, PackId};
use crate::repo::indexfile::PackEntries;
use crate::repo::pack::{BlobEntry, PackFormat};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a statement waits for another process's lock on the cache database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(300);

/// Bumped whenever the schema changes; a cache with another version is rebuilt.
/// 3: packs record their format and length. 4: blobs record their compression byte and
/// dictionary id (instead of a `compressed` flag).
const SCHEMA_VERSION: i64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("index database holds an invalid {0}")]
    Corrupt(&'static str),
}

pub(crate) type Result<T> = std::result::Result<T, IndexError>;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    /// The pack's format, which decides how its blobs are opened.
    pub format: PackFormat,
    pub entry: BlobEntry,
}

pub struct Index {
    conn: Mutex<Connection>,
    /// Pack row ids seen so far. AUTOINCREMENT never reuses a row id, so an entry can
    /// only go missing (after a rebuild), never point at another pack.
    packs: Mutex<HashMap<i64, (PackId, PackFormat)>>,
    path: String,
}

const SELECT_EXISTS: &str = "SELECT 1 FROM blobs WHERE id = ?1";

const META: &str =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);";

/// Tables of the current schema; those of an older schema are dropped first.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS index_files (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS packs (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE,
    format INTEGER NOT NULL, length INTEGER
);
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, type INTEGER NOT NULL, pack INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_length INTEGER NOT NULL,
    compression INTEGER NOT NULL, dict INTEGER NOT NULL
) WITHOUT ROWID;
";

impl Index {
    /// Opens (or creates) the database; one whose schema version differs is emptied.
    pub fn open(path: &Path) -> Result<Index> {
        let conn = Connection::open(path).map_err(sql(path))?;
        let index = Index {
            conn: Mutex::new(conn),
            packs: Mutex::default(),
            path: path.display().to_string(),
        };
        index.setup()?;
        Ok(index)
    }

    /// An index that lives only in memory (used when no cache directory is available).
    pub(crate) fn in_memory() -> Result<Index> {
        let conn = Connection::open_in_memory().map_err(sql(Path::new(":memory:")))?;
        let index = Index {
            conn: Mutex::new(conn),
            packs: Mutex::default(),
            path: ":memory:".into(),
        };
        index.setup()?;
        Ok(index)
    }

    fn err(&self) -> impl FnOnce(rusqlite::Error) -> IndexError + '_ {
        move |source| IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Creates or checks the schema in one write transaction, so that processes opening
    /// the same cache at once see it either absent or whole.
    fn setup(&self) -> Result<()> {
        let mut conn = self.conn.lock().expect("index lock");
        conn.busy_timeout(BUSY_TIMEOUT).map_err(self.err())?;
        enable_wal(&conn).map_err(self.err())?;
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        tx.execute_batch(META).map_err(self.err())?;
        let version: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?;
        if version != Some(SCHEMA_VERSION) {
            tx.execute_batch("DROP TABLE IF EXISTS blobs; DROP TABLE IF EXISTS packs; DROP TABLE IF EXISTS index_files;")
                .map_err(self.err())?;
        }
        tx.execute_batch(SCHEMA).map_err(self.err())?;
        if version != Some(SCHEMA_VERSION) {
            clear(&tx).map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    /// Names of the index files already loaded.
    pub(crate) fn loaded_files(&self) -> Result<HashSet<String>> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare("SELECT name FROM index_files")
            .map_err(self.err())?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<std::result::Result<HashSet<_>, _>>())
            .map_err(self.err())?;
        Ok(names)
    }

    /// Empties the database (before a full reload).
    pub(crate) fn clear(&self) -> Result<()> {
        let mut conn = self.conn.lock().expect("index lock");
        self.packs.lock().expect("pack cache").clear();
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        clear(&tx).map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Records the contents of one index file, atomically with its name. A blob already
    /// known keeps its first location.
    pub fn add_file(&self, name: &str, packs: &[PackEntries]) -> Result<()> {
        let mut conn = self.conn.lock().expect("index lock");
        let tx = write_transaction(&mut conn).map_err(self.err())?;
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO index_files (name) VALUES (?1)",
                [name],
            )
            .map_err(self.err())?;
        if fresh == 1 {
            insert_packs(&tx, packs).map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    pub fn lookup(&self, id: &BlobId) -> Result<Option<Location>> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare_cached(&format!("{SELECT_LOCATION} WHERE id = ?1"))
            .map_err(self.err())?;
        let row = stmt
            .query_row([&id.0.0[..]], RawRow::read)
            .optional()
            .map_err(self.err())?;
        row.map(|r| {
            let pack = self.pack_of(&conn, r.pack)?;
            r.location(pack)
        })
        .transpose()
    }

    /// Whether the index lists pack `id`.
    pub(crate) fn has_pack(&self, id: &PackId) -> Result<bool> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare_cached("SELECT 1 FROM packs WHERE id = ?1")
            .map_err(self.err())?;
        stmt.exists([&id.0.0[..]]).map_err(self.err())
    }

    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn.prepare_cached(SELECT_EXISTS).map_err(self.err())?;
        stmt.exists([&id.0.0[..]]).map_err(self.err())
    }

    /// Which of `ids` the index holds, looked up in one read transaction: one round of
    /// file locking for the lot instead of one per id.
    pub(crate) fn which_contained<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a BlobId>,
    ) -> Result<HashSet<BlobId>> {
        let mut conn = self.conn.lock().expect("index lock");
        let tx = conn.transaction().map_err(self.err())?;
        let mut found = HashSet::new();
        {
            let mut stmt = tx.prepare_cached(SELECT_EXISTS).map_err(self.err())?;
            for id in ids {
                if stmt.exists([&id.0.0[..]]).map_err(self.err())? {
                    found.insert(*id);
                }
            }
        }
        tx.commit().map_err(self.err())?;
        Ok(found)
    }

    /// Calls `f` for every blob (in id order) with its location.
    pub fn for_each(&self, mut f: impl FnMut(Location)) -> Result<()> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare(&format!("{SELECT_LOCATION} ORDER BY id"))
            .map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            let raw = RawRow::read(r).map_err(self.err())?;
            let pack = self.pack_of(&conn, raw.pack)?;
            f(raw.location(pack)?);
        }
        Ok(())
    }

    /// Calls `f` with every blob id, in one read statement.
    pub fn for_each_id(&self, mut f: impl FnMut(&BlobId)) -> Result<()> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn.prepare("SELECT id FROM blobs").map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            let bytes = r
                .get_ref(0)
                .map_err(self.err())?
                .as_blob()
                .map_err(|_| IndexError::Corrupt("blob id"))?;
            f(&BlobId(
                Id::from_slice(bytes).ok_or(IndexError::Corrupt("blob id"))?,
            ));
        }
        Ok(())
    }

    /// The pack id and format for a row id, from memory or (once per pack) from the database.
    fn pack_of(&self, conn: &Connection, rowid: i64) -> Result<(PackId, PackFormat)> {
        if let Some(pack) = self.packs.lock().expect("pack cache").get(&rowid) {
            return Ok(*pack);
        }
        let mut stmt = conn
            .prepare_cached("SELECT id, format FROM packs WHERE rowid = ?1")
            .map_err(self.err())?;
        let (bytes, format): (Vec<u8>, u8) = stmt
            .query_row([rowid], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        let id = PackId(Id::from_slice(&bytes).ok_or(IndexError::Corrupt("pack id"))?);
        let format = PackFormat::from_byte(format).ok_or(IndexError::Corrupt("pack format"))?;
        let pack = (id, format);
        self.packs.lock().expect("pack cache").insert(rowid, pack);
        Ok(pack)
    }

    /// Starts an empty set of "used" blob ids: a temporary table on disk, so that marking
    /// every blob a repository references costs no memory per blob.
    pub(crate) fn reset_used(&self) -> Result<()> {
        let conn = self.conn.lock().expect("index lock");
        conn.execute_batch(
            "PRAGMA temp_store=FILE;
             CREATE TEMP TABLE IF NOT EXISTS used (id BLOB PRIMARY KEY) WITHOUT ROWID;
             DELETE FROM used;",
        )
        .map_err(self.err())
    }

    /// Adds `id` to the used set; true if it was not there yet.
    pub(crate) fn mark_used(&self, id: &BlobId) -> Result<bool> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare_cached("INSERT OR IGNORE INTO used (id) VALUES (?1)")
            .map_err(self.err())?;
        Ok(stmt.execute([&id.0.0[..]]).map_err(self.err())? == 1)
    }

    /// Up to `limit` used ids that the index does not hold.
    pub(crate) fn missing_used(&self, limit: usize) -> Result<Vec<BlobId>> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare("SELECT id FROM used WHERE id NOT IN (SELECT id FROM blobs) LIMIT ?1")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([limit as i64], |r| r.get::<_, Vec<u8>>(0))
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err())?;
        rows.iter()
            .map(|b| {
                Id::from_slice(b)
                    .map(BlobId)
                    .ok_or(IndexError::Corrupt("blob id"))
            })
            .collect()
    }

    /// For every pack holding the indexed copy of a used blob: the stored bytes of those
    /// copies. (A blob stored twice is used only where the index points.)
    pub(crate) fn used_bytes_per_pack(&self) -> Result<HashMap<PackId, u64>> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare(
                "SELECT blobs.pack, SUM(blobs.length) FROM blobs JOIN used USING (id)
                 GROUP BY blobs.pack",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err())?;
        rows.into_iter()
            .map(|(rowid, bytes)| Ok((self.pack_of(&conn, rowid)?.0, bytes as u64)))
            .collect()
    }

    /// The used blobs whose indexed copy is in `pack`.
    pub(crate) fn used_in_pack(&self, pack: &PackId) -> Result<Vec<Location>> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare(&format!(
                "{SELECT_LOCATION} JOIN used USING (id)
                 WHERE pack = (SELECT rowid FROM packs WHERE id = ?1) ORDER BY offset"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map([&pack.0.0[..]], RawRow::read)
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err())?;
        rows.into_iter()
            .map(|raw| {
                let pack = self.pack_of(&conn, raw.pack)?;
                raw.location(pack)
            })
            .collect()
    }

    /// For every dictionary the indexed blobs use: how many blobs, their stored bytes and
    /// their plaintext bytes.
    pub(crate) fn dictionary_use(&self) -> Result<HashMap<u32, (u64, u64, u64)>> {
        let conn = self.conn.lock().expect("index lock");
        let mut stmt = conn
            .prepare(
                "SELECT dict, COUNT(*), SUM(length), SUM(raw_length) FROM blobs
                 WHERE compression = 2 GROUP BY dict",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                Ok((r.get::<_, u32>(0)?, (n(1)?, n(2)?, n(3)?)))
            })
            .and_then(|rows| rows.collect::<std::result::Result<HashMap<_, _>, _>>())
            .map_err(self.err())?;
        Ok(rows)
    }

    pub fn counts(&self) -> Result<(u64, u64)> {
        let conn = self.conn.lock().expect("index lock");
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0).map(|n| n as u64));
        let blobs = count("SELECT COUNT(*) FROM blobs").map_err(self.err())?;
        let packs = count("SELECT COUNT(*) FROM packs").map_err(self.err())?;
        Ok((blobs, packs))
    }
}

const SELECT_LOCATION: &str =
    "SELECT id, type, pack, offset, length, raw_length, compression, dict FROM blobs";

/// One row of `SELECT_LOCATION`, before its bytes are checked.
struct RawRow {
    id: Vec<u8>,
    ty: u8,
    pack: i64,
    offset: u32,
    length: u32,
    raw_length: u32,
    compression: u8,
    dict: u32,
}

impl RawRow {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: r.get(0)?,
            ty: r.get(1)?,
            pack: r.get(2)?,
            offset: r.get(3)?,
            length: r.get(4)?,
            raw_length: r.get(5)?,
            compression: r.get(6)?,
            dict: r.get(7)?,
        })
    }

    fn location(self, (pack, format): (PackId, PackFormat)) -> Result<Location> {
        Ok(Location {
            pack,
            format,
            entry: BlobEntry {
                ty: BlobType::from_byte(self.ty).ok_or(IndexError::Corrupt("blob type"))?,
                id: BlobId(Id::from_slice(&self.id).ok_or(IndexError::Corrupt("blob id"))?),
                offset: self.offset,
                length: self.length,
                raw_length: self.raw_length,
                compression: Compression::from_parts(self.compression, self.dict)
                    .ok_or(IndexError::Corrupt("compression"))?,
            },
        })
    }
}

fn clear(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DELETE FROM blobs; DELETE FROM packs; DELETE FROM index_files; DELETE FROM meta;",
    )?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
        [SCHEMA_VERSION],
    )?;
    Ok(())
}

fn insert_packs(tx: &rusqlite::Transaction, packs: &[PackEntries]) -> rusqlite::Result<()> {
    let mut pack_stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO packs (id, format, length) VALUES (?1, ?2, ?3)")?;
    let mut rowid_stmt = tx.prepare_cached("SELECT rowid FROM packs WHERE id = ?1")?;
    let mut blob_stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO blobs (id, type, pack, offset, length, raw_length, compression, dict)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for p in packs {
        pack_stmt.execute(params![
            &p.pack.0.0[..],
            p.format.to_byte(),
            p.length.map(|n| n as i64)
        ])?;
        let rowid: i64 = rowid_stmt.query_row([&p.pack.0.0[..]], |r| r.get(0))?;
        for b in &p.blobs {
            blob_stmt.execute(params![
                &b.id.0.0[..],
                b.ty.to_byte(),
                rowid,
                b.offset,
                b.length,
                b.raw_length,
                b.compression.to_byte(),
                b.compression.dict_id()
            ])?;
        }
    }
    Ok(())
}

/// Switches the database to WAL. On a fresh file the switch needs an exclusive lock that
/// SQLite takes without calling the busy handler, so two processes opening a new cache at
/// once (two backups started together) get "database is locked" at once; retry instead.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            done => return done,
        }
    }
}

/// A transaction that takes the write lock at its start (waiting for it), so that it never
/// fails on upgrading a read lock another writer got to first.
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> IndexError + '_ {
    move |source| IndexError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> BlobEntry {
        BlobEntry {
            ty: BlobType::Data,
            id: BlobId(Id::hash_of(&[n])),
            offset: n as u32 * 100,
            length: 100,
            raw_length: 90,
            compression: match n % 3 {
                0 => Compression::None,
                1 => Compression::Zstd,
                _ => Compression::Dictionary(0x0100_0000 + n as u32),
            },
        }
    }

    fn pack(n: u8, blobs: Vec<BlobEntry>) -> PackEntries {
        PackEntries {
            pack: PackId(Id::hash_of(&[b'p', n])),
            format: if n == 1 {
                PackFormat::Legacy
            } else {
                PackFormat::V3
            },
            length: Some(8192),
            blobs,
        }
    }

    #[test]
    fn add_lookup_and_first_location_wins() {
        let idx = Index::in_memory().unwrap();
        idx.add_file("aa", &[pack(1, vec![entry(1), entry(2)])])
            .unwrap();
        idx.add_file("bb", &[pack(2, vec![entry(2), entry(3)])])
            .unwrap();
        idx.add_file("bb", &[pack(3, vec![entry(9)])]).unwrap();
        let loc = idx.lookup(&entry(2).id).unwrap().unwrap();
        assert_eq!(loc.pack, pack(1, vec![]).pack);
        assert_eq!(loc.format, PackFormat::Legacy);
        assert_eq!(loc.entry, entry(2));
        let loc = idx.lookup(&entry(3).id).unwrap().unwrap();
        assert_eq!(loc.format, PackFormat::V3);
        assert!(
            idx.lookup(&entry(9).id).unwrap().is_none(),
            "a file is loaded once"
        );
        assert!(idx.contains(&entry(3).id).unwrap());
        let asked = [entry(1).id, entry(9).id, entry(3).id];
        let found = idx.which_contained(&asked).unwrap();
        assert_eq!(found, HashSet::from([entry(1).id, entry(3).id]));
        assert_eq!(idx.counts().unwrap(), (3, 2));
        let mut seen = 0;
        idx.for_each(|_| seen += 1).unwrap();
        assert_eq!(seen, 3);
        assert_eq!(idx.loaded_files().unwrap().len(), 2);
    }

    #[test]
    fn schema_version_mismatch_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let idx = Index::open(&path).unwrap();
        idx.add_file("aa", &[pack(1, vec![entry(1)])]).unwrap();
        idx.conn
            .lock()
            .unwrap()
            .execute("UPDATE meta SET value = 0", [])
            .unwrap();
        drop(idx);
        let idx = Index::open(&path).unwrap();
        assert_eq!(idx.counts().unwrap(), (0, 0));
        assert!(idx.loaded_files().unwrap().is_empty());
    }

    #[test]
    fn cache_of_schema_2_is_rebuilt_with_pack_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('schema', 2);
             CREATE TABLE index_files (name TEXT PRIMARY KEY);
             INSERT INTO index_files VALUES ('aa');
             CREATE TABLE packs (rowid INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE);",
        )
        .unwrap();
        drop(old);
        let idx = Index::open(&path).unwrap();
        assert!(idx.loaded_files().unwrap().is_empty(), "old cache emptied");
        idx.add_file("aa", &[pack(2, vec![entry(1)])]).unwrap();
        let loc = idx.lookup(&entry(1).id).unwrap().unwrap();
        assert_eq!(loc.format, PackFormat::V3);
    }

    #[test]
    fn processes_opening_a_new_cache_at_once_all_succeed() {
        for round in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("i.sqlite");
            let errors: Vec<String> = std::thread::scope(|s| {
                let opens: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| Index::open(&path).map(|_| ())))
                    .collect();
                opens
                    .into_iter()
                    .filter_map(|h| h.join().unwrap().err())
                    .map(|e| e.to_string())
                    .collect()
            });
            assert!(errors.is_empty(), "round {round}: {errors:?}");
        }
    }
}
