//! The site's encode run: a site's records file in, its `.clk.parquet` (or
//! anonlink clk JSON) out, ready to hand to the linkage unit.
//!
//! [`encode_site`] runs on `threads` workers fed by one reading thread, which
//! only cuts the input into chunks of whole records ([`crate::io::records`]).
//! A worker takes a chunk and does everything else for it: splits the fields,
//! checks the record keys (the id column: present, non-empty; uniqueness is
//! checked on all ids at the end), encodes the rows with the [`Encoder`] and
//! serialises them as one Parquet row group (or anonlink JSON text). The
//! calling thread appends the finished chunks in input order. Chunks are cut
//! by the input alone, so the output is byte-identical whatever the thread
//! count, and a few chunks per worker in flight keep memory bounded.
//!
//! When the schema declares blocking keys, each encoded record's key hashes
//! ([`BlockingKeyHasher`]) are computed beside its clk, on the same thread,
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

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use arrow_array::{ArrayRef, StringArray, UInt16Array};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::ColumnDescPtr;

use crate::encode::blocking::BlockingKeyHasher;
use crate::encode::{self, Encoder, FieldError};
use crate::io::atomic::{AtomicFile, FlushBehind};
use crate::io::clk_column::{ClkColumnChunk, ClkColumnWriter};
use crate::io::clk_file::{self, keys};
use crate::io::records::{
    Batch, Chunk, ChunkParser, CsvChunk, ReadOptions, ReadPosition, RecordReader, RecordsError,
    likely_delimiter,
};
use crate::io::table;
use crate::schema::Schema;
use crate::secret::Secret;

mod ids;

use ids::{ChunkIds, IdSet, check_ids, id_hash};

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

/// How far a run is, reported after every chunk of rows, in input order.
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
        "{path} lacks the column(s) {} that {}; its columns are: {}{}",
        quoted(missing),
        if *for_id { "the schema and the id column need" } else { "the schema needs" },
        quoted(existing),
        crate::io::records::delimiter_hint(*other_delimiter)
    )]
    MissingColumns {
        path: PathBuf,
        missing: Vec<String>,
        existing: Vec<String>,
        /// Whether the id column is among the missing ones.
        for_id: bool,
        /// A common delimiter that the header's only column contains (see
        /// [`likely_delimiter`]).
        other_delimiter: Option<char>,
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

/// Encodes a site's records file. `progress` is called after every chunk of
/// rows, in input order.
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

    let workers = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let encoder = Encoder::new(options.schema, options.secret)
        .with_memo_budget(encode::memo_budget_per_thread(workers));
    let hasher = BlockingKeyHasher::new(options.schema, options.secret);
    let hasher =
        (!hasher.is_empty() && options.output_format == OutputFormat::Parquet).then_some(hasher);
    let (mut sink, row_groups) = Sink::create(options, hasher.as_ref())?;
    let context = ChunkContext {
        options,
        plan: &plan,
        parser: reader.parser().clone(),
        encoder: &encoder,
        hasher: hasher.as_ref(),
        row_groups: row_groups.as_ref(),
        bytes: options.schema.filter_bytes(),
    };
    let rejects_file = rejects_path(&options.output);
    let mut rejects: Option<RejectsWriter> = None;
    let mut ids = IdSet::default();
    let mut counts = Progress {
        rows_read: 0,
        encoded: 0,
        rejected: 0,
        done: 0,
        total: None,
    };

    // The reader thread only cuts the input into chunks of whole records;
    // each worker parses, checks, encodes and serialises a whole chunk (a
    // Parquet row group), so every costly step runs on all threads; this
    // thread writes the finished chunks in input order. Chunks do not depend
    // on the thread count, so neither does the output. At most `window`
    // chunks are in flight: the reader waits for a written chunk's token
    // (which brings back its buffer) before it reads another. Two chunks per
    // worker: with one, a chunk that took longer held back the tokens of the
    // chunks done after it, and 16 workers on 16 cores were idle a sixth of
    // the time (the whole run took 20% longer).
    let window = 2 * workers + 2;
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let jobs_rx = Mutex::new(jobs_rx);
    std::thread::scope(|scope| -> Result<(), SiteError> {
        let (tokens_tx, tokens_rx) = mpsc::sync_channel::<Option<Vec<u8>>>(window);
        for _ in 0..window {
            tokens_tx
                .send(None)
                .expect("the channel has room for every token");
        }
        let (done_tx, done_rx) = mpsc::channel::<Finished>();
        scope.spawn(move || read_chunks(reader, &jobs_tx, &tokens_rx));
        for worker in 0..workers {
            let (context, jobs_rx, done_tx) = (&context, &jobs_rx, done_tx.clone());
            std::thread::Builder::new()
                .name(format!("pprl-encode-{worker}"))
                .spawn_scoped(scope, move || encode_chunks(context, jobs_rx, &done_tx))
                .map_err(|e| SiteError::ThreadPool {
                    threads: workers,
                    message: e.to_string(),
                })?;
        }
        drop(done_tx);

        // Leaving this closure early drops the receivers and the token
        // sender: the reader and the workers then stop at their next step.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for finished in done_rx {
            waiting.insert(finished.index, finished);
            while let Some(finished) = waiting.remove(&next) {
                next += 1;
                let chunk = finished.result?;
                for (row, id, err) in &chunk.rejects {
                    let writer = match &mut rejects {
                        Some(w) => w,
                        None => rejects.insert(create_rejects(&rejects_file)?),
                    };
                    write_reject(writer, &rejects_file, *row, id, err)?;
                }
                sink.write(chunk.body)?;
                ids.push(chunk.id_hashes);
                let rejected = chunk.rejects.len() as u64;
                counts.rows_read += chunk.rows;
                counts.rejected += rejected;
                counts.encoded += chunk.rows - rejected;
                counts.done = finished.position.done;
                counts.total = finished.position.total;
                // The reader may have stopped already; then the buffer is dropped.
                let _ = tokens_tx.try_send(finished.spare);
                progress(&counts);
                if matches!(options.max_rejects, MaxRejects::Count(_))
                    && counts.rejected > options.max_rejects.allowed(counts.rows_read)
                {
                    return Ok(()); // too many rejects: no need to read on
                }
            }
        }
        ids.finish(options, plan.selection[0], workers)
    })?;

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

type RejectsWriter = csv::Writer<BufWriter<AtomicFile>>;

/// A chunk of input for a worker, numbered in input order.
struct Job {
    index: usize,
    chunk: Result<Chunk, SiteError>,
    /// Where the reader was after this chunk.
    position: ReadPosition,
}

/// A worker's result for a [`Job`].
struct Finished {
    index: usize,
    result: Result<EncodedChunk, SiteError>,
    position: ReadPosition,
    /// The chunk's input buffer, for the reader to reuse.
    spare: Option<Vec<u8>>,
}

/// What a worker makes of a chunk: `Body` and `Ids` are a [`BodyBuilder`]
/// and a list while it works on it, a [`ChunkBody`] and [`ChunkIds`] once done.
struct ChunkResult<Body, Ids> {
    rows: u64,
    /// Row number, id and reason of each rejected row, in order.
    rejects: Vec<(u64, String, FieldError)>,
    /// The hash of every row's id ([`IdSet`]): a list while the chunk is
    /// encoded, grouped for the search for duplicates once it is done.
    id_hashes: Ids,
    body: Body,
}

/// A chunk encoded and serialised, ready to append to the output.
type EncodedChunk = ChunkResult<ChunkBody, ChunkIds>;

/// A chunk's output under construction.
type ChunkOutput = ChunkResult<BodyBuilder, Vec<u64>>;

/// The output of a chunk's encoded rows.
enum ChunkBody {
    /// One Parquet row group (none when every row was rejected).
    Parquet(Option<Box<RowGroupChunks>>),
    /// Base64 clks, quoted and separated by commas, for anonlink JSON.
    Json(String),
}

/// What every worker shares.
struct ChunkContext<'a> {
    options: &'a EncodeOptions<'a>,
    plan: &'a ColumnPlan,
    parser: ChunkParser,
    encoder: &'a Encoder,
    hasher: Option<&'a BlockingKeyHasher>,
    /// For Parquet output.
    row_groups: Option<&'a RowGroupEncoder>,
    /// Bytes per clk.
    bytes: usize,
}

/// Rows parsed and encoded at a time within a chunk: their text, clks and
/// pages stay in the core's cache, where whole chunks (a Parquet row group
/// each) did not.
const SUB_BATCH_ROWS: usize = 4 * 1024;

/// Buffers a worker reuses from batch to batch.
#[derive(Default)]
struct WorkerBuffers {
    batch: Option<Batch>,
    clks: Vec<u8>,
}

/// Cuts the input into chunks for the workers, one per token, until the
/// input ends, reading fails, or the writer hangs up.
fn read_chunks(
    mut reader: RecordReader,
    jobs: &mpsc::Sender<Job>,
    tokens: &mpsc::Receiver<Option<Vec<u8>>>,
) {
    for index in 0.. {
        let Ok(spare) = tokens.recv() else { return };
        let chunk = match reader.next_chunk(spare) {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => return,
            Err(e) => Err(SiteError::from(e)),
        };
        let failed = chunk.is_err();
        let job = Job {
            index,
            chunk,
            position: reader.position(),
        };
        if jobs.send(job).is_err() || failed {
            return;
        }
    }
}

/// A worker: encodes chunks until there are no more or the writer hangs up.
fn encode_chunks(
    context: &ChunkContext<'_>,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: &mpsc::Sender<Finished>,
) {
    let mut buffers = WorkerBuffers::default();
    loop {
        // The lock is held only to take a job; a poisoned lock means another
        // worker panicked, which the scope reports.
        let Ok(Ok(job)) = jobs.lock().map(|jobs| jobs.recv()) else {
            return;
        };
        let (result, spare) = match job.chunk {
            Ok(chunk) => encode_chunk(context, chunk, &mut buffers),
            Err(e) => (Err(e), None),
        };
        let finished = Finished {
            index: job.index,
            result,
            position: job.position,
            spare,
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Parses, checks, encodes and serialises one chunk; hands back its input buffer.
fn encode_chunk(
    context: &ChunkContext<'_>,
    chunk: Chunk,
    buffers: &mut WorkerBuffers,
) -> (Result<EncodedChunk, SiteError>, Option<Vec<u8>>) {
    match chunk {
        Chunk::Csv(chunk) => {
            let result = encode_csv_chunk(context, &chunk, buffers);
            (result, Some(chunk.into_buffer()))
        }
        Chunk::Batch(batch) => {
            let result = ChunkOutput::new(context, batch.len()).and_then(|mut output| {
                for start in (0..batch.len()).step_by(SUB_BATCH_ROWS) {
                    let rows = start..batch.len().min(start + SUB_BATCH_ROWS);
                    output.add(context, &batch, rows, &mut buffers.clks)?;
                }
                output.finish(context)
            });
            (result, None)
        }
    }
}

/// A CSV chunk, parsed [`SUB_BATCH_ROWS`] rows at a time.
fn encode_csv_chunk(
    context: &ChunkContext<'_>,
    chunk: &CsvChunk,
    buffers: &mut WorkerBuffers,
) -> Result<EncodedChunk, SiteError> {
    let mut output = ChunkOutput::new(context, chunk.rows())?;
    let mut rows = context.parser.rows(chunk);
    while let Some(batch) =
        context
            .parser
            .next_batch(&mut rows, SUB_BATCH_ROWS, &mut buffers.batch)?
    {
        let added = output.add(context, &batch, 0..batch.len(), &mut buffers.clks);
        buffers.batch = Some(batch);
        added?;
    }
    output.finish(context)
}

enum BodyBuilder {
    /// The column writers of the chunk's row group.
    Parquet(RowGroupWriters),
    Json(String),
}

impl ChunkOutput {
    /// The output of a chunk of `rows` rows.
    fn new(context: &ChunkContext<'_>, rows: usize) -> Result<ChunkOutput, SiteError> {
        let body = match context.row_groups {
            Some(row_groups) => BodyBuilder::Parquet(
                row_groups
                    .writers(rows)
                    .map_err(|source| parquet_error(context, source))?,
            ),
            None => BodyBuilder::Json(String::new()),
        };
        Ok(ChunkOutput {
            rows: 0,
            rejects: Vec::new(),
            id_hashes: Vec::with_capacity(rows),
            body,
        })
    }

    /// Checks, encodes and serialises `rows` of `batch`, in order; `clks` is
    /// a buffer to reuse.
    fn add(
        &mut self,
        context: &ChunkContext<'_>,
        batch: &Batch,
        rows: Range<usize>,
        clks: &mut Vec<u8>,
    ) -> Result<(), SiteError> {
        let (plan, bytes) = (context.plan, context.bytes);
        check_ids(
            context.options,
            batch,
            rows.clone(),
            id_hash,
            &mut self.id_hashes,
        )?;
        // `encode_into` writes every byte of a clk: reused memory need not be zeroed.
        let mut buffer = std::mem::take(clks);
        if buffer.len() < rows.len() * bytes {
            buffer.resize(rows.len() * bytes, 0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut popcounts = Vec::with_capacity(rows.len());
        let mut keys = context.hasher.map(|_| Vec::with_capacity(rows.len()));
        let mut values: Vec<Option<&str>> = Vec::with_capacity(plan.features.len());
        self.rows += rows.len() as u64;
        for row in rows.clone() {
            values.clear();
            values.extend(
                plan.features
                    .iter()
                    .map(|slot| slot.and_then(|s| batch.get(row, s))),
            );
            // The next row's values, for which the encoder starts fetching
            // memo entries.
            let next = |feature: usize| {
                (row + 1 < rows.end)
                    .then(|| plan.features[feature].and_then(|s| batch.get(row + 1, s)))
                    .flatten()
            };
            let id = batch.get(row, 0).unwrap_or_default();
            // Kept rows are packed at the front of the buffer, in order.
            let kept = ids.len();
            let out = &mut buffer[kept * bytes..(kept + 1) * bytes];
            match context.encoder.encode_into_ahead(&values, out, &next) {
                Ok(()) => {
                    popcounts.push(clk_file::popcount(out));
                    ids.push(id);
                    if let (Some(keys), Some(hasher)) = (keys.as_mut(), context.hasher) {
                        keys.push(hasher.hash_record(&values));
                    }
                }
                Err(err) => self
                    .rejects
                    .push((batch.row_number(row), id.to_owned(), err)),
            }
        }
        buffer.truncate(ids.len() * bytes);
        *clks = match (&mut self.body, context.row_groups) {
            (BodyBuilder::Parquet(writers), Some(row_groups)) => row_groups
                .write(writers, &ids, buffer, popcounts, keys)
                .map_err(|source| parquet_error(context, source))?
                .unwrap_or_default(),
            (BodyBuilder::Json(text), _) => {
                for clk in buffer.chunks_exact(bytes.max(1)) {
                    push_json_clk(text, clk);
                }
                buffer
            }
            (BodyBuilder::Parquet(_), None) => {
                unreachable!("Parquet output has a row group encoder")
            }
        };
        Ok(())
    }

    fn finish(self, context: &ChunkContext<'_>) -> Result<EncodedChunk, SiteError> {
        let encoded = self.rows - self.rejects.len() as u64;
        let body = match self.body {
            // A row group without rows is not written.
            BodyBuilder::Parquet(_) if encoded == 0 => ChunkBody::Parquet(None),
            BodyBuilder::Parquet(writers) => ChunkBody::Parquet(Some(Box::new(
                writers
                    .close()
                    .map_err(|source| parquet_error(context, source))?,
            ))),
            BodyBuilder::Json(text) => ChunkBody::Json(text),
        };
        Ok(EncodedChunk {
            rows: self.rows,
            rejects: self.rejects,
            id_hashes: ChunkIds::group(&self.id_hashes),
            body,
        })
    }
}

/// Appends one clk to the body of a `{"clks": [...]}` array: a comma after
/// the one before, then the clk in standard base64 (padded), quoted. The
/// vector engine of `base64_simd` takes a third of the time of the `base64`
/// crate's, which was 7% of a JSON encode run's CPU.
fn push_json_clk(text: &mut String, clk: &[u8]) {
    if !text.is_empty() {
        text.push(',');
    }
    text.push('"');
    base64_simd::STANDARD.encode_append(clk, text);
    text.push('"');
}

fn parquet_error(context: &ChunkContext<'_>, source: ParquetError) -> SiteError {
    SiteError::WriteParquet {
        path: context.options.output.clone(),
        source,
    }
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
                other_delimiter: likely_delimiter(columns, options.read.csv.delimiter),
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

/// Buffer of the Parquet output file: parquet splices each row group's clk
/// column into the file 8 KiB at a time, which unbuffered was one system call each.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

/// Where `clk` is among the columns of a `.clk.parquet`, and among their
/// leaves (the columns before it are flat).
const CLK_COLUMN: usize = 1;

/// Serialises chunks of encoded rows into Parquet row groups, on any thread.
struct RowGroupEncoder {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    clk: ColumnDescPtr,
    bytes: usize,
}

/// One row group's column writers: Arrow's for every column but `clk`,
/// which has its own ([`ClkColumnWriter`]).
struct RowGroupWriters {
    arrow: Vec<ArrowColumnWriter>,
    clk: ClkColumnWriter,
}

/// One row group's serialised column chunks.
struct RowGroupChunks {
    arrow: Vec<ArrowColumnChunk>,
    clk: ClkColumnChunk,
}

impl RowGroupEncoder {
    /// The column writers of a new row group of at most `rows` rows.
    fn writers(&self, rows: usize) -> Result<RowGroupWriters, ParquetError> {
        // Row group numbers only matter to encryption, which is not used.
        let mut arrow = self.factory.create_column_writers(0)?;
        drop(arrow.remove(CLK_COLUMN)); // `clk` has its own writer
        Ok(RowGroupWriters {
            arrow,
            clk: ClkColumnWriter::new(self.clk.clone(), self.bytes, rows),
        })
    }

    /// Appends rows to a row group's `writers`; hands back the buffer of
    /// `clks` once the writers have copied it.
    fn write(
        &self,
        writers: &mut RowGroupWriters,
        ids: &[&str],
        clks: Vec<u8>,
        popcounts: Vec<u16>,
        blocking_keys: Option<Vec<Vec<u64>>>,
    ) -> Result<Option<Vec<u8>>, ParquetError> {
        if ids.is_empty() {
            return Ok(Some(clks));
        }
        let clks = Bytes::from(clks);
        writers.clk.write(&clks)?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(ids)),
            Arc::new(UInt16Array::from(popcounts)),
        ];
        if let Some(keys) = &blocking_keys {
            columns.push(Arc::new(clk_file::blocking_keys_array(
                keys.iter().map(Vec::as_slice),
            )));
        }
        let fields = (self.schema.fields().iter().enumerate())
            .filter(|&(column, _)| column != CLK_COLUMN)
            .map(|(_, field)| field);
        let mut next = writers.arrow.iter_mut();
        for (field, column) in fields.zip(&columns) {
            for leaf in compute_leaves(field, column)? {
                next.next()
                    .expect("one writer per leaf of the clk schema")
                    .write(&leaf)?;
            }
        }
        // The clk writer has let go of its slices of the buffer.
        Ok(clks.try_into_mut().ok().map(Vec::from))
    }
}

impl RowGroupWriters {
    fn close(self) -> Result<RowGroupChunks, ParquetError> {
        Ok(RowGroupChunks {
            arrow: (self.arrow.into_iter())
                .map(ArrowColumnWriter::close)
                .collect::<Result<_, _>>()?,
            clk: self.clk.close()?,
        })
    }
}

impl RowGroupChunks {
    /// Appends the column chunks to `row_group`, in schema order.
    fn append_to_row_group<W: Write + Send>(
        self,
        row_group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> Result<(), ParquetError> {
        let mut arrow = self.arrow.into_iter();
        for chunk in arrow.by_ref().take(CLK_COLUMN) {
            chunk.append_to_row_group(row_group)?;
        }
        self.clk.append_to_row_group(row_group)?;
        arrow.try_for_each(|chunk| chunk.append_to_row_group(row_group))
    }
}

/// The output file under construction (a temporary file until `finish`).
/// Its writer comes before the file, so that on failure it is dropped (its
/// flush-behind helper stopped) before the file is removed.
enum Sink {
    Parquet {
        path: PathBuf,
        writer: Box<SerializedFileWriter<BufWriter<FlushBehind>>>,
        file: AtomicFile,
    },
    /// anonlink JSON: clks only (no ids, metadata or blocking keys).
    Json {
        path: PathBuf,
        out: BufWriter<FlushBehind>,
        file: AtomicFile,
        first: bool,
    },
}

impl Sink {
    /// With `hasher`, the Parquet output gets the `blocking_keys` column.
    /// For Parquet, also what serialises row groups for it.
    fn create(
        options: &EncodeOptions<'_>,
        hasher: Option<&BlockingKeyHasher>,
    ) -> Result<(Sink, Option<RowGroupEncoder>), SiteError> {
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
                let parquet_err = |source| SiteError::WriteParquet {
                    path: path.clone(),
                    source,
                };
                let handle = BufWriter::with_capacity(
                    OUTPUT_BUFFER_BYTES,
                    file.flush_behind().map_err(io_err)?,
                );
                // The ArrowWriter adds the Arrow schema to the file's metadata;
                // its parts then let workers serialise row groups in parallel.
                let (writer, factory) = ArrowWriter::try_new(
                    handle,
                    schema.clone(),
                    Some(table::clk_writer_properties(&metadata)),
                )
                .and_then(ArrowWriter::into_serialized_writer)
                .map_err(parquet_err)?;
                let clk = writer.schema_descr().column(CLK_COLUMN);
                debug_assert_eq!(clk.name(), "clk");
                let sink = Sink::Parquet {
                    path,
                    file,
                    writer: Box::new(writer),
                };
                Ok((
                    sink,
                    Some(RowGroupEncoder {
                        factory,
                        schema,
                        clk,
                        bytes,
                    }),
                ))
            }
            OutputFormat::ClkhashJson => {
                let mut out = BufWriter::new(file.flush_behind().map_err(io_err)?);
                out.write_all(b"{\"clks\":[").map_err(io_err)?;
                let sink = Sink::Json {
                    path,
                    file,
                    out,
                    first: true,
                };
                Ok((sink, None))
            }
        }
    }

    /// Appends a chunk's encoded rows.
    fn write(&mut self, body: ChunkBody) -> Result<(), SiteError> {
        match (self, body) {
            (Sink::Parquet { path, writer, .. }, ChunkBody::Parquet(chunks)) => {
                let Some(chunks) = chunks else {
                    return Ok(());
                };
                let parquet_err = |source| SiteError::WriteParquet {
                    path: path.clone(),
                    source,
                };
                let mut row_group = writer.next_row_group().map_err(parquet_err)?;
                chunks
                    .append_to_row_group(&mut row_group)
                    .map_err(parquet_err)?;
                row_group.close().map(drop).map_err(parquet_err)
            }
            (
                Sink::Json {
                    path, out, first, ..
                },
                ChunkBody::Json(text),
            ) => {
                if text.is_empty() {
                    return Ok(());
                }
                let separator: &[u8] = if *first { b"" } else { b"," };
                *first = false;
                out.write_all(separator)
                    .and_then(|()| out.write_all(text.as_bytes()))
                    .map_err(|source| SiteError::Write {
                        path: path.clone(),
                        source,
                    })
            }
            _ => unreachable!("chunks are encoded for the sink's format"),
        }
    }

    fn finish(self, records: u64) -> Result<(), SiteError> {
        match self {
            Sink::Parquet {
                path,
                file,
                mut writer,
            } => {
                writer.append_key_value_metadata(KeyValue::new(
                    keys::RECORD_COUNT.to_owned(),
                    records.to_string(),
                ));
                writer.finish().map_err(|source| SiteError::WriteParquet {
                    path: path.clone(),
                    source,
                })?;
                drop(writer);
                file.commit()
                    .map_err(|source| SiteError::Write { path, source })
            }
            Sink::Json {
                path,
                file,
                mut out,
                ..
            } => {
                let io_err = |source| SiteError::Write {
                    path: path.clone(),
                    source,
                };
                out.write_all(b"]}")
                    .and_then(|()| out.flush())
                    .map_err(io_err)?;
                drop(out);
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
        assert!(!text.contains("separated by"), "{text}");
    }

    #[test]
    fn a_header_of_one_column_with_semicolons_suggests_the_delimiter() {
        let schema = blake_schema();
        let header = FEBRL.join(";");
        let err = plan(&schema, "rec_id", &[header.as_str()]).unwrap_err();
        assert!(
            matches!(
                err,
                SiteError::MissingColumns {
                    other_delimiter: Some(';'),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("separated by ';'"), "{err}");
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

    proptest::proptest! {
        /// The vector base64 of the JSON body is the `base64` crate's
        /// standard padded encoding, whatever the length.
        #[test]
        fn json_clks_are_standard_base64(
            clks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 1..4),
        ) {
            use base64::Engine as _;
            let mut text = String::new();
            for clk in &clks {
                push_json_clk(&mut text, clk);
            }
            let expected: Vec<String> = clks
                .iter()
                .map(|clk| format!("\"{}\"", base64::engine::general_purpose::STANDARD.encode(clk)))
                .collect();
            proptest::prop_assert_eq!(text, expected.join(","));
        }
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
            let same_hash = |_: &str| 42;
            let mut ids = IdSet::with_hash(same_hash);
            while let Some(batch) = reader.next_batch().unwrap() {
                let mut hashes = Vec::new();
                check_ids(&options, &batch, 0..batch.len(), same_hash, &mut hashes).unwrap();
                ids.push(ChunkIds::group(&hashes));
            }
            match (ids.finish(&options, plan.selection[0], 2), expected) {
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

    /// Given name, surname and postcode, with two blocking keys; postcodes
    /// below 3000 are refused.
    fn postcode_schema() -> Schema {
        Schema::from_json(
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
        .unwrap()
    }

    #[test]
    fn blocking_keys_follow_their_records_whatever_the_batches_and_threads() {
        // Postcodes below 3000 are refused: those rows have neither clk nor keys.
        let schema = postcode_schema();
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
        // Byte for byte the same whatever the thread count; the same records
        // whatever the batches (each batch is a row group).
        let small_2 = dir.path().join("small_2.clk.parquet");
        encode_parquet(&schema, &input, &small_2, 7, 3);
        assert_eq!(
            std::fs::read(&small).unwrap(),
            std::fs::read(&small_2).unwrap()
        );
        encode_parquet(&schema, &input, &large, 1000, 2);
        let (a, b) = (
            clk_file::read(&small, None).unwrap(),
            clk_file::read(&large, None).unwrap(),
        );
        assert_eq!(
            (&a.ids, &a.clks, &a.popcounts, &a.blocking_keys),
            (&b.ids, &b.clks, &b.popcounts, &b.blocking_keys)
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

    /// The first 200 Febrl rows with every field quoted, CRLF line breaks and
    /// an empty line after every 50th row; `edit` may change a row's fields first.
    fn quoted_input(path: &Path, edit: impl Fn(usize, &mut Vec<String>)) {
        let text = std::fs::read_to_string(fixture("febrl4_a_first200.clkhash_input.csv")).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
            edit(i, &mut fields);
            let quoted: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
            out.push_str(&quoted.join(","));
            out.push_str(if i % 50 == 0 && i > 0 {
                "\r\n\r\n"
            } else {
                "\r\n"
            });
        }
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn many_chunks_on_many_threads_keep_rows_rejects_and_errors_in_order() {
        let schema = postcode_schema();
        let secret = test_secret();
        let dir = tempfile::tempdir().unwrap();
        let quoted = dir.path().join("quoted.csv");
        quoted_input(&quoted, |_, _| {});
        let run = |input: &Path, name: &str, batch_rows: usize, threads: usize| {
            let output = dir.path().join(name);
            let options = EncodeOptions {
                threads,
                ..test_options(&schema, &secret, input, &output, batch_rows)
            };
            let summary = encode_site(&options, &mut |_| {});
            let rejects = std::fs::read(rejects_path(&output)).unwrap_or_default();
            (summary, std::fs::read(&output).unwrap_or_default(), rejects)
        };
        // 29 chunks of 7 rows, on 1 and 4 threads: the same bytes.
        let (one, one_out, one_rejects) = run(&quoted, "one.clk.parquet", 7, 1);
        let (four, four_out, four_rejects) = run(&quoted, "four.clk.parquet", 7, 4);
        let (one, four) = (one.unwrap(), four.unwrap());
        assert_eq!((one.rows_read, one.encoded + one.rejected), (200, 200));
        assert!(one.rejected > 20, "{one:?}");
        assert_eq!((four.encoded, four.rejected), (one.encoded, one.rejected));
        assert!(one_out == four_out && one_rejects == four_rejects);
        // The plain file, in one chunk: the same records and the same rejects
        // (empty lines are not rows).
        let plain = fixture("febrl4_a_first200.clkhash_input.csv");
        let (_, _, plain_rejects) = run(&plain, "plain.clk.parquet", 1000, 2);
        assert_eq!(plain_rejects, one_rejects);
        let a = clk_file::read(&dir.path().join("four.clk.parquet"), None).unwrap();
        let b = clk_file::read(&dir.path().join("plain.clk.parquet"), None).unwrap();
        assert_eq!((&a.ids, &a.clks), (&b.ids, &b.clks));

        // The first error in input order is the one reported, with its row
        // and line, whichever worker finishes first.
        let bad = dir.path().join("bad.csv");
        quoted_input(&bad, |i, fields| match i {
            30 => fields[0].clear(),
            120 => fields.push("extra".into()),
            _ => {}
        });
        match run(&bad, "bad.clk.parquet", 7, 4).0 {
            Err(SiteError::EmptyId { row, .. }) => assert_eq!(row, 30),
            other => panic!("{other:?}"),
        }
        quoted_input(&bad, |i, fields| {
            if i == 120 {
                fields.push("extra".into());
            }
        });
        match run(&bad, "bad.clk.parquet", 7, 4).0 {
            // Two empty lines before row 120: after rows 50 and 100.
            Err(SiteError::Records(RecordsError::FieldCount { row, line, .. })) => {
                assert_eq!((row, line), (120, 123));
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("bad.clk.parquet").exists());
    }
}
