//! Site input: a site's records, read from CSV or Parquet in batches of rows.
//!
//! [`RecordReader`] opens the file, gives its column names, and then hands
//! [`site`](crate::site) one [`Batch`] at a time holding the text of the
//! columns it asked for, so memory stays bounded whatever the file size.
//!
//! Conventions, the same for both formats:
//! - Rows are numbered from 1 for the first *data* row; a CSV header is not
//!   counted. Errors about a CSV row also give its line in the file (quoted
//!   fields may span lines).
//! - A value is `None` only when the file says it is null (Parquet); an empty
//!   CSV field is `Some("")`, so that the schema's missing-value rules decide.
//! - CSV: the first row is the header, fields may be quoted, a UTF-8 byte-order
//!   mark is skipped, and by default surrounding whitespace is trimmed from
//!   every field, quoted or not (Febrl writes `a, b`); [`CsvOptions::trim`]
//!   `false` keeps values byte for byte. Column names are always trimmed. Only
//!   the selected columns must be UTF-8.
//! - Parquet: string, integer and date columns are read; integers become their
//!   decimal text and dates ISO 8601 `YYYY-MM-DD`.

use std::fmt::Write as _;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::csv_lines::{
    ChunkRecords, Dialect, RawChunk, Record, RecordSplitter, is_valid_delimiter,
};

/// Rows per batch unless the caller asks otherwise. An encode run makes each
/// batch one Parquet row group; larger batches made the run slower (their
/// buffers no longer fit a core's cache, and freed and faulted in again).
pub const DEFAULT_BATCH_ROWS: usize = 4 * 1024;

/// A CSV batch also ends once its records reach this many bytes, so that the
/// batches of a wide file stay small.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// The format of a site's input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Parquet,
}

impl InputFormat {
    /// Guesses the format from the file extension: `.csv`, `.tsv`, `.txt` are
    /// CSV; `.parquet`, `.pq` are Parquet (case-insensitive).
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Some(InputFormat::Csv),
            "parquet" | "pq" => Some(InputFormat::Parquet),
            _ => None,
        }
    }
}

/// The delimiter a CSV file's extension implies: a tab for `.tsv`, else a comma.
pub fn default_delimiter(path: &Path) -> u8 {
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    if tsv { b'\t' } else { b',' }
}

/// The common delimiter (`;`, tab, `|` or `,`) that a header read as one
/// column holds, when it is not `delimiter`: the file is likely separated by
/// it (spreadsheets in much of Europe write `;`).
pub fn likely_delimiter(columns: &[String], delimiter: u8) -> Option<char> {
    let [only] = columns else { return None };
    [';', '\t', '|', ',']
        .into_iter()
        .find(|&d| d != char::from(delimiter) && only.contains(d))
}

/// The end of a missing-column error for a [`likely_delimiter`]: empty for none.
pub(crate) fn delimiter_hint(other_delimiter: Option<char>) -> String {
    match other_delimiter {
        Some(d) => format!(
            "; the header is one column with {d:?} in it: is the file separated by {d:?}? \
             (--delimiter {d:?})"
        ),
        None => String::new(),
    }
}

/// How CSV input is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field separator (one byte).
    pub delimiter: u8,
    /// Trim leading and trailing whitespace of every field (default `true`).
    /// Trimming also lets a quote after blanks open a quoted field, as
    /// Febrl-style files (`a, "b, c"`) need; without it, a quote opens a
    /// quoted field only right after the delimiter (RFC 4180), and every
    /// other byte is kept.
    pub trim: bool,
}

impl Default for CsvOptions {
    fn default() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            trim: true,
        }
    }
}

/// How to read a site's input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// `None`: guessed from the extension ([`InputFormat::from_path`]).
    pub format: Option<InputFormat>,
    pub csv: CsvOptions,
    /// Rows per [`Batch`] (at least 1).
    pub batch_rows: usize,
}

impl ReadOptions {
    /// A CSV file, whatever its extension, separated by `delimiter` and
    /// trimmed: how the pipeline's other CSV inputs (payloads, truth files)
    /// are read.
    pub fn trimmed_csv(delimiter: u8) -> ReadOptions {
        ReadOptions {
            format: Some(InputFormat::Csv),
            csv: CsvOptions {
                delimiter,
                trim: true,
            },
            ..ReadOptions::default()
        }
    }
}

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions {
            format: None,
            csv: CsvOptions::default(),
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }
}

/// Why input records could not be read. Never contains a field value.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot tell the format of {path} from its extension \
         (expected .csv, .tsv, .txt, .parquet or .pq; or name the format explicitly)"
    )]
    UnknownFormat { path: PathBuf },
    #[error(
        "{delimiter:?} cannot be the CSV delimiter (quotes and line breaks have their own meaning)"
    )]
    Delimiter { delimiter: char },
    #[error("{path} has no header row (the first row must name the columns)")]
    NoHeader { path: PathBuf },
    #[error("{path}: the header (line 1) is not valid UTF-8")]
    HeaderNotUtf8 { path: PathBuf },
    #[error(
        "{path}: CSV row {row} (line {line}) has {found} fields but the header has {expected}{}",
        if *quote_after_blank {
            "; without trimming, a quote after a blank (`, \"a, b\"`) does not open a quoted \
             field, so the delimiters inside it count: write `,\"a, b\"`, or trim the fields"
        } else {
            ""
        }
    )]
    FieldCount {
        path: PathBuf,
        row: u64,
        line: u64,
        expected: u64,
        found: u64,
        /// The record has a quote after a delimiter and blanks, the likely cause.
        quote_after_blank: bool,
    },
    #[error(
        "{path}: CSV row {row} (line {line}), column {column:?}: the value is not valid UTF-8; \
         the file must be UTF-8 (a file saved as Windows-1252 or Latin-1 converts with \
         `iconv -f WINDOWS-1252 -t UTF-8 < in.csv > out.csv`)"
    )]
    InvalidUtf8 {
        path: PathBuf,
        row: u64,
        line: u64,
        column: String,
    },
    #[error("{path}: cannot read CSV after row {row}: {message}")]
    Csv {
        path: PathBuf,
        /// The last row read successfully (0: none).
        row: u64,
        message: String,
    },
    #[error("{path} is not a readable Parquet file: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: cannot read Parquet rows after row {row}: {source}")]
    Arrow {
        path: PathBuf,
        row: u64,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error(
        "{path}: column {column:?} has type {data_type}, which cannot be read as text \
         (expected a string, integer or date column)"
    )]
    UnsupportedType {
        path: PathBuf,
        column: String,
        data_type: String,
    },
}

/// One column of a batch: all values back to back, their end offsets, and
/// whether each is present (not null).
#[derive(Debug, Default, Clone)]
struct Column {
    text: String,
    ends: Vec<usize>,
    present: Vec<bool>,
}

impl Column {
    fn with_capacity(rows: usize) -> Column {
        Column {
            text: String::with_capacity(rows * 8),
            ends: Vec::with_capacity(rows),
            present: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, value: Option<&str>) {
        if let Some(v) = value {
            self.text.push_str(v);
        }
        self.ends.push(self.text.len());
        self.present.push(value.is_some());
    }

    /// Ends the value just written into `text` with `write!`.
    fn end_value(&mut self) {
        self.ends.push(self.text.len());
        self.present.push(true);
    }

    fn get(&self, row: usize) -> Option<&str> {
        if !self.present[row] {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        Some(&self.text[start..self.ends[row]])
    }
}

/// Consecutive rows of the selected columns, row by row: the values of a
/// row sit next to each other, as the encoder reads them (a column-major
/// layout made every row touch one cache line per column).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    first_row: u64,
    rows: usize,
    /// Selected columns per row.
    width: usize,
    /// The values, row after row: for CSV each record's bytes whole (one
    /// copy per record, not one per field), with its delimiters.
    text: String,
    /// `spans[row * width + col]`: where that value lies in `text`; a null
    /// value has [`NULL`] set in its end.
    spans: Vec<(u32, u32)>,
    /// The line each row starts on, for CSV input (empty for Parquet).
    lines: Vec<u64>,
}

/// The flag of a null value in the ends of [`Batch`]'s spans.
const NULL: u32 = 1 << 31;

impl Batch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The 1-based number of the batch's first row in the file (header not counted).
    pub fn first_row(&self) -> u64 {
        self.first_row
    }

    /// The 1-based row number of row `row` of this batch.
    pub fn row_number(&self, row: usize) -> u64 {
        self.first_row + row as u64
    }

    /// The line of the CSV file (from 1) that row `row` of this batch starts
    /// on; `None` for Parquet input.
    pub fn line(&self, row: usize) -> Option<u64> {
        self.lines.get(row).copied()
    }

    /// The value of selected column `col` (index into the selection) in row
    /// `row` of this batch; `None` when it is null.
    ///
    /// # Panics
    /// When `row` or `col` is out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<&str> {
        assert!(col < self.width, "column {col} of {}", self.width);
        let (start, end) = self.spans[row * self.width + col];
        if end & NULL != 0 {
            return None;
        }
        Some(&self.text[start as usize..end as usize])
    }

    /// An empty batch of `width` columns that reuses `spare`'s buffers.
    fn reuse(spare: Option<Batch>, width: usize, first_row: u64) -> Batch {
        let mut batch = spare.unwrap_or_default();
        batch.text.clear();
        batch.spans.clear();
        batch.lines.clear();
        batch.rows = 0;
        batch.width = width;
        batch.first_row = first_row;
        batch
    }

    fn push(&mut self, value: Option<&str>) {
        let start = self.text_len();
        match value {
            Some(v) => {
                self.text.push_str(v);
                self.spans.push((start, self.text_len()));
            }
            None => self.spans.push((start, start | NULL)),
        }
    }

    /// Appends `text` whole, for [`Batch::push_span`]s within it; returns
    /// where it starts.
    fn push_text(&mut self, text: &str) -> u32 {
        let start = self.text_len();
        self.text.push_str(text);
        start
    }

    /// A value at `range` of the text pushed at `base`.
    fn push_span(&mut self, base: u32, range: Range<usize>) {
        // Both ends lie within text already pushed, which is capped below 2^31.
        let at = |i: usize| base + i as u32;
        self.spans.push((at(range.start), at(range.end)));
    }

    fn text_len(&self) -> u32 {
        u32::try_from(self.text.len()).expect("batch text is capped below 2^31")
    }

    /// Interleaves whole columns of `rows` values into rows.
    fn from_columns(
        columns: &[Column],
        rows: usize,
        first_row: u64,
        spare: Option<Batch>,
    ) -> Batch {
        let mut batch = Batch::reuse(spare, columns.len(), first_row);
        batch
            .text
            .reserve(columns.iter().map(|c| c.text.len()).sum());
        batch.spans.reserve(rows * columns.len());
        for row in 0..rows {
            for column in columns {
                batch.push(column.get(row));
            }
        }
        batch.rows = rows;
        batch
    }
}

/// Where the reader is, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPosition {
    /// Data rows read so far.
    pub rows: u64,
    /// Work done, in the unit of `total`: bytes for CSV, rows for Parquet.
    pub done: u64,
    /// Total work, when known.
    pub total: Option<u64>,
}

/// Reads a site's records in batches. See the module documentation for the conventions.
#[derive(Debug)]
pub struct RecordReader {
    path: PathBuf,
    columns: Vec<String>,
    selected: Vec<usize>,
    batch_rows: usize,
    rows: u64,
    source: Source,
    parser: ChunkParser,
    /// A batch handed back with [`RecordReader::recycle`], whose buffers the
    /// next batch reuses.
    spare: Option<Batch>,
}

enum Source {
    Csv {
        splitter: Box<RecordSplitter<File>>,
        bytes_total: u64,
    },
    /// Before the first batch: the builder, kept so the projection can follow `select`.
    ParquetPending(Box<ParquetRecordBatchReaderBuilder<File>>),
    Parquet {
        reader: ParquetRecordBatchReader,
        rows_total: u64,
    },
    Done {
        done: u64,
        total: Option<u64>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Csv { .. } => "Csv",
            Source::ParquetPending(_) => "ParquetPending",
            Source::Parquet { .. } => "Parquet",
            Source::Done { .. } => "Done",
        })
    }
}

impl RecordReader {
    /// Opens `path` and reads its column names. Every column is selected until
    /// [`RecordReader::select`] says otherwise.
    ///
    /// # Errors
    /// [`RecordsError`] naming the file when it cannot be opened, its format is
    /// unknown, or it has no header.
    pub fn open(path: &Path, options: &ReadOptions) -> Result<RecordReader, RecordsError> {
        let format = match options.format.or_else(|| InputFormat::from_path(path)) {
            Some(f) => f,
            None => {
                return Err(RecordsError::UnknownFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        let open_err = |source| RecordsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let dialect = Dialect {
            delimiter: options.csv.delimiter,
            skip_initial_blanks: options.csv.trim,
        };
        if format == InputFormat::Csv && !is_valid_delimiter(dialect.delimiter) {
            return Err(RecordsError::Delimiter {
                delimiter: char::from(dialect.delimiter),
            });
        }
        let file = File::open(path).map_err(open_err)?;
        let (columns, source) = match format {
            InputFormat::Csv => {
                let bytes_total = file.metadata().map_err(open_err)?.len();
                let mut splitter = RecordSplitter::new(file, dialect);
                let header = match splitter.next_chunk(1, usize::MAX, None) {
                    Ok(Some(chunk)) => {
                        let mut records = ChunkRecords::new(&chunk.bytes, 1, dialect);
                        let header = records.read().expect("a chunk has a record");
                        (0..header.len())
                            .map(|i| header.field(i).to_vec())
                            .collect::<Vec<_>>()
                    }
                    Ok(None) => Vec::new(),
                    Err(e) => return Err(read_error(path, 0, &e)),
                };
                if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
                    return Err(RecordsError::NoHeader {
                        path: path.to_path_buf(),
                    });
                }
                let columns = header
                    .iter()
                    .map(|name| std::str::from_utf8(name).map(|s| s.trim().to_owned()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| RecordsError::HeaderNotUtf8 {
                        path: path.to_path_buf(),
                    })?;
                let source = Source::Csv {
                    splitter: Box::new(splitter),
                    bytes_total,
                };
                (columns, source)
            }
            InputFormat::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
                    RecordsError::Parquet {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
                let columns = builder
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                (columns, Source::ParquetPending(Box::new(builder)))
            }
        };
        let parser = ChunkParser {
            path: path.to_path_buf(),
            names: columns.clone(),
            selected: (0..columns.len()).collect(),
            trim: options.csv.trim,
            dialect,
        };
        Ok(RecordReader {
            path: path.to_path_buf(),
            selected: (0..columns.len()).collect(),
            columns,
            batch_rows: options.batch_rows.max(1),
            rows: 0,
            source,
            parser,
            spare: None,
        })
    }

    /// The file's column names, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The input path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Chooses the columns that batches hold, by index into [`RecordReader::columns`],
    /// in the order given. Call it before the first batch.
    ///
    /// # Errors
    /// [`RecordsError::UnsupportedType`] when a selected Parquet column cannot be read as text.
    ///
    /// # Panics
    /// When an index is out of range or a batch was already read.
    pub fn select(&mut self, columns: &[usize]) -> Result<(), RecordsError> {
        assert_eq!(self.rows, 0, "select before reading");
        assert!(columns.iter().all(|&c| c < self.columns.len()));
        if let Source::ParquetPending(builder) = &self.source {
            for &c in columns {
                let field = &builder.schema().fields()[c];
                if !is_text_like(field.data_type()) {
                    return Err(RecordsError::UnsupportedType {
                        path: self.path.clone(),
                        column: field.name().clone(),
                        data_type: field.data_type().to_string(),
                    });
                }
            }
        }
        self.selected = columns.to_vec();
        self.parser.selected = columns.to_vec();
        Ok(())
    }

    /// What turns this file's [`CsvChunk`]s into batches, on any thread.
    pub fn parser(&self) -> &ChunkParser {
        &self.parser
    }

    /// Where the reader is.
    pub fn position(&self) -> ReadPosition {
        let (done, total) = match &self.source {
            Source::Csv {
                splitter,
                bytes_total,
            } => (splitter.position(), Some(*bytes_total)),
            Source::ParquetPending(b) => (0, Some(b.metadata().file_metadata().num_rows() as u64)),
            Source::Parquet { rows_total, .. } => (self.rows, Some(*rows_total)),
            Source::Done { done, total } => (*done, *total),
        };
        ReadPosition {
            rows: self.rows,
            done,
            total,
        }
    }

    /// Hands back a batch that is no longer needed: the next batch reuses its
    /// buffers instead of allocating (and faulting in) fresh memory.
    pub fn recycle(&mut self, batch: Batch) {
        self.spare = Some(batch);
    }

    /// Reads the next batch of up to `batch_rows` rows; `None` at the end of the file.
    ///
    /// # Errors
    /// [`RecordsError`] naming the file, the row and the column.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, RecordsError> {
        Ok(match self.next_chunk(None)? {
            Some(Chunk::Csv(chunk)) => Some(self.parser.parse(&chunk, self.spare.take())?),
            Some(Chunk::Batch(batch)) => Some(batch),
            None => None,
        })
    }

    /// The next batch's worth of input, up to `batch_rows` rows; `None` at
    /// the end of the file. CSV records come as they are in the file, for
    /// [`ChunkParser::parse`] to split on another thread; `spare`, the buffer
    /// of a chunk already parsed, holds what is read next.
    ///
    /// # Errors
    /// [`RecordsError`] naming the file (and the row, for Parquet).
    pub fn next_chunk(&mut self, spare: Option<Vec<u8>>) -> Result<Option<Chunk>, RecordsError> {
        if let Source::ParquetPending(_) = self.source {
            self.start_parquet()?;
        }
        let chunk = match &mut self.source {
            Source::Csv { splitter, .. } => splitter
                .next_chunk(self.batch_rows, MAX_BATCH_BYTES, spare)
                .map_err(|e| read_error(&self.path, self.rows, &e))?
                .map(|raw| {
                    let first_row = self.rows + 1;
                    self.rows += raw.records as u64;
                    Chunk::Csv(CsvChunk { raw, first_row })
                }),
            Source::Parquet { reader, .. } => match reader.next() {
                None => None,
                Some(Err(source)) => {
                    return Err(RecordsError::Arrow {
                        path: self.path.clone(),
                        row: self.rows,
                        source,
                    });
                }
                Some(Ok(rb)) => {
                    let batch = parquet_batch(
                        &self.path,
                        &rb,
                        &self.columns,
                        &self.selected,
                        self.rows,
                        self.spare.take(),
                    )?;
                    self.rows += batch.len() as u64;
                    (!batch.is_empty()).then_some(Chunk::Batch(batch))
                }
            },
            Source::ParquetPending(_) => unreachable!("started above"),
            Source::Done { .. } => None,
        };
        match chunk {
            Some(chunk) => Ok(Some(chunk)),
            None => {
                let end = self.position();
                self.source = Source::Done {
                    done: end.total.unwrap_or(end.done),
                    total: end.total,
                };
                Ok(None)
            }
        }
    }

    fn start_parquet(&mut self) -> Result<(), RecordsError> {
        let Source::ParquetPending(builder) = std::mem::replace(
            &mut self.source,
            Source::Done {
                done: 0,
                total: None,
            },
        ) else {
            unreachable!("only called while pending");
        };
        let rows_total = builder.metadata().file_metadata().num_rows() as u64;
        let mut roots = self.selected.clone();
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(self.batch_rows)
            .build()
            .map_err(|source| RecordsError::Parquet {
                path: self.path.clone(),
                source,
            })?;
        self.source = Source::Parquet { reader, rows_total };
        Ok(())
    }
}

/// Every row of `path` as the values of the columns `names`, in that order:
/// `None` for a null value or a column the file does not have (as a schema
/// feature without a column). Holds the whole file in memory: for tests,
/// benchmarks and other small inputs; a site's run reads batches.
///
/// # Errors
/// As [`RecordReader::open`] and [`RecordReader::next_batch`].
pub fn read_named_columns(
    path: &Path,
    options: &ReadOptions,
    names: &[&str],
) -> Result<Vec<Vec<Option<String>>>, RecordsError> {
    let mut reader = RecordReader::open(path, options)?;
    let index: Vec<Option<usize>> = names
        .iter()
        .map(|n| reader.columns().iter().position(|c| c == n))
        .collect();
    let mut selected: Vec<usize> = index.iter().flatten().copied().collect();
    selected.sort_unstable();
    selected.dedup();
    let slot: Vec<Option<usize>> = index
        .iter()
        .map(|i| i.map(|i| selected.binary_search(&i).expect("selected above")))
        .collect();
    reader.select(&selected)?;
    let mut rows = Vec::new();
    while let Some(batch) = reader.next_batch()? {
        for row in 0..batch.len() {
            rows.push(
                slot.iter()
                    .map(|s| s.and_then(|s| batch.get(row, s)).map(str::to_owned))
                    .collect(),
            );
        }
        reader.recycle(batch);
    }
    Ok(rows)
}

/// A batch's worth of input from [`RecordReader::next_chunk`].
#[derive(Debug)]
pub enum Chunk {
    /// CSV records as they are in the file; [`ChunkParser::parse`] makes them a batch.
    Csv(CsvChunk),
    /// Rows already read into a batch (Parquet).
    Batch(Batch),
}

/// Whole CSV records as they are in the file, not yet split into fields.
#[derive(Debug)]
pub struct CsvChunk {
    raw: RawChunk,
    /// The 1-based number of the chunk's first row.
    first_row: u64,
}

impl CsvChunk {
    /// Number of records.
    pub fn rows(&self) -> usize {
        self.raw.records
    }

    /// The chunk's buffer, for [`RecordReader::next_chunk`] to reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.raw.bytes
    }
}

/// Splits [`CsvChunk`]s of one file into batches of its selected columns;
/// shared by threads that parse chunks in parallel.
#[derive(Debug, Clone)]
pub struct ChunkParser {
    path: PathBuf,
    names: Vec<String>,
    selected: Vec<usize>,
    trim: bool,
    dialect: Dialect,
}

/// A [`CsvChunk`] being read by [`ChunkParser::next_batch`].
#[derive(Debug)]
pub struct ChunkRows<'a> {
    records: ChunkRecords<'a>,
    /// The number of the next row.
    next_row: u64,
}

impl ChunkParser {
    /// The selected columns of `chunk`'s records, in a batch that reuses `spare`'s buffers.
    ///
    /// # Errors
    /// As [`ChunkParser::next_batch`].
    pub fn parse(&self, chunk: &CsvChunk, mut spare: Option<Batch>) -> Result<Batch, RecordsError> {
        let mut rows = self.rows(chunk);
        let batch = self.next_batch(&mut rows, chunk.rows(), &mut spare)?;
        debug_assert!(
            rows.records.read().is_none(),
            "the splitter and the parser agree"
        );
        Ok(batch.unwrap_or_else(|| Batch::reuse(spare, self.selected.len(), chunk.first_row)))
    }

    /// `chunk`'s records, for [`ChunkParser::next_batch`] to read a few at a time.
    pub fn rows<'a>(&self, chunk: &'a CsvChunk) -> ChunkRows<'a> {
        ChunkRows {
            records: ChunkRecords::new(&chunk.raw.bytes, chunk.raw.first_line, self.dialect),
            next_row: chunk.first_row,
        }
    }

    /// The selected columns of the next `max_rows` records of `rows`, in a
    /// batch that reuses the buffers of the batch in `spare`; `None` after the
    /// last, leaving `spare` its batch (a worker keeps its buffers from chunk
    /// to chunk: fresh ones cost reallocation and page faults as they grow).
    ///
    /// # Errors
    /// [`RecordsError`] naming the file, the row, its line and the column:
    /// a record with a wrong number of fields, a selected value that is not UTF-8.
    pub fn next_batch(
        &self,
        rows: &mut ChunkRows<'_>,
        max_rows: usize,
        spare: &mut Option<Batch>,
    ) -> Result<Option<Batch>, RecordsError> {
        let mut batch = Batch::reuse(spare.take(), self.selected.len(), rows.next_row);
        while batch.rows < max_rows
            && let Some(record) = rows.records.read()
        {
            let row = batch.row_number(batch.rows);
            if record.len() != self.names.len() {
                return Err(RecordsError::FieldCount {
                    path: self.path.clone(),
                    row,
                    line: record.line(),
                    expected: self.names.len() as u64,
                    found: record.len() as u64,
                    // Trimming reads such a quote as opening a quoted field.
                    quote_after_blank: !self.trim && quote_after_blank(&record),
                });
            }
            let invalid = |c: usize| RecordsError::InvalidUtf8 {
                path: self.path.clone(),
                row,
                line: record.line(),
                column: self.names[c].clone(),
            };
            // One UTF-8 check and one copy for the whole record; only when
            // the check fails are the selected fields checked and copied one
            // by one (an unselected field may be the invalid one, and is no
            // concern). `simdutf8` checks valid text in vector steps (-2% of
            // an encode run's CPU against `std::str::from_utf8`).
            if let Ok(whole) = simdutf8::basic::from_utf8(record.bytes()) {
                let base = batch.push_text(whole);
                for &c in &self.selected {
                    let range = record.range(c);
                    let value = whole.get(range.clone()).ok_or_else(|| invalid(c))?;
                    let range = if self.trim {
                        trimmed_range(value, range)
                    } else {
                        range
                    };
                    batch.push_span(base, range);
                }
            } else {
                for &c in &self.selected {
                    let value = std::str::from_utf8(record.field(c)).map_err(|_| invalid(c))?;
                    batch.push(Some(if self.trim { trim_field(value) } else { value }));
                }
            }
            batch.lines.push(record.line());
            batch.rows += 1;
        }
        rows.next_row += batch.rows as u64;
        if batch.rows == 0 {
            *spare = Some(batch);
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

/// Whether a field of `record` is spaces or tabs and then a quote, as CSV
/// reads Febrl-style `a, "b, c"`: the fields `a`, ` "b` and ` c"`.
fn quote_after_blank(record: &Record<'_>) -> bool {
    (0..record.len()).any(|i| {
        let field = record.field(i);
        let rest = field.trim_ascii_start();
        rest.len() < field.len() && rest.first() == Some(&b'"')
    })
}

/// A failed read of a CSV file, after `row_ok` rows read.
fn read_error(path: &Path, row_ok: u64, e: &std::io::Error) -> RecordsError {
    RecordsError::Csv {
        path: path.to_path_buf(),
        row: row_ok,
        message: e.to_string(),
    }
}

/// Where [`trim_field`] of `value`, which lies at `range`, lies.
fn trimmed_range(value: &str, range: Range<usize>) -> Range<usize> {
    let trimmed = trim_field(value);
    // A subslice of `value`: its offset is the distance between the pointers.
    let start = range.start + (trimmed.as_ptr() as usize - value.as_ptr() as usize);
    start..start + trimmed.len()
}

/// `value.trim()`: ASCII spaces and tabs come off without decoding
/// characters, and when what is left starts and ends with printable ASCII
/// (most values) nothing more would; otherwise `str::trim` decides.
fn trim_field(value: &str) -> &str {
    // Most values: nothing to trim, seen from their two ends alone.
    if let (Some(first), Some(last)) = (value.as_bytes().first(), value.as_bytes().last())
        && first.is_ascii_graphic()
        && last.is_ascii_graphic()
    {
        return value;
    }
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let all = value.as_bytes();
    let start = all.iter().position(|b| !blank(b)).unwrap_or(all.len());
    let end = all.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    // Both ends are next to ASCII bytes, so they are character boundaries.
    let inner = &value[start..end];
    let bytes = inner.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => inner,
        _ => inner.trim(),
    }
}

/// Strings or integers: the Arrow types whose values read as record ids
/// (integers in their decimal form).
pub(crate) fn is_string_or_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn is_text_like(t: &DataType) -> bool {
    match t {
        DataType::Date32 | DataType::Date64 | DataType::Null => true,
        DataType::Dictionary(_, values) => {
            matches!(**values, DataType::Utf8 | DataType::LargeUtf8)
        }
        t => is_string_or_integer(t),
    }
}

fn parquet_batch(
    path: &Path,
    rb: &RecordBatch,
    names: &[String],
    selected: &[usize],
    rows_before: u64,
    spare: Option<Batch>,
) -> Result<Batch, RecordsError> {
    let rows = rb.num_rows();
    let columns = selected
        .iter()
        .map(|&c| {
            let name = &names[c];
            let array = rb
                .column_by_name(name)
                .expect("projected columns are in the batch");
            to_text(array.as_ref()).ok_or_else(|| RecordsError::UnsupportedType {
                path: path.to_path_buf(),
                column: name.clone(),
                data_type: array.data_type().to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch::from_columns(&columns, rows, rows_before + 1, spare))
}

/// The text of every value of an Arrow array; `None` for unsupported types.
fn to_text(array: &dyn Array) -> Option<Column> {
    let mut col = Column::with_capacity(array.len());
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(|v| col.push(v)),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(|v| col.push(v)),
        DataType::Utf8View => array.as_string_view().iter().for_each(|v| col.push(v)),
        DataType::Int8 => integers::<Int8Type>(array, &mut col),
        DataType::Int16 => integers::<Int16Type>(array, &mut col),
        DataType::Int32 => integers::<Int32Type>(array, &mut col),
        DataType::Int64 => integers::<Int64Type>(array, &mut col),
        DataType::UInt8 => integers::<UInt8Type>(array, &mut col),
        DataType::UInt16 => integers::<UInt16Type>(array, &mut col),
        DataType::UInt32 => integers::<UInt32Type>(array, &mut col),
        DataType::UInt64 => integers::<UInt64Type>(array, &mut col),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>();
            dates(days.iter().map(|d| d.map(i64::from)), &mut col);
        }
        DataType::Date64 => {
            let millis = array.as_primitive::<Date64Type>();
            dates(
                millis.iter().map(|m| m.map(|m| m.div_euclid(86_400_000))),
                &mut col,
            );
        }
        DataType::Null => (0..array.len()).for_each(|_| col.push(None)),
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary_opt()?;
            let values = to_text(dict.values().as_ref())?;
            let keys = dict.normalized_keys();
            for (row, key) in keys.into_iter().enumerate() {
                col.push(if dict.keys().is_null(row) {
                    None
                } else {
                    values.get(key)
                });
            }
        }
        _ => return None,
    }
    Some(col)
}

fn integers<T: ArrowPrimitiveType>(array: &dyn Array, col: &mut Column)
where
    T::Native: std::fmt::Display,
{
    let array: &PrimitiveArray<T> = array.as_primitive::<T>();
    for v in array.iter() {
        match v {
            Some(v) => {
                write!(col.text, "{v}").expect("writing to a String");
                col.end_value();
            }
            None => col.push(None),
        }
    }
}

/// Days since 1970-01-01 as `YYYY-MM-DD`.
fn dates(days: impl Iterator<Item = Option<i64>>, col: &mut Column) {
    const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;
    for d in days {
        let date = d
            .and_then(|d| i32::try_from(d + UNIX_EPOCH_DAYS_FROM_CE).ok())
            .and_then(chrono::NaiveDate::from_num_days_from_ce_opt);
        match date {
            Some(date) => {
                write!(col.text, "{}", date.format("%Y-%m-%d")).expect("writing to a String");
                col.end_value();
            }
            None => col.push(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        #[test]
        fn trim_field_is_str_trim(
            value in "[ \t\u{a0}\u{2003}\u{3000}\u{b}\u{85}\r\na-zé,'-]{0,12}",
        ) {
            prop_assert_eq!(trim_field(&value), value.trim());
        }

        /// The range a batch keeps for a trimmed value within its record.
        #[test]
        fn trimmed_range_is_where_str_trim_lies(
            before in "[a-z,]{0,4}",
            value in "[ \t\u{a0}\u{3000}a-zé,-]{0,12}",
            after in "[a-z,]{0,4}",
        ) {
            let record = format!("{before}{value}{after}");
            let range = trimmed_range(&value, before.len()..before.len() + value.len());
            prop_assert_eq!(&record[range], value.trim());
        }
    }

    /// A reader of `path` with the columns named `select` selected, in that order.
    fn open_selecting(path: &Path, options: &ReadOptions, select: &[&str]) -> RecordReader {
        let mut reader = RecordReader::open(path, options).unwrap();
        let idx: Vec<usize> = select
            .iter()
            .map(|s| reader.columns().iter().position(|c| c == s).unwrap())
            .collect();
        reader.select(&idx).unwrap();
        reader
    }

    /// The Febrl4 A fixture's `select` columns read whole in batches of
    /// `batch_rows`, and a reader of the same, to read again another way.
    fn febrl_twice(batch_rows: usize, select: &[&str]) -> (Vec<Vec<Option<String>>>, RecordReader) {
        let options = ReadOptions {
            batch_rows,
            ..ReadOptions::default()
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/febrl4_a.csv");
        let fresh = read_all(&path, &options, select);
        (fresh, open_selecting(&path, &options, select))
    }

    fn read_all(path: &Path, options: &ReadOptions, select: &[&str]) -> Vec<Vec<Option<String>>> {
        let mut reader = open_selecting(path, options, select);
        let width = select.len();
        let mut rows = Vec::new();
        let mut expected_first = 1;
        while let Some(batch) = reader.next_batch().unwrap() {
            assert_eq!(batch.first_row(), expected_first);
            expected_first += batch.len() as u64;
            for r in 0..batch.len() {
                rows.push(
                    (0..width)
                        .map(|c| batch.get(r, c).map(str::to_owned))
                        .collect(),
                );
            }
        }
        assert_eq!(reader.position().rows, rows.len() as u64);
        rows
    }

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_owned())).collect()
    }

    #[test]
    fn csv_with_bom_quotes_delimiter_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(
            &path,
            "\u{feff}id; name ;note\r\n1;\" Dupont; Jean \";x\r\n2;\"d'Hondt\"\"\";\r\n3;;\"multi\nline\"\n",
        )
        .unwrap();
        let options = ReadOptions {
            csv: CsvOptions {
                delimiter: b';',
                trim: true,
            },
            batch_rows: 2,
            ..ReadOptions::default()
        };
        let reader = RecordReader::open(&path, &options).unwrap();
        assert_eq!(reader.columns(), ["id", "name", "note"]);
        let rows = read_all(&path, &options, &["name", "id"]);
        assert_eq!(
            rows,
            vec![
                some(&["Dupont; Jean", "1"]),
                some(&["d'Hondt\"", "2"]),
                some(&["", "3"])
            ]
        );
        let exact = ReadOptions {
            csv: CsvOptions {
                delimiter: b';',
                trim: false,
            },
            ..options
        };
        assert_eq!(
            read_all(&path, &exact, &["name"])[0],
            some(&[" Dupont; Jean "])
        );
    }

    #[test]
    fn febrl_fixture_reads_5000_rows_trimmed() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/febrl4_a.csv");
        let options = ReadOptions {
            batch_rows: 1000,
            ..ReadOptions::default()
        };
        let rows = read_all(&path, &options, &["rec_id", "given_name", "date_of_birth"]);
        assert_eq!(rows.len(), 5000);
        assert!(
            rows.iter()
                .all(|r| r[0].as_deref().unwrap().starts_with("rec-"))
        );
        assert!(rows.iter().flatten().flatten().all(|v| v.trim() == v));
    }

    #[test]
    fn invalid_utf8_in_a_column_not_read_is_no_concern() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "id,note,name\n1,x\u{e9},Zo\u{eb}\n".as_bytes()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"2,bad\xff,Ren\xc3\xa9\n");
        std::fs::write(&path, &bytes).unwrap();
        let rows = read_all(&path, &ReadOptions::default(), &["id", "name"]);
        assert_eq!(
            rows,
            vec![some(&["1", "Zo\u{eb}"]), some(&["2", "Ren\u{e9}"])]
        );
    }

    #[test]
    fn named_columns_in_the_order_asked_with_none_for_absent_ones() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/febrl4_a.csv");
        let rows = read_named_columns(
            &path,
            &ReadOptions::default(),
            &["surname", "no_such_column", "rec_id", "surname"],
        )
        .unwrap();
        let plain = read_all(&path, &ReadOptions::default(), &["surname", "rec_id"]);
        assert_eq!(rows.len(), 5000);
        for (row, expected) in rows.iter().zip(&plain) {
            assert_eq!(
                row,
                &vec![
                    expected[0].clone(),
                    None,
                    expected[1].clone(),
                    expected[0].clone()
                ]
            );
        }
    }

    #[test]
    fn recycled_batches_read_like_fresh_ones() {
        let (fresh, mut reader) = febrl_twice(7, &["rec_id", "surname", "suburb"]);
        let mut recycled: Vec<Vec<Option<String>>> = Vec::new();
        while let Some(batch) = reader.next_batch().unwrap() {
            for r in 0..batch.len() {
                recycled.push((0..3).map(|c| batch.get(r, c).map(str::to_owned)).collect());
            }
            reader.recycle(batch);
        }
        assert_eq!(recycled, fresh);
        assert_eq!(fresh.len(), 5000);
    }

    #[test]
    fn sub_batches_hand_their_buffers_on_past_the_end_of_each_chunk() {
        let (fresh, mut reader) = febrl_twice(100, &["rec_id", "surname"]);
        let parser = reader.parser().clone();
        let (mut spare, mut chunks) = (None, 0);
        let mut got: Vec<Vec<Option<String>>> = Vec::new();
        while let Some(Chunk::Csv(chunk)) = reader.next_chunk(None).unwrap() {
            chunks += 1;
            let mut rows = parser.rows(&chunk);
            while let Some(batch) = parser.next_batch(&mut rows, 30, &mut spare).unwrap() {
                assert!(spare.is_none(), "the spare's buffers are in use");
                for r in 0..batch.len() {
                    got.push((0..2).map(|c| batch.get(r, c).map(str::to_owned)).collect());
                }
                spare = Some(batch);
            }
            let kept = spare.as_ref().expect("the spare outlives the chunk's end");
            assert!(kept.text.capacity() > 0);
        }
        assert_eq!(chunks, 50);
        assert_eq!(got, fresh);
    }

    /// The error of reading the first batch of a CSV file of `text`.
    fn first_error(text: impl AsRef<[u8]>) -> RecordsError {
        first_error_with(text, &ReadOptions::default())
    }

    /// A reader of `text`, written to a file that lives as long as the directory.
    fn open_text(
        text: impl AsRef<[u8]>,
        options: &ReadOptions,
    ) -> (tempfile::TempDir, RecordReader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        let reader = RecordReader::open(&path, options).unwrap();
        (dir, reader)
    }

    fn first_error_with(text: impl AsRef<[u8]>, options: &ReadOptions) -> RecordsError {
        let (_dir, mut reader) = open_text(text, options);
        reader.next_batch().unwrap_err()
    }

    /// Every row of a CSV text, read with `options`, with the line it starts on.
    fn rows_with(text: &str, options: &ReadOptions) -> Vec<(Vec<Option<String>>, Option<u64>)> {
        let (_dir, mut reader) = open_text(text, options);
        let mut rows = Vec::new();
        while let Some(batch) = reader.next_batch().unwrap() {
            for row in 0..batch.len() {
                let values = (0..reader.selected.len())
                    .map(|c| batch.get(row, c).map(str::to_owned))
                    .collect();
                rows.push((values, batch.line(row)));
            }
        }
        rows
    }

    #[test]
    fn invalid_utf8_names_row_and_column() {
        let err = first_error(b"id,name\n1,ok\n2,bad\xff\n");
        assert!(
            matches!(&err, RecordsError::InvalidUtf8 { row: 2, line: 3, column, .. } if column == "name"),
            "{err}"
        );
        assert!(!err.to_string().contains("bad"), "{err}");
        assert!(err.to_string().contains("iconv -f WINDOWS-1252"), "{err}");
    }

    #[test]
    fn likely_delimiter_of_a_one_column_header() {
        let one = |name: &str| vec![name.to_owned()];
        assert_eq!(likely_delimiter(&one("id;name;dob"), b','), Some(';'));
        assert_eq!(likely_delimiter(&one("id\tname"), b','), Some('\t'));
        assert_eq!(likely_delimiter(&one("id,name"), b';'), Some(','));
        // Read with that delimiter already, or several columns: no hint.
        assert_eq!(likely_delimiter(&one("id;name"), b';'), None);
        assert_eq!(likely_delimiter(&one("id"), b','), None);
        let two = vec!["a;b".to_owned(), "c".to_owned()];
        assert_eq!(likely_delimiter(&two, b','), None);
    }

    #[test]
    fn wrong_field_count_names_row() {
        let err = first_error("id,name\n1,a\n2,b\n3\n");
        assert!(
            matches!(
                err,
                RecordsError::FieldCount {
                    row: 3,
                    line: 4,
                    expected: 2,
                    found: 1,
                    quote_after_blank: false,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("quote"), "{err}");
    }

    #[test]
    fn a_quote_after_a_blank_opens_a_quoted_field_when_trimming() {
        let text = "id, name, note\n1, \"van dijk, jr\", x\n2,\"a\nb\" , y\n";
        let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>();
        assert_eq!(
            rows_with(text, &ReadOptions::default()),
            vec![
                (some(&["1", "van dijk, jr", "x"]), Some(2)),
                (some(&["2", "a\nb", "y"]), Some(3)),
            ]
        );
    }

    #[test]
    fn without_trimming_a_quote_after_a_blank_is_named_as_the_likely_cause() {
        let keep = ReadOptions {
            csv: CsvOptions {
                trim: false,
                ..CsvOptions::default()
            },
            ..ReadOptions::default()
        };
        let err = first_error_with("id, name, note\n1, \"van dijk, jr\", x\n", &keep);
        assert!(
            matches!(
                err,
                RecordsError::FieldCount {
                    found: 4,
                    quote_after_blank: true,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("write `,\"a, b\"`"), "{err}");
        // Quoted right after the delimiter: one field, its blanks kept.
        let text = "id, name, note\n1,\"van dijk, jr\", x\n";
        let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>();
        assert_eq!(
            rows_with(text, &keep),
            vec![(some(&["1", "van dijk, jr", " x"]), Some(2))]
        );
    }

    #[test]
    fn unknown_extension_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            RecordReader::open(&dir.path().join("x.xlsx"), &ReadOptions::default()).unwrap_err();
        assert!(matches!(err, RecordsError::UnknownFormat { .. }), "{err}");
        let err =
            RecordReader::open(&dir.path().join("x.csv"), &ReadOptions::default()).unwrap_err();
        assert!(matches!(err, RecordsError::Open { .. }), "{err}");
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "").unwrap();
        let err = RecordReader::open(&empty, &ReadOptions::default()).unwrap_err();
        assert!(matches!(err, RecordsError::NoHeader { .. }), "{err}");
    }

    #[test]
    fn parquet_strings_integers_dates_and_nulls() {
        use arrow_array::{Date32Array, DictionaryArray, Float64Array, Int64Array, StringArray};
        use arrow_schema::{Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.parquet");
        let dict: DictionaryArray<Int32Type> =
            vec![Some("x"), None, Some("y")].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("postcode", DataType::Int64, true),
            Field::new("dob", DataType::Date32, true),
            Field::new("weight", DataType::Float64, true),
            Field::new("cat", dict.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(Int64Array::from(vec![Some(2000), None, Some(-7)])),
                Arc::new(Date32Array::from(vec![Some(0), Some(-1), None])),
                Arc::new(Float64Array::from(vec![1.5, 2.0, 3.0])),
                Arc::new(dict),
            ],
        )
        .unwrap();
        crate::io::table::write_batch(&path, &batch, &[]).unwrap();
        let options = ReadOptions {
            batch_rows: 2,
            ..ReadOptions::default()
        };
        let rows = read_all(&path, &options, &["dob", "id", "postcode", "cat"]);
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            rows,
            vec![
                vec![s("1970-01-01"), s("a"), s("2000"), s("x")],
                vec![s("1969-12-31"), s("b"), None, None],
                vec![None, s("c"), s("-7"), s("y")],
            ]
        );
        let mut reader = RecordReader::open(&path, &options).unwrap();
        let err = reader.select(&[3]).unwrap_err();
        assert!(
            matches!(&err, RecordsError::UnsupportedType { column, .. } if column == "weight"),
            "{err}"
        );
    }
}
