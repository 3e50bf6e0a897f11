//! The `strata` command line: parses arguments and dispatches to one command module each.
fn main() {}
