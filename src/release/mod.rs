//! Release: a site's payload joined to its entity ids, for analysts.
//!
//! The linkage unit splits `entities.parquet` into one entity map per site
//! ([`split()`]), so that each site learns only its own rows. Each site then joins
//! its payload (clinical data, CSV or Parquet) to its map on its own record id
//! ([`release()`]) and writes a Parquet file keyed by `entity_id`, which analysts
//! join across sites with any Parquet reader. Release refuses every column that
//! the linkage schema marks as identifying unless it is named explicitly, and
//! drops the site's record id by default, so that the released file carries no
//! identifier and no key back into the site's own systems.

mod entities;
mod payload;
mod split;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};

use crate::io::table::{self, TableError};

pub(crate) use entities::string_column;
pub use entities::{EntityTable, read_entities};
pub use payload::PayloadFormat;
pub use split::{SiteMap, SplitSummary, is_safe_site_name, map_file_name, split};

/// The column that keys every released file.
pub const ENTITY_ID: &str = "entity_id";

/// Where in an input file a problem is: a line of a CSV file (as an editor
/// counts them, the header is line 1) or a 1-based data row of a Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRef {
    /// A line of a CSV file.
    Line(u64),
    /// A 1-based data row of a Parquet file.
    Row(u64),
}

impl std::fmt::Display for RowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowRef::Line(n) => write!(f, "line {n}"),
            RowRef::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A column of a file read by name (an entity map, a payload, links) that is
/// absent or of the wrong type, or a value in it that is missing.
#[derive(Debug, thiserror::Error)]
pub enum ColumnError {
    /// A required column is absent.
    #[error("{path} has no column `{column}` (expected {expected}); it has: {}", found.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        expected: &'static str,
        found: Vec<String>,
    },
    /// A column has a type that cannot be used.
    #[error("{path}, column `{column}`: expected {expected}, found {found}")]
    ColumnType {
        path: PathBuf,
        column: String,
        expected: &'static str,
        found: String,
    },
    /// A value that must be present is missing.
    #[error("{path}, {at}, column `{column}`: the value is missing")]
    MissingValue {
        path: PathBuf,
        at: RowRef,
        column: String,
    },
}

impl ColumnError {
    /// Checks that `schema` has every one of `columns` (a name, and what the
    /// column must hold, for the error that lists the columns there are).
    ///
    /// # Errors
    /// [`ColumnError::MissingColumn`] for the first one absent.
    pub(crate) fn require_columns(
        path: &Path,
        schema: &ArrowSchema,
        columns: &[(&str, &'static str)],
    ) -> Result<(), ColumnError> {
        match columns
            .iter()
            .find(|(name, _)| schema.column_with_name(name).is_none())
        {
            None => Ok(()),
            Some(&(column, expected)) => Err(ColumnError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_owned(),
                expected,
                found: schema.fields().iter().map(|f| f.name().clone()).collect(),
            }),
        }
    }
}

/// Why a split or a release was refused. Every variant names the file and,
/// where there is one, the row and the column.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Reading or writing a Parquet file failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A column or a value is not what the file must have.
    #[error(transparent)]
    Column(#[from] ColumnError),
    /// An entity id below 0 (entity ids are numbered from 0).
    #[error(
        "{path}, {at}, column `entity_id`: {entity_id} is not an entity id (they are numbered from 0)"
    )]
    BadEntityId {
        path: PathBuf,
        at: RowRef,
        entity_id: i64,
    },
    /// A site name that cannot safely become a file name.
    #[error(
        "{path}, {at}: site name {site:?} cannot be used as a file name \
         (use letters, digits, '_', '-' and '.', starting with a letter or digit, at most 64 characters)"
    )]
    UnsafeSiteName {
        path: PathBuf,
        at: RowRef,
        site: String,
    },
    /// Two site names that would give the same map file on a case-insensitive file system.
    #[error(
        "{path}: sites {first:?} and {second:?} differ only in case; their map files would collide"
    )]
    SiteNameClash {
        path: PathBuf,
        first: String,
        second: String,
    },
    /// The same record appears twice in an entity file.
    #[error(
        "{path}, {at}: record {id:?} of site {site:?} appears a second time (first at {first})"
    )]
    DuplicateRecord {
        path: PathBuf,
        at: RowRef,
        first: RowRef,
        site: String,
        id: String,
    },
    /// An entity map holds the rows of more than one site.
    #[error(
        "{path} holds the rows of several sites ({}); a site's map holds only its own rows: run `pprl split` first",
        sites.join(", ")
    )]
    SeveralSites { path: PathBuf, sites: Vec<String> },
    /// An entity map belongs to another site than the one expected.
    #[error("{path} is the entity map of site {found:?}, not of site {expected:?}")]
    WrongSite {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A CSV payload that cannot be read: a row with the wrong number of
    /// fields, a value that is not UTF-8, no header.
    #[error(transparent)]
    Records(#[from] crate::io::records::RecordsError),
    /// A header names the same column twice, or names none.
    #[error("{path}: the header has {problem}")]
    BadHeader { path: PathBuf, problem: String },
    /// A column named on the command line is not in the payload.
    #[error(
        "{path} has no column `{column}` ({role}); it has: {}{}",
        found.join(", "),
        crate::io::records::delimiter_hint(*other_delimiter)
    )]
    UnknownColumn {
        path: PathBuf,
        column: String,
        role: &'static str,
        found: Vec<String>,
        /// For a CSV payload, a common delimiter that the header's only column
        /// contains (see [`likely_delimiter`](crate::io::records::likely_delimiter)).
        other_delimiter: Option<char>,
    },
    /// The payload has a column the release itself writes.
    #[error(
        "{path} has a column named `{column}`, which the released file uses for the entity id; rename it or drop it"
    )]
    ReservedColumn { path: PathBuf, column: String },
    /// The payload holds the same record id twice.
    #[error(
        "{path}, {at}, column `{column}`: record id {id:?} appears a second time (first at {first})"
    )]
    DuplicatePayloadId {
        path: PathBuf,
        at: RowRef,
        first: RowRef,
        column: String,
        id: String,
    },
    /// The payload has columns that the linkage schema marks as identifying.
    #[error(
        "{path} has columns that the linkage schema marks as identifying: {}; \
         remove them, or name each one explicitly to release it anyway",
        columns.join(", ")
    )]
    IdentifyingColumns { path: PathBuf, columns: Vec<String> },
    /// Not one record id of the map occurs in the payload: most likely the map of another site.
    #[error(
        "none of the {map_rows} record ids of {map} (site {site:?}) occurs in column `{column}` of {payload} \
         ({payload_rows} rows): is this the map of another site, or the wrong id column?"
    )]
    NoOverlap {
        map: PathBuf,
        payload: PathBuf,
        site: String,
        column: String,
        map_rows: usize,
        payload_rows: usize,
    },
    /// With [`ReleaseOptions::require_complete`]: rows on one side have no partner on the other.
    #[error(
        "{payload_without_entity} payload rows have no entity id and {map_without_payload} map rows \
         have no payload row (complete match required)"
    )]
    Incomplete {
        payload_without_entity: usize,
        map_without_payload: usize,
    },
    /// The output would overwrite one of the inputs.
    #[error("the output {output} is one of the inputs; choose another output path")]
    OutputIsInput { output: PathBuf },
}

/// What [`release`] does. Build it with [`ReleaseOptions::new`] and change
/// the fields that differ from the defaults.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The site's entity map (`maps/<SITE>.map.parquet`).
    pub map: PathBuf,
    /// The site's payload, CSV or Parquet.
    pub payload: PathBuf,
    /// How the payload is read.
    pub payload_format: PayloadFormat,
    /// The CSV field delimiter (ignored for Parquet).
    pub csv_delimiter: u8,
    /// The payload column holding the site's record id (the `id` of the map).
    pub id_column: String,
    /// Columns the linkage schema marks as identifying (from
    /// [`crate::schema::Schema::identifying_columns`]). Names compare without
    /// regard to case or surrounding whitespace, so that `Surname ` in a payload
    /// header is caught by `surname` in the schema.
    pub identifying_columns: Vec<String>,
    /// Identifying columns that are released anyway, by explicit choice.
    pub include_identifying: Vec<String>,
    /// Payload columns left out of the released file.
    pub drop_columns: Vec<String>,
    /// Keep the site's record id column (it is dropped by default).
    pub keep_record_id: bool,
    /// The site this release is for; the map must belong to it.
    pub site: Option<String>,
    /// Fail unless every payload row has an entity id and every map row a payload row.
    pub require_complete: bool,
    /// The released Parquet file.
    pub output: PathBuf,
}

impl ReleaseOptions {
    /// Options with the defaults: payload format from the file extension
    /// (CSV unless it ends in `.parquet` or `.pq`), `,` as delimiter, no
    /// identifying columns known, record id dropped.
    pub fn new(map: &Path, payload: &Path, id_column: &str, output: &Path) -> ReleaseOptions {
        ReleaseOptions {
            map: map.to_path_buf(),
            payload: payload.to_path_buf(),
            payload_format: PayloadFormat::from_path(payload).unwrap_or(PayloadFormat::Csv),
            csv_delimiter: b',',
            id_column: id_column.to_owned(),
            identifying_columns: Vec::new(),
            include_identifying: Vec::new(),
            drop_columns: Vec::new(),
            keep_record_id: false,
            site: None,
            require_complete: false,
            output: output.to_path_buf(),
        }
    }
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSummary {
    /// The site the map belongs to.
    pub site: String,
    /// Rows in the payload.
    pub payload_rows: usize,
    /// Rows in the entity map.
    pub map_rows: usize,
    /// Rows written: payload rows with an entity id.
    pub released_rows: usize,
    /// Payload rows whose record id is not in the map. They are not released:
    /// without an entity id an analyst could not join them.
    pub payload_without_entity: usize,
    /// Map rows whose record id is not in the payload (records that were
    /// encoded but have no payload). Nothing is written for them.
    pub map_without_payload: usize,
    /// The columns of the released file, `entity_id` first.
    pub columns: Vec<String>,
    /// Payload columns left out (the record id unless kept, and any dropped column).
    pub dropped_columns: Vec<String>,
    /// Identifying columns released by explicit choice.
    pub identifying_released: Vec<String>,
}

/// Joins a site's payload to its entity map and writes the released Parquet
/// file: `entity_id` (Int64) first, then the payload columns in payload order
/// (CSV columns as Utf8, empty fields as nulls; Parquet columns keep their
/// types), rows sorted by `entity_id` then record id. File metadata:
/// `pprl.engine_version`, `pprl.site`, `pprl.record_count`.
///
/// Payload rows without a map row are left out and map rows without a payload
/// row give nothing; both are counted in the [`ReleaseSummary`].
///
/// # Errors
/// A [`ReleaseError`] naming the file, row and column: an unreadable or
/// malformed input, duplicate record ids, a map of another site (or one whose
/// ids do not occur in the payload at all), an unknown column, or identifying
/// columns not named in [`ReleaseOptions::include_identifying`]. Nothing is
/// written then.
pub fn release(options: &ReleaseOptions) -> Result<ReleaseSummary, ReleaseError> {
    refuse_output_over_input(options)?;
    let map = read_entities(&options.map)?;
    let site = map_site(&map, &options.map, options.site.as_deref())?;

    let payload = payload::read(
        &options.payload,
        options.payload_format,
        options.csv_delimiter,
        &options.id_column,
    )?;
    let plan = plan_columns(options, &payload.batch)?;

    // Join: one pass over the map, looking each record id up in the payload.
    let mut row_of_id: HashMap<&str, usize> = HashMap::with_capacity(payload.ids.len());
    for (row, id) in payload.ids.iter().enumerate() {
        row_of_id.insert(id.as_str(), row);
    }
    let mut joined: Vec<(i64, &str, usize)> = Vec::with_capacity(map.len().min(payload.ids.len()));
    for (entity_id, id) in map.entity_ids.iter().zip(&map.ids) {
        if let Some(&row) = row_of_id.get(id.as_str()) {
            joined.push((*entity_id, id.as_str(), row));
        }
    }
    let payload_rows = payload.ids.len();
    let map_rows = map.len();
    if joined.is_empty() && map_rows > 0 && payload_rows > 0 {
        return Err(ReleaseError::NoOverlap {
            map: options.map.clone(),
            payload: options.payload.clone(),
            site,
            column: options.id_column.clone(),
            map_rows,
            payload_rows,
        });
    }
    let payload_without_entity = payload_rows - joined.len();
    let map_without_payload = map_rows - joined.len();
    if options.require_complete && (payload_without_entity > 0 || map_without_payload > 0) {
        return Err(ReleaseError::Incomplete {
            payload_without_entity,
            map_without_payload,
        });
    }

    // Record ids are unique within a site, so this order is total.
    joined.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let batch = released_batch(&payload.batch, &plan.keep, &joined)
        .map_err(|source| table_arrow_error(&options.output, source))?;
    let record_count = batch.num_rows().to_string();
    table::write_batch(
        &options.output,
        &batch,
        &[
            ("pprl.engine_version", crate::ENGINE_VERSION),
            ("pprl.site", &site),
            ("pprl.record_count", &record_count),
        ],
    )?;

    Ok(ReleaseSummary {
        site,
        payload_rows,
        map_rows,
        released_rows: joined.len(),
        payload_without_entity,
        map_without_payload,
        columns: batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        dropped_columns: plan.dropped,
        identifying_released: plan.identifying_released,
    })
}

/// Which payload columns go into the released file.
struct ColumnPlan {
    keep: Vec<usize>,
    dropped: Vec<String>,
    identifying_released: Vec<String>,
}

fn column_key(name: &str) -> String {
    name.trim().to_lowercase()
}

fn plan_columns(options: &ReleaseOptions, batch: &RecordBatch) -> Result<ColumnPlan, ReleaseError> {
    let schema = batch.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |column: &str, role: &'static str| -> Result<usize, ReleaseError> {
        names
            .iter()
            .position(|n| n == column)
            .ok_or_else(|| ReleaseError::UnknownColumn {
                path: options.payload.clone(),
                column: column.to_owned(),
                role,
                found: names.clone(),
                // The payload was read: its delimiter found the id column.
                other_delimiter: None,
            })
    };
    let id_index = find(&options.id_column, "the record id column")?;
    let mut drop = vec![false; names.len()];
    for column in &options.drop_columns {
        drop[find(column, "a column to drop")?] = true;
    }
    let mut included = vec![false; names.len()];
    for column in &options.include_identifying {
        included[find(column, "an identifying column to release")?] = true;
    }
    if !options.keep_record_id {
        drop[id_index] = true;
    }

    let identifying: std::collections::HashSet<String> = options
        .identifying_columns
        .iter()
        .map(|c| column_key(c))
        .collect();
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    let mut refused = Vec::new();
    let mut identifying_released = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if drop[index] {
            dropped.push(name.clone());
            continue;
        }
        if name == ENTITY_ID {
            return Err(ReleaseError::ReservedColumn {
                path: options.payload.clone(),
                column: name.clone(),
            });
        }
        if identifying.contains(&column_key(name)) {
            if included[index] {
                identifying_released.push(name.clone());
            } else {
                refused.push(name.clone());
            }
        }
        keep.push(index);
    }
    if !refused.is_empty() {
        return Err(ReleaseError::IdentifyingColumns {
            path: options.payload.clone(),
            columns: refused,
        });
    }
    Ok(ColumnPlan {
        keep,
        dropped,
        identifying_released,
    })
}

/// The site of an entity map: the one site of its rows, which must agree with
/// its `pprl.site` metadata and with the site expected by the caller.
fn map_site(
    map: &EntityTable,
    path: &Path,
    expected: Option<&str>,
) -> Result<String, ReleaseError> {
    let mut sites: Vec<&str> = map.sites.iter().map(String::as_str).collect();
    sites.sort_unstable();
    sites.dedup();
    if sites.len() > 1 {
        return Err(ReleaseError::SeveralSites {
            path: path.to_path_buf(),
            sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    let from_rows = sites.first().copied();
    let from_meta = map.metadata.get("pprl.site").map(String::as_str);
    if let (Some(rows), Some(meta)) = (from_rows, from_meta)
        && rows != meta
    {
        return Err(ReleaseError::WrongSite {
            path: path.to_path_buf(),
            expected: meta.to_owned(),
            found: rows.to_owned(),
        });
    }
    let site = from_rows.or(from_meta);
    match (site, expected) {
        (Some(found), Some(expected)) if found != expected => Err(ReleaseError::WrongSite {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            found: found.to_owned(),
        }),
        (Some(found), _) => Ok(found.to_owned()),
        (None, Some(expected)) => Ok(expected.to_owned()),
        (None, None) => Ok(String::new()),
    }
}

fn released_batch(
    payload: &RecordBatch,
    keep: &[usize],
    joined: &[(i64, &str, usize)],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let indices = UInt64Array::from_iter_values(joined.iter().map(|j| j.2 as u64));
    let entity_ids = Int64Array::from_iter_values(joined.iter().map(|j| j.0));
    let payload_schema = payload.schema();
    let mut fields = vec![Field::new(ENTITY_ID, DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(entity_ids)];
    for &index in keep {
        let field = payload_schema.field(index);
        fields.push(Field::new(
            field.name(),
            field.data_type().clone(),
            field.is_nullable(),
        ));
        columns.push(arrow_select::take::take(
            payload.column(index).as_ref(),
            &indices,
            None,
        )?);
    }
    RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns)
}

fn table_arrow_error(path: &Path, source: arrow_schema::ArrowError) -> ReleaseError {
    ReleaseError::Table(TableError::Arrow {
        path: path.to_path_buf(),
        source,
    })
}

fn refuse_output_over_input(options: &ReleaseOptions) -> Result<(), ReleaseError> {
    let Ok(output) = options.output.canonicalize() else {
        return Ok(()); // the output does not exist yet
    };
    for input in [&options.map, &options.payload] {
        if input.canonicalize().is_ok_and(|i| i == output) {
            return Err(ReleaseError::OutputIsInput {
                output: options.output.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_columns_names_the_first_absent_one_and_those_there_are() {
        let schema = ArrowSchema::new(vec![
            Field::new("site", DataType::Utf8, false),
            Field::new("id", DataType::Utf8, false),
        ]);
        let path = Path::new("e.parquet");
        ColumnError::require_columns(path, &schema, &[("id", "Utf8"), ("site", "Utf8")]).unwrap();
        let err = ColumnError::require_columns(
            path,
            &schema,
            &[("site", "Utf8"), ("entity_id", "Int64"), ("x", "Utf8")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "e.parquet has no column `entity_id` (expected Int64); it has: site, id"
        );
    }

    fn batch_with(names: &[&str]) -> RecordBatch {
        let fields: Vec<Field> = names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect();
        let columns: Vec<ArrayRef> = names
            .iter()
            .map(|_| Arc::new(arrow_array::StringArray::from(vec!["x"])) as ArrayRef)
            .collect();
        RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns).unwrap()
    }

    fn options() -> ReleaseOptions {
        let mut o = ReleaseOptions::new(
            Path::new("m.parquet"),
            Path::new("p.csv"),
            "rec_id",
            Path::new("o.parquet"),
        );
        o.identifying_columns = vec!["surname".into(), "dob".into()];
        o
    }

    #[test]
    fn identifying_columns_compare_without_case_or_whitespace() {
        let batch = batch_with(&["rec_id", " Surname ", "weight"]);
        let err = plan_columns(&options(), &batch).err().unwrap();
        match err {
            ReleaseError::IdentifyingColumns { columns, .. } => assert_eq!(columns, [" Surname "]),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn record_id_is_dropped_unless_kept() {
        let batch = batch_with(&["weight", "rec_id"]);
        let plan = plan_columns(&options(), &batch).unwrap();
        assert_eq!(plan.keep, [0]);
        assert_eq!(plan.dropped, ["rec_id"]);
        let mut keep = options();
        keep.keep_record_id = true;
        let plan = plan_columns(&keep, &batch).unwrap();
        assert_eq!(plan.keep, [0, 1]);
        assert!(plan.dropped.is_empty());
    }

    #[test]
    fn dropped_identifying_columns_need_no_flag() {
        let batch = batch_with(&["rec_id", "surname", "dob", "weight"]);
        let mut o = options();
        o.drop_columns = vec!["surname".into()];
        o.include_identifying = vec!["dob".into()];
        let plan = plan_columns(&o, &batch).unwrap();
        assert_eq!(plan.keep, [2, 3]);
        assert_eq!(plan.identifying_released, ["dob"]);
        assert_eq!(plan.dropped, ["rec_id", "surname"]);
    }

    #[test]
    fn a_payload_column_named_entity_id_is_refused() {
        let batch = batch_with(&["rec_id", "entity_id"]);
        let err = plan_columns(&options(), &batch).err().unwrap();
        assert!(matches!(err, ReleaseError::ReservedColumn { .. }), "{err}");
    }

    #[test]
    fn unknown_flag_columns_are_named() {
        let batch = batch_with(&["rec_id", "weight"]);
        let mut o = options();
        o.include_identifying = vec!["surnme".into()];
        let err = plan_columns(&o, &batch).err().unwrap();
        assert!(err.to_string().contains("`surnme`"), "{err}");
        assert!(err.to_string().contains("rec_id, weight"), "{err}");
    }
}
