//! `mongo follow`: archives the oplog into the repository as slices (snapshots tagged
//! `mongodb-oplog` whose tree holds `/mongodb-oplog/oplog.bson`, chunked between entries),
//! each covering `(start, end]` of oplog time and resuming exactly where the previous slice
//! of the same server ended. A rolled-over oplog is recorded as a gap. Also the timeline of
//! recoverable windows that snapshots and slices give.
use super::connection::{from_ts, to_ts};
use super::export::DumpWriter;
use super::{Conn, MongoError, Result, cmd_err};
use crate::cancel::Cancel;
use crate::repo::id::{SnapshotId, TreeId};
use crate::repo::locked::Locked;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::snapshot::{BsonTime, Snapshot, Source};
use crate::write::packer::Packer;
use bson::{RawDocumentBuf, doc};
use futures_util::future::{self, Either};
use mongodb::Cursor;
use mongodb::options::{CollectionOptions, CursorType, ReadConcern};
use serde::Serialize;
use std::collections::BTreeSet;
use std::pin::pin;
use std::time::Duration;

pub(crate) const SLICE_TAG: &str = "mongodb-oplog";

/// An archived oplog slice.
#[derive(Clone, Debug, Serialize)]
pub struct Slice {
    pub id: SnapshotId,
    #[serde(skip)]
    pub tree: TreeId,
    pub server: String,
    pub start: BsonTime,
    pub end: BsonTime,
    pub entries: u64,
    pub gap_from: Option<BsonTime>,
}

/// The slices among `snapshots`, of `server` if given, ordered by start.
pub(crate) fn slices(snapshots: &[(SnapshotId, Snapshot)], server: Option<&str>) -> Vec<Slice> {
    let mut out: Vec<Slice> = snapshots
        .iter()
        .flat_map(|(id, s)| s.sources.iter().map(move |src| (id, s, src)))
        .filter_map(|(id, s, src)| match src {
            Source::MongoOplog {
                server: sv,
                start,
                end,
                entries,
                gap_from,
            } => Some(Slice {
                id: *id,
                tree: s.tree,
                server: sv.clone(),
                start: *start,
                end: *end,
                entries: *entries,
                gap_from: *gap_from,
            }),
            _ => None,
        })
        .filter(|s| server.is_none_or(|sv| s.server == sv))
        .collect();
    out.sort_by_key(|s| (s.start, s.end));
    out
}

/// The slices of `server` that carry its oplog on from `from` without a gap, in order.
pub(crate) fn chained_from(
    snapshots: &[(SnapshotId, Snapshot)],
    server: &str,
    from: BsonTime,
) -> Vec<Slice> {
    let mut reached = from;
    let mut used = Vec::new();
    for s in slices(snapshots, Some(server)) {
        if s.end <= reached || s.start > reached {
            continue;
        }
        reached = s.end;
        used.push(s);
    }
    used
}

/// MongoDB snapshots (of `server` if given) with their cluster times, oldest first.
pub(crate) fn dumps(
    snapshots: &[(SnapshotId, Snapshot)],
    server: Option<&str>,
) -> Vec<(SnapshotId, BsonTime, String)> {
    let mut out: Vec<_> = snapshots
        .iter()
        .filter_map(|(id, s)| match s.mongodb() {
            Some(Source::MongoDB {
                server: sv,
                cluster_time: Some(t),
                consistent: true,
                ..
            }) => Some((*id, *t, sv.clone())),
            _ => None,
        })
        .filter(|(_, _, sv)| server.is_none_or(|s| s == sv))
        .collect();
    out.sort_by_key(|d| d.1);
    out
}

#[derive(Clone, Debug)]
pub struct FollowOptions {
    /// Oplog time one slice covers at most.
    pub slice: Duration,
    /// Archive up to the newest entry at the start, then stop.
    pub once: bool,
    pub host: String,
    /// Stops following (with `RepoError::Cancelled`) within [`CANCEL_POLL`] of being
    /// cancelled, after saving the slice being written.
    pub cancel: Cancel,
}

/// How often a follower waiting for new oplog entries looks at its cancellation token.
pub(crate) const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Where the next slice starts, and the gap before it if the oplog no longer reaches back.
fn resume_point(repo: &IndexedRepo, conn: &Conn) -> Result<(BsonTime, Option<BsonTime>)> {
    let (all, _) = repo.snapshots()?;
    let last_slice = slices(&all, Some(&conn.server))
        .into_iter()
        .map(|s| s.end)
        .max();
    let first_dump = dumps(&all, Some(&conn.server)).first().map(|d| d.1);
    let oldest = conn.oldest_oplog_time()?.unwrap_or(BsonTime { t: 0, i: 0 });
    let just_before_oldest = before(oldest);
    Ok(match last_slice.or(first_dump) {
        Some(resume) if resume >= just_before_oldest => (resume, None),
        Some(resume) => (just_before_oldest, Some(resume)),
        None => (just_before_oldest, None),
    })
}

fn before(t: BsonTime) -> BsonTime {
    match t.i {
        0 => BsonTime {
            t: t.t.saturating_sub(1),
            i: u32::MAX,
        },
        i => BsonTime { t: t.t, i: i - 1 },
    }
}

/// Tails the oplog and stores slices; calls `saved` after each. Returns with `once` when the
/// newest entry at the start has been archived, and stops once cancelled.
pub fn follow(
    repo: &Locked<'_, IndexedRepo>,
    conn: &Conn,
    opts: &FollowOptions,
    saved: &mut dyn FnMut(&Slice),
) -> Result<Vec<Slice>> {
    if !conn.has_oplog()? {
        return Err(MongoError::NoOplog {
            server: conn.server.clone(),
        });
    }
    let (mut start, mut gap) = resume_point(repo, conn)?;
    let stop_at = match opts.once {
        true => conn.newest_oplog_time()?,
        false => None,
    };
    let mut out = Vec::new();
    if opts.once && stop_at.is_none_or(|s| s <= start) {
        return Ok(out);
    }
    let options = CollectionOptions::builder()
        .read_concern(ReadConcern::majority())
        .build();
    let coll = conn
        .client()
        .database("local")
        .collection_with_options::<RawDocumentBuf>("oplog.rs", options);
    let find = coll
        .find(doc! {"ts": {"$gt": to_ts(start)}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_secs(1));
    let mut cursor = conn
        .block_on(find)
        .map_err(cmd_err("tailing local.oplog.rs"))?;
    let span = opts.slice.as_secs().max(1) as u32;
    let mut open: Option<SliceBuilder> = None;
    while advance(conn, &mut cursor, &opts.cancel)? {
        let entry = cursor.current();
        let ts = entry.get_timestamp("ts").map(from_ts).unwrap_or(start);
        if let Some(b) = open.take_if(|b| ts.t >= b.first.t.saturating_add(span) && ts != b.last) {
            let slice = b.save(conn, opts, start, gap.take())?;
            start = slice.end;
            saved(&slice);
            out.push(slice);
        }
        open.get_or_insert_with(|| SliceBuilder::new(repo, ts))
            .push(entry.as_bytes(), ts)?;
        if stop_at.is_some_and(|s| ts >= s) {
            break;
        }
    }
    if let Some(b) = open {
        let slice = b.save(conn, opts, start, gap)?;
        saved(&slice);
        out.push(slice);
    }
    opts.cancel.check().map_err(RepoError::from)?;
    Ok(out)
}

/// Waits for the next oplog entry: false when the cursor ends or `cancel` is cancelled.
fn advance(conn: &Conn, cursor: &mut Cursor<RawDocumentBuf>, cancel: &Cancel) -> Result<bool> {
    let stop = async {
        while !cancel.is_cancelled() {
            tokio::time::sleep(CANCEL_POLL).await;
        }
    };
    conn.block_on(async {
        match future::select(pin!(cursor.advance()), pin!(stop)).await {
            Either::Left((more, _)) => more.map_err(cmd_err("tailing local.oplog.rs")),
            Either::Right(_) => Ok(false),
        }
    })
}

/// A slice being written: entries are chunked and saved as they arrive.
struct SliceBuilder<'r> {
    packer: Packer<'r>,
    chunker: crate::write::chunker::RecordChunker,
    content: Vec<crate::repo::tree::ChunkRef>,
    entries: u64,
    first: BsonTime,
    last: BsonTime,
}

impl<'r> SliceBuilder<'r> {
    fn new(repo: &'r Locked<'r, IndexedRepo>, first: BsonTime) -> SliceBuilder<'r> {
        let packer = Packer::new(repo, false);
        let chunker = DumpWriter::new(&packer).record_chunker();
        SliceBuilder {
            packer,
            chunker,
            content: Vec::new(),
            entries: 0,
            first,
            last: first,
        }
    }

    fn push(&mut self, entry: &[u8], ts: BsonTime) -> Result<()> {
        let chunks = self.chunker.push(entry);
        self.content
            .extend(DumpWriter::new(&self.packer).save_chunks(chunks)?);
        self.entries += 1;
        self.last = ts;
        Ok(())
    }

    fn save(
        self,
        conn: &Conn,
        opts: &FollowOptions,
        start: BsonTime,
        gap_from: Option<BsonTime>,
    ) -> Result<Slice> {
        let w = DumpWriter::new(&self.packer);
        let mut content = self.content;
        content.extend(w.save_chunks(self.chunker.finish())?);
        let dir = w.dir(SLICE_TAG.as_bytes(), vec![w.file(b"oplog.bson", content)])?;
        let tree = w.dir(b"", vec![dir])?.subtree().expect("a directory");
        let stats = self.packer.flush()?;
        let (end, entries) = (self.last, self.entries);
        let source = Source::MongoOplog {
            server: conn.server.clone(),
            start,
            end,
            entries,
            gap_from,
        };
        let snapshot = Snapshot {
            time: chrono::Utc::now(),
            host: opts.host.clone(),
            username: crate::sysinfo::username(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            paths: Vec::new(),
            tags: vec![SLICE_TAG.to_string()],
            parent: None,
            original: None,
            tree,
            sources: vec![source],
            summary: w.summary(&stats),
            program_version: crate::repo::snapshot::PROGRAM_VERSION.into(),
        };
        let id = self.packer.locked().save_snapshot(&snapshot)?;
        Ok(Slice {
            id,
            tree,
            server: conn.server.clone(),
            start,
            end,
            entries,
            gap_from,
        })
    }
}

/// A stretch of time a server can be restored to any point of.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Window {
    pub server: String,
    /// The snapshot it starts from, and its time.
    pub snapshot: SnapshotId,
    pub from: BsonTime,
    /// The end of continuous oplog coverage after the snapshot (`from` without any).
    pub to: BsonTime,
}

/// Oplog time `(from, to]` of a server that no stored slice covers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Gap {
    pub server: String,
    pub from: BsonTime,
    pub to: BsonTime,
    pub kind: GapKind,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    /// The oplog rolled over before `follow` read it (recorded by the slice after it).
    RolledOver,
    /// Archived once, but its slices are gone (forgotten, or unreadable): between the
    /// oldest snapshot or a slice's end and the next slice's start.
    Missing,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    pub windows: Vec<Window>,
    pub gaps: Vec<Gap>,
    pub slices: Vec<Slice>,
}

/// Continuous `(start, end]` coverage by chained slices.
fn coverage(slices: &[Slice]) -> Vec<(BsonTime, BsonTime)> {
    let mut out: Vec<(BsonTime, BsonTime)> = Vec::new();
    for s in slices {
        match out.last_mut() {
            Some(last) if s.gap_from.is_none() && s.start <= last.1 => last.1 = last.1.max(s.end),
            _ => out.push((s.start, s.end)),
        }
    }
    out
}

pub fn timeline(snapshots: &[(SnapshotId, Snapshot)], server: Option<&str>) -> Timeline {
    let slices = slices(snapshots, server);
    let mut t = Timeline::default();
    for (id, at, sv) in dumps(snapshots, server) {
        let mine: Vec<Slice> = slices.iter().filter(|s| s.server == sv).cloned().collect();
        let to = coverage(&mine)
            .iter()
            .find(|(s, e)| *s <= at && at <= *e)
            .map_or(at, |c| c.1);
        t.windows.push(Window {
            server: sv,
            snapshot: id,
            from: at,
            to,
        });
    }
    let servers: BTreeSet<&str> = slices.iter().map(|s| s.server.as_str()).collect();
    for sv in servers {
        let mine: Vec<&Slice> = slices.iter().filter(|s| s.server == sv).collect();
        let first_dump = dumps(snapshots, Some(sv)).first().map(|d| d.1);
        t.gaps.extend(gaps(sv, &mine, first_dump));
    }
    t.slices = slices;
    t
}

/// The gaps in one server's slices (ordered by start): each recorded rollover, and every
/// stretch from the oldest snapshot's time (`since`) or the end of the archive so far to
/// where the next slice (or its rollover gap) begins.
fn gaps(server: &str, mine: &[&Slice], since: Option<BsonTime>) -> Vec<Gap> {
    let mut out = Vec::new();
    let mut gap = |from, to, kind| {
        out.push(Gap {
            server: server.to_string(),
            from,
            to,
            kind,
        })
    };
    let mut reached = since;
    for s in mine {
        let lost_from = s.gap_from.map_or(s.start, |g| g.min(s.start));
        if let Some(r) = reached.filter(|r| *r < lost_from) {
            gap(r, lost_from, GapKind::Missing);
        }
        if let Some(g) = s.gap_from {
            gap(g, s.start, GapKind::RolledOver);
        }
        reached = Some(reached.map_or(s.end, |r| r.max(s.end)));
    }
    out
}

/// What a point-in-time restore to `at` uses: the newest consistent dump at or before it and
/// the chained slices reaching from its time to `at`. Refused with the nearest recoverable
/// times when `at` is not covered.
pub(crate) fn plan_at(
    snapshots: &[(SnapshotId, Snapshot)],
    at: BsonTime,
) -> std::result::Result<(SnapshotId, BsonTime, Vec<Slice>), String> {
    let dumps = dumps(snapshots, None);
    let Some((id, time, server)) = dumps.iter().rev().find(|d| d.1 <= at).cloned() else {
        let first = dumps
            .first()
            .map(|d| d.1.to_string())
            .unwrap_or_else(|| "none".into());
        return Err(format!(
            "no consistent MongoDB snapshot at or before {at}; the oldest is at {first}"
        ));
    };
    let mut reached = time;
    let mut used = Vec::new();
    for s in slices(snapshots, Some(&server)) {
        if reached >= at {
            break;
        }
        if s.end <= reached || s.start > reached {
            continue;
        }
        if s.gap_from.is_some_and(|g| g < reached) && s.start > reached {
            break;
        }
        reached = s.end;
        used.push(s);
    }
    if reached < at {
        let later = timeline(snapshots, Some(&server))
            .windows
            .iter()
            .map(|w| w.from)
            .find(|f| *f > at);
        let after = later.map(|l| format!(" and {l}")).unwrap_or_default();
        return Err(format!(
            "{at} is not recoverable: the oplog of {server} is archived only up to {reached} after snapshot {}; the nearest recoverable times are {reached}{after}",
            id.0.short()
        ));
    }
    Ok((id, time, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

    fn snap(source: Source) -> (SnapshotId, Snapshot) {
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h", "username": "u", "uid": 0, "gid": 0,
            "paths": [], "tree": TreeId(Id::hash_of(b"t")), "program_version": "t"});
        let mut s: Snapshot = serde_json::from_value(json).unwrap();
        s.sources = vec![source];
        (
            SnapshotId(Id::hash_of(format!("{:?}", s.sources).as_bytes())),
            s,
        )
    }

    fn t(t: u32) -> BsonTime {
        BsonTime { t, i: 1 }
    }

    fn slice(start: u32, end: u32, gap: Option<u32>) -> (SnapshotId, Snapshot) {
        snap(Source::MongoOplog {
            server: "s".into(),
            start: t(start),
            end: t(end),
            entries: 1,
            gap_from: gap.map(t),
        })
    }

    fn dump_at(at: u32) -> (SnapshotId, Snapshot) {
        snap(Source::MongoDB {
            server: "s".into(),
            databases: vec![],
            cluster_time: Some(t(at)),
            window_start: None,
            consistent: true,
            chain: None,
        })
    }

    fn gap(from: u32, to: u32, kind: GapKind) -> Gap {
        Gap {
            server: "s".into(),
            from: t(from),
            to: t(to),
            kind,
        }
    }

    #[test]
    fn plans_chain_slices_and_refuse_gaps() {
        let dump = dump_at(10);
        let all = vec![
            dump.clone(),
            slice(10, 20, None),
            slice(20, 30, None),
            slice(40, 50, Some(30)),
        ];
        let (id, time, used) = plan_at(&all, t(25)).unwrap();
        assert_eq!((id, time, used.len()), (dump.0, t(10), 2));
        assert_eq!(plan_at(&all, t(10)).unwrap().2.len(), 0);
        let err = plan_at(&all, t(35)).unwrap_err();
        assert!(
            err.contains("not recoverable") && err.contains("30:1"),
            "{err}"
        );
        assert!(plan_at(&all, t(5)).unwrap_err().contains("no consistent"));
        let tl = timeline(&all, None);
        assert_eq!(tl.windows[0].to, t(30));
        assert_eq!(tl.gaps, vec![gap(30, 40, GapKind::RolledOver)]);
    }

    #[test]
    fn forgotten_slices_are_missing_gaps_not_rollovers() {
        let dump = dump_at(10);
        // (10, 20] and (30, 40] were forgotten; (50, 60] rolled over before it was read.
        let all = vec![
            dump.clone(),
            slice(20, 30, None),
            slice(40, 50, None),
            slice(60, 70, Some(50)),
            slice(70, 80, None),
        ];
        let tl = timeline(&all, Some("s"));
        assert_eq!(
            tl.gaps,
            vec![
                gap(10, 20, GapKind::Missing),
                gap(30, 40, GapKind::Missing),
                gap(50, 60, GapKind::RolledOver),
            ]
        );
        assert_eq!(tl.windows[0].to, t(10), "the snapshot reaches no slice");
        let err = plan_at(&all, t(25)).unwrap_err();
        assert!(err.contains("archived only up to 10:1"), "{err}");
        // A rollover gap recorded after a forgotten slice: both show.
        let all = vec![dump, slice(10, 20, None), slice(40, 50, Some(30))];
        assert_eq!(
            timeline(&all, None).gaps,
            vec![
                gap(20, 30, GapKind::Missing),
                gap(30, 40, GapKind::RolledOver)
            ]
        );
        assert!(plan_at(&all, t(15)).is_ok());
    }
}
