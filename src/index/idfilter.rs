//! A Bloom filter of blob ids, so that saving a blob the repository cannot hold costs no
//! index query. Ids are keyed BLAKE3 digests, uniform and unpredictable without the key, so
//! the filter takes its four bit positions straight from an id's bytes instead of hashing
//! it again (which is why this is not a general-purpose filter crate).
use crate::repo::id::BlobId;

/// Bits per id the filter is sized for: with four probes, a filter holding its capacity
/// answers "maybe" for about 1.2% of the ids it does not hold.
const BITS_PER_ID: usize = 10;

/// The smallest filter: 128 KiB, room for about 100,000 ids.
const MIN_BITS: usize = 1 << 20;

pub struct IdFilter {
    words: Vec<u64>,
    mask: u64,
    len: usize,
    capacity: usize,
}

impl IdFilter {
    /// An empty filter with room for at least `capacity` ids.
    pub fn with_capacity(capacity: usize) -> IdFilter {
        let bits = capacity
            .saturating_mul(BITS_PER_ID)
            .next_power_of_two()
            .max(MIN_BITS);
        IdFilter {
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
            len: 0,
            capacity: bits / BITS_PER_ID,
        }
    }

    pub fn insert(&mut self, id: &BlobId) {
        for bit in bit_positions(self.mask, id) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    /// False only when `id` was never inserted.
    pub fn may_contain(&self, id: &BlobId) -> bool {
        bit_positions(self.mask, id).all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// More ids inserted than the filter was sized for: its "maybe" answers grow common.
    pub(crate) fn is_full(&self) -> bool {
        self.len > self.capacity
    }
}

/// The four bits of `id`: one from each 8 bytes of the digest.
fn bit_positions(mask: u64, id: &BlobId) -> impl Iterator<Item = usize> + '_ {
    id.0.0
        .chunks_exact(8)
        .map(move |w| (u64::from_le_bytes(w.try_into().expect("8 bytes")) & mask) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;

    fn id(n: u32) -> BlobId {
        BlobId(Id(*blake3::hash(&n.to_le_bytes()).as_bytes()))
    }

    #[test]
    fn inserted_ids_are_always_found_and_most_others_are_not() {
        let mut f = IdFilter::with_capacity(200_000);
        for n in 0..200_000 {
            f.insert(&id(n));
        }
        assert!(!f.is_full());
        assert!((0..200_000).all(|n| f.may_contain(&id(n))));
        let maybe = (200_000..300_000)
            .filter(|&n| f.may_contain(&id(n)))
            .count();
        assert!(
            maybe < 2_000,
            "{maybe} of 100,000 absent ids answered maybe"
        );
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_a_small_one_fills() {
        let mut f = IdFilter::with_capacity(0);
        assert_eq!(f.words.len() * 64, MIN_BITS);
        assert!((0..1000).all(|n| !f.may_contain(&id(n))));
        for n in 0..(MIN_BITS / BITS_PER_ID) as u32 {
            f.insert(&id(n));
        }
        assert!(!f.is_full());
        f.insert(&id(u32::MAX));
        assert!(f.is_full());
    }
}
