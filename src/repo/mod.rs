//! The repository's formats and objects: ids, encryption, keys, config, blobs, packs,
//! index files, trees, snapshots, dictionaries, locks, and the opened `Repository`.
pub mod blob;
pub(crate) mod cache;
pub mod config;
pub mod crypto;
pub mod dictionary;
pub mod id;
pub mod indexfile;
pub mod key;
pub mod lock;
pub mod locked;
pub(crate) mod names;
pub mod pack;
pub mod paths;
pub(crate) mod pin;
pub(crate) mod prefetch;
pub mod repository;
pub mod snapshot;
pub mod tree;
