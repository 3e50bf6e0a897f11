//! Which snapshots a command works on: the filter by host, tags, paths, ids and `latest`
//! that `snapshots`, `mount` and (later) the HTTP API share.
use crate::repo::id::SnapshotId;
use crate::repo::snapshot::Snapshot;

/// Which snapshots are selected: those matching the host, every tag and every path, and
/// when `ids` or `latest` are given, only those ids and (with `latest`) the newest match.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub ids: Vec<SnapshotId>,
    pub latest: bool,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl Selection {
    fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.tags.iter().all(|t| s.has_tag(t))
            && self
                .paths
                .iter()
                .all(|p| s.paths.iter().any(|sp| sp == p.trim_end_matches('/')))
    }

    /// The selected snapshots of `all` (oldest first), in the same order.
    pub fn apply<'a>(&self, all: &'a [(SnapshotId, Snapshot)]) -> Vec<&'a (SnapshotId, Snapshot)> {
        let matching: Vec<_> = all.iter().filter(|(_, s)| self.matches(s)).collect();
        if self.ids.is_empty() && !self.latest {
            return matching;
        }
        let newest = matching.last().map(|(id, _)| *id);
        let wanted =
            |id: &SnapshotId| self.ids.contains(id) || (self.latest && Some(*id) == newest);
        matching.into_iter().filter(|(id, _)| wanted(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::policy::tests::snap;

    #[test]
    fn selection_by_host_tag_path_id_and_latest() {
        let all = [
            snap(1, "1970-01-01T00:00:10Z #t", "a", &["/data"]),
            snap(2, "1970-01-01T00:00:20Z #t", "b", &["/data"]),
            snap(3, "1970-01-01T00:00:30Z", "a", &["/data"]),
        ];
        let ids =
            |sel: Selection| -> Vec<u8> { sel.apply(&all).iter().map(|s| s.0.0.0[0]).collect() };
        assert_eq!(ids(Selection::default()), [1, 2, 3]);
        let host = Some("a".to_string());
        assert_eq!(
            ids(Selection {
                host: host.clone(),
                ..Default::default()
            }),
            [1, 3]
        );
        assert_eq!(
            ids(Selection {
                tags: vec!["t".into()],
                ..Default::default()
            }),
            [1, 2]
        );
        assert_eq!(
            ids(Selection {
                paths: vec!["/data/".into()],
                ..Default::default()
            }),
            [1, 2, 3]
        );
        assert!(
            ids(Selection {
                paths: vec!["/other".into()],
                ..Default::default()
            })
            .is_empty()
        );
        let latest_of_a = Selection {
            host,
            latest: true,
            ..Default::default()
        };
        assert_eq!(ids(latest_of_a), [3]);
        let by_id = Selection {
            ids: vec![all[1].0],
            latest: true,
            ..Default::default()
        };
        assert_eq!(ids(by_id), [2, 3]);
    }
}
