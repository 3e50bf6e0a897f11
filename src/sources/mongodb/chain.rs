//! Incremental MongoDB snapshots: which earlier dump a backup continues, or why it takes a
//! full one. An incremental dump is its parent's tree with the oplog read since the parent's
//! cluster time appended to `oplog.bson`, so it is a complete dump (restored, copied, kept
//! and pruned like a full one) that stores only the new oplog.
use super::namespace::NsFilter;
use crate::repo::id::{SnapshotId, TreeId};
use crate::repo::snapshot::{BsonTime, Chain, Incremental, Snapshot, Source};

/// When a backup takes a full dump although it could continue a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainPolicy {
    /// Always a full dump (`--full`).
    pub full: bool,
    /// Every Nth dump of a chain is full: at most N-1 incremental dumps follow a full one
    /// (0: no bound).
    pub full_every: u32,
    /// A full dump once the chain's `oplog.bson` has grown past this share of its base's
    /// collection files.
    pub max_oplog_percent: u32,
}

impl Default for ChainPolicy {
    fn default() -> ChainPolicy {
        ChainPolicy {
            full: false,
            full_every: 7,
            max_oplog_percent: 50,
        }
    }
}

/// Why a backup takes a full dump.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FullReason {
    #[error("--full was given")]
    Asked,
    #[error("--no-consistency: an incremental dump needs the oplog")]
    NotConsistent,
    #[error("no consistent MongoDB snapshot of {server} with the same namespaces to continue")]
    NoParent { server: String },
    #[error(
        "the chain of snapshot {parent} holds {depth} incremental dumps (--full-every {full_every})"
    )]
    ChainLength {
        parent: String,
        depth: u32,
        full_every: u32,
    },
    #[error(
        "the oplog of snapshot {parent}'s chain ({oplog} bytes) is over {percent}% of its \
         base's collections ({dump} bytes; --max-oplog-percent)"
    )]
    OplogShare {
        parent: String,
        oplog: u64,
        dump: u64,
        percent: u32,
    },
    #[error(
        "the server's oplog starts at {oldest}, after snapshot {parent}'s cluster time {from}: \
         it rolled over since"
    )]
    RolledOver {
        parent: String,
        from: BsonTime,
        oldest: String,
    },
}

/// The dump a backup continues.
#[derive(Clone, Debug)]
pub struct Parent {
    pub id: SnapshotId,
    pub tree: TreeId,
    pub cluster_time: BsonTime,
    pub window_start: Option<BsonTime>,
    pub databases: Vec<String>,
    pub chain: Chain,
}

impl Parent {
    /// The record of a dump that continues this one.
    pub fn next(&self) -> Incremental {
        let inc = self.chain.incremental;
        Incremental {
            base: inc.map_or(self.id, |i| i.base),
            parent: self.id,
            depth: inc.map_or(0, |i| i.depth) + 1,
            from: self.cluster_time,
        }
    }
}

/// What an export takes, as the key that a continued dump must share: the namespace filters
/// (order and repetition aside) and whether users and roles are included.
pub fn scope(filter: &NsFilter, users: bool) -> String {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    serde_json::json!({
        "databases": sorted(&filter.databases),
        "include": sorted(&filter.include),
        "exclude": sorted(&filter.exclude),
        "users": users,
    })
    .to_string()
}

/// The newest consistent dump of `server` with `scope` that a backup under `policy`
/// continues, or why it takes a full one. Whether the server's oplog still reaches the
/// parent is for the export to find out.
pub fn choose(
    snapshots: &[(SnapshotId, Snapshot)],
    server: &str,
    scope: &str,
    policy: ChainPolicy,
) -> Result<Parent, FullReason> {
    if policy.full {
        return Err(FullReason::Asked);
    }
    let parent = snapshots
        .iter()
        .filter_map(|(id, s)| continuable(*id, s, server, scope))
        .max_by_key(|p| p.cluster_time)
        .ok_or_else(|| FullReason::NoParent {
            server: server.to_string(),
        })?;
    let next = parent.next();
    if policy.full_every > 0 && next.depth >= policy.full_every {
        return Err(FullReason::ChainLength {
            parent: parent.id.0.short(),
            depth: next.depth - 1,
            full_every: policy.full_every,
        });
    }
    let (oplog, dump) = (parent.chain.oplog_bytes, parent.chain.dump_bytes);
    if u128::from(oplog) * 100 > u128::from(policy.max_oplog_percent) * u128::from(dump) {
        return Err(FullReason::OplogShare {
            parent: parent.id.0.short(),
            oplog,
            dump,
            percent: policy.max_oplog_percent,
        });
    }
    Ok(parent)
}

fn continuable(id: SnapshotId, s: &Snapshot, server: &str, scope: &str) -> Option<Parent> {
    match s.mongodb()? {
        Source::MongoDB {
            server: sv,
            databases,
            cluster_time: Some(t),
            window_start,
            consistent: true,
            chain: Some(chain),
        } if sv == server && chain.scope == scope => Some(Parent {
            id,
            tree: s.tree,
            cluster_time: *t,
            window_start: *window_start,
            databases: databases.clone(),
            chain: chain.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

    fn t(s: u32) -> BsonTime {
        BsonTime { t: s, i: 1 }
    }

    fn dump(nr: u8, at: u32, scope: &str, depth: u32, sizes: (u64, u64)) -> (SnapshotId, Snapshot) {
        let id = SnapshotId(Id([nr; 32]));
        let chain = Chain {
            scope: scope.into(),
            dump_bytes: sizes.0,
            oplog_bytes: sizes.1,
            full_every: 7,
            max_oplog_percent: 50,
            last_entry: None,
            incremental: (depth > 0).then_some(Incremental {
                base: SnapshotId(Id([0; 32])),
                parent: SnapshotId(Id([0; 32])),
                depth,
                from: t(at - 1),
            }),
        };
        let json = serde_json::json!({"time": "2026-12-01T00:00:00Z", "host": "h",
            "username": "u", "uid": 0, "gid": 0, "paths": [],
            "tree": TreeId(Id::hash_of(b"t")), "program_version": "t"});
        let mut s: Snapshot = serde_json::from_value(json).unwrap();
        s.sources = vec![Source::MongoDB {
            server: "db:1".into(),
            databases: vec![],
            cluster_time: Some(t(at)),
            window_start: None,
            consistent: true,
            chain: Some(chain),
        }];
        (id, s)
    }

    fn scope_all() -> String {
        scope(&NsFilter::default(), false)
    }

    #[test]
    fn the_newest_dump_of_the_same_server_and_scope_is_continued() {
        let s = scope_all();
        let all = vec![
            dump(1, 100, &s, 0, (1000, 10)),
            dump(2, 200, &s, 1, (1000, 20)),
        ];
        let p = choose(&all, "db:1", &s, ChainPolicy::default()).unwrap();
        assert_eq!(p.id, all[1].0);
        let next = p.next();
        assert_eq!((next.depth, next.parent, next.from), (2, all[1].0, t(200)));
        assert_eq!(
            next.base,
            SnapshotId(Id([0; 32])),
            "the chain's base is kept"
        );
        assert_eq!(p.next().base, p.chain.incremental.unwrap().base);
        let full = dump(3, 50, &s, 0, (1000, 10));
        let p = choose(
            std::slice::from_ref(&full),
            "db:1",
            &s,
            ChainPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            p.next().base,
            full.0,
            "a full dump is its own successor's base"
        );
    }

    #[test]
    fn another_server_or_scope_or_no_chain_record_means_a_full_dump() {
        let s = scope_all();
        let other = scope(
            &NsFilter {
                include: vec!["app.*".into()],
                ..NsFilter::default()
            },
            false,
        );
        let all = vec![dump(1, 100, &other, 0, (1000, 10))];
        let reason = choose(&all, "db:1", &s, ChainPolicy::default()).unwrap_err();
        assert!(matches!(reason, FullReason::NoParent { .. }), "{reason}");
        let reason = choose(&all, "db:2", &other, ChainPolicy::default()).unwrap_err();
        assert!(matches!(reason, FullReason::NoParent { .. }), "{reason}");
        assert_ne!(
            scope(&NsFilter::default(), true),
            s,
            "users are part of the scope"
        );
        let mut old = dump(2, 100, &s, 0, (1000, 10));
        if let Source::MongoDB { chain, .. } = &mut old.1.sources[0] {
            *chain = None;
        }
        assert!(choose(&[old], "db:1", &s, ChainPolicy::default()).is_err());
    }

    #[test]
    fn the_policy_bounds_the_chain() {
        let s = scope_all();
        let asked = ChainPolicy {
            full: true,
            ..ChainPolicy::default()
        };
        let one = vec![dump(1, 100, &s, 0, (1000, 10))];
        assert_eq!(
            choose(&one, "db:1", &s, asked).unwrap_err(),
            FullReason::Asked
        );
        let sixth = vec![dump(1, 100, &s, 6, (1000, 10))];
        let reason = choose(&sixth, "db:1", &s, ChainPolicy::default()).unwrap_err();
        assert!(
            matches!(reason, FullReason::ChainLength { depth: 6, .. }),
            "{reason}"
        );
        let fifth = vec![dump(1, 100, &s, 5, (1000, 10))];
        assert!(choose(&fifth, "db:1", &s, ChainPolicy::default()).is_ok());
        let unbounded = ChainPolicy {
            full_every: 0,
            ..ChainPolicy::default()
        };
        assert!(choose(&sixth, "db:1", &s, unbounded).is_ok());
        let grown = vec![dump(1, 100, &s, 1, (1000, 501))];
        let reason = choose(&grown, "db:1", &s, ChainPolicy::default()).unwrap_err();
        assert!(matches!(reason, FullReason::OplogShare { .. }), "{reason}");
        let at_bound = vec![dump(1, 100, &s, 1, (1000, 500))];
        assert!(choose(&at_bound, "db:1", &s, ChainPolicy::default()).is_ok());
    }
}
