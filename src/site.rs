//! The site's encode run: a site's records file in, its `.clk.parquet` (or
//! anonlink clk JSON) out, ready to hand to the linkage unit.
//!
//! [`encode_site`] reads the records in batches ([`crate::io::records`]),
//! checks the record keys (the id column: present, non-empty, unique), encodes
//! each batch in parallel with the [`Encoder`] on a thread pool of its own,
//! and streams the clks to the output in input order, so the output is
//! byte-identical whatever the thread count and memory stays bounded.
//!
//! When the schema declares blocking keys, each encoded record's key hashes
//! ([`BlockingKeyHasher`]) are computed beside its clk, on the same threads,
//! and written as the `blocking_keys` column of the `.clk.parquet`; anonlink
//! JSON has no place for them, so they are not computed for it.
//!
//! Rows whose values the schema refuses are not encoded: they are listed in
//! `<output>.rejects.csv` (row, id, column, reason; never a value) and the run
//! goes on, unless there are more than [`MaxRejects`] allow. The output and
//! the rejects file are written atomically; a failed run leaves no output. The
//! rejects file is kept when the run fails because of too many rejects (it is
//! the diagnosis); a successful run without rejects removes a stale rejects
//! file from an earlier run, so the rejects file always belongs to the output
//! beside it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch, StringArray, UInt16Array};
use arrow_buffer::Buffer;
use arrow_schema::SchemaRef;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use rayon::prelude::*;

use crate::encode::blocking::BlockingKeyHasher;
use crate::encode::{Encoder, FieldError};
use crate::io::atomic::AtomicFile;
use crate::io::clk_file::{self, keys};
use crate::io::records::{Batch, ReadOptions, ReadPosition, RecordReader, RecordsError};
use crate::io::table;
use crate::schema::Schema;
use crate::secret::Secret;

/// The format of the encoded output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// `.clk.parquet`: ids, clks, popcounts and the `pprl.*` metadata.
    #[default]
    Parquet,
    /// anonlink's `{"clks": [base64, ...]}`, in input order, without ids or metadata.
    ClkhashJson,
}

/// How many rejected rows a run accepts before it fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxRejects {
    /// At most this many rows; the run stops as soon as there are more.
    Count(u64),
    /// At most this percentage of the rows read, rounded down; checked at the end.
    Percent(f64),
}

impl Default for MaxRejects {
    /// 1% of the rows read: a few bad values are common in registry data, but
    /// more usually means a systematic problem (a wrong date format, a shifted
    /// column) that would silently cost links.
    fn default() -> MaxRejects {
        MaxRejects::Percent(1.0)
    }
}

impl MaxRejects {
    /// The number of rejects allowed after reading `rows` rows.
    pub fn allowed(&self, rows: u64) -> u64 {
        match *self {
            MaxRejects::Count(n) => n,
            MaxRejects::Percent(p) => (rows as f64 * p / 100.0).floor() as u64,
        }
    }
}

impl fmt::Display for MaxRejects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxRejects::Count(n) => write!(f, "{n}"),
            MaxRejects::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for MaxRejects {
    type Err = String;

    /// `N` (a count) or `P%` (a percentage of the rows read, 0 to 100).
    fn from_str(s: &str) -> Result<MaxRejects, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(MaxRejects::Percent(p)),
                _ => Err(format!("{s:?} is not a percentage from 0% to 100%")),
            }
        } else {
            s.parse::<u64>().map(MaxRejects::Count).map_err(|_| {
                format!("{s:?} is neither a count (e.g. 100) nor a percentage (e.g. 1%)")
            })
        }
    }
}

/// Everything a site's encode run needs.
#[derive(Debug, Clone)]
pub struct EncodeOptions<'a> {
    pub schema: &'a Schema,
    pub secret: &'a Secret,
    /// The site's name, written into the output metadata.
    pub site: String,
    pub input: PathBuf,
    pub read: ReadOptions,
    /// The column holding the site's record key (not an identifier).
    pub id_column: String,
    pub output: PathBuf,
    pub output_format: OutputFormat,
    /// Worker threads; 0 means one per CPU core.
    pub threads: usize,
    pub max_rejects: MaxRejects,
}

/// How far a run is, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub rows_read: u64,
    pub encoded: u64,
    pub rejected: u64,
    /// Work done, in the unit of `total`: input bytes for CSV, rows for Parquet.
    pub done: u64,
    pub total: Option<u64>,
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeSummary {
    pub rows_read: u64,
    pub encoded: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub output: PathBuf,
    /// The rejects file, when there were rejects.
    pub rejects_file: Option<PathBuf>,
    /// The names of the blocking keys written beside the clks (empty when
    /// the schema declares none or the output format cannot carry them).
    pub blocking_keys: Vec<String>,
}

/// Why a run failed. Never contains the secret or an identifier value; record
/// keys (ids) are named, since they are not identifiers.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("the site name is empty")]
    EmptySite,
    #[error(
        "{path} lacks the column(s) {} that {}; its columns are: {}",
        quoted(missing),
        if *for_id { "the schema and the id column need" } else { "the schema needs" },
        quoted(existing)
    )]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        existing: Vec<String>,
        /// Whether the id column is among the missing ones.
        for_id: bool,
    },
    #[error("{path} has more than one column named {column:?}")]
    DuplicateColumn { path: PathBuf, column: String },
    #[error(
        "the id column {column:?} is an identifying field of the schema; ids are written to the \
         output in clear, so choose a record key that identifies nobody outside the site"
    )]
    IdColumnIsIdentifier { column: String },
    #[error("{path}: row {row} has an empty id (column {column:?}); every record needs a key")]
    EmptyId {
        path: PathBuf,
        row: u64,
        column: String,
    },
    #[error(
        "{path}: the id {id:?} (column {column:?}) appears more than once, in rows {}; \
         ids must be unique",
        list_rows(rows)
    )]
    DuplicateId {
        path: PathBuf,
        column: String,
        id: String,
        rows: Vec<u64>,
    },
    #[error(
        "{rejected} of {rows_read} rows were rejected, more than the {allowed} allowed \
         (max rejects {limit}); no output was written; the rejects are listed in {}",
        rejects_file.display()
    )]
    TooManyRejects {
        rejected: u64,
        rows_read: u64,
        allowed: u64,
        limit: MaxRejects,
        rejects_file: PathBuf,
    },
    #[error("the output {path} would overwrite the input")]
    OutputIsInput { path: PathBuf },
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
    #[error("cannot start {threads} worker threads: {message}")]
    ThreadPool { threads: usize, message: String },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rejects file of an output: `<output>.rejects.csv`.
pub fn rejects_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".rejects.csv");
    PathBuf::from(name)
}

/// Encodes a site's records file. `progress` is called after every batch.
///
/// # Errors
/// [`SiteError`]: unreadable input, missing columns, empty or duplicate ids,
/// too many rejects, unwritable output. Nothing is written then (except the
/// rejects file for [`SiteError::TooManyRejects`]).
pub fn encode_site(
    options: &EncodeOptions<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<EncodeSummary, SiteError> {
    let start = Instant::now();
    if options.site.trim().is_empty() {
        return Err(SiteError::EmptySite);
    }
    if same_file(&options.input, &options.output) {
        return Err(SiteError::OutputIsInput {
            path: options.output.clone(),
        });
    }
    let mut reader = RecordReader::open(&options.input, &options.read)?;
    let plan = ColumnPlan::new(options, reader.columns(), reader.path())?;
    reader.select(&plan.selection)?;

    let encoder = Encoder::new(options.schema, options.secret);
    let hasher = BlockingKeyHasher::new(options.schema, options.secret);
    let hasher =
        (!hasher.is_empty() && options.output_format == OutputFormat::Parquet).then_some(hasher);
    let bytes = options.schema.filter_bytes();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .map_err(|e| SiteError::ThreadPool {
            threads: options.threads,
            message: e.to_string(),
        })?;
    let sink = Sink::create(options, hasher.as_ref())?;
    let rejects_file = rejects_path(&options.output);
    let mut counts = Progress {
        rows_read: 0,
        encoded: 0,
        rejected: 0,
        done: 0,
        total: None,
    };

    // Three stages, so that reading and writing (one thread each) overlap the
    // parallel encoding: reader thread -> this thread (encodes on the pool) ->
    // writer thread. Bounded channels keep a few batches in flight at most;
    // FIFO order keeps the output in input order.
    let (failure, written) = std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = mpsc::sync_channel(IN_FLIGHT);
        let (encoded_tx, encoded_rx) = mpsc::sync_channel::<Encoded>(IN_FLIGHT);
        // Written batches go back to the reader, clk buffers to this thread.
        let (batches_tx, batches_rx) = mpsc::sync_channel::<Batch>(2 * IN_FLIGHT + 2);
        let (clks_tx, clks_rx) = mpsc::sync_channel::<Vec<u8>>(2 * IN_FLIGHT + 2);
        let recycle = Recycle {
            batches: batches_tx,
            clks: clks_tx,
        };
        let plan = &plan;
        scope.spawn(move || read_stage(options, plan, reader, batch_tx, batches_rx));
        let writer = scope.spawn(|| write_stage(sink, &rejects_file, bytes, encoded_rx, recycle));

        let mut failure = None;
        for item in batch_rx {
            let (batch, position) = match item {
                Ok(item) => item,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let mut clks = clks_rx.try_recv().unwrap_or_default();
            clks.clear();
            clks.resize(batch.len() * bytes, 0);
            let (results, keys) = pool.install(|| {
                encode_batch(&encoder, hasher.as_ref(), plan, &batch, &mut clks, bytes)
            });
            let rejected = results.iter().filter(|r| r.is_err()).count() as u64;
            counts.rows_read += batch.len() as u64;
            counts.rejected += rejected;
            counts.encoded += batch.len() as u64 - rejected;
            counts.done = position.done;
            counts.total = position.total;
            let sent = encoded_tx.send(Encoded {
                batch,
                clks,
                results,
                keys,
            });
            if sent.is_err() {
                break; // the writer failed; its error is reported below
            }
            progress(&counts);
            if matches!(options.max_rejects, MaxRejects::Count(_))
                && counts.rejected > options.max_rejects.allowed(counts.rows_read)
            {
                break; // too many rejects: no need to read on
            }
        }
        drop(encoded_tx);
        let written = match writer.join() {
            Ok(written) => written,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (failure, written)
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let (sink, rejects) = written?;

    let allowed = options.max_rejects.allowed(counts.rows_read);
    if counts.rejected > allowed {
        if let Some(writer) = rejects {
            commit_rejects(writer, &rejects_file)?;
        }
        return Err(SiteError::TooManyRejects {
            rejected: counts.rejected,
            rows_read: counts.rows_read,
            allowed,
            limit: options.max_rejects,
            rejects_file,
        });
    }
    sink.finish(counts.encoded)?;
    let rejects_file = match rejects {
        Some(writer) => {
            commit_rejects(writer, &rejects_file)?;
            Some(rejects_file)
        }
        None => {
            // A rejects file from an earlier run would describe another output.
            match std::fs::remove_file(&rejects_file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SiteError::Write {
                        path: rejects_file,
                        source,
                    });
                }
            }
            None
        }
    };
    Ok(EncodeSummary {
        rows_read: counts.rows_read,
        encoded: counts.encoded,
        rejected: counts.rejected,
        seconds: start.elapsed().as_secs_f64(),
        output: options.output.clone(),
        rejects_file,
        blocking_keys: hasher
            .as_ref()
            .map(|h| h.names().into_iter().map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// "5, 77 and 190"; the first ten and a count when there are more.
fn list_rows(rows: &[u64]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = rows.iter().take(SHOWN).map(u64::to_string).collect();
    match shown.split_last() {
        _ if rows.len() > SHOWN => {
            format!("{}, ... ({} rows in all)", shown.join(", "), rows.len())
        }
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => shown.join(""),
    }
}

/// Batches queued between two stages of the pipeline.
const IN_FLIGHT: usize = 2;

type RejectsWriter = csv::Writer<BufWriter<AtomicFile>>;

/// A batch with its clks (row `i` at `i * bytes`), each row's popcount or
/// why it was rejected, and each row's blocking-key hashes (`None` when the
/// output carries none).
struct Encoded {
    batch: Batch,
    clks: Vec<u8>,
    results: Vec<Result<u16, FieldError>>,
    keys: Option<Vec<Vec<u64>>>,
}

/// Reads batches and checks their ids; stops at the end, at the first error
/// (which it passes on), or when the encoding stage hangs up.
fn read_stage(
    options: &EncodeOptions<'_>,
    plan: &ColumnPlan,
    mut reader: RecordReader,
    tx: mpsc::SyncSender<Result<(Batch, ReadPosition), SiteError>>,
    recycled: mpsc::Receiver<Batch>,
) {
    let mut ids = IdSet::default();
    loop {
        if let Ok(spare) = recycled.try_recv() {
            reader.recycle(spare);
        }
        let item = match reader.next_batch() {
            Ok(Some(batch)) => {
                check_ids(options, &batch, &mut ids).map(|()| (batch, reader.position()))
            }
            Ok(None) => match ids.finish(options, plan.selection[0]) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        };
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

/// Writes the encoded rows to the output and the rejected ones to the rejects
/// file, in order, until the encoding stage hangs up; hands both back unfinished.
fn write_stage(
    mut sink: Sink,
    rejects_file: &Path,
    bytes: usize,
    rx: mpsc::Receiver<Encoded>,
    recycle: Recycle,
) -> Result<(Sink, Option<RejectsWriter>), SiteError> {
    let mut rejects: Option<RejectsWriter> = None;
    for Encoded {
        batch,
        clks,
        results,
        mut keys,
    } in rx
    {
        let mut kept_ids = Vec::with_capacity(batch.len());
        // Without rejects (the usual case) the clks are written as they are.
        let all_kept = results.iter().all(Result::is_ok);
        let mut kept_clks = if all_kept {
            Vec::new()
        } else {
            Vec::with_capacity(batch.len() * bytes)
        };
        let mut popcounts = Vec::with_capacity(batch.len());
        let mut kept_keys = keys.as_ref().map(|_| Vec::with_capacity(batch.len()));
        for (row, result) in results.into_iter().enumerate() {
            let id = batch.get(row, 0).unwrap_or_default();
            match result {
                Ok(popcount) => {
                    kept_ids.push(id);
                    if !all_kept {
                        kept_clks.extend_from_slice(&clks[row * bytes..(row + 1) * bytes]);
                    }
                    popcounts.push(popcount);
                    if let (Some(kept), Some(keys)) = (kept_keys.as_mut(), keys.as_mut()) {
                        kept.push(std::mem::take(&mut keys[row]));
                    }
                }
                Err(err) => {
                    let writer = match &mut rejects {
                        Some(w) => w,
                        None => rejects.insert(create_rejects(rejects_file)?),
                    };
                    write_reject(writer, rejects_file, batch.row_number(row), id, &err)?;
                }
            }
        }
        let kept_clks = if all_kept { clks } else { kept_clks };
        let spare_clks = sink.write(&kept_ids, kept_clks, popcounts, kept_keys)?;
        drop(kept_ids);
        // A stage that has stopped no longer takes buffers; they are dropped.
        let _ = recycle.batches.try_send(batch);
        if let Some(spare) = spare_clks {
            let _ = recycle.clks.try_send(spare);
        }
    }
    Ok((sink, rejects))
}

/// Where the writer hands back buffers once written, so that the next
/// batches reuse them instead of allocating (and faulting in) fresh memory.
struct Recycle {
    batches: mpsc::SyncSender<Batch>,
    clks: mpsc::SyncSender<Vec<u8>>,
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Which input columns are read, and where each schema feature finds its value.
#[derive(Debug)]
struct ColumnPlan {
    /// Input column indices; the id column is first.
    selection: Vec<usize>,
    /// For each schema feature, its index into `selection`, if the input has the column.
    features: Vec<Option<usize>>,
}

impl ColumnPlan {
    fn new(
        options: &EncodeOptions<'_>,
        columns: &[String],
        path: &Path,
    ) -> Result<ColumnPlan, SiteError> {
        let identifying = options.schema.identifying_columns();
        if identifying.contains(&options.id_column.as_str()) {
            return Err(SiteError::IdColumnIsIdentifier {
                column: options.id_column.clone(),
            });
        }
        let find = |name: &str| -> Result<Option<usize>, SiteError> {
            let mut found = columns.iter().enumerate().filter(|(_, c)| *c == name);
            let first = found.next().map(|(i, _)| i);
            if first.is_some() && found.next().is_some() {
                return Err(SiteError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: name.to_owned(),
                });
            }
            Ok(first)
        };
        let mut missing = Vec::new();
        let id = find(&options.id_column)?;
        if id.is_none() {
            missing.push(options.id_column.clone());
        }
        for name in &identifying {
            if find(name)?.is_none() && !missing.iter().any(|m| m == name) {
                missing.push((*name).to_owned());
            }
        }
        let Some(id) = id.filter(|_| missing.is_empty()) else {
            return Err(SiteError::MissingColumns {
                path: path.to_path_buf(),
                for_id: id.is_none(),
                missing,
                existing: columns.to_vec(),
            });
        };
        let mut selection = vec![id];
        let mut features = Vec::with_capacity(options.schema.features().len());
        for feature in options.schema.features() {
            // Ignored features get their value too when the column exists: the
            // encoder may use one as a salt; it skips the others.
            let slot = find(feature.identifier())?.map(|c| {
                selection.iter().position(|&s| s == c).unwrap_or_else(|| {
                    selection.push(c);
                    selection.len() - 1
                })
            });
            features.push(slot);
        }
        Ok(ColumnPlan {
            selection,
            features,
        })
    }
}

/// The popcount of each row of a batch or why it was rejected, and, with a
/// hasher, each row's blocking-key hashes (none for a rejected row).
type BatchResults = (Vec<Result<u16, FieldError>>, Option<Vec<Vec<u64>>>);

/// Encodes every row of `batch` into `clks` (row `i` at `i * bytes`) and
/// hashes its blocking keys, in parallel; the results are in row order.
fn encode_batch(
    encoder: &Encoder,
    hasher: Option<&BlockingKeyHasher>,
    plan: &ColumnPlan,
    batch: &Batch,
    clks: &mut [u8],
    bytes: usize,
) -> BatchResults {
    let rows: Vec<(Result<u16, FieldError>, Vec<u64>)> = clks
        .par_chunks_mut(bytes.max(1))
        .enumerate()
        .map_init(
            || Vec::with_capacity(plan.features.len()),
            |values: &mut Vec<Option<&str>>, (row, out)| {
                values.clear();
                values.extend(
                    plan.features
                        .iter()
                        .map(|slot| slot.and_then(|s| batch.get(row, s))),
                );
                let result = encoder
                    .encode_into(values, out)
                    .map(|()| clk_file::popcount(out));
                let keys = match hasher {
                    Some(h) if result.is_ok() => h.hash_record(values),
                    _ => Vec::new(),
                };
                (result, keys)
            },
        )
        .collect();
    let (results, keys): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
    (results, hasher.map(|_| keys))
}

/// Ids seen so far, as 64-bit hashes in reading order: 10 million ids take
/// 80 MiB. They are sorted once at the end of the input (appending and one
/// sort cost a third of what inserting into a hash set did, whose random
/// probes missed the cache on every row). A hash seen twice is confirmed by
/// reading the input again, so a hash collision never reports a false duplicate.
#[derive(Debug)]
struct IdSet {
    hashes: Vec<u64>,
    hash: fn(&str) -> u64,
}

impl Default for IdSet {
    fn default() -> IdSet {
        IdSet {
            hashes: Vec::new(),
            hash: id_hash,
        }
    }
}

impl IdSet {
    fn push(&mut self, id: &str) {
        self.hashes.push((self.hash)(id));
    }

    /// After the last row: the duplicate id whose second row comes first, with
    /// every row that has it.
    fn finish(&mut self, options: &EncodeOptions<'_>, id_column: usize) -> Result<(), SiteError> {
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.sort_unstable();
        let suspects: HashSet<u64> = hashes
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        drop(hashes);
        if suspects.is_empty() {
            return Ok(());
        }
        let mut rows_of: HashMap<String, Vec<u64>> = HashMap::new();
        let mut reader = RecordReader::open(&options.input, &options.read)?;
        reader.select(&[id_column])?;
        while let Some(batch) = reader.next_batch()? {
            for row in 0..batch.len() {
                let id = batch.get(row, 0).unwrap_or_default();
                if suspects.contains(&(self.hash)(id)) {
                    rows_of
                        .entry(id.to_owned())
                        .or_default()
                        .push(batch.row_number(row));
                }
            }
        }
        match rows_of
            .into_iter()
            .filter(|(_, rows)| rows.len() > 1)
            .min_by_key(|(_, rows)| rows[1])
        {
            None => Ok(()),
            Some((id, rows)) => Err(SiteError::DuplicateId {
                path: options.input.clone(),
                column: options.id_column.clone(),
                id,
                rows,
            }),
        }
    }
}

/// A fast 64-bit hash of an id (8 bytes at a time, then a full avalanche).
/// Not keyed: ids are the site's own, and a collision only costs a second
/// look at the input (see [`IdSet`]); SipHash took 3% of an encode run.
fn id_hash(id: &str) -> u64 {
    let bytes = id.as_bytes();
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        h = (h.rotate_left(23) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(23) ^ u64::from_le_bytes(tail)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // SplitMix64's finaliser: every input bit reaches every output bit.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn check_ids(options: &EncodeOptions<'_>, batch: &Batch, ids: &mut IdSet) -> Result<(), SiteError> {
    for row in 0..batch.len() {
        let id = batch.get(row, 0).unwrap_or_default();
        if id.is_empty() {
            return Err(SiteError::EmptyId {
                path: options.input.clone(),
                row: batch.row_number(row),
                column: options.id_column.clone(),
            });
        }
        ids.push(id);
    }
    Ok(())
}

fn create_rejects(path: &Path) -> Result<RejectsWriter, SiteError> {
    let file = AtomicFile::create(path).map_err(|source| SiteError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let mut writer = csv::Writer::from_writer(BufWriter::new(file));
    writer
        .write_record(["row", "id", "column", "reason"])
        .map_err(|e| csv_write_error(path, e))?;
    Ok(writer)
}

fn write_reject(
    writer: &mut RejectsWriter,
    path: &Path,
    row: u64,
    id: &str,
    err: &FieldError,
) -> Result<(), SiteError> {
    writer
        .write_record([
            row.to_string().as_str(),
            id,
            err.feature.as_str(),
            err.reason.to_string().as_str(),
        ])
        .map_err(|e| csv_write_error(path, e))
}

fn commit_rejects(writer: RejectsWriter, path: &Path) -> Result<(), SiteError> {
    let write_err = |source| SiteError::Write {
        path: path.to_path_buf(),
        source,
    };
    let buffered = writer
        .into_inner()
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
    let file = buffered
        .into_inner()
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
    file.commit().map_err(write_err)
}

fn csv_write_error(path: &Path, e: csv::Error) -> SiteError {
    SiteError::Write {
        path: path.to_path_buf(),
        source: match e.into_kind() {
            csv::ErrorKind::Io(io) => io,
            other => std::io::Error::other(format!("{other:?}")),
        },
    }
}

/// The output file under construction (a temporary file until `finish`).
enum Sink {
    Parquet {
        path: PathBuf,
        file: AtomicFile,
        writer: Box<ArrowWriter<std::fs::File>>,
        schema: SchemaRef,
        bytes: usize,
    },
    /// anonlink JSON: clks only (no ids, metadata or blocking keys).
    Json {
        path: PathBuf,
        out: BufWriter<AtomicFile>,
        first: bool,
    },
}

impl Sink {
    /// With `hasher`, the Parquet output gets the `blocking_keys` column.
    fn create(
        options: &EncodeOptions<'_>,
        hasher: Option<&BlockingKeyHasher>,
    ) -> Result<Sink, SiteError> {
        let path = options.output.clone();
        let io_err = |source| SiteError::Write {
            path: path.clone(),
            source,
        };
        let mut file = AtomicFile::create(&path).map_err(io_err)?;
        match options.output_format {
            OutputFormat::Parquet => {
                let bytes = options.schema.filter_bytes();
                let schema = Arc::new(match hasher {
                    Some(_) => clk_file::clk_schema_with_blocking_keys(bytes),
                    None => clk_file::clk_schema(bytes),
                });
                let key_names = hasher.map(|h| h.names().join(","));
                let filter_bits = options.schema.filter_bits().to_string();
                let fingerprint = options.schema.fingerprint();
                let key_check_value = options.secret.key_check_value();
                // The record count is only known at the end; it is appended then.
                let mut metadata = vec![
                    (keys::ENGINE_VERSION, crate::ENGINE_VERSION),
                    (keys::SITE, options.site.as_str()),
                    (keys::SCHEMA_FINGERPRINT, fingerprint.as_str()),
                    (keys::FILTER_BITS, filter_bits.as_str()),
                    (keys::KEY_CHECK_VALUE, key_check_value.as_str()),
                ];
                if let Some(names) = &key_names {
                    metadata.push((keys::BLOCKING_KEYS, names));
                }
                let handle = file.file().try_clone().map_err(io_err)?;
                let writer = ArrowWriter::try_new(
                    handle,
                    schema.clone(),
                    Some(table::clk_writer_properties(&metadata)),
                )
                .map_err(|source| SiteError::WriteParquet {
                    path: path.clone(),
                    source,
                })?;
                Ok(Sink::Parquet {
                    path,
                    file,
                    writer: Box::new(writer),
                    schema,
                    bytes,
                })
            }
            OutputFormat::ClkhashJson => {
                let mut out = BufWriter::new(file);
                out.write_all(b"{\"clks\":[").map_err(io_err)?;
                Ok(Sink::Json {
                    path,
                    out,
                    first: true,
                })
            }
        }
    }

    fn write(
        &mut self,
        ids: &[&str],
        clks: Vec<u8>,
        popcounts: Vec<u16>,
        blocking_keys: Option<Vec<Vec<u64>>>,
    ) -> Result<Option<Vec<u8>>, SiteError> {
        if ids.is_empty() {
            return Ok(Some(clks));
        }
        match self {
            Sink::Parquet {
                path,
                writer,
                schema,
                bytes,
                ..
            } => {
                let clk = FixedSizeBinaryArray::new(*bytes as i32, Buffer::from_vec(clks), None);
                let clk_buffer = clk.values().clone();
                let mut columns: Vec<Arc<dyn Array>> = vec![
                    Arc::new(StringArray::from_iter_values(ids)),
                    Arc::new(clk),
                    Arc::new(UInt16Array::from(popcounts)),
                ];
                if let Some(keys) = &blocking_keys {
                    columns.push(Arc::new(clk_file::blocking_keys_array(
                        keys.iter().map(Vec::as_slice),
                    )));
                }
                let batch = RecordBatch::try_new(schema.clone(), columns)
                    .expect("columns match the clk schema");
                writer
                    .write(&batch)
                    .map_err(|source| SiteError::WriteParquet {
                        path: path.clone(),
                        source,
                    })?;
                // The writer has copied the values: the buffer is free again.
                drop(batch);
                Ok(clk_buffer.into_vec::<u8>().ok())
            }
            Sink::Json { path, out, first } => {
                let bytes = clks.len() / ids.len();
                let mut line = String::new();
                for clk in clks.chunks_exact(bytes) {
                    line.clear();
                    if !*first {
                        line.push(',');
                    }
                    *first = false;
                    line.push('"');
                    BASE64.encode_string(clk, &mut line);
                    line.push('"');
                    out.write_all(line.as_bytes())
                        .map_err(|source| SiteError::Write {
                            path: path.clone(),
                            source,
                        })?;
                }
                Ok(Some(clks))
            }
        }
    }

    fn finish(self, records: u64) -> Result<(), SiteError> {
        match self {
            Sink::Parquet {
                path,
                file,
                mut writer,
                ..
            } => {
                writer.append_key_value_metadata(KeyValue::new(
                    keys::RECORD_COUNT.to_owned(),
                    records.to_string(),
                ));
                writer.close().map_err(|source| SiteError::WriteParquet {
                    path: path.clone(),
                    source,
                })?;
                file.commit()
                    .map_err(|source| SiteError::Write { path, source })
            }
            Sink::Json { path, mut out, .. } => {
                let io_err = |source| SiteError::Write {
                    path: path.clone(),
                    source,
                };
                out.write_all(b"]}").map_err(io_err)?;
                let file = out
                    .into_inner()
                    .map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
                file.commit().map_err(io_err)
            }
        }
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Parquet { path, .. } => {
                f.debug_struct("Sink::Parquet").field("path", path).finish()
            }
            Sink::Json { path, .. } => f.debug_struct("Sink::Json").field("path", path).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rejects_parses_counts_and_percentages() {
        assert_eq!("100".parse::<MaxRejects>(), Ok(MaxRejects::Count(100)));
        assert_eq!("0".parse::<MaxRejects>(), Ok(MaxRejects::Count(0)));
        assert_eq!("2.5%".parse::<MaxRejects>(), Ok(MaxRejects::Percent(2.5)));
        assert!("101%".parse::<MaxRejects>().is_err());
        assert!("-1".parse::<MaxRejects>().is_err());
        assert!("lots".parse::<MaxRejects>().is_err());
        assert_eq!(MaxRejects::default().allowed(5000), 50);
        assert_eq!(MaxRejects::default().allowed(199), 1);
        assert_eq!(MaxRejects::Count(7).allowed(1), 7);
    }

    #[test]
    fn rejects_path_appends_suffix() {
        assert_eq!(
            rejects_path(Path::new("out/a.clk.parquet")),
            PathBuf::from("out/a.clk.parquet.rejects.csv")
        );
    }

    fn blake_schema() -> Schema {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clkhash_v3_blake.schema.json");
        Schema::from_file(&path).unwrap()
    }

    fn plan(schema: &Schema, id: &str, columns: &[&str]) -> Result<ColumnPlan, SiteError> {
        let secret = Secret::new("a project secret of 32 bytes....").unwrap();
        let options = EncodeOptions {
            schema,
            secret: &secret,
            site: "A".into(),
            input: "in.csv".into(),
            read: ReadOptions::default(),
            id_column: id.into(),
            output: "out.clk.parquet".into(),
            output_format: OutputFormat::Parquet,
            threads: 1,
            max_rejects: MaxRejects::default(),
        };
        let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        ColumnPlan::new(&options, &columns, Path::new("in.csv"))
    }

    const FEBRL: [&str; 11] = [
        "rec_id",
        "given_name",
        "surname",
        "street_number",
        "address_1",
        "address_2",
        "suburb",
        "postcode",
        "state",
        "date_of_birth",
        "soc_sec_id",
    ];

    #[test]
    fn column_plan_maps_features_to_columns() {
        let schema = blake_schema();
        // Columns in another order, with an extra one.
        let mut columns = FEBRL.to_vec();
        columns.reverse();
        columns.insert(3, "payload");
        let plan = plan(&schema, "rec_id", &columns).unwrap();
        let col = |name: &str| columns.iter().position(|c| *c == name).unwrap();
        assert_eq!(plan.selection[0], col("rec_id"));
        for (feature, slot) in schema.features().iter().zip(&plan.features) {
            let slot = slot.expect("every febrl column exists");
            assert_eq!(plan.selection[slot], col(feature.identifier()));
        }
        // rec_id is both the id and an ignored feature: read once.
        assert_eq!(plan.features[0], Some(0));
        assert_eq!(plan.selection.len(), 11);
    }

    #[test]
    fn column_plan_names_missing_and_existing_columns() {
        let schema = blake_schema();
        let columns: Vec<&str> = FEBRL
            .iter()
            .copied()
            .filter(|c| !matches!(*c, "surname" | "state" | "soc_sec_id"))
            .collect();
        let err = plan(&schema, "key", &columns).unwrap_err();
        match &err {
            SiteError::MissingColumns {
                missing,
                existing,
                for_id,
                ..
            } => {
                assert_eq!(missing, &["key", "surname", "state"]);
                assert_eq!(existing.len(), 8);
                assert!(*for_id);
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("\"surname\"") && text.contains("\"given_name\""),
            "{text}"
        );
        // soc_sec_id is ignored by this schema: not required.
        assert!(!text.contains("\"soc_sec_id\""), "{text}");
    }

    #[test]
    fn column_plan_refuses_identifier_ids_and_ambiguous_columns() {
        let schema = blake_schema();
        assert!(matches!(
            plan(&schema, "surname", &FEBRL),
            Err(SiteError::IdColumnIsIdentifier { .. })
        ));
        let mut columns = FEBRL.to_vec();
        columns.push("surname");
        assert!(matches!(
            plan(&schema, "rec_id", &columns),
            Err(SiteError::DuplicateColumn { column, .. }) if column == "surname"
        ));
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name)
    }

    /// Encodes `input` to clkhash JSON with batches of `batch_rows` rows.
    fn encode_json(
        input: &Path,
        output: &Path,
        batch_rows: usize,
    ) -> Result<EncodeSummary, SiteError> {
        let schema = blake_schema();
        let secret = test_secret();
        let options = EncodeOptions {
            output_format: OutputFormat::ClkhashJson,
            threads: 2,
            max_rejects: MaxRejects::Count(0),
            ..test_options(&schema, &secret, input, output, batch_rows)
        };
        let mut reports = Vec::new();
        let summary = encode_site(&options, &mut |p| reports.push(*p))?;
        // One report per batch, rows counted up to the total.
        assert_eq!(
            reports.len(),
            summary.rows_read.div_ceil(batch_rows as u64) as usize
        );
        assert_eq!(reports.last().map(|p| p.rows_read), Some(summary.rows_read));
        Ok(summary)
    }

    #[test]
    fn batch_size_does_not_change_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = fixture("febrl4_a_first200.clkhash_input.csv");
        let small = dir.path().join("small.json");
        let large = dir.path().join("large.json");
        let summary = encode_json(&input, &small, 7).unwrap();
        assert_eq!(
            (summary.rows_read, summary.encoded, summary.rejected),
            (200, 200, 0)
        );
        encode_json(&input, &large, 1000).unwrap();
        let small = std::fs::read_to_string(&small).unwrap();
        assert_eq!(small, std::fs::read_to_string(&large).unwrap());
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("clkhash_v3_blake.clks.json")).unwrap(),
        )
        .unwrap();
        let ours: serde_json::Value = serde_json::from_str(&small).unwrap();
        assert_eq!(ours["clks"], reference["clks"]);
    }

    #[test]
    fn rows_are_listed_readably() {
        assert_eq!(list_rows(&[5]), "5");
        assert_eq!(list_rows(&[5, 77]), "5 and 77");
        assert_eq!(list_rows(&[5, 77, 190]), "5, 77 and 190");
        let many: Vec<u64> = (1..=12).collect();
        assert_eq!(
            list_rows(&many),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (12 rows in all)"
        );
    }

    #[test]
    fn duplicate_ids_are_found_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(fixture("febrl4_a_first200.clkhash_input.csv")).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let id_of = |line: &str| line.split(',').next().unwrap().to_owned();
        let dup = id_of(&lines[5]);
        for row in [77, 190] {
            let rest = lines[row].split_once(',').unwrap().1.to_owned();
            lines[row] = format!("{dup},{rest}");
        }
        let input = dir.path().join("dup.csv");
        std::fs::write(&input, lines.join("\n")).unwrap();
        let output = dir.path().join("out.json");
        match encode_json(&input, &output, 16) {
            Err(SiteError::DuplicateId { id, rows, .. }) => {
                assert_eq!(id, dup);
                assert_eq!(rows, vec![5, 77, 190]);
            }
            other => panic!("{other:?}"),
        }
        assert!(!output.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn id_hash_collisions_are_not_reported_as_duplicates() {
        let schema = blake_schema();
        let secret = Secret::new("correct horse battery staple").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(fixture("febrl4_a_first200.clkhash_input.csv")).unwrap();
        let with_dup = dir.path().join("dup.csv");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.push(lines[9]);
        std::fs::write(&with_dup, lines.join("\n")).unwrap();
        for (input, expected) in [
            (fixture("febrl4_a_first200.clkhash_input.csv"), None),
            (with_dup, Some(vec![9, 201])),
        ] {
            let options = EncodeOptions {
                schema: &schema,
                secret: &secret,
                site: "A".into(),
                input: input.clone(),
                read: ReadOptions {
                    batch_rows: 32,
                    ..ReadOptions::default()
                },
                id_column: "rec_id".into(),
                output: dir.path().join("unused"),
                output_format: OutputFormat::Parquet,
                threads: 1,
                max_rejects: MaxRejects::default(),
            };
            let mut reader = RecordReader::open(&input, &options.read).unwrap();
            let plan = ColumnPlan::new(&options, reader.columns(), &input).unwrap();
            reader.select(&plan.selection).unwrap();
            // Every id hashes alike: each one is checked against the input.
            let mut ids = IdSet {
                hashes: Vec::new(),
                hash: |_| 42,
            };
            while let Some(batch) = reader.next_batch().unwrap() {
                check_ids(&options, &batch, &mut ids).unwrap();
            }
            match (ids.finish(&options, plan.selection[0]), expected) {
                (Ok(()), None) => {}
                (Err(SiteError::DuplicateId { rows, .. }), Some(expected)) => {
                    assert_eq!(rows, expected)
                }
                (other, expected) => panic!("{other:?}, expected {expected:?}"),
            }
        }
    }

    /// Encodes `input` to Parquet with `schema`, `batch_rows` and `threads`.
    fn encode_parquet(
        schema: &Schema,
        input: &Path,
        output: &Path,
        batch_rows: usize,
        threads: usize,
    ) -> EncodeSummary {
        let secret = test_secret();
        let options = EncodeOptions {
            threads,
            ..test_options(schema, &secret, input, output, batch_rows)
        };
        encode_site(&options, &mut |_| {}).unwrap()
    }

    fn test_secret() -> Secret {
        Secret::new("correct horse battery staple").unwrap()
    }

    /// Site A, ids in `rec_id`, Parquet output, every reject allowed.
    fn test_options<'a>(
        schema: &'a Schema,
        secret: &'a Secret,
        input: &Path,
        output: &Path,
        batch_rows: usize,
    ) -> EncodeOptions<'a> {
        EncodeOptions {
            schema,
            secret,
            site: "A".into(),
            input: input.to_path_buf(),
            read: ReadOptions {
                batch_rows,
                ..ReadOptions::default()
            },
            id_column: "rec_id".into(),
            output: output.to_path_buf(),
            output_format: OutputFormat::Parquet,
            threads: 1,
            max_rejects: MaxRejects::Percent(100.0),
        }
    }

    #[test]
    fn blocking_keys_follow_their_records_whatever_the_batches_and_threads() {
        // Postcodes below 3000 are refused: those rows have neither clk nor keys.
        let schema = Schema::from_json(
            r#"{"version": 3, "clkConfig": {"l": 256, "kdf": {"type": "BLAKE3"}},
              "features": [
                {"identifier": "rec_id", "ignored": true},
                {"identifier": "given_name", "normalize": {}, "format": {"type": "string"},
                 "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 5},
                             "hash": {"type": "blake3"}, "missingValue": {"sentinel": ""}}},
                {"identifier": "surname", "normalize": {}, "format": {"type": "string"},
                 "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 5},
                             "hash": {"type": "blake3"}, "missingValue": {"sentinel": ""}}},
                {"identifier": "postcode", "format": {"type": "integer", "minimum": 3000},
                 "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 5},
                             "hash": {"type": "blake3"}}}],
              "blocking_keys": [
                {"name": "surname", "parts": [{"field": "surname", "transform": "soundex"}]},
                {"name": "initial_postcode", "parts": [
                  {"field": "given_name", "transform": "prefix", "length": 1},
                  {"field": "postcode", "transform": "value"}]}]}"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = fixture("febrl4_a_first200.clkhash_input.csv");
        let small = dir.path().join("small.clk.parquet");
        let large = dir.path().join("large.clk.parquet");
        let summary = encode_parquet(&schema, &input, &small, 7, 1);
        assert!(
            summary.rejected > 20 && summary.encoded > 100,
            "{summary:?}"
        );
        assert_eq!(summary.blocking_keys, vec!["surname", "initial_postcode"]);
        encode_parquet(&schema, &input, &large, 1000, 2);
        assert_eq!(
            std::fs::read(&small).unwrap(),
            std::fs::read(&large).unwrap()
        );

        let file = clk_file::read(&small, None).unwrap();
        let keys = file.blocking_keys.as_ref().unwrap();
        assert_eq!(keys.len(), file.len());
        let hasher = BlockingKeyHasher::new(
            &schema,
            &Secret::new("correct horse battery staple").unwrap(),
        );
        let text = std::fs::read_to_string(&input).unwrap();
        let mut checked = 0;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let Some(i) = file.ids.iter().position(|id| id == f[0]) else {
                continue;
            };
            let values = [Some(f[0]), Some(f[1]), Some(f[2]), Some(f[7])];
            assert_eq!(hasher.hash_record(&values), keys[i], "{}", f[0]);
            checked += 1;
        }
        assert_eq!(checked, file.len());
    }

    #[test]
    fn id_hash_is_stable() {
        assert_eq!(id_hash("rec-1-org"), id_hash("rec-1-org"));
        assert_ne!(id_hash("rec-1-org"), id_hash("rec-2-org"));
        // Lengths and trailing zero bytes are told apart.
        assert_ne!(id_hash("a"), id_hash("a\0"));
        assert_ne!(id_hash(""), id_hash("\0"));
        // No collision among 200,000 ids that differ in one position.
        let hashes: HashSet<u64> = (0..200_000)
            .map(|i| id_hash(&format!("rec-{i}-dup-0")))
            .collect();
        assert_eq!(hashes.len(), 200_000);
    }
}
