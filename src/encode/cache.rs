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

use std::fmt;

/// The FxHash multiplier (as in rustc).
const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A fast non-cryptographic hash of a memo key: FxHash over the length and
/// eight-byte words (the last word, or for short keys two half words, read
/// overlapping, so no byte is copied), then a final mix so that the low bits,
/// which pick the slot, depend on every byte. Never 0, which marks an empty
/// slot. The keys come from the site's own data: no adversary to resist.
#[inline]
fn hash_key(key: &[u8]) -> u64 {
    let mut h = key.len() as u64;
    let mut add = |w: u64| h = (h.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    let n = key.len();
    let word = |at: usize| u64::from_le_bytes(key[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u64::from(u32::from_le_bytes(key[at..at + 4].try_into().expect("4")));
    if n >= 8 {
        for at in (0..n - 8).step_by(8) {
            add(word(at));
        }
        add(word(n - 8));
    } else if n >= 4 {
        add(half(0) | half(n - 4) << 32);
    } else if n > 0 {
        add(u64::from(key[0]) | u64::from(key[n / 2]) << 8 | u64::from(key[n - 1]) << 16);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^= h >> 32;
    h.max(1)
}

/// Byte-string equality without a call into `memcmp` (keys are short).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if p != q {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

/// Where a memo's values for one key lie in its arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// Look-ups per window of the hit-rate check.
const WINDOW: u32 = 1024;
/// Look-ups a memo sits out after a window with too few hits.
const PAUSE: u32 = 32 * WINDOW;
/// Slots of a memo's table when it first stores something.
const FIRST_SLOTS: usize = 64;

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

/// One slot of a memo's open-addressing table; `hash == 0` when empty.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    hash: u64,
    key_start: u32,
    key_len: u32,
    run: Run,
}

/// A bounded memo from byte strings to runs of `T`: a linear-probing table
/// whose keys lie in one byte arena and whose values in another, so a store
/// allocates nothing once the arenas have grown.
pub(super) struct Memo<T: Copy + Default> {
    slots: Vec<Slot>,
    entries: usize,
    keys: Vec<u8>,
    arena: Vec<T>,
    cap: usize,
    policy: Policy,
}

impl<T: Copy + Default> fmt::Debug for Memo<T> {
    /// Sizes only: the keys are identifier values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.entries)
            .field("bytes", &self.bytes())
            .field("cap", &self.cap)
            .finish()
    }
}

impl<T: Copy + Default> Memo<T> {
    /// An empty memo that holds about `cap` bytes at most, or one table of
    /// [`FIRST_SLOTS`] slots if that is more (0: never stores).
    pub fn new(cap: usize) -> Memo<T> {
        Memo {
            slots: Vec::new(),
            entries: 0,
            keys: Vec::new(),
            arena: Vec::new(),
            cap,
            policy: Policy::default(),
        }
    }

    /// Bytes in use: the table, the keys, and the values (replaced runs
    /// stay until the next clear).
    fn bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>() + self.keys.len() + self.arena.len() * size_of::<T>()
    }

    /// Whether to look this key up (false while the memo is off or paused).
    #[inline]
    pub fn active(&mut self) -> bool {
        self.cap > 0 && self.policy.active()
    }

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.hash == 0 {
                return Err(i);
            }
            if slot.hash == hash {
                let start = slot.key_start as usize;
                if same(&self.keys[start..start + slot.key_len as usize], key) {
                    return Ok(i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The run stored for `key`, if any; counts towards the hit rate.
    #[inline]
    pub fn lookup(&mut self, key: &[u8]) -> Option<Run> {
        let run = if self.entries == 0 {
            None
        } else {
            self.find(hash_key(key), key).ok().map(|i| self.slots[i].run)
        };
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
        let limit = u32::MAX as usize / 2;
        if self.bytes() >= self.cap || self.arena.len() >= limit || self.keys.len() >= limit {
            self.clear();
        }
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); FIRST_SLOTS];
        } else if 2 * (self.entries + 1) > self.slots.len() {
            self.grow();
        }
        let start = self.arena.len();
        fill(&mut self.arena);
        let run = Run {
            start: start as u32,
            len: (self.arena.len() - start) as u32,
        };
        let hash = hash_key(key);
        match self.find(hash, key) {
            Ok(i) => self.slots[i].run = run,
            Err(i) => {
                self.slots[i] = Slot {
                    hash,
                    key_start: self.keys.len() as u32,
                    key_len: key.len() as u32,
                    run,
                };
                self.keys.extend_from_slice(key);
                self.entries += 1;
            }
        }
        run
    }

    /// Doubles the table.
    fn grow(&mut self) {
        let bigger = vec![Slot::default(); 2 * self.slots.len()];
        let old = std::mem::replace(&mut self.slots, bigger);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.hash != 0) {
            let mut i = slot.hash as usize & mask;
            while self.slots[i].hash != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Forgets everything, overwriting keys, hashes and values with zeros.
    pub fn clear(&mut self) {
        self.keys.fill(0);
        std::hint::black_box(&self.keys);
        self.keys.clear();
        self.arena.fill(T::default());
        std::hint::black_box(&self.arena);
        self.arena.clear();
        self.slots.fill(Slot::default());
        std::hint::black_box(&self.slots);
        self.entries = 0;
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
        let mut m: Memo<u32> = Memo::new(FIRST_SLOTS * size_of::<Slot>() + 40);
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
            assert!(m.bytes() <= m.cap + 3 + 4, "{m:?}");
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
    fn key_hash_spreads_short_keys_and_equality_is_exact() {
        let mut buckets = [0u32; 64];
        for a in b'a'..=b'z' {
            for b in b'a'..=b'z' {
                buckets[(hash_key(&[a, b]) & 63) as usize] += 1;
            }
        }
        // 676 keys over 64 buckets: about 10.6 each.
        assert!(buckets.iter().all(|&c| (2..30).contains(&c)), "{buckets:?}");
        assert_ne!(hash_key(b"ab"), hash_key(b"ab\0"));
        assert!(same(b"0123456789", b"0123456789"));
        assert!(!same(b"0123456789", b"0123456788"));
        assert!(!same(b"01234567", b"0123456"));
        assert!(same(b"", b""));
    }

    #[test]
    fn memo_table_grows_and_finds_every_key() {
        let mut m: Memo<u32> = Memo::new(1 << 30);
        for i in 0..5000u32 {
            let key = format!("k{i}");
            m.store(key.as_bytes(), |a| a.push(i));
        }
        assert!(m.slots.len() >= 2 * m.entries);
        for i in 0..5000u32 {
            assert_eq!(stored(&mut m, format!("k{i}").as_bytes()).unwrap(), [i]);
        }
        assert!(stored(&mut m, b"k5000").is_none());
    }
}
