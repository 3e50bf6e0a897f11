//! Fuzzes the index_file parser through its harness (tests/prop_parsers/harness.rs).
#![no_main]
#[path = "../../tests/prop_parsers/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz("index_file", data));
