//! Parquet tables: one Arrow record batch written atomically with key-value
//! metadata, and whole files read back with theirs.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::atomic::AtomicFile;
use super::clk_column::CLK_PAGE_BYTES;

/// Rows per Parquet row group: large enough for fast scans, small enough to
/// keep a reader's memory bounded.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Errors reading or writing a file at a path: a Parquet table, or any
/// other file the pipeline reads or writes (the `Io` case).
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable Parquet file: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
}

impl TableError {
    /// Wraps an I/O error with the path it concerns: `map_err(TableError::io(path))`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TableError + '_ {
        move |source| TableError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writer properties shared by every Parquet file pprl writes.
pub fn writer_properties(metadata: &[(&str, &str)]) -> WriterProperties {
    writer_properties_with_unique(metadata, &[])
}

/// [`writer_properties`] for a file whose `unique` columns hold (nearly)
/// distinct values, such as record ids and clks: a dictionary would only cost
/// time (on an encode run, the id dictionary took 4% of the CPU) and space.
pub fn writer_properties_with_unique(
    metadata: &[(&str, &str)],
    unique: &[&str],
) -> WriterProperties {
    let kv = metadata
        .iter()
        .map(|(k, v)| KeyValue::new((*k).to_owned(), (*v).to_owned()))
        .collect::<Vec<_>>();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata((!kv.is_empty()).then_some(kv));
    for column in unique {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    builder.build()
}

/// [`writer_properties_with_unique`] for a `.clk.parquet`: clks are random
/// bits, which Snappy cannot shrink, so they are stored uncompressed, and
/// whose minimum and maximum no reader could use to skip pages, so they get
/// no statistics. A site's encode run writes its clk column with
/// its own page writer (`io::clk_column`), which stores it the same way.
pub fn clk_writer_properties(metadata: &[(&str, &str)]) -> WriterProperties {
    let clk = ColumnPath::from("clk");
    writer_properties_with_unique(metadata, &["id", "clk"])
        .into_builder()
        .set_column_compression(clk.clone(), Compression::UNCOMPRESSED)
        .set_column_statistics_enabled(clk, EnabledStatistics::None)
        .set_data_page_size_limit(CLK_PAGE_BYTES)
        .build()
}

/// Writes `batches` (all with `schema`) to `path` atomically, with
/// `properties` (which carry the key-value metadata).
///
/// # Errors
/// [`TableError`] naming `path`.
pub fn write_batches(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    properties: WriterProperties,
) -> Result<(), TableError> {
    let io_err = |source| TableError::Io {
        path: path.to_path_buf(),
        source,
    };
    let pq_err = |source| TableError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut out = AtomicFile::create(path).map_err(io_err)?;
    let file = out.flush_behind().map_err(io_err)?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(pq_err)?;
    for batch in batches {
        writer.write(batch).map_err(pq_err)?;
    }
    writer.close().map_err(pq_err)?;
    out.commit().map_err(io_err)
}

/// Writes one record batch to `path` atomically (see [`write_batches`]).
///
/// # Errors
/// [`TableError`] naming `path`.
pub fn write_batch(
    path: &Path,
    batch: &RecordBatch,
    metadata: &[(&str, &str)],
) -> Result<(), TableError> {
    let properties = writer_properties(metadata);
    write_batches(
        path,
        batch.schema(),
        std::slice::from_ref(batch),
        properties,
    )
}

/// A whole Parquet file: its Arrow schema, its batches and its key-value metadata.
pub type Table = (SchemaRef, Vec<RecordBatch>, HashMap<String, String>);

/// Reads a whole Parquet file.
///
/// # Errors
/// [`TableError`] naming `path` when it cannot be opened or is not Parquet.
pub fn read_batches(path: &Path) -> Result<Table, TableError> {
    let file = File::open(path).map_err(|source| TableError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let pq_err = |source| TableError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq_err)?;
    let metadata = key_value_metadata(builder.metadata().file_metadata().key_value_metadata());
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(pq_err)?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TableError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((schema, batches, metadata))
}

/// Reads only the key-value metadata of a Parquet file.
///
/// # Errors
/// [`TableError`] naming `path` when it cannot be opened or is not Parquet.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, TableError> {
    let file = File::open(path).map_err(|source| TableError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| TableError::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(key_value_metadata(
        builder.metadata().file_metadata().key_value_metadata(),
    ))
}

fn key_value_metadata(kv: Option<&Vec<KeyValue>>) -> HashMap<String, String> {
    kv.into_iter()
        .flatten()
        .filter(|kv| kv.key != "ARROW:schema")
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn round_trip_keeps_rows_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("entity_id", DataType::Int64, false),
            Field::new("site", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![0, 1])),
                Arc::new(StringArray::from(vec!["A", "B"])),
            ],
        )
        .unwrap();
        write_batch(&path, &batch, &[("pprl.site", "A")]).unwrap();
        let (_, batches, meta) = read_batches(&path).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0], batch);
        assert_eq!(meta.get("pprl.site").map(String::as_str), Some("A"));
        assert_eq!(read_metadata(&path).unwrap(), meta);
    }

    #[test]
    fn non_parquet_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"id,clk\n1,2\n").unwrap();
        let err = read_batches(&path).unwrap_err();
        assert!(matches!(err, TableError::Parquet { .. }), "{err}");
        assert!(err.to_string().contains("x.parquet"));
    }
}
