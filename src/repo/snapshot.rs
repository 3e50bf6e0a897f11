//! Snapshots: small encrypted JSON objects naming a root tree and describing what was
//! backed up, when, from where, and what it cost.
use crate::repo::id::{SnapshotId, TreeId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a snapshot holds besides files. Every source owns a part of the root tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Directory trees, stored at their absolute paths below the root tree.
    Files { paths: Vec<String> },
    /// A MongoDB dump below `/mongodb` (layout in repo-format.md).
    #[serde(rename = "mongodb")]
    MongoDB {
        /// The server's address, without credentials.
        server: String,
        databases: Vec<String>,
        /// The cluster time the dump stands for once its oplog window is replayed; without a
        /// consistency window, the newest oplog time at the end of the export, if any.
        cluster_time: Option<BsonTime>,
        /// The oplog window `(start, cluster_time]` stored in `/mongodb/oplog.bson`.
        window_start: Option<BsonTime>,
        /// False with `--no-consistency`: documents were read at different times.
        consistent: bool,
        /// How the dump relates to the MongoDB snapshots before it (full, or incremental on
        /// a base); absent in snapshots made before incremental snapshots, which no backup
        /// continues.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chain: Option<Chain>,
    },
    /// A slice of a server's oplog below `/mongodb-oplog/oplog.bson`: every entry with
    /// `start < ts <= end`, stored by `strata mongo follow`.
    #[serde(rename = "mongodb-oplog")]
    MongoOplog {
        server: String,
        start: BsonTime,
        end: BsonTime,
        entries: u64,
        /// Set when the oplog had rolled over past where the previous slice (or the oldest
        /// snapshot) ended: entries in `(gap_from, start]` are lost.
        gap_from: Option<BsonTime>,
    },
}

/// Where a MongoDB dump stands in its chain: a full dump, or an incremental one that holds
/// its base's collection files (the same blobs, stored once) and an `oplog.bson` that
/// carries the base's window on to this snapshot's cluster time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// What the export took (servers' namespaces, users): only a dump of the same scope is
    /// continued.
    pub scope: String,
    /// Bytes of the collection files (the base's, for an incremental dump).
    pub dump_bytes: u64,
    /// Bytes of `oplog.bson`: the base's window and every incremental range since.
    pub oplog_bytes: u64,
    /// The bounds that decide when the next backup is full again.
    pub full_every: u32,
    pub max_oplog_percent: u32,
    /// The `ts` of the newest oplog entry at or before `cluster_time` (absent in dumps
    /// written before it, and when the oplog was empty): the next incremental dump reads the
    /// oplog from this entry on, and the entry coming first proves that the oplog still
    /// reaches this dump, so no second query for the oldest entry is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_entry: Option<BsonTime>,
    /// Set for an incremental dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
}

/// An incremental dump: `parent`'s tree with the oplog entries `(from, cluster_time]` added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    /// The full snapshot whose collection files this dump holds.
    pub base: SnapshotId,
    /// The snapshot this one continues (the base, or the incremental before).
    pub parent: SnapshotId,
    /// 1 for the first incremental after a full dump.
    pub depth: u32,
    /// `parent`'s cluster time: where the oplog read for this snapshot starts.
    pub from: BsonTime,
}

/// A BSON timestamp (cluster time): seconds since the epoch and an increment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BsonTime {
    pub t: u32,
    pub i: u32,
}

impl std::fmt::Display for BsonTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.t, self.i)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    /// File content bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of new blobs written to the repository (after compression and encryption).
    pub bytes_added: u64,
    /// Plaintext bytes of the new blobs.
    pub bytes_added_raw: u64,
    pub data_blobs_added: u64,
    pub tree_blobs_added: u64,
    pub total_files: u64,
    pub total_bytes: u64,
    pub errors: u64,
    pub duration_secs: f64,
    /// Entries (paths below the root, of every type) the snapshot's trees hold, counting a
    /// shared subtree once per place; bounds every walk of them (see `walk::entry_budget`).
    /// Absent in snapshots made before it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

/// What snapshots this build writes record as `program_version`.
pub const PROGRAM_VERSION: &str = concat!("strata ", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub host: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// Set on a copy made by `strata copy`: the snapshot it copies, by the id it had where it
    /// was first made (a copy of a copy names the first one), so that copying again skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    pub tree: TreeId,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub summary: Summary,
    pub program_version: String,
}

impl Snapshot {
    /// The MongoDB source of this snapshot, if it has one.
    pub fn mongodb(&self) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| matches!(s, Source::MongoDB { .. }))
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// An oplog slice stored by `strata mongo follow`: not a backup of its own, so `latest`
    /// and retention policies pass it by.
    pub fn is_oplog_slice(&self) -> bool {
        (self.sources.iter()).any(|s| matches!(s, Source::MongoOplog { .. }))
    }

    /// Parent matching: same host and the same set of paths.
    pub fn same_origin(&self, host: &str, paths: &[String]) -> bool {
        let mut a = self.paths.clone();
        let mut b = paths.to_vec();
        a.sort();
        b.sort();
        self.host == host && a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

    #[test]
    fn snapshot_json_round_trip() {
        let s = Snapshot {
            time: Utc::now(),
            host: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/b".into(), "/a".into()],
            tags: vec!["t".into()],
            parent: None,
            original: None,
            tree: TreeId(Id::hash_of(b"t")),
            sources: vec![
                Source::Files {
                    paths: vec!["/a".into()],
                },
                Source::MongoDB {
                    server: "localhost:27017".into(),
                    databases: vec!["app".into()],
                    cluster_time: Some(BsonTime { t: 5, i: 2 }),
                    window_start: None,
                    consistent: true,
                    chain: None,
                },
            ],
            summary: Summary {
                files_new: 3,
                ..Default::default()
            },
            program_version: "x".into(),
        };
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<Snapshot>(&json).unwrap(), s);
        assert!(s.same_origin("h", &["/a".into(), "/b".into()]));
        assert!(!s.same_origin("other", &["/a".into(), "/b".into()]));
        assert!(s.has_tag("t") && !s.has_tag("x"));
        assert!(s.mongodb().is_some());
        assert!(
            String::from_utf8(json)
                .unwrap()
                .contains(r#""kind":"mongodb""#)
        );
    }

    #[test]
    fn original_is_optional_and_fields_a_reader_does_not_know_are_ignored() {
        let original = SnapshotId(Id::hash_of(b"o"));
        let json = serde_json::json!({"time": "2020-01-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": [], "tree": TreeId::default(),
            "program_version": "t", "original": original, "from_a_later_version": {"x": 1}});
        let copy: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(copy.original, Some(original));
        let plain = Snapshot {
            original: None,
            ..copy
        };
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("original"), "{text}");
    }
}
