//! The operations a front end runs on a repository, each a function returning a typed
//! report: backup, restore, check, prune, repair, diff, find, scan, stats, copy, forget,
//! migrate.
pub mod archiver;
pub mod checker;
pub mod copy;
pub mod diff;
pub mod finder;
pub mod forget;
pub mod migrate;
pub mod pruner;
pub mod repair;
pub mod restorer;
pub mod sandbox;
pub mod scan;
pub mod stats;
