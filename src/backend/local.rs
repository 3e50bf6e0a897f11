//! The local-directory backend: one file per object, written to a temporary file, fsynced,
//! moved into place without replacing anything, and its directory fsynced.
use super::{Backend, BackendError, Entry, Kind, Result, ShortRead, validate_name};
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Writes in flight at once on a local disk by default: one fsyncs while the next is
/// written.
const CONNECTIONS: usize = 2;

pub struct LocalBackend {
    root: PathBuf,
    connections: usize,
}

pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BackendError + 'a {
    move |source| BackendError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            connections: CONNECTIONS,
        }
    }

    /// The backend with `connections` requests in flight at once instead of the default.
    pub(crate) fn with_connections(self, connections: usize) -> LocalBackend {
        LocalBackend {
            connections,
            ..self
        }
    }

    fn dir_of(&self, kind: Kind, name: &str) -> PathBuf {
        self.root.join(kind.folder_of(name))
    }

    fn path_of(&self, kind: Kind, name: &str) -> Result<PathBuf> {
        validate_name(kind, name)?;
        Ok(self.dir_of(kind, name).join(name))
    }

    fn not_found<'a>(
        &self,
        kind: Kind,
        name: &'a str,
    ) -> impl FnOnce(std::io::Error) -> BackendError + 'a {
        let location = self.location();
        move |e| match e.kind() {
            ErrorKind::NotFound => BackendError::NotFound {
                location,
                kind,
                name: name.to_string(),
            },
            _ => BackendError::Io {
                op: "read",
                path: name.to_string(),
                source: e,
            },
        }
    }

    /// A durable temporary file holding `data` in `dir`, to be moved into place.
    fn temporary(&self, dir: &Path, data: &[u8]) -> Result<tempfile::NamedTempFile> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io("create temporary file in", dir))?;
        tmp.write_all(data).map_err(io("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io("fsync", tmp.path()))?;
        Ok(tmp)
    }

    fn write_new(&self, dir: &Path, path: &Path, data: &[u8]) -> Result<bool> {
        let tmp = self.temporary(dir, data)?;
        match tmp.persist_noclobber(path) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io("rename into", path)(e.error)),
        }
    }

    fn list_dir(dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list", dir)(e)),
        };
        for ent in rd {
            let ent = ent.map_err(io("list", dir))?;
            let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Temporary files of other writers are skipped unread; an object removed
            // between listing and stat (a lock released, a pack pruned) is simply gone.
            if validate_name(Kind::Pack, &name).is_err() {
                continue;
            }
            let meta = match ent.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("stat", &ent.path())(e)),
            };
            if meta.is_file() {
                out.push(Entry {
                    name,
                    size: meta.len(),
                });
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        if self.root.join("config").exists() {
            return Err(BackendError::AlreadyExists {
                location: self.location(),
                kind: Kind::Config,
                name: self.location(),
            });
        }
        for kind in Kind::ALL {
            let dir = self.root.join(kind.dir());
            fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        }
        for prefix in 0..=255u8 {
            let dir = self.root.join(Kind::Pack.dir()).join(hex::encode([prefix]));
            fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        }
        sync_dir(&self.root)
    }

    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(kind, name)?;
        if kind.is_content_named() && path.is_file() {
            return Ok(());
        }
        let dir = self.dir_of(kind, name);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        }
        let created = self.write_new(&dir, &path, data)?;
        if !created && !kind.is_content_named() && self.get(kind, name)? != data {
            return Err(BackendError::AlreadyExists {
                location: self.location(),
                kind,
                name: name.to_string(),
            });
        }
        sync_dir(&dir)
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        fs::read(self.path_of(kind, name)?).map_err(self.not_found(kind, name))
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut file = File::open(self.path_of(kind, name)?).map_err(self.not_found(kind, name))?;
        // Read into spare capacity: no zeroing of a buffer about to be overwritten.
        let mut buf = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| (&mut file).take(len).read_to_end(&mut buf))
            .map_err(self.not_found(kind, name))?;
        if buf.len() as u64 != len {
            return Err(BackendError::ShortRead(Box::new(ShortRead {
                location: self.location(),
                kind,
                name: name.to_string(),
                offset,
                len,
                size: file.metadata().map(|m| m.len()).unwrap_or(0),
            })));
        }
        Ok(buf)
    }

    fn head(&self, kind: Kind, name: &str) -> Result<u64> {
        let meta = fs::metadata(self.path_of(kind, name)?).map_err(self.not_found(kind, name))?;
        Ok(meta.len())
    }

    fn list(&self, kind: Kind) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let base = self.root.join(kind.dir());
        match kind {
            Kind::Config => {
                if let Ok(m) = fs::metadata(base.join("config")) {
                    out.push(Entry {
                        name: "config".into(),
                        size: m.len(),
                    });
                }
            }
            Kind::Pack => {
                for prefix in 0..=255u8 {
                    Self::list_dir(&base.join(hex::encode([prefix])), &mut out)?;
                }
            }
            _ => Self::list_dir(&base, &mut out)?,
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn replace(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(kind, name)?;
        let dir = self.dir_of(kind, name);
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let tmp = self.temporary(&dir, data)?;
        tmp.persist(&path)
            .map_err(|e| io("rename over", &path)(e.error))?;
        sync_dir(&dir)
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn is_remote(&self) -> bool {
        false
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        let path = self.path_of(kind, name)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir_of(kind, name)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_backend_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        super::super::contract::run(&LocalBackend::new(dir.path().join("repo")));
    }

    #[test]
    fn packs_are_fanned_out_and_temp_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        let name = format!("7f{}", "0".repeat(62));
        b.put(Kind::Pack, &name, b"x").unwrap();
        assert!(dir.path().join("data/7f").join(&name).is_file());
        fs::write(dir.path().join("data/7f/.tmp-abc"), b"partial").unwrap();
        assert_eq!(b.list(Kind::Pack).unwrap().len(), 1);
        assert!(b.create().is_ok(), "no config yet");
    }
}
