//! The generated top of the mount: the snapshots the selection shows, in the
//! `snapshots/`, `ids/`, `hosts/<host>/` and `tags/<tag>/` directories that name them,
//! rebuilt from the snapshot list at every refresh.
use crate::repo::id::SnapshotId;
use crate::repo::snapshot::Snapshot;
use chrono::{DateTime, Local, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name of the symlink to the newest snapshot of a directory.
pub(crate) const LATEST: &str = "latest";

/// One entry of the generated layout.
#[derive(Debug)]
pub(super) enum VEntry {
    Dir(BTreeMap<String, VEntry>),
    /// A symlink with this (relative) target.
    Link(String),
    /// A snapshot's root directory.
    Snapshot(Arc<(SnapshotId, Snapshot)>),
}

#[derive(Debug)]
pub(super) struct Layout {
    pub root: VEntry,
    /// When the layout was built: the time of the generated directories.
    pub built: DateTime<Utc>,
}

impl Layout {
    /// The layout for `snapshots` (oldest first).
    pub(super) fn build(snapshots: &[&(SnapshotId, Snapshot)]) -> Layout {
        let shared: Vec<_> = snapshots.iter().map(|s| Arc::new((*s).clone())).collect();
        let mut ids = BTreeMap::new();
        let mut hosts: BTreeMap<String, Vec<_>> = BTreeMap::new();
        let mut tags: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for snap in &shared {
            add_unique(&mut ids, snap.0.0.short(), VEntry::Snapshot(snap.clone()));
            hosts
                .entry(component(&snap.1.host))
                .or_default()
                .push(snap.clone());
            for tag in &snap.1.tags {
                tags.entry(component(tag)).or_default().push(snap.clone());
            }
        }
        let root = BTreeMap::from([
            ("snapshots".to_string(), by_time(&shared)),
            ("ids".to_string(), VEntry::Dir(ids)),
            ("hosts".to_string(), grouped(hosts)),
            ("tags".to_string(), grouped(tags)),
        ]);
        Layout {
            root: VEntry::Dir(root),
            built: Utc::now(),
        }
    }

    /// The entry at `path` (components from the root).
    pub(super) fn get(&self, path: &[String]) -> Option<&VEntry> {
        path.iter().try_fold(&self.root, |entry, name| match entry {
            VEntry::Dir(children) => children.get(name),
            _ => None,
        })
    }

    /// The number of snapshots shown.
    pub(super) fn snapshot_count(&self) -> usize {
        match self.get(&["ids".to_string()]) {
            Some(VEntry::Dir(ids)) => ids.len(),
            _ => 0,
        }
    }
}

/// One directory per group, each listing its snapshots by time.
fn grouped(groups: BTreeMap<String, Vec<Arc<(SnapshotId, Snapshot)>>>) -> VEntry {
    VEntry::Dir(
        groups
            .iter()
            .map(|(k, v)| (k.clone(), by_time(v)))
            .collect(),
    )
}

/// `<time>_<short id>` for each snapshot (oldest first), and `latest` linking to the newest.
fn by_time(snapshots: &[Arc<(SnapshotId, Snapshot)>]) -> VEntry {
    let mut dir = BTreeMap::new();
    let mut newest = None;
    for snap in snapshots {
        let name = format!("{}_{}", local_time(&snap.1.time), snap.0.0.short());
        newest = Some(add_unique(&mut dir, name, VEntry::Snapshot(snap.clone())));
    }
    if let Some(target) = newest {
        dir.insert(LATEST.to_string(), VEntry::Link(target));
    }
    VEntry::Dir(dir)
}

/// A snapshot time as shown in names: local time, to the second.
pub(crate) fn local_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Inserts `entry` as `name`, or `name-2`, `name-3`… when taken; returns the name used.
fn add_unique(dir: &mut BTreeMap<String, VEntry>, name: String, entry: VEntry) -> String {
    let mut unique = name.clone();
    let mut n = 1;
    while dir.contains_key(&unique) || unique == LATEST {
        n += 1;
        unique = format!("{name}-{n}");
    }
    dir.insert(unique.clone(), entry);
    unique
}

/// A host or tag made into a valid file name: `/` and NUL become `_`; `""`, `.` and `..`
/// get a leading `_`.
fn component(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." => format!("_{name}"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::{BlobId, Id};

    fn snap(n: u8, secs: i64, host: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let json = serde_json::json!({"time": DateTime::from_timestamp(secs, 0).unwrap(),
            "host": host, "username": "u", "uid": 0, "gid": 0, "paths": ["/data"],
            "tags": tags, "tree": BlobId(Id([n; 32])), "program_version": "t"});
        (
            SnapshotId(Id([n; 32])),
            serde_json::from_value(json).unwrap(),
        )
    }

    fn names(entry: Option<&VEntry>) -> Vec<String> {
        match entry {
            Some(VEntry::Dir(d)) => d.keys().cloned().collect(),
            other => panic!("not a directory: {other:?}"),
        }
    }

    fn path(p: &str) -> Vec<String> {
        p.split('/').map(String::from).collect()
    }

    #[test]
    fn snapshots_are_named_by_time_and_grouped_by_host_and_tag() {
        let all = [
            snap(0xaa, 1_000, "web", &["daily"]),
            snap(0xaa, 1_000, "web/1", &["daily", "x"]),
            snap(0xbb, 2_000, "..", &[]),
        ];
        let layout = Layout::build(&all.iter().collect::<Vec<_>>());
        let t1 = local_time(&DateTime::from_timestamp(1_000, 0).unwrap());
        let t2 = local_time(&DateTime::from_timestamp(2_000, 0).unwrap());
        let (first, second) = (format!("{t1}_aaaaaaaa"), format!("{t1}_aaaaaaaa-2"));
        let third = format!("{t2}_bbbbbbbb");
        let snapshots = names(layout.get(&path("snapshots")));
        assert_eq!(
            snapshots,
            [
                first.clone(),
                second.clone(),
                third.clone(),
                "latest".into()
            ]
        );
        assert!(
            matches!(layout.get(&path("snapshots/latest")), Some(VEntry::Link(t)) if *t == third)
        );
        assert_eq!(
            names(layout.get(&path("ids"))),
            ["aaaaaaaa", "aaaaaaaa-2", "bbbbbbbb"]
        );
        assert_eq!(names(layout.get(&path("hosts"))), ["_..", "web", "web_1"]);
        assert_eq!(
            names(layout.get(&path("hosts/web"))),
            [first.clone(), "latest".into()]
        );
        assert_eq!(names(layout.get(&path("tags"))), ["daily", "x"]);
        assert_eq!(
            names(layout.get(&path("tags/daily"))),
            [first.clone(), second, "latest".into()]
        );
        let shown = layout.get(&["tags".into(), "x".into(), first]);
        assert!(matches!(shown, Some(VEntry::Snapshot(s)) if s.1.host == "web/1"));
        assert!(layout.get(&path("snapshots/nope")).is_none());
        assert_eq!(layout.snapshot_count(), 3);
    }
}
