//! The local cache of a remote repository: snapshot files and whole tree packs, kept under
//! `<cache dir>/<repository id>/objects/` so that `snapshots`, `ls`, `diff`, `find` and mount
//! listings do not go to the network once warm (restic's cache does the same). It fills as
//! objects are read and as this client writes snapshots and tree packs. Everything cached is
//! content-named and immutable: an object read is checked against its name before it is
//! kept, a blob read from a cached pack is authenticated as any blob is, and a cached pack
//! whose blob fails is dropped and the blob read from the store. Objects the repository no
//! longer has are dropped when the cache is opened or the snapshots listed.
use crate::backend::local::io;
use crate::backend::{Backend, BackendError, Kind};
use crate::repo::id::Id;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, BackendError>;

pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache of repository `repo_id` under the cache root `root`.
    pub(crate) fn open(root: &Path, repo_id: &Id) -> Result<Cache> {
        let dir = root.join(repo_id.to_hex()).join("objects");
        for kind in [Kind::Snapshot, Kind::Pack] {
            let sub = dir.join(kind.dir());
            fs::create_dir_all(&sub).map_err(io("create cache directory", &sub))?;
        }
        Ok(Cache { dir })
    }

    fn path(&self, kind: Kind, name: &str) -> PathBuf {
        self.dir.join(kind.dir()).join(name)
    }

    /// Object `name` of `kind`: from the cache, else from `backend` (and then cached).
    pub(crate) fn get(&self, backend: &dyn Backend, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name);
        match fs::read(&path) {
            Ok(bytes) if Id::hash_of(&bytes).to_hex() == name => return Ok(bytes),
            _ => {}
        }
        self.fetch(backend, kind, name)
    }

    /// Object `name` of `kind` from `backend`, kept if it is what its name says.
    fn fetch(&self, backend: &dyn Backend, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let bytes = backend.get(kind, name)?;
        if Id::hash_of(&bytes).to_hex() == name {
            self.keep(&self.path(kind, name), &bytes);
        }
        Ok(bytes)
    }

    /// `len` bytes at `offset` of pack `name`; the whole pack is fetched and kept on the
    /// first read (it is a tree pack: its other trees are likely read next).
    pub(crate) fn get_range(
        &self,
        backend: &dyn Backend,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        if let Some(bytes) = read_at(&self.path(Kind::Pack, name), offset, len) {
            return Ok(bytes);
        }
        let pack = self.fetch(backend, Kind::Pack, name)?;
        match pack.get(offset as usize..(offset + len) as usize) {
            Some(range) => Ok(range.to_vec()),
            None => backend.get_range(Kind::Pack, name, offset, len),
        }
    }

    /// Keeps a copy of object `name` of `kind` (a snapshot or a tree pack) that this client
    /// wrote, so that it is not read back from the store.
    pub(crate) fn put(&self, kind: Kind, name: &str, bytes: &[u8]) {
        self.keep(&self.path(kind, name), bytes);
    }

    /// Drops cached object `name` of `kind` (a blob in it failed to open).
    pub(crate) fn drop_object(&self, kind: Kind, name: &str) {
        let _ = fs::remove_file(self.path(kind, name));
    }

    /// Drops the cached objects of `kind` for which `keep` is false.
    pub(crate) fn retain(&self, kind: Kind, mut keep: impl FnMut(&str) -> bool) {
        let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !keep(&name.to_string_lossy()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Writes `bytes` to `path` through a temporary file renamed into place, so a crash
    /// leaves the whole object or none. Caching is best effort: a full or read-only disk
    /// only costs the next read a request.
    fn keep(&self, path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = File::create(&tmp).and_then(|mut f| f.write_all(bytes));
        if written.and_then(|()| fs::rename(&tmp, path)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Exactly `len` bytes at `offset` of the file at `path`, if it is there and long enough.
fn read_at(path: &Path, offset: u64, len: u64) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::open;

    #[test]
    fn objects_are_fetched_once_then_read_locally_and_wrong_or_stale_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open("memory:", &[]).unwrap();
        let cache = Cache::open(dir.path(), &Id::hash_of(b"repo")).unwrap();
        let snap = b"a snapshot".to_vec();
        let name = Id::hash_of(&snap).to_hex();
        store.put(Kind::Snapshot, &name, &snap).unwrap();
        assert_eq!(cache.get(&*store, Kind::Snapshot, &name).unwrap(), snap);
        store.remove(Kind::Snapshot, &name).unwrap();
        assert_eq!(cache.get(&*store, Kind::Snapshot, &name).unwrap(), snap);

        let pack: Vec<u8> = (0..=255).collect();
        let pack_name = Id::hash_of(&pack).to_hex();
        store.put(Kind::Pack, &pack_name, &pack).unwrap();
        assert_eq!(
            cache.get_range(&*store, &pack_name, 10, 3).unwrap(),
            [10, 11, 12]
        );
        store.remove(Kind::Pack, &pack_name).unwrap();
        assert_eq!(
            cache.get_range(&*store, &pack_name, 250, 6).unwrap(),
            [250, 251, 252, 253, 254, 255]
        );
        assert!(cache.get_range(&*store, &pack_name, 250, 7).is_err());

        // A damaged cached snapshot is not believed.
        let path = cache.path(Kind::Snapshot, &name);
        fs::write(&path, b"tampered").unwrap();
        assert!(cache.get(&*store, Kind::Snapshot, &name).is_err());

        cache.retain(Kind::Pack, |n| n != pack_name);
        assert!(!cache.path(Kind::Pack, &pack_name).exists());
    }
}
