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
use crate::io::records::{ReadOptions, RecordReader, is_string_or_integer, likely_delimiter};
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
    // Read as a site's input is: a byte order mark dropped, every row with
    // as many fields as the header, UTF-8, fields trimmed, and so Febrl-style
    // `, "a, b"` one quoted field.
    let mut reader = RecordReader::open(path, &ReadOptions::trimmed_csv(delimiter))?;
    let header = reader.columns().to_vec();
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
                other_delimiter: likely_delimiter(&header, delimiter),
            })?;

    let mut builders: Vec<StringBuilder> = header.iter().map(|_| StringBuilder::new()).collect();
    let mut ids = Vec::new();
    let mut lines = Vec::new();
    while let Some(batch) = reader.next_batch()? {
        for row in 0..batch.len() {
            let line = batch.line(row).expect("CSV rows have lines");
            for (col, builder) in builders.iter_mut().enumerate() {
                match batch.get(row, col) {
                    Some(value) if !value.is_empty() => builder.append_value(value),
                    _ => builder.append_null(),
                }
            }
            let id = batch.get(row, id_index).unwrap_or_default();
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
        reader.recycle(batch);
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
            other_delimiter: None,
        })?;
    let type_error = || ColumnError::ColumnType {
        path: path.to_path_buf(),
        column: id_column.to_owned(),
        expected: "strings or integers for record ids",
        found: column.data_type().to_string(),
    };
    // Integer ids are compared with the map's Utf8 ids in their decimal form.
    if !is_string_or_integer(column.data_type()) {
        return Err(type_error().into());
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

    fn csv_payload(text: impl AsRef<[u8]>) -> Result<Payload, ReleaseError> {
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
    fn csv_duplicate_ids_name_both_lines() {
        let err = csv_payload("rec_id,w\nr1,1\nr2,2\nr1,3\n").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("line 4") && text.contains("line 2") && text.contains("\"r1\""),
            "{text}"
        );
        // Lines as an editor counts them, past a quoted line break.
        let err = csv_payload("rec_id, note\nr1, \"a\nb\"\nr1, c\n")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("line 4") && text.contains("line 2"), "{text}");
    }

    #[test]
    fn csv_short_row_is_named() {
        let err = csv_payload("rec_id,w\nr1,1\nr2\n").err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("line 3") && text.contains("has 1 fields but the header has 2"),
            "{text}"
        );
        let err = csv_payload(b"rec_id, note\nr1, ok\nr2, bad\xff\n")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("line 3")
                && text.contains("\"note\"")
                && text.contains("not valid UTF-8"),
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
    fn csv_separated_by_semicolons_gets_a_hint() {
        let err = csv_payload("rec_id;w\nr1;1\n").err().unwrap();
        let text = err.to_string();
        assert!(text.contains("separated by ';'"), "{text}");
        let err = csv_payload("id,w\nr1,1\n").err().unwrap();
        assert!(!err.to_string().contains("separated by"), "{err}");
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
