//! Facts about the running system recorded in snapshots and key files: host and user names.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| user_name(rustix::process::getuid().as_raw()).unwrap_or_default())
}

/// Looks a uid up in the passwd database.
pub fn user_name(uid: u32) -> Option<String> {
    lookup_name("/etc/passwd", uid)
}

/// Looks a gid up in the group database.
pub fn group_name(gid: u32) -> Option<String> {
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
}
