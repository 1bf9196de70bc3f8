//! Blocking: candidate pairs without comparing all pairs. It hands the
//! similarity stage a stream of distinct candidate pairs `(i, j)` (row in site
//! A, row in site B; or `i < j` within one site), to be scored with Dice.
//!
//! Two methods:
//!
//! - **Hamming LSH by bit sampling**, at the linkage unit on the clks alone,
//!   needing nothing extra from the sites ([`lsh_candidates`]). Each of `L`
//!   tables samples `k` bit positions (seeded, so every run samples the same);
//!   records whose clks agree on all `k` sampled bits share a bucket; pairs that
//!   share a bucket in at least one table are candidates.
//! - **Equal blocking keys** computed at the sites ([`key_candidates`]): pairs
//!   that share at least one key are candidates.
//!
//! # Choosing `k` and `L` ([`LshParams::for_clks`], [`LshParams::for_threshold`])
//!
//! Two clks of popcounts `|A|`, `|B|` with Dice score `s` are at Hamming
//! distance `|A| + |B| − 2|A ∧ B| = (|A| + |B|)(1 − s)`. So a pair at the
//! threshold `t`, both of the typical popcount `c`, is at distance
//!
//! ```text
//! d = floor(2c (1 − t))                          (the distance budget)
//! ```
//!
//! A table samples `k` distinct positions uniformly from the `l` informative
//! bits (bits that are not the same in every record; the others never
//! separate a pair). A pair at distance `d` collides in it when no sampled
//! position is one of its `d` differing bits:
//!
//! ```text
//! π(d, k) = C(l − d, k) / C(l, k) = Π_{i<k} (l − d − i) / (l − i)
//! ```
//!
//! exactly, whatever the data. Tables are sampled independently, so the pair
//! is found with probability `1 − (1 − π(d, k))^L`, and
//!
//! ```text
//! L(k) = ceil( ln(1 − R) / ln(1 − π(d, k)) )     with R = 0.99
//! ```
//!
//! tables find a pair at the budget with probability at least `R`; pairs
//! above the threshold are closer and found more often. Among the `k` that
//! need at most [`MAX_TABLES`] tables, the one with the least estimated work
//! is chosen:
//!
//! ```text
//! work(k) = L(k) · ( (n_A + n_B) · c_record  +  P · F(k) · c_pair )
//! ```
//!
//! where `P` is the number of all pairs and `F(k)` the mean of `π(d_ij, k)`
//! over the pairs, i.e. the expected share of all pairs that collide in a
//! table. [`LshParams::for_clks`] estimates `F` from a seeded sample of random
//! pairs of the actual clks (which catches the structure of real encodings:
//! unrelated records share the bits of common n-grams); [`LshParams::for_threshold`]
//! assumes independent bits of density `c / l`.
//!
//! # Memory and output
//!
//! Tables are processed in batches of eight: each clk is read once per batch
//! and hashed in all eight tables; each table's buckets are then formed by
//! sorting one `u64` per record (radix sort on the bucket hash) and searched
//! in parallel, table after table. A pair is emitted only in the first table
//! where it collides: each record keeps a one-byte fingerprint of its bucket
//! in every table, and a pair that meets in table `j` is checked against
//! tables `< j` (a fingerprint match is confirmed by recomputing both
//! buckets). So no set of pairs is ever held: memory is the clks, `L` bytes
//! per record, and two `u64` per record and table of the batch. The output
//! order is fixed (table, bucket, row), whatever the thread count.
//!
//! [`lsh_search`] scores every pair met (on rayon's threads) and checks only
//! the pairs it keeps against the earlier tables: scoring a pair again is
//! cheaper than the check, and most pairs met score far below the threshold.
//!
//! # What limits it: how far apart unrelated records are
//!
//! Bit sampling separates true pairs from unrelated ones only as well as
//! their Hamming distances differ. With clks of density `ρ`, unrelated
//! records differ in about `2ρ(1 − ρ) l` bits, while a pair at the threshold
//! differs in `2ρ l (1 − t)`. Random clks of density 0.3 at `t = 0.8`: 430
//! against 123 bits of 1024, and LSH leaves one pair in 20,000 at 10^6
//! records per site. Records encoded with the default schema (density 0.44)
//! at `pprl match`'s default threshold 0.7: about 505 against 270 bits, and
//! LSH leaves 13% of the pairs for the threshold guarantee, 1–3% when it
//! plans for the best matches ([`LshTarget::BestMatches`]); at 10^6 records
//! per site that is no faster than comparing all pairs
//! ([`LshPlan::worthwhile`] says so). There, compare all pairs, raise the
//! threshold, or use site-side blocking keys.
//!
//! # Guards against huge buckets
//!
//! A record whose `k` sampled bits are all zero (a sparse clk, e.g. many
//! missing values) is left out of that table: such buckets are large and say
//! nothing about similarity. A bucket with more than `max_bucket_pairs` pairs
//! is skipped and counted in [`BlockStats`], so a degenerate input cannot
//! blow up quadratically; its pairs may still meet in other tables.
// Per-wave results are tuples of candidate lists, stats and ranges; naming
// each would not make them clearer.
#![allow(clippy::type_complexity)]

use std::ops::Range;

use rayon::prelude::*;

use crate::similarity::{Kernel, and_popcounts, dice_score};

/// The default seed of the sampled positions. The positions need not be
/// secret: they only depend on the seed and the filter, never on identifiers.
pub const DEFAULT_SEED: u64 = 0x5EED_B10C_4C53_4801;

/// The default probability that a pair at the distance budget is found.
pub const DEFAULT_RECALL: f64 = 0.99;

/// The most tables [`LshParams::for_clks`] chooses by default: each costs one
/// byte per record.
pub const MAX_TABLES: usize = 256;

// At most this many bytes of fingerprints.
const MAX_FINGERPRINT_BYTES: f64 = (1u64 << 30) as f64;

// Fewer best matches than this in the sample: plan for the threshold.
const MIN_PILOT_PAIRS: usize = 20;

/// The default cap on the pairs of one bucket.
pub const DEFAULT_MAX_BUCKET_PAIRS: u64 = 1 << 22;

// The cost model's weights, in nanoseconds of one core: hashing, sorting and
// fingerprinting one record in one table, and scoring one pair met in a
// bucket, which at scale is two cache misses for two random clks (measured
// with `benches/block.rs` at 10^6 records per site).
const COST_RECORD: f64 = 70.0;
const COST_PAIR: f64 = 200.0;

/// Nanoseconds per pair and core of the all-pairs search (length filter,
/// tiles, AVX-512 or AVX2 popcount) on 1024-bit clks, for [`LshPlan::worthwhile`].
pub const ALL_PAIRS_NS: f64 = 4.0;

// Random pairs sampled by `for_clks` to estimate `F(k)`.
const SAMPLE_PAIRS: usize = 4096;

// The record's site in a sort entry (bit 31 of the low half).
const SIDE_B: u64 = 1 << 31;
const ROW_MASK: u64 = SIDE_B - 1;

// An entry for a record left out of a table (never a real entry: rows are
// below `ROW_MASK`).
const EMPTY: u64 = u64::MAX;

// Tables hashed together (each clk read once per batch), and rows per task.
const BATCH: usize = 8;
const HASH_ROWS: usize = 2048;

// Pairs met whose clks are fetched together before they are scored.
const PENDING: usize = 32;

// Sorted entries per parallel task, and tasks whose pairs are held at once.
const SEGMENT: usize = 1 << 14;
const WAVE: usize = 32;

/// Hamming-LSH parameters. Derive them with [`LshParams::for_clks`], then
/// override fields as needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LshParams {
    /// `L`: the number of tables.
    pub tables: usize,
    /// `k`: sampled bit positions per table (at most the informative bits).
    pub bits_per_key: usize,
    /// Seeds the sampled positions.
    pub seed: u64,
    /// A record whose key has fewer set bits is left out of that table.
    pub min_key_bits: u32,
    /// A bucket with more pairs is skipped (and counted).
    pub max_bucket_pairs: u64,
}

/// What derived parameters promise to find, with probability at least
/// [`PlanOptions::recall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LshTarget {
    /// Each pair at the threshold, both clks of the mean popcount (at the
    /// distance budget `d`): the guarantee of the module documentation.
    Threshold,
    /// On average, the best matches of a seeded sample of `sample_rows`
    /// records of site A: each is compared with every record of the other
    /// site (the similarity kernel, `sample_rows × n_B` comparisons) and its
    /// best partner scoring at least the threshold is kept. The recall is
    /// then the mean of `1 − (1 − π(d_i, k))^L` over their distances: the
    /// pairs a one-to-one solver links, rather than every pair just above the
    /// threshold. Falls back to [`LshTarget::Threshold`] when the sample
    /// finds fewer than 20 matches.
    BestMatches { sample_rows: usize },
}

/// How [`LshParams::for_clks_with`] chooses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanOptions {
    /// The probability to reach (default [`DEFAULT_RECALL`]).
    pub recall: f64,
    /// What it must be reached for (default [`LshTarget::Threshold`]).
    pub target: LshTarget,
    /// At most this many tables (default [`MAX_TABLES`]); also at most 1 GiB
    /// of fingerprints (one byte per record and table).
    pub max_tables: usize,
    /// Only parameters whose expected reduction ratio (`1 − L · F(k)`) is at
    /// least this (default 0: the least work wins whatever it leaves).
    pub min_reduction_ratio: f64,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            recall: DEFAULT_RECALL,
            target: LshTarget::Threshold,
            max_tables: MAX_TABLES,
            min_reduction_ratio: 0.0,
        }
    }
}

/// Parameters and the figures they were derived from.
#[derive(Debug, Clone, PartialEq)]
pub struct LshPlan {
    pub params: LshParams,
    /// The threshold the plan is for.
    pub threshold: f64,
    /// `l`: bits that differ between some records.
    pub informative_bits: usize,
    /// `c`: the typical popcount.
    pub popcount: f64,
    /// `d`: the Hamming distance of a pair at the threshold, both of popcount `c`.
    pub budget: usize,
    /// `π(d, k)`: the chance that such a pair collides in one table.
    pub collision: f64,
    /// The distances the recall is for: 1 (the budget), or the sampled best matches.
    pub target_pairs: usize,
    /// The mean of `1 − (1 − π(d_i, k))^L` over the target distances: for
    /// the budget, the chance that a pair at the threshold collides at least once.
    pub recall: f64,
    /// `L · P · F(k)`: expected pairs met in buckets, repeats included (the
    /// comparisons left).
    pub expected_comparisons: f64,
    /// `P`: all pairs.
    pub all_pairs: u64,
    /// `work(k)` of the cost model, in nanoseconds of one core.
    pub expected_work_ns: f64,
}

impl LshPlan {
    /// Whether LSH is expected to take at most half the time of comparing all
    /// pairs with the tiled kernel (about [`ALL_PAIRS_NS`] per pair and core).
    /// For `--blocking auto`.
    pub fn worthwhile(&self) -> bool {
        self.expected_work_ns <= 0.5 * self.all_pairs as f64 * ALL_PAIRS_NS
    }
}

/// What a blocking run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Every pair: `n_A · n_B`, or `n (n − 1) / 2` within one site.
    pub all_pairs: u64,
    /// Distinct pairs emitted (with a scoring search: the pairs kept).
    pub candidates: u64,
    /// Pairs met in buckets (and scored, with a scoring search), over all
    /// tables or keys, repeats included: the comparisons blocking leaves.
    pub comparisons: u64,
    /// Pairs met again after their first table or key, not emitted again
    /// (with a scoring search, only kept pairs are checked and counted).
    pub repeats: u64,
    /// Buckets skipped for having more than `max_bucket_pairs` pairs.
    pub oversize_buckets: u64,
    /// Pairs in the skipped buckets.
    pub oversize_pairs: u64,
    /// Record keys left out of a table for having too few set bits.
    pub sparse_keys: u64,
}

impl BlockStats {
    /// Comparisons avoided over all pairs: `1 − comparisons / all_pairs`
    /// (0 when there are no pairs). Repeats count as comparisons, so this is
    /// at most the ratio for distinct candidates.
    pub fn reduction_ratio(&self) -> f64 {
        if self.all_pairs == 0 {
            0.0
        } else {
            1.0 - self.comparisons as f64 / self.all_pairs as f64
        }
    }

    /// `1 − candidates / all_pairs`: the reduction ratio of the literature
    /// (distinct candidate pairs), for [`lsh_candidates`] and
    /// [`key_candidates`]; with a scoring search it counts only kept pairs.
    pub fn candidate_reduction_ratio(&self) -> f64 {
        if self.all_pairs == 0 {
            0.0
        } else {
            1.0 - self.candidates as f64 / self.all_pairs as f64
        }
    }

    fn add(&mut self, other: &BlockStats) {
        self.candidates += other.candidates;
        self.comparisons += other.comparisons;
        self.repeats += other.repeats;
        self.oversize_buckets += other.oversize_buckets;
        self.oversize_pairs += other.oversize_pairs;
        self.sparse_keys += other.sparse_keys;
    }
}

/// Input or settings that blocking refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockError {
    /// A threshold outside `(0, 1]`.
    #[error("the threshold must be in (0, 1], got {threshold}")]
    Threshold { threshold: f64 },
    /// No `k` finds a pair at the threshold with the required probability
    /// within [`MAX_TABLES`] tables (the threshold is too low for LSH).
    #[error(
        "no LSH parameters reach recall {recall} and reduction ratio {min_reduction_ratio} at \
         threshold {threshold} with at most {max_tables} tables (distance budget {budget} of \
         {informative_bits} informative bits); compare all pairs instead"
    )]
    Unreachable {
        threshold: f64,
        recall: f64,
        min_reduction_ratio: f64,
        budget: usize,
        informative_bits: usize,
        max_tables: usize,
    },
    /// A clk array whose length is not a multiple of the words per clk.
    #[error("site {site}: {len} words is not a whole number of clks of {words} words")]
    ClkLength {
        site: &'static str,
        len: usize,
        words: usize,
    },
    /// More records than a candidate pair's `u32` rows can address.
    #[error("site {site}: {records} records, at most {max} can be blocked")]
    TooManyRecords {
        site: &'static str,
        records: usize,
        max: usize,
    },
    /// No tables, or no bits per key.
    #[error("LSH needs at least one table and one bit per key, got {tables} and {bits_per_key}")]
    Params { tables: usize, bits_per_key: usize },
    /// A pair naming a row past the end of its site.
    #[error("pair ({a}, {b}) is out of range: the sites have {records_a} and {records_b} records")]
    PairOutOfRange {
        a: u32,
        b: u32,
        records_a: usize,
        records_b: usize,
    },
    /// One site given keys for a different number of records than it has.
    #[error("site {site}: {keys} key lists for {records} records")]
    KeyCount {
        site: &'static str,
        keys: usize,
        records: usize,
    },
}

impl LshParams {
    /// Parameters for `threshold` derived from the clks themselves: the
    /// informative bits, the mean popcount, and `F(k)` estimated on a seeded
    /// sample of random pairs (see the module documentation). `b = None`
    /// plans deduplication within `a`.
    ///
    /// # Errors
    /// [`BlockError::Threshold`], [`BlockError::ClkLength`],
    /// [`BlockError::Unreachable`].
    pub fn for_clks(
        threshold: f64,
        a: &[u64],
        b: Option<&[u64]>,
        words: usize,
    ) -> Result<LshPlan, BlockError> {
        LshParams::for_clks_with(threshold, a, b, words, &PlanOptions::default())
    }

    /// [`LshParams::for_clks`] with a choice of recall target and table limit.
    ///
    /// # Errors
    /// As [`LshParams::for_clks`].
    pub fn for_clks_with(
        threshold: f64,
        a: &[u64],
        b: Option<&[u64]>,
        words: usize,
        options: &PlanOptions,
    ) -> Result<LshPlan, BlockError> {
        check_threshold(threshold)?;
        let (n_a, n_b) = (
            clk_count(a, words, "A")?,
            b.map(|b| clk_count(b, words, "B")).transpose()?,
        );
        let informative = informative_mask(a, b, words);
        let bits: usize = informative.iter().map(|w| w.count_ones() as usize).sum();
        let total: u64 = [Some(a), b]
            .into_iter()
            .flatten()
            .map(|clks| {
                clks.par_iter()
                    .map(|w| u64::from(w.count_ones()))
                    .sum::<u64>()
            })
            .sum();
        let records = n_a + n_b.unwrap_or(0);
        let popcount = if records == 0 {
            0.0
        } else {
            total as f64 / records as f64
        };
        let budget = budget(threshold, popcount);

        // Hamming distances of a seeded sample of random pairs.
        let mut rng = SplitMix64(DEFAULT_SEED ^ 0xF00D);
        let mut distances = Vec::with_capacity(SAMPLE_PAIRS);
        let other = b.unwrap_or(a);
        let n_other = n_b.unwrap_or(n_a);
        if n_a > 0 && n_other > 0 && (b.is_some() || n_a > 1) {
            while distances.len() < SAMPLE_PAIRS {
                let i = rng.below(n_a);
                let j = rng.below(n_other);
                if b.is_none() && i == j {
                    continue;
                }
                let x = &a[i * words..(i + 1) * words];
                let y = &other[j * words..(j + 1) * words];
                distances.push(
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| (p ^ q).count_ones())
                        .sum::<u32>(),
                );
            }
        }
        let mut sum_f = vec![0.0; bits + 1];
        for &d in &distances {
            let mut pi = 1.0;
            for (k, f) in sum_f.iter_mut().enumerate().skip(1) {
                pi *= collision_step(bits, d as usize, k - 1);
                if pi == 0.0 {
                    break;
                }
                *f += pi;
            }
        }
        let samples = distances.len().max(1) as f64;
        let targets = match options.target {
            LshTarget::Threshold => vec![budget],
            LshTarget::BestMatches { sample_rows } => {
                let found = best_match_distances(threshold, a, b, words, sample_rows);
                if found.len() < MIN_PILOT_PAIRS {
                    vec![budget]
                } else {
                    found
                }
            }
        };
        plan(
            threshold,
            bits,
            popcount,
            n_a,
            n_b,
            &targets,
            options,
            |k| sum_f.get(k).map_or(0.0, |f| f / samples),
        )
    }

    /// Parameters for `threshold` from a model: clks of `filter_bits` bits,
    /// every bit set independently with density `popcount / filter_bits`, so
    /// unrelated pairs are at distance `2 c (1 − c / l)`. Prefer
    /// [`LshParams::for_clks`] when the clks are at hand.
    ///
    /// # Errors
    /// [`BlockError::Threshold`], [`BlockError::Unreachable`].
    pub fn for_threshold(
        threshold: f64,
        filter_bits: usize,
        popcount: f64,
        records_a: usize,
        records_b: Option<usize>,
    ) -> Result<LshPlan, BlockError> {
        check_threshold(threshold)?;
        let l = filter_bits as f64;
        let density = if filter_bits == 0 {
            0.0
        } else {
            (popcount / l).clamp(0.0, 1.0)
        };
        let unrelated = (2.0 * density * (1.0 - density) * l).round() as usize;
        let options = PlanOptions::default();
        let targets = [budget(threshold, popcount)];
        plan(
            threshold,
            filter_bits,
            popcount,
            records_a,
            records_b,
            &targets,
            &options,
            |k| collision_probability(filter_bits, unrelated, k),
        )
    }
}

/// `π(d, k)`: the chance that `k` distinct positions drawn uniformly from `bits`
/// miss all `distance` positions where a pair differs.
pub fn collision_probability(bits: usize, distance: usize, k: usize) -> f64 {
    (0..k).map(|i| collision_step(bits, distance, i)).product()
}

/// The `i`-th factor of `π(d, k)`: `(l − d − i) / (l − i)`, or 0.
fn collision_step(bits: usize, distance: usize, i: usize) -> f64 {
    if distance + i >= bits {
        0.0
    } else {
        (bits - distance - i) as f64 / (bits - i) as f64
    }
}

/// `d = floor(2c (1 − t))`.
fn budget(threshold: f64, popcount: f64) -> usize {
    (2.0 * popcount * (1.0 - threshold) + 1e-9).floor().max(0.0) as usize
}

fn check_threshold(threshold: f64) -> Result<(), BlockError> {
    if threshold > 0.0 && threshold <= 1.0 {
        Ok(())
    } else {
        Err(BlockError::Threshold { threshold })
    }
}

/// The least-work `k` and its `L`, given `F(k)` (see the module documentation):
/// `L` is the fewest tables that find the pairs at the `targets` distances
/// with mean probability at least `options.recall`.
#[allow(clippy::too_many_arguments)]
fn plan(
    threshold: f64,
    bits: usize,
    popcount: f64,
    n_a: usize,
    n_b: Option<usize>,
    targets: &[usize],
    options: &PlanOptions,
    false_collision: impl Fn(usize) -> f64,
) -> Result<LshPlan, BlockError> {
    let budget = budget(threshold, popcount);
    let records = (n_a + n_b.unwrap_or(0)) as f64;
    let all = all_pairs(n_a, n_b);
    let pairs = all as f64;
    // Fingerprints cost a byte per record and table.
    let max_tables = options
        .max_tables
        .min((MAX_FINGERPRINT_BYTES / records.max(1.0)) as usize)
        .max(1);
    let work = |tables: usize, k: usize| {
        tables as f64 * (records * COST_RECORD + pairs * false_collision(k) * COST_PAIR)
    };
    let recall_at = |pis: &[f64], tables: usize| {
        pis.iter()
            .map(|&pi| 1.0 - (1.0 - pi).powi(tables as i32))
            .sum::<f64>()
            / pis.len() as f64
    };
    let mut pis = vec![1.0; targets.len()];
    let mut best: Option<(f64, usize, usize, f64)> = None;
    let nearest = targets.iter().copied().min().unwrap_or(budget);
    for k in 1..=bits.saturating_sub(nearest) {
        for (pi, &d) in pis.iter_mut().zip(targets) {
            *pi *= collision_step(bits, d, k - 1);
        }
        let reached = recall_at(&pis, max_tables);
        if reached < options.recall {
            // The reachable recall only falls as k grows.
            break;
        }
        // The fewest tables that reach the recall (it grows with the tables).
        let (mut lo, mut hi) = (1, max_tables);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if recall_at(&pis, mid) >= options.recall {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if 1.0 - lo as f64 * false_collision(k) < options.min_reduction_ratio {
            continue;
        }
        let w = work(lo, k);
        if best.is_none_or(|(best_w, ..)| w < best_w) {
            best = Some((w, k, lo, recall_at(&pis, lo)));
        }
    }
    let Some((expected_work_ns, k, tables, recall)) = best else {
        return Err(BlockError::Unreachable {
            threshold,
            recall: options.recall,
            min_reduction_ratio: options.min_reduction_ratio,
            budget,
            informative_bits: bits,
            max_tables,
        });
    };
    Ok(LshPlan {
        params: LshParams {
            tables,
            bits_per_key: k,
            seed: DEFAULT_SEED,
            min_key_bits: 1,
            max_bucket_pairs: DEFAULT_MAX_BUCKET_PAIRS,
        },
        threshold,
        informative_bits: bits,
        popcount,
        budget,
        collision: collision_probability(bits, budget, k),
        target_pairs: targets.len(),
        recall,
        expected_comparisons: tables as f64 * pairs * false_collision(k),
        all_pairs: all,
        expected_work_ns,
    })
}

/// The Hamming distances of the best matches (score at least `threshold`)
/// of a seeded sample of `sample_rows` rows of `a`, each compared with every
/// record of `b` (or of `a`, itself excepted), with the similarity kernel.
fn best_match_distances(
    threshold: f64,
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    sample_rows: usize,
) -> Vec<usize> {
    let n_a = a.len() / words;
    let other = b.unwrap_or(a);
    let n_other = other.len() / words;
    if n_a == 0 || n_other == 0 {
        return Vec::new();
    }
    let mut rows: Vec<usize> = (0..n_a).collect();
    let mut rng = SplitMix64(DEFAULT_SEED ^ 0xB357);
    let take = sample_rows.min(n_a);
    for i in 0..take {
        let j = i + rng.below(n_a - i);
        rows.swap(i, j);
    }
    rows.truncate(take);
    let pop = |clk: &[u64]| clk.iter().map(|w| w.count_ones()).sum::<u32>();
    let pop_other: Vec<u32> = other.par_chunks_exact(words).map(pop).collect();
    let kernel = Kernel::best();
    rows.par_iter()
        .map_init(
            || vec![0u32; n_other],
            |counts, &i| {
                let clk = &a[i * words..(i + 1) * words];
                and_popcounts(kernel, clk, other, counts);
                let pa = pop(clk);
                let mut best: Option<(f64, usize)> = None;
                for (j, (&c, &pb)) in counts.iter().zip(&pop_other).enumerate() {
                    if b.is_none() && j == i {
                        continue;
                    }
                    let s = dice_score(c, pa, pb);
                    if s >= threshold && best.is_none_or(|(bs, _)| s > bs) {
                        best = Some((s, (pa + pb - 2 * c) as usize));
                    }
                }
                best.map(|(_, d)| d)
            },
        )
        .filter_map(|d| d)
        .collect()
}

fn all_pairs(n_a: usize, n_b: Option<usize>) -> u64 {
    match n_b {
        Some(n_b) => n_a as u64 * n_b as u64,
        None => (n_a as u64 * n_a.saturating_sub(1) as u64) / 2,
    }
}

fn clk_count(clks: &[u64], words: usize, site: &'static str) -> Result<usize, BlockError> {
    if words == 0 || !clks.len().is_multiple_of(words) {
        return Err(BlockError::ClkLength {
            site,
            len: clks.len(),
            words,
        });
    }
    let n = clks.len() / words;
    if n as u64 > ROW_MASK {
        return Err(BlockError::TooManyRecords {
            site,
            records: n,
            max: ROW_MASK as usize,
        });
    }
    Ok(n)
}

/// The records of each site, after checking the clks and the parameters.
fn check_lsh_input(
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    params: &LshParams,
) -> Result<(usize, Option<usize>), BlockError> {
    let n_a = clk_count(a, words, "A")?;
    let n_b = b.map(|b| clk_count(b, words, "B")).transpose()?;
    if params.tables == 0 || params.bits_per_key == 0 {
        return Err(BlockError::Params {
            tables: params.tables,
            bits_per_key: params.bits_per_key,
        });
    }
    Ok((n_a, n_b))
}

/// Bits set in some record and clear in some other (over both sites).
fn informative_mask(a: &[u64], b: Option<&[u64]>, words: usize) -> Vec<u64> {
    let merge = |(mut or, mut and): (Vec<u64>, Vec<u64>), (o2, n2): (Vec<u64>, Vec<u64>)| {
        for ((o, n), (p, q)) in or.iter_mut().zip(and.iter_mut()).zip(o2.iter().zip(&n2)) {
            *o |= p;
            *n &= q;
        }
        (or, and)
    };
    let identity = || (vec![0u64; words], vec![u64::MAX; words]);
    let (or, and) = [Some(a), b]
        .into_iter()
        .flatten()
        .map(|clks| {
            clks.par_chunks_exact(words)
                .fold(identity, |(mut or, mut and), clk| {
                    for ((o, n), w) in or.iter_mut().zip(and.iter_mut()).zip(clk) {
                        *o |= w;
                        *n &= w;
                    }
                    (or, and)
                })
                .reduce(identity, merge)
        })
        .fold(identity(), merge);
    or.iter().zip(&and).map(|(o, n)| o & !n).collect()
}

/// One table: the sampled positions as per-word masks, and a salt.
#[derive(Debug, Clone)]
struct Table {
    masks: Vec<(usize, u64)>,
    salt: u64,
}

impl Table {
    /// The 64-bit hash of the clk's key and whether the key has at least `min_bits` set bits.
    #[inline]
    fn hash(&self, clk: &[u64], min_bits: u32) -> (u64, bool) {
        let mut h = self.salt;
        let mut any = 0u64;
        let mut ones = 0u32;
        for &(w, m) in &self.masks {
            let v = clk[w] & m;
            any |= v;
            if min_bits > 1 {
                ones += v.count_ones();
            }
            h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        }
        let dense = match min_bits {
            0 => true,
            1 => any != 0,
            _ => ones >= min_bits,
        };
        (mix64(h), dense)
    }
}

/// The bucket (high half) and one-byte fingerprint (never 0) of a key hash.
#[inline]
fn bucket(h: u64) -> u64 {
    h >> 32
}

#[inline]
fn fingerprint(h: u64) -> u8 {
    (h as u8).max(1)
}

/// `tables` tables of `k` distinct positions among the informative bits.
fn make_tables(params: &LshParams, informative: &[u64]) -> Vec<Table> {
    let positions: Vec<usize> = informative
        .iter()
        .enumerate()
        .flat_map(|(w, &m)| {
            (0..64)
                .filter(move |b| m >> b & 1 == 1)
                .map(move |b| w * 64 + b)
        })
        .collect();
    let k = params.bits_per_key.min(positions.len());
    (0..params.tables)
        .map(|t| {
            let mut rng = SplitMix64(params.seed ^ mix64(t as u64 + 1));
            let mut pool = positions.clone();
            let mut masks: Vec<(usize, u64)> = Vec::new();
            let mut chosen: Vec<usize> = (0..k)
                .map(|i| {
                    let j = i + rng.below(pool.len() - i);
                    pool.swap(i, j);
                    pool[i]
                })
                .collect();
            chosen.sort_unstable();
            for p in chosen {
                match masks.last_mut() {
                    Some((w, m)) if *w == p / 64 => *m |= 1 << (p % 64),
                    _ => masks.push((p / 64, 1 << (p % 64))),
                }
            }
            Table {
                masks,
                salt: rng.next_u64(),
            }
        })
        .collect()
}

/// The clks of one site and the fingerprints of their buckets so far.
struct SiteState<'a> {
    clks: &'a [u64],
    /// `fp[row * tables + t]`: fingerprint of the row's bucket in table `t`;
    /// 0 when the row was in no usable bucket of that table.
    fp: Vec<u8>,
}

/// Candidate pairs by Hamming LSH (see the module documentation), streamed to
/// `consume` in chunks, each pair once. With `b = None`, pairs `(i, j)` with
/// `i < j` within `a` (deduplication). `a` and `b` hold `words` words per clk.
///
/// # Errors
/// [`BlockError::ClkLength`], [`BlockError::TooManyRecords`], [`BlockError::Params`].
pub fn lsh_candidates(
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    params: &LshParams,
    mut consume: impl FnMut(&[(u32, u32)]),
) -> Result<BlockStats, BlockError> {
    lsh_search(
        a,
        b,
        words,
        params,
        |_, _| Some(()),
        |kept| {
            let pairs: Vec<(u32, u32)> = kept.into_iter().map(|(i, j, ())| (i, j)).collect();
            consume(&pairs)
        },
    )
}

/// [`lsh_candidates`] gathered into one vector, in the order they are
/// streamed: for inputs small enough to hold every candidate pair at once.
///
/// # Errors
/// As [`lsh_candidates`].
pub fn lsh_candidate_pairs(
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    params: &LshParams,
) -> Result<(Vec<(u32, u32)>, BlockStats), BlockError> {
    let mut pairs = Vec::new();
    let stats = lsh_candidates(a, b, words, params, |chunk| pairs.extend_from_slice(chunk))?;
    Ok((pairs, stats))
}

/// [`lsh_candidates`] that scores as it goes: every pair met in a bucket is
/// passed to `score` (on rayon's threads), and only the pairs it keeps
/// (`Some`) are deduplicated and streamed to `consume`, in a fixed order,
/// each once, with their score. Scoring a pair again when it meets again in
/// a later table is cheaper than checking every pair against the earlier
/// tables, since most pairs met are far below the threshold. `score` must be
/// a function of the pair alone.
///
/// [`BlockStats::comparisons`] counts the calls to `score`,
/// [`BlockStats::candidates`] the pairs kept.
///
/// # Errors
/// As [`lsh_candidates`].
pub fn lsh_search<S, K, C>(
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    params: &LshParams,
    score: K,
    mut consume: C,
) -> Result<BlockStats, BlockError>
where
    S: Send,
    K: Fn(u32, u32) -> Option<S> + Sync,
    C: FnMut(Vec<(u32, u32, S)>),
{
    let (n_a, n_b) = check_lsh_input(a, b, words, params)?;
    let mut stats = BlockStats {
        all_pairs: all_pairs(n_a, n_b),
        ..BlockStats::default()
    };
    if n_a == 0 || n_b == Some(0) {
        return Ok(stats);
    }
    let tables = make_tables(params, &informative_mask(a, b, words));
    let l = tables.len();
    let mut site_a = SiteState {
        clks: a,
        fp: vec![0; n_a * l],
    };
    let mut site_b = b.map(|clks| SiteState {
        clks,
        fp: vec![0; clks.len() / words * l],
    });
    let records = n_a + n_b.unwrap_or(0);
    let mut keys: Vec<u64> = vec![0; BATCH.min(l) * records];
    let mut scratch: Vec<u64> = vec![0; BATCH.min(l) * records];
    for first in (0..l).step_by(BATCH) {
        let width = BATCH.min(l - first);
        let batch = &tables[first..first + width];
        let keys = &mut keys[..width * records];
        // Each clk is read once per batch of tables.
        hash_batch(
            batch,
            first,
            &mut site_a,
            keys,
            0,
            words,
            l,
            params.min_key_bits,
        );
        if let Some(site_b) = site_b.as_mut() {
            hash_batch(
                batch,
                first,
                site_b,
                keys,
                n_a,
                words,
                l,
                params.min_key_bits,
            );
        }
        let lens: Vec<usize> = keys
            .par_chunks_mut(records)
            .zip(scratch.par_chunks_mut(records))
            .map(|(k, s)| sort_entries(k, s))
            .collect();
        for (tb, &len) in lens.iter().enumerate() {
            let t = first + tb;
            let entries = &keys[tb * records..tb * records + len];
            stats.sparse_keys += (records - len) as u64;
            let ctx = TableCtx {
                t,
                l,
                words,
                tables: &tables,
                a: &site_a,
                b: site_b.as_ref(),
                max_bucket_pairs: params.max_bucket_pairs,
            };
            let segments = segments(entries, |x, y| bucket_of(*x) == bucket_of(*y));
            let mut oversize: Vec<Range<usize>> = Vec::new();
            for wave in segments.chunks(WAVE) {
                let outs: Vec<_> = wave
                    .par_iter()
                    .map(|range| ctx.segment(entries, range.clone(), &score))
                    .collect();
                for (kept, seg_stats, big) in outs {
                    stats.add(&seg_stats);
                    oversize.extend(big);
                    if !kept.is_empty() {
                        consume(kept);
                    }
                }
            }
            // Rows of skipped buckets did not collide there: later tables must
            // not take that table for their first collision.
            for range in oversize {
                for &e in &entries[range] {
                    let row = (e & ROW_MASK) as usize;
                    match (&mut site_b, e & SIDE_B != 0) {
                        (Some(site_b), true) => site_b.fp[row * l + t] = 0,
                        _ => site_a.fp[row * l + t] = 0,
                    }
                }
            }
        }
    }
    Ok(stats)
}

/// Hashes every row of `site` in the tables of `batch` (tables `first..`):
/// writes the rows' fingerprints, and their sort entries into `keys` (table
/// after table, `records` entries each, this site's rows from `offset`; a
/// sparse key gets [`EMPTY`]).
#[allow(clippy::too_many_arguments)]
fn hash_batch(
    batch: &[Table],
    first: usize,
    site: &mut SiteState<'_>,
    keys: &mut [u64],
    offset: usize,
    words: usize,
    l: usize,
    min_bits: u32,
) {
    let rows = site.clks.len() / words;
    let records = keys.len() / batch.len();
    let side = if offset == 0 { 0 } else { SIDE_B };
    // For each chunk of rows, its slice of every table's entries.
    let mut per_table: Vec<_> = keys
        .chunks_mut(records)
        .map(|k| k[offset..offset + rows].chunks_mut(HASH_ROWS))
        .collect();
    let chunks: Vec<Vec<&mut [u64]>> = (0..rows.div_ceil(HASH_ROWS))
        .map(|_| per_table.iter_mut().filter_map(Iterator::next).collect())
        .collect();
    chunks
        .into_par_iter()
        .zip(site.fp.par_chunks_mut(HASH_ROWS * l))
        .zip(site.clks.par_chunks(HASH_ROWS * words))
        .enumerate()
        .for_each(|(c, ((mut outs, fp), clks))| {
            for (r, clk) in clks.chunks_exact(words).enumerate() {
                let row = (c * HASH_ROWS + r) as u64;
                for (tb, table) in batch.iter().enumerate() {
                    let (h, dense) = table.hash(clk, min_bits);
                    fp[r * l + first + tb] = if dense { fingerprint(h) } else { 0 };
                    outs[tb][r] = if dense {
                        bucket(h) << 32 | side | row
                    } else {
                        EMPTY
                    };
                }
            }
        });
}

/// Drops [`EMPTY`] entries and sorts the rest, leaving them at the front of
/// `keys`; returns their number. One pass scatters the entries by the top 12
/// bits of their bucket into `scratch`, then each part (a few thousand
/// entries, in cache) is sorted and copied back.
fn sort_entries(keys: &mut [u64], scratch: &mut [u64]) -> usize {
    const PARTS: usize = 1 << 12;
    let part = |e: u64| (e >> (64 - 12)) as usize;
    let mut starts = vec![0usize; PARTS + 1];
    let mut n = 0;
    for &e in keys.iter() {
        if e != EMPTY {
            starts[part(e) + 1] += 1;
            n += 1;
        }
    }
    for p in 0..PARTS {
        starts[p + 1] += starts[p];
    }
    let mut cursor = starts.clone();
    for &e in keys.iter() {
        if e != EMPTY {
            let p = part(e);
            scratch[cursor[p]] = e;
            cursor[p] += 1;
        }
    }
    for p in 0..PARTS {
        let range = starts[p]..starts[p + 1];
        scratch[range.clone()].sort_unstable();
        keys[range.clone()].copy_from_slice(&scratch[range]);
    }
    n
}

#[inline]
fn bucket_of(entry: u64) -> u64 {
    entry >> 32
}

/// Splits sorted `entries` into ranges of about [`SEGMENT`] that never cut a group.
fn segments<E>(entries: &[E], same: impl Fn(&E, &E) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = (start + SEGMENT).min(entries.len());
        while end < entries.len() && same(&entries[end - 1], &entries[end]) {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// What the pair search of one table needs.
struct TableCtx<'a> {
    t: usize,
    l: usize,
    words: usize,
    tables: &'a [Table],
    a: &'a SiteState<'a>,
    b: Option<&'a SiteState<'a>>,
    max_bucket_pairs: u64,
}

impl TableCtx<'_> {
    /// The kept first-collision pairs of the buckets in `entries[range]`,
    /// their statistics, and the ranges of skipped buckets.
    fn segment<S>(
        &self,
        entries: &[u64],
        range: Range<usize>,
        score: &(impl Fn(u32, u32) -> Option<S> + Sync),
    ) -> (Vec<(u32, u32, S)>, BlockStats, Vec<Range<usize>>) {
        let mut kept = Vec::new();
        let mut stats = BlockStats::default();
        let mut oversize = Vec::new();
        let mut pending = Vec::with_capacity(PENDING);
        let mut start = range.start;
        while start < range.end {
            let key = bucket_of(entries[start]);
            let mut end = start + 1;
            while end < range.end && bucket_of(entries[end]) == key {
                end += 1;
            }
            let group = &entries[start..end];
            let (ga, gb) = match self.b {
                Some(_) => group.split_at(group.partition_point(|e| e & SIDE_B == 0)),
                None => (group, group),
            };
            let met = match self.b {
                Some(_) => ga.len() as u64 * gb.len() as u64,
                None => ga.len() as u64 * (ga.len() as u64).saturating_sub(1) / 2,
            };
            if met > self.max_bucket_pairs {
                stats.oversize_buckets += 1;
                stats.oversize_pairs += met;
                oversize.push(start..end);
            } else if met > 0 {
                stats.comparisons += met;
                for (p, &ea) in ga.iter().enumerate() {
                    let i = (ea & ROW_MASK) as u32;
                    // Within one site, only the rows after `i` (rows ascend in a bucket).
                    let partners = if self.b.is_some() { gb } else { &gb[p + 1..] };
                    for &eb in partners {
                        pending.push((i, (eb & ROW_MASK) as u32));
                        if pending.len() == PENDING {
                            self.flush(&mut pending, score, &mut kept, &mut stats);
                        }
                    }
                }
            }
            start = end;
        }
        self.flush(&mut pending, score, &mut kept, &mut stats);
        stats.candidates = kept.len() as u64;
        (kept, stats, oversize)
    }

    /// Scores the pending pairs and keeps those met here first. The clks of
    /// all pending pairs are touched first: the loads are independent, so the
    /// memory system fetches them together instead of one miss at a time.
    fn flush<S>(
        &self,
        pending: &mut Vec<(u32, u32)>,
        score: &(impl Fn(u32, u32) -> Option<S> + Sync),
        kept: &mut Vec<(u32, u32, S)>,
        stats: &mut BlockStats,
    ) {
        let other = self.b.unwrap_or(self.a);
        let w = self.words;
        let mut touch = 0u64;
        for &(i, j) in pending.iter() {
            let (x, y) = (i as usize * w, j as usize * w);
            touch ^= self.a.clks[x] ^ other.clks[y];
            touch ^= self.a.clks[x + w - 1] ^ other.clks[y + w - 1];
        }
        std::hint::black_box(touch);
        for (i, j) in pending.drain(..) {
            let Some(s) = score(i, j) else {
                continue;
            };
            if self.first_collision(self.a, i as usize, other, j as usize) {
                kept.push((i, j, s));
            } else {
                stats.repeats += 1;
            }
        }
    }

    /// Whether tables `< t` never put rows `i` (of `x`) and `j` (of `y`) in one bucket.
    #[inline]
    fn first_collision(&self, x: &SiteState<'_>, i: usize, y: &SiteState<'_>, j: usize) -> bool {
        let (t, l, words) = (self.t, self.l, self.words);
        let fx = &x.fp[i * l..i * l + t];
        let fy = &y.fp[j * l..j * l + t];
        // Eight tables at a time: any equal byte sends the word to the exact check.
        let mut base = 0;
        for (cx, cy) in fx.chunks(8).zip(fy.chunks(8)) {
            if cx.len() == 8 {
                let v = u64::from_le_bytes(cx.try_into().unwrap_or_default())
                    ^ u64::from_le_bytes(cy.try_into().unwrap_or_default());
                if (v.wrapping_sub(0x0101_0101_0101_0101) & !v & 0x8080_8080_8080_8080) == 0 {
                    base += 8;
                    continue;
                }
            }
            for (o, (&p, &q)) in cx.iter().zip(cy).enumerate() {
                if p == q && p != 0 {
                    let table = &self.tables[base + o];
                    let cxk = &x.clks[i * words..(i + 1) * words];
                    let cyk = &y.clks[j * words..(j + 1) * words];
                    if bucket(table.hash(cxk, 0).0) == bucket(table.hash(cyk, 0).0) {
                        return false;
                    }
                }
            }
            base += cx.len();
        }
        true
    }
}

/// Candidate pairs by equal blocking keys: `(i, j)` is a candidate when
/// records `i` of A and `j` of B share at least one key (with `b = None`,
/// `i < j` within `a`). `keys_a[i]` lists record `i`'s keys (any number,
/// repeats ignored; an empty list blocks the record out). Each pair is
/// emitted once, for the smallest key it shares; keys with more than
/// `max_bucket_pairs` pairs are skipped and counted. Streamed to `consume` in
/// chunks, in a fixed order.
///
/// # Errors
/// [`BlockError::TooManyRecords`].
pub fn key_candidates<K: Ord + Sync>(
    keys_a: &[Vec<K>],
    keys_b: Option<&[Vec<K>]>,
    max_bucket_pairs: u64,
    mut consume: impl FnMut(&[(u32, u32)]),
) -> Result<BlockStats, BlockError> {
    key_search(
        keys_a,
        keys_b,
        max_bucket_pairs,
        |_, _| Some(()),
        |kept| {
            let pairs: Vec<(u32, u32)> = kept.into_iter().map(|(i, j, ())| (i, j)).collect();
            consume(&pairs)
        },
    )
}

/// [`key_candidates`] that scores each distinct candidate with `score` (on
/// rayon's threads) and streams only the kept ones, with their score.
///
/// # Errors
/// As [`key_candidates`].
pub fn key_search<K, S, F, C>(
    keys_a: &[Vec<K>],
    keys_b: Option<&[Vec<K>]>,
    max_bucket_pairs: u64,
    score: F,
    mut consume: C,
) -> Result<BlockStats, BlockError>
where
    K: Ord + Sync,
    S: Send,
    F: Fn(u32, u32) -> Option<S> + Sync,
    C: FnMut(Vec<(u32, u32, S)>),
{
    for (keys, site) in [(Some(keys_a), "A"), (keys_b, "B")] {
        if let Some(keys) = keys
            && keys.len() as u64 > ROW_MASK
        {
            return Err(BlockError::TooManyRecords {
                site,
                records: keys.len(),
                max: ROW_MASK as usize,
            });
        }
    }
    let n_a = keys_a.len();
    let n_b = keys_b.map(<[Vec<K>]>::len);
    let mut stats = BlockStats {
        all_pairs: all_pairs(n_a, n_b),
        ..BlockStats::default()
    };
    // (key, side | row), sorted: groups of one key, A before B, rows ascending.
    let mut entries: Vec<(&K, u64)> = Vec::new();
    for (keys, side) in [(Some(keys_a), 0), (keys_b, SIDE_B)] {
        let Some(keys) = keys else { continue };
        for (row, list) in keys.iter().enumerate() {
            entries.extend(list.iter().map(|k| (k, side | row as u64)));
        }
    }
    entries.par_sort_unstable();
    entries.dedup();
    let groups = segments_of_groups(&entries);
    // Number the usable keys in order, and list each record's usable keys
    // (ascending, as entries are sorted by key): a pair is emitted for the
    // first key the two lists share.
    let mut group_id = vec![u32::MAX; groups.len()];
    let mut next = 0u32;
    for (g, range) in groups.iter().enumerate() {
        let group = &entries[range.clone()];
        let a_len = group.partition_point(|e| e.1 & SIDE_B == 0) as u64;
        let met = match n_b {
            Some(_) => a_len * (group.len() as u64 - a_len),
            None => a_len * a_len.saturating_sub(1) / 2,
        };
        if met > max_bucket_pairs {
            stats.oversize_buckets += 1;
            stats.oversize_pairs += met;
        } else if met > 0 {
            group_id[g] = next;
            next += 1;
        }
    }
    let lists_a = KeyLists::new(&entries, &groups, &group_id, 0, n_a);
    let lists_b = n_b.map(|n| KeyLists::new(&entries, &groups, &group_id, SIDE_B, n));
    let usable: Vec<usize> = (0..groups.len())
        .filter(|&g| group_id[g] != u32::MAX)
        .collect();
    let mut chunks: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    while start < usable.len() {
        // About SEGMENT entries per task.
        let mut end = start;
        let mut size = 0;
        while end < usable.len() && size < SEGMENT {
            size += groups[usable[end]].len();
            end += 1;
        }
        chunks.push(start..end);
        start = end;
    }
    for wave in chunks.chunks(WAVE) {
        let outs: Vec<(Vec<(u32, u32, S)>, BlockStats)> = wave
            .par_iter()
            .map(|range| {
                let mut kept = Vec::new();
                let mut s = BlockStats::default();
                for &g in &usable[range.clone()] {
                    let id = group_id[g];
                    let group = &entries[groups[g].clone()];
                    let split = group.partition_point(|e| e.1 & SIDE_B == 0);
                    let (ga, gb) = match n_b {
                        Some(_) => group.split_at(split),
                        None => (group, group),
                    };
                    let other = lists_b.as_ref().unwrap_or(&lists_a);
                    for (p, &(_, ea)) in ga.iter().enumerate() {
                        let i = (ea & ROW_MASK) as usize;
                        let partners = if n_b.is_some() { gb } else { &gb[p + 1..] };
                        for &(_, eb) in partners {
                            let j = (eb & ROW_MASK) as usize;
                            if first_common(lists_a.of(i), other.of(j)) != Some(id) {
                                s.repeats += 1;
                                continue;
                            }
                            s.comparisons += 1;
                            if let Some(v) = score(i as u32, j as u32) {
                                kept.push((i as u32, j as u32, v));
                            }
                        }
                    }
                }
                s.candidates = kept.len() as u64;
                (kept, s)
            })
            .collect();
        for (kept, s) in outs {
            stats.add(&s);
            if !kept.is_empty() {
                consume(kept);
            }
        }
    }
    Ok(stats)
}

/// The ranges of equal keys in sorted entries.
fn segments_of_groups<K: Ord>(entries: &[(&K, u64)]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = start + 1;
        while end < entries.len() && entries[end].0 == entries[start].0 {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Which of `pairs` (row in A, row in B; with `b = None`, two rows of `a`)
/// [`lsh_search`] with `params` meets in a bucket it does not skip, in some
/// table: the pairs that blocking leaves to be scored. For pair completeness
/// (true pairs that survive blocking) without listing every candidate: one
/// pass over the records per table, whatever the number of candidates.
///
/// # Errors
/// As [`lsh_candidates`]; [`BlockError::PairOutOfRange`] for a row past the end.
pub fn lsh_pairs_met(
    a: &[u64],
    b: Option<&[u64]>,
    words: usize,
    params: &LshParams,
    pairs: &[(u32, u32)],
) -> Result<Vec<bool>, BlockError> {
    let (n_a, n_b) = check_lsh_input(a, b, words, params)?;
    check_pairs(pairs, n_a, n_b.unwrap_or(n_a))?;
    let mut met = vec![false; pairs.len()];
    if n_a == 0 || n_b == Some(0) {
        return Ok(met);
    }
    let tables = make_tables(params, &informative_mask(a, b, words));
    let buckets_of = |table: &Table, clks: &[u64]| -> Vec<u64> {
        clks.par_chunks_exact(words)
            .map(|clk| match table.hash(clk, params.min_key_bits) {
                (h, true) => bucket(h),
                _ => EMPTY,
            })
            .collect()
    };
    let sorted = |buckets: &[u64]| {
        let mut s: Vec<u64> = buckets.iter().copied().filter(|&k| k != EMPTY).collect();
        s.par_sort_unstable();
        s
    };
    let count = |sorted: &[u64], key: u64| {
        (sorted.partition_point(|&k| k <= key) - sorted.partition_point(|&k| k < key)) as u64
    };
    for table in &tables {
        let in_a = buckets_of(table, a);
        let in_b = b.map(|b| buckets_of(table, b));
        let (sorted_a, sorted_b) = (sorted(&in_a), in_b.as_deref().map(sorted));
        met.par_iter_mut()
            .zip(pairs.par_iter())
            .filter(|(m, _)| !**m)
            .for_each(|(m, &(i, j))| {
                let key = in_a[i as usize];
                let other = in_b.as_deref().unwrap_or(&in_a)[j as usize];
                if key == EMPTY || key != other || (b.is_none() && i == j) {
                    return;
                }
                let bucket_pairs = match &sorted_b {
                    Some(sorted_b) => count(&sorted_a, key) * count(sorted_b, key),
                    None => {
                        let n = count(&sorted_a, key);
                        n * n.saturating_sub(1) / 2
                    }
                };
                *m = bucket_pairs <= params.max_bucket_pairs;
            });
    }
    Ok(met)
}

/// Which of `pairs` [`key_search`] meets: the two records share a key whose
/// group it does not skip (see [`lsh_pairs_met`]).
///
/// # Errors
/// [`BlockError::PairOutOfRange`] for a row past the end.
pub fn key_pairs_met<K: Ord + Sync>(
    keys_a: &[Vec<K>],
    keys_b: Option<&[Vec<K>]>,
    max_bucket_pairs: u64,
    pairs: &[(u32, u32)],
) -> Result<Vec<bool>, BlockError> {
    check_pairs(
        pairs,
        keys_a.len(),
        keys_b.map_or(keys_a.len(), <[Vec<K>]>::len),
    )?;
    // Each key once per record, sorted, per site.
    fn site_keys<K: Ord + Sync>(keys: &[Vec<K>]) -> Vec<&K> {
        let mut all: Vec<&K> = keys
            .iter()
            .flat_map(|list| {
                let mut own: Vec<&K> = list.iter().collect();
                own.sort_unstable();
                own.dedup();
                own
            })
            .collect();
        all.par_sort_unstable();
        all
    }
    let count = |sorted: &[&K], key: &K| {
        (sorted.partition_point(|&k| k <= key) - sorted.partition_point(|&k| k < key)) as u64
    };
    let all_a = site_keys(keys_a);
    let all_b = keys_b.map(site_keys);
    Ok(pairs
        .par_iter()
        .map(|&(i, j)| {
            if keys_b.is_none() && i == j {
                return false;
            }
            let other = keys_b.unwrap_or(keys_a);
            keys_a[i as usize].iter().any(|key| {
                other[j as usize].contains(key) && {
                    let bucket_pairs = match &all_b {
                        Some(all_b) => count(&all_a, key) * count(all_b, key),
                        None => {
                            let n = count(&all_a, key);
                            n * n.saturating_sub(1) / 2
                        }
                    };
                    bucket_pairs <= max_bucket_pairs
                }
            })
        })
        .collect())
}

fn check_pairs(pairs: &[(u32, u32)], n_a: usize, n_b: usize) -> Result<(), BlockError> {
    match pairs
        .iter()
        .find(|&&(i, j)| i as usize >= n_a || j as usize >= n_b)
    {
        Some(&(i, j)) => Err(BlockError::PairOutOfRange {
            a: i,
            b: j,
            records_a: n_a,
            records_b: n_b,
        }),
        None => Ok(()),
    }
}

/// Each record's usable key ids, ascending, in one flat array.
struct KeyLists {
    offsets: Vec<usize>,
    ids: Vec<u32>,
}

impl KeyLists {
    fn new<K>(
        entries: &[(&K, u64)],
        groups: &[Range<usize>],
        group_id: &[u32],
        side: u64,
        records: usize,
    ) -> KeyLists {
        let mut offsets = vec![0usize; records + 1];
        let on_side = |e: &(&K, u64)| e.1 & SIDE_B == side;
        for (g, range) in groups.iter().enumerate() {
            if group_id[g] != u32::MAX {
                for e in entries[range.clone()].iter().filter(|e| on_side(e)) {
                    offsets[(e.1 & ROW_MASK) as usize + 1] += 1;
                }
            }
        }
        for r in 0..records {
            offsets[r + 1] += offsets[r];
        }
        let mut cursor = offsets.clone();
        let mut ids = vec![0u32; offsets[records]];
        for (g, range) in groups.iter().enumerate() {
            if group_id[g] != u32::MAX {
                for e in entries[range.clone()].iter().filter(|e| on_side(e)) {
                    let row = (e.1 & ROW_MASK) as usize;
                    ids[cursor[row]] = group_id[g];
                    cursor[row] += 1;
                }
            }
        }
        KeyLists { offsets, ids }
    }

    fn of(&self, row: usize) -> &[u32] {
        &self.ids[self.offsets[row]..self.offsets[row + 1]]
    }
}

/// The smallest id in both ascending lists.
fn first_common(x: &[u32], y: &[u32]) -> Option<u32> {
    let (mut p, mut q) = (0, 0);
    while p < x.len() && q < y.len() {
        match x[p].cmp(&y[q]) {
            std::cmp::Ordering::Less => p += 1,
            std::cmp::Ordering::Greater => q += 1,
            std::cmp::Ordering::Equal => return Some(x[p]),
        }
    }
    None
}

/// SplitMix64, for the sampled positions and the pair sample.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n`, `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SplitMix64 as Rng, random_clks_with_copies};
    use std::collections::BTreeSet;

    /// The pairs that share a dense bucket of at most `max_bucket_pairs`
    /// pairs in some table, by brute force.
    fn naive(
        a: &[u64],
        b: Option<&[u64]>,
        words: usize,
        params: &LshParams,
    ) -> BTreeSet<(u32, u32)> {
        let tables = make_tables(params, &informative_mask(a, b, words));
        let other = b.unwrap_or(a);
        // Per table, the usable bucket of every row of `a` and of `other`.
        let buckets: Vec<(Vec<Option<u64>>, Vec<Option<u64>>)> = tables
            .iter()
            .map(|t| {
                let keys = |clks: &[u64]| -> Vec<Option<u64>> {
                    clks.chunks_exact(words)
                        .map(|c| {
                            let (h, dense) = t.hash(c, params.min_key_bits);
                            dense.then_some(bucket(h))
                        })
                        .collect()
                };
                let (ka, kb) = (keys(a), keys(other));
                let count = |keys: &[Option<u64>], key: u64| {
                    keys.iter().filter(|&&k| k == Some(key)).count() as u64
                };
                let small = |key: u64| {
                    let met = match b {
                        Some(_) => count(&ka, key) * count(&kb, key),
                        None => count(&ka, key) * count(&ka, key).saturating_sub(1) / 2,
                    };
                    met <= params.max_bucket_pairs
                };
                let keep = |keys: &[Option<u64>]| -> Vec<Option<u64>> {
                    keys.iter().map(|k| k.filter(|&k| small(k))).collect()
                };
                (keep(&ka), keep(&kb))
            })
            .collect();
        let mut out = BTreeSet::new();
        for i in 0..a.len() / words {
            for j in 0..other.len() / words {
                if b.is_none() && j <= i {
                    continue;
                }
                if buckets
                    .iter()
                    .any(|(ka, kb)| ka[i].is_some() && ka[i] == kb[j])
                {
                    out.insert((i as u32, j as u32));
                }
            }
        }
        out
    }

    /// `L = ceil(ln(1 − R) / ln(1 − π))`.
    fn tables_for(collision: f64, recall: f64) -> usize {
        if collision >= 1.0 {
            1
        } else if collision <= 0.0 {
            usize::MAX
        } else {
            let l = ((1.0 - recall).ln() / (1.0 - collision).ln()).ceil();
            if l > 1e9 {
                usize::MAX
            } else {
                (l as usize).max(1)
            }
        }
    }

    fn params(tables: usize, bits_per_key: usize) -> LshParams {
        LshParams {
            tables,
            bits_per_key,
            seed: 42,
            min_key_bits: 1,
            max_bucket_pairs: u64::MAX,
        }
    }

    #[test]
    fn collision_probability_is_hypergeometric() {
        // C(8, 3) / C(10, 3)
        assert!((collision_probability(10, 2, 3) - 56.0 / 120.0).abs() < 1e-12);
        assert_eq!(collision_probability(10, 8, 3), 0.0);
        assert_eq!(collision_probability(10, 0, 10), 1.0);
        // Monte Carlo agrees: 64 bits, 10 differ, 6 sampled.
        let mut rng = Rng::new(5);
        let mut hits = 0;
        for _ in 0..200_000 {
            let mut pool: Vec<usize> = (0..64).collect();
            let miss = (0..6).all(|i| {
                let j = i + rng.below(64 - i);
                pool.swap(i, j);
                pool[i] >= 10
            });
            hits += usize::from(miss);
        }
        let expected = collision_probability(64, 10, 6);
        assert!((hits as f64 / 200_000.0 - expected).abs() < 0.005);
    }

    #[test]
    fn tables_reach_the_recall() {
        for pi in [0.01, 0.05, 0.3, 0.9] {
            let l = tables_for(pi, 0.99);
            assert!(1.0 - (1.0 - pi).powi(l as i32) >= 0.99);
            assert!(1.0 - (1.0 - pi).powi(l as i32 - 1) < 0.99 || l == 1);
        }
        assert_eq!(tables_for(1.0, 0.99), 1);
    }

    #[test]
    fn the_plan_meets_its_own_recall() {
        let plan = LshParams::for_threshold(0.8, 1024, 300.0, 1_000_000, Some(1_000_000)).unwrap();
        assert_eq!(plan.budget, 120);
        let p = plan.params;
        assert!(p.tables <= MAX_TABLES && p.tables >= 1);
        let pi = collision_probability(1024, plan.budget, p.bits_per_key);
        assert!(1.0 - (1.0 - pi).powi(p.tables as i32) >= 0.99);
        assert!((plan.recall - (1.0 - (1.0 - pi).powi(p.tables as i32))).abs() < 1e-12);
        assert_eq!(p.tables, tables_for(pi, 0.99));
        assert!(plan.worthwhile());
        assert!(
            !LshParams::for_threshold(0.8, 1024, 300.0, 100, Some(100))
                .unwrap()
                .worthwhile()
        );
        // Bigger inputs want longer keys.
        let small = LshParams::for_threshold(0.8, 1024, 300.0, 1000, Some(1000)).unwrap();
        assert!(small.params.bits_per_key < p.bits_per_key);
        assert!(matches!(
            LshParams::for_threshold(0.1, 1024, 600.0, 1000, None),
            Err(BlockError::Unreachable { .. })
        ));
        assert!(matches!(
            LshParams::for_threshold(1.5, 1024, 300.0, 1000, None),
            Err(BlockError::Threshold { .. })
        ));
    }

    #[test]
    fn best_match_plans_find_the_best_matches() {
        // Copies about 0.9 apart from their originals: planning for them
        // needs fewer tables than planning for every pair at 0.8.
        let data = random_clks_with_copies(3000, 1024, 0.3, 0.06, 12);
        let w = data.words;
        let by_threshold = LshParams::for_clks(0.8, &data.a, Some(&data.b), w).unwrap();
        let options = PlanOptions {
            target: LshTarget::BestMatches { sample_rows: 400 },
            ..PlanOptions::default()
        };
        let plan = LshParams::for_clks_with(0.8, &data.a, Some(&data.b), w, &options).unwrap();
        assert!(plan.target_pairs >= 150, "{plan:?}");
        assert!(plan.recall >= 0.99);
        assert!(
            plan.expected_work_ns < by_threshold.expected_work_ns,
            "{plan:?}"
        );
        let (pairs, _) = lsh_candidate_pairs(&data.a, Some(&data.b), w, &plan.params).unwrap();
        let set: BTreeSet<_> = pairs.into_iter().collect();
        let found = data.truth.iter().filter(|t| set.contains(t)).count();
        assert!(found as f64 >= 0.98 * data.truth.len() as f64, "{found}");
    }

    #[test]
    fn candidates_are_exactly_the_colliding_pairs_once() {
        let data = random_clks_with_copies(400, 200, 0.3, 0.08, 9);
        for p in [params(12, 10), params(3, 4), params(30, 20)] {
            let (pairs, stats) =
                lsh_candidate_pairs(&data.a, Some(&data.b), data.words, &p).unwrap();
            let set: BTreeSet<_> = pairs.iter().copied().collect();
            assert_eq!(set.len(), pairs.len(), "a pair was emitted twice");
            assert_eq!(set, naive(&data.a, Some(&data.b), data.words, &p));
            assert_eq!(stats.candidates, pairs.len() as u64);
            assert_eq!(stats.comparisons, stats.candidates + stats.repeats);
            assert_eq!(stats.all_pairs, 400 * 400);
        }
    }

    #[test]
    fn scoring_search_keeps_the_scored_candidates_once() {
        let data = random_clks_with_copies(500, 256, 0.3, 0.08, 4);
        let w = data.words;
        let p = params(20, 12);
        let (pairs, _) = lsh_candidate_pairs(&data.a, Some(&data.b), w, &p).unwrap();
        let close = |i: u32, j: u32| {
            let x = &data.a[i as usize * w..(i as usize + 1) * w];
            let y = &data.b[j as usize * w..(j as usize + 1) * w];
            let d: u32 = x.iter().zip(y).map(|(p, q)| (p ^ q).count_ones()).sum();
            (d < 60).then_some(d)
        };
        let expected: BTreeSet<(u32, u32, u32)> = pairs
            .iter()
            .filter_map(|&(i, j)| close(i, j).map(|d| (i, j, d)))
            .collect();
        let mut kept = Vec::new();
        let stats = lsh_search(&data.a, Some(&data.b), w, &p, close, |k| kept.extend(k)).unwrap();
        let set: BTreeSet<_> = kept.iter().copied().collect();
        assert_eq!(set.len(), kept.len());
        assert_eq!(set, expected);
        assert!(expected.len() > 100);
        assert_eq!(stats.candidates, kept.len() as u64);
        assert!(stats.comparisons >= pairs.len() as u64);
    }

    #[test]
    fn deduplication_within_one_site() {
        let data = random_clks_with_copies(300, 128, 0.3, 0.05, 3);
        let both: Vec<u64> = data.a.iter().chain(&data.b).copied().collect();
        let p = params(10, 8);
        let (pairs, stats) = lsh_candidate_pairs(&both, None, data.words, &p).unwrap();
        assert!(pairs.iter().all(|&(i, j)| i < j));
        let set: BTreeSet<_> = pairs.iter().copied().collect();
        assert_eq!(set.len(), pairs.len());
        assert_eq!(set, naive(&both, None, data.words, &p));
        assert_eq!(stats.all_pairs, 600 * 599 / 2);
        // The planted copies are found.
        let found = data
            .truth
            .iter()
            .filter(|&&(i, j)| set.contains(&(i, j + 300)))
            .count();
        assert!(found as f64 >= 0.95 * data.truth.len() as f64, "{found}");
    }

    #[test]
    fn huge_buckets_are_skipped_and_reported() {
        // 500 identical clks and 500 sparse ones that are all zero on most bits.
        let words = 2;
        let mut a = vec![0u64; 1000 * words];
        for (i, clk) in a.chunks_exact_mut(words).enumerate() {
            clk[0] = if i < 500 {
                0xFFFF_0000_FFFF
            } else {
                1 << (i % 7)
            };
            clk[1] = if i < 500 { 0xF0F0 } else { 0 };
        }
        let mut p = params(4, 6);
        p.max_bucket_pairs = 1000;
        let (pairs, stats) = lsh_candidate_pairs(&a, None, words, &p).unwrap();
        assert!(stats.oversize_buckets > 0);
        assert!(stats.oversize_pairs >= 4 * 500 * 499 / 2);
        assert!(stats.sparse_keys > 0);
        assert!(pairs.len() < 500 * 499 / 2, "{}", pairs.len());
        let set: BTreeSet<_> = pairs.iter().copied().collect();
        assert_eq!(set, naive(&a, None, words, &p));
        // A skipped bucket does not hide a pair that meets again later.
        p.max_bucket_pairs = u64::MAX;
        let (all, _) = lsh_candidate_pairs(&a, None, words, &p).unwrap();
        assert!(all.len() >= 500 * 499 / 2);
    }

    #[test]
    fn skipped_buckets_do_not_count_as_first_collision() {
        // Few distinct clks, many copies: buckets of every size, some capped.
        let words = 1;
        let a: Vec<u64> = (0..120u64)
            .map(|i| 0xF0F0 ^ (1 << (i % 5)) ^ (i % 3) << 20)
            .collect();
        for cap in [0, 3, 50, 400, u64::MAX] {
            let mut p = params(8, 3);
            p.max_bucket_pairs = cap;
            let (pairs, stats) = lsh_candidate_pairs(&a, None, words, &p).unwrap();
            let set: BTreeSet<_> = pairs.iter().copied().collect();
            assert_eq!(set.len(), pairs.len(), "cap {cap}");
            assert_eq!(set, naive(&a, None, words, &p), "cap {cap}");
            assert_eq!(stats.oversize_buckets == 0, cap == u64::MAX, "cap {cap}");
        }
    }

    #[test]
    fn key_blocking_matches_brute_force() {
        let mut rng = Rng::new(17);
        let (ka, kb) = (
            random_key_lists(&mut rng, 200, 30),
            random_key_lists(&mut rng, 150, 30),
        );
        let share = |x: &Vec<u32>, y: &Vec<u32>| x.iter().any(|k| y.contains(k));
        let mut pairs = Vec::new();
        let stats =
            key_candidates(&ka, Some(&kb), u64::MAX, |c| pairs.extend_from_slice(c)).unwrap();
        let set: BTreeSet<_> = pairs.iter().copied().collect();
        assert_eq!(set.len(), pairs.len());
        let mut expected = BTreeSet::new();
        for (i, x) in ka.iter().enumerate() {
            for (j, y) in kb.iter().enumerate() {
                if share(x, y) {
                    expected.insert((i as u32, j as u32));
                }
            }
        }
        assert_eq!(set, expected);
        assert_eq!(stats.all_pairs, 200 * 150);
        // One site.
        let mut pairs = Vec::new();
        key_candidates(&ka, None, u64::MAX, |c| pairs.extend_from_slice(c)).unwrap();
        let set: BTreeSet<_> = pairs.iter().copied().collect();
        assert_eq!(set.len(), pairs.len());
        let mut expected = BTreeSet::new();
        for i in 0..ka.len() {
            for j in i + 1..ka.len() {
                if share(&ka[i], &ka[j]) {
                    expected.insert((i as u32, j as u32));
                }
            }
        }
        assert_eq!(set, expected);
        // A capped key drops only the pairs that share nothing else.
        let mut pairs = Vec::new();
        let stats = key_candidates(&ka, Some(&kb), 40, |c| pairs.extend_from_slice(c)).unwrap();
        assert!(stats.oversize_buckets > 0);
        let set: BTreeSet<_> = pairs.iter().copied().collect();
        assert_eq!(set.len(), pairs.len());
        assert!(set.len() < expected.len() || expected.is_empty());
    }

    /// Up to three keys per record among `distinct` values.
    fn random_key_lists(rng: &mut Rng, n: usize, distinct: usize) -> Vec<Vec<u32>> {
        (0..n)
            .map(|_| {
                (0..rng.below(4))
                    .map(|_| rng.below(distinct) as u32)
                    .collect()
            })
            .collect()
    }

    /// The pairs of `all` whose flag in `met` is set.
    fn met_pairs(all: &[(u32, u32)], met: &[bool]) -> BTreeSet<(u32, u32)> {
        all.iter()
            .zip(met)
            .filter(|(_, m)| **m)
            .map(|(pair, _)| *pair)
            .collect()
    }

    /// Every pair of the two sites (or within one), in row order.
    fn every_pair(n_a: usize, n_b: Option<usize>) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for i in 0..n_a as u32 {
            match n_b {
                Some(n_b) => out.extend((0..n_b as u32).map(|j| (i, j))),
                None => out.extend((i + 1..n_a as u32).map(|j| (i, j))),
            }
        }
        out
    }

    #[test]
    fn pairs_met_are_exactly_the_candidates() {
        let data = random_clks_with_copies(150, 256, 0.3, 0.1, 4);
        let words = data.words;
        for cap in [u64::MAX, 5] {
            let mut p = params(12, 10);
            p.max_bucket_pairs = cap;
            for b in [Some(&data.b[..]), None] {
                let (pairs, _) = lsh_candidate_pairs(&data.a, b, words, &p).unwrap();
                let emitted: BTreeSet<_> = pairs.into_iter().collect();
                let all = every_pair(150, b.map(|_| 150));
                let met = lsh_pairs_met(&data.a, b, words, &p, &all).unwrap();
                let found = met_pairs(&all, &met);
                assert!(!emitted.is_empty());
                assert_eq!(found, emitted, "cap {cap}, two sites {}", b.is_some());
            }
        }
        let out_of_range = lsh_pairs_met(&data.a, None, words, &params(2, 2), &[(0, 150)]);
        assert!(matches!(
            out_of_range,
            Err(BlockError::PairOutOfRange { b: 150, .. })
        ));
    }

    #[test]
    fn key_pairs_met_are_exactly_the_candidates() {
        let mut rng = Rng::new(5);
        let (ka, kb) = (
            random_key_lists(&mut rng, 120, 25),
            random_key_lists(&mut rng, 90, 25),
        );
        for cap in [u64::MAX, 30] {
            for b in [Some(&kb[..]), None] {
                let mut pairs = Vec::new();
                key_candidates(&ka, b, cap, |c| pairs.extend_from_slice(c)).unwrap();
                let emitted: BTreeSet<_> = pairs.into_iter().collect();
                let all = every_pair(120, b.map(<[Vec<u32>]>::len));
                let met = key_pairs_met(&ka, b, cap, &all).unwrap();
                let found = met_pairs(&all, &met);
                assert!(!emitted.is_empty());
                assert_eq!(found, emitted, "cap {cap}, two sites {}", b.is_some());
            }
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let p = params(2, 2);
        assert!(matches!(
            lsh_candidates(&[1, 2, 3], None, 2, &p, |_| {}),
            Err(BlockError::ClkLength { site: "A", .. })
        ));
        assert!(matches!(
            lsh_candidates(&[1, 2], Some(&[1]), 2, &p, |_| {}),
            Err(BlockError::ClkLength { site: "B", .. })
        ));
        assert!(matches!(
            lsh_candidates(&[1, 2], None, 2, &params(0, 2), |_| {}),
            Err(BlockError::Params { .. })
        ));
        let empty = lsh_candidates(&[], Some(&[1, 2]), 2, &p, |_| panic!("no pairs")).unwrap();
        assert_eq!(empty.all_pairs, 0);
        assert_eq!(empty.reduction_ratio(), 0.0);
    }
}
