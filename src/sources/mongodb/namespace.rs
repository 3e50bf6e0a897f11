//! Namespaces (`db.coll`): include/exclude patterns with `*` wildcards as mongodump's
//! `--nsInclude`, renames as mongorestore's `--nsFrom/--nsTo`, what mongodump leaves out,
//! and the file names of collections in the dump layout.

/// The parts of `text` that the `*`s of `pattern` matched, or None if it does not match.
/// `*` matches any run of characters, dots included.
pub(crate) fn captures(pattern: &str, text: &str) -> Option<Vec<String>> {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let mut caps = Vec::new();
    capture_from(&p, &t, &mut caps).then_some(caps)
}

fn capture_from(p: &[char], t: &[char], caps: &mut Vec<String>) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).rev().any(|n| {
            caps.push(t[..n].iter().collect());
            let ok = capture_from(rest, &t[n..], caps);
            if !ok {
                caps.pop();
            }
            ok
        }),
        Some((c, rest)) => t.first() == Some(c) && capture_from(rest, &t[1..], caps),
    }
}

/// Which namespaces a backup or restore takes.
#[derive(Clone, Debug, Default)]
pub struct NsFilter {
    /// Only these databases (all when empty).
    pub databases: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NsFilter {
    pub(crate) fn is_empty(&self) -> bool {
        self.databases.is_empty() && self.include.is_empty() && self.exclude.is_empty()
    }

    pub(crate) fn takes_db(&self, db: &str) -> bool {
        self.databases.is_empty() || self.databases.iter().any(|d| d == db)
    }

    /// Whether restoring what this filter takes could need an oplog entry on `ns`: writes to
    /// the collections it takes, commands on the databases it takes (`db.$cmd`), and
    /// `admin.$cmd`, which carries transactions and renames across databases. What remains is
    /// other databases' writes and no-ops, which replay would skip anyway.
    pub(crate) fn needs_oplog_entry_on(&self, ns: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let (db, coll) = split_ns(ns);
        match coll.as_str() {
            "$cmd" => db == "admin" || self.takes_db(&db),
            _ => self.takes(&db, &coll),
        }
    }

    /// Whether backup, restore and replay handle `db.coll`: the filters match it and
    /// mongodump would not skip it.
    pub(crate) fn takes(&self, db: &str, coll: &str) -> bool {
        !skipped_by_default(db, coll) && self.matches(db, coll)
    }

    pub(crate) fn matches(&self, db: &str, coll: &str) -> bool {
        let ns = format!("{db}.{coll}");
        let included =
            self.include.is_empty() || self.include.iter().any(|p| captures(p, &ns).is_some());
        let excluded = self.exclude.iter().any(|p| captures(p, &ns).is_some());
        self.takes_db(db) && included && !excluded
    }
}

/// `--ns-from A --ns-to B` pairs: the first whose `from` matches renames a namespace, each
/// `*` of `to` taking what the corresponding `*` of `from` matched.
#[derive(Clone, Debug, Default)]
pub struct Renames(Vec<(String, String)>);

#[derive(Debug, thiserror::Error)]
pub enum RenameError {
    #[error("--ns-from and --ns-to must be given the same number of times")]
    Unpaired,
    #[error("--ns-from {from:?} and --ns-to {to:?} have different numbers of '*'")]
    Wildcards { from: String, to: String },
}

impl Renames {
    pub fn new(from: &[String], to: &[String]) -> Result<Renames, RenameError> {
        if from.len() != to.len() {
            return Err(RenameError::Unpaired);
        }
        let stars = |s: &str| s.matches('*').count();
        let pairs: Vec<(String, String)> = from.iter().cloned().zip(to.iter().cloned()).collect();
        if let Some((f, t)) = pairs.iter().find(|(f, t)| stars(f) != stars(t)) {
            return Err(RenameError::Wildcards {
                from: f.clone(),
                to: t.clone(),
            });
        }
        Ok(Renames(pairs))
    }

    /// The target `(db, coll)` of a namespace.
    pub(crate) fn apply(&self, db: &str, coll: &str) -> (String, String) {
        let ns = format!("{db}.{coll}");
        let renamed = self.0.iter().find_map(|(from, to)| {
            let caps = captures(from, &ns)?;
            let mut caps = caps.into_iter();
            Some(
                to.split('*')
                    .enumerate()
                    .map(|(i, part)| match i {
                        0 => part.to_string(),
                        _ => caps.next().unwrap_or_default() + part,
                    })
                    .collect::<String>(),
            )
        });
        match renamed {
            Some(ns) => split_ns(&ns),
            None => (db.to_string(), coll.to_string()),
        }
    }
}

/// `db.coll` split at the first dot (collection names may contain dots).
pub(crate) fn split_ns(ns: &str) -> (String, String) {
    match ns.split_once('.') {
        Some((db, coll)) => (db.to_string(), coll.to_string()),
        None => (ns.to_string(), String::new()),
    }
}

/// What mongodump leaves out: the `local` and `config` databases, profiling data,
/// `admin.system.keys`, names containing `$`, and the internals behind time-series
/// collections and views (which are captured through their own definitions).
pub(crate) fn skipped_by_default(db: &str, coll: &str) -> bool {
    matches!(db, "local" | "config")
        || coll.contains('$')
        || coll.starts_with("system.buckets.")
        || matches!(coll, "system.profile" | "system.views")
        || (db == "admin" && coll.starts_with("system."))
}

/// Longest file name kept as it is; longer ones are shortened as mongodump does.
const MAX_FILE_NAME: usize = 238;

/// The file name (without extension) of a collection: `/`, `%` and NUL percent-escaped,
/// and a name too long for a file system cut and suffixed with `%24` and a hash of the
/// whole name so that it stays unique. The metadata file holds the real name.
pub(crate) fn file_name(coll: &str) -> String {
    let mut out = String::new();
    for c in coll.chars() {
        match c {
            '/' | '%' | '\0' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    if out.len() <= MAX_FILE_NAME {
        return out;
    }
    let mut cut = MAX_FILE_NAME - 24;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = blake3::hash(coll.as_bytes()).to_hex();
    format!("{}%24{}", &out[..cut], &hash[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_capture_and_rename() {
        assert_eq!(captures("db.*", "db.a.b"), Some(vec!["a.b".to_string()]));
        assert_eq!(captures("*.users", "app.users"), Some(vec!["app".into()]));
        assert_eq!(captures("db.*", "other.a"), None);
        assert_eq!(captures("exact.x", "exact.x"), Some(vec![]));
        let r = Renames::new(&["db.*".into()], &["copy.*".into()]).unwrap();
        assert_eq!(r.apply("db", "a.b"), ("copy".into(), "a.b".into()));
        assert_eq!(r.apply("other", "a"), ("other".into(), "a".into()));
        let r = Renames::new(&["*.x".into()], &["new_*.y".into()]).unwrap();
        assert_eq!(r.apply("app", "x"), ("new_app".into(), "y".into()));
        assert!(matches!(
            Renames::new(&["a.*".into()], &["b.c".into()]),
            Err(RenameError::Wildcards { .. })
        ));
        assert!(Renames::new(&["a.*".into()], &[]).is_err());
    }

    #[test]
    fn a_filtered_backup_keeps_the_oplog_entries_its_restore_could_replay() {
        let app = NsFilter {
            databases: vec!["app".into()],
            include: vec![],
            exclude: vec!["app.cache".into()],
        };
        for ns in ["app.users", "app.a.b", "app.$cmd", "admin.$cmd"] {
            assert!(app.needs_oplog_entry_on(ns), "{ns}");
        }
        for ns in [
            "other.users",
            "other.$cmd",
            "app.cache",
            "app.system.views",
            "",
            "config.x",
        ] {
            assert!(!app.needs_oplog_entry_on(ns), "{ns:?}");
        }
        let all = NsFilter::default();
        assert!(all.needs_oplog_entry_on("other.users") && all.needs_oplog_entry_on(""));
    }

    #[test]
    fn filters_and_default_skips() {
        let f = NsFilter {
            databases: vec![],
            include: vec!["app.*".into()],
            exclude: vec!["app.tmp*".into()],
        };
        assert!(f.matches("app", "users"));
        assert!(!f.matches("app", "tmp_1"));
        assert!(!f.matches("other", "users"));
        assert!(skipped_by_default("local", "oplog.rs"));
        assert!(skipped_by_default("app", "system.profile"));
        assert!(skipped_by_default("admin", "system.keys"));
        assert!(skipped_by_default("app", "a$b"));
        assert!(!skipped_by_default("app", "system.js"));
    }

    #[test]
    fn file_names_are_escaped_and_bounded() {
        assert_eq!(file_name("a/b%c"), "a%2Fb%25c");
        let long = "x".repeat(300);
        let f = file_name(&long);
        assert!(f.len() <= MAX_FILE_NAME && f.contains("%24"));
        assert_ne!(f, file_name(&"x".repeat(301)));
    }
}
