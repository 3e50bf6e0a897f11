//! Absolute paths inside snapshots, kept as raw bytes (names need not be UTF-8): their
//! order, how they are shown, and their JSON form.
use serde::Serializer;
use std::cmp::Ordering;

/// Orders paths component by component, so that a directory's entries follow it directly.
pub(crate) fn cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// The path as (lossy) UTF-8; the empty path of the root as `/`.
pub fn display(path: &[u8]) -> String {
    match path.is_empty() {
        true => "/".into(),
        false => String::from_utf8_lossy(path).into_owned(),
    }
}

/// `path/name`.
pub(crate) fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1 + name.len());
    out.extend_from_slice(path);
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Serializes a path as a (lossy) UTF-8 string: `#[serde(serialize_with = "paths::lossy")]`.
pub(crate) fn lossy<S: Serializer>(path: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&display(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_right_after_their_directory() {
        let mut paths: Vec<&[u8]> = vec![b"/a/b", b"/a b", b"/a", b"/a/b/c", b"/a-"];
        paths.sort_by(|x, y| cmp(x, y));
        let want: Vec<&[u8]> = vec![b"/a", b"/a/b", b"/a/b/c", b"/a b", b"/a-"];
        assert_eq!(paths, want);
    }

    #[test]
    fn join_and_display() {
        assert_eq!(join(b"", b"x"), b"/x");
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x"), b"/a/x");
        assert_eq!(display(b""), "/");
        assert_eq!(display(b"/a\xff"), "/a\u{fffd}");
    }
}
