//! Per-thread memos of the encoder's pure steps, so that a value or a token
//! seen before is not hashed again.
//!
//! Everything the encoder computes before the record-level hardening depends
//! only on the schema, the secret and the input: a token's bit positions on
//! its feature, its bytes (salt prefix included) and `k`; a whole feature's
//! bits on its raw value and the raw value of its salt's source. Identifier
//! vocabularies are small (a few thousand bigrams per name field, a hundred
//! positional digits), so each feature gets these memos, kept by each thread:
//!
//! * values: raw value (and salt source) → the filter words the feature sets,
//!   stored sparsely (see [`push_sparse`]);
//! * tokens: salted token bytes → its bit positions for the largest `k` asked
//!   so far (every scheme's positions for a smaller `k` are a prefix);
//! * grams: the same for the unsalted positional unigrams and the bigrams of
//!   ASCII text, in a table indexed by their bytes (see [`Grams`]).
//!
//! The memos of one encoder on one thread share a budget of bytes (the
//! largest are cleared when it is exceeded), and a memo pauses itself for a
//! while when fewer than one in 64 of its look-ups hit (unique values such as
//! register numbers), so that it costs little where it cannot help. The memos
//! only ever hold identifier values in the site's memory: nothing here is
//! written or logged, `Debug` shows sizes only, and keys and values are
//! overwritten with zeros when a memo is cleared or dropped. The encoder hands
//! on exactly the bits it would compute without them.

use std::fmt;

use super::hashing::set_bit;
use crate::tokenize::AsciiGram;

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

/// Byte-string equality without a call into `memcmp` (keys are short): word
/// by word, the last word (or for short keys two half words) read
/// overlapping, as [`hash_key`] reads them.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4"));
    if n >= 8 {
        (0..n - 8).step_by(8).all(|at| word(a, at) == word(b, at))
            && word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        // Bytes 0, n/2 and n-1 are all of them.
        n == 0 || (a[0], a[n / 2], a[n - 1]) == (b[0], b[n / 2], b[n - 1])
    }
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
const WINDOW: u32 = 4096;
/// Look-ups a memo sits out after a window with too few hits.
const PAUSE: u32 = 16 * WINDOW;
/// A window with fewer than one hit in this many look-ups pauses the memo
/// (it keeps what it has, but neither looks up nor stores). A miss costs a
/// probe and a store, a hit saves hashing (and, for values, validation and
/// tokenising), so even a low hit rate pays, and a memo of a feature with
/// tens of thousands of values (dates of birth) starts with few hits while
/// it fills. Below this rate the values are unique (register numbers).
const MIN_HIT_RATE_INVERSE: u32 = 64;
/// Storing records between two checks of the budget, which may be exceeded
/// by what these records store (a few kilobytes each). Every record in unit
/// tests, so that the property tests clear memos as often as possible.
const RECORDS_PER_CHECK: u32 = if cfg!(test) { 1 } else { 16 };
/// Slots from which a memo's look-ups are worth fetching ahead: at least
/// 16k entries, whose table and stored words take several MiB (Febrl4's
/// 5000 surnames run faster without, 23k distinct surnames faster with).
const PREFETCH_MIN_SLOTS: usize = 32 * 1024;
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

    /// Counts a look-up; pauses after a window with too few hits.
    #[inline]
    fn record(&mut self, hit: bool) {
        self.lookups += 1;
        self.hits += u32::from(hit);
        if self.lookups == WINDOW {
            if self.hits * MIN_HIT_RATE_INVERSE < self.lookups {
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

/// A memo from byte strings to runs of `T`: a linear-probing table whose
/// keys lie in one byte arena and whose values in another, so a store
/// allocates nothing once the arenas have grown. Its size is bounded by the
/// [`Memos`] that holds it.
pub(super) struct Memo<T: Copy + Default> {
    slots: Vec<Slot>,
    entries: usize,
    keys: Vec<u8>,
    arena: Vec<T>,
    policy: Policy,
}

impl<T: Copy + Default> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            slots: Vec::new(),
            entries: 0,
            keys: Vec::new(),
            arena: Vec::new(),
            policy: Policy::default(),
        }
    }
}

impl<T: Copy + Default> fmt::Debug for Memo<T> {
    /// Sizes only: the keys are identifier values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.entries)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl<T: Copy + Default> Memo<T> {
    /// Bytes allocated: the table, the keys and the values (replaced runs
    /// stay until the next clear).
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + self.keys.capacity()
            + self.arena.capacity() * size_of::<T>()
    }

    /// Whether to look keys up now (false while paused).
    #[inline]
    pub fn active(&mut self) -> bool {
        self.policy.active()
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
            self.find(hash_key(key), key)
                .ok()
                .map(|i| self.slots[i].run)
        };
        self.policy.record(run.is_some());
        run
    }

    /// Whether the memo is active and too large to stay in a core's L2
    /// cache: fetching a smaller one ahead costs more than it saves.
    #[inline]
    pub fn worth_prefetching(&self) -> bool {
        self.slots.len() >= PREFETCH_MIN_SLOTS && self.policy.paused == 0
    }

    /// Starts fetching the slot where `key` would be, for a look-up soon.
    /// Counts nothing.
    #[inline]
    pub fn prefetch_slot(&self, key: &[u8]) {
        if let Some(mask) = self.slots.len().checked_sub(1) {
            prefetch(&self.slots[hash_key(key) as usize & mask]);
        }
    }

    /// Starts fetching the values of `run` (returned by this memo since its
    /// last clear; an older run is ignored or fetches what is there now), for
    /// a read soon. One hint per 64 bytes, and one for the last value, whose
    /// line the steps miss when the run does not start on a line.
    #[inline]
    pub fn prefetch_run(&self, run: Run) {
        if let Some(values) = self
            .arena
            .get(run.start as usize..(run.start + run.len) as usize)
        {
            let step = 64 / size_of::<T>().max(1);
            for value in values.iter().step_by(step).chain(values.last()) {
                prefetch(value);
            }
        }
    }

    /// The values of a run returned by this memo since its last clear.
    #[inline]
    pub fn get(&self, run: Run) -> &[T] {
        &self.arena[run.start as usize..(run.start + run.len) as usize]
    }

    /// Stores the values that `fill` appends to the arena under `key`
    /// (replacing what `key` had) and returns their run.
    pub fn store(&mut self, key: &[u8], fill: impl FnOnce(&mut Vec<T>)) -> Run {
        // Runs and keys are addressed with u32.
        let limit = u32::MAX as usize / 2;
        if self.arena.len() >= limit || self.keys.len() >= limit {
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
        let mut old = std::mem::replace(&mut self.slots, bigger);
        let mask = self.slots.len() - 1;
        for slot in old.iter().filter(|s| s.hash != 0) {
            let mut i = slot.hash as usize & mask;
            while self.slots[i].hash != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = *slot;
        }
        zero(&mut old);
    }

    /// Forgets everything and frees the memory, overwriting keys, hashes and
    /// values with zeros first.
    pub fn clear(&mut self) {
        zero(&mut std::mem::take(&mut self.keys));
        zero(&mut std::mem::take(&mut self.arena));
        zero(&mut std::mem::take(&mut self.slots));
        self.entries = 0;
    }
}

/// Hints the CPU to bring `value`'s cache line into every cache level. A hint
/// only: it changes no result.
#[inline]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only loads a line into the caches: it never faults
    // and changes no state the program sees. SSE is part of the x86-64
    // baseline, so the instruction exists on every x86-64 CPU.
    #[allow(unsafe_code)]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Overwrites a buffer with zeros (defaults) in a way the compiler keeps.
fn zero<T: Copy + Default>(buf: &mut Vec<T>) {
    buf.fill(T::default());
    std::hint::black_box(&*buf);
}

impl<T: Copy + Default> Drop for Memo<T> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The two memos of one feature.
#[derive(Debug, Default)]
pub(super) struct FeatureMemos {
    /// Raw value (and salt source) → sparse filter words.
    pub values: Memo<u64>,
    /// Salted token bytes → bit positions.
    pub tokens: Memo<u32>,
    /// The token memo of unsalted positional unigrams or bigrams of ASCII text.
    pub grams: Grams,
}

/// The memos of every encoded feature of one encoder, on one thread, within
/// one budget of bytes.
#[derive(Debug)]
pub(super) struct Memos {
    pub features: Vec<FeatureMemos>,
    budget: usize,
    /// Records that stored something since the budget was last checked.
    unchecked: u32,
}

impl Memos {
    /// Empty memos for `features` encoded features, sharing `budget` bytes.
    pub fn new(features: usize, budget: usize) -> Memos {
        Memos {
            features: (0..features).map(|_| FeatureMemos::default()).collect(),
            budget,
            unchecked: 0,
        }
    }

    /// Called after a record that stored something: every
    /// [`RECORDS_PER_CHECK`] such records, brings the memos back within the
    /// budget (runs handed out no longer matter then).
    #[inline]
    pub fn after_store(&mut self) {
        self.unchecked += 1;
        if self.unchecked >= RECORDS_PER_CHECK {
            self.unchecked = 0;
            self.enforce_budget();
        }
    }

    /// Bytes allocated by all the memos.
    pub fn bytes(&self) -> usize {
        self.features
            .iter()
            .map(|f| f.values.bytes() + f.tokens.bytes() + f.grams.bytes())
            .sum()
    }

    /// Brings the memos back within the budget by clearing the largest ones,
    /// which are those of the features with the most values.
    pub fn enforce_budget(&mut self) {
        while self.bytes() > self.budget {
            let largest = self
                .features
                .iter_mut()
                .flat_map(|f| {
                    [
                        (f.values.bytes(), &mut f.values as &mut dyn Clear),
                        (f.tokens.bytes(), &mut f.tokens as &mut dyn Clear),
                        (f.grams.bytes(), &mut f.grams as &mut dyn Clear),
                    ]
                })
                .max_by_key(|(bytes, _)| *bytes);
            match largest {
                Some((bytes, memo)) if bytes > 0 => memo.clear_memo(),
                _ => break,
            }
        }
    }
}

/// Positions from which positional unigrams have no slot in [`Grams`].
const UNIGRAM_POSITIONS: usize = 64;

/// Slots of a [`Grams`] table.
const GRAM_SLOTS: usize = 128 * 128;

/// The memory page of the operating system (4 KiB on the usual platforms),
/// the unit in which an allocated but untouched table takes memory.
const PAGE_BYTES: usize = 4096;

/// The slot of a gram in a [`Grams`] table; `None` for a positional unigram
/// at [`UNIGRAM_POSITIONS`] or further (text that long is rare in identifiers).
#[inline]
pub(super) fn gram_slot(gram: AsciiGram) -> Option<usize> {
    match gram {
        AsciiGram::Positional(index, byte) => {
            (index < UNIGRAM_POSITIONS).then(|| index * 128 + usize::from(byte))
        }
        AsciiGram::Bigram(first, second) => Some(usize::from(first) * 128 + usize::from(second)),
    }
}

/// The bit positions of the short tokens of ASCII text, positional unigrams
/// (`"<position> <byte>"`: the digits of a register number, a date, a
/// postcode) or bigrams (names, addresses), in a table indexed by the
/// token's bytes ([`gram_slot`]), for the largest `k`
/// asked so far, as the token memo keeps them. A value the value memo does
/// not know (a register number, an address) then has its tokens neither
/// written out nor hashed.
///
/// Where the filter has at most twice as many words as a token sets bits, a
/// token's bits are also kept as whole words (for the first `k` asked: other
/// `k` take the positions), ORed in at once: a register number's digits set
/// their bits (10 of 1024 per digit) in a third of the time.
#[derive(Default)]
pub(super) struct Grams {
    /// Per slot: where its positions start in `positions`, and how many
    /// (0: not known).
    runs: Vec<(u32, u32)>,
    positions: Vec<u32>,
    /// Per slot: where its words start in `masks`, and the `k` they hold the
    /// first positions of (0: no words yet).
    mask_at: Vec<(u32, u32)>,
    masks: Vec<u64>,
    /// The slots set in `runs` or `mask_at`, the only ones to clear. The two
    /// tables are all zeros otherwise, so they are allocated zeroed and only
    /// the pages of the slots a run sets are ever touched: a few hundred
    /// bigrams or digits set a few dozen of each table's 32 pages, which
    /// matters to a site encoding a few thousand records.
    set: Vec<u16>,
}

impl fmt::Debug for Grams {
    /// Sizes only, as for [`Memo`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grams")
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Grams {
    /// The first `k` bit positions of the token in `slot`; `compute(k, out)`
    /// appends them to `out` when they are not known for `k` yet.
    #[inline]
    pub fn positions(
        &mut self,
        slot: usize,
        k: usize,
        compute: impl FnOnce(usize, &mut Vec<u32>),
    ) -> &[u32] {
        if self.runs.is_empty() {
            // Zero tuples of integers: allocated zeroed, not written.
            self.runs = vec![(0, 0); GRAM_SLOTS];
        }
        let (mut start, mut len) = self.runs[slot];
        if (len as usize) < k {
            // Runs address the positions with u32; a run's positions
            // replaced by a longer run stay until then.
            if self.positions.len() >= u32::MAX as usize / 2 {
                self.clear();
                self.runs = vec![(0, 0); GRAM_SLOTS];
            }
            let at = self.positions.len();
            compute(k, &mut self.positions);
            (start, len) = (at as u32, (self.positions.len() - at) as u32);
            // A run is never empty: this slot is set for the first time.
            if self.runs[slot] == (0, 0) {
                self.set.push(slot as u16);
            }
            self.runs[slot] = (start, len);
        }
        &self.positions[start as usize..][..k]
    }

    /// Sets the first `k` bit positions of the token in `slot` in `words`
    /// (as [`Grams::positions`] gives them).
    #[inline]
    pub fn set_bits(
        &mut self,
        slot: usize,
        k: usize,
        words: &mut [u64],
        compute: impl FnOnce(usize, &mut Vec<u32>),
    ) {
        let n = words.len();
        if n <= 2 * k {
            if self.mask_at.is_empty() {
                self.mask_at = vec![(0, 0); GRAM_SLOTS];
            }
            let (at, mask_k) = self.mask_at[slot];
            if mask_k != 0 && mask_k as usize == k {
                for (w, m) in words.iter_mut().zip(&self.masks[at as usize..][..n]) {
                    *w |= m;
                }
                return;
            }
            if mask_k == 0 {
                let at = self.masks.len();
                let mut masks = std::mem::take(&mut self.masks);
                masks.resize(at + n, 0);
                for &position in self.positions(slot, k, compute) {
                    set_bit(&mut masks[at..], position as usize);
                }
                for (w, m) in words.iter_mut().zip(&masks[at..]) {
                    *w |= m;
                }
                self.masks = masks;
                self.mask_at[slot] = (at as u32, k as u32);
                return;
            }
        }
        for &position in self.positions(slot, k, compute) {
            set_bit(words, position as usize);
        }
    }

    /// Bytes of memory taken: of the two tables, only the pages of the
    /// slots set (at most a page per slot) count, as only those are ever
    /// touched.
    pub fn bytes(&self) -> usize {
        let touched = |table: &Vec<(u32, u32)>| {
            (table.capacity() * size_of::<(u32, u32)>()).min(self.set.len() * PAGE_BYTES)
        };
        touched(&self.runs)
            + touched(&self.mask_at)
            + self.positions.capacity() * size_of::<u32>()
            + self.masks.capacity() * size_of::<u64>()
            + self.set.capacity() * size_of::<u16>()
    }

    /// Forgets everything, overwriting positions and words, and the slots
    /// that said which tokens were seen, with zeros first.
    pub fn clear(&mut self) {
        for &slot in &self.set {
            for table in [&mut self.runs, &mut self.mask_at] {
                if let Some(entry) = table.get_mut(usize::from(slot)) {
                    *entry = (0, 0);
                }
            }
        }
        std::hint::black_box(&self.runs);
        std::hint::black_box(&self.mask_at);
        self.runs = Vec::new();
        self.mask_at = Vec::new();
        zero(&mut std::mem::take(&mut self.positions));
        zero(&mut std::mem::take(&mut self.masks));
        zero(&mut std::mem::take(&mut self.set));
    }
}

impl Drop for Grams {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A memo of any value type, for clearing.
trait Clear {
    fn clear_memo(&mut self);
}

impl<T: Copy + Default> Clear for Memo<T> {
    fn clear_memo(&mut self) {
        self.clear();
    }
}

impl Clear for Grams {
    fn clear_memo(&mut self) {
        self.clear();
    }
}

/// Appends the non-zero words of `words` to `out` as groups of up to 64
/// words: the group's index, a bitmap of the words stored, then those words.
/// A group with at least half its words non-zero (a name's 200 bits in a
/// 1024-bit filter leave about one word of 16 empty) is stored whole, zeros
/// included, so that [`or_sparse`] ORs it as one slice, which vectorises,
/// instead of word by word.
pub(super) fn push_sparse(words: &[u64], out: &mut Vec<u64>) {
    for (g, group) in words.chunks(64).enumerate() {
        let mut bitmap = 0u64;
        for (i, &w) in group.iter().enumerate() {
            bitmap |= u64::from(w != 0) << i;
        }
        if bitmap == 0 {
            continue;
        }
        out.push(g as u64);
        if 2 * bitmap.count_ones() as usize >= group.len() {
            out.push(u64::MAX >> (64 - group.len()));
            out.extend_from_slice(group);
        } else {
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
        if bitmap & bitmap.wrapping_add(1) == 0 {
            // Words base.. stored whole.
            let n = bitmap.count_ones() as usize;
            for (w, s) in words[base..base + n].iter_mut().zip(&sparse[i..i + n]) {
                *w |= s;
            }
            i += n;
            continue;
        }
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
            // Mostly full (stored whole) and mostly empty (word by word).
            let full: Vec<u64> = (0..n as u64)
                .map(|i| if i % 3 == 1 { 0 } else { i * 0x9E37_79B9 + 1 })
                .collect();
            let few: Vec<u64> = (0..n as u64)
                .map(|i| if i % 5 == 2 { i + 1 } else { 0 })
                .collect();
            for words in [full, few] {
                let mut sparse = Vec::new();
                push_sparse(&words, &mut sparse);
                let mut back = vec![0u64; n];
                or_sparse(&sparse, &mut back);
                assert_eq!(back, words, "n = {n}");
            }
        }
        let mut sparse = Vec::new();
        push_sparse(&[0; 10], &mut sparse);
        assert!(sparse.is_empty());
    }

    proptest::proptest! {
        /// Word-wise key equality is plain equality, for keys of every
        /// length equal or differing in any one byte.
        #[test]
        fn same_is_plain_equality(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            flip in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), 1u8..)),
            longer in proptest::bool::ANY,
        ) {
            let mut b = a.clone();
            if let Some((at, bits)) = flip.filter(|_| !a.is_empty()) {
                b[at.index(a.len())] ^= bits;
            }
            if longer {
                b.push(0);
            }
            proptest::prop_assert_eq!(same(&a, &b), a == b);
            proptest::prop_assert!(same(&a, &a));
        }

        /// ORing stored words gives what ORing the words themselves gives,
        /// whatever their density.
        #[test]
        fn or_sparse_is_a_plain_or(
            words in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(0u64), proptest::num::u64::ANY], 0..200),
            target in proptest::collection::vec(proptest::num::u64::ANY, 200),
        ) {
            let mut sparse = Vec::new();
            push_sparse(&words, &mut sparse);
            let mut expected = target[..words.len()].to_vec();
            for (e, w) in expected.iter_mut().zip(&words) {
                *e |= w;
            }
            let mut got = target[..words.len()].to_vec();
            or_sparse(&sparse, &mut got);
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn gram_words_hold_the_first_k_positions_whatever_k_came_before() {
        let mut grams = Grams::default();
        // Positions for any k are a prefix of those for a larger k.
        let position = |j: usize| (j * 37 + 5) % 1024;
        for k in [3usize, 10, 8, 10, 1, 10, 30, 9] {
            let mut words = vec![0u64; 16];
            grams.set_bits(
                gram_slot(AsciiGram::Positional(4, b'7')).expect("a slot"),
                k,
                &mut words,
                |k, out| {
                    out.extend((0..k).map(|j| position(j) as u32));
                },
            );
            let mut expected = vec![0u64; 16];
            for j in 0..k {
                set_bit(&mut expected, position(j));
            }
            assert_eq!(words, expected, "k = {k}");
        }
        assert!(grams.bytes() > 0);
        grams.clear();
        assert_eq!(grams.bytes(), 0);
    }

    #[test]
    fn grams_list_each_slot_they_set_once_for_clearing() {
        let mut grams = Grams::default();
        let slots = [
            AsciiGram::Bigram(b'a', b'n'),
            AsciiGram::Positional(0, b'1'),
            AsciiGram::Bigram(0, 0),
            AsciiGram::Positional(UNIGRAM_POSITIONS - 1, 127),
        ]
        .map(|gram| gram_slot(gram).expect("a slot"));
        assert_eq!(
            gram_slot(AsciiGram::Positional(UNIGRAM_POSITIONS, b'1')),
            None
        );
        // Positions first or words first, for growing k, and for a filter
        // too long for words (positions only).
        for (round, k) in [2usize, 5, 5, 9].into_iter().enumerate() {
            for (i, &slot) in slots.iter().enumerate() {
                let n_words = if (i + round) % 2 == 0 { 4 } else { 64 };
                let mut words = vec![0u64; n_words];
                grams.set_bits(slot, k, &mut words, |k, out| {
                    out.extend((0..k as u32).map(|j| j * 7 + i as u32));
                });
                assert_eq!(
                    words.iter().map(|w| w.count_ones()).sum::<u32>(),
                    k as u32,
                    "round {round}, slot {slot}"
                );
            }
        }
        let mut listed: Vec<usize> = grams.set.iter().map(|&s| usize::from(s)).collect();
        listed.sort_unstable();
        let mut expected = slots.to_vec();
        expected.sort_unstable();
        assert_eq!(listed, expected);
        // Every slot not listed is still empty in both tables.
        let unlisted = |table: &[(u32, u32)]| {
            table
                .iter()
                .enumerate()
                .filter(|&(slot, entry)| *entry != (0, 0) && !expected.contains(&slot))
                .count()
        };
        assert_eq!(unlisted(&grams.runs), 0);
        assert_eq!(unlisted(&grams.mask_at), 0);
        assert!(grams.mask_at.iter().any(|entry| *entry != (0, 0)));
        // Four slots touch at most four pages of each table, not all 32.
        let stored =
            grams.positions.capacity() * 4 + grams.masks.capacity() * 8 + grams.set.capacity() * 2;
        assert_eq!(grams.bytes(), stored + 2 * 4 * PAGE_BYTES);
    }

    fn stored(m: &mut Memo<u32>, key: &[u8]) -> Option<Vec<u32>> {
        let run = m.lookup(key)?;
        Some(m.get(run).to_vec())
    }

    #[test]
    fn memo_stores_replaces_and_clears() {
        let mut m: Memo<u32> = Memo::default();
        assert!(m.active());
        assert_eq!(m.lookup(b"ab"), None);
        let run = m.store(b"ab", |a| a.extend([1, 2, 3]));
        assert_eq!(stored(&mut m, b"ab").unwrap(), [1, 2, 3]);
        assert_eq!(run.len(), 3);
        let longer = m.store(b"ab", |a| a.extend([1, 2, 3, 4, 5]));
        assert_eq!(stored(&mut m, b"ab").unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(longer.len(), 5);
        assert_eq!(m.lookup(b"ab\0"), None);
        m.store(b"dupont", |a| a.push(7));
        let shown = format!("{m:?}");
        assert!(
            shown.contains("entries: 2") && !shown.contains("dupont") && !shown.contains("100"),
            "{shown}"
        );
        assert!(m.bytes() >= FIRST_SLOTS * size_of::<Slot>());
        m.clear();
        assert_eq!((m.bytes(), m.lookup(b"ab")), (0, None));
        assert_eq!(stored(&mut m, b"dupont"), None);
    }

    #[test]
    fn memos_stay_within_their_budget_by_clearing_the_largest() {
        let budget = 40_000;
        let mut memos = Memos::new(2, budget);
        for i in 0..300u32 {
            memos.features[0]
                .values
                .store(format!("v{i}").as_bytes(), |a| {
                    a.extend([u64::from(i); 8]);
                });
            let token = (i % 100).to_le_bytes();
            memos.features[1]
                .tokens
                .store(&token[..2], |a| a.push(i % 100));
            memos.enforce_budget();
            assert!(memos.bytes() <= budget, "{memos:?}");
        }
        // The big value memo was cleared (more than once); the small token memo was not.
        assert!(memos.features[0].values.entries < 300);
        assert_eq!(memos.features[1].tokens.entries, 100);
        let mut tokens = std::mem::take(&mut memos.features[1].tokens);
        assert_eq!(stored(&mut tokens, &7u32.to_le_bytes()[..2]).unwrap(), [7]);
    }

    #[test]
    fn prefetch_hints_change_nothing_and_count_nothing() {
        let mut m: Memo<u64> = Memo::default();
        // Empty: nothing to fetch, and no panic.
        m.prefetch_slot(b"anna");
        assert!(!m.worth_prefetching());
        let n = PREFETCH_MIN_SLOTS as u64;
        for i in 0..n {
            m.store(format!("k{i}").as_bytes(), |a| a.extend(0..i % 40));
            // Only a memo too large for the caches is worth it.
            assert_eq!(m.worth_prefetching(), m.slots.len() >= PREFETCH_MIN_SLOTS);
        }
        assert!(m.worth_prefetching());
        let before = (m.policy.lookups, m.policy.hits, m.entries, m.bytes());
        for key in [&b"k7"[..], b"k999", b"absent", b""] {
            m.prefetch_slot(key);
        }
        let run = m.lookup(b"k999").unwrap();
        m.prefetch_run(run);
        m.prefetch_run(Run {
            start: u32::MAX - 8,
            len: 8,
        });
        assert_eq!(
            (
                m.policy.lookups - 1,
                m.policy.hits - 1,
                m.entries,
                m.bytes()
            ),
            before
        );
        assert_eq!(m.get(run), (0..999 % 40).collect::<Vec<_>>());
        m.policy.paused = 1;
        assert!(!m.worth_prefetching(), "not while paused");
        m.clear();
        m.prefetch_slot(b"k7");
        m.prefetch_run(run);
        assert_eq!(m.lookup(b"k7"), None);
    }

    #[test]
    fn memo_pauses_when_look_ups_miss() {
        let mut m: Memo<u32> = Memo::default();
        // One hit in 128 look-ups: too few.
        for i in 0..WINDOW {
            assert!(m.active());
            let key = if i % 128 == 1 {
                [0; 4]
            } else {
                i.to_le_bytes()
            };
            assert_eq!(m.lookup(&key).is_some(), i % 128 == 1);
            m.store(&key, |a| a.push(i));
        }
        assert!(!m.active(), "paused after a window of few hits");
        for _ in 1..PAUSE {
            assert!(!m.active());
        }
        assert!(m.active(), "back after the pause");
        assert_eq!(
            stored(&mut m, &5u32.to_le_bytes()).unwrap(),
            [5],
            "and kept its values"
        );
        // One hit in 32 keeps it on.
        let mut hot: Memo<u32> = Memo::default();
        hot.store(b"x", |a| a.push(1));
        for i in 0..3 * WINDOW {
            assert!(hot.active());
            let key = if i % 32 == 0 { *b"x" } else { *b"y" };
            assert_eq!(hot.lookup(&key).is_some(), i % 32 == 0);
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
        let mut m: Memo<u32> = Memo::default();
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
