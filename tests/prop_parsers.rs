//! Property tests for every parser of repository bytes (issue 12, "Tests and tools"): on
//! random bytes and on mutations of valid encodings (bit flips, truncation, extension, length
//! fields set to extreme values) each returns a value or an error: it never panics, and never
//! allocates far beyond what its input can describe (measured by a counting allocator).
#[path = "prop_parsers/harness.rs"]
mod harness;

use harness::{EXTREME_NUMBERS, EXTREME_U32, Mutation, PARSERS};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts, per thread, the largest single allocation and the bytes allocated in total.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
    let _ = TOTAL.try_with(|c| c.set(c.get().saturating_add(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What one call allocated on its thread.
#[derive(Debug)]
struct Usage {
    largest: usize,
    total: usize,
}

fn measure(f: impl FnOnce()) -> Usage {
    LARGEST.with(|c| c.set(0));
    TOTAL.with(|c| c.set(0));
    f();
    Usage {
        largest: LARGEST.with(Cell::get),
        total: TOTAL.with(Cell::get),
    }
}

/// Allocation a parser may make for `len` bytes of input: serde preallocates at most 1 MiB
/// for a claimed length and the key-file harness lets Argon2 use 1 MiB; beyond those,
/// allocation must stay proportional to the input.
fn within_bounds(len: usize, u: &Usage) -> bool {
    u.largest <= (2 << 20) + 64 * len && u.total <= (8 << 20) + 256 * len
}

fn check(parser: &str, input: &[u8]) -> Result<(), TestCaseError> {
    let parse = harness::parser(parser).parse;
    let usage = measure(|| {
        parse(input);
    });
    prop_assert!(
        within_bounds(input.len(), &usage),
        "{parser} allocated {usage:?} for {} bytes of input",
        input.len()
    );
    Ok(())
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let varint = prop_oneof![Just(u64::MAX), Just(u32::MAX as u64), any::<u64>()];
    prop_oneof![
        any::<usize>().prop_map(|at| Mutation::FlipBit { at }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), select(EXTREME_U32))
            .prop_map(|(at, value)| Mutation::SetU32 { at, value }),
        (any::<usize>(), varint).prop_map(|(at, value)| Mutation::SetVarint { at, value }),
        (any::<usize>(), select(EXTREME_NUMBERS))
            .prop_map(|(at, text)| Mutation::SetNumber { at, text }),
    ]
}

/// For each parser: random bytes, and valid encodings with a few mutations.
macro_rules! parser_props {
    ($($name:ident),* $(,)?) => {
        const COVERED: &[&str] = &[$(stringify!($name)),*];
        $(mod $name {
            use super::*;
            proptest! {
                #[test]
                fn random_bytes_are_refused_or_parsed_within_bounds(b in vec(any::<u8>(), 0..2048)) {
                    check(stringify!($name), &b)?;
                }

                #[test]
                fn mutated_encodings_are_refused_or_parsed_within_bounds(ms in vec(mutation(), 1..6)) {
                    let mut b = harness::sample(harness::parser(stringify!($name))).to_vec();
                    for m in &ms {
                        m.apply(&mut b);
                    }
                    check(stringify!($name), &b)?;
                }
            }
        })*
    };
}

parser_props!(
    pack_trailer,
    pack_entries,
    pack_header,
    pack_file,
    index_file,
    tree,
    snapshot,
    config,
    key_file,
    master_key,
    lock,
    dictionary,
);

proptest! {
    /// What the cargo-fuzz targets run, so that their input decoding is tested here too.
    #[test]
    fn fuzz_target_inputs_are_refused_or_parsed_within_bounds(
        name in select(COVERED),
        data in vec(any::<u8>(), 0..512),
    ) {
        let usage = measure(|| harness::fuzz(name, &data));
        prop_assert!(within_bounds(data.len(), &usage), "{name}: {usage:?}");
    }
}

#[test]
fn every_parser_has_properties_and_accepts_its_valid_encoding() {
    let names: Vec<&str> = PARSERS.iter().map(|p| p.name).collect();
    assert_eq!(names, COVERED);
    for p in PARSERS {
        assert!(
            (p.parse)(harness::sample(p)),
            "{} refuses its sample",
            p.name
        );
    }
}

#[test]
fn the_allocation_bound_catches_a_parser_that_trusts_a_count() {
    let claimed = u32::from_le_bytes([0, 0, 0, 1]) as usize;
    let trusting = measure(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(claimed))));
    assert!(!within_bounds(4, &trusting), "{trusting:?}");
    let careful = measure(|| {
        drop(std::hint::black_box(Vec::<u8>::with_capacity(
            claimed.min(4),
        )))
    });
    assert!(within_bounds(4, &careful), "{careful:?}");
}

/// Counts of u32::MAX (or a postcard length of u64::MAX) in inputs of a few bytes.
#[test]
fn a_huge_count_in_a_tiny_input_is_refused_without_a_huge_allocation() {
    let max = u32::MAX.to_le_bytes();
    let cases: [(&str, Vec<u8>); 6] = [
        ("pack_entries", max.to_vec()),
        ("pack_header", [&b"SPH1"[..], &max].concat()),
        ("index_file", [&b"SIX1"[..], &max].concat()),
        (
            "index_file",
            [&b"SIX1"[..], &[1, 0, 0, 0], &[0; 32], &max].concat(),
        ),
        ("tree", vec![1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        (
            "tree",
            [&[
                1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
            ][..]]
            .concat(),
        ),
    ];
    for (parser, input) in cases {
        let mut accepted = true;
        let usage = measure(|| accepted = (harness::parser(parser).parse)(&input));
        assert!(!accepted, "{parser} accepted {input:?}");
        assert!(within_bounds(input.len(), &usage), "{parser}: {usage:?}");
    }
}
