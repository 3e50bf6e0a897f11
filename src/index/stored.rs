//! What the repository's index files say, entry by entry, in a temporary SQLite database:
//! `check`'s view of the index. Unlike the local index (one location per blob, from the
//! cache) it keeps every entry of every pack as stored, and marks the blobs a walk reaches,
//! so that checking a repository of any size holds no blob ids in memory.
use super::{IndexError, RawRow, Result};
use crate::repo::blob::BlobType;
use crate::repo::dictionary::DictId;
use crate::repo::id::{BlobId, Id, PackId, TreeId};
use crate::repo::indexfile::PackEntries;
use crate::repo::pack::{BlobEntry, PackFormat};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::sync::Mutex;

/// Pages kept in memory (the rest of the database lives in its temporary file).
const CACHE_KIB: i64 = 64 * 1024;

/// `packs`: the first listing of each pack wins its format and length. `entries`: every
/// distinct entry of every pack. `blobs`: each blob's type and raw length as first listed,
/// and `used`, which walks set (1: referenced as a chunk, 2: reached as a tree).
/// `missing`: chunk ids referenced but not listed. Everything after the schema is one
/// transaction that is never committed (the database is thrown away): committing each
/// statement would write its pages out every time, a thousand times slower.
const SCHEMA: &str = "
PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;
CREATE TABLE packs (
    rowid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, format INTEGER NOT NULL, length INTEGER
);
CREATE TABLE entries (
    pack INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL, id BLOB NOT NULL,
    type INTEGER NOT NULL, raw_length INTEGER NOT NULL, compression INTEGER NOT NULL,
    dict INTEGER NOT NULL,
    PRIMARY KEY (pack, offset, length, id, type, raw_length, compression, dict)
) WITHOUT ROWID;
CREATE TABLE blobs (
    id BLOB PRIMARY KEY, type INTEGER NOT NULL, raw_length INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE missing (id BLOB PRIMARY KEY) WITHOUT ROWID;
BEGIN;
";

/// Columns in the order [`RawRow::read`] takes them.
const SELECT_ENTRY: &str =
    "SELECT id, type, pack, offset, length, raw_length, compression, dict FROM entries";

/// One indexed pack, as [`StoredIndex::for_each_pack`] hands it over.
pub(crate) struct StoredPack {
    pub(crate) id: PackId,
    pub(crate) format: PackFormat,
    /// The length its first index file records (version 3).
    pub(crate) length: Option<u64>,
    /// Its distinct entries, by offset.
    pub(crate) entries: Vec<BlobEntry>,
}

pub(crate) struct StoredIndex {
    conn: Mutex<Connection>,
}

impl StoredIndex {
    /// An empty database in a temporary file, removed when it is dropped.
    pub(crate) fn new() -> Result<StoredIndex> {
        let conn = Connection::open("").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(err)?;
        Ok(StoredIndex {
            conn: Mutex::new(conn),
        })
    }

    /// Adds the packs one index file lists.
    pub(crate) fn add_file(&self, packs: &[PackEntries]) -> Result<()> {
        let conn = self.conn.lock().expect("stored index lock");
        let mut pack_stmt = conn
            .prepare_cached("INSERT OR IGNORE INTO packs (id, format, length) VALUES (?1, ?2, ?3)")
            .map_err(err)?;
        let mut rowid_stmt = conn
            .prepare_cached("SELECT rowid FROM packs WHERE id = ?1")
            .map_err(err)?;
        let mut entry_stmt = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO entries
                     (pack, offset, length, id, type, raw_length, compression, dict)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(err)?;
        let mut blob_stmt = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO blobs (id, type, raw_length) VALUES (?1, ?2, ?3)",
            )
            .map_err(err)?;
        for p in packs {
            let length = p.length.map(|n| n as i64);
            let id = &p.pack.0.0[..];
            pack_stmt
                .execute(params![id, p.format.to_byte(), length])
                .map_err(err)?;
            let rowid: i64 = rowid_stmt.query_row([id], |r| r.get(0)).map_err(err)?;
            for b in &p.blobs {
                let (ty, raw) = (b.ty.to_byte(), b.raw_length);
                let (compression, dict) = (b.compression.to_byte(), b.compression.dict_id());
                entry_stmt
                    .execute(params![
                        rowid,
                        b.offset,
                        b.length,
                        &b.id.0.0[..],
                        ty,
                        raw,
                        compression,
                        dict
                    ])
                    .map_err(err)?;
                blob_stmt
                    .execute(params![&b.id.0.0[..], ty, raw])
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    /// How many packs the index files list.
    pub(crate) fn pack_count(&self) -> Result<u64> {
        let conn = self.conn.lock().expect("stored index lock");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM packs", [], |r| r.get(0))
            .map_err(err)?;
        Ok(n as u64)
    }

    /// Marks tree `id` reached; returns its type and raw length as first listed.
    pub(crate) fn reach_tree(&self, id: &TreeId) -> Result<Option<(BlobType, u32)>> {
        Ok(self.mark(&id.blob(), 2)?.map(|(listed, _)| listed))
    }

    /// Marks `id` referenced as a chunk; returns its type and raw length as first listed,
    /// and whether this is its first reference as a chunk.
    pub(crate) fn reference_chunk(&self, id: &BlobId) -> Result<(Option<(BlobType, u32)>, bool)> {
        if let Some((listed, first)) = self.mark(id, 1)? {
            return Ok((Some(listed), first));
        }
        let conn = self.conn.lock().expect("stored index lock");
        let mut stmt = conn
            .prepare_cached("INSERT OR IGNORE INTO missing (id) VALUES (?1)")
            .map_err(err)?;
        Ok((None, stmt.execute([&id.0.0[..]]).map_err(err)? == 1))
    }

    /// Sets `bit` in a listed blob's `used`; its type, raw length, and whether the bit was
    /// clear.
    fn mark(&self, id: &BlobId, bit: i64) -> Result<Option<((BlobType, u32), bool)>> {
        let conn = self.conn.lock().expect("stored index lock");
        let mut select = conn
            .prepare_cached("SELECT type, raw_length, used FROM blobs WHERE id = ?1")
            .map_err(err)?;
        let row: Option<(u8, u32, i64)> = select
            .query_row([&id.0.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(err)?;
        let Some((ty, raw, used)) = row else {
            return Ok(None);
        };
        let ty = BlobType::from_byte(ty).ok_or(IndexError::Corrupt("blob type"))?;
        let first = used & bit == 0;
        if first {
            let mut update = conn
                .prepare_cached("UPDATE blobs SET used = ?2 WHERE id = ?1")
                .map_err(err)?;
            update
                .execute(params![&id.0.0[..], used | bit])
                .map_err(err)?;
        }
        Ok(Some(((ty, raw), first)))
    }

    /// Distinct ids referenced as chunks, listed or not.
    pub(crate) fn chunks_referenced(&self) -> Result<u64> {
        self.count(
            "SELECT (SELECT COUNT(*) FROM blobs WHERE used & 1) + (SELECT COUNT(*) FROM missing)",
        )
    }

    /// Listed blobs no walk reached.
    pub(crate) fn unused_blobs(&self) -> Result<u64> {
        self.count("SELECT COUNT(*) FROM blobs WHERE used = 0")
    }

    fn count(&self, query: &str) -> Result<u64> {
        let conn = self.conn.lock().expect("stored index lock");
        let n: i64 = conn.query_row(query, [], |r| r.get(0)).map_err(err)?;
        Ok(n as u64)
    }

    /// For every dictionary the entries name: how many entries, and the least ids (up to
    /// `shown`) of the blobs compressed with it.
    pub(crate) fn dictionary_users(
        &self,
        shown: usize,
    ) -> Result<HashMap<DictId, (u64, Vec<BlobId>)>> {
        let conn = self.conn.lock().expect("stored index lock");
        let mut counts = conn
            .prepare("SELECT dict, COUNT(*) FROM entries WHERE compression = 2 GROUP BY dict")
            .map_err(err)?;
        let counts = counts
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(err)?;
        let mut ids = conn
            .prepare(
                "SELECT DISTINCT id FROM entries WHERE compression = 2 AND dict = ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(err)?;
        let mut users = HashMap::new();
        for (dict, n) in counts {
            let first = ids
                .query_map(params![dict, shown as i64], |r| r.get::<_, Vec<u8>>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(err)?;
            let first = first.iter().map(|b| blob_id(b)).collect::<Result<_>>()?;
            users.insert(dict, (n as u64, first));
        }
        Ok(users)
    }

    /// Calls `f` with every listed pack, in id order, one pack's entries in memory at a time.
    pub(crate) fn for_each_pack(&self, mut f: impl FnMut(StoredPack)) -> Result<()> {
        let conn = self.conn.lock().expect("stored index lock");
        let mut packs = conn
            .prepare("SELECT rowid, id, format, length FROM packs ORDER BY id")
            .map_err(err)?;
        let mut rows = packs.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let rowid: i64 = r.get(0).map_err(err)?;
            let id: Vec<u8> = r.get(1).map_err(err)?;
            let id = PackId(Id::from_slice(&id).ok_or(IndexError::Corrupt("pack id"))?);
            let format = PackFormat::from_byte(r.get(2).map_err(err)?)
                .ok_or(IndexError::Corrupt("pack format"))?;
            let length = r.get::<_, Option<i64>>(3).map_err(err)?.map(|n| n as u64);
            let entries = entries_of(&conn, rowid, (id, format))?;
            f(StoredPack {
                id,
                format,
                length,
                entries,
            });
        }
        Ok(())
    }

    /// Pack `id` with its entries, if listed.
    pub(crate) fn pack(&self, id: &PackId) -> Result<Option<StoredPack>> {
        let conn = self.conn.lock().expect("stored index lock");
        let mut stmt = conn
            .prepare_cached("SELECT rowid, format, length FROM packs WHERE id = ?1")
            .map_err(err)?;
        let row: Option<(i64, u8, Option<i64>)> = stmt
            .query_row([&id.0.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(err)?;
        let Some((rowid, format, length)) = row else {
            return Ok(None);
        };
        let format = PackFormat::from_byte(format).ok_or(IndexError::Corrupt("pack format"))?;
        Ok(Some(StoredPack {
            id: *id,
            format,
            length: length.map(|n| n as u64),
            entries: entries_of(&conn, rowid, (*id, format))?,
        }))
    }
}

/// The entries of the pack with row id `rowid`, by offset.
fn entries_of(conn: &Connection, rowid: i64, pack: (PackId, PackFormat)) -> Result<Vec<BlobEntry>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{SELECT_ENTRY} WHERE pack = ?1 ORDER BY offset, length, id"
        ))
        .map_err(err)?;
    let rows = stmt
        .query_map([rowid], RawRow::read)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    rows.into_iter()
        .map(|raw| Ok(raw.location(pack)?.entry))
        .collect()
}

fn blob_id(bytes: &[u8]) -> Result<BlobId> {
    Id::from_slice(bytes)
        .map(BlobId)
        .ok_or(IndexError::Corrupt("blob id"))
}

fn err(source: rusqlite::Error) -> IndexError {
    IndexError::Sqlite {
        path: "(temporary)".into(),
        source,
    }
}
