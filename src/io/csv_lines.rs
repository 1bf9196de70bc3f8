//! CSV records, parsed line by line with SIMD searches where no field is
//! quoted, and by `csv_core` (the parser of the `csv` crate) where one is.
//!
//! A site's CSV is mostly plain lines: no quote, one record per line. For such
//! a line the fields are the bytes between delimiters, found with `memchr`,
//! and stay in the read buffer; parsing them with `csv_core` copied every
//! byte through its state machine and cost a third of an encode run. A line
//! with a quote anywhere goes to `csv_core`, from its first byte, so quoted
//! fields, doubled quotes and line breaks inside quotes mean exactly what they
//! mean to the `csv` crate. The records are the `csv` crate's, field for
//! field (a property test compares the two on random input): `\r`, `\n` and
//! `\r\n` end a record, empty lines are skipped, a UTF-8 byte-order mark at
//! the start is dropped, and field counts are left to the caller.

use std::io::{self, Read};

use csv_core::ReadRecordResult;

/// Bytes read from the input at a time (the buffer grows for a longer line).
const BUFFER_BYTES: usize = 256 * 1024;

/// Reads CSV records from `R`.
pub(crate) struct CsvLines<R> {
    input: R,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes of the input before `buf[0]`.
    before_buf: u64,
    /// The line (counting `\n`, from 1) of `buf[start]`.
    line: u64,
    delimiter: u8,
    /// Whether plain lines may be split here (the delimiter is neither a quote
    /// nor a line break, for which `csv_core` reads every record).
    plain_lines: bool,
    core: csv_core::Reader,
    /// Whether `core` has been given input: on its first call it drops a
    /// byte-order mark at the start of its input, meant for the file's start
    /// (dropped here already), so that call gets one byte only.
    core_started: bool,
    /// The current record: `bytes` holds its fields, at `fields` ranges.
    record: Current,
    unescaped: Vec<u8>,
    core_ends: Vec<usize>,
    fields: Vec<(usize, usize)>,
}

/// Where the current record's bytes lie.
#[derive(Debug, Clone, Copy)]
enum Current {
    None,
    /// A plain line, `buf[start..end]`.
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

impl<R: Read> CsvLines<R> {
    pub fn new(input: R, delimiter: u8) -> CsvLines<R> {
        CsvLines::with_buffer(input, delimiter, BUFFER_BYTES)
    }

    /// With a read buffer of `bytes` (small ones in tests, to read across refills).
    fn with_buffer(input: R, delimiter: u8, bytes: usize) -> CsvLines<R> {
        CsvLines {
            input,
            buf: vec![0; bytes.max(1)],
            start: 0,
            end: 0,
            eof: false,
            before_buf: 0,
            line: 1,
            delimiter,
            plain_lines: !matches!(delimiter, b'"' | b'\r' | b'\n'),
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            core_started: false,
            record: Current::None,
            unescaped: vec![0; 256],
            core_ends: vec![0; 64],
            fields: Vec::new(),
        }
    }

    /// Bytes of the input consumed so far.
    pub fn position(&self) -> u64 {
        self.before_buf + self.start as u64
    }

    /// The next record; `None` at the end of the input.
    ///
    /// # Errors
    /// When reading the input fails.
    pub fn read(&mut self) -> io::Result<Option<Record<'_>>> {
        if self.before_buf == 0 && self.end == 0 && !self.eof {
            self.fill()?;
            while self.end < 3 && !self.eof {
                self.fill()?;
            }
            if self.buf[..self.end].starts_with(b"\xEF\xBB\xBF") {
                self.start = 3;
            }
        }
        if let Current::Line(_, end) = self.record {
            self.start = end;
        }
        self.record = Current::None;
        let line = loop {
            let unread = &self.buf[self.start..self.end];
            if !self.plain_lines {
                break None;
            }
            match memchr::memchr3(b'\n', b'\r', b'"', unread) {
                Some(0) if unread[0] != b'"' => {
                    // An empty line.
                    self.line += u64::from(unread[0] == b'\n');
                    self.start += 1;
                }
                Some(i) if unread[i] != b'"' => break Some(i),
                Some(_) => break None,
                None if !self.eof => self.fill()?,
                None if unread.is_empty() => return Ok(None),
                None => break Some(unread.len()),
            }
        };
        let record_line = self.line;
        match line {
            Some(len) => {
                let (start, end) = (self.start, self.start + len);
                self.fields.clear();
                let mut field_start = 0;
                for d in memchr::memchr_iter(self.delimiter, &self.buf[start..end]) {
                    self.fields.push((field_start, d));
                    field_start = d + 1;
                }
                self.fields.push((field_start, len));
                self.record = Current::Line(start, end);
            }
            None => {
                if !self.read_with_core()? {
                    return Ok(None);
                }
            }
        }
        let bytes = match self.record {
            Current::Line(start, end) => &self.buf[start..end],
            Current::Unescaped(len) => &self.unescaped[..len],
            Current::None => unreachable!("set above"),
        };
        Ok(Some(Record {
            bytes,
            fields: &self.fields,
            line: record_line,
        }))
    }

    /// Reads one record with `csv_core` from `buf[start]`, which after a plain
    /// line is where `csv_core` would start its next record too. False at the end.
    fn read_with_core(&mut self) -> io::Result<bool> {
        let (mut out, mut ends) = (0, 0);
        loop {
            // Empty input tells `csv_core` that the file has ended.
            while self.start == self.end && !self.eof {
                self.fill()?;
            }
            let mut input = &self.buf[self.start..self.end];
            if !self.core_started && !input.is_empty() {
                input = &input[..1];
                self.core_started = true;
            }
            let (result, read, written, ended) = self.core.read_record(
                input,
                &mut self.unescaped[out..],
                &mut self.core_ends[ends..],
            );
            self.line += memchr::memchr_iter(b'\n', &input[..read]).count() as u64;
            self.start += read;
            out += written;
            ends += ended;
            match result {
                ReadRecordResult::InputEmpty => {
                    if !self.eof {
                        self.fill()?;
                    }
                }
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
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }

    /// Reads more input after the unread bytes (moved to the front first; the
    /// buffer doubles when they fill it). Sets `eof` at the end.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.before_buf += self.start as u64;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(2 * self.buf.len(), 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every record as its fields and line, read with buffers of `buffer` bytes.
    fn ours(text: &[u8], delimiter: u8, buffer: usize) -> Vec<(Vec<Vec<u8>>, u64)> {
        let mut reader = CsvLines::with_buffer(text, delimiter, buffer);
        let mut records = Vec::new();
        while let Some(record) = reader.read().unwrap() {
            let fields = (0..record.len())
                .map(|i| record.field(i).to_vec())
                .collect();
            records.push((fields, record.line()));
        }
        assert_eq!(reader.position(), text.len() as u64);
        records
    }

    /// The `csv` crate's records, configured as a site's input is read.
    fn reference(text: &[u8], delimiter: u8) -> Vec<Vec<Vec<u8>>> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(text);
        reader
            .byte_records()
            .map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect())
            .collect()
    }

    fn fields_only(records: Vec<(Vec<Vec<u8>>, u64)>) -> Vec<Vec<Vec<u8>>> {
        records.into_iter().map(|(fields, _)| fields).collect()
    }

    #[test]
    fn plain_and_quoted_records_with_their_lines() {
        let text = b"\xEF\xBB\xBFid, name\r\n1, \"van Dam, Jan\"\n\n2,\"two\nlines\"\n3,\"say \"\"hi\"\"\",x\r4,d'Hondt";
        let records = ours(text, b',', 4);
        let expected: Vec<(Vec<&[u8]>, u64)> = vec![
            (vec![b"id", b" name"], 1),
            (vec![b"1", b" \"van Dam", b" Jan\""], 2),
            (vec![b"2", b"two\nlines"], 4),
            (vec![b"3", b"say \"hi\"", b"x"], 6),
            (vec![b"4", b"d'Hondt"], 6),
        ];
        let expected: Vec<(Vec<Vec<u8>>, u64)> = expected
            .into_iter()
            .map(|(f, line)| (f.into_iter().map(<[u8]>::to_vec).collect(), line))
            .collect();
        assert_eq!(records, expected);
        assert_eq!(fields_only(records), reference(text, b','));
    }

    #[test]
    fn empty_input_and_only_line_breaks_have_no_records() {
        for text in [&b""[..], b"\n\r\n\r", b"\xEF\xBB\xBF"] {
            assert!(ours(text, b',', 2).is_empty(), "{text:?}");
            assert!(reference(text, b',').is_empty());
        }
    }

    #[test]
    fn a_quote_as_delimiter_reads_every_record_with_csv_core() {
        let text = b"a\"b\nc\"\"d\n";
        assert_eq!(fields_only(ours(text, b'"', 3)), reference(text, b'"'));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random text of delimiters, quotes, line breaks, spaces, a BOM and
        /// multi-byte letters: the same records as the `csv` crate's, whatever
        /// the buffer size.
        #[test]
        fn same_records_as_the_csv_crate(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "a", "bc", ",", ";", "\t", "\"", "\"\"", "\n", "\r", "\r\n", " ", "é", "\u{FEFF}",
                ]),
                0..60,
            ),
            delimiter in prop::sample::select(vec![b',', b';', b'\t']),
            buffer in 1usize..40,
        ) {
            let text = pieces.concat();
            let records = ours(text.as_bytes(), delimiter, buffer);
            // Lines are counted by `\n` before the record's first byte.
            for (fields, line) in &records {
                prop_assert!(*line >= 1);
                prop_assert!(!fields.is_empty());
            }
            prop_assert_eq!(fields_only(records), reference(text.as_bytes(), delimiter));
        }
    }
}
