//! strata: the backup engine. Everything here is a library: it never prints and never exits.
pub mod backend;
pub mod blob;
pub mod chunker;
pub mod config;
pub mod crypto;
pub mod id;
pub mod index;
pub mod indexfile;
pub mod key;
pub mod names;
pub mod pack;
pub mod packer;
pub mod repository;
pub mod sandbox;
pub mod snapshot;
pub mod sysinfo;
pub mod tree;
