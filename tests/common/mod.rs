//! Shared end-to-end test harness. Each test crate does `mod common;` and
//! uses what it needs, hence the allows.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod azure;
pub mod compare;
pub mod digest;
pub mod e2e;
pub mod fixture;
pub mod fsutil;
pub mod gcs;
pub mod mongo;
pub mod mount;
pub mod repo;
pub mod rng;
pub mod s3;
pub mod serve;
pub mod server;
pub mod store;
pub mod tree;

pub use compare::{
    CompareOpts, assert_trees_equal, assert_trees_equal_with, compare_trees, first_difference,
};
pub use fsutil::{copy_mtime, dir_size, flip_byte, list_files, mtime_of, set_mode, set_mtime};
pub use repo::{TestRepo, stderr, stdout, stdout_json};
pub use rng::Rng;
pub use tree::{generate_small_tree, generate_tree, mutate_file, write_big};

/// Build a `Vec<OsString>` from a mix of `&str`, `&Path`, `PathBuf`, `&OsStr`…:
/// `repo.ok(os_args!["backup", &src, "--tag", "x"])`.
#[macro_export]
macro_rules! os_args {
    ($($arg:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from(&$arg)),*]
    };
}
