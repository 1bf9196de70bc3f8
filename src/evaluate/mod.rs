//! Evaluation against ground truth: precision, recall, F1, score distributions.
//!
//! [`evaluate`] reads the links of a match run (`links.parquet`), the ground
//! truth (a CSV of record pairs, or Febrl's `rec-N-org` / `rec-N-dup-M` naming
//! convention) and optionally the entity file (the list of every record, which
//! lets ids be checked) and the candidate scores (`scores.parquet`). It hands
//! back a [`Report`]: the quality of the links and, with scores, the quality
//! at each threshold of a sweep and the threshold that maximises F1. With a
//! plot path it also draws the score distribution of true matches and
//! non-matches and the precision / recall curve (SVG), the picture a linkage
//! unit looks at to choose a threshold.
//!
//! Pairs are unordered: a link (A, x, B, y) and a truth pair (B, y, A, x) are
//! the same pair.

mod blocking;
mod plot;

pub use blocking::BlockingReport;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use arrow_array::{Array, Float32Array};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::slice::ParallelSliceMut;

use crate::io::records::{ReadOptions, RecordReader, RecordsError, default_delimiter};
use crate::io::table::TableError;
use crate::release::{ColumnError, ReleaseError, RowRef, read_entities};

/// Why an evaluation was refused.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// Reading a Parquet file failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The entity file is unreadable or malformed.
    #[error(transparent)]
    Entities(#[from] ReleaseError),
    /// A column or a value is not what the file must have.
    #[error(transparent)]
    Column(#[from] ColumnError),
    /// A score that is not a number between 0 and 1.
    #[error("{path}, {at}, column `score`: {score} is not a score between 0 and 1")]
    BadScore {
        path: PathBuf,
        at: RowRef,
        score: f32,
    },
    /// The same pair twice in one file.
    #[error("{path}, {at}: the pair appears a second time (first at {first})")]
    DuplicatePair {
        path: PathBuf,
        at: RowRef,
        first: RowRef,
    },
    /// A pair of a record with itself.
    #[error("{path}, {at}: a record paired with itself")]
    SelfPair { path: PathBuf, at: RowRef },
    /// A truth CSV that cannot be read: a row with the wrong number of
    /// fields, a value that is not UTF-8, no header.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The truth CSV header lacks the id columns, or has one site column only.
    #[error(
        "{path}: {problem}; a truth file has the columns id_a, id_b, and optionally site_a, site_b"
    )]
    TruthColumns { path: PathBuf, problem: String },
    /// Truth without site columns when the linkage does not have one or two sites.
    #[error(
        "{path} has no site_a, site_b columns, so its ids must belong to a linkage of two sites \
         (id_a of the first, id_b of the second in name order) or of one; found sites: {}",
        if sites.is_empty() { "none (give --entities)".to_owned() } else { sites.join(", ") }
    )]
    TruthNeedsSites { path: PathBuf, sites: Vec<String> },
    /// A record that is not in the entity file.
    #[error("{path}, {at}: record {id:?} of site {site:?} is not in {entities}")]
    UnknownRecord {
        path: PathBuf,
        at: RowRef,
        site: String,
        id: String,
        entities: PathBuf,
    },
    /// Not one record of the truth occurs in the links or scores.
    #[error(
        "none of the records in {truth} occurs in {links}: are they from the same linkage, \
         with the same site names? (give the entity file to check every id)"
    )]
    TruthDisjoint { truth: PathBuf, links: PathBuf },
    /// Febrl truth needs the list of all records.
    #[error(
        "Febrl truth needs the entity file, to know every record and so the number of true pairs"
    )]
    FebrlNeedsEntities,
    /// A record id that does not follow Febrl's naming.
    #[error("{path}, {at}: record id {id:?} is not a Febrl id (rec-N-org or rec-N-dup-M)")]
    NotFebrlId {
        path: PathBuf,
        at: RowRef,
        id: String,
    },
    /// A threshold sweep that makes no sense.
    #[error("thresholds {text:?}: {problem} (expected START:STOP:STEP, e.g. 0.5:1:0.05)")]
    BadThresholds { text: String, problem: String },
    /// A clk file given for pair completeness cannot be read.
    #[error(transparent)]
    Clks(#[from] crate::io::clk_file::ClkFileError),
    /// The links file records a blocking this version cannot read.
    #[error("{path}: its pprl.blocking metadata is malformed or from a newer version")]
    BlockingMetadata { path: PathBuf },
    /// A site of the truth without a clk file.
    #[error(
        "pair completeness needs the clk file of every site of the truth: site {site:?} is none \
         of the sites of the given clk files ({})", given.join(", ")
    )]
    ClksMissingSite { site: String, given: Vec<String> },
    /// A true record that is not in its site's clk file.
    #[error("{path} has no record {id:?}: is it the file the match run read?")]
    ClksMissingRecord { path: PathBuf, id: String },
    /// The run blocked on keys but a clk file has none.
    #[error(
        "the match run blocked on site keys but {path} carries none: is it the file the match run read?"
    )]
    ClksWithoutKeys { path: PathBuf },
    /// Recomputing the blocking failed.
    #[error("blocking: {0}")]
    Block(#[from] crate::block::BlockError),
    /// Drawing or writing the plot failed.
    #[error("cannot draw the plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

/// Where the ground truth comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    /// A CSV file of true pairs: columns `id_a`, `id_b`, and optionally
    /// `site_a`, `site_b`. Without site columns, `id_a` belongs to the first
    /// and `id_b` to the second site of a two-site linkage (sites in name
    /// order), or both to the only site of a deduplication.
    PairsCsv(PathBuf),
    /// Febrl's naming: `rec-N-org` and `rec-N-dup-M` with the same N are the
    /// same person. The true pairs are all pairs of records with the same N in
    /// different sites (or, when the entity file has one site, in that site).
    /// Needs the entity file.
    Febrl,
}

/// How the candidate pairs of a score file become links at each threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepMode {
    /// Greedy in descending score (ties in file order): a pair is kept when
    /// neither record already has a link to the other's site. For two sites
    /// this is the one-to-one assignment `pprl match` makes, so a threshold
    /// read off the sweep gives the links a match run at that threshold gives.
    OneToOne,
    /// Every candidate pair at or above the threshold is a link.
    AllPairs,
}

/// Thresholds of a sweep: `start`, `start + step`, ... up to `stop`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdGrid {
    start: f64,
    stop: f64,
    step: f64,
}

impl ThresholdGrid {
    /// A grid from `start` to `stop` (inclusive when it falls on a step).
    ///
    /// # Errors
    /// [`EvaluateError::BadThresholds`] unless `0 <= start <= stop <= 1` and `step > 0`.
    pub fn new(start: f64, stop: f64, step: f64) -> Result<ThresholdGrid, EvaluateError> {
        let bad = |problem: &str| EvaluateError::BadThresholds {
            text: format!("{start}:{stop}:{step}"),
            problem: problem.to_owned(),
        };
        if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&stop) {
            return Err(bad("thresholds lie between 0 and 1"));
        }
        if start > stop {
            return Err(bad("START is above STOP"));
        }
        if !(step > 0.0 && step.is_finite()) || (stop - start) / step > 100_000.0 {
            return Err(bad(
                "STEP must be positive and give at most 100000 thresholds",
            ));
        }
        Ok(ThresholdGrid { start, stop, step })
    }

    /// The grid used when none is given: steps of 0.05 from the lowest
    /// candidate score (rounded up to a step) to 1. Below the lowest score a
    /// sweep says nothing: `pprl match --min-score` left those pairs out.
    pub fn auto(lowest_score: f32) -> ThresholdGrid {
        let step = 0.05;
        let start = ((f64::from(lowest_score) / step - 1e-9).ceil() * step).clamp(0.0, 1.0);
        ThresholdGrid {
            start,
            stop: 1.0,
            step,
        }
    }

    /// The thresholds, as the `f32` that scores are compared with.
    pub fn thresholds(&self) -> Vec<f32> {
        // Counting steps in integers keeps 0.1 + 0.1 + ... from drifting past STOP.
        let n = ((self.stop - self.start) / self.step + 1e-9).floor() as usize;
        (0..=n)
            .map(|i| {
                let t = self.start + i as f64 * self.step;
                ((t * 1e6).round() / 1e6) as f32
            })
            .collect()
    }
}

impl FromStr for ThresholdGrid {
    type Err = EvaluateError;

    /// Parses `START:STOP:STEP`, e.g. `0.5:1:0.05`.
    fn from_str(text: &str) -> Result<ThresholdGrid, EvaluateError> {
        let bad = |problem: &str| EvaluateError::BadThresholds {
            text: text.to_owned(),
            problem: problem.to_owned(),
        };
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        let [start, stop, step] = parts[..] else {
            return Err(bad("three numbers separated by ':' are needed"));
        };
        let number = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| bad(&format!("{s:?} is not a number")))
        };
        ThresholdGrid::new(number(start)?, number(stop)?, number(step)?)
    }
}

/// What [`evaluate`] compares.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// `links.parquet` of a match run.
    pub links: PathBuf,
    /// The ground truth.
    pub truth: Truth,
    /// `entities.parquet` of the same run: every record. With it every id in
    /// the truth, the links and the scores is checked, and Febrl truth can be
    /// counted.
    pub entities: Option<PathBuf>,
    /// `scores.parquet` of the same run (candidate pairs): enables the sweep.
    pub scores: Option<PathBuf>,
    /// Thresholds of the sweep; `None` for [`ThresholdGrid::auto`].
    pub thresholds: Option<ThresholdGrid>,
    /// How the sweep turns candidates into links; `None` for one-to-one when
    /// the scores hold exactly two sites and every pair crosses them, all
    /// pairs otherwise.
    pub sweep_mode: Option<SweepMode>,
    /// Where to write the SVG plot, if anywhere.
    pub plot: Option<PathBuf>,
    /// The sites' clk files the match run read: with them, the report says
    /// how many true pairs its blocking kept ([`Report::blocking`]).
    pub clks: Vec<PathBuf>,
}

impl EvaluateOptions {
    /// Links and truth only: no entity file, no sweep, no plot.
    pub fn new(links: &Path, truth: Truth) -> EvaluateOptions {
        EvaluateOptions {
            links: links.to_path_buf(),
            truth,
            entities: None,
            scores: None,
            thresholds: None,
            sweep_mode: None,
            plot: None,
            clks: Vec::new(),
        }
    }
}

/// Link quality against the truth. Precision is 0 when there are no links,
/// recall 0 when there are no true pairs, F1 0 when both are 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Links counted.
    pub links: u64,
    /// Links that are true pairs.
    pub true_positives: u64,
    /// Links that are not true pairs.
    pub false_positives: u64,
    /// True pairs without a link.
    pub false_negatives: u64,
    /// `TP / (TP + FP)`.
    pub precision: f64,
    /// `TP / (TP + FN)`.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

impl Quality {
    /// The figures of `links` links of which `true_positives` are true, out
    /// of `truth_pairs` true pairs.
    pub fn new(links: u64, true_positives: u64, truth_pairs: u64) -> Quality {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(true_positives, links);
        let recall = ratio(true_positives, truth_pairs);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Quality {
            links,
            true_positives,
            false_positives: links.saturating_sub(true_positives),
            false_negatives: truth_pairs.saturating_sub(true_positives),
            precision,
            recall,
            f1,
        }
    }
}

/// Quality when only pairs scoring at least `threshold` are links.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdRow {
    /// The threshold (pairs with `score >= threshold` are links).
    pub threshold: f32,
    /// Quality of those links.
    pub quality: Quality,
}

/// The quality over a sweep of thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// How candidates became links.
    pub mode: SweepMode,
    /// Candidate pairs in the score file.
    pub candidates: u64,
    /// The lowest candidate score (0 when there are none).
    pub lowest_score: f32,
    /// One row per threshold of the grid.
    pub rows: Vec<ThresholdRow>,
    /// The threshold that maximises F1, searched over every distinct score
    /// (not only the grid); the highest such threshold when several tie.
    /// `None` without candidates.
    pub best: Option<ThresholdRow>,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// True pairs in the truth.
    pub truth_pairs: u64,
    /// Records in the entity file, when given.
    pub records: Option<u64>,
    /// Whether every id was checked against the entity file.
    pub ids_checked: bool,
    /// Quality of the links.
    pub links: Quality,
    /// The sweep, when scores were given.
    pub sweep: Option<Sweep>,
    /// True pairs that the run's blocking kept, when clk files were given.
    pub blocking: Option<BlockingReport>,
}

/// Evaluates a match run against the truth (see the module documentation).
///
/// Memory: the candidate pairs are held as 12 bytes each (two record numbers
/// and the score), plus the records of the entity file; Parquet files are
/// read in batches.
///
/// # Errors
/// An [`EvaluateError`] naming the file, row and column: unreadable or
/// malformed files, ids of the truth, links or scores that are not in the
/// entity file, a truth file none of whose records occurs in the links or
/// scores, Febrl truth without the entity file or with ids that do not follow
/// Febrl's naming, or a failed plot (no plot file is left then).
pub fn evaluate(options: &EvaluateOptions) -> Result<Report, EvaluateError> {
    if options.truth == Truth::Febrl && options.entities.is_none() {
        return Err(EvaluateError::FebrlNeedsEntities);
    }
    let mut records = match &options.entities {
        Some(path) => Records::from_entities(path)?,
        None => Records::open(),
    };
    let links = read_scored_pairs(&options.links, &mut records, Duplicates::Anywhere)?;
    let scores = match &options.scores {
        // Score files can hold millions of pairs; pprl match writes them
        // sorted, so a repeated pair would sit next to itself.
        Some(path) => Some(read_scored_pairs(path, &mut records, Duplicates::Adjacent)?),
        None => None,
    };
    let truth = match &options.truth {
        Truth::PairsCsv(path) => {
            let seen_before = records.len();
            let (truth, found) = read_truth_csv(path, &mut records)?;
            let has_candidates =
                !links.is_empty() || scores.as_ref().is_some_and(|s| !s.is_empty());
            if options.entities.is_none()
                && has_candidates
                && seen_before > 0
                && found == 0
                && !truth.is_empty()
            {
                return Err(EvaluateError::TruthDisjoint {
                    truth: path.clone(),
                    links: options.scores.as_ref().unwrap_or(&options.links).clone(),
                });
            }
            truth
        }
        Truth::Febrl => {
            let entities = options.entities.as_deref().expect("checked above");
            febrl_truth(entities, &records)?
        }
    };
    let truth_pairs = truth.len() as u64;
    let link_tp = links.iter().filter(|p| truth.contains(&p.key())).count() as u64;
    let link_quality = Quality::new(links.len() as u64, link_tp, truth_pairs);

    // The curve runs over the candidates; without scores a plot uses the
    // links themselves, covering thresholds above the one the match used.
    let (candidates, source) = match &scores {
        Some(scores) => (scores, "candidate pairs"),
        None => (&links, "links"),
    };
    let mode = match (&scores, options.sweep_mode) {
        (Some(_), Some(mode)) => mode,
        (Some(scores), None) => auto_mode(scores, &records),
        (None, _) => SweepMode::AllPairs,
    };
    let curve = (scores.is_some() || options.plot.is_some())
        .then(|| Curve::new(candidates, &truth, mode, &records));

    let sweep = match (&scores, &curve) {
        (Some(scores), Some(curve)) => {
            let grid = options
                .thresholds
                .unwrap_or_else(|| ThresholdGrid::auto(curve.lowest));
            Some(curve.sweep(mode, &grid, scores.len() as u64))
        }
        _ => None,
    };

    if let (Some(path), Some(curve)) = (&options.plot, &curve) {
        let marked = curve.best().map(|b| b.threshold);
        let mut histogram = plot::Histogram::new(plot::x_low(curve.lowest, marked));
        for p in candidates {
            histogram.add(p.score, truth.contains(&p.key()));
        }
        let data = plot::PlotData {
            histogram,
            curve: curve.points(1000),
            marked,
            source,
        };
        plot::write_svg(path, &data)?;
    }

    let blocking = if options.clks.is_empty() {
        None
    } else {
        Some(blocking::report(
            &options.links,
            &options.clks,
            &truth,
            &records,
        )?)
    };

    Ok(Report {
        truth_pairs,
        records: options.entities.as_ref().map(|_| records.len() as u64),
        ids_checked: options.entities.is_some(),
        links: link_quality,
        sweep,
        blocking,
    })
}

/// A fast, non-cryptographic hash (the Fx hash of rustc) for record ids and
/// pair keys: the inputs are the caller's own files, so hash flooding is no
/// concern, and the default SipHash dominates the run time on large score
/// files.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;
type FxHashMap<K, V> = HashMap<K, V, FxBuild>;
type FxHashSet<K> = HashSet<K, FxBuild>;

/// Every record seen, numbered: from the entity file (closed: an unknown
/// record is an error) or from the files as they are read (open).
struct Records {
    sites: Vec<String>,
    by_site: Vec<FxHashMap<Box<str>, u32>>,
    site_of: Vec<u32>,
    ids: Vec<Box<str>>,
    entities: Option<PathBuf>,
}

impl Records {
    fn open() -> Records {
        Records {
            sites: Vec::new(),
            by_site: Vec::new(),
            site_of: Vec::new(),
            ids: Vec::new(),
            entities: None,
        }
    }

    fn from_entities(path: &Path) -> Result<Records, EvaluateError> {
        let table = read_entities(path)?;
        let mut records = Records::open();
        for (site, id) in table.sites.iter().zip(&table.ids) {
            records.insert(site, id);
        }
        records.entities = Some(path.to_path_buf());
        Ok(records)
    }

    fn len(&self) -> usize {
        self.site_of.len()
    }

    fn site_index(&self, site: &str) -> Option<usize> {
        self.sites.iter().position(|s| s == site)
    }

    fn get(&self, site: &str, id: &str) -> Option<u32> {
        self.by_site[self.site_index(site)?].get(id).copied()
    }

    fn insert(&mut self, site: &str, id: &str) -> u32 {
        let s = match self.site_index(site) {
            Some(s) => s,
            None => {
                self.sites.push(site.to_owned());
                self.by_site.push(FxHashMap::default());
                self.sites.len() - 1
            }
        };
        if let Some(&r) = self.by_site[s].get(id) {
            return r;
        }
        let r = u32::try_from(self.site_of.len()).expect("fewer than 2^32 records");
        self.by_site[s].insert(id.into(), r);
        self.site_of.push(s as u32);
        self.ids.push(id.into());
        r
    }

    /// The record of `(site, id)`, added when the set is open.
    fn resolve(
        &mut self,
        path: &Path,
        at: RowRef,
        site: &str,
        id: &str,
    ) -> Result<u32, EvaluateError> {
        match (&self.entities, self.get(site, id)) {
            (_, Some(r)) => Ok(r),
            (None, None) => Ok(self.insert(site, id)),
            (Some(entities), None) => Err(EvaluateError::UnknownRecord {
                path: path.to_path_buf(),
                at,
                site: site.to_owned(),
                id: id.to_owned(),
                entities: entities.clone(),
            }),
        }
    }

    fn sorted_sites(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.sites.iter().collect();
        set.into_iter().cloned().collect()
    }
}

/// An unordered pair of records as one key.
fn pair_key(a: u32, b: u32) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (u64::from(lo) << 32) | u64::from(hi)
}

/// A pair from a links or scores file: two record numbers and the score.
#[derive(Debug, Clone, Copy)]
struct Scored {
    a: u32,
    b: u32,
    score: f32,
}

impl Scored {
    fn key(&self) -> u64 {
        pair_key(self.a, self.b)
    }
}

/// How hard to look for a pair listed twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duplicates {
    /// Anywhere in the file (a hash set of every pair).
    Anywhere,
    /// On consecutive rows only (files sorted by pair, as pprl match writes them).
    Adjacent,
}

/// Rows per batch when streaming a links or scores file.
const BATCH_ROWS: usize = 64 * 1024;

fn read_scored_pairs(
    path: &Path,
    records: &mut Records,
    duplicates: Duplicates,
) -> Result<Vec<Scored>, EvaluateError> {
    let file = std::fs::File::open(path).map_err(TableError::io(path))?;
    let pq_err = |source| TableError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq_err)?;
    let schema = builder.schema().clone();
    ColumnError::require_columns(
        path,
        &schema,
        &[
            ("site_a", "Utf8 strings"),
            ("id_a", "Utf8 strings"),
            ("site_b", "Utf8 strings"),
            ("id_b", "Utf8 strings"),
            ("score", "Float32"),
        ],
    )?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(pq_err)?;

    let mut out = Vec::with_capacity(rows);
    let mut first_row: FxHashMap<u64, u64> = FxHashMap::default();
    let mut previous: Option<u64> = None;
    let mut row0 = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| TableError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        let column = |name: &str| crate::release::string_column(path, &batch, name);
        let (site_a, id_a, site_b, id_b) = (
            column("site_a")?,
            column("id_a")?,
            column("site_b")?,
            column("id_b")?,
        );
        let score = batch.column_by_name("score").expect("checked above");
        let type_error = || ColumnError::ColumnType {
            path: path.to_path_buf(),
            column: "score".into(),
            expected: "Float32",
            found: score.data_type().to_string(),
        };
        if !matches!(score.data_type(), DataType::Float32 | DataType::Float64) {
            return Err(type_error().into());
        }
        let score =
            arrow_cast::cast(score.as_ref(), &DataType::Float32).map_err(|_| type_error())?;
        let score = score
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(type_error)?;
        let at = |i: usize| RowRef::Row(row0 + i as u64 + 1);
        for (name, array) in [
            ("site_a", &site_a as &dyn Array),
            ("id_a", &id_a),
            ("site_b", &site_b),
            ("id_b", &id_b),
            ("score", score),
        ] {
            if array.null_count() > 0 {
                let i = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
                return Err(ColumnError::MissingValue {
                    path: path.to_path_buf(),
                    at: at(i),
                    column: name.to_owned(),
                }
                .into());
            }
        }
        let (mut a, mut b) = (0u32, 0u32);
        for i in 0..batch.num_rows() {
            let s = score.value(i);
            if !(0.0..=1.0).contains(&s) {
                return Err(EvaluateError::BadScore {
                    path: path.to_path_buf(),
                    at: at(i),
                    score: s,
                });
            }
            // Files sorted by (site_a, id_a) repeat a record on many rows in
            // a row: look it up only when it changes.
            if i == 0
                || id_a.value(i) != id_a.value(i - 1)
                || site_a.value(i) != site_a.value(i - 1)
            {
                a = records.resolve(path, at(i), site_a.value(i), id_a.value(i))?;
            }
            if i == 0
                || id_b.value(i) != id_b.value(i - 1)
                || site_b.value(i) != site_b.value(i - 1)
            {
                b = records.resolve(path, at(i), site_b.value(i), id_b.value(i))?;
            }
            if a == b {
                return Err(EvaluateError::SelfPair {
                    path: path.to_path_buf(),
                    at: at(i),
                });
            }
            let key = pair_key(a, b);
            let row = row0 + i as u64 + 1;
            let first = match duplicates {
                Duplicates::Anywhere => first_row.insert(key, row),
                Duplicates::Adjacent => (previous == Some(key)).then(|| row - 1),
            };
            if let Some(first) = first {
                return Err(EvaluateError::DuplicatePair {
                    path: path.to_path_buf(),
                    at: at(i),
                    first: RowRef::Row(first),
                });
            }
            previous = Some(key);
            out.push(Scored { a, b, score: s });
        }
        row0 += batch.num_rows() as u64;
    }
    Ok(out)
}

/// Reads a truth CSV; returns its pairs and how many of its records were
/// already known (from the entity file, the links or the scores).
fn read_truth_csv(
    path: &Path,
    records: &mut Records,
) -> Result<(FxHashSet<u64>, usize), EvaluateError> {
    // Read as a site's input is: trimmed, quotes after blanks open quoted
    // fields, tabs separate the fields of a .tsv file.
    let mut reader = RecordReader::open(path, &ReadOptions::trimmed_csv(default_delimiter(path)))?;
    let header = reader.columns().to_vec();
    let find = |name: &str| header.iter().position(|h| h == name);
    let (Some(col_a), Some(col_b)) = (find("id_a"), find("id_b")) else {
        return Err(EvaluateError::TruthColumns {
            path: path.to_path_buf(),
            problem: format!("the header is {:?}", header.join(",")),
        });
    };
    let site_cols = match (find("site_a"), find("site_b")) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => {
            return Err(EvaluateError::TruthColumns {
                path: path.to_path_buf(),
                problem: "only one of site_a, site_b is there".into(),
            });
        }
    };
    let default_sites = if site_cols.is_none() {
        let sites = records.sorted_sites();
        match sites.as_slice() {
            [only] => Some((only.clone(), only.clone())),
            [a, b] => Some((a.clone(), b.clone())),
            _ => {
                return Err(EvaluateError::TruthNeedsSites {
                    path: path.to_path_buf(),
                    sites,
                });
            }
        }
    } else {
        None
    };

    let mut truth = FxHashSet::default();
    let mut found = 0;
    while let Some(batch) = reader.next_batch()? {
        for row in 0..batch.len() {
            let at = RowRef::Line(batch.line(row).expect("CSV rows have lines"));
            let field = |col: usize, name: &str| -> Result<String, EvaluateError> {
                match batch.get(row, col) {
                    Some(v) if !v.is_empty() => Ok(v.to_owned()),
                    _ => Err(ColumnError::MissingValue {
                        path: path.to_path_buf(),
                        at,
                        column: name.to_owned(),
                    }
                    .into()),
                }
            };
            let (site_a, site_b) = match (site_cols, &default_sites) {
                (Some((a, b)), _) => (field(a, "site_a")?, field(b, "site_b")?),
                (None, Some((a, b))) => (a.clone(), b.clone()),
                (None, None) => unreachable!("sites are resolved above"),
            };
            let (id_a, id_b) = (field(col_a, "id_a")?, field(col_b, "id_b")?);
            found += usize::from(records.get(&site_a, &id_a).is_some())
                + usize::from(records.get(&site_b, &id_b).is_some());
            let a = records.resolve(path, at, &site_a, &id_a)?;
            let b = records.resolve(path, at, &site_b, &id_b)?;
            if a == b {
                return Err(EvaluateError::SelfPair {
                    path: path.to_path_buf(),
                    at,
                });
            }
            // A pair listed twice is still one true pair.
            truth.insert(pair_key(a, b));
        }
        reader.recycle(batch);
    }
    Ok((truth, found))
}

/// The `N` of a Febrl record id `rec-N-org` or `rec-N-dup-M`.
pub fn febrl_entity(id: &str) -> Option<u64> {
    let rest = id.strip_prefix("rec-")?;
    let (n, kind) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = kind == "org" || kind.strip_prefix("dup-").is_some_and(digits);
    (valid && digits(n)).then(|| n.parse().ok()).flatten()
}

fn febrl_truth(entities: &Path, records: &Records) -> Result<FxHashSet<u64>, EvaluateError> {
    let mut groups: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
    // Records are numbered in entity-file order, so r + 1 is its row.
    for (r, id) in records.ids.iter().enumerate() {
        let n = febrl_entity(id).ok_or_else(|| EvaluateError::NotFebrlId {
            path: entities.to_path_buf(),
            at: RowRef::Row(r as u64 + 1),
            id: id.to_string(),
        })?;
        groups.entry(n).or_default().push(r as u32);
    }
    let one_site = records.sites.len() == 1;
    let mut truth = FxHashSet::default();
    for members in groups.values() {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                if one_site || records.site_of[a as usize] != records.site_of[b as usize] {
                    truth.insert(pair_key(a, b));
                }
            }
        }
    }
    Ok(truth)
}

fn auto_mode(candidates: &[Scored], records: &Records) -> SweepMode {
    let mut seen = vec![false; records.sites.len()];
    let mut crossing = true;
    for p in candidates {
        let (sa, sb) = (
            records.site_of[p.a as usize] as usize,
            records.site_of[p.b as usize] as usize,
        );
        crossing &= sa != sb;
        seen[sa] = true;
        seen[sb] = true;
    }
    if crossing && seen.iter().filter(|&&s| s).count() == 2 {
        SweepMode::OneToOne
    } else {
        SweepMode::AllPairs
    }
}

/// The links at every threshold at once: the pairs kept by the sweep mode,
/// in descending score, each marked true or not. The links at threshold t are
/// a prefix of this list (greedy decisions above t do not depend on pairs
/// below t).
struct Curve {
    scores: Vec<f32>,
    /// `true_prefix[k]`: true pairs among the first k kept pairs.
    true_prefix: Vec<u32>,
    truth_pairs: u64,
    /// The lowest candidate score (0 without candidates).
    lowest: f32,
}

/// One point of the precision / recall curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CurvePoint {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Curve {
    fn new(
        candidates: &[Scored],
        truth: &FxHashSet<u64>,
        mode: SweepMode,
        records: &Records,
    ) -> Curve {
        // One u64 per candidate: descending score in the high half (scores
        // are >= 0, so their bits order like their values), file position in
        // the low half, so ties keep file order, which for pprl's files is
        // (site_a, id_a, site_b, id_b). The keys are distinct, so the
        // parallel sort gives the same order at any thread count.
        let mut order: Vec<u64> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (u64::from(!c.score.to_bits()) << 32) | i as u64)
            .collect();
        order.par_sort_unstable();
        let n_sites = records.sites.len().max(1);
        // linked[r * n_sites + s]: record r already has a link into site s.
        let mut linked = if mode == SweepMode::OneToOne {
            vec![false; records.len() * n_sites]
        } else {
            Vec::new()
        };
        let mut scores = Vec::with_capacity(order.len());
        let mut true_prefix = Vec::with_capacity(order.len() + 1);
        true_prefix.push(0u32);
        for key in order {
            let p = candidates[(key & 0xFFFF_FFFF) as usize];
            if mode == SweepMode::OneToOne {
                let (a, b) = (p.a as usize, p.b as usize);
                let (sa, sb) = (records.site_of[a] as usize, records.site_of[b] as usize);
                if linked[a * n_sites + sb] || linked[b * n_sites + sa] {
                    continue;
                }
                linked[a * n_sites + sb] = true;
                linked[b * n_sites + sa] = true;
            }
            scores.push(p.score);
            let last = *true_prefix.last().expect("starts with 0");
            true_prefix.push(last + u32::from(truth.contains(&p.key())));
        }
        let lowest = candidates
            .iter()
            .map(|p| p.score)
            .fold(f32::INFINITY, f32::min);
        Curve {
            scores,
            true_prefix,
            truth_pairs: truth.len() as u64,
            lowest: if lowest.is_finite() { lowest } else { 0.0 },
        }
    }

    /// Quality of the first `k` kept pairs.
    fn quality(&self, k: usize) -> Quality {
        Quality::new(k as u64, u64::from(self.true_prefix[k]), self.truth_pairs)
    }

    /// Kept pairs scoring at least `threshold`.
    fn count_at(&self, threshold: f32) -> usize {
        self.scores.partition_point(|&s| s >= threshold)
    }

    /// Ends of runs of equal scores: each is a threshold with its prefix length.
    fn boundaries(&self) -> impl Iterator<Item = (f32, usize)> + '_ {
        (0..self.scores.len())
            .filter(|&i| i + 1 == self.scores.len() || self.scores[i + 1] != self.scores[i])
            .map(|i| (self.scores[i], i + 1))
    }

    fn best(&self) -> Option<ThresholdRow> {
        let mut best: Option<ThresholdRow> = None;
        for (threshold, k) in self.boundaries() {
            let quality = self.quality(k);
            // Descending thresholds: keep the first (highest) of equal F1s.
            if best.is_none_or(|b| quality.f1 > b.quality.f1) {
                best = Some(ThresholdRow { threshold, quality });
            }
        }
        best
    }

    fn sweep(&self, mode: SweepMode, grid: &ThresholdGrid, candidates: u64) -> Sweep {
        let rows = grid
            .thresholds()
            .into_iter()
            .map(|threshold| ThresholdRow {
                threshold,
                quality: self.quality(self.count_at(threshold)),
            })
            .collect();
        Sweep {
            mode,
            candidates,
            lowest_score: self.lowest,
            rows,
            best: self.best(),
        }
    }

    /// At most about `max` points of the curve, in ascending threshold.
    fn points(&self, max: usize) -> Vec<CurvePoint> {
        let all: Vec<(f32, usize)> = self.boundaries().collect();
        let stride = all.len().div_ceil(max.max(1)).max(1);
        let mut points: Vec<CurvePoint> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % stride == 0 || *i + 1 == all.len())
            .map(|(_, &(threshold, k))| {
                let q = self.quality(k);
                CurvePoint {
                    threshold,
                    precision: q.precision,
                    recall: q.recall,
                    f1: q.f1,
                }
            })
            .collect();
        points.reverse();
        // Below the lowest kept score the links no longer change: carry the
        // curve on flat to the lowest candidate score, where the picture starts.
        if let Some(&first) = points.first()
            && self.lowest < first.threshold
        {
            points.insert(
                0,
                CurvePoint {
                    threshold: self.lowest,
                    ..first
                },
            );
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_by_hand() {
        // 4 links, 3 true, 6 true pairs: P = 3/4, R = 3/6, F1 = 2*0.75*0.5/1.25 = 0.6.
        let q = Quality::new(4, 3, 6);
        assert_eq!((q.false_positives, q.false_negatives), (1, 3));
        assert!((q.precision - 0.75).abs() < 1e-12);
        assert!((q.recall - 0.5).abs() < 1e-12);
        assert!((q.f1 - 0.6).abs() < 1e-12);
        let none = Quality::new(0, 0, 5);
        assert_eq!((none.precision, none.recall, none.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn febrl_ids() {
        assert_eq!(febrl_entity("rec-1070-org"), Some(1070));
        assert_eq!(febrl_entity("rec-561-dup-0"), Some(561));
        assert_eq!(febrl_entity("rec-561-dup-12"), Some(561));
        for bad in [
            "rec-x-org",
            "rec-1-dup-",
            "rec-1",
            "rec--org",
            "1-org",
            "rec-1-orgx",
            "rec-1-dup-a",
        ] {
            assert_eq!(febrl_entity(bad), None, "{bad}");
        }
    }

    #[test]
    fn grid_steps_do_not_drift() {
        let grid: ThresholdGrid = "0.5:1:0.1".parse().unwrap();
        assert_eq!(grid.thresholds(), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]);
        assert_eq!(ThresholdGrid::auto(0.5).thresholds().len(), 11);
        assert_eq!(ThresholdGrid::auto(0.51).thresholds()[0], 0.55);
        assert!("0.9:0.5:0.1".parse::<ThresholdGrid>().is_err());
        assert!("0.5:1".parse::<ThresholdGrid>().is_err());
        assert!("0.5:1:0".parse::<ThresholdGrid>().is_err());
    }

    fn two_sites() -> Records {
        let mut r = Records::open();
        for id in ["a1", "a2"] {
            r.insert("A", id);
        }
        for id in ["b1", "b2"] {
            r.insert("B", id);
        }
        r
    }

    #[test]
    fn one_to_one_sweep_keeps_the_best_partner_only() {
        let r = two_sites();
        let (a1, a2, b1, b2) = (0, 1, 2, 3);
        let cands = [
            Scored {
                a: a1,
                b: b1,
                score: 0.9,
            },
            Scored {
                a: a1,
                b: b2,
                score: 0.8,
            }, // a1 is taken: dropped in one-to-one
            Scored {
                a: a2,
                b: b2,
                score: 0.7,
            },
        ];
        let truth: FxHashSet<u64> = [pair_key(a1, b1), pair_key(a2, b2)].into_iter().collect();
        let one = Curve::new(&cands, &truth, SweepMode::OneToOne, &r);
        assert_eq!(one.scores, [0.9, 0.7]);
        let best = one.best().unwrap();
        assert_eq!(best.threshold, 0.7);
        assert_eq!(best.quality.f1, 1.0);
        let all = Curve::new(&cands, &truth, SweepMode::AllPairs, &r);
        let best = all.best().unwrap();
        // All pairs: at 0.9 P=1 R=0.5 F1=2/3; at 0.8 P=.5 R=.5; at 0.7 P=2/3 R=1 F1=0.8.
        assert_eq!(best.threshold, 0.7);
        assert!((best.quality.f1 - 0.8).abs() < 1e-12);
        assert_eq!(auto_mode(&cands, &r), SweepMode::OneToOne);
    }
}
