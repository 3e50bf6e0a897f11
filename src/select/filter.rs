//! Include and exclude patterns for backup and restore. A pattern that contains `/` is
//! matched against the whole absolute path; one without is matched against each name, so
//! `*.tmp` excludes every `.tmp` file anywhere. `*` stays within one name, `**` crosses.
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error("cannot read pattern file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// A set of glob patterns split by what they are matched against.
#[derive(Clone, Debug)]
pub struct Patterns {
    paths: GlobSet,
    names: GlobSet,
    empty: bool,
}

fn glob(pattern: &str) -> Result<Glob, FilterError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| FilterError::Pattern {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })
}

fn build(set: GlobSetBuilder) -> GlobSet {
    set.build()
        .expect("globs that compiled alone also compile together")
}

impl Patterns {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, FilterError> {
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for p in patterns.iter().map(AsRef::as_ref) {
            let trimmed = p.trim_end_matches('/');
            if trimmed.contains('/') {
                paths.add(glob(trimmed)?);
            } else {
                names.add(glob(trimmed)?);
            }
        }
        Ok(Patterns {
            paths: build(paths),
            names: build(names),
            empty: patterns.is_empty(),
        })
    }

    /// Patterns from a file: one per line, blank lines and `#` comments ignored.
    pub fn read_file(path: &Path) -> Result<Vec<String>, FilterError> {
        let text = std::fs::read_to_string(path).map_err(|source| FilterError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether an absolute path (raw bytes, starting with `/`) matches any pattern.
    pub(crate) fn matches(&self, abs_path: &[u8]) -> bool {
        let path = Path::new(OsStr::from_bytes(abs_path));
        let name = abs_path.rsplit(|&b| b == b'/').next().unwrap_or(abs_path);
        let name = Path::new(OsStr::from_bytes(name));
        self.paths.is_match(path) || self.names.is_match(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let p = Patterns::new(&["*.tmp", "/srv/app/cache", "/home/*/secret/**"]).unwrap();
        assert!(p.matches(b"/a/b/x.tmp"));
        assert!(p.matches(b"/srv/app/cache"));
        assert!(!p.matches(b"/srv/app/cache2"));
        assert!(p.matches(b"/home/ann/secret/deep/file"));
        assert!(
            !p.matches(b"/home/ann/bob/secret/x"),
            "* stays within one name"
        );
        assert!(!p.matches(b"/a/x.tmp.keep"));
        assert!(p.matches(b"/a/\xff\xfe.tmp"), "non-UTF-8 names match");
        assert!(!Patterns::new::<&str>(&[]).unwrap().matches(b"/x"));
    }

    #[test]
    fn bad_pattern_is_reported() {
        let err = Patterns::new(&["a[b"]).unwrap_err();
        assert!(err.to_string().contains("a[b"));
    }
}
