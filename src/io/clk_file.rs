//! The encoded file a site hands to the linkage unit.
//!
//! `.clk.parquet`: columns `id` (Utf8, the site's record key), `clk`
//! (FixedSizeBinary of `ceil(filter_bits / 8)` bytes; bit `i` of the filter is
//! bit `7 - i % 8` of byte `i / 8`, the clkhash order) and `popcount` (UInt16),
//! plus key-value metadata ([`ClkMeta`]) that lets the linkage unit check that
//! all sites used the same schema and secret before comparing anything.
//!
//! When the schema declares site-side blocking keys, a fourth column
//! `blocking_keys` (List of non-null UInt64, the list itself non-null) holds
//! each record's keyed key hashes ([`crate::encode::blocking`]), and the
//! metadata `pprl.blocking_keys` names the keys, comma-separated.
//!
//! anonlink's `{"clks": [base64, ...]}` JSON is read and written too; it has
//! no ids (records are numbered from 0) and no metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, FixedSizeBinaryArray, ListArray, RecordBatch, StringArray, UInt16Array, UInt64Array,
};
use arrow_buffer::{Buffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Schema};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::atomic;
use super::table::{self, TableError};

/// Metadata keys of a `.clk.parquet` file.
pub mod keys {
    pub const ENGINE_VERSION: &str = "pprl.engine_version";
    pub const SITE: &str = "pprl.site";
    pub const SCHEMA_FINGERPRINT: &str = "pprl.schema_fingerprint";
    pub const FILTER_BITS: &str = "pprl.filter_bits";
    pub const RECORD_COUNT: &str = "pprl.record_count";
    pub const KEY_CHECK_VALUE: &str = "pprl.key_check_value";
    /// The names of the schema's blocking keys, comma-separated (only in
    /// files that carry the `blocking_keys` column; informative).
    pub const BLOCKING_KEYS: &str = "pprl.blocking_keys";
}

/// The name of the optional column of blocking-key hashes.
pub const BLOCKING_KEYS_COLUMN: &str = "blocking_keys";

/// What a clk file says about how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClkMeta {
    pub engine_version: String,
    pub site: String,
    /// `None` for anonlink JSON, which does not record it.
    pub schema_fingerprint: Option<String>,
    pub filter_bits: usize,
    /// `None` for anonlink JSON, which does not record it.
    pub key_check_value: Option<String>,
}

/// The encodings of one site, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClkFile {
    pub meta: ClkMeta,
    /// The site's record keys, one per record.
    pub ids: Vec<String>,
    /// All clks back to back: record `i` is `clks[i * b..(i + 1) * b]` with `b = filter_bytes()`.
    pub clks: Vec<u8>,
    pub popcounts: Vec<u16>,
    /// Site-side blocking keys, when the schema declares them: record `i`'s
    /// keyed hashes (`blocking_keys[i]`, one per key it has a value for).
    pub blocking_keys: Option<Vec<Vec<u64>>>,
}

impl ClkFile {
    /// Bytes per clk.
    pub fn filter_bytes(&self) -> usize {
        self.meta.filter_bits.div_ceil(8)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The clk of record `i`.
    pub fn clk(&self, i: usize) -> &[u8] {
        let b = self.filter_bytes();
        &self.clks[i * b..(i + 1) * b]
    }
}

/// Counts the set bits of a clk.
pub fn popcount(clk: &[u8]) -> u16 {
    crate::similarity::popcount_bytes(clk) as u16
}

/// Errors reading or writing clk files.
#[derive(Debug, thiserror::Error)]
pub enum ClkFileError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(
        "{path} is not a pprl encoding: {problem} (expected columns id: Utf8, clk: FixedSizeBinary, \
         popcount: UInt16 and the pprl.* metadata that `pprl encode` writes)"
    )]
    NotPprl { path: PathBuf, problem: String },
    #[error("{path} is not an anonlink clk JSON file: {problem}")]
    BadJson { path: PathBuf, problem: String },
    #[error(
        "{path}: column `blocking_keys` is {found}, expected a list of non-null UInt64 \
         (one list of key hashes per record)"
    )]
    BadBlockingKeys { path: PathBuf, found: String },
    #[error("{path}: record {row} has {found} bytes but the file's filter length needs {expected}")]
    WrongLength {
        path: PathBuf,
        row: usize,
        found: usize,
        expected: usize,
    },
}

/// Writes `file` as `.clk.parquet` at `path`, atomically.
///
/// # Errors
/// [`ClkFileError`] naming the path.
pub fn write_parquet(path: &Path, file: &ClkFile) -> Result<(), ClkFileError> {
    let bytes = file.filter_bytes();
    assert_eq!(
        file.clks.len(),
        file.ids.len() * bytes,
        "clks and ids disagree"
    );
    assert_eq!(
        file.popcounts.len(),
        file.ids.len(),
        "popcounts and ids disagree"
    );
    if let Some(keys) = &file.blocking_keys {
        assert_eq!(keys.len(), file.ids.len(), "blocking keys and ids disagree");
    }
    let schema = Arc::new(match file.blocking_keys {
        Some(_) => clk_schema_with_blocking_keys(bytes),
        None => clk_schema(bytes),
    });
    let clk = FixedSizeBinaryArray::try_new(bytes as i32, Buffer::from(file.clks.clone()), None)
        .expect("clk length checked above");
    let mut columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(StringArray::from_iter_values(&file.ids)),
        Arc::new(clk),
        Arc::new(UInt16Array::from(file.popcounts.clone())),
    ];
    if let Some(keys) = &file.blocking_keys {
        columns.push(Arc::new(blocking_keys_array(
            keys.iter().map(Vec::as_slice),
        )));
    }
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema");
    let filter_bits = file.meta.filter_bits.to_string();
    let record_count = file.ids.len().to_string();
    let mut metadata = vec![
        (keys::ENGINE_VERSION, file.meta.engine_version.as_str()),
        (keys::SITE, file.meta.site.as_str()),
        (keys::FILTER_BITS, filter_bits.as_str()),
        (keys::RECORD_COUNT, record_count.as_str()),
    ];
    if let Some(f) = &file.meta.schema_fingerprint {
        metadata.push((keys::SCHEMA_FINGERPRINT, f));
    }
    if let Some(k) = &file.meta.key_check_value {
        metadata.push((keys::KEY_CHECK_VALUE, k));
    }
    let properties = table::clk_writer_properties(&metadata);
    table::write_batches(path, schema, &[batch], properties)?;
    Ok(())
}

/// The Arrow schema of a `.clk.parquet` file with clks of `bytes` bytes.
pub fn clk_schema(bytes: usize) -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("clk", DataType::FixedSizeBinary(bytes as i32), false),
        Field::new("popcount", DataType::UInt16, false),
    ])
}

/// The Arrow schema of a `.clk.parquet` file with clks of `bytes` bytes and
/// the `blocking_keys` column.
pub fn clk_schema_with_blocking_keys(bytes: usize) -> Schema {
    let mut fields: Vec<Field> = clk_schema(bytes)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        BLOCKING_KEYS_COLUMN,
        blocking_keys_type(),
        false,
    ));
    Schema::new(fields)
}

/// `List<UInt64>` with non-null items.
fn blocking_keys_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt64, false)))
}

/// The `blocking_keys` column of some records: one list of hashes per record.
pub fn blocking_keys_array<'a>(keys: impl Iterator<Item = &'a [u64]>) -> ListArray {
    let mut lengths = Vec::new();
    let mut values = Vec::new();
    for list in keys {
        lengths.push(list.len());
        values.extend_from_slice(list);
    }
    ListArray::new(
        Arc::new(Field::new("item", DataType::UInt64, false)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(UInt64Array::from(values)),
        None,
    )
}

/// Writes the clks as anonlink's `{"clks": [base64, ...]}` JSON, atomically.
/// Ids and metadata are not part of that format.
///
/// # Errors
/// [`TableError::Io`] (as [`ClkFileError::Table`]) naming the path.
pub fn write_clkhash_json(path: &Path, file: &ClkFile) -> Result<(), ClkFileError> {
    let clks: Vec<String> = (0..file.len())
        .map(|i| BASE64.encode(file.clk(i)))
        .collect();
    let text =
        serde_json::to_string(&serde_json::json!({ "clks": clks })).expect("strings serialise");
    atomic::write_all(path, text.as_bytes()).map_err(TableError::io(path))?;
    Ok(())
}

/// Reads a clk file: `.json` as anonlink JSON, anything else as `.clk.parquet`.
/// `site` overrides the site name stored in the file; anonlink JSON has none,
/// so without `site` its file stem is used.
///
/// # Errors
/// [`ClkFileError`] naming the path and the problem.
pub fn read(path: &Path, site: Option<&str>) -> Result<ClkFile, ClkFileError> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut file = if is_json {
        read_clkhash_json(path)?
    } else {
        read_parquet(path)?
    };
    if let Some(site) = site {
        file.meta.site = site.to_owned();
    }
    Ok(file)
}

fn read_parquet(path: &Path) -> Result<ClkFile, ClkFileError> {
    let (schema, batches, metadata) = table::read_batches(path)?;
    let not_pprl = |problem: String| ClkFileError::NotPprl {
        path: path.to_path_buf(),
        problem,
    };
    let column_type = |name: &str| {
        schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|_| {
                let found: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                not_pprl(format!(
                    "no column `{name}` (columns: {})",
                    found.join(", ")
                ))
            })
    };
    let bytes = match column_type("clk")? {
        DataType::FixedSizeBinary(n) if n > 0 => n as usize,
        other => return Err(not_pprl(format!("column `clk` is {other}"))),
    };
    if column_type("id")? != DataType::Utf8 {
        return Err(not_pprl("column `id` is not Utf8".into()));
    }
    let bad_keys = |found: String| ClkFileError::BadBlockingKeys {
        path: path.to_path_buf(),
        found,
    };
    let has_keys = match schema.field_with_name(BLOCKING_KEYS_COLUMN) {
        Ok(field) => match field.data_type() {
            DataType::List(item) if item.data_type() == &DataType::UInt64 => true,
            other => return Err(bad_keys(other.to_string())),
        },
        Err(_) => false,
    };
    if !has_keys && metadata.contains_key(keys::BLOCKING_KEYS) {
        return Err(not_pprl(format!(
            "metadata {} names blocking keys, but there is no column `{BLOCKING_KEYS_COLUMN}`",
            keys::BLOCKING_KEYS
        )));
    }
    let filter_bits = required(&metadata, keys::FILTER_BITS).map_err(&not_pprl)?;
    let filter_bits: usize = filter_bits
        .parse()
        .ok()
        .filter(|bits: &usize| bits.div_ceil(8) == bytes)
        .ok_or_else(|| {
            not_pprl(format!(
                "metadata {} = {filter_bits:?} does not fit clks of {bytes} bytes",
                keys::FILTER_BITS
            ))
        })?;
    let meta = ClkMeta {
        engine_version: required(&metadata, keys::ENGINE_VERSION).map_err(&not_pprl)?,
        site: required(&metadata, keys::SITE).map_err(&not_pprl)?,
        schema_fingerprint: metadata.get(keys::SCHEMA_FINGERPRINT).cloned(),
        filter_bits,
        key_check_value: metadata.get(keys::KEY_CHECK_VALUE).cloned(),
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut ids = Vec::with_capacity(rows);
    let mut clks = Vec::with_capacity(rows * bytes);
    let mut blocking_keys: Option<Vec<Vec<u64>>> = has_keys.then(|| Vec::with_capacity(rows));
    for batch in &batches {
        let id = batch
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| not_pprl("column `id` is not Utf8".into()))?;
        let clk = batch
            .column_by_name("clk")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
            .ok_or_else(|| not_pprl("column `clk` is not FixedSizeBinary".into()))?;
        if id.null_count() > 0 || clk.null_count() > 0 {
            return Err(not_pprl("null ids or clks".into()));
        }
        ids.extend(id.iter().map(|v| v.unwrap_or_default().to_owned()));
        clks.extend_from_slice(&clk.value_data()[..clk.len() * bytes]);
        if let Some(all) = blocking_keys.as_mut() {
            let list = batch
                .column_by_name(BLOCKING_KEYS_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| bad_keys("not a list".into()))?;
            let values = list
                .values()
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| bad_keys(list.value_type().to_string()))?;
            if list.null_count() > 0 || values.null_count() > 0 {
                return Err(bad_keys("a list with nulls".into()));
            }
            let hashes = values.values();
            all.extend(
                list.offsets()
                    .windows(2)
                    .map(|w| hashes[w[0] as usize..w[1] as usize].to_vec()),
            );
        }
    }
    if let Some(count) = metadata.get(keys::RECORD_COUNT)
        && count.parse::<usize>().ok() != Some(ids.len())
    {
        return Err(not_pprl(format!(
            "metadata says {count} records but the file holds {}",
            ids.len()
        )));
    }
    // Recomputed rather than trusted: it costs little and a stale column would
    // silently corrupt the length filter.
    let popcounts = clks.chunks_exact(bytes).map(popcount).collect();
    Ok(ClkFile {
        meta,
        ids,
        clks,
        popcounts,
        blocking_keys,
    })
}

fn required(metadata: &HashMap<String, String>, key: &str) -> Result<String, String> {
    metadata
        .get(key)
        .cloned()
        .ok_or_else(|| format!("metadata key `{key}` is missing"))
}

fn read_clkhash_json(path: &Path) -> Result<ClkFile, ClkFileError> {
    let bad = |problem: String| ClkFileError::BadJson {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(TableError::io(path))?;
    #[derive(serde::Deserialize)]
    struct Clks {
        clks: Vec<String>,
    }
    let parsed: Clks = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut clks = Vec::new();
    let mut bytes = None;
    for (row, encoded) in parsed.clks.iter().enumerate() {
        let clk = BASE64
            .decode(encoded)
            .map_err(|e| bad(format!("clk {row} is not base64: {e}")))?;
        let expected = *bytes.get_or_insert(clk.len());
        if clk.len() != expected || expected == 0 {
            return Err(ClkFileError::WrongLength {
                path: path.to_path_buf(),
                row,
                found: clk.len(),
                expected,
            });
        }
        clks.extend_from_slice(&clk);
    }
    let bytes = bytes.unwrap_or(0);
    let site = path
        .file_stem()
        .map(|s| s.to_string_lossy().trim_end_matches(".clks").to_owned())
        .unwrap_or_default();
    Ok(ClkFile {
        meta: ClkMeta {
            engine_version: "anonlink-json".into(),
            site,
            schema_fingerprint: None,
            filter_bits: bytes * 8,
            key_check_value: None,
        },
        ids: (0..parsed.clks.len()).map(|i| i.to_string()).collect(),
        popcounts: clks.chunks_exact(bytes.max(1)).map(popcount).collect(),
        clks,
        blocking_keys: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClkFile {
        let clks = vec![0b1000_0001, 0xff, 0x00, 0x10];
        ClkFile {
            meta: ClkMeta {
                engine_version: crate::ENGINE_VERSION.into(),
                site: "A".into(),
                schema_fingerprint: Some("f".repeat(64)),
                filter_bits: 16,
                key_check_value: Some("k".repeat(32)),
            },
            ids: vec!["r1".into(), "r2".into()],
            popcounts: clks.chunks(2).map(popcount).collect(),
            clks,
            blocking_keys: None,
        }
    }

    #[test]
    fn parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.clk.parquet");
        let file = sample();
        write_parquet(&path, &file).unwrap();
        assert_eq!(read(&path, None).unwrap(), file);
        assert_eq!(read(&path, Some("Z")).unwrap().meta.site, "Z");
    }

    /// As a site's encode run stores them: random bits neither compress nor
    /// sort usefully, and unique values make no dictionary.
    #[test]
    fn clks_are_stored_plain_uncompressed_and_without_statistics() {
        use parquet::basic::{Compression, Encoding};
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.clk.parquet");
        write_parquet(&path, &sample()).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let row_group = reader.metadata().row_group(0);
        let (id, clk) = (row_group.column(0), row_group.column(1));
        assert_eq!(clk.column_path().string(), "clk");
        assert_eq!(clk.compression(), Compression::UNCOMPRESSED);
        assert!(clk.statistics().is_none());
        for column in [id, clk] {
            assert!(column.dictionary_page_offset().is_none());
            assert!(!column.encodings().any(|e| e == Encoding::RLE_DICTIONARY));
        }
    }

    #[test]
    fn parquet_round_trip_with_blocking_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.clk.parquet");
        let mut file = sample();
        file.blocking_keys = Some(vec![vec![3, u64::MAX, 7], vec![]]);
        write_parquet(&path, &file).unwrap();
        let back = read(&path, None).unwrap();
        assert_eq!(back, file);
        // Without keys the column is absent, and reads back as `None`.
        let plain = dir.path().join("b.clk.parquet");
        write_parquet(&plain, &sample()).unwrap();
        assert_eq!(read(&plain, None).unwrap().blocking_keys, None);
        let (schema, _, _) = table::read_batches(&path).unwrap();
        let field = schema.field_with_name(BLOCKING_KEYS_COLUMN).unwrap();
        assert!(!field.is_nullable());
        assert_eq!(field.data_type(), &blocking_keys_type());
    }

    #[test]
    fn blocking_keys_of_another_type_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.clk.parquet");
        let file = sample();
        let mut fields: Vec<Field> = clk_schema(2)
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(BLOCKING_KEYS_COLUMN, DataType::UInt16, false));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(StringArray::from_iter_values(&file.ids)),
                Arc::new(
                    FixedSizeBinaryArray::try_new(2, Buffer::from(file.clks.clone()), None)
                        .unwrap(),
                ),
                Arc::new(UInt16Array::from(file.popcounts.clone())),
                Arc::new(UInt16Array::from(vec![1u16, 2])),
            ],
        )
        .unwrap();
        table::write_batch(
            &path,
            &batch,
            &[
                (keys::ENGINE_VERSION, "x"),
                (keys::SITE, "A"),
                (keys::FILTER_BITS, "16"),
            ],
        )
        .unwrap();
        let err = read(&path, None).unwrap_err();
        assert!(matches!(err, ClkFileError::BadBlockingKeys { .. }), "{err}");
        assert!(err.to_string().contains("UInt16"), "{err}");
    }

    #[test]
    fn json_round_trip_keeps_clks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.clks.json");
        let file = sample();
        write_clkhash_json(&path, &file).unwrap();
        let back = read(&path, None).unwrap();
        assert_eq!(back.clks, file.clks);
        assert_eq!(back.popcounts, vec![10, 1]);
        assert_eq!(back.ids, vec!["0", "1"]);
        assert_eq!(back.meta.site, "a");
        assert_eq!(back.meta.key_check_value, None);
    }

    #[test]
    fn parquet_without_pprl_columns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.parquet");
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::UInt16, false)])),
            vec![Arc::new(UInt16Array::from(vec![1u16]))],
        )
        .unwrap();
        table::write_batch(&path, &batch, &[]).unwrap();
        let err = read(&path, None).unwrap_err().to_string();
        assert!(
            err.contains("not a pprl encoding") && err.contains("no column `clk`"),
            "{err}"
        );
    }

    #[test]
    fn json_with_unequal_lengths_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"clks": ["AAA=", "AA=="]}"#).unwrap();
        assert!(matches!(
            read(&path, None),
            Err(ClkFileError::WrongLength { row: 1, .. })
        ));
    }
}
