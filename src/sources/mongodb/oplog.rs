//! The oplog (`local.oplog.rs`): where a consistent export's window starts (the newest
//! entry, or the start of the oldest open transaction, as `mongodump --oplog` does) and
//! reading the raw entries of a time range.
use super::connection::{from_ts, to_ts};
use super::{Conn, Result, cmd_err};
use crate::repo::snapshot::BsonTime;
use bson::{Document, RawDocumentBuf, doc};
use futures_util::TryStreamExt;
use std::ops::Bound;

/// The start of the consistency window: the newest oplog entry, or the first entry of the
/// oldest transaction still open (whose commit may fall inside the window).
pub(crate) fn window_start(conn: &Conn) -> Result<Option<BsonTime>> {
    let newest = conn.last_write_time()?;
    let open = oldest_open_transaction(conn)?;
    Ok(match (newest, open) {
        (Some(n), Some(o)) => Some(n.min(BsonTime {
            t: o.t,
            i: o.i.saturating_sub(1),
        })),
        (n, o) => n.or(o),
    })
}

/// The `startOpTime` of the oldest transaction in `config.transactions` that has not
/// committed or aborted; None when there is none (or the server keeps no such table).
fn oldest_open_transaction(conn: &Conn) -> Result<Option<BsonTime>> {
    let coll = conn
        .client()
        .database("config")
        .collection::<Document>("transactions");
    let filter = doc! {"state": {"$in": ["prepared", "inProgress"]}};
    let found = conn.block_on(async {
        let cursor = coll.find(filter).await?;
        cursor.try_collect::<Vec<Document>>().await
    });
    let open = found.unwrap_or_default();
    Ok(open
        .iter()
        .filter_map(|t| t.get_document("startOpTime").ok())
        .filter_map(|o| o.get_timestamp("ts").ok())
        .map(from_ts)
        .min())
}

/// The `ns` of a raw oplog entry: `db.coll`, `db.$cmd`, or empty (no-ops, malformed bytes).
pub(crate) fn entry_ns(entry: &[u8]) -> &str {
    bson::RawDocument::from_bytes(entry)
        .ok()
        .and_then(|d| d.get_str("ns").ok())
        .unwrap_or_default()
}

/// Calls `f` with every oplog entry with `from` (excluded or included) `<= ts <= until`, raw,
/// in oplog order. An empty range asks nothing of the server, whose oplog
/// query may scan the whole oplog.
pub(crate) fn for_each_entry(
    conn: &Conn,
    from: Bound<BsonTime>,
    until: BsonTime,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut range = doc! {"$lte": to_ts(until)};
    match from {
        Bound::Excluded(after) if until <= after => return Ok(()),
        Bound::Included(first) if until < first => return Ok(()),
        Bound::Excluded(after) => range.insert("$gt", to_ts(after)),
        Bound::Included(first) => range.insert("$gte", to_ts(first)),
        Bound::Unbounded => None,
    };
    let coll = conn
        .client()
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let filter = doc! {"ts": range};
    let mut cursor = conn
        .block_on(coll.find(filter))
        .map_err(cmd_err("reading local.oplog.rs"))?;
    while conn
        .block_on(cursor.advance())
        .map_err(cmd_err("reading local.oplog.rs"))?
    {
        f(cursor.current().as_bytes())?;
    }
    Ok(())
}

/// The `ts` of the newest oplog entry at or before `until` (None when there is none).
pub(crate) fn newest_entry(conn: &Conn, until: BsonTime) -> Result<Option<BsonTime>> {
    let coll = conn
        .client()
        .database("local")
        .collection::<Document>("oplog.rs");
    let found = conn
        .block_on(
            coll.find_one(doc! {"ts": {"$lte": to_ts(until)}})
                .sort(doc! {"$natural": -1}),
        )
        .map_err(cmd_err("reading local.oplog.rs"))?;
    Ok(found.and_then(|d| d.get_timestamp("ts").ok()).map(from_ts))
}

/// The `ts` of a raw oplog entry (None for malformed bytes).
pub(crate) fn entry_ts(entry: &[u8]) -> Option<BsonTime> {
    let doc = bson::RawDocument::from_bytes(entry).ok()?;
    doc.get_timestamp("ts").ok().map(from_ts)
}
