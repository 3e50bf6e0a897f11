//! Sources other than files that a snapshot can hold (see `archiver::TreeSource`).
pub(crate) mod fs;
pub mod mongodb;
