//! File attributes the mount reports: those recorded in the snapshot's tree for its entries,
//! and read-only ones owned by the mounting user for the generated directories.
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind, Timespec};
use chrono::{DateTime, Utc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The type of a mounted entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// The attributes of a mounted entry, as `stat` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: Kind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// A device's number in the kernel's 32-bit encoding.
    pub rdev: u32,
    pub blksize: u32,
}

/// The preferred I/O size reported to programs: the chunker's average chunk.
const BLOCK_SIZE: u32 = 1 << 20;

pub(super) fn node_kind(node: &Node) -> Kind {
    match node.kind {
        NodeKind::File { .. } => Kind::File,
        NodeKind::Dir { .. } => Kind::Dir,
        NodeKind::Symlink { .. } => Kind::Symlink,
        NodeKind::CharDev { .. } => Kind::CharDevice,
        NodeKind::BlockDev { .. } => Kind::BlockDevice,
        NodeKind::Fifo => Kind::Fifo,
        NodeKind::Socket => Kind::Socket,
    }
}

/// The attributes of a tree node, as recorded at backup time. A file's size is the sum of
/// its chunks (what reads return); a hard-linked file keeps its recorded link count.
pub(super) fn node_attr(ino: u64, node: &Node) -> Attr {
    let size = match &node.kind {
        NodeKind::File { content } => content.iter().map(|c| u64::from(c.len)).sum(),
        NodeKind::Symlink { target } => target.len() as u64,
        _ => 0,
    };
    let nlink = match node.kind {
        NodeKind::File { .. } => u32::try_from(node.links.max(1)).unwrap_or(u32::MAX),
        _ => 1,
    };
    let mtime = system_time(node.mtime);
    Attr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: system_time(node.ctime),
        kind: node_kind(node),
        perm: (node.mode & 0o7777) as u16,
        nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: device_number(node),
        blksize: BLOCK_SIZE,
    }
}

/// A snapshot's directory: read-only, owned by who made the backup, dated by the snapshot.
pub(super) fn snapshot_attr(ino: u64, snap: &Snapshot) -> Attr {
    let mut attr = generated_attr(ino, Kind::Dir, 0, &snap.time);
    attr.uid = snap.uid;
    attr.gid = snap.gid;
    attr
}

/// A generated directory or symlink (of `size` bytes): read-only, owned by the mounting user.
pub(super) fn generated_attr(ino: u64, kind: Kind, size: u64, time: &DateTime<Utc>) -> Attr {
    let time = system_time(Timespec {
        sec: time.timestamp(),
        nsec: time.timestamp_subsec_nanos(),
    });
    let perm = match kind {
        Kind::Symlink => 0o777,
        _ => 0o555,
    };
    Attr {
        ino,
        size,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        kind,
        perm,
        nlink: 1,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        rdev: 0,
        blksize: BLOCK_SIZE,
    }
}

/// Seconds and nanoseconds since 1970 (negative before) as a `SystemTime`; out-of-range
/// values become 1970.
pub(super) fn system_time(t: Timespec) -> SystemTime {
    let whole = match t.sec >= 0 {
        true => UNIX_EPOCH.checked_add(Duration::from_secs(t.sec as u64)),
        false => UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs())),
    };
    whole
        .and_then(|w| w.checked_add(Duration::from_nanos(u64::from(t.nsec))))
        .unwrap_or(UNIX_EPOCH)
}

/// A device's number in the kernel's 32-bit encoding (12-bit major, 20-bit minor).
fn device_number(node: &Node) -> u32 {
    let rdev = match node.kind {
        NodeKind::CharDev { rdev } | NodeKind::BlockDev { rdev } => rdev,
        _ => return 0,
    };
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::tests::file_node;

    #[test]
    fn times_before_and_after_1970() {
        let before = system_time(Timespec {
            sec: -86_400,
            nsec: 500_000_000,
        });
        let want = UNIX_EPOCH - Duration::from_secs(86_400) + Duration::from_millis(500);
        assert_eq!(before, want);
        let after = system_time(Timespec { sec: 5, nsec: 7 });
        assert_eq!(after, UNIX_EPOCH + Duration::new(5, 7));
        let earliest = Timespec {
            sec: i64::MIN,
            nsec: 999_999_999,
        };
        assert!(
            system_time(earliest) < UNIX_EPOCH,
            "no overflow at the extremes"
        );
    }

    #[test]
    fn node_attributes_come_from_the_tree() {
        let mut node = file_node(b"f", &[10, 20]);
        node.mode = 0o4755;
        node.links = 3;
        let attr = node_attr(9, &node);
        assert_eq!((attr.size, attr.perm, attr.nlink), (30, 0o4755, 3));
        assert_eq!((attr.uid, attr.gid, attr.kind), (1000, 1000, Kind::File));
        assert_eq!(attr.mtime, system_time(node.mtime));
        node.kind = NodeKind::CharDev {
            rdev: libc::makedev(136, 0x12345),
        };
        let attr = node_attr(9, &node);
        assert_eq!((attr.kind, attr.size, attr.nlink), (Kind::CharDevice, 0, 1));
        assert_eq!(attr.rdev, 0x45 | (136 << 8) | (0x12300 << 12));
    }
}
