//! How long-running engine work reports progress without printing: the caller passes an
//! implementation (the CLI draws a bar with it; tests and `--quiet` pass `NoProgress`).
pub trait Progress: Sync {
    /// The amount of work, in bytes, when known in advance.
    fn total(&self, _bytes: u64) {}
    /// Bytes processed since the last call.
    fn advance(&self, _bytes: u64) {}
    /// The item being worked on (a path), for display.
    fn item(&self, _name: &str) {}
}

pub struct NoProgress;

impl Progress for NoProgress {}
