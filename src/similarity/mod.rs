//! Dice similarity of clks and candidate search: the linkage unit's hot loop.
//!
//! Clks are packed into `u64` words ([`PackedClks`]); the Dice score of two
//! clks is `2|A ∧ B| / (|A| + |B|)`, computed from integer counts by
//! [`dice_score`], the one place a score becomes a float, so that every code
//! path gives bit-identical scores. [`search_pair`] (two sites) and
//! [`search_self`] (one site, deduplication) return every candidate pair whose
//! score reaches a threshold, optionally only the top k per record; the solver
//! ([`crate::solve`]) turns them into links and entities.
//!
//! The fast path (`search.rs`) sorts both sides by popcount and compares a
//! record only with the band of popcounts that can reach the threshold, in
//! cache-sized tiles, with a SIMD kernel picked once at run time ([`Kernel`]),
//! on rayon's threads. [`scalar`] holds the plain reference that the fast path
//! is tested against.

pub mod scalar;
mod search;
mod simd;

use std::ops::Range;
use std::sync::OnceLock;

pub use search::{SearchOptions, SearchStats, search_pair, search_self};

/// The clks of one site, packed into `u64` words for the kernel.
///
/// Bytes are packed little-endian into words and the last word is padded with
/// zero bits; Dice only counts bits, so the bit order inside a word does not
/// matter as long as both sides use the same packing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedClks {
    words_per_clk: usize,
    words: Vec<u64>,
    popcounts: Vec<u32>,
}

impl PackedClks {
    /// Packs `bytes`, record `i` at `bytes[i * bytes_per_clk..(i + 1) * bytes_per_clk]`.
    ///
    /// # Panics
    /// When `bytes_per_clk` is 0 or does not divide `bytes.len()`.
    pub fn from_bytes(bytes: &[u8], bytes_per_clk: usize) -> Self {
        assert!(bytes_per_clk > 0, "clks must have at least one byte");
        assert_eq!(
            bytes.len() % bytes_per_clk,
            0,
            "bytes do not hold whole clks"
        );
        let words_per_clk = bytes_per_clk.div_ceil(8);
        let records = bytes.len() / bytes_per_clk;
        let mut words = Vec::with_capacity(records * words_per_clk);
        for clk in bytes.chunks_exact(bytes_per_clk) {
            for chunk in clk.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                words.push(u64::from_le_bytes(word));
            }
        }
        Self::from_words(words, words_per_clk)
    }

    /// Wraps clks already packed as words, record `i` at
    /// `words[i * words_per_clk..(i + 1) * words_per_clk]`.
    ///
    /// # Panics
    /// When `words_per_clk` is 0 or does not divide `words.len()`.
    pub fn from_words(words: Vec<u64>, words_per_clk: usize) -> Self {
        assert!(words_per_clk > 0, "clks must have at least one word");
        assert_eq!(
            words.len() % words_per_clk,
            0,
            "words do not hold whole clks"
        );
        let popcounts = words
            .chunks_exact(words_per_clk)
            .map(scalar::popcount)
            .collect();
        Self {
            words_per_clk,
            words,
            popcounts,
        }
    }

    /// An empty set of clks of the given width.
    pub fn empty(words_per_clk: usize) -> Self {
        Self::from_words(Vec::new(), words_per_clk)
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.popcounts.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.popcounts.is_empty()
    }

    /// Words per clk.
    pub fn words_per_clk(&self) -> usize {
        self.words_per_clk
    }

    /// The words of record `i`.
    pub fn clk(&self, i: usize) -> &[u64] {
        &self.words[i * self.words_per_clk..(i + 1) * self.words_per_clk]
    }

    /// All words, record after record.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The popcount of every record.
    pub fn popcounts(&self) -> &[u32] {
        &self.popcounts
    }

    /// A copy of records `range`.
    pub fn slice(&self, range: Range<usize>) -> Self {
        let w = self.words_per_clk;
        Self {
            words_per_clk: w,
            words: self.words[range.start * w..range.end * w].to_vec(),
            popcounts: self.popcounts[range].to_vec(),
        }
    }
}

/// Dice score `2c / (a + b)` from `c = |A ∧ B|` and the popcounts `a`, `b`;
/// 0 when both clks are empty.
///
/// Every code path computes scores through this function, so that a pair gets
/// the same `f64` whichever path found it. It is monotone in `c`, which is
/// what makes the length filter exact: `dice_score(c, a, b) <=
/// dice_score(min(a, b), a, b)` for every possible `c`.
#[inline]
pub fn dice_score(c: u32, a: u32, b: u32) -> f64 {
    let total = u64::from(a) + u64::from(b);
    if total == 0 {
        0.0
    } else {
        (2 * u64::from(c)) as f64 / total as f64
    }
}

/// The Dice score of record `i` of `a` and record `j` of `b`, when it reaches
/// `threshold` (pairs whose popcounts cannot reach it are not compared).
/// One pair at a time, for pairs chosen elsewhere (blocking, evaluation);
/// the same [`dice_score`] as the search, so a pair gets the same score.
///
/// # Panics
/// When the clks differ in length, a record is out of range, or `kernel` is
/// not available.
#[inline]
pub fn pair_score(
    kernel: Kernel,
    a: &PackedClks,
    i: usize,
    b: &PackedClks,
    j: usize,
    threshold: f64,
) -> Option<f64> {
    let (pa, pb) = (a.popcounts[i], b.popcounts[j]);
    if dice_score(pa.min(pb), pa, pb) < threshold {
        return None;
    }
    let mut count = [0u32];
    and_popcounts(kernel, a.clk(i), b.clk(j), &mut count);
    let score = dice_score(count[0], pa, pb);
    (score >= threshold).then_some(score)
}

/// A pair of records whose score reached the threshold: `a` indexes the first
/// site's records (or the site's, in deduplication), `b` the second's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Record index in the first site (file order).
    pub a: u32,
    /// Record index in the second site (file order); in deduplication `a < b`.
    pub b: u32,
    /// Dice score, as computed by [`dice_score`].
    pub score: f64,
}

/// An implementation of the `|A ∧ B|` kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `u64` words and `count_ones`, as the build target compiles it.
    Portable,
    /// The same loop with the x86 `popcnt` instruction.
    Popcnt,
    /// AVX2 nibble lookup (`pshufb`).
    Avx2,
    /// AVX-512 VPOPCNTDQ.
    Avx512,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::Popcnt,
        Kernel::Portable,
    ];

    /// The kernels this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        Self::ALL.into_iter().filter(|k| k.is_available()).collect()
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        simd::resolve(self).is_some()
    }

    /// The fastest kernel this CPU can run, detected once.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// A short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Popcnt => "popcnt",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }

    fn fns(self) -> simd::KernelFns {
        simd::resolve(self).unwrap_or_else(|| panic!("kernel {} is not available", self.name()))
    }
}

/// `out[j] = |a ∧ b_j|` for the clks `b_j` stored one after the other in `b`,
/// each `a.len()` words long, with `kernel`.
///
/// # Panics
/// When `kernel` is not available on this CPU, `a` is empty, or
/// `b.len() != out.len() * a.len()`.
pub fn and_popcounts(kernel: Kernel, a: &[u64], b: &[u64], out: &mut [u32]) {
    assert!(!a.is_empty(), "clks must have at least one word");
    assert_eq!(b.len(), out.len() * a.len(), "b must hold out.len() clks");
    (kernel.fns().counts)(a, b, out);
}

/// The number of bits set in a clk stored as bytes (as in a `.clk.parquet`),
/// counted with the fastest instruction this CPU has; equal to
/// [`scalar::popcount_bytes`].
pub fn popcount_bytes(clk: &[u8]) -> u32 {
    simd::popcount_bytes(clk)
}

/// Appends `(j, |a ∧ b_j|)` to `hits` for every clk `b_j` of `b` (as in
/// [`and_popcounts`]) whose count is at least `min`, in ascending `j`.
///
/// # Panics
/// When `kernel` is not available on this CPU, `a` is empty, or `b` does not
/// hold whole clks.
pub fn and_popcount_hits(
    kernel: Kernel,
    a: &[u64],
    b: &[u64],
    min: u32,
    hits: &mut Vec<(u32, u32)>,
) {
    assert!(!a.is_empty(), "clks must have at least one word");
    assert_eq!(b.len() % a.len(), 0, "b must hold whole clks");
    let pbs = vec![0u32; b.len() / a.len()];
    let mins = simd::Minimums {
        pbs: &pbs,
        base: 0,
        min: &[min],
        floor: &[min],
    };
    (kernel.fns().hits)(a, b, mins, hits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = u64> {
        // Mix dense, sparse, all-zero and all-one words.
        prop_oneof![
            any::<u64>(),
            Just(0u64),
            Just(u64::MAX),
            any::<u64>().prop_map(|w| w & (w >> 7) & (w >> 13)),
        ]
    }

    fn clks(
        words_per_clk: usize,
        records: std::ops::Range<usize>,
    ) -> impl Strategy<Value = PackedClks> {
        proptest::collection::vec(proptest::collection::vec(word(), words_per_clk), records)
            .prop_map(move |cs| PackedClks::from_words(cs.concat(), words_per_clk))
    }

    #[test]
    fn packs_bytes_little_endian_with_zero_padding() {
        let bytes: Vec<u8> = (1..=20).collect();
        let p = PackedClks::from_bytes(&bytes, 10);
        assert_eq!(p.len(), 2);
        assert_eq!(p.words_per_clk(), 2);
        assert_eq!(p.clk(0)[0], u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(p.clk(0)[1], u64::from_le_bytes([9, 10, 0, 0, 0, 0, 0, 0]));
        let bits: u32 = bytes[..10].iter().map(|b| b.count_ones()).sum();
        assert_eq!(p.popcounts()[0], bits);
    }

    #[test]
    fn dice_of_known_clks() {
        let a = [0b1111u64, 0];
        let b = [0b0011u64, 0];
        assert_eq!(scalar::dice(&a, &b), 2.0 * 2.0 / 6.0);
        assert_eq!(scalar::dice(&[0, 0], &[0, 0]), 0.0);
        assert_eq!(scalar::dice(&[u64::MAX], &[u64::MAX]), 1.0);
        assert_eq!(dice_score(0, 0, 5), 0.0);
    }

    #[test]
    fn best_kernel_is_available_and_portable_always_is() {
        assert!(Kernel::best().is_available());
        assert!(Kernel::Portable.is_available());
        assert_eq!(Kernel::available()[0], Kernel::best());
    }

    #[test]
    fn kernels_on_all_zero_and_all_one_clks() {
        for words in [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64] {
            let zeros = vec![0u64; words];
            let ones = vec![u64::MAX; words];
            let b: Vec<u64> = [zeros.clone(), ones.clone(), zeros.clone()].concat();
            for kernel in Kernel::available() {
                let mut out = [7u32; 3];
                and_popcounts(kernel, &ones, &b, &mut out);
                assert_eq!(
                    out,
                    [0, 64 * words as u32, 0],
                    "{} words={words}",
                    kernel.name()
                );
                and_popcounts(kernel, &zeros, &b, &mut out);
                assert_eq!(out, [0, 0, 0], "{} words={words}", kernel.name());
            }
        }
    }

    proptest! {
        /// Both ways of counting a stored clk's bits (the `popcnt` one on
        /// CPUs that have it) give the reference's count, for any length.
        #[test]
        fn popcount_of_bytes_equals_the_scalar_reference(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let expected = scalar::popcount_bytes(&bytes);
            prop_assert_eq!(popcount_bytes(&bytes), expected);
            prop_assert_eq!(simd::count_bytes(&bytes), expected);
        }

        #[test]
        fn every_kernel_equals_the_scalar_reference(
            (a, b) in (1usize..40).prop_flat_map(|w| (clks(w, 1..2), clks(w, 0..30)))
        ) {
            let expected: Vec<u32> =
                (0..b.len()).map(|j| scalar::and_popcount(a.clk(0), b.clk(j))).collect();
            for kernel in Kernel::available() {
                let mut out = vec![0u32; b.len()];
                and_popcounts(kernel, a.clk(0), b.words(), &mut out);
                prop_assert_eq!(&out, &expected, "kernel {}", kernel.name());
                for min in [0, 1, expected.iter().copied().max().unwrap_or(0), 40, u32::MAX] {
                    let mut hits = vec![(99, 99)];
                    and_popcount_hits(kernel, a.clk(0), b.words(), min, &mut hits);
                    let want: Vec<(u32, u32)> = std::iter::once((99, 99))
                        .chain(expected.iter().enumerate().filter(|(_, c)| **c >= min).map(|(j, &c)| (j as u32, c)))
                        .collect();
                    prop_assert_eq!(&hits, &want, "kernel {} min {}", kernel.name(), min);
                }
            }
        }

        #[test]
        fn pair_score_is_the_scalar_dice_when_it_reaches_the_threshold(
            (a, b) in (1usize..20).prop_flat_map(|w| (clks(w, 1..2), clks(w, 1..20))),
            threshold in 0.01f64..1.0,
        ) {
            for kernel in Kernel::available() {
                for j in 0..b.len() {
                    let dice = scalar::dice(a.clk(0), b.clk(j));
                    let expected = (dice >= threshold).then_some(dice.to_bits());
                    let got = pair_score(kernel, &a, 0, &b, j, threshold).map(f64::to_bits);
                    prop_assert_eq!(got, expected, "kernel {}", kernel.name());
                }
            }
        }
    }
}
