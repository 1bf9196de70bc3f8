//! Per-thread memos of the encoder's pure steps, so that a value or a token
//! seen before is not hashed again.
//!
//! Everything the encoder computes before the record-level hardening depends
//! only on the schema, the secret and the input: a token's bit positions on
//! its feature, its bytes (salt prefix included) and `k`; a whole feature's
//! bits on its raw value and the raw value of its salt's source. Identifier
//! vocabularies are small (a few thousand bigrams per name field, a hundred
//! positional digits), so each feature gets two memos, kept by each thread:
//!
//! * values: raw value (and salt source) → the filter words the feature sets,
//!   stored sparsely (see [`push_sparse`]);
//! * tokens: salted token bytes → its bit positions for the largest `k` asked
//!   so far (every scheme's positions for a smaller `k` are a prefix).
//!
//! Each memo is bounded in bytes and cleared when full, and pauses itself for
//! a while when fewer than a quarter of its look-ups hit (unique values such
//! as register numbers), so that it costs little where it cannot help. The
//! memos only ever hold identifier values in the site's memory: nothing here
//! is written or logged, `Debug` shows sizes only, and keys and values are
//! overwritten with zeros when a memo is cleared or dropped. The encoder hands
//! on exactly the bits it would compute without them.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// The FxHash multiplier (as in rustc): fast and good enough for short keys
/// that come from the site's own data.
const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A fast non-cryptographic hasher for the memo tables, eight bytes at a time.
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and its tag from the
        // top seven: the rotation brings the well-mixed high bits down.
        self.hash.rotate_left(26)
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// Where a memo's values for one key lie in its arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    start: u32,
    len: u32,
}

impl Run {
    /// How many values the run holds.
    pub fn len(self) -> usize {
        self.len as usize
    }
}

/// Bytes counted for each entry on top of its key and values: the table slot,
/// the key's allocation header and rounding.
const ENTRY_OVERHEAD: usize = 48;
/// Look-ups per window of the hit-rate check.
const WINDOW: u32 = 1024;
/// Look-ups a memo sits out after a window with too few hits.
const PAUSE: u32 = 32 * WINDOW;

/// Hit-rate bookkeeping of one memo.
#[derive(Debug, Default)]
struct Policy {
    lookups: u32,
    hits: u32,
    paused: u32,
}

impl Policy {
    #[inline]
    fn active(&mut self) -> bool {
        if self.paused == 0 {
            true
        } else {
            self.paused -= 1;
            false
        }
    }

    #[inline]
    fn record(&mut self, hit: bool) {
        self.lookups += 1;
        self.hits += u32::from(hit);
        if self.lookups == WINDOW {
            if self.hits * 4 < self.lookups {
                self.paused = PAUSE;
            }
            self.lookups = 0;
            self.hits = 0;
        }
    }
}

/// A bounded memo from byte strings to runs of `T` kept in one arena.
pub(super) struct Memo<T: Copy + Default> {
    map: HashMap<Box<[u8]>, Run, FxBuild>,
    arena: Vec<T>,
    /// Bytes counted so far (replaced runs stay counted until the next clear).
    bytes: usize,
    cap: usize,
    policy: Policy,
}

impl<T: Copy + Default> fmt::Debug for Memo<T> {
    /// Sizes only: the keys are identifier values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.map.len())
            .field("bytes", &self.bytes)
            .field("cap", &self.cap)
            .finish()
    }
}

impl<T: Copy + Default> Memo<T> {
    /// An empty memo that holds about `cap` bytes at most (0: never stores).
    pub fn new(cap: usize) -> Memo<T> {
        Memo {
            map: HashMap::default(),
            arena: Vec::new(),
            bytes: 0,
            cap,
            policy: Policy::default(),
        }
    }

    /// Whether to look this key up (false while the memo is off or paused).
    #[inline]
    pub fn active(&mut self) -> bool {
        self.cap > 0 && self.policy.active()
    }

    /// The run stored for `key`, if any; counts towards the hit rate.
    #[inline]
    pub fn lookup(&mut self, key: &[u8]) -> Option<Run> {
        let run = self.map.get(key).copied();
        self.policy.record(run.is_some());
        run
    }

    /// The values of a run returned by this memo since its last clear.
    #[inline]
    pub fn get(&self, run: Run) -> &[T] {
        &self.arena[run.start as usize..(run.start + run.len) as usize]
    }

    /// Stores the values that `fill` appends to the arena under `key`
    /// (replacing what `key` had) and returns their run. Clears the memo
    /// first when it is full, so it may exceed its cap by one entry.
    pub fn store(&mut self, key: &[u8], fill: impl FnOnce(&mut Vec<T>)) -> Run {
        if self.bytes >= self.cap || self.arena.len() >= u32::MAX as usize / 2 {
            self.clear();
        }
        let start = self.arena.len();
        fill(&mut self.arena);
        let run = Run {
            start: start as u32,
            len: (self.arena.len() - start) as u32,
        };
        self.bytes += run.len() * size_of::<T>();
        match self.map.get_mut(key) {
            Some(old) => *old = run,
            None => {
                self.bytes += key.len() + ENTRY_OVERHEAD;
                self.map.insert(Box::from(key), run);
            }
        }
        run
    }

    /// Forgets everything, overwriting keys and values with zeros first.
    pub fn clear(&mut self) {
        for (mut key, _) in self.map.drain() {
            key.fill(0);
            std::hint::black_box(&key);
        }
        self.arena.fill(T::default());
        std::hint::black_box(&self.arena);
        self.arena.clear();
        self.bytes = 0;
    }
}

impl<T: Copy + Default> Drop for Memo<T> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The two memos of one feature.
#[derive(Debug)]
pub(super) struct FeatureMemos {
    /// Raw value (and salt source) → sparse filter words.
    pub values: Memo<u64>,
    /// Salted token bytes → bit positions.
    pub tokens: Memo<u32>,
}

/// The memos of every encoded feature of one encoder, on one thread.
#[derive(Debug)]
pub(super) struct Memos {
    pub features: Vec<FeatureMemos>,
}

impl Memos {
    /// Memos for `features` encoded features sharing `budget` bytes.
    pub fn new(features: usize, budget: usize) -> Memos {
        let each = budget / (2 * features.max(1));
        Memos {
            features: (0..features)
                .map(|_| FeatureMemos {
                    values: Memo::new(each),
                    tokens: Memo::new(each),
                })
                .collect(),
        }
    }
}

/// Appends the non-zero words of `words` to `out` as groups of up to 64
/// words: the group's index, a bitmap of its non-zero words, then those words.
pub(super) fn push_sparse(words: &[u64], out: &mut Vec<u64>) {
    for (g, group) in words.chunks(64).enumerate() {
        let mut bitmap = 0u64;
        for (i, &w) in group.iter().enumerate() {
            bitmap |= u64::from(w != 0) << i;
        }
        if bitmap != 0 {
            out.push(g as u64);
            out.push(bitmap);
            out.extend(group.iter().copied().filter(|&w| w != 0));
        }
    }
}

/// ORs words stored by [`push_sparse`] into `words`.
#[inline]
pub(super) fn or_sparse(sparse: &[u64], words: &mut [u64]) {
    let mut i = 0;
    while i < sparse.len() {
        let base = sparse[i] as usize * 64;
        let mut bitmap = sparse[i + 1];
        i += 2;
        while bitmap != 0 {
            let w = bitmap.trailing_zeros() as usize;
            words[base + w] |= sparse[i];
            i += 1;
            bitmap &= bitmap - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_words_round_trip() {
        for n in [1usize, 16, 64, 65, 200] {
            let words: Vec<u64> = (0..n as u64)
                .map(|i| if i % 3 == 1 { 0 } else { i * 0x9E37_79B9 + 1 })
                .collect();
            let mut sparse = Vec::new();
            push_sparse(&words, &mut sparse);
            let mut back = vec![0u64; n];
            or_sparse(&sparse, &mut back);
            assert_eq!(back, words, "n = {n}");
        }
        let mut sparse = Vec::new();
        push_sparse(&[0; 10], &mut sparse);
        assert!(sparse.is_empty());
    }

    fn stored(m: &mut Memo<u32>, key: &[u8]) -> Option<Vec<u32>> {
        let run = m.lookup(key)?;
        Some(m.get(run).to_vec())
    }

    #[test]
    fn memo_stores_replaces_and_clears_when_full() {
        let mut m: Memo<u32> = Memo::new(4 * (ENTRY_OVERHEAD + 8));
        assert!(m.active());
        assert_eq!(m.lookup(b"ab"), None);
        let run = m.store(b"ab", |a| a.extend([1, 2, 3]));
        assert_eq!(stored(&mut m, b"ab").unwrap(), [1, 2, 3]);
        assert_eq!(run.len(), 3);
        let longer = m.store(b"ab", |a| a.extend([1, 2, 3, 4, 5]));
        assert_eq!(stored(&mut m, b"ab").unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(longer.len(), 5);
        // A different key with the same hash-relevant prefix is another entry.
        assert_eq!(m.lookup(b"ab\0"), None);
        for i in 0..10u8 {
            m.store(&[i; 3], |a| a.push(u32::from(i)));
            assert!(m.bytes <= m.cap + 3 + 4 + ENTRY_OVERHEAD, "{m:?}");
        }
        assert_eq!(stored(&mut m, &[9; 3]).unwrap(), [9]);
        assert!(m.lookup(b"ab").is_none(), "cleared when full");
        m.store(b"dupont", |a| a.push(7));
        let shown = format!("{m:?}");
        assert!(
            shown.contains("entries") && !shown.contains("dupont") && !shown.contains("100"),
            "{shown}"
        );
    }

    #[test]
    fn memo_pauses_when_look_ups_miss() {
        let mut m: Memo<u32> = Memo::new(1 << 30);
        for i in 0..WINDOW {
            assert!(m.active());
            let key = i.to_le_bytes();
            assert!(m.lookup(&key).is_none());
            m.store(&key, |a| a.push(i));
        }
        assert!(!m.active(), "paused after a window of misses");
        for _ in 1..PAUSE {
            assert!(!m.active());
        }
        assert!(m.active(), "back after the pause");
        // Hits keep it on.
        let mut hot: Memo<u32> = Memo::new(1 << 30);
        hot.store(b"x", |a| a.push(1));
        for _ in 0..3 * WINDOW {
            assert!(hot.active());
            assert!(hot.lookup(b"x").is_some());
        }
    }

    #[test]
    fn fx_hasher_spreads_short_keys() {
        use std::hash::BuildHasher;
        let build = FxBuild::default();
        let mut buckets = [0u32; 64];
        for a in b'a'..=b'z' {
            for b in b'a'..=b'z' {
                buckets[(build.hash_one([a, b].as_slice()) & 63) as usize] += 1;
            }
        }
        // 676 keys over 64 buckets: about 10.6 each.
        assert!(buckets.iter().all(|&c| (2..30).contains(&c)), "{buckets:?}");
    }
}
