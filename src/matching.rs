//! The linkage unit's match run: the sites' clk files in, links and entities
//! out.
//!
//! [`run_match`] reads every input ([`crate::io::clk_file`]), refuses what
//! cannot be linked before comparing anything (different filter length,
//! linkage schema or secret; two inputs claiming one site; an id twice in one
//! site), finds the candidate pairs ([`crate::similarity`]) and solves them
//! ([`crate::solve`]): one input is deduplicated, two are linked one-to-one,
//! more are clustered with at most one record per site in each entity. The
//! [`MatchOutcome`] holds links, entities and the figures of the run;
//! [`write_outputs`] writes `links.parquet`, `entities.parquet` and optionally
//! `scores.parquet`, all or nothing.
//!
//! Sites are ordered by name before anything else, so neither the order of the
//! files on the command line nor the number of threads changes the result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::io::atomic::{AtomicFile, FlushBehind};
use crate::io::clk_file::{self, ClkFile, ClkFileError};
use crate::io::table;
use rayon::slice::ParallelSliceMut;

use crate::block::{self, BlockError, BlockStats, LshParams, LshTarget, PlanOptions};
use crate::similarity::{
    self, Candidate, Kernel, PackedClks, SearchOptions, SearchStats, pair_score,
};
use crate::solve::{self, DedupOptions, RecordRef, ScoredPair};

/// The threshold used when none is given. Chosen on Febrl4 (5,000 × 5,000
/// records with typing errors) encoded with the default schema: the two-site
/// link has precision 1.0 and recall 0.992 (0.8 would lose a tenth of the
/// true pairs), and only about 15 non-matching pairs score above it, so
/// clustering without the one-to-one constraint stays precise too.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// The file names [`write_outputs`] writes into the output directory.
pub const LINKS_FILE: &str = "links.parquet";
/// See [`LINKS_FILE`].
pub const ENTITIES_FILE: &str = "entities.parquet";

/// What to match and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchOptions {
    /// Pairs scoring at least this become candidates for the solver; in `(0, 1]`.
    pub threshold: f64,
    /// Also keep every pair scoring at least this (for `scores.parquet`); in
    /// `(0, threshold]`. `None` keeps no scores.
    pub min_score: Option<f64>,
    /// Keep at most the `k` best candidates of each record (see
    /// [`SearchOptions::top_k`]); of two sites, the records of the site whose
    /// name sorts first.
    pub top_k: Option<usize>,
    /// Deduplication only: the largest entity allowed.
    pub max_cluster_size: Option<usize>,
    /// Which pairs are scored: all, or the candidates of a blocking method.
    pub blocking: Blocking,
    /// How LSH blocking chooses its parameters, when it is used.
    pub lsh: LshOptions,
    /// [`Blocking::Auto`] compares all pairs up to this many pairs
    /// (default [`AUTO_ALL_PAIRS`]).
    pub auto_all_pairs: u64,
    /// Blocking skips a bucket (LSH) or key with more pairs than this; `None`
    /// for [`block::DEFAULT_MAX_BUCKET_PAIRS`] with LSH and
    /// [`DEFAULT_MAX_KEY_PAIRS`] with keys.
    pub max_bucket_pairs: Option<u64>,
}

impl Default for MatchOptions {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            min_score: None,
            top_k: None,
            max_cluster_size: None,
            blocking: Blocking::None,
            lsh: LshOptions::default(),
            auto_all_pairs: AUTO_ALL_PAIRS,
            max_bucket_pairs: None,
        }
    }
}

/// Which pairs of records a run scores (see [`crate::block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blocking {
    /// Every pair: exact, and fast enough up to some 10^9 pairs.
    #[default]
    None,
    /// Hamming LSH on the clks: needs nothing from the sites; finds each best
    /// match with the probability [`LshOptions`] asks for.
    Lsh,
    /// Pairs that share a site-side blocking key (every input must carry
    /// keys: a schema with `blocking_keys`).
    Keys,
    /// All pairs up to [`AUTO_ALL_PAIRS`] pairs; above, keys when every input
    /// has them, else LSH when its plan expects to take at most half the
    /// time of all pairs, else all pairs.
    Auto,
}

/// Up to this many pairs, [`Blocking::Auto`] compares all pairs (a few
/// seconds on two cores).
pub const AUTO_ALL_PAIRS: u64 = 2_000_000_000;

/// The default cap on the pairs of one blocking key: keys are coarse (a
/// phonetic code and a year), so common ones are large but still informative.
pub const DEFAULT_MAX_KEY_PAIRS: u64 = 1 << 28;

/// How LSH parameters are chosen: planned from the clks
/// ([`block::LshParams::for_clks_with`]) unless both are given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LshOptions {
    /// `L`, the number of tables, instead of the planned one.
    pub tables: Option<usize>,
    /// `k`, sampled bits per table, instead of the planned one.
    pub bits_per_key: Option<usize>,
    /// What the plan promises. The default plans for the best matches of a
    /// sample of 1,000 records, found with probability 0.995 (the pairs a
    /// one-to-one solver links), with an expected reduction ratio of at least
    /// 0.99 when some parameters reach both (else the least work that reaches
    /// the recall). On Febrl4 at the default threshold this leaves under 1%
    /// of the pairs and keeps over 99% of the links.
    pub plan: PlanOptions,
    /// Seeds the sampled bit positions.
    pub seed: u64,
}

impl Default for LshOptions {
    fn default() -> Self {
        Self {
            tables: None,
            bits_per_key: None,
            plan: PlanOptions {
                recall: 0.995,
                target: LshTarget::BestMatches { sample_rows: 1000 },
                min_reduction_ratio: 0.99,
                ..PlanOptions::default()
            },
            seed: block::DEFAULT_SEED,
        }
    }
}

/// The blocking a run used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockingUsed {
    /// Every pair was compared.
    AllPairs,
    /// Hamming LSH with these parameters; `planned_recall` is the plan's
    /// expected recall (`None` when the parameters were given).
    Lsh {
        params: LshParams,
        planned_recall: Option<f64>,
    },
    /// Equal site-side keys; keys with more pairs than the cap were skipped.
    Keys { max_bucket_pairs: u64 },
}

impl BlockingUsed {
    /// `none`, `lsh` or `keys`.
    pub fn name(&self) -> &'static str {
        match self {
            BlockingUsed::AllPairs => "none",
            BlockingUsed::Lsh { .. } => "lsh",
            BlockingUsed::Keys { .. } => "keys",
        }
    }
}

/// One input file and, optionally, the site name to use instead of the one it
/// stores (anonlink JSON stores none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchInput {
    /// The `.clk.parquet` or anonlink JSON file.
    pub path: PathBuf,
    /// Overrides the file's site name.
    pub site: Option<String>,
}

/// Reports how far the comparison has come, from worker threads.
pub trait MatchProgress: Sync {
    /// The comparison starts; `total` records will be reported in all.
    fn start(&self, _total: u64) {}
    /// `records` more records have been compared with everything they need.
    fn advance(&self, _records: u64) {}
    /// The comparison is over.
    fn finish(&self) {}
}

/// A [`MatchProgress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl MatchProgress for NoProgress {}

/// Why a match run failed.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("no input files: give one file to deduplicate, or two or more to link")]
    NoInputs,
    #[error("the threshold must be greater than 0 and at most 1, not {0}")]
    Threshold(f64),
    #[error(
        "the minimum score must be greater than 0 and at most the threshold {threshold}, not {min_score}"
    )]
    MinScore { min_score: f64, threshold: f64 },
    #[error("top-k must be at least 1")]
    TopK,
    #[error("the maximum cluster size must be at least 2")]
    MaxClusterSize,
    #[error(transparent)]
    Read(#[from] ClkFileError),
    #[error("{path} and {other} are both site {site:?}: give every input its own site name")]
    DuplicateSite {
        site: String,
        path: PathBuf,
        other: PathBuf,
    },
    #[error(
        "{path} has {bits}-bit clks but {reference} has {reference_bits}-bit clks: \
         all sites must encode with the same linkage schema"
    )]
    FilterLength {
        path: PathBuf,
        bits: usize,
        reference: PathBuf,
        reference_bits: usize,
    },
    #[error(
        "{path} was encoded with a different secret than {reference} (their key check values \
         differ): every site must use the same project secret"
    )]
    DifferentSecret { path: PathBuf, reference: PathBuf },
    #[error(
        "{path} was encoded with a different linkage schema than {reference} (schema \
         fingerprint {found} vs {expected}): every site must use the same schema file"
    )]
    DifferentSchema {
        path: PathBuf,
        reference: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{path}: id {id:?} is used by rows {first} and {second}; ids must be unique within a site"
    )]
    DuplicateId {
        path: PathBuf,
        id: String,
        first: usize,
        second: usize,
    },
    #[error("blocking: {0}")]
    Block(#[from] BlockError),
    #[error("{0}")]
    LshOption(String),
    #[error(
        "--blocking keys needs blocking keys in every input, and {path} has none: encode every \
         site with a schema that declares `blocking_keys` (`pprl schema init --blocking-keys`), \
         or use --blocking lsh"
    )]
    NoBlockingKeys { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteParquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

/// One site of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Its name (from the file or the override).
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Its record ids, in file order.
    pub ids: Vec<String>,
}

/// A pair of records and their score; `a` sorts before `b` by (site name, id).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// The first record.
    pub a: RecordRef,
    /// The second record.
    pub b: RecordRef,
    /// Dice score.
    pub score: f64,
}

/// How the inputs were solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// One site: deduplication.
    Deduplicate,
    /// Two sites: greedy one-to-one.
    TwoSites,
    /// Three or more sites: greedy clustering, one record per site per entity.
    MultiParty,
}

/// The figures of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchSummary {
    /// How the inputs were solved.
    pub mode: MatchMode,
    /// The kernel that compared clks.
    pub kernel: Kernel,
    /// Filter length in bits.
    pub filter_bits: usize,
    /// The blocking used.
    pub blocking: BlockingUsed,
    /// With [`Blocking::Auto`], why it chose that blocking.
    pub blocking_reason: Option<&'static str>,
    /// Every pair the run could have compared (all pairs of records of
    /// different sites; within one site for deduplication).
    pub all_pairs: u64,
    /// Pairs whose clks were compared (with blocking: pairs met, repeats
    /// included).
    pub comparisons: u64,
    /// LSH: pairs scoring at least the threshold met again in a later table
    /// (and scored again). Low-scoring repeats are not told apart.
    pub repeats: u64,
    /// Buckets (LSH) or keys that blocking skipped for holding more than
    /// `max_bucket_pairs` pairs, and the pairs they held (LSH: a pair may
    /// still meet in another table).
    pub skipped_buckets: u64,
    pub skipped_bucket_pairs: u64,
    /// Pairs skipped because their popcounts could not reach the lowest score kept.
    pub skipped_by_length: u64,
    /// Pairs scoring at least the threshold (after top-k), handed to the solver.
    pub candidates: u64,
    /// Pairs scoring at least the minimum score (`scores.parquet` rows).
    pub scored_pairs: Option<u64>,
    /// Accepted links.
    pub links: u64,
    /// Entities, singletons included.
    pub entities: u64,
    /// Inputs that carry no schema fingerprint or key check value (anonlink
    /// JSON), so that they could not be checked.
    pub unchecked: Vec<PathBuf>,
    /// Seconds from reading the inputs to the solved result.
    pub seconds: f64,
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchOutcome {
    /// The sites, sorted by name; [`RecordRef::site`] indexes this.
    pub sites: Vec<Site>,
    /// Accepted links, sorted by (site_a, id_a, site_b, id_b).
    pub links: Vec<Link>,
    /// Every pair scoring at least the minimum score, in the same order, when asked for.
    pub scores: Option<Vec<Link>>,
    /// `(entity_id, record)` for every record, sorted by (entity_id, site, id);
    /// entity ids count from 0 in order of the smallest (site, id) they hold.
    pub entities: Vec<(u64, RecordRef)>,
    /// Figures of the run.
    pub summary: MatchSummary,
    schema_fingerprint: Option<String>,
    threshold: f64,
}

impl MatchSummary {
    /// The reduction ratio of the literature, `1 − distinct pairs compared /
    /// all pairs`: what blocking avoided (0 without blocking). With LSH, the
    /// low-scoring pairs met in several tables count once per table, so this
    /// is a lower bound.
    pub fn reduction_ratio(&self) -> f64 {
        self.ratio(self.comparisons.saturating_sub(self.repeats) + self.skipped_by_length)
    }

    /// `1 − comparisons / all pairs`, every repeat counted: the work avoided.
    pub fn work_reduction_ratio(&self) -> f64 {
        self.ratio(self.comparisons + self.skipped_by_length)
    }

    fn ratio(&self, compared: u64) -> f64 {
        if self.all_pairs == 0 {
            0.0
        } else {
            1.0 - (compared as f64 / self.all_pairs as f64).min(1.0)
        }
    }
}

impl MatchOutcome {
    /// The site name and id of a record.
    pub fn record(&self, r: RecordRef) -> (&str, &str) {
        let site = &self.sites[r.site as usize];
        (&site.name, &site.ids[r.record as usize])
    }
}

/// Reads the inputs and matches them.
///
/// # Errors
/// [`MatchError`] for options out of range, unreadable or mismatched inputs.
pub fn run_match(
    options: &MatchOptions,
    inputs: &[MatchInput],
    progress: &dyn MatchProgress,
) -> Result<MatchOutcome, MatchError> {
    check_options(options)?;
    if inputs.is_empty() {
        return Err(MatchError::NoInputs);
    }
    let start = Instant::now();
    let files = inputs
        .iter()
        .map(|input| {
            Ok((
                input.path.clone(),
                clk_file::read(&input.path, input.site.as_deref())?,
            ))
        })
        .collect::<Result<Vec<_>, MatchError>>()?;
    let mut outcome = match_files(options, files, progress)?;
    outcome.summary.seconds = start.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Matches clk files already in memory, each with the path that names it in
/// errors.
///
/// # Errors
/// As [`run_match`], except for reading.
pub fn match_files(
    options: &MatchOptions,
    mut files: Vec<(PathBuf, ClkFile)>,
    progress: &dyn MatchProgress,
) -> Result<MatchOutcome, MatchError> {
    check_options(options)?;
    if files.is_empty() {
        return Err(MatchError::NoInputs);
    }
    let start = Instant::now();
    let unchecked = check_compatible(&files)?;
    files.sort_by(|x, y| x.1.meta.site.cmp(&y.1.meta.site));
    for pair in files.windows(2) {
        if pair[0].1.meta.site == pair[1].1.meta.site {
            return Err(MatchError::DuplicateSite {
                site: pair[0].1.meta.site.clone(),
                path: pair[1].0.clone(),
                other: pair[0].0.clone(),
            });
        }
    }
    for (path, file) in &files {
        check_unique_ids(path, &file.ids)?;
    }

    let filter_bits = files[0].1.meta.filter_bits;
    let schema_fingerprint = files
        .iter()
        .find_map(|f| f.1.meta.schema_fingerprint.clone());
    let bytes = filter_bits.div_ceil(8).max(1);
    let packed: Vec<PackedClks> = files
        .iter()
        .map(|(_, f)| PackedClks::from_bytes(&f.clks, bytes))
        .collect();
    let mut keys: Vec<Option<Vec<Vec<u64>>>> = Vec::with_capacity(files.len());
    let sites: Vec<Site> = files
        .into_iter()
        .map(|(path, f)| {
            keys.push(f.blocking_keys);
            Site {
                name: f.meta.site,
                path,
                ids: f.ids,
            }
        })
        .collect();

    // One search at the lowest score anyone asked for.
    let search_threshold = options
        .min_score
        .unwrap_or(options.threshold)
        .min(options.threshold);
    let search = SearchOptions {
        top_k: options.top_k,
        ..SearchOptions::new(search_threshold)
    };
    let advance = |n: u64| progress.advance(n);
    let mut stats = SearchStats::default();
    let mut repeats = 0;
    let (mut skipped_buckets, mut skipped_bucket_pairs) = (0, 0);
    let mut scored: Vec<ScoredPair> = Vec::new();
    let mode = match sites.len() {
        1 => MatchMode::Deduplicate,
        2 => MatchMode::TwoSites,
        _ => MatchMode::MultiParty,
    };
    // The site pairs compared: (i, None) within site i, or (i, Some(j)).
    let site_pairs: Vec<(usize, Option<usize>)> = if mode == MatchMode::Deduplicate {
        vec![(0, None)]
    } else {
        (0..packed.len())
            .flat_map(|i| (i + 1..packed.len()).map(move |j| (i, Some(j))))
            .collect()
    };
    let all_pairs: u64 = site_pairs
        .iter()
        .map(|&(i, j)| {
            let n = packed[i].len() as u64;
            match j {
                Some(j) => n * packed[j].len() as u64,
                None => n * n.saturating_sub(1) / 2,
            }
        })
        .sum();
    let (blocking, blocking_reason) = choose_blocking(
        options,
        &packed,
        &keys,
        &sites,
        &site_pairs,
        all_pairs,
        search_threshold,
    )?;
    if blocking != BlockingUsed::AllPairs {
        progress.start(site_pairs.len() as u64);
        for &(i, j) in &site_pairs {
            let (found, s, block_stats) = blocked_search(
                &blocking,
                (&packed[i], keys[i].as_deref()),
                j.map(|j| (&packed[j], keys[j].as_deref())),
                search_threshold,
            )?;
            stats += s;
            // Key blocking scores each distinct pair once; LSH scores repeats.
            if let BlockingUsed::Lsh { .. } = blocking {
                repeats += block_stats.repeats;
            }
            skipped_buckets += block_stats.oversize_buckets;
            skipped_bucket_pairs += block_stats.oversize_pairs;
            let found = match options.top_k {
                Some(k) => keep_top_k(found, k, j.is_none()),
                None => found,
            };
            let j = j.unwrap_or(i);
            scored.extend(found.iter().map(|c| scored_pair(c, i as u32, j as u32)));
            progress.advance(1);
        }
    } else if mode == MatchMode::Deduplicate {
        progress.start(packed[0].len() as u64);
        let (found, s) = similarity::search_self(&packed[0], &search, &advance);
        stats += s;
        scored.extend(found.iter().map(|c| scored_pair(c, 0, 0)));
    } else {
        let total: u64 = (0..packed.len())
            .map(|i| packed[i].len() as u64 * (packed.len() - 1 - i) as u64)
            .sum();
        progress.start(total);
        for i in 0..packed.len() {
            for j in i + 1..packed.len() {
                let (found, s) = similarity::search_pair(&packed[i], &packed[j], &search, &advance);
                stats += s;
                scored.extend(found.iter().map(|c| scored_pair(c, i as u32, j as u32)));
            }
        }
    }
    progress.finish();

    // Without scores to keep, every pair found reached the threshold.
    let (accepted, scored): (Vec<ScoredPair>, Option<Vec<ScoredPair>>) = match options.min_score {
        None => (scored, None),
        Some(_) => {
            let accepted = scored
                .iter()
                .filter(|p| p.score >= options.threshold)
                .copied()
                .collect();
            (accepted, Some(scored))
        }
    };
    let sizes: Vec<usize> = sites.iter().map(|s| s.ids.len()).collect();
    let solution = match mode {
        MatchMode::Deduplicate => solve::deduplicate(
            sizes[0],
            &accepted,
            DedupOptions {
                max_cluster_size: options.max_cluster_size,
            },
        ),
        MatchMode::TwoSites => solve::greedy_one_to_one([sizes[0], sizes[1]], &accepted),
        MatchMode::MultiParty => solve::greedy_clusters(&sizes, &accepted),
    };

    let ranks = id_ranks(&sites);
    let links = sorted_links(&ranks, solution.links.iter().map(|&i| accepted[i]));
    // Consumed, so that the scores are not held twice.
    let scores = scored.map(|scored| sorted_links(&ranks, scored.into_iter()));
    let entities = numbered_entities(&ranks, &solution.entity);
    let summary = MatchSummary {
        mode,
        kernel: Kernel::best(),
        filter_bits,
        blocking,
        blocking_reason,
        all_pairs,
        comparisons: stats.comparisons,
        repeats,
        skipped_buckets,
        skipped_bucket_pairs,
        skipped_by_length: stats.skipped_by_length,
        candidates: accepted.len() as u64,
        scored_pairs: scores.as_ref().map(|s| s.len() as u64),
        links: links.len() as u64,
        entities: solution.entity_count() as u64,
        unchecked,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(MatchOutcome {
        sites,
        links,
        scores,
        entities,
        summary,
        schema_fingerprint,
        threshold: options.threshold,
    })
}

/// Resolves [`MatchOptions::blocking`] for these inputs: plans LSH, checks
/// that keys are there.
fn choose_blocking(
    options: &MatchOptions,
    packed: &[PackedClks],
    keys: &[Option<Vec<Vec<u64>>>],
    sites: &[Site],
    site_pairs: &[(usize, Option<usize>)],
    all_pairs: u64,
    threshold: f64,
) -> Result<(BlockingUsed, Option<&'static str>), MatchError> {
    let keys_used = || BlockingUsed::Keys {
        max_bucket_pairs: options.max_bucket_pairs.unwrap_or(DEFAULT_MAX_KEY_PAIRS),
    };
    let chosen = match options.blocking {
        Blocking::None => BlockingUsed::AllPairs,
        Blocking::Keys => match keys.iter().position(Option::is_none) {
            Some(i) => {
                return Err(MatchError::NoBlockingKeys {
                    path: sites[i].path.clone(),
                });
            }
            None => keys_used(),
        },
        Blocking::Lsh => plan_lsh(options, packed, site_pairs, threshold)?.0,
        Blocking::Auto => {
            let (chosen, reason) = if all_pairs <= options.auto_all_pairs {
                (BlockingUsed::AllPairs, AUTO_SMALL)
            } else if keys.iter().all(Option::is_some) {
                (keys_used(), AUTO_KEYS)
            } else {
                match plan_lsh(options, packed, site_pairs, threshold) {
                    Ok((used, true)) => (used, AUTO_LSH),
                    Ok((_, false)) => (BlockingUsed::AllPairs, AUTO_LSH_SLOW),
                    // No plan reaches the recall: all pairs are the only safe choice.
                    Err(MatchError::Block(BlockError::Unreachable { .. })) => {
                        (BlockingUsed::AllPairs, AUTO_LSH_UNREACHABLE)
                    }
                    Err(e) => return Err(e),
                }
            };
            return Ok((chosen, Some(reason)));
        }
    };
    Ok((chosen, None))
}

// Why `--blocking auto` chose what it chose, for the summary.
const AUTO_SMALL: &str = "auto: few enough pairs to compare them all";
const AUTO_KEYS: &str = "auto: every input carries site-side blocking keys";
const AUTO_LSH: &str = "auto: the LSH plan expects to take at most half the time of all pairs";
const AUTO_LSH_SLOW: &str = "auto: LSH would not pay off on these clks (unrelated records are \
     too close at this threshold), so all pairs are compared; encode with blocking keys \
     (`pprl schema init --blocking-keys`) or raise the threshold to block";
const AUTO_LSH_UNREACHABLE: &str = "auto: no LSH parameters find the matches at this threshold \
     with the recall asked for, so all pairs are compared; encode with blocking keys \
     (`pprl schema init --blocking-keys`) to block";

/// LSH parameters for the run, planned on its largest site pair (one set of
/// parameters for every pair), with the user's overrides; and whether the
/// plan expects LSH to pay off.
fn plan_lsh(
    options: &MatchOptions,
    packed: &[PackedClks],
    site_pairs: &[(usize, Option<usize>)],
    threshold: f64,
) -> Result<(BlockingUsed, bool), MatchError> {
    let lsh = &options.lsh;
    let size = |&(i, j): &(usize, Option<usize>)| {
        packed[i].len() as u64 * j.map_or(packed[i].len(), |j| packed[j].len()) as u64
    };
    let &(i, j) = site_pairs
        .iter()
        .max_by_key(|p| size(p))
        .expect("at least one site pair");
    let words = packed[i].words_per_clk();
    let (mut params, planned_recall, worthwhile) = match (lsh.tables, lsh.bits_per_key) {
        (Some(tables), Some(bits_per_key)) => (
            LshParams {
                tables,
                bits_per_key,
                seed: lsh.seed,
                min_key_bits: 1,
                max_bucket_pairs: block::DEFAULT_MAX_BUCKET_PAIRS,
            },
            None,
            true,
        ),
        _ => {
            let plan_with = |plan: &PlanOptions| {
                LshParams::for_clks_with(
                    threshold,
                    packed[i].words(),
                    j.map(|j| packed[j].words()),
                    words,
                    plan,
                )
            };
            let plan = match plan_with(&lsh.plan) {
                Err(BlockError::Unreachable { .. }) if lsh.plan.min_reduction_ratio > 0.0 => {
                    plan_with(&PlanOptions {
                        min_reduction_ratio: 0.0,
                        ..lsh.plan
                    })?
                }
                other => other?,
            };
            let worthwhile = plan.worthwhile();
            (plan.params, Some(plan.recall), worthwhile)
        }
    };
    params.seed = lsh.seed;
    if let Some(tables) = lsh.tables {
        params.tables = tables;
    }
    if let Some(bits) = lsh.bits_per_key {
        params.bits_per_key = bits;
    }
    if let Some(cap) = options.max_bucket_pairs {
        params.max_bucket_pairs = cap;
    }
    // Overridden parameters no longer have the plan's recall.
    let planned_recall =
        planned_recall.filter(|_| lsh.tables.is_none() && lsh.bits_per_key.is_none());
    Ok((
        BlockingUsed::Lsh {
            params,
            planned_recall,
        },
        worthwhile,
    ))
}

/// The pairs of `a` × `b` (within `a` when `b` is `None`) that the blocking
/// meets and that score at least `threshold`, sorted by `(a, b)` as the
/// all-pairs search returns them. Scores come from the same kernel and
/// [`crate::similarity::dice_score`], so a pair gets the same score either way.
fn blocked_search(
    blocking: &BlockingUsed,
    (a, keys_a): (&PackedClks, Option<&[Vec<u64>]>),
    b: Option<(&PackedClks, Option<&[Vec<u64>]>)>,
    threshold: f64,
) -> Result<(Vec<Candidate>, SearchStats, BlockStats), MatchError> {
    let kernel = Kernel::best();
    let other = b.map_or(a, |b| b.0);
    let score = |i: u32, j: u32| pair_score(kernel, a, i as usize, other, j as usize, threshold);
    let mut found: Vec<Candidate> = Vec::new();
    let consume = |kept: Vec<(u32, u32, f64)>| {
        found.extend(
            kept.into_iter()
                .map(|(a, b, score)| Candidate { a, b, score }),
        );
    };
    let block_stats = match blocking {
        BlockingUsed::AllPairs => unreachable!("blocked_search is only called with blocking"),
        BlockingUsed::Lsh { params, .. } => block::lsh_search(
            a.words(),
            b.map(|b| b.0.words()),
            a.words_per_clk(),
            params,
            score,
            consume,
        )?,
        BlockingUsed::Keys { max_bucket_pairs } => {
            const CHECKED: &str = "every input has keys (checked by choose_blocking)";
            block::key_search(
                keys_a.expect(CHECKED),
                b.map(|b| b.1.expect(CHECKED)),
                *max_bucket_pairs,
                score,
                consume,
            )?
        }
    };
    found.par_sort_unstable_by_key(|c| (c.a, c.b));
    let stats = SearchStats {
        comparisons: block_stats.comparisons,
        skipped_by_length: 0,
        candidates: found.len() as u64,
    };
    Ok((found, stats, block_stats))
}

/// Keeps the `k` best candidates of each record of the first site (score
/// descending, then the other record), as [`SearchOptions::top_k`] does; within
/// one site a pair stays when it is among the `k` best of either record.
/// Returns them sorted by `(a, b)`.
fn keep_top_k(mut found: Vec<Candidate>, k: usize, one_site: bool) -> Vec<Candidate> {
    let best_of = |found: &mut Vec<Candidate>, side: fn(&Candidate) -> (u32, u32)| {
        found.sort_unstable_by(|x, y| {
            let (xr, xo) = side(x);
            let (yr, yo) = side(y);
            xr.cmp(&yr)
                .then(y.score.total_cmp(&x.score))
                .then(xo.cmp(&yo))
        });
        let mut kept: Vec<Candidate> = Vec::new();
        let mut run = 0;
        for (n, c) in found.iter().enumerate() {
            if n > 0 && side(&found[n - 1]).0 == side(c).0 {
                run += 1;
            } else {
                run = 0;
            }
            if run < k {
                kept.push(*c);
            }
        }
        kept
    };
    let mut kept = best_of(&mut found, |c| (c.a, c.b));
    if one_site {
        kept.extend(best_of(&mut found, |c| (c.b, c.a)));
    }
    kept.sort_unstable_by_key(|c| (c.a, c.b));
    kept.dedup_by_key(|c| (c.a, c.b));
    kept
}

fn check_options(options: &MatchOptions) -> Result<(), MatchError> {
    let t = options.threshold;
    if !(t > 0.0 && t <= 1.0) {
        return Err(MatchError::Threshold(t));
    }
    if let Some(m) = options.min_score
        && !(m > 0.0 && m <= t)
    {
        return Err(MatchError::MinScore {
            min_score: m,
            threshold: t,
        });
    }
    if options.top_k == Some(0) {
        return Err(MatchError::TopK);
    }
    if options.max_cluster_size.is_some_and(|m| m < 2) {
        return Err(MatchError::MaxClusterSize);
    }
    let lsh = &options.lsh;
    if !(lsh.plan.recall > 0.0 && lsh.plan.recall < 1.0) {
        return Err(MatchError::LshOption(format!(
            "the LSH recall must be greater than 0 and less than 1, not {}",
            lsh.plan.recall
        )));
    }
    if lsh.tables == Some(0) || lsh.bits_per_key == Some(0) {
        return Err(MatchError::LshOption(
            "LSH needs at least one table and one bit per table".into(),
        ));
    }
    Ok(())
}

/// Checks that every file can be compared with the first: same filter
/// length, and, where both files record them, same secret and schema.
/// Returns the files that record neither.
fn check_compatible(files: &[(PathBuf, ClkFile)]) -> Result<Vec<PathBuf>, MatchError> {
    let (first_path, first) = &files[0];
    let with_kcv = files.iter().find(|f| f.1.meta.key_check_value.is_some());
    let with_fp = files.iter().find(|f| f.1.meta.schema_fingerprint.is_some());
    let mut unchecked = Vec::new();
    for (path, file) in files {
        if file.meta.filter_bits != first.meta.filter_bits {
            return Err(MatchError::FilterLength {
                path: path.clone(),
                bits: file.meta.filter_bits,
                reference: first_path.clone(),
                reference_bits: first.meta.filter_bits,
            });
        }
        if let (Some(kcv), Some((ref_path, reference))) = (&file.meta.key_check_value, with_kcv)
            && Some(kcv) != reference.meta.key_check_value.as_ref()
        {
            return Err(MatchError::DifferentSecret {
                path: path.clone(),
                reference: ref_path.clone(),
            });
        }
        if let (Some(fp), Some((ref_path, reference))) = (&file.meta.schema_fingerprint, with_fp)
            && let Some(expected) = &reference.meta.schema_fingerprint
            && fp != expected
        {
            return Err(MatchError::DifferentSchema {
                path: path.clone(),
                reference: ref_path.clone(),
                found: short(fp),
                expected: short(expected),
            });
        }
        if file.meta.key_check_value.is_none() || file.meta.schema_fingerprint.is_none() {
            unchecked.push(path.clone());
        }
    }
    Ok(unchecked)
}

/// A fingerprint prefix long enough to tell two apart in a message.
fn short(fingerprint: &str) -> String {
    fingerprint.chars().take(12).collect()
}

fn check_unique_ids(path: &Path, ids: &[String]) -> Result<(), MatchError> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        if let Some(first) = seen.insert(id, row) {
            return Err(MatchError::DuplicateId {
                path: path.to_path_buf(),
                id: id.clone(),
                first: first + 1,
                second: row + 1,
            });
        }
    }
    Ok(())
}

fn scored_pair(c: &Candidate, site_a: u32, site_b: u32) -> ScoredPair {
    ScoredPair {
        a: RecordRef::new(site_a, c.a),
        b: RecordRef::new(site_b, c.b),
        score: c.score,
    }
}

/// Each record's position in its site when sorted by id; with sites sorted by
/// name, `(site, rank)` orders records by (site name, id) with integer compares.
fn id_ranks(sites: &[Site]) -> Vec<Vec<u32>> {
    sites
        .iter()
        .map(|site| {
            let mut order: Vec<u32> = (0..site.ids.len() as u32).collect();
            order.sort_unstable_by(|&x, &y| site.ids[x as usize].cmp(&site.ids[y as usize]));
            let mut rank = vec![0u32; order.len()];
            for (position, &record) in order.iter().enumerate() {
                rank[record as usize] = position as u32;
            }
            rank
        })
        .collect()
}

/// The (site name, id) order of a record as one integer.
fn key(ranks: &[Vec<u32>], r: RecordRef) -> u64 {
    (u64::from(r.site) << 32) | u64::from(ranks[r.site as usize][r.record as usize])
}

fn sorted_links(ranks: &[Vec<u32>], pairs: impl Iterator<Item = ScoredPair>) -> Vec<Link> {
    let mut links: Vec<Link> = pairs
        .map(|p| {
            let (a, b) = if key(ranks, p.a) > key(ranks, p.b) {
                (p.b, p.a)
            } else {
                (p.a, p.b)
            };
            Link {
                a,
                b,
                score: p.score,
            }
        })
        .collect();
    // Keys are unique per pair, so an unstable sort is deterministic.
    links.sort_unstable_by_key(|l| (key(ranks, l.a), key(ranks, l.b)));
    links
}

/// Renumbers the solver's entities in order of the smallest (site, id) they
/// hold and lists `(entity_id, record)` sorted by (entity_id, site, id).
fn numbered_entities(ranks: &[Vec<u32>], entity: &[Vec<u32>]) -> Vec<(u64, RecordRef)> {
    let mut records: Vec<RecordRef> = Vec::with_capacity(entity.iter().map(Vec::len).sum());
    for (s, rank) in ranks.iter().enumerate() {
        let mut by_rank = vec![0u32; rank.len()];
        for (record, &r) in rank.iter().enumerate() {
            by_rank[r as usize] = record as u32;
        }
        records.extend(by_rank.into_iter().map(|r| RecordRef::new(s as u32, r)));
    }
    // `records` is now in (site, id) order: the first time an entity is seen
    // is at its smallest record.
    let count = entity
        .iter()
        .flatten()
        .map(|&e| e as usize + 1)
        .max()
        .unwrap_or(0);
    let mut number = vec![u64::MAX; count];
    let mut next = 0;
    let mut rows: Vec<(u64, RecordRef)> = records
        .into_iter()
        .map(|r| {
            let e = entity[r.site as usize][r.record as usize] as usize;
            if number[e] == u64::MAX {
                number[e] = next;
                next += 1;
            }
            (number[e], r)
        })
        .collect();
    // Stable: within an entity, records keep their (site, id) order.
    rows.sort_by_key(|&(e, _)| e);
    rows
}

/// Writes `links.parquet` and `entities.parquet` into `out_dir` (created if
/// missing) and, when the outcome holds scores and `scores_path` is given,
/// the scores there. All files are written to temporary files first and
/// renamed at the end: a failed run leaves none of them.
///
/// # Errors
/// [`MatchError::Write`] / [`MatchError::WriteParquet`] naming the file.
pub fn write_outputs(
    outcome: &MatchOutcome,
    out_dir: &Path,
    scores_path: Option<&Path>,
) -> Result<Vec<PathBuf>, MatchError> {
    let created_dir = !out_dir.exists();
    let result = write_all(outcome, out_dir, scores_path);
    if result.is_err() && created_dir {
        // Leave nothing behind; `remove_dir` only removes it while empty.
        let _ = std::fs::remove_dir(out_dir);
    }
    result
}

fn write_all(
    outcome: &MatchOutcome,
    out_dir: &Path,
    scores_path: Option<&Path>,
) -> Result<Vec<PathBuf>, MatchError> {
    std::fs::create_dir_all(out_dir).map_err(|source| MatchError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let threshold = outcome.threshold.to_string();
    let site_names: Vec<&str> = outcome.sites.iter().map(|s| s.name.as_str()).collect();
    let site_names = site_names.join(",");
    let mut metadata = vec![
        (clk_file::keys::ENGINE_VERSION, crate::ENGINE_VERSION),
        ("pprl.threshold", threshold.as_str()),
        ("pprl.sites", site_names.as_str()),
    ];
    if let Some(fp) = &outcome.schema_fingerprint {
        metadata.push((clk_file::keys::SCHEMA_FINGERPRINT, fp.as_str()));
    }
    let blocking = blocking_metadata(&outcome.summary.blocking);
    metadata.extend(blocking.iter().map(|(k, v)| (*k, v.as_str())));

    let mut written = vec![(
        out_dir.join(LINKS_FILE),
        write_parquet(
            &out_dir.join(LINKS_FILE),
            &metadata,
            chunks(&outcome.links).map(|c| links_batch(outcome, c)),
        )?,
    )];
    written.push((
        out_dir.join(ENTITIES_FILE),
        write_parquet(
            &out_dir.join(ENTITIES_FILE),
            &metadata,
            chunks(&outcome.entities).map(|c| entities_batch(outcome, c)),
        )?,
    ));
    if let (Some(path), Some(scores)) = (scores_path, &outcome.scores) {
        written.push((
            path.to_path_buf(),
            write_parquet(
                path,
                &metadata,
                chunks(scores).map(|c| links_batch(outcome, c)),
            )?,
        ));
    }
    // Every file is complete: now rename them all.
    let mut paths = Vec::with_capacity(written.len());
    for (path, file) in written {
        file.commit().map_err(|source| MatchError::Write {
            path: path.clone(),
            source,
        })?;
        paths.push(path);
    }
    Ok(paths)
}

/// Metadata keys that say how a run blocked, so that `pprl evaluate` can
/// tell which true pairs blocking kept ([`blocking_from_metadata`]).
pub mod blocking_keys {
    pub const METHOD: &str = "pprl.blocking";
    pub const LSH_TABLES: &str = "pprl.blocking.lsh_tables";
    pub const LSH_BITS: &str = "pprl.blocking.lsh_bits_per_key";
    pub const LSH_SEED: &str = "pprl.blocking.lsh_seed";
    pub const LSH_MIN_KEY_BITS: &str = "pprl.blocking.lsh_min_key_bits";
    pub const MAX_BUCKET_PAIRS: &str = "pprl.blocking.max_bucket_pairs";
}

fn blocking_metadata(blocking: &BlockingUsed) -> Vec<(&'static str, String)> {
    use blocking_keys::*;
    let mut out = vec![(METHOD, blocking.name().to_owned())];
    match blocking {
        BlockingUsed::AllPairs => {}
        BlockingUsed::Lsh { params, .. } => out.extend([
            (LSH_TABLES, params.tables.to_string()),
            (LSH_BITS, params.bits_per_key.to_string()),
            (LSH_SEED, params.seed.to_string()),
            (LSH_MIN_KEY_BITS, params.min_key_bits.to_string()),
            (MAX_BUCKET_PAIRS, params.max_bucket_pairs.to_string()),
        ]),
        BlockingUsed::Keys { max_bucket_pairs } => {
            out.push((MAX_BUCKET_PAIRS, max_bucket_pairs.to_string()))
        }
    }
    out
}

/// The blocking recorded in a links file's metadata; `None` when the file
/// records none (written before blocking existed: all pairs) or a value is
/// malformed.
pub fn blocking_from_metadata(metadata: &HashMap<String, String>) -> Option<BlockingUsed> {
    use blocking_keys::*;
    let get = |key: &str| metadata.get(key).and_then(|v| v.parse::<u64>().ok());
    match metadata.get(METHOD).map(String::as_str) {
        None | Some("none") => Some(BlockingUsed::AllPairs),
        Some("lsh") => Some(BlockingUsed::Lsh {
            params: LshParams {
                tables: usize::try_from(get(LSH_TABLES)?).ok()?,
                bits_per_key: usize::try_from(get(LSH_BITS)?).ok()?,
                seed: get(LSH_SEED)?,
                min_key_bits: u32::try_from(get(LSH_MIN_KEY_BITS)?).ok()?,
                max_bucket_pairs: get(MAX_BUCKET_PAIRS)?,
            },
            planned_recall: None,
        }),
        Some("keys") => Some(BlockingUsed::Keys {
            max_bucket_pairs: get(MAX_BUCKET_PAIRS)?,
        }),
        Some(_) => None,
    }
}

/// Rows per record batch written, so that the strings of a large scores file
/// are never all in memory at once.
const BATCH_ROWS: usize = 1 << 20;

/// `rows` in slices of [`BATCH_ROWS`]; one empty slice when there are none,
/// so that an empty table still gets its schema.
fn chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let empty = rows.is_empty().then_some(rows);
    rows.chunks(BATCH_ROWS).chain(empty)
}

/// Writes `batches` (at least one) into a temporary file for `path`; the
/// caller commits it.
fn write_parquet(
    path: &Path,
    metadata: &[(&str, &str)],
    batches: impl Iterator<Item = RecordBatch>,
) -> Result<AtomicFile, MatchError> {
    let io_err = |source| MatchError::Write {
        path: path.to_path_buf(),
        source,
    };
    let pq_err = |source| MatchError::WriteParquet {
        path: path.to_path_buf(),
        source,
    };
    let mut out = AtomicFile::create(path).map_err(io_err)?;
    let file = out.flush_behind().map_err(io_err)?;
    let mut writer: Option<ArrowWriter<FlushBehind>> = None;
    let mut file = Some(file);
    for batch in batches {
        let w = match &mut writer {
            Some(w) => w,
            None => writer.insert(
                ArrowWriter::try_new(
                    file.take().expect("one writer"),
                    batch.schema(),
                    // Ids are distinct; site names and entity ids repeat.
                    Some(table::writer_properties_with_unique(
                        metadata,
                        &["id", "id_a", "id_b"],
                    )),
                )
                .map_err(pq_err)?,
            ),
        };
        w.write(&batch).map_err(pq_err)?;
    }
    writer
        .expect("at least one batch")
        .close()
        .map_err(pq_err)?;
    Ok(out)
}

fn links_batch(outcome: &MatchOutcome, links: &[Link]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("site_a", DataType::Utf8, false),
        Field::new("id_a", DataType::Utf8, false),
        Field::new("site_b", DataType::Utf8, false),
        Field::new("id_b", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]);
    let a: Vec<(&str, &str)> = links.iter().map(|l| outcome.record(l.a)).collect();
    let b: Vec<(&str, &str)> = links.iter().map(|l| outcome.record(l.b)).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(a.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(a.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(b.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(b.iter().map(|r| r.1))),
            Arc::new(Float32Array::from_iter_values(
                links.iter().map(|l| l.score as f32),
            )),
        ],
    )
    .expect("columns match the schema")
}

fn entities_batch(outcome: &MatchOutcome, entities: &[(u64, RecordRef)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("entity_id", DataType::Int64, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
    ]);
    let rows: Vec<(&str, &str)> = entities.iter().map(|&(_, r)| outcome.record(r)).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                entities.iter().map(|&(e, _)| e as i64),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::clk_file::ClkMeta;

    fn file(site: &str, ids: &[&str], clks: &[[u8; 2]]) -> (PathBuf, ClkFile) {
        let flat: Vec<u8> = clks.concat();
        (
            PathBuf::from(format!("{site}.clk.parquet")),
            ClkFile {
                meta: ClkMeta {
                    engine_version: crate::ENGINE_VERSION.into(),
                    site: site.into(),
                    schema_fingerprint: Some("f".repeat(64)),
                    filter_bits: 16,
                    key_check_value: Some("k".repeat(32)),
                },
                ids: ids.iter().map(|s| s.to_string()).collect(),
                popcounts: flat.chunks(2).map(clk_file::popcount).collect(),
                clks: flat,
                blocking_keys: None,
            },
        )
    }

    fn names(o: &MatchOutcome, links: &[Link]) -> Vec<(String, String, String, String)> {
        links
            .iter()
            .map(|l| {
                let (sa, ia) = o.record(l.a);
                let (sb, ib) = o.record(l.b);
                (sa.into(), ia.into(), sb.into(), ib.into())
            })
            .collect()
    }

    #[test]
    fn two_sites_link_one_to_one_and_everyone_gets_an_entity() {
        let a = file(
            "A",
            &["a2", "a1", "a3"],
            &[[0xff, 0x0f], [0xf0, 0xf0], [0x01, 0x00]],
        );
        let b = file("B", &["b1", "b2"], &[[0xff, 0x1f], [0xf0, 0xf1]]);
        // Given in reverse order: sites are sorted by name anyway.
        let o = match_files(&MatchOptions::default(), vec![b, a], &NoProgress).unwrap();
        assert_eq!(o.summary.mode, MatchMode::TwoSites);
        assert_eq!(
            names(&o, &o.links),
            vec![
                ("A".into(), "a1".into(), "B".into(), "b2".into()),
                ("A".into(), "a2".into(), "B".into(), "b1".into()),
            ]
        );
        // Entities numbered by smallest (site, id): a1 -> 0, a2 -> 1, a3 -> 2.
        let rows: Vec<(u64, (&str, &str))> =
            o.entities.iter().map(|&(e, r)| (e, o.record(r))).collect();
        assert_eq!(
            rows,
            vec![
                (0, ("A", "a1")),
                (0, ("B", "b2")),
                (1, ("A", "a2")),
                (1, ("B", "b1")),
                (2, ("A", "a3"))
            ]
        );
        assert_eq!(o.summary.entities, 3);
        assert_eq!(o.summary.comparisons + o.summary.skipped_by_length, 6);
    }

    #[test]
    fn mismatched_inputs_are_refused_with_the_file_named() {
        let a = file("A", &["1"], &[[1, 2]]);
        let mut b = file("B", &["1"], &[[1, 2]]);
        b.1.meta.key_check_value = Some("x".repeat(32));
        let err = match_files(&MatchOptions::default(), vec![a.clone(), b], &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("B.clk.parquet was encoded with a different secret than A.clk.parquet"),
            "{err}"
        );

        let mut c = file("C", &["1"], &[[1, 2]]);
        c.1.meta.schema_fingerprint = Some("0".repeat(64));
        let err = match_files(&MatchOptions::default(), vec![a.clone(), c], &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("C.clk.parquet was encoded with a different linkage schema"),
            "{err}"
        );

        let mut d = file("D", &["1"], &[[1, 2]]);
        d.1.meta.filter_bits = 15;
        let err = match_files(&MatchOptions::default(), vec![a.clone(), d], &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("D.clk.parquet has 15-bit clks but A.clk.parquet has 16-bit"),
            "{err}"
        );

        let dup = file("A", &["2"], &[[1, 2]]);
        let err = match_files(
            &MatchOptions::default(),
            vec![a, (PathBuf::from("x.json"), dup.1)],
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            matches!(err, MatchError::DuplicateSite { ref site, .. } if site == "A"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let a = file("A", &["1", "2", "1"], &[[1, 2], [3, 4], [5, 6]]);
        let err = match_files(&MatchOptions::default(), vec![a], &NoProgress).unwrap_err();
        assert!(
            matches!(err, MatchError::DuplicateId { ref id, first: 1, second: 3, .. } if id == "1"),
            "{err}"
        );
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let a = file("A", &["1"], &[[1, 2]]);
        for options in [
            MatchOptions {
                threshold: 0.0,
                ..Default::default()
            },
            MatchOptions {
                threshold: 1.5,
                ..Default::default()
            },
            MatchOptions {
                threshold: f64::NAN,
                ..Default::default()
            },
            MatchOptions {
                min_score: Some(0.9),
                threshold: 0.8,
                ..Default::default()
            },
            MatchOptions {
                top_k: Some(0),
                ..Default::default()
            },
        ] {
            assert!(
                match_files(&options, vec![a.clone()], &NoProgress).is_err(),
                "{options:?}"
            );
        }
        assert!(matches!(
            match_files(&MatchOptions::default(), vec![], &NoProgress),
            Err(MatchError::NoInputs)
        ));
    }

    #[test]
    fn dedup_and_scores() {
        let a = file(
            "A",
            &["x", "y", "z", "w"],
            &[[0xff, 0x0f], [0xff, 0x1f], [0xff, 0x0e], [0, 1]],
        );
        let options = MatchOptions {
            threshold: 0.9,
            min_score: Some(0.5),
            ..Default::default()
        };
        let o = match_files(&options, vec![a], &NoProgress).unwrap();
        assert_eq!(o.summary.mode, MatchMode::Deduplicate);
        // Popcounts x 12, y 13, z 11, w 1: x~y 24/25, x~z 22/23, y~z 22/24, all >= 0.9,
        // so x, y, z form one clique; w scores below 0.5 with everyone.
        let rows: Vec<(u64, &str)> = o
            .entities
            .iter()
            .map(|&(e, r)| (e, o.record(r).1))
            .collect();
        assert_eq!(rows, vec![(0, "w"), (1, "x"), (1, "y"), (1, "z")]);
        let links: Vec<(&str, &str, f64)> = o
            .links
            .iter()
            .map(|l| (o.record(l.a).1, o.record(l.b).1, l.score))
            .collect();
        assert_eq!(
            links,
            vec![
                ("x", "y", 24.0 / 25.0),
                ("x", "z", 22.0 / 23.0),
                ("y", "z", 22.0 / 24.0)
            ]
        );
        assert_eq!(o.scores.as_ref().unwrap(), &o.links);
        assert_eq!(o.summary.comparisons + o.summary.skipped_by_length, 6);
    }

    #[test]
    fn empty_sites_give_singletons() {
        let a = file("A", &[], &[]);
        let b = file("B", &["1"], &[[1, 2]]);
        let o = match_files(&MatchOptions::default(), vec![a, b], &NoProgress).unwrap();
        assert!(o.links.is_empty());
        assert_eq!(o.entities.len(), 1);
        assert_eq!(o.summary.comparisons, 0);
    }

    #[test]
    fn outputs_are_written_and_a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = file("A", &["1", "2"], &[[0xff, 0], [0, 0xff]]);
        let b = file("B", &["9", "8"], &[[0xff, 0], [0, 0xfe]]);
        let options = MatchOptions {
            min_score: Some(0.5),
            ..Default::default()
        };
        let o = match_files(&options, vec![a, b], &NoProgress).unwrap();
        let out = dir.path().join("out");
        let scores = dir.path().join("scores.parquet");
        let written = write_outputs(&o, &out, Some(&scores)).unwrap();
        assert_eq!(written.len(), 3);
        let (_, batches, meta) = table::read_batches(&out.join(LINKS_FILE)).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert_eq!(meta.get("pprl.sites").map(String::as_str), Some("A,B"));
        let (_, batches, _) = table::read_batches(&out.join(ENTITIES_FILE)).unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);

        // The scores path's directory does not exist: nothing at all is written.
        let out2 = dir.path().join("out2");
        let bad = dir.path().join("missing").join("scores.parquet");
        assert!(write_outputs(&o, &out2, Some(&bad)).is_err());
        assert!(!out2.exists());
    }
}
