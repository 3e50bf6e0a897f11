//! Reading a `.bson` file of the snapshot (documents back to back) one chunk at a time and
//! splitting it into documents, with memory bounded by a read-ahead window of chunks plus one
//! document.
use super::{MongoError, Result};
use crate::cancel::Cancel;
use crate::repo::repository::{IndexedRepo, RepoError};
use crate::repo::tree::Node;
use crate::vfs;
use bson::{Document, RawDocumentBuf};

/// Largest document accepted: BSON's 16 MiB plus mongod's internal allowance.
const MAX_DOC: usize = 16 * 1024 * 1024 + 16 * 1024;

/// Splits bytes into BSON documents; bytes of an unfinished document wait for more.
#[derive(Default)]
pub(crate) struct DocSplitter {
    pending: Vec<u8>,
}

impl DocSplitter {
    /// The whole documents completed by `data`.
    pub(crate) fn feed(&mut self, data: &[u8]) -> std::result::Result<Vec<RawDocumentBuf>, String> {
        self.pending.extend_from_slice(data);
        let mut docs = Vec::new();
        let mut pos = 0;
        while let Some(len) = doc_len(&self.pending[pos..])? {
            let doc = RawDocumentBuf::from_bytes(self.pending[pos..pos + len].to_vec())
                .map_err(|e| e.to_string())?;
            docs.push(doc);
            pos += len;
        }
        self.pending.drain(..pos);
        Ok(docs)
    }

    /// An error if a document was left unfinished.
    pub(crate) fn finish(&self) -> std::result::Result<(), String> {
        match self.pending.is_empty() {
            true => Ok(()),
            false => Err(format!("{} bytes of a cut document", self.pending.len())),
        }
    }
}

/// The length of the document starting `data`, once all of it is there.
fn doc_len(data: &[u8]) -> std::result::Result<Option<usize>, String> {
    let Some(prefix) = data.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if !(5..=MAX_DOC).contains(&len) {
        return Err(format!("a document length of {len} bytes"));
    }
    Ok((data.len() >= len).then_some(len))
}

/// Calls `f` with the documents of a `.bson` file node, a chunk's worth at a time.
pub(crate) fn for_each_batch(
    repo: &IndexedRepo,
    node: &Node,
    path: &str,
    f: &mut dyn FnMut(Vec<RawDocumentBuf>) -> Result<()>,
) -> Result<()> {
    let damaged = |message: String| MongoError::Dump {
        path: path.to_string(),
        message,
    };
    let mut splitter = DocSplitter::default();
    for data in vfs::chunks(repo, node.content()) {
        let data = data?;
        let docs = splitter.feed(&data).map_err(damaged)?;
        if !docs.is_empty() {
            f(docs)?;
        }
    }
    splitter.finish().map_err(damaged)
}

/// Calls `f` with each document of a `.bson` file node, decoded (an oplog's entries), until
/// `cancel` is cancelled (checked a chunk's worth at a time).
pub(crate) fn for_each_document(
    repo: &IndexedRepo,
    node: &Node,
    path: &str,
    cancel: &Cancel,
    f: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<()> {
    for_each_batch(repo, node, path, &mut |docs| {
        cancel.check().map_err(RepoError::from)?;
        docs.iter().try_for_each(|raw| {
            let doc = Document::try_from(raw).map_err(|e| MongoError::Dump {
                path: path.to_string(),
                message: e.to_string(),
            })?;
            f(doc)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn documents_split_across_feeds() {
        let a = rawdoc! {"_id": 1, "s": "x".repeat(100)};
        let b = rawdoc! {"_id": 2};
        let all = [a.as_bytes(), b.as_bytes()].concat();
        let mut s = DocSplitter::default();
        assert!(s.feed(&all[..50]).unwrap().is_empty());
        assert!(s.finish().is_err());
        let docs = s.feed(&all[50..]).unwrap();
        assert_eq!(docs, vec![a, b]);
        s.finish().unwrap();
        assert!(DocSplitter::default().feed(&[1, 0, 0, 0, 0]).is_err());
    }
}
