//! CSV records in two steps, so that the costly one can run on any thread:
//! [`RecordSplitter`] reads the input and cuts it into chunks of whole
//! records, only finding where each record ends; [`ChunkRecords`] then splits
//! a chunk's records into fields, and the chunks of a file can be split on
//! as many threads as there are (the reading thread did a quarter of an
//! encode run's work while it also split fields).
//!
//! A site's CSV is mostly plain lines: no quote, one record per line. For such
//! a line the fields are the bytes between delimiters, found in one pass with
//! the line's end ([`split_line`]), and stay in the chunk; parsing them with
//! `csv_core` copied every byte through its state machine and cost a third of
//! an encode run. A line with a quote anywhere goes to `csv_core`, from its
//! first byte, so quoted fields, doubled quotes and line breaks inside quotes
//! mean exactly what they mean to the `csv` crate; the splitter follows the
//! same rules to find where such a record ends. The records are the `csv`
//! crate's, field for field (a property test compares the two on random
//! input, cut into random chunks):
//! `\r`, `\n` and `\r\n` end a record, empty lines are skipped, a UTF-8
//! byte-order mark at the start is dropped, and field counts are left to the
//! caller. A quote or a line break cannot be the delimiter
//! ([`is_valid_delimiter`]).
//!
//! A [`Dialect`] may also skip the blanks at the start of every field
//! (Python's `skipinitialspace`): Febrl-style files write `a, "b, c"`, where
//! RFC 4180 reads the quote as a plain character and finds three fields.

use std::io::{self, Read};

use csv_core::ReadRecordResult;

/// Bytes read from the input at a time (more for a longer record). Well
/// below a chunk's size: what was read past a chunk's end is copied to the
/// start of the next, and with 1 MiB reads that copy was as large as the
/// input (a third of the reader thread's CPU).
const READ_BYTES: usize = 64 << 10;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether `delimiter` can separate fields: a quote or a line break cannot.
pub(crate) fn is_valid_delimiter(delimiter: u8) -> bool {
    !matches!(delimiter, b'"' | b'\r' | b'\n')
}

/// How a CSV file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// The field separator ([valid](is_valid_delimiter)).
    pub delimiter: u8,
    /// Drop the spaces and tabs (other than the delimiter) at the start of
    /// every field, outside quoted text, so that a quote after them opens a
    /// quoted field: `a, "b, c"` is `a` and `b, c`. Off, a field is every
    /// byte between delimiters, and a quote opens a quoted field only as its
    /// first byte, as in RFC 4180 and the `csv` crate.
    pub skip_initial_blanks: bool,
}

impl Dialect {
    /// Whether `b` is a blank that [`Dialect::skip_initial_blanks`] drops.
    fn is_blank(self, b: u8) -> bool {
        (b == b' ' || b == b'\t') && b != self.delimiter
    }

    /// Where the field from `data[i]` has its first byte that is not such a
    /// blank (`i` itself unless blanks are skipped).
    fn field_start(self, data: &[u8], mut i: usize) -> usize {
        if self.skip_initial_blanks {
            while data.get(i).is_some_and(|&b| self.is_blank(b)) {
                i += 1;
            }
        }
        i
    }
}

/// Whole records cut from a CSV input, as they are in the file.
#[derive(Debug, Default)]
pub(crate) struct RawChunk {
    /// The records' bytes, each with its line break (the last one may lack it).
    pub bytes: Vec<u8>,
    /// How many records (empty lines are none).
    pub records: usize,
    /// The line of the file (counting `\n`, from 1) of the chunk's first byte.
    pub first_line: u64,
}

/// Cuts a CSV input into [`RawChunk`]s.
#[derive(Debug)]
pub(crate) struct RecordSplitter<R> {
    input: R,
    /// Read and not yet handed out; starts where a record (or an empty line) does.
    pending: Vec<u8>,
    eof: bool,
    read_bytes: usize,
    dialect: Dialect,
    /// The line of `pending[0]`.
    line: u64,
    /// Bytes of the input before `pending[0]`.
    consumed: u64,
    bom_checked: bool,
}

/// What starts at a position of the input.
enum Step {
    /// A line break outside any record: an empty line, skipped.
    LineBreak,
    /// A record, which ends (its line break included) where it says.
    Record(usize),
    /// Cannot tell without more input.
    Incomplete,
}

impl<R: Read> RecordSplitter<R> {
    /// # Panics
    /// When the delimiter is not [valid](is_valid_delimiter).
    pub fn new(input: R, dialect: Dialect) -> RecordSplitter<R> {
        RecordSplitter::with_read_bytes(input, dialect, READ_BYTES)
    }

    /// Reading `read_bytes` at a time (few in tests, to cut records across reads).
    fn with_read_bytes(input: R, dialect: Dialect, read_bytes: usize) -> RecordSplitter<R> {
        assert!(
            is_valid_delimiter(dialect.delimiter),
            "invalid delimiter {}",
            dialect.delimiter
        );
        RecordSplitter {
            input,
            pending: Vec::new(),
            eof: false,
            read_bytes: read_bytes.max(1),
            dialect,
            line: 1,
            consumed: 0,
            bom_checked: false,
        }
    }

    /// Bytes of the input handed out so far.
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// The next `max_records` records, fewer when they reach `max_bytes` or
    /// the input ends; `None` at the end of the input. `spare`, a chunk's
    /// buffer that is no longer needed, holds what is read next.
    ///
    /// # Errors
    /// When reading the input fails.
    pub fn next_chunk(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        spare: Option<Vec<u8>>,
    ) -> io::Result<Option<RawChunk>> {
        if !self.bom_checked {
            while self.pending.len() < BOM.len() && !self.eof {
                self.fill(0)?;
            }
            if self.pending.starts_with(BOM) {
                self.pending.drain(..BOM.len());
                self.consumed += BOM.len() as u64;
            }
            self.bom_checked = true;
        }
        let (mut pos, mut records) = (0, 0);
        while records < max_records.max(1) && (records == 0 || pos < max_bytes) {
            match next_step(&self.pending, pos, self.dialect) {
                Step::LineBreak => pos += 1,
                Step::Record(end) => {
                    pos = end;
                    records += 1;
                }
                Step::Incomplete if !self.eof => self.fill(pos)?,
                Step::Incomplete if pos == self.pending.len() => break,
                // At the end of the input the rest is one last record.
                Step::Incomplete => {
                    pos = self.pending.len();
                    records += 1;
                }
            }
        }
        let mut rest = spare.unwrap_or_default();
        rest.clear();
        rest.extend_from_slice(&self.pending[pos..]);
        let mut bytes = std::mem::replace(&mut self.pending, rest);
        bytes.truncate(pos);
        let first_line = self.line;
        self.line += memchr::memchr_iter(b'\n', &bytes).count() as u64;
        self.consumed += pos as u64;
        Ok((records > 0).then_some(RawChunk {
            bytes,
            records,
            first_line,
        }))
    }

    /// Appends more input to `pending`: at least [`READ_BYTES`], and as much
    /// as the unfinished record from `record_start` already has, so that a
    /// long record is scanned a logarithmic number of times. Sets `eof` at the end.
    fn fill(&mut self, record_start: usize) -> io::Result<()> {
        let want = self.read_bytes.max(self.pending.len() - record_start);
        self.pending.reserve(want);
        // `read_to_end` reads into the spare capacity without zeroing it first.
        let read = (&mut self.input)
            .take(want as u64)
            .read_to_end(&mut self.pending)?;
        if read < want {
            self.eof = true;
        }
        Ok(())
    }
}

/// What starts at `data[pos]`.
fn next_step(data: &[u8], pos: usize, dialect: Dialect) -> Step {
    let rest = &data[pos..];
    match memchr::memchr3(b'\n', b'\r', b'"', rest) {
        Some(0) if rest[0] != b'"' => Step::LineBreak,
        Some(i) if rest[i] != b'"' => Step::Record(pos + i + 1),
        Some(_) => quoted_record_end(data, pos, dialect)
            .map_or(Step::Incomplete, |(end, _)| Step::Record(end)),
        None => Step::Incomplete,
    }
}

/// How a line that [`split_line`] scanned ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnd {
    /// At this offset: a line break, or the end of the data.
    At(usize),
    /// There is a quote before the line break: the line is not plain.
    Quote,
}

/// Scans `line` up to its first `\n`, `\r` or `"`, calling `on_delimiter`
/// with the offset of each `delimiter` before it, in order.
///
/// Sixty-four bytes at a time: a mask of each byte sought ([`byte_mask`]),
/// then its set bits. One pass replaces a search for the line's end and one
/// for every delimiter, each of which started afresh on a few bytes.
fn split_line(line: &[u8], delimiter: u8, mut on_delimiter: impl FnMut(usize)) -> LineEnd {
    const BLOCK: usize = 64;
    let mut base = 0;
    loop {
        let rest = &line[base..];
        // The end of the data reads as a line break.
        let mut padded = [b'\n'; BLOCK];
        let block: &[u8; BLOCK] = match rest.first_chunk() {
            Some(block) => block,
            None => {
                padded[..rest.len()].copy_from_slice(rest);
                &padded
            }
        };
        let stops = byte_mask(block, b'\n') | byte_mask(block, b'\r') | byte_mask(block, b'"');
        let mut delimiters = byte_mask(block, delimiter);
        if stops != 0 {
            // Only the delimiters before the first stop.
            delimiters &= (1 << stops.trailing_zeros()) - 1;
        }
        while delimiters != 0 {
            on_delimiter(base + delimiters.trailing_zeros() as usize);
            delimiters &= delimiters - 1;
        }
        if stops != 0 {
            let at = base + stops.trailing_zeros() as usize;
            return match line.get(at) {
                Some(b'"') => LineEnd::Quote,
                _ => LineEnd::At(at),
            };
        }
        base += BLOCK;
    }
}

/// Bit `i` set where `block[i] == byte`: the plain reference.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn byte_mask_scalar(block: &[u8; 64], byte: u8) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &b)| mask | u64::from(b == byte) << i)
}

/// Bit `i` set where `block[i] == byte`, with SSE2 (in every x86-64
/// processor) sixteen bytes at a time: the compiler did not vectorise the
/// plain version's bit gathering.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn byte_mask(block: &[u8; 64], byte: u8) -> u64 {
    #[target_feature(enable = "sse2")]
    fn sse2(block: &[u8; 64], byte: u8) -> u64 {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8};
        let needle = _mm_set1_epi8(byte as i8);
        let word = |at: usize| i64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"));
        (0..4).fold(0, |mask, lane| {
            // The compiler makes one unaligned load of the two halves.
            let bytes = _mm_set_epi64x(word(lane * 16 + 8), word(lane * 16));
            let hits = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, needle)) as u16;
            mask | u64::from(hits) << (lane * 16)
        })
    }
    // SAFETY: SSE2 is part of the x86-64 baseline: every processor this
    // code is compiled for has it.
    unsafe { sse2(block, byte) }
}

#[cfg(not(target_arch = "x86_64"))]
use byte_mask_scalar as byte_mask;

/// Where the record from `data[start]` ends, after its line break, reading
/// quotes as `csv_core` does: a quote that begins a field (after the blanks
/// that `dialect` skips) opens a quoted field, in which a doubled quote is a
/// quote and a single one closes it; anywhere else a quote is a plain
/// character. Also whether any such blanks were skipped. `None` when `data`
/// ends first.
fn quoted_record_end(data: &[u8], start: usize, dialect: Dialect) -> Option<(usize, bool)> {
    let delimiter = dialect.delimiter;
    let mut i = start;
    let mut skipped = false;
    // At the top of the loop, `data[i]` starts a field.
    loop {
        let field_start = dialect.field_start(data, i);
        skipped |= field_start != i;
        i = field_start;
        if *data.get(i)? == b'"' {
            let mut j = i + 1;
            i = loop {
                let quote = j + memchr::memchr(b'"', &data[j..])?;
                match *data.get(quote + 1)? {
                    b'"' => j = quote + 2,
                    _ => break quote + 1,
                }
            };
        }
        let stop = i + memchr::memchr3(delimiter, b'\n', b'\r', &data[i..])?;
        if data[stop] != delimiter {
            return Some((stop + 1, skipped));
        }
        i = stop + 1;
    }
}

/// Appends `record` (one whole record, from its first byte) to `out`
/// without the blanks at the start of its fields, outside quoted text.
fn drop_initial_blanks(record: &[u8], dialect: Dialect, out: &mut Vec<u8>) {
    /// Where a byte is in the CSV grammar.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum At {
        /// At the start of a field: blanks here are dropped.
        FieldStart,
        Unquoted,
        Quoted,
        /// A quote inside a quoted field: its end, or the first half of `""`.
        QuoteInQuoted,
    }
    let mut at = At::FieldStart;
    for &b in record {
        let ends_field = b == dialect.delimiter || b == b'\n' || b == b'\r';
        at = match at {
            At::FieldStart if dialect.is_blank(b) => continue,
            At::FieldStart if b == b'"' => At::Quoted,
            At::Quoted if b == b'"' => At::QuoteInQuoted,
            At::Quoted => At::Quoted,
            At::QuoteInQuoted if b == b'"' => At::Quoted,
            _ if ends_field => At::FieldStart,
            _ => At::Unquoted,
        };
        out.push(b);
    }
}

/// The records of a chunk, one at a time, split into fields.
pub(crate) struct ChunkRecords<'a> {
    data: &'a [u8],
    /// The unread bytes are `data[start..]`.
    start: usize,
    /// The line of `data[start]`.
    line: u64,
    dialect: Dialect,
    /// The parser of quoted records, made for the first one: most chunks
    /// have none, and building it for every chunk was 0.5% of an encode run.
    core: Option<csv_core::Reader>,
    /// Whether `core` has been given input: on its first call it drops a
    /// byte-order mark at the start of its input, meant for the file's start
    /// (dropped by the splitter already), so that call gets one byte only.
    core_started: bool,
    /// The current record: `bytes` holds its fields, at `fields` ranges.
    record: Current,
    unescaped: Vec<u8>,
    core_ends: Vec<usize>,
    fields: Vec<(usize, usize)>,
    /// A quoted record without the blanks its dialect skips, for `csv_core`.
    blank_free: Vec<u8>,
}

impl std::fmt::Debug for ChunkRecords<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkRecords")
            .field("start", &self.start)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// Where the current record's bytes lie.
#[derive(Debug, Clone, Copy)]
enum Current {
    None,
    /// A plain line, `data[start..end]`.
    Line(usize, usize),
    /// Unescaped by `csv_core` into `unescaped[..len]`.
    Unescaped(usize),
}

/// One record: its fields and the line it starts on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    bytes: &'a [u8],
    fields: &'a [(usize, usize)],
    line: u64,
}

impl<'a> Record<'a> {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Every field's bytes, with whatever lies between fields (delimiters of a
    /// plain line): one UTF-8 check covers all fields.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Where field `i` lies in [`Record::bytes`].
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let (start, end) = self.fields[i];
        start..end
    }

    /// Field `i`.
    pub fn field(&self, i: usize) -> &'a [u8] {
        &self.bytes[self.range(i)]
    }

    /// The line of the file the record starts on (from 1).
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl<'a> ChunkRecords<'a> {
    /// The records of `chunk`, whose first byte is on line `first_line`.
    pub fn new(chunk: &'a [u8], first_line: u64, dialect: Dialect) -> ChunkRecords<'a> {
        ChunkRecords {
            data: chunk,
            start: 0,
            line: first_line,
            dialect,
            core: None,
            core_started: false,
            record: Current::None,
            unescaped: vec![0; 256],
            core_ends: vec![0; 64],
            fields: Vec::new(),
            blank_free: Vec::new(),
        }
    }

    /// The next record; `None` after the last.
    pub fn read(&mut self) -> Option<Record<'_>> {
        if let Current::Line(_, end) = self.record {
            self.start = end;
        }
        self.record = Current::None;
        // An empty line, or the line break of the record before.
        while let Some(&b) = self.data.get(self.start)
            && (b == b'\n' || b == b'\r')
        {
            self.line += u64::from(b == b'\n');
            self.start += 1;
        }
        if self.start == self.data.len() {
            return None;
        }
        let record_line = self.line;
        let (start, dialect) = (self.start, self.dialect);
        let line = &self.data[start..];
        let fields = &mut self.fields;
        fields.clear();
        let mut field_start = 0;
        let mut push_field = |end: usize| {
            // Blanks are never the delimiter: the start is at most `end`.
            fields.push((dialect.field_start(line, field_start), end));
            field_start = end + 1;
        };
        match split_line(line, dialect.delimiter, &mut push_field) {
            LineEnd::At(len) => {
                push_field(len);
                self.record = Current::Line(start, start + len);
            }
            LineEnd::Quote => {
                if !self.read_with_core() {
                    return None;
                }
            }
        }
        let bytes = match self.record {
            Current::Line(start, end) => &self.data[start..end],
            Current::Unescaped(len) => &self.unescaped[..len],
            Current::None => unreachable!("set above"),
        };
        Some(Record {
            bytes,
            fields: &self.fields,
            line: record_line,
        })
    }

    /// Reads one record with `csv_core` from `data[start]`, which after a plain
    /// line is where `csv_core` would start its next record too. False at the end.
    ///
    /// `csv_core` knows no blanks to skip: for a dialect that skips them, a
    /// record that has some (found as the splitter found it) goes to
    /// `csv_core` without them.
    fn read_with_core(&mut self) -> bool {
        let mut skip = false;
        if self.dialect.skip_initial_blanks {
            let (end, skipped) = quoted_record_end(self.data, self.start, self.dialect)
                .unwrap_or((self.data.len(), true));
            if skipped {
                let record = &self.data[self.start..end];
                self.blank_free.clear();
                drop_initial_blanks(record, self.dialect, &mut self.blank_free);
                self.line += memchr::memchr_iter(b'\n', record).count() as u64;
                self.start = end;
                skip = true;
            }
        }
        let (mut out, mut ends, mut fed) = (0, 0, 0);
        loop {
            // Once the input is read, empty input tells `csv_core` that it has ended.
            let mut input = if skip {
                &self.blank_free[fed..]
            } else {
                &self.data[self.start..]
            };
            if !self.core_started && !input.is_empty() {
                input = &input[..1];
                self.core_started = true;
            }
            let delimiter = self.dialect.delimiter;
            let core = self
                .core
                .get_or_insert_with(|| csv_core::ReaderBuilder::new().delimiter(delimiter).build());
            let (result, read, written, ended) = core.read_record(
                input,
                &mut self.unescaped[out..],
                &mut self.core_ends[ends..],
            );
            if skip {
                fed += read;
            } else {
                self.line += memchr::memchr_iter(b'\n', &input[..read]).count() as u64;
                self.start += read;
            }
            out += written;
            ends += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    self.unescaped.resize(2 * self.unescaped.len(), 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    self.core_ends.resize(2 * self.core_ends.len(), 0);
                }
                ReadRecordResult::Record => {
                    self.fields.clear();
                    let mut field_start = 0;
                    for &end in &self.core_ends[..ends] {
                        self.fields.push((field_start, end));
                        field_start = end;
                    }
                    self.record = Current::Unescaped(out);
                    return true;
                }
                ReadRecordResult::End => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Records = Vec<(Vec<Vec<u8>>, u64)>;

    fn rfc(delimiter: u8) -> Dialect {
        Dialect {
            delimiter,
            skip_initial_blanks: false,
        }
    }

    fn skipping(delimiter: u8) -> Dialect {
        Dialect {
            delimiter,
            skip_initial_blanks: true,
        }
    }

    /// Every record as its fields and line, read `read_bytes` at a time in
    /// chunks of at most `max_records` records (or about `max_bytes`).
    fn ours(
        text: &[u8],
        dialect: Dialect,
        read_bytes: usize,
        max_records: usize,
        max_bytes: usize,
    ) -> Records {
        let mut splitter = RecordSplitter::with_read_bytes(text, dialect, read_bytes);
        let mut records = Vec::new();
        let mut spare = None;
        while let Some(chunk) = splitter
            .next_chunk(max_records, max_bytes, spare.take())
            .unwrap()
        {
            assert!(chunk.records >= 1 && chunk.records <= max_records.max(1));
            let mut reader = ChunkRecords::new(&chunk.bytes, chunk.first_line, dialect);
            let mut count = 0;
            while let Some(record) = reader.read() {
                let fields = (0..record.len())
                    .map(|i| record.field(i).to_vec())
                    .collect();
                records.push((fields, record.line()));
                count += 1;
            }
            assert_eq!(count, chunk.records, "records of chunk {:?}", chunk.bytes);
            spare = Some(chunk.bytes);
        }
        assert_eq!(splitter.position(), text.len() as u64);
        records
    }

    /// All records in one chunk.
    fn whole(text: &[u8], dialect: Dialect) -> Records {
        ours(text, dialect, 1 << 20, usize::MAX, usize::MAX)
    }

    /// The `csv` crate's records, configured as a site's input is read; for
    /// a dialect that skips blanks, of the text without them (see
    /// [`without_initial_blanks`]).
    fn reference(text: &[u8], dialect: Dialect) -> Vec<Vec<Vec<u8>>> {
        let text = if dialect.skip_initial_blanks {
            without_initial_blanks(text, dialect.delimiter)
        } else {
            text.to_vec()
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_slice());
        reader
            .byte_records()
            .map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect())
            .collect()
    }

    fn fields_only(records: Records) -> Vec<Vec<Vec<u8>>> {
        records.into_iter().map(|(fields, _)| fields).collect()
    }

    /// `text` (a whole file) without the spaces and tabs at the start of its
    /// fields, outside quoted text, written independently of
    /// [`drop_initial_blanks`] and of record ends: for the `csv` crate to
    /// read what a dialect that skips blanks reads. It starts with a BOM for
    /// the `csv` crate to drop, in place of the file's own (a BOM that only
    /// blanks come before is a field's). A line of blanks only is a record
    /// of one empty field (as Python reads it), where the `csv` crate would
    /// skip an empty line: it becomes `""`.
    fn without_initial_blanks(text: &[u8], delimiter: u8) -> Vec<u8> {
        let blank = |b: u8| (b == b' ' || b == b'\t') && b != delimiter;
        let bom = if text.starts_with(BOM) { BOM.len() } else { 0 };
        let mut out = BOM.to_vec();
        let (mut field_start, mut record_start) = (true, true);
        let (mut quoted, mut quote_in_quoted) = (false, false);
        let mut i = bom;
        while i < text.len() {
            let b = text[i];
            if quoted {
                if quote_in_quoted && b != b'"' {
                    // The quoted text has ended: read `b` again outside it.
                    quoted = false;
                    quote_in_quoted = false;
                    continue;
                }
                quote_in_quoted = b == b'"' && !quote_in_quoted;
                out.push(b);
                i += 1;
                continue;
            }
            if field_start && blank(b) {
                let run = text[i..].iter().take_while(|&&c| blank(c)).count();
                let next = text.get(i + run);
                if record_start && matches!(next, None | Some(b'\n' | b'\r')) {
                    out.extend_from_slice(b"\"\"");
                }
                i += run;
                continue;
            }
            if field_start && b == b'"' {
                quoted = true;
            }
            let line_break = b == b'\n' || b == b'\r';
            field_start = line_break || b == delimiter;
            record_start = line_break;
            out.push(b);
            i += 1;
        }
        out
    }

    /// `text` has the `expected` records (fields and lines), read whole, a
    /// few bytes and records at a time, and by the `csv` crate.
    fn assert_records(text: &[u8], dialect: Dialect, expected: Vec<(Vec<&[u8]>, u64)>) {
        let expected: Records = expected
            .into_iter()
            .map(|(f, line)| (f.into_iter().map(<[u8]>::to_vec).collect(), line))
            .collect();
        assert_eq!(whole(text, dialect), expected);
        for (read_bytes, max_records) in [(4, 1), (1, 2), (7, 3)] {
            assert_eq!(
                ours(text, dialect, read_bytes, max_records, 1 << 20),
                expected
            );
        }
        assert_eq!(fields_only(expected), reference(text, dialect));
    }

    #[test]
    fn skipped_blanks_let_a_quote_open_a_quoted_field() {
        let text = b"id, name, note\n1, \"van Dam, Jan\" , x\n 2,\t\"a\"\"b\"\r\n   \n3, \"two\n lines\",d'Hondt \"x\"";
        let expected: Vec<(Vec<&[u8]>, u64)> = vec![
            (vec![b"id", b"name", b"note"], 1),
            // Text after the closing quote is kept, as `csv_core` keeps it.
            (vec![b"1", b"van Dam, Jan ", b"x"], 2),
            (vec![b"2", b"a\"b"], 3),
            (vec![b""], 4),
            (vec![b"3", b"two\n lines", b"d'Hondt \"x\""], 5),
        ];
        assert_records(text, skipping(b','), expected);
        // A tab delimiter is not a blank; spaces after it are.
        assert_eq!(
            fields_only(whole(b"a\t \"b\tc\"\t\td", skipping(b'\t'))),
            vec![vec![
                b"a".to_vec(),
                b"b\tc".to_vec(),
                Vec::new(),
                b"d".to_vec()
            ]]
        );
        // Without skipping, RFC 4180: the quote after a blank is a character.
        assert_eq!(
            fields_only(whole(b"1, \"a, b\"", rfc(b','))),
            vec![vec![b"1".to_vec(), b" \"a".to_vec(), b" b\"".to_vec()]]
        );
    }

    #[test]
    fn plain_and_quoted_records_with_their_lines() {
        let text = b"\xEF\xBB\xBFid, name\r\n1, \"van Dam, Jan\"\n\n2,\"two\nlines\"\n3,\"say \"\"hi\"\"\",x\r4,d'Hondt";
        let expected: Vec<(Vec<&[u8]>, u64)> = vec![
            (vec![b"id", b" name"], 1),
            (vec![b"1", b" \"van Dam", b" Jan\""], 2),
            (vec![b"2", b"two\nlines"], 4),
            (vec![b"3", b"say \"hi\"", b"x"], 6),
            (vec![b"4", b"d'Hondt"], 6),
        ];
        assert_records(text, rfc(b','), expected);
    }

    #[test]
    fn chunks_end_at_the_record_or_byte_limit() {
        let text = b"a,b\nc,d\n\ne,f\n\"g\nh\",i\nj,k";
        let mut splitter = RecordSplitter::new(&text[..], rfc(b','));
        let mut chunks = Vec::new();
        while let Some(chunk) = splitter.next_chunk(2, 1 << 20, None).unwrap() {
            chunks.push((chunk.bytes, chunk.records, chunk.first_line));
        }
        let expected: Vec<(&[u8], usize, u64)> = vec![
            (b"a,b\nc,d\n", 2, 1),
            (b"\ne,f\n\"g\nh\",i\n", 2, 3),
            (b"j,k", 1, 7),
        ];
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(b, r, l)| (b.to_vec(), r, l))
            .collect();
        assert_eq!(chunks, expected);
        // A byte limit ends a chunk after the record that reaches it.
        let mut splitter = RecordSplitter::new(&text[..], rfc(b','));
        let first = splitter.next_chunk(100, 5, None).unwrap().unwrap();
        assert_eq!(
            (first.bytes.as_slice(), first.records),
            (&b"a,b\nc,d\n"[..], 2)
        );
    }

    #[test]
    fn empty_input_and_only_line_breaks_have_no_records() {
        for text in [&b""[..], b"\n\r\n\r", b"\xEF\xBB\xBF"] {
            for dialect in [rfc(b','), skipping(b',')] {
                assert!(whole(text, dialect).is_empty(), "{text:?}");
                assert!(ours(text, dialect, 1, 1, 1).is_empty(), "{text:?}");
                assert!(reference(text, dialect).is_empty());
            }
        }
    }

    #[test]
    fn quotes_and_line_breaks_are_not_delimiters() {
        for d in [b'"', b'\r', b'\n'] {
            assert!(!is_valid_delimiter(d));
        }
        for d in [b',', b';', b'\t', b'|', b' '] {
            assert!(is_valid_delimiter(d));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The vector masks against the plain loop.
        #[test]
        fn byte_mask_is_the_plain_one(
            block in prop::collection::vec(
                prop::sample::select(vec![b'a', b',', b';', b'\n', b'\r', b'"', 0, 0x80, 0xFF]),
                64,
            ),
            byte in prop::sample::select(vec![b',', b';', b'\n', b'\r', b'"', 0, 0x80, 0xFF]),
        ) {
            let block: &[u8; 64] = block.as_slice().try_into().unwrap();
            prop_assert_eq!(byte_mask(block, byte), byte_mask_scalar(block, byte));
        }

        /// `split_line` against `memchr`: the delimiters before the first
        /// line break or quote, and where and how the line ends.
        #[test]
        fn split_line_finds_what_memchr_finds(
            line in prop::collection::vec(
                prop::sample::select(vec![b'a', b',', b'\t', b'\n', b'\r', b'"', 0xC3]),
                0..200,
            ),
            delimiter in prop::sample::select(vec![b',', b'\t', 0]),
        ) {
            let stop = memchr::memchr3(b'\n', b'\r', b'"', &line);
            let end = stop.unwrap_or(line.len());
            let expected_delimiters: Vec<usize> = memchr::memchr_iter(delimiter, &line[..end]).collect();
            let expected_end = match stop {
                Some(i) if line[i] == b'"' => LineEnd::Quote,
                _ => LineEnd::At(end),
            };
            let mut delimiters = Vec::new();
            let line_end = split_line(&line, delimiter, |d| delimiters.push(d));
            prop_assert_eq!(line_end, expected_end);
            prop_assert_eq!(delimiters, expected_delimiters);
        }

        /// Random text of delimiters, quotes, line breaks, spaces, a BOM and
        /// multi-byte letters: the same records as the `csv` crate's, on the
        /// same lines, whatever the reads and chunks; skipping blanks or not.
        #[test]
        fn same_records_as_the_csv_crate(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "a", "bc", ",", ";", "\t", "\"", "\"\"", "\n", "\r", "\r\n", " ", "é", "\u{FEFF}",
                    // Long enough for lines of more than one 64-byte block.
                    "defghijklmnopqrstuvwxyz",
                ]),
                0..100,
            ),
            delimiter in prop::sample::select(vec![b',', b';', b'\t']),
            skip_initial_blanks in any::<bool>(),
            read_bytes in 1usize..40,
            max_records in 1usize..5,
            max_bytes in 1usize..30,
        ) {
            let text = pieces.concat();
            let dialect = Dialect { delimiter, skip_initial_blanks };
            let all = whole(text.as_bytes(), dialect);
            for (fields, line) in &all {
                prop_assert!(*line >= 1);
                prop_assert!(!fields.is_empty());
            }
            let chunked = ours(text.as_bytes(), dialect, read_bytes, max_records, max_bytes);
            prop_assert_eq!(&chunked, &all);
            prop_assert_eq!(fields_only(all), reference(text.as_bytes(), dialect));
        }
    }
}
