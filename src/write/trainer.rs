//! Training zstd dictionaries during a backup, for small data blobs (at most
//! [`SMALL_BLOB`] bytes: files of a few KiB compress poorly one by one, and well with a
//! dictionary trained on their like).
//!
//! The packer offers every new small data blob to the [`Trainer`]. While it samples, the
//! trainer holds the blobs back (not packed yet, at most [`Limits::sample_bytes`] bytes and
//! [`Limits::sample_blobs`] blobs); once it has enough, one caller trains a dictionary from
//! them (zstd's trainer) while the others' blobs are held back too (up to 2 MiB), then go on
//! with the current dictionary or none. The dictionary is kept only if it compresses the
//! samples held out of training (every 8th) at least 5 % smaller than both plain zstd and
//! the dictionary in use; then it is stored and the held-back samples are sealed with it, so
//! nothing is stored twice. The trainer then watches the ratio new small blobs achieve: when
//! a window of [`Limits::window_bytes`] compresses 1.5× worse than the dictionary did on its
//! held-out samples, and plain zstd does at least 2/3 as well on the window's probes as on
//! those samples (so the loss is not data that became incompressible, which no dictionary
//! wins back), it samples again. At most
//! [`MAX_TRAININGS`] trainings per backup.
use crate::repo::blob::{self, EncoderDict};
use crate::repo::dictionary::{self, DictId, Dictionary};
use crate::repo::id::{BlobId, Id};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Data blobs up to this size are compressed with dictionaries (and sampled for them).
pub(crate) const SMALL_BLOB: usize = 128 * 1024;
/// Trainings per backup (per packer), at most.
pub(crate) const MAX_TRAININGS: u32 = 3;
/// The largest dictionary trained: zstd's default size (larger ones measured no better).
const MAX_DICT_SIZE: usize = 110 * 1024;
/// A dictionary must make the held-out samples at least this much smaller (percent).
const MIN_GAIN_PERCENT: u64 = 5;
/// One sample in this many (the last ones taken) is held out of training to measure it.
const HOLD_OUT_EVERY: usize = 8;
/// While one caller trains, small blobs up to this many bytes are held back too, to be
/// sealed with the new dictionary; later ones are sealed with the one in use.
const HELD_WHILE_TRAINING: usize = 2 << 20;
/// One small blob in this many sealed with a dictionary is also compressed without it, to
/// see how much the dictionary still saves.
const PROBE_EVERY: u64 = 8;

/// How much the trainer samples and watches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub sample_blobs: usize,
    pub sample_bytes: usize,
    /// At the end of a backup, held-back samples are trained on if at least this many.
    pub min_samples: usize,
    pub window_bytes: u64,
    pub window_blobs: u64,
}

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits {
        sample_blobs: 4096,
        sample_bytes: 8 << 20,
        min_samples: 256,
        window_bytes: 16 << 20,
        window_blobs: u64::MAX,
    };

    /// The defaults, or with `STRATA_DICTIONARY_TEST_BLOBS=N` (for tests): train after N
    /// small blobs and judge a dictionary on windows of N blobs.
    pub(crate) fn from_env() -> Limits {
        let n = std::env::var("STRATA_DICTIONARY_TEST_BLOBS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n >= 16);
        match n {
            Some(n) => Limits {
                sample_blobs: n,
                sample_bytes: Limits::DEFAULT.sample_bytes,
                min_samples: n.min(Limits::DEFAULT.min_samples),
                window_bytes: u64::MAX,
                window_blobs: n as u64,
            },
            None => Limits::DEFAULT,
        }
    }
}

/// The dictionary new small blobs are compressed with.
pub struct Current {
    pub enc: EncoderDict,
    /// What it achieved on its held-out samples (plaintext per stored byte × 1000).
    pub ratio: u32,
    /// What plain zstd achieved on the same samples.
    pub plain_ratio: u32,
}

/// Blobs held back for training, back to back.
#[derive(Default)]
pub struct Samples {
    ids: Vec<BlobId>,
    sizes: Vec<usize>,
    data: Vec<u8>,
}

impl Samples {
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn push(&mut self, id: BlobId, plain: &[u8]) {
        self.ids.push(id);
        self.sizes.push(plain.len());
        self.data.extend_from_slice(plain);
    }

    /// The samples with their ids, in the order they were offered.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (BlobId, &[u8])> {
        let mut start = 0;
        self.ids.iter().zip(&self.sizes).map(move |(id, len)| {
            let s = &self.data[start..start + len];
            start += len;
            (*id, s)
        })
    }
}

enum Phase {
    /// Compressing with the current dictionary (or none), watching the ratio.
    Using,
    Sampling(Samples),
    /// One caller is training; the others' blobs are held back (up to
    /// [`HELD_WHILE_TRAINING`] bytes), then compressed with the current dictionary.
    Training(Samples),
}

struct State {
    current: Option<Arc<Current>>,
    phase: Phase,
    /// What the blobs of the current window took.
    window: Window,
    trainings: u32,
    /// Names of the repository's dictionaries by id, to refuse a colliding id.
    known: HashMap<DictId, Vec<Id>>,
}

/// What the packer does with a small blob it offered.
pub(crate) enum Offer {
    /// The trainer keeps it: it is sealed with the samples.
    Held,
    /// Seal it now with this dictionary (or plain zstd).
    Seal(Option<Arc<Current>>),
    /// The sample set is full: the caller trains on it ([`Trainer::train`]) and seals the
    /// samples (this blob is the last of them).
    Train(Samples),
}

/// The training state of one backup's packer.
pub(crate) struct Trainer {
    limits: Limits,
    level: i32,
    state: Mutex<State>,
    /// Blobs observed, to pick the probes.
    observed: AtomicU64,
}

impl Trainer {
    /// A trainer starting with `current` (the newest stored dictionary, if any) and the
    /// repository's dictionaries `known`; without one it samples at once.
    pub(crate) fn new(
        limits: Limits,
        level: i32,
        current: Option<Arc<Current>>,
        known: HashMap<DictId, Vec<Id>>,
    ) -> Trainer {
        let phase = match current {
            Some(_) => Phase::Using,
            None => Phase::Sampling(Samples::default()),
        };
        Trainer {
            limits,
            level,
            observed: AtomicU64::new(0),
            state: Mutex::new(State {
                current,
                phase,
                window: Window::default(),
                trainings: 0,
                known,
            }),
        }
    }

    /// Offers the new small data blob `id`.
    pub(crate) fn offer(&self, id: BlobId, plain: &[u8]) -> Offer {
        let mut st = self.state.lock().expect("trainer lock");
        let current = st.current.clone();
        let samples = match &mut st.phase {
            Phase::Using => return Offer::Seal(current),
            Phase::Training(held) if held.data.len() + plain.len() > HELD_WHILE_TRAINING => {
                return Offer::Seal(current);
            }
            Phase::Training(held) => {
                held.push(id, plain);
                return Offer::Held;
            }
            Phase::Sampling(samples) => samples,
        };
        samples.push(id, plain);
        let full = samples.len() >= self.limits.sample_blobs
            || samples.data.len() >= self.limits.sample_bytes;
        if !full {
            return Offer::Held;
        }
        match std::mem::replace(&mut st.phase, Phase::Training(Samples::default())) {
            Phase::Sampling(s) => Offer::Train(s),
            _ => unreachable!("sampling above"),
        }
    }

    /// Records a small blob `plain` sealed with the current dictionary into `stored`
    /// bytes; one blob in [`PROBE_EVERY`] is also compressed without it. At the end of a
    /// window where the dictionary no longer fits (see [`Window::drifted`]), sampling starts
    /// again.
    pub(crate) fn observe(&self, plain: &[u8], stored: u64) {
        let probe = self
            .observed
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PROBE_EVERY);
        let plain_size =
            probe.then(|| blob::compress(plain, self.level).map_or(plain.len(), |c| c.len()));
        let mut st = self.state.lock().expect("trainer lock");
        if !matches!(st.phase, Phase::Using) {
            return;
        }
        st.window
            .add(plain.len() as u64, stored, plain_size.map(|p| p as u64));
        let w = st.window;
        if w.raw < self.limits.window_bytes && w.blobs < self.limits.window_blobs {
            return;
        }
        st.window = Window::default();
        let drifted = st.current.as_ref().is_some_and(|c| w.drifted(c));

        if drifted && st.trainings < MAX_TRAININGS {
            st.phase = Phase::Sampling(Samples::default());
        }
    }

    /// The samples still held back (at the end of a backup): to train on if there are
    /// enough (Ok), else to seal as they are (Err).
    pub(crate) fn take_held(&self) -> Option<Result<Samples, Samples>> {
        let mut st = self.state.lock().expect("trainer lock");
        let Phase::Sampling(samples) = &mut st.phase else {
            return None;
        };
        if samples.is_empty() {
            return None;
        }
        let samples = std::mem::take(samples);
        match samples.len() >= self.limits.min_samples {
            true => {
                st.phase = Phase::Training(Samples::default());
                Some(Ok(samples))
            }
            false => Some(Err(samples)),
        }
    }

    /// The current dictionary.
    pub(crate) fn current(&self) -> Option<Arc<Current>> {
        self.state.lock().expect("trainer lock").current.clone()
    }

    /// Trains a dictionary on `samples` and keeps it if it is good enough and its id is
    /// free: `store` saves it (and may fail, which ends the backup). Returns the dictionary
    /// to seal the samples and later blobs with, and the blobs held back meanwhile (to seal
    /// with it too).
    pub(crate) fn train<E>(
        &self,
        samples: &Samples,
        store: impl FnOnce(&Id, &[u8]) -> Result<(), E>,
        key: &crate::repo::crypto::MasterKey,
    ) -> Result<(Option<Arc<Current>>, Samples), E> {
        let current = self.current();
        let trained = evaluate(samples, self.level, current.as_deref()).map(|d| {
            let (name, sealed) = d.seal(key);
            (d, name, sealed)
        });
        let mut st = self.state.lock().expect("trainer lock");
        st.trainings += 1;
        st.window = Window::default();
        let held = match std::mem::replace(&mut st.phase, Phase::Using) {
            Phase::Training(held) => held,
            _ => Samples::default(),
        };
        let kept = trained.and_then(|(d, name, sealed)| {
            let id = dictionary::id_of(&name);
            let taken = st
                .known
                .get(&id)
                .is_some_and(|n| n.iter().any(|o| *o != name));
            let enc = EncoderDict::new(id, &d.bytes, self.level).ok()?;
            (id != 0 && !taken).then_some((d, name, sealed, enc))
        });
        let Some((d, name, sealed, enc)) = kept else {
            return Ok((st.current.clone(), held));
        };
        store(&name, &sealed)?;
        st.known
            .entry(dictionary::id_of(&name))
            .or_default()
            .push(name);
        let current = Arc::new(Current {
            enc,
            ratio: d.dict_ratio,
            plain_ratio: d.plain_ratio,
        });
        st.current = Some(current.clone());
        Ok((Some(current), held))
    }
}

/// What the small blobs sealed with the current dictionary took since the window began;
/// the probes are the blobs also compressed without it.
#[derive(Clone, Copy, Default, Debug)]
struct Window {
    raw: u64,
    stored: u64,
    blobs: u64,
    probe_raw: u64,
    probe_plain: u64,
}

impl Window {
    fn add(&mut self, raw: u64, stored: u64, plain: Option<u64>) {
        self.raw += raw;
        self.stored += stored;
        self.blobs += 1;
        if let Some(plain) = plain {
            self.probe_raw += raw;
            self.probe_plain += plain;
        }
    }

    /// Whether `current` no longer fits: the window compressed 1.5× worse than it did in
    /// training, and not because the data became less compressible (plain zstd does on the
    /// probes at least 2/3 as well as on the training samples; a dictionary cannot win back
    /// what random bytes cost).
    fn drifted(&self, current: &Current) -> bool {
        let worse =
            ratio(self.raw, self.stored).saturating_mul(3) < current.ratio.saturating_mul(2);
        let plain = ratio(self.probe_raw, self.probe_plain);
        worse && plain.saturating_mul(3) >= current.plain_ratio.saturating_mul(2)
    }
}

/// Plaintext bytes per stored byte × 1000.
fn ratio(raw: u64, stored: u64) -> u32 {
    (raw.saturating_mul(1000) / stored.max(1)).min(u32::MAX as u64) as u32
}

/// Trains on all but every [`HOLD_OUT_EVERY`]th of `samples` and measures on those: the
/// dictionary if it beats both plain zstd at `level` and the `current` dictionary by
/// [`MIN_GAIN_PERCENT`]. (Held-out samples interleaved with the training ones measure the
/// same mix of data the dictionary is trained for.)
pub fn evaluate(samples: &Samples, level: i32, current: Option<&Current>) -> Option<Dictionary> {
    let held_out = |i: usize| i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1;
    let (mut train, mut sizes) = (Vec::with_capacity(samples.data.len()), Vec::new());
    for (_, s) in samples.iter().enumerate().filter(|(i, _)| !held_out(*i)) {
        train.extend_from_slice(s.1);
        sizes.push(s.1.len());
    }
    if sizes.len() < 8 || sizes.len() == samples.len() {
        return None;
    }
    let max_size = (train.len() / 16).clamp(4096, MAX_DICT_SIZE);
    let bytes = zstd::dict::from_continuous(&train, &sizes, max_size).ok()?;
    drop(train);
    let enc = EncoderDict::new(0, &bytes, level).ok()?;
    let (mut raw, mut plain, mut with_dict, mut with_current) = (0u64, 0u64, 0u64, 0u64);
    for (_, (_, s)) in samples.iter().enumerate().filter(|(i, _)| held_out(*i)) {
        let size = |c: Option<Vec<u8>>| c.map_or(s.len(), |c| c.len()) as u64;
        raw += s.len() as u64;
        let p = size(blob::compress(s, level));
        plain += p;
        with_dict += size(blob::compress_with(s, &enc));
        with_current += current.map_or(p, |c| size(blob::compress_with(s, &c.enc)).min(p));
    }
    if with_dict * 100 > plain.min(with_current) * (100 - MIN_GAIN_PERCENT) {
        return None;
    }
    Some(Dictionary {
        created: chrono::Utc::now()
            .timestamp_nanos_opt()
            .map_or(0, |n| n.max(0) as u64),
        dict_ratio: ratio(raw, with_dict),
        plain_ratio: ratio(raw, plain),
        bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::crypto::MasterKey;

    /// Small text files of one "project": shared boilerplate, varying words.
    pub(crate) fn text_file(kind: u32, i: u32) -> Vec<u8> {
        let words = match kind {
            0 => ["function", "return", "variable", "module", "struct", "impl"],
            1 => ["Mountain", "river", "valley", "forest", "meadow", "glacier"],
            _ => [
                "quantum", "photon", "electron", "neutrino", "boson", "lepton",
            ],
        };
        // A template of the kind's own (what its dictionary learns), then varying words.
        let mut t = kind.wrapping_mul(2_246_822_519).wrapping_add(1);
        let template: String = (0..1200)
            .map(|_| {
                t ^= t << 13;
                t ^= t >> 17;
                t ^= t << 5;
                (b'a' + (t % 27) as u8).min(b'z') as char
            })
            .collect();
        let mut out = format!(
            "<!DOCTYPE html><html><head><title>{} {i}</title><link rel=stylesheet href=../style.css></head><body><nav>{}</nav>",
            words[0],
            words.join(" | ")
        );
        let mut x = i.wrapping_mul(2_654_435_761).wrapping_add(kind);
        for n in 0..300 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push_str(words[(x % 6) as usize]);
            out.push(if n % 12 == 11 { '\n' } else { ' ' });
            if x.is_multiple_of(7) {
                out.push_str(&format!("{} ", x % 1000));
            }
        }
        out.push_str(&template);
        out.push_str("</body></html>\n");
        out.into_bytes()
    }

    fn samples(kind: u32, n: u32) -> Samples {
        let t = Trainer::new(
            Limits {
                sample_blobs: n as usize,
                ..Limits::DEFAULT
            },
            3,
            None,
            HashMap::new(),
        );
        for i in 0..n {
            let plain = text_file(kind, i);
            match t.offer(BlobId(Id::hash_of(&plain)), &plain) {
                Offer::Held => {}
                Offer::Train(s) => return s,
                Offer::Seal(_) => panic!("sampling"),
            }
        }
        panic!("never full")
    }

    #[test]
    fn a_dictionary_is_kept_only_when_it_beats_plain_zstd() {
        let s = samples(0, 200);
        assert_eq!(s.len(), 200);
        let d = evaluate(&s, 3, None).expect("text files gain from a dictionary");
        assert!(d.dict_ratio > d.plain_ratio * 105 / 100, "{d:?}");
        let mut random = Samples::default();
        for i in 0..200u32 {
            let mut b = vec![0u8; 2000];
            blake3::Hasher::new()
                .update(&i.to_le_bytes())
                .finalize_xof()
                .fill(&mut b);
            random.push(BlobId(Id::hash_of(&b)), &b);
        }
        assert!(
            evaluate(&random, 3, None).is_none(),
            "random data gains nothing"
        );
    }

    /// A trainer using a dictionary trained on `kind`, judging windows of `window` blobs.
    fn using(kind: u32, window: u64) -> Trainer {
        let d = evaluate(&samples(kind, 200), 3, None).unwrap();
        let current = Current {
            enc: EncoderDict::new(7, &d.bytes, 3).unwrap(),
            ratio: d.dict_ratio,
            plain_ratio: d.plain_ratio,
        };
        let limits = Limits {
            window_blobs: window,
            ..Limits::DEFAULT
        };
        Trainer::new(limits, 3, Some(Arc::new(current)), HashMap::new())
    }

    /// Offers `plain` and, when it is to be sealed with the dictionary, observes that.
    fn offer_and_observe(t: &Trainer, plain: &[u8]) -> bool {
        match t.offer(BlobId(Id::hash_of(plain)), plain) {
            Offer::Seal(Some(c)) => {
                let len = blob::compress_with(plain, &c.enc).map_or(plain.len(), |c| c.len());
                t.observe(plain, len as u64);
                true
            }
            _ => false,
        }
    }

    #[test]
    fn a_window_of_incompressible_changes_does_not_start_training() {
        // Pages of the dictionary's own kind with random bytes written into them compress
        // far worse than in training, but plain zstd does far worse on them too.
        let t = using(0, 64);
        for i in 0..200u32 {
            let mut plain = text_file(0, 5000 + i);
            let mut noise = vec![0u8; plain.len() / 2];
            blake3::Hasher::new()
                .update(&i.to_le_bytes())
                .finalize_xof()
                .fill(&mut noise);
            plain.splice(100..100, noise);
            assert!(
                offer_and_observe(&t, &plain),
                "blob {i} was held for training"
            );
        }
        // Another kind of text in the same windows does start it.
        let t = using(0, 64);
        let sampling = (0..200u32).any(|i| !offer_and_observe(&t, &text_file(1, i)));
        assert!(sampling, "new text of another kind is sampled");
    }

    #[test]
    fn a_dictionary_no_better_than_the_one_in_use_is_not_kept() {
        let s = samples(0, 200);
        let d = evaluate(&s, 3, None).unwrap();
        let current = Current {
            enc: EncoderDict::new(7, &d.bytes, 3).unwrap(),
            ratio: d.dict_ratio,
            plain_ratio: d.plain_ratio,
        };
        assert!(
            evaluate(&s, 3, Some(&current)).is_none(),
            "retrained on the same data"
        );
        assert!(evaluate(&samples(1, 200), 3, Some(&current)).is_some());
    }

    #[test]
    fn drift_starts_sampling_again_and_trainings_are_capped() {
        let key = MasterKey::random();
        let limits = Limits {
            sample_blobs: 100,
            window_blobs: 50,
            ..Limits::DEFAULT
        };
        let t = Trainer::new(limits, 3, None, HashMap::new());
        let mut stored = Vec::new();
        let mut trained = 0;
        for round in 0..5u32 {
            // Offers are not interleaved with training here: the trainer trains once the
            // round has been offered, so blobs after a full sample set are held.
            let mut s = None;
            for i in 0..100 {
                let plain = text_file(round % 3, round * 1000 + i);
                match t.offer(BlobId(Id::hash_of(&plain)), &plain) {
                    Offer::Train(samples) => s = Some(samples),
                    Offer::Held => {}
                    Offer::Seal(Some(c)) => {
                        let len =
                            blob::compress_with(&plain, &c.enc).map_or(plain.len(), |c| c.len());
                        t.observe(&plain, len as u64);
                    }
                    Offer::Seal(None) => panic!("no dictionary while not sampling"),
                }
            }
            if let Some(s) = s {
                let store = |name: &Id, _: &[u8]| {
                    stored.push(*name);
                    Ok::<(), ()>(())
                };
                let (current, held) = t.train(&s, store, &key).unwrap();
                assert!(current.is_some());
                assert!(held.len() <= 50, "blobs offered while training wait for it");
                trained += 1;
            }
        }
        assert!((2..=MAX_TRAININGS as usize).contains(&trained), "{trained}");
        assert_eq!(stored.len(), trained);
    }
}
