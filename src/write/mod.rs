//! The write pipeline shared by backup, copy, prune, repair and MongoDB export: chunking,
//! packing (with dictionary training), repacking, and rewriting trees.
pub mod chunker;
pub mod packer;
pub mod repacker;
pub mod rewrite;
pub mod trainer;
