//! The write pipeline shared by backup, copy, prune, repair and MongoDB export: chunking,
//! packing (with dictionary training), uploading packs, repacking, and rewriting trees.
pub mod chunker;
pub mod packer;
pub(crate) mod repacker;
pub(crate) mod rewrite;
pub mod trainer;
pub(crate) mod uploader;
