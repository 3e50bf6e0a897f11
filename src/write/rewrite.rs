//! Rewriting trees bottom-up: each distinct tree below a root is visited once, post-order with
//! an explicit stack (never recursion, so any depth can be rewritten), and built anew from its
//! entries and its rewritten subtrees. `repair snapshots` cuts damaged files this way and
//! `copy` re-ids every blob for another repository; what happens at each tree is theirs.
use crate::repo::id::TreeId;
use crate::repo::tree::Node;
use std::collections::{HashMap, HashSet};

/// What a tree stands for before its entries are rewritten.
pub(crate) enum Opened<F, D> {
    /// Its entries (in order) to rewrite, and the state that collects them.
    Tree(F, Vec<Node>),
    /// It is not rewritten (it could not be loaded, say): this stands for it.
    Done(D),
}

/// What a rewrite does at each tree. For every distinct tree [`rewrite`] calls `open`, then
/// for each entry in order `leaf` (not a directory) or `subtree` (a directory, once its tree
/// is rewritten), then `finish`.
pub(crate) trait Rewriter {
    /// The state of a tree being rewritten.
    type Frame;
    /// What a rewritten tree gives; kept for every later place the tree appears.
    type Done: Clone;
    type Error;
    fn open(&mut self, id: TreeId) -> Result<Opened<Self::Frame, Self::Done>, Self::Error>;
    /// What stands for a tree met again below itself (only a forged tree can be).
    fn cycle(&mut self, id: TreeId) -> Result<Self::Done, Self::Error>;
    fn leaf(&mut self, frame: &mut Self::Frame, node: Node) -> Result<(), Self::Error>;
    /// The directory `node`, whose tree gave `done`.
    fn subtree(
        &mut self,
        frame: &mut Self::Frame,
        node: Node,
        done: &Self::Done,
    ) -> Result<(), Self::Error>;
    fn finish(&mut self, id: TreeId, frame: Self::Frame) -> Result<Self::Done, Self::Error>;
}

/// A tree being rewritten: its entries still to visit, and the directory waiting for its
/// subtree's rewrite.
struct Frame<F> {
    id: TreeId,
    nodes: std::vec::IntoIter<Node>,
    state: F,
    waiting: Option<Node>,
}

/// Rewrites the trees below `root` with `rw`, each distinct tree once: `memo` keeps what each
/// gave (trees it already holds are not visited again, so it can be shared between roots). A
/// tree met again below itself gives what `rw.cycle` says, which is not kept.
pub(crate) fn rewrite<R: Rewriter>(
    rw: &mut R,
    root: TreeId,
    memo: &mut HashMap<TreeId, R::Done>,
) -> Result<R::Done, R::Error> {
    let mut walk = Walk {
        rw,
        memo,
        stack: Vec::new(),
        active: HashSet::new(),
    };
    walk.run(root)
}

struct Walk<'a, R: Rewriter> {
    rw: &'a mut R,
    memo: &'a mut HashMap<TreeId, R::Done>,
    stack: Vec<Frame<R::Frame>>,
    /// Trees on the current path from the root.
    active: HashSet<TreeId>,
}

impl<R: Rewriter> Walk<'_, R> {
    fn run(&mut self, root: TreeId) -> Result<R::Done, R::Error> {
        let mut done = self.enter(root)?;
        loop {
            if let Some(d) = done.take() {
                let Some(parent) = self.stack.last_mut() else {
                    return Ok(d);
                };
                let node = (parent.waiting.take()).expect("a directory waits for its subtree");
                self.rw.subtree(&mut parent.state, node, &d)?;
            }
            let frame = self.stack.last_mut().expect("a tree being rewritten");
            let Some(node) = frame.nodes.next() else {
                let frame = self.stack.pop().expect("a tree being rewritten");
                self.active.remove(&frame.id);
                let d = self.rw.finish(frame.id, frame.state)?;
                self.memo.insert(frame.id, d.clone());
                done = Some(d);
                continue;
            };
            match node.subtree() {
                Some(sub) => {
                    frame.waiting = Some(node);
                    done = self.enter(sub)?;
                }
                None => self.rw.leaf(&mut frame.state, node)?,
            }
        }
    }

    /// What the tree `id` gave when it is already rewritten, is not rewritten, or is a
    /// cycle; else None, with its frame pushed.
    fn enter(&mut self, id: TreeId) -> Result<Option<R::Done>, R::Error> {
        if let Some(done) = self.memo.get(&id) {
            return Ok(Some(done.clone()));
        }
        if self.active.contains(&id) {
            return self.rw.cycle(id).map(Some);
        }
        match self.rw.open(id)? {
            Opened::Done(done) => {
                self.memo.insert(id, done.clone());
                Ok(Some(done))
            }
            Opened::Tree(state, nodes) => {
                self.active.insert(id);
                self.stack.push(Frame {
                    id,
                    nodes: nodes.into_iter(),
                    state,
                    waiting: None,
                });
                Ok(None)
            }
        }
    }
}
