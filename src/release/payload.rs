//! Reading a site's payload: a CSV file (header row, every column kept as
//! Utf8, surrounding whitespace trimmed, empty fields as nulls) or a Parquet
//! file (columns keep their types), with its record ids as strings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};

use super::{ColumnError, ReleaseError, RowRef};
use crate::io::table::{self, TableError};

/// How a payload file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// Delimited text with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl PayloadFormat {
    /// The format a file's extension implies: `.parquet` / `.pq` are Parquet,
    /// `.csv` / `.tsv` / `.txt` are CSV, anything else is unknown.
    pub fn from_path(path: &Path) -> Option<PayloadFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(PayloadFormat::Parquet),
            "csv" | "tsv" | "txt" => Some(PayloadFormat::Csv),
            _ => None,
        }
    }
}

/// A payload: all its columns, and its record ids as strings in row order.
pub(crate) struct Payload {
    pub batch: RecordBatch,
    pub ids: Vec<String>,
}

pub(crate) fn read(
    path: &Path,
    format: PayloadFormat,
    delimiter: u8,
    id_column: &str,
) -> Result<Payload, ReleaseError> {
    let (batch, ids, rows) = match format {
        PayloadFormat::Csv => read_csv(path, delimiter, id_column)?,
        PayloadFormat::Parquet => read_parquet(path, id_column)?,
    };
    let at = |row: usize| {
        rows.as_ref().map_or(RowRef::Row(row as u64 + 1), |lines| {
            RowRef::Line(lines[row])
        })
    };
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        if let Some(&earlier) = first.get(id.as_str()) {
            return Err(ReleaseError::DuplicatePayloadId {
                path: path.to_path_buf(),
                at: at(row),
                first: at(earlier),
                column: id_column.to_owned(),
                id: id.clone(),
            });
        }
        first.insert(id.as_str(), row);
    }
    Ok(Payload { batch, ids })
}

/// Batch, ids, and for CSV the line of each row.
type Read = (RecordBatch, Vec<String>, Option<Vec<u64>>);

fn read_csv(path: &Path, delimiter: u8, id_column: &str) -> Result<Read, ReleaseError> {
    let file = std::fs::File::open(path).map_err(TableError::io(path))?;
    // csv strips a UTF-8 byte order mark and checks that every row has as
    // many fields as the header. It only sees a quote at the very start of a
    // field, so Febrl-style `, "a, b"` needs the spaces after the delimiter
    // skipped first (Python's `skipinitialspace`); Trim::All removes the rest.
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(SkipInitialSpace::new(
            std::io::BufReader::new(file),
            delimiter,
        ));
    let csv_error = |e: csv::Error| {
        let at = RowRef::Line(e.position().map_or(1, |p| p.line()));
        let message = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("expected {expected_len} fields as in the header, found {len}"),
            csv::ErrorKind::Utf8 { err, .. } => format!(
                "field {} is not valid UTF-8 (the payload must be UTF-8)",
                err.field() + 1
            ),
            csv::ErrorKind::Io(err) => err.to_string(),
            _ => e.to_string(),
        };
        ReleaseError::Csv {
            path: path.to_path_buf(),
            at,
            message,
        }
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_owned)
        .collect();
    check_header(path, &header)?;
    let id_index =
        header
            .iter()
            .position(|h| h == id_column)
            .ok_or_else(|| ReleaseError::UnknownColumn {
                path: path.to_path_buf(),
                column: id_column.to_owned(),
                role: "the record id column",
                found: header.clone(),
            })?;

    let mut builders: Vec<StringBuilder> = header.iter().map(|_| StringBuilder::new()).collect();
    let mut ids = Vec::new();
    let mut lines = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, |p| p.line());
        for (builder, field) in builders.iter_mut().zip(record.iter()) {
            if field.is_empty() {
                builder.append_null();
            } else {
                builder.append_value(field);
            }
        }
        let id = &record[id_index];
        if id.is_empty() {
            return Err(ColumnError::MissingValue {
                path: path.to_path_buf(),
                at: RowRef::Line(line),
                column: id_column.to_owned(),
            }
            .into());
        }
        ids.push(id.to_owned());
        lines.push(line);
    }
    let fields: Vec<Field> = header
        .iter()
        .map(|h| Field::new(h, DataType::Utf8, true))
        .collect();
    let columns: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let batch =
        RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns).map_err(|source| {
            TableError::Arrow {
                path: path.to_path_buf(),
                source,
            }
        })?;
    Ok((batch, ids, Some(lines)))
}

/// Where [`SkipInitialSpace`] is in the CSV grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field0 {
    /// At the start of a field: blanks here are dropped.
    Start,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// A quote inside a quoted field: the end of it, or the first half of `""`.
    QuoteInQuoted,
}

/// A reader that drops spaces and tabs at the start of every unquoted field,
/// outside quoted text, and passes every other byte through.
struct SkipInitialSpace<R> {
    inner: R,
    delimiter: u8,
    state: Field0,
    /// Bytes of a leading UTF-8 byte order mark still to pass by.
    bom_seen: usize,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R> SkipInitialSpace<R> {
    fn new(inner: R, delimiter: u8) -> Self {
        SkipInitialSpace {
            inner,
            delimiter,
            state: Field0::Start,
            bom_seen: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for SkipInitialSpace<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..n {
                let b = buf[i];
                // A byte order mark is not part of the first field.
                if self.bom_seen < BOM.len() {
                    if b == BOM[self.bom_seen] && self.state == Field0::Start {
                        self.bom_seen += 1;
                        buf[kept] = b;
                        kept += 1;
                        continue;
                    }
                    self.bom_seen = BOM.len();
                }
                let is_blank = (b == b' ' || b == b'\t') && b != self.delimiter;
                let ends_field = b == self.delimiter || b == b'\n' || b == b'\r';
                let (keep, next) = match self.state {
                    Field0::Start if is_blank => (false, Field0::Start),
                    Field0::Start if b == b'"' => (true, Field0::Quoted),
                    Field0::Quoted if b == b'"' => (true, Field0::QuoteInQuoted),
                    Field0::Quoted => (true, Field0::Quoted),
                    Field0::QuoteInQuoted if b == b'"' => (true, Field0::Quoted),
                    _ if ends_field => (true, Field0::Start),
                    _ => (true, Field0::Unquoted),
                };
                self.state = next;
                if keep {
                    buf[kept] = b;
                    kept += 1;
                }
            }
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

fn check_header(path: &Path, header: &[String]) -> Result<(), ReleaseError> {
    let bad = |problem: String| ReleaseError::BadHeader {
        path: path.to_path_buf(),
        problem,
    };
    if header.is_empty() {
        return Err(bad("no columns".into()));
    }
    if let Some(i) = header.iter().position(String::is_empty) {
        return Err(bad(format!("an empty column name (column {})", i + 1)));
    }
    for (i, name) in header.iter().enumerate() {
        if header[..i].contains(name) {
            return Err(bad(format!("the column `{name}` twice")));
        }
    }
    Ok(())
}

fn read_parquet(path: &Path, id_column: &str) -> Result<Read, ReleaseError> {
    let (schema, batches, _) = table::read_batches(path)?;
    let batch = arrow_select::concat::concat_batches(&schema, &batches).map_err(|source| {
        TableError::Arrow {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    check_header(path, &names)?;
    let column = batch
        .column_by_name(id_column)
        .ok_or_else(|| ReleaseError::UnknownColumn {
            path: path.to_path_buf(),
            column: id_column.to_owned(),
            role: "the record id column",
            found: names.clone(),
        })?;
    let type_error = || ColumnError::ColumnType {
        path: path.to_path_buf(),
        column: id_column.to_owned(),
        expected: "strings or integers for record ids",
        found: column.data_type().to_string(),
    };
    // Integer ids are compared with the map's Utf8 ids in their decimal form.
    match column.data_type() {
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
        | DataType::UInt64 => {}
        _ => return Err(type_error().into()),
    }
    let strings = arrow_cast::cast(column.as_ref(), &DataType::Utf8).map_err(|_| type_error())?;
    let strings = strings
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(type_error)?;
    let mut ids = Vec::with_capacity(strings.len());
    for row in 0..strings.len() {
        if strings.is_null(row) || strings.value(row).is_empty() {
            return Err(ColumnError::MissingValue {
                path: path.to_path_buf(),
                at: RowRef::Row(row as u64 + 1),
                column: id_column.to_owned(),
            }
            .into());
        }
        ids.push(strings.value(row).to_owned());
    }
    Ok((batch, ids, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_payload(text: &str) -> Result<Payload, ReleaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        std::fs::write(&path, text).unwrap();
        read(&path, PayloadFormat::Csv, b',', "rec_id")
    }

    #[test]
    fn csv_with_bom_quotes_and_febrl_spacing() {
        let p =
            csv_payload("\u{feff}\"rec_id\", weight, note\r\nr1, 70, \"a, b\"\nr2, , x\n").unwrap();
        assert_eq!(p.ids, ["r1", "r2"]);
        let schema = p.batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["rec_id", "weight", "note"]);
        let weight = p
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(weight.value(0), "70");
        assert!(weight.is_null(1));
        let note = p
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(note.value(0), "a, b");
    }

    #[test]
    fn skip_initial_space_leaves_quoted_text_alone() {
        use std::io::Read;
        let input = "a, b,  \"x, \"\" y\", \"q\"  ,\t z\n c, d";
        let mut out = String::new();
        SkipInitialSpace::new(input.as_bytes(), b',')
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "a,b,\"x, \"\" y\",\"q\"  ,z\nc,d");
        let mut tabs = String::new();
        SkipInitialSpace::new("a\t b\t\tc".as_bytes(), b'\t')
            .read_to_string(&mut tabs)
            .unwrap();
        assert_eq!(tabs, "a\tb\t\tc");
    }

    #[test]
    fn csv_duplicate_ids_name_both_lines() {
        let err = csv_payload("rec_id,w\nr1,1\nr2,2\nr1,3\n").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("line 4") && text.contains("line 2") && text.contains("\"r1\""),
            "{text}"
        );
    }

    #[test]
    fn csv_short_row_is_named() {
        let err = csv_payload("rec_id,w\nr1,1\nr2\n").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("line 3") && text.contains("expected 2 fields"),
            "{text}"
        );
    }

    #[test]
    fn csv_missing_id_column_lists_the_header() {
        let err = csv_payload("id,w\nr1,1\n").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("`rec_id`") && text.contains("id, w"),
            "{text}"
        );
    }

    #[test]
    fn csv_duplicate_header_is_refused() {
        let err = csv_payload("rec_id,w,w\nr1,1,2\n").err().unwrap();
        assert!(err.to_string().contains("`w` twice"), "{err}");
    }

    #[test]
    fn csv_empty_id_is_refused() {
        let err = csv_payload("rec_id,w\n,1\n").err().unwrap();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            PayloadFormat::from_path(Path::new("a.PARQUET")),
            Some(PayloadFormat::Parquet)
        );
        assert_eq!(
            PayloadFormat::from_path(Path::new("a.csv")),
            Some(PayloadFormat::Csv)
        );
        assert_eq!(PayloadFormat::from_path(Path::new("a.xlsx")), None);
    }
}
