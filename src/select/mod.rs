//! Choosing what to work on: snapshot selection, retention policies, path patterns.
pub mod filter;
pub mod policy;
pub mod selection;
