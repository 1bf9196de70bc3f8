//! The fast candidate search: popcount length filter, cache-sized tiles, the
//! SIMD kernel, rayon over blocks of records.
//!
//! Both sides are sorted by popcount. A pair with popcounts `a`, `b` scores at
//! most `dice_score(min(a, b), a, b)`, so for a record of popcount `a` only the
//! contiguous band of the other side whose popcount can still reach the
//! threshold is compared; the band ends are found by binary search with that
//! exact bound (no float bound derived by algebra, so no pair at the threshold
//! is lost to rounding). Records are processed in blocks of [`ROW_BLOCK`] on
//! rayon's threads; each block walks its band in tiles of [`COL_TILE_BYTES`] that
//! stay in the L2 cache while every record of the block is compared with them.
//! The threshold test is done on integers: for each row popcount a table holds
//! the smallest `|A ∧ B|` that reaches the threshold for every column popcount
//! (found with [`dice_score`] itself), and the kernel reports only the columns
//! whose count reaches it, so a score is only computed for a candidate.
//! Each block returns its own candidates; they are concatenated in block order
//! and sorted, so the result does not depend on the number of threads. Memory
//! holds a sorted copy of each side, per block its bands and tables, and the
//! candidates themselves (at most `k` per record with top-k): never a matrix.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use rayon::prelude::*;

use super::simd::{KernelFns, Minimums};
use super::{Candidate, Kernel, PackedClks, dice_score};

/// Records per rayon task.
const ROW_BLOCK: usize = 64;
/// Bytes of the other side compared per tile (fits the L2 cache of one core).
const COL_TILE_BYTES: usize = 128 * 1024;

/// What the search keeps and how it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// Keep pairs whose score is `>= threshold`; in `(0, 1]`.
    pub threshold: f64,
    /// Keep at most the `k` best candidates (score descending, then record
    /// index) of each record of the first site; in deduplication, a pair is
    /// kept when it is among the `k` best of either of its records.
    pub top_k: Option<usize>,
    /// Skip pairs whose popcounts cannot reach the threshold (exact; off only
    /// to measure what it saves).
    pub length_filter: bool,
    /// The kernel; `None` picks [`Kernel::best`].
    pub kernel: Option<Kernel>,
}

impl SearchOptions {
    /// Candidates `>= threshold`, all of them, length filter on, best kernel.
    pub fn new(threshold: f64) -> Self {
        Self {
            threshold,
            top_k: None,
            length_filter: true,
            kernel: None,
        }
    }
}

/// What a search did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Pairs whose clks were compared.
    pub comparisons: u64,
    /// Pairs skipped because their popcounts could not reach the threshold.
    pub skipped_by_length: u64,
    /// Candidates returned.
    pub candidates: u64,
}

impl std::ops::AddAssign for SearchStats {
    fn add_assign(&mut self, o: Self) {
        self.comparisons += o.comparisons;
        self.skipped_by_length += o.skipped_by_length;
        self.candidates += o.candidates;
    }
}

/// Every pair of `a` × `b` whose Dice score reaches `options.threshold` (with
/// top-k: the `k` best of each record of `a`), sorted by `(a, b)`.
///
/// `progress` is called from worker threads with the number of records of
/// `a` just finished.
///
/// # Panics
/// When the two sides have clks of different lengths, the threshold is not
/// in `(0, 1]`, `top_k` is `Some(0)`, or the chosen kernel is not available.
pub fn search_pair(
    a: &PackedClks,
    b: &PackedClks,
    options: &SearchOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> (Vec<Candidate>, SearchStats) {
    assert_eq!(
        a.words_per_clk(),
        b.words_per_clk(),
        "clks of different lengths"
    );
    let rows = Sorted::new(a);
    let cols = Sorted::new(b);
    let total = a.len() as u64 * b.len() as u64;
    run(&rows, &cols, Mode::Pair, options, total, progress)
}

/// Deduplication: every pair `(i, j)`, `i < j`, of one site whose Dice score
/// reaches `options.threshold`, sorted by `(i, j)`. With top-k each record
/// keeps its `k` best among all others and a pair is kept when either keeps it.
///
/// # Panics
/// As [`search_pair`].
pub fn search_self(
    a: &PackedClks,
    options: &SearchOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> (Vec<Candidate>, SearchStats) {
    let sorted = Sorted::new(a);
    let n = a.len() as u64;
    let (mode, total) = match options.top_k {
        None => (Mode::Upper, n * n.saturating_sub(1) / 2),
        Some(_) => (Mode::AllButSelf, n * n.saturating_sub(1)),
    };
    let (mut candidates, stats) = run(&sorted, &sorted, mode, options, total, progress);
    // Sorted positions follow popcount, not file order: name each pair (low, high).
    for c in &mut candidates {
        let (lo, hi) = (c.a.min(c.b), c.a.max(c.b));
        (c.a, c.b) = (lo, hi);
    }
    candidates.sort_unstable_by_key(|c| (c.a, c.b));
    // With top-k, a pair kept by both of its records appears twice.
    candidates.dedup_by_key(|c| (c.a, c.b));
    let stats = SearchStats {
        candidates: candidates.len() as u64,
        ..stats
    };
    (candidates, stats)
}

/// Which pairs of rows × columns to compare (in sorted positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Two sites: all rows × all columns.
    Pair,
    /// One site: column after row.
    Upper,
    /// One site with top-k: every column but the row itself.
    AllButSelf,
}

/// One side sorted by (popcount, index), clks copied in that order.
struct Sorted {
    order: Vec<u32>,
    words: Vec<u64>,
    popcounts: Vec<u32>,
    words_per_clk: usize,
}

impl Sorted {
    fn new(p: &PackedClks) -> Self {
        let mut order: Vec<u32> = (0..p.len() as u32).collect();
        order.sort_by_key(|&i| (p.popcounts()[i as usize], i));
        let mut words = Vec::with_capacity(p.words().len());
        for &i in &order {
            words.extend_from_slice(p.clk(i as usize));
        }
        let popcounts: Vec<u32> = order.iter().map(|&i| p.popcounts()[i as usize]).collect();
        Self {
            order,
            words,
            popcounts,
            words_per_clk: p.words_per_clk(),
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn clk(&self, i: usize) -> &[u64] {
        &self.words[i * self.words_per_clk..(i + 1) * self.words_per_clk]
    }
}

/// The highest score two clks of popcounts `a` and `b` can have.
fn max_score(a: u32, b: u32) -> f64 {
    dice_score(a.min(b), a, b)
}

/// The sorted positions of `cols` that a row of popcount `pa` can reach.
fn band(pa: u32, cols: &[u32], threshold: f64) -> (usize, usize) {
    // Below `pa` the bound rises with `pb`, above it falls: the band is contiguous.
    let lo = cols.partition_point(|&pb| pb < pa && max_score(pa, pb) < threshold);
    let hi = cols.partition_point(|&pb| pb <= pa || max_score(pa, pb) >= threshold);
    (lo, hi.max(lo))
}

/// The smallest `|A ∧ B|` at which popcounts `pa`, `pb` reach the threshold,
/// `u32::MAX` when none does. Found with `dice_score` itself, so the integer
/// test `count >= min_count` is exactly `dice_score(count, ..) >= threshold`.
fn min_count(pa: u32, pb: u32, threshold: f64) -> u32 {
    let most = pa.min(pb);
    if dice_score(most, pa, pb) < threshold {
        return u32::MAX;
    }
    let estimate = (threshold * f64::from(pa + pb) / 2.0).ceil();
    let mut c = if estimate.is_finite() && estimate > 0.0 {
        (estimate as u32).min(most)
    } else {
        0
    };
    while c > 0 && dice_score(c - 1, pa, pb) >= threshold {
        c -= 1;
    }
    while dice_score(c, pa, pb) < threshold {
        c += 1;
    }
    c
}

/// `min_count` for one row popcount over the popcounts of its band, and its
/// suffix minimum (see [`Minimums`]).
struct CountTable {
    pa: u32,
    base: u32,
    min: Vec<u32>,
    floor: Vec<u32>,
}

impl CountTable {
    fn new(pa: u32, pb_lo: u32, pb_hi: u32, threshold: f64) -> Self {
        let min: Vec<u32> = (pb_lo..=pb_hi)
            .map(|pb| min_count(pa, pb, threshold))
            .collect();
        let mut floor = min.clone();
        for i in (0..floor.len().saturating_sub(1)).rev() {
            floor[i] = floor[i].min(floor[i + 1]);
        }
        Self {
            pa,
            base: pb_lo,
            min,
            floor,
        }
    }
}

/// A kept candidate in a row's top-k heap; the heap's top is the worst kept.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ranked(Candidate);

impl Eq for Ranked {}

impl Ord for Ranked {
    // "Greater" means worse: lower score, then higher column index.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.b.cmp(&other.0.b))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn run(
    rows: &Sorted,
    cols: &Sorted,
    mode: Mode,
    options: &SearchOptions,
    total_pairs: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> (Vec<Candidate>, SearchStats) {
    let threshold = options.threshold;
    assert!(
        threshold > 0.0 && threshold <= 1.0,
        "threshold {threshold} is not in (0, 1]"
    );
    assert_ne!(options.top_k, Some(0), "top-k must be at least 1");
    let kernel = options.kernel.unwrap_or_else(Kernel::best).fns();
    if rows.len() == 0 || cols.len() == 0 {
        return (
            Vec::new(),
            SearchStats {
                skipped_by_length: 0,
                ..Default::default()
            },
        );
    }
    let comparisons = AtomicU64::new(0);
    let blocks: Vec<Vec<Candidate>> = (0..rows.len())
        .into_par_iter()
        .step_by(ROW_BLOCK)
        .map(|start| {
            let end = (start + ROW_BLOCK).min(rows.len());
            let (found, compared) = block(rows, cols, start..end, mode, options, kernel);
            comparisons.fetch_add(compared, AtomicOrdering::Relaxed);
            progress((end - start) as u64);
            found
        })
        .collect();
    let mut candidates: Vec<Candidate> = blocks.into_iter().flatten().collect();
    candidates.sort_unstable_by_key(|c| (c.a, c.b));
    let comparisons = comparisons.into_inner();
    let stats = SearchStats {
        comparisons,
        skipped_by_length: total_pairs - comparisons,
        candidates: candidates.len() as u64,
    };
    (candidates, stats)
}

/// Compares the rows `rows_range` (sorted positions) with their bands; returns
/// the candidates (original indices) and the number of pairs compared.
fn block(
    rows: &Sorted,
    cols: &Sorted,
    rows_range: std::ops::Range<usize>,
    mode: Mode,
    options: &SearchOptions,
    kernel: KernelFns,
) -> (Vec<Candidate>, u64) {
    let threshold = options.threshold;
    let w = rows.words_per_clk;
    let col_tile = (COL_TILE_BYTES / (w * 8)).max(16);

    // The band of every row, and one count table per distinct row popcount
    // (rows are sorted, so equal popcounts are adjacent and share the band).
    let mut bands = Vec::with_capacity(rows_range.len());
    let mut tables: Vec<CountTable> = Vec::new();
    let mut table_of = Vec::with_capacity(rows_range.len());
    for r in rows_range.clone() {
        let pa = rows.popcounts[r];
        let (full_lo, full_hi) = if options.length_filter {
            band(pa, &cols.popcounts, threshold)
        } else {
            (0, cols.len())
        };
        if tables.last().is_none_or(|t| t.pa != pa) {
            let (pb_lo, pb_hi) = if full_lo < full_hi {
                (cols.popcounts[full_lo], cols.popcounts[full_hi - 1])
            } else {
                (1, 0)
            };
            tables.push(CountTable::new(pa, pb_lo, pb_hi, threshold));
        }
        table_of.push(tables.len() - 1);
        let (mut lo, mut hi) = (full_lo, full_hi);
        if mode == Mode::Upper {
            lo = lo.max(r + 1);
            hi = hi.max(lo);
        }
        bands.push((lo, hi));
    }

    let tile_start = bands.iter().map(|b| b.0).min().unwrap_or(0);
    let tile_end = bands.iter().map(|b| b.1).max().unwrap_or(0);
    let mut hits: Vec<(u32, u32)> = Vec::new();
    let mut found: Vec<Candidate> = Vec::new();
    let mut heaps: Vec<BinaryHeap<Ranked>> = match options.top_k {
        Some(_) => (0..rows_range.len()).map(|_| BinaryHeap::new()).collect(),
        None => Vec::new(),
    };
    let mut compared = 0u64;

    let mut t0 = tile_start;
    while t0 < tile_end {
        let t1 = (t0 + col_tile).min(tile_end);
        for (i, r) in rows_range.clone().enumerate() {
            let (lo, hi) = (bands[i].0.max(t0), bands[i].1.min(t1));
            if lo >= hi {
                continue;
            }
            compared += (hi - lo) as u64;
            let pa = rows.popcounts[r];
            let table = &tables[table_of[i]];
            let row_id = rows.order[r];
            let mins = Minimums {
                pbs: &cols.popcounts[lo..hi],
                base: table.base,
                min: &table.min,
                floor: &table.floor,
            };
            hits.clear();
            (kernel.hits)(rows.clk(r), &cols.words[lo * w..hi * w], mins, &mut hits);
            for &(k, count) in &hits {
                let col = lo + k as usize;
                if mode == Mode::AllButSelf && col == r {
                    continue;
                }
                let candidate = Candidate {
                    a: row_id,
                    b: cols.order[col],
                    score: dice_score(count, pa, cols.popcounts[col]),
                };
                debug_assert!(candidate.score >= threshold);
                match options.top_k {
                    None => found.push(candidate),
                    Some(k) => {
                        let heap = &mut heaps[i];
                        if heap.len() < k {
                            heap.push(Ranked(candidate));
                        } else if heap.peek().is_some_and(|worst| Ranked(candidate) < *worst) {
                            heap.pop();
                            heap.push(Ranked(candidate));
                        }
                    }
                }
            }
        }
        t0 = t1;
    }
    if mode == Mode::AllButSelf {
        // The row itself was counted as compared; it is not a pair.
        compared -= bands
            .iter()
            .zip(rows_range.clone())
            .filter(|((lo, hi), r)| (*lo..*hi).contains(r))
            .count() as u64;
    }
    for heap in heaps {
        found.extend(heap.into_iter().map(|r| r.0));
    }
    (found, compared)
}

#[cfg(test)]
mod tests {
    use super::super::scalar;
    use super::*;
    use proptest::prelude::*;

    fn no_progress(_: u64) {}

    /// Clks with popcounts spread widely, so the length filter has work to do,
    /// and near-copies, so that candidates exist at every threshold.
    fn site(words: usize, max_records: usize) -> impl Strategy<Value = PackedClks> {
        let clk = (proptest::collection::vec(any::<u64>(), words), 0u32..5).prop_map(
            |(mut ws, sparsity)| {
                for w in &mut ws {
                    for s in 0..sparsity {
                        *w &= w.rotate_left(7 + s);
                    }
                }
                ws
            },
        );
        proptest::collection::vec(clk, 0..=max_records).prop_map(move |cs| {
            let mut all: Vec<Vec<u64>> = Vec::new();
            for (i, c) in cs.into_iter().enumerate() {
                if i % 3 == 2 && !all.is_empty() {
                    // A noisy copy of an earlier clk.
                    let mut copy = all[i / 2].clone();
                    copy[i % words] ^= 0x0101_0000_1000_0001;
                    all.push(copy);
                } else {
                    all.push(c);
                }
            }
            if all.len() > 3 {
                all.push(vec![0; words]);
                all.push(vec![u64::MAX; words]);
                let dup = all[1].clone();
                all.push(dup);
            }
            PackedClks::from_words(all.concat(), words)
        })
    }

    fn thresholds() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(1.0),
            Just(0.8),
            Just(0.5),
            Just(2.0 / 3.0),
            Just(0.75),
            Just(f64::MIN_POSITIVE),
            0.01f64..=1.0,
        ]
    }

    fn exact_bits(cs: &[Candidate]) -> Vec<(u32, u32, u64)> {
        cs.iter().map(|c| (c.a, c.b, c.score.to_bits())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn pair_search_equals_all_pairs_reference(
            (a, b) in prop_oneof![Just(1usize), Just(3), Just(16), Just(17)]
                .prop_flat_map(|w| (site(w, 150), site(w, 150))),
            threshold in thresholds(),
            length_filter in any::<bool>(),
        ) {
            let expected = scalar::all_pairs(&a, &b, threshold);
            for kernel in Kernel::available() {
                let options = SearchOptions { threshold, top_k: None, length_filter, kernel: Some(kernel) };
                let (got, stats) = search_pair(&a, &b, &options, &no_progress);
                prop_assert_eq!(exact_bits(&got), exact_bits(&expected), "kernel {}", kernel.name());
                prop_assert_eq!(stats.comparisons + stats.skipped_by_length, (a.len() * b.len()) as u64);
                prop_assert_eq!(stats.candidates, expected.len() as u64);
                if !length_filter {
                    prop_assert_eq!(stats.skipped_by_length, 0);
                }
            }
        }

        #[test]
        fn self_search_equals_all_pairs_reference(
            a in prop_oneof![Just(2usize), Just(16)].prop_flat_map(|w| site(w, 200)),
            threshold in thresholds(),
        ) {
            let expected = scalar::all_pairs_self(&a, threshold);
            let (got, stats) = search_self(&a, &SearchOptions::new(threshold), &no_progress);
            prop_assert_eq!(exact_bits(&got), exact_bits(&expected));
            let n = a.len() as u64;
            prop_assert_eq!(stats.comparisons + stats.skipped_by_length, n * n.saturating_sub(1) / 2);
        }

        #[test]
        fn top_k_equals_reference(
            (a, b) in Just(4usize).prop_flat_map(|w| (site(w, 100), site(w, 100))),
            threshold in thresholds(),
            k in 1usize..4,
        ) {
            let options = SearchOptions { top_k: Some(k), ..SearchOptions::new(threshold) };
            let (got, _) = search_pair(&a, &b, &options, &no_progress);
            prop_assert_eq!(exact_bits(&got), exact_bits(&scalar::top_k_pairs(&a, &b, threshold, k)));
            let (got, _) = search_self(&a, &options, &no_progress);
            prop_assert_eq!(exact_bits(&got), exact_bits(&scalar::top_k_pairs_self(&a, threshold, k)));
        }
    }

    #[test]
    fn pair_exactly_at_threshold_is_kept() {
        // Popcounts 4 and 6 with 4 common bits: Dice = 8/10 = 0.8 exactly as f64 division.
        let a = PackedClks::from_words(vec![0b1111], 1);
        let b = PackedClks::from_words(vec![0b11_1111], 1);
        let (got, stats) = search_pair(&a, &b, &SearchOptions::new(0.8), &no_progress);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].score, 0.8);
        assert_eq!(stats.comparisons, 1);
        // Thresholds just above the score drop it, by the length filter or the count test.
        let (got, _) = search_pair(
            &a,
            &b,
            &SearchOptions::new(0.8000000000000001),
            &no_progress,
        );
        assert!(got.is_empty());
    }

    #[test]
    fn length_filter_skips_pairs_that_cannot_reach() {
        // Popcount 1 against popcount 64: at most 2/65, far below 0.5.
        let a = PackedClks::from_words(vec![1], 1);
        let b = PackedClks::from_words(vec![u64::MAX, 1], 1);
        let (got, stats) = search_pair(&a, &b, &SearchOptions::new(0.5), &no_progress);
        assert_eq!(
            got,
            vec![Candidate {
                a: 0,
                b: 1,
                score: 1.0
            }]
        );
        assert_eq!(stats.comparisons, 1);
        assert_eq!(stats.skipped_by_length, 1);
    }

    #[test]
    fn min_count_matches_dice_score_everywhere() {
        for t in [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0 / 3.0] {
            for pa in 0..70 {
                for pb in 0..70 {
                    let m = min_count(pa, pb, t);
                    for c in 0..=pa.min(pb) {
                        assert_eq!(
                            c >= m,
                            dice_score(c, pa, pb) >= t,
                            "t={t} pa={pa} pb={pb} c={c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let words: Vec<u64> = (0..3000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i >> 3))
            .collect();
        let a = PackedClks::from_words(words.clone(), 3);
        let options = SearchOptions::new(0.55);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let r1 = one.install(|| search_self(&a, &options, &no_progress));
        let r3 = three.install(|| search_self(&a, &options, &no_progress));
        assert!(!r1.0.is_empty());
        assert_eq!(exact_bits(&r1.0), exact_bits(&r3.0));
        assert_eq!(r1.1, r3.1);
    }
}
