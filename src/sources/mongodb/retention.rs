//! Which oplog slices `forget` keeps: those a kept MongoDB snapshot of their server can be
//! rolled forward through, less those `--keep-oplog-within` expires. Pure logic (no I/O, no
//! clock): callers pass the snapshots, the ones being removed, the time zone and now.
use super::follow::{Slice, dumps, slices};
use crate::repo::id::SnapshotId;
use crate::repo::snapshot::BsonTime;
use crate::select::policy::{Entry, Span, cutoff};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// Why a slice is kept or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SliceReason {
    /// Kept: it ends after this kept snapshot (the newest of its server before the slice's
    /// end), so `restore --at` can roll the snapshot forward through it.
    Extends(SnapshotId),
    /// Kept: no consistent MongoDB snapshot of its server is kept. Such slices can serve no
    /// `restore --at`, but they are the only archive of that oplog, so only age expiry or
    /// naming them removes them.
    NoSnapshot,
    /// Kept: it ends less than the span before the newest slice of its server.
    Within(Span),
    /// Removed: it ends at or before this snapshot, the oldest kept one of its server.
    BeforeOldest(SnapshotId),
    /// Removed: it ends the span or more before the newest slice of its server.
    Expired(Span),
}

impl fmt::Display for SliceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceReason::Extends(id) => write!(f, "extends snapshot {}", id.0.short()),
            SliceReason::NoSnapshot => f.write_str("no MongoDB snapshot of its server is kept"),
            SliceReason::Within(span) => write!(f, "within {span} of the newest slice"),
            SliceReason::BeforeOldest(id) => {
                write!(f, "ends before the oldest kept snapshot {}", id.0.short())
            }
            SliceReason::Expired(span) => write!(f, "older than {span} before the newest slice"),
        }
    }
}

impl Serialize for SliceReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The verdict on one slice: the reasons it is kept, or (all) the reasons it is removed.
#[derive(Clone, Debug, Serialize)]
pub struct SliceVerdict {
    #[serde(flatten)]
    pub slice: Slice,
    pub keep: bool,
    pub reasons: Vec<SliceReason>,
}

/// Judges every oplog slice among `all`, given that the snapshots in `removed` go. `within`
/// is `--keep-oplog-within`: measured, like `--keep-within`, back from the newest slice end
/// of each server that is not after `now`, on the calendar of `tz`. Ordered by server, then
/// start.
pub(crate) fn decide<Tz: TimeZone>(
    all: &[Entry],
    removed: &[SnapshotId],
    within: Option<Span>,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Vec<SliceVerdict> {
    let mut all_slices = slices(all, None);
    all_slices.sort_by(|a, b| a.server.cmp(&b.server));
    let bases: Vec<(SnapshotId, BsonTime, String)> = (dumps(all, None).into_iter())
        .filter(|d| !removed.contains(&d.0))
        .collect();
    let cutoffs = within.map(|span| (span, cutoffs(&all_slices, span, tz, now)));
    (all_slices.into_iter())
        .map(|slice| {
            let age = (cutoffs.as_ref()).map(|(span, c)| (*span, c.get(&slice.server).copied()));
            judge(slice, &bases, age)
        })
        .collect()
}

/// Per server, the newest slice end not after `now`, less `span`.
fn cutoffs<Tz: TimeZone>(
    slices: &[Slice],
    span: Span,
    tz: &Tz,
    now: DateTime<Utc>,
) -> BTreeMap<String, DateTime<Utc>> {
    let mut newest: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for s in slices {
        let end = time_of(s.end);
        if end <= now && newest.get(&s.server).is_none_or(|n| *n < end) {
            newest.insert(s.server.clone(), end);
        }
    }
    (newest.into_iter())
        .map(|(server, n)| (server, cutoff(n, span, tz)))
        .collect()
}

fn time_of(t: BsonTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.t.into(), 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `bases` are the kept consistent dumps, oldest first; `age` the span and the cutoff of
/// the slice's server (none when all its slices end in the future: then none expires).
fn judge(
    slice: Slice,
    bases: &[(SnapshotId, BsonTime, String)],
    age: Option<(Span, Option<DateTime<Utc>>)>,
) -> SliceVerdict {
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    let mine: Vec<_> = bases.iter().filter(|d| d.2 == slice.server).collect();
    let base = mine.iter().rev().find(|d| d.1 < slice.end);
    match (mine.first(), base) {
        (None, _) => keep.push(SliceReason::NoSnapshot),
        (Some(oldest), None) => remove.push(SliceReason::BeforeOldest(oldest.0)),
        (_, Some(base)) => keep.push(SliceReason::Extends(base.0)),
    }
    match age {
        Some((span, Some(cut))) if time_of(slice.end) <= cut => {
            remove.push(SliceReason::Expired(span))
        }
        Some((span, _)) => keep.push(SliceReason::Within(span)),
        None => {}
    }
    let kept = remove.is_empty();
    SliceVerdict {
        slice,
        keep: kept,
        reasons: if kept { keep } else { remove },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::{Id, TreeId};
    use crate::repo::snapshot::{Snapshot, Source};

    const NOW: i64 = 2_000_000_000;
    const DAY: u32 = 86_400;

    fn t(secs: u32) -> BsonTime {
        BsonTime { t: secs, i: 1 }
    }

    fn entry(nr: u8, source: Source) -> Entry {
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h", "username": "u",
            "uid": 0, "gid": 0, "paths": [], "tree": TreeId(Id::hash_of(b"t")), "program_version": "t"});
        let mut s: Snapshot = serde_json::from_value(json).unwrap();
        s.sources = vec![source];
        (SnapshotId(Id([nr; 32])), s)
    }

    fn dump(nr: u8, server: &str, at: u32) -> Entry {
        entry(
            nr,
            Source::MongoDB {
                server: server.into(),
                databases: vec![],
                cluster_time: Some(t(at)),
                window_start: None,
                consistent: true,
                chain: None,
            },
        )
    }

    fn slice(nr: u8, server: &str, start: u32, end: u32, gap_from: Option<u32>) -> Entry {
        entry(
            nr,
            Source::MongoOplog {
                server: server.into(),
                start: t(start),
                end: t(end),
                entries: 1,
                gap_from: gap_from.map(t),
            },
        )
    }

    fn id(nr: u8) -> SnapshotId {
        SnapshotId(Id([nr; 32]))
    }

    /// (slice number, kept, reasons) in the order `decide` returns them.
    fn run(all: &[Entry], removed: &[u8], within: Option<&str>) -> Vec<(u8, bool, String)> {
        let removed: Vec<SnapshotId> = removed.iter().map(|n| id(*n)).collect();
        let within = within.map(|w| w.parse().unwrap());
        let now = DateTime::from_timestamp(NOW, 0).unwrap();
        (decide(all, &removed, within, &Utc, now).into_iter())
            .map(|v| {
                let reasons: Vec<String> = v.reasons.iter().map(|r| r.to_string()).collect();
                (v.slice.id.0.0[0], v.keep, reasons.join(", "))
            })
            .collect()
    }

    fn s(nr: u8) -> String {
        id(nr).0.short()
    }

    #[test]
    fn slices_ending_by_the_oldest_kept_snapshot_go_per_server() {
        let all = vec![
            dump(1, "a", 100),
            dump(2, "a", 200),
            dump(3, "b", 100),
            slice(10, "a", 50, 100, None),
            slice(11, "a", 100, 150, None),
            slice(12, "a", 150, 250, None),
            slice(13, "a", 250, 300, None),
            slice(20, "b", 50, 100, None),
            slice(21, "b", 100, 150, None),
        ];
        let got = run(&all, &[1], None);
        let want = vec![
            (
                10,
                false,
                format!("ends before the oldest kept snapshot {}", s(2)),
            ),
            (
                11,
                false,
                format!("ends before the oldest kept snapshot {}", s(2)),
            ),
            (12, true, format!("extends snapshot {}", s(2))),
            (13, true, format!("extends snapshot {}", s(2))),
            (
                20,
                false,
                format!("ends before the oldest kept snapshot {}", s(3)),
            ),
            (21, true, format!("extends snapshot {}", s(3))),
        ];
        assert_eq!(got, want);
        // Nothing removed: only what ends by the oldest snapshot of each server goes.
        let kept: Vec<u8> = (run(&all, &[], None).into_iter())
            .filter(|v| v.1)
            .map(|v| v.0)
            .collect();
        assert_eq!(kept, vec![11, 12, 13, 21]);
    }

    #[test]
    fn a_server_without_kept_snapshots_keeps_its_slices() {
        let all = vec![
            dump(1, "a", 100),
            slice(10, "a", 50, 90, None),
            slice(11, "a", 90, 120, None),
            // An inconsistent dump cannot be rolled forward: it is no base.
            entry(
                2,
                Source::MongoDB {
                    server: "b".into(),
                    databases: vec![],
                    cluster_time: Some(t(500)),
                    window_start: None,
                    consistent: false,
                    chain: None,
                },
            ),
            slice(20, "b", 50, 90, None),
        ];
        let got = run(&all, &[1], None);
        let no = "no MongoDB snapshot of its server is kept".to_string();
        assert_eq!(
            got,
            vec![
                (10, true, no.clone()),
                (11, true, no.clone()),
                (20, true, no)
            ]
        );
    }

    #[test]
    fn slices_after_a_gap_are_kept_while_a_snapshot_precedes_them() {
        let all = vec![
            dump(1, "a", 100),
            slice(10, "a", 100, 200, None),
            slice(11, "a", 400, 500, Some(200)),
            dump(2, "a", 450),
        ];
        let got = run(&all, &[], None);
        assert_eq!(
            got,
            vec![
                (10, true, format!("extends snapshot {}", s(1))),
                (11, true, format!("extends snapshot {}", s(2))),
            ]
        );
        // A slice ending exactly at the oldest kept snapshot's time is of no use to it.
        let got = run(&all, &[1], None);
        assert_eq!(
            got[0],
            (
                10,
                false,
                format!("ends before the oldest kept snapshot {}", s(2))
            )
        );
        assert!(got[1].1);
    }

    #[test]
    fn age_expiry_counts_back_from_the_newest_slice_end_and_overrides_need() {
        let newest = NOW as u32 - 5 * DAY;
        let all = vec![
            dump(1, "a", newest - 30 * DAY),
            slice(10, "a", newest - 30 * DAY, newest - 20 * DAY, None),
            slice(11, "a", newest - 20 * DAY, newest - 7 * DAY, None),
            slice(12, "a", newest - 7 * DAY, newest - 6 * DAY, None),
            slice(13, "a", newest - 6 * DAY, newest, None),
            // A slice dated after now (the server's clock ahead) is not the reference.
            slice(20, "b", 0, NOW as u32 + DAY, None),
            slice(21, "b", 0, NOW as u32 - 3 * DAY, None),
            slice(22, "b", 0, NOW as u32 - 20 * DAY, None),
        ];
        let got = run(&all, &[], Some("7d"));
        let ext = format!("extends snapshot {}", s(1));
        let within = "within 7d of the newest slice";
        let expired = "older than 7d before the newest slice".to_string();
        let none = "no MongoDB snapshot of its server is kept";
        assert_eq!(
            got,
            vec![
                (10, false, expired.clone()),
                // Exactly 7 days before the newest end: expired, as --keep-within does.
                (11, false, expired.clone()),
                (12, true, format!("{ext}, {within}")),
                (13, true, format!("{ext}, {within}")),
                (22, false, expired),
                (21, true, format!("{none}, {within}")),
                (20, true, format!("{none}, {within}")),
            ]
        );
    }

    #[test]
    fn both_reasons_are_listed_when_both_remove() {
        let all = vec![
            dump(1, "a", 1000),
            slice(10, "a", 0, 900, None),
            slice(11, "a", 900, 90 * DAY, None),
        ];
        let got = run(&all, &[], Some("1m"));
        assert_eq!(
            got[0],
            (
                10,
                false,
                format!(
                    "ends before the oldest kept snapshot {}, older than 1m before the newest slice",
                    s(1)
                )
            )
        );
        assert_eq!(got[1].0, 11);
        assert!(got[1].1);
    }
}
