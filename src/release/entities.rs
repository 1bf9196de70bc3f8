//! Reading `entities.parquet` and the per-site maps cut from it: columns
//! `entity_id` (Int64), `site` and `id` (Utf8), every record once.

use std::collections::HashMap;
use std::path::Path;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;

use super::{ColumnError, ReleaseError, RowRef};
use crate::io::table;

/// The rows of an entity file, in file order, with its key-value metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityTable {
    /// `entity_id` of each row.
    pub entity_ids: Vec<i64>,
    /// `site` of each row.
    pub sites: Vec<String>,
    /// `id` (the site's record id) of each row.
    pub ids: Vec<String>,
    /// The file's Parquet key-value metadata (e.g. `pprl.site` for a map).
    pub metadata: HashMap<String, String>,
}

impl EntityTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Reads `entities.parquet` or a site's map file, checking the columns and that
/// no `(site, id)` appears twice.
///
/// # Errors
/// [`ReleaseError`] naming the file, the row and the column.
pub fn read_entities(path: &Path) -> Result<EntityTable, ReleaseError> {
    let (schema, batches, metadata) = table::read_batches(path)?;
    ColumnError::require_columns(
        path,
        &schema,
        &[
            ("entity_id", "Int64"),
            ("site", "Utf8 strings"),
            ("id", "Utf8 strings"),
        ],
    )?;
    let mut out = EntityTable {
        metadata,
        ..EntityTable::default()
    };
    let mut row0 = 0u64;
    for batch in &batches {
        let entity = batch.column_by_name("entity_id").expect("checked above");
        let entity = entity
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| ColumnError::ColumnType {
                path: path.to_path_buf(),
                column: "entity_id".into(),
                expected: "Int64",
                found: entity.data_type().to_string(),
            })?;
        let sites = string_column(path, batch, "site")?;
        let ids = string_column(path, batch, "id")?;
        for i in 0..batch.num_rows() {
            let at = RowRef::Row(row0 + i as u64 + 1);
            let missing = |column: &str| ColumnError::MissingValue {
                path: path.to_path_buf(),
                at,
                column: column.to_owned(),
            };
            if entity.is_null(i) {
                return Err(missing("entity_id").into());
            }
            if sites.is_null(i) {
                return Err(missing("site").into());
            }
            if ids.is_null(i) {
                return Err(missing("id").into());
            }
            if entity.value(i) < 0 {
                return Err(ReleaseError::BadEntityId {
                    path: path.to_path_buf(),
                    at,
                    entity_id: entity.value(i),
                });
            }
            out.entity_ids.push(entity.value(i));
            out.sites.push(sites.value(i).to_owned());
            out.ids.push(ids.value(i).to_owned());
        }
        row0 += batch.num_rows() as u64;
    }

    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(out.len());
    for (row, (site, id)) in out.sites.iter().zip(&out.ids).enumerate() {
        if let Some(&earlier) = first.get(&(site.as_str(), id.as_str())) {
            return Err(ReleaseError::DuplicateRecord {
                path: path.to_path_buf(),
                at: RowRef::Row(row as u64 + 1),
                first: RowRef::Row(earlier as u64 + 1),
                site: site.clone(),
                id: id.clone(),
            });
        }
        first.insert((site.as_str(), id.as_str()), row);
    }
    Ok(out)
}

/// A string column as Utf8, whichever string encoding the file used.
pub(crate) fn string_column(
    path: &Path,
    batch: &RecordBatch,
    column: &str,
) -> Result<StringArray, ReleaseError> {
    let array: &ArrayRef =
        batch
            .column_by_name(column)
            .ok_or_else(|| ColumnError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_owned(),
                expected: "Utf8 strings",
                found: batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            })?;
    let type_error = || ColumnError::ColumnType {
        path: path.to_path_buf(),
        column: column.to_owned(),
        expected: "Utf8 strings",
        found: array.data_type().to_string(),
    };
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {}
        _ => return Err(type_error().into()),
    }
    let cast = arrow_cast::cast(array.as_ref(), &DataType::Utf8).map_err(|_| type_error())?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(type_error)?
        .clone())
}
