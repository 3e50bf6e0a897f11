//! Cancelling an engine operation: a token its caller sets (the CLI on Ctrl-C or SIGTERM,
//! a server on request) and the operation polls between entries, chunks and packs. A
//! cancelled operation returns an error promptly; its lock is released as it unwinds, and
//! the repository is left as a kill at the same moment would leave it (consistent: data
//! written so far and not yet referenced is removed by a later prune).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Cheap to clone; every clone sees the same state. The default is never cancelled until
/// [`Cancel::cancel`] is called on it or a clone.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// The error a cancelled operation stops with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Err once cancelled: `cancel.check()?` at each point an operation may stop.
    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        match self.is_cancelled() {
            true => Err(Cancelled),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_state() {
        let a = Cancel::default();
        let b = a.clone();
        assert!(b.check().is_ok());
        a.cancel();
        assert_eq!(b.check(), Err(Cancelled));
        assert!(
            Cancel::default().check().is_ok(),
            "a new token is not cancelled"
        );
    }
}
