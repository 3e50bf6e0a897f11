//! Content-defined chunking with FastCDC 2020. Boundaries depend only on the bytes and the
//! repository's parameters and seed, never on how the input is read. [`Chunker`] cuts byte
//! streams (files); [`RecordChunker`] cuts a stream of records (BSON documents) only
//! between records.
use crate::repo::config::ChunkerParams;
use crate::repo::crypto::GearSeed;
use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use std::io::Read;
use std::sync::Arc;

/// FastCDC's gear table (and the same shifted left by one), made from the repository's key:
/// cheap to clone, so it is built once per run and shared by every chunker.
#[derive(Clone)]
pub struct GearTable(Arc<(Vec<u64>, Vec<u64>)>);

impl GearTable {
    pub fn new(seed: GearSeed) -> GearTable {
        let gear = match seed {
            GearSeed::Xor(n) => get_gear_with_seed(n).0.into_owned(),
            GearSeed::Table(key) => table_from_xof(&key),
        };
        let shifted = gear.iter().map(|g| g << 1).collect();
        GearTable(Arc::new((gear, shifted)))
    }
}

/// 256 u64 (little-endian) from the BLAKE3 XOF keyed with `key`: a table that shares
/// nothing with FastCDC's public one.
fn table_from_xof(key: &[u8; 32]) -> Vec<u64> {
    let mut bytes = [0u8; 256 * 8];
    blake3::Hasher::new_keyed(key)
        .finalize_xof()
        .fill(&mut bytes);
    bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// Splits a reader into chunks: an iterator of `io::Result<Vec<u8>>`.
///
/// The buffer grows only as far as the input needs (a small file never costs `max_size`)
/// and is never zero-filled; consumed bytes are moved out at most once per `max_size` read.
pub struct Chunker<R: Read> {
    source: R,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    cutter: Cutter,
}

/// FastCDC's cut-point search with the repository's parameters and gear table.
struct Cutter {
    params: ChunkerParams,
    masks: [u64; 4],
    gear: GearTable,
}

impl Cutter {
    fn new(params: ChunkerParams, gear: &GearTable) -> Cutter {
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Cutter {
            params,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            gear: gear.clone(),
        }
    }

    /// The length of the first chunk of `data` (all of it when no cut point is found).
    fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let [ms, ml, msl, mll] = self.masks;
        let (_, n) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            ms,
            ml,
            msl,
            mll,
            &self.gear.0.0,
            &self.gear.0.1,
        );
        n
    }
}

impl<R: Read> Chunker<R> {
    pub fn new(source: R, params: ChunkerParams, gear: &GearTable) -> Chunker<R> {
        Chunker {
            source,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            cutter: Cutter::new(params, gear),
        }
    }

    /// Sizes the buffer for an input of about `len` bytes (a file's size from its
    /// metadata), so that reading it takes one read and one that finds the end, with no
    /// probing reads or regrowth. The input may still turn out longer or shorter.
    pub(crate) fn expecting(mut self, len: u64) -> Chunker<R> {
        let max = self.cutter.params.max_size as u64;
        self.buf.reserve(len.min(max) as usize + 1);
        self
    }

    /// Makes at least `max_size` unconsumed bytes available, or everything up to EOF.
    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.cutter.params.max_size as usize;
        if self.eof || self.buf.len() - self.pos >= max {
            return Ok(());
        }
        if self.pos >= max {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let want = (max - (self.buf.len() - self.pos)) as u64;
        let got = (&mut self.source).take(want).read_to_end(&mut self.buf)?;
        self.eof = (got as u64) < want;
        Ok(())
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.pos == self.buf.len() {
            return None;
        }
        let n = self.cutter.cut(&self.buf[self.pos..]);
        if self.eof && self.pos == 0 && n == self.buf.len() {
            // The whole input is one chunk (every small file): hand the buffer over.
            return Some(Ok(std::mem::take(&mut self.buf)));
        }
        let chunk = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Some(Ok(chunk))
    }
}

/// Cuts a stream of records into chunks whose boundaries fall only between records: a chunk
/// ends at the first record end at or after FastCDC's cut point, so boundaries stay
/// content-defined (an edit moves only nearby ones) and a record is never split. A chunk is
/// longer than `max_size` only by the tail of one record.
pub(crate) struct RecordChunker {
    cutter: Cutter,
    buf: Vec<u8>,
    /// End offsets (in `buf`) of the records it holds, ascending.
    ends: std::collections::VecDeque<usize>,
}

impl RecordChunker {
    pub(crate) fn new(params: ChunkerParams, gear: &GearTable) -> RecordChunker {
        RecordChunker {
            cutter: Cutter::new(params, gear),
            buf: Vec::new(),
            ends: Default::default(),
        }
    }

    /// Adds one record; returns the chunks completed by it (usually none).
    pub(crate) fn push(&mut self, record: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(record);
        self.ends.push_back(self.buf.len());
        let mut out = Vec::new();
        while self.buf.len() >= self.cutter.params.max_size as usize {
            out.push(self.take_chunk());
        }
        out
    }

    /// The chunks holding the remaining records.
    pub(crate) fn finish(mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !self.buf.is_empty() {
            out.push(self.take_chunk());
        }
        out
    }

    fn take_chunk(&mut self) -> Vec<u8> {
        let cut = self.cutter.cut(&self.buf);
        let end = loop {
            let end = self.ends.pop_front().expect("buffered bytes end a record");
            if end >= cut {
                break end;
            }
        };
        let rest = self.buf.split_off(end);
        for e in self.ends.iter_mut() {
            *e -= end;
        }
        std::mem::replace(&mut self.buf, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (splitmix64).
    pub(super) fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn xor(seed: u64) -> GearTable {
        GearTable::new(GearSeed::Xor(seed))
    }

    fn lengths_with(data: &[u8], gear: &GearTable) -> Vec<usize> {
        Chunker::new(data, ChunkerParams::FILES, gear)
            .map(|c| c.unwrap().len())
            .collect()
    }

    fn lengths(data: &[u8], seed: u64) -> Vec<usize> {
        Chunker::new(data, ChunkerParams::FILES, &xor(seed))
            .map(|c| c.unwrap().len())
            .collect()
    }

    /// A reader that hands out at most `n` bytes per read call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn boundaries_are_pinned() {
        let data = seeded_bytes(1, 20 << 20);
        let got = lengths(&data, 0);
        assert_eq!(got.iter().sum::<usize>(), data.len());
        assert_eq!(
            got, PINNED_SEED0,
            "FastCDC boundaries changed: that breaks deduplication with existing repositories"
        );
        assert_ne!(lengths(&data, 12345), got, "the seed changes boundaries");
    }

    #[test]
    fn key_derived_gear_tables_are_pinned_and_share_nothing_with_the_public_table() {
        let data = seeded_bytes(1, 20 << 20);
        let gear = GearTable::new(GearSeed::Table([7; 32]));
        let public = xor(0);
        assert!(gear.0.0.iter().all(|g| !public.0.0.contains(g)));
        let got = lengths_with(&data, &gear);
        assert_eq!(got.iter().sum::<usize>(), data.len());
        assert_eq!(got, PINNED_TABLE7, "key-derived boundaries changed");
        let other = lengths_with(&data, &GearTable::new(GearSeed::Table([8; 32])));
        assert_ne!(other, got, "the key changes boundaries");
    }

    const PINNED_TABLE7: &[usize] = &[
        904174, 1292695, 1069956, 1065341, 1273158, 702175, 1099746, 1369808, 1084628, 1149678,
        849063, 1054844, 1555525, 1109481, 2565666, 681945, 1263930, 879707,
    ];

    const PINNED_SEED0: &[usize] = &[
        1106190, 1633517, 1252205, 593103, 2103531, 805973, 1202200, 1619404, 1993092, 1534877,
        1163367, 1263286, 2046928, 1814353, 649753, 189741,
    ];

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = seeded_bytes(2, 6 << 20);
        let whole = lengths(&data, 99);
        let trickled: Vec<usize> =
            Chunker::new(Trickle(&data, 4093), ChunkerParams::FILES, &xor(99))
                .map(|c| c.unwrap().len())
                .collect();
        assert_eq!(whole, trickled);
    }

    #[test]
    fn size_hints_change_no_chunk_whether_right_or_wrong() {
        for len in [0, 100, 600 << 10, 9 << 20] {
            let data = seeded_bytes(4, len);
            let plain: Vec<Vec<u8>> = Chunker::new(&data[..], ChunkerParams::FILES, &xor(5))
                .map(Result::unwrap)
                .collect();
            for hint in [0, len as u64, len as u64 / 2, len as u64 * 2 + 7] {
                let hinted: Vec<Vec<u8>> = Chunker::new(&data[..], ChunkerParams::FILES, &xor(5))
                    .expecting(hint)
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(hinted, plain, "length {len}, hint {hint}");
            }
            assert_eq!(plain.concat(), data);
        }
    }

    #[test]
    fn limits_hold_and_inserts_only_shift_nearby_boundaries() {
        let data = seeded_bytes(3, 24 << 20);
        let a = lengths(&data, 7);
        assert!(
            a[..a.len() - 1]
                .iter()
                .all(|&l| (512 << 10..=8 << 20).contains(&l))
        );
        let mut edited = data.clone();
        edited.splice(100..100, b"inserted bytes".iter().copied());
        let b = lengths(&edited, 7);
        assert_eq!(a[2..], b[2..], "only the first chunks change");
        assert!(lengths(&[], 7).is_empty());
    }

    /// Records of 50..550 bytes, each starting with its length as u32 LE, as in BSON.
    fn records(seed: u64, n: usize) -> Vec<Vec<u8>> {
        let bytes = seeded_bytes(seed, n * 2);
        (0..n)
            .map(|i| {
                let len = 50 + (u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) % 500);
                let mut r = seeded_bytes(seed ^ i as u64, len as usize);
                r[..4].copy_from_slice(&(len as u32).to_le_bytes());
                r
            })
            .collect()
    }

    fn record_chunks(recs: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut c = RecordChunker::new(ChunkerParams::BSON, &xor(5));
        let mut out: Vec<Vec<u8>> = recs.iter().flat_map(|r| c.push(r)).collect();
        out.extend(c.finish());
        out
    }

    /// Splits a chunk back into records by their length prefixes; panics if one is cut.
    fn split_records(chunk: &[u8]) -> usize {
        let mut pos = 0;
        let mut n = 0;
        while pos < chunk.len() {
            let len = u32::from_le_bytes(chunk[pos..pos + 4].try_into().unwrap()) as usize;
            pos += len;
            n += 1;
        }
        assert_eq!(pos, chunk.len(), "a record was split across chunks");
        n
    }

    #[test]
    fn record_chunks_cut_only_between_records_and_resync_after_edits() {
        let recs = records(11, 6000);
        let a = record_chunks(&recs);
        assert_eq!(a.concat(), recs.concat());
        assert_eq!(
            a.iter().map(|c| split_records(c)).sum::<usize>(),
            recs.len()
        );
        let max = ChunkerParams::BSON.max_size as usize;
        assert!(a.iter().all(|c| c.len() < max + 600));
        let avg = recs.concat().len() / a.len();
        assert!((16 << 10..=128 << 10).contains(&avg), "average {avg}");
        let mut edited = recs.clone();
        edited[3000][10] ^= 1;
        let b = record_chunks(&edited);
        let old: std::collections::HashSet<_> = a.iter().collect();
        let changed = b.iter().filter(|c| !old.contains(c)).count();
        assert!(changed <= 2, "one edited record changes {changed} chunks");
        assert!(record_chunks(&[]).is_empty());
    }
}
