//! Fuzzes the dictionary parser (and a decompression with what it accepts) through its
//! harness (tests/prop_parsers/harness.rs).
#![no_main]
#[path = "../../tests/prop_parsers/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::fuzz("dictionary", data));
