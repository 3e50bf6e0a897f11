//! Facts about the running system recorded in snapshots, key files and locks: host and user
//! names, which boot of which machine this is, and a clock that no one can set.
use std::sync::OnceLock;
use std::time::Duration;

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| user_name(rustix::process::getuid().as_raw()).unwrap_or_default())
}

/// This boot of this machine, so that a process id in a lock is only trusted where it means
/// something: a hash of `/etc/machine-id` and the kernel's boot id (the raw machine id is
/// meant to stay private). Empty when either is unknown.
pub fn boot_identity() -> &'static str {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let machine =
            first_line("/etc/machine-id").or_else(|| first_line("/var/lib/dbus/machine-id"));
        let boot = first_line("/proc/sys/kernel/random/boot_id");
        let (Some(machine), Some(boot)) = (machine, boot) else {
            return String::new();
        };
        let hash = blake3::derive_key(
            "strata 2026 boot identity",
            format!("{machine}\n{boot}").as_bytes(),
        );
        hex::encode(&hash[..16])
    })
}

fn first_line(file: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Time since boot, suspend included (CLOCK_BOOTTIME). Unlike the wall clock no one can set
/// it, and unlike CLOCK_MONOTONIC it keeps counting while the machine sleeps, as others'
/// view of our lock's age does.
pub(crate) fn boot_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        t.tv_sec.unsigned_abs(),
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Looks a uid up in the passwd database.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    lookup_name("/etc/passwd", uid)
}

/// Looks a gid up in the group database.
pub(crate) fn group_name(gid: u32) -> Option<String> {
    lookup_name("/etc/group", gid)
}

fn lookup_name(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let wanted = f.nth(1)?.parse::<u32>().ok()? == id;
        wanted.then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_named() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert!(!super::hostname().is_empty());
    }

    #[test]
    fn this_boot_is_identified_and_the_boot_clock_advances() {
        let id = super::boot_identity();
        assert!(
            id.is_empty() || (id.len() == 32 && hex::decode(id).is_ok()),
            "{id}"
        );
        let (a, b) = (super::boot_clock(), super::boot_clock());
        assert!(b >= a && a > std::time::Duration::ZERO);
    }
}
