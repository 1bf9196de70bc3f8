//! Split: `entities.parquet` cut into one entity map per site, so that each
//! site receives only its own rows (`<out_dir>/<SITE>.map.parquet`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};

use super::{ReleaseError, RowRef, read_entities};
use crate::io::table::{self, TableError};

/// Longest site name accepted: it becomes part of a file name.
const MAX_SITE_NAME: usize = 64;

/// One map written by [`split`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteMap {
    /// The site.
    pub site: String,
    /// The map file.
    pub path: PathBuf,
    /// Rows (records of the site).
    pub records: usize,
    /// Distinct entity ids among them.
    pub entities: usize,
}

/// What [`split`] wrote, one map per site in site order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSummary {
    /// The maps.
    pub maps: Vec<SiteMap>,
}

/// Whether `site` can safely become part of a file name on every common file
/// system: 1 to 64 ASCII letters, digits, `_`, `-` or `.`, starting with a
/// letter or digit (so no path separators, no `..`, no hidden files), and not
/// a device name that Windows reserves (`CON`, `NUL`, `COM1`, ...).
pub fn is_safe_site_name(site: &str) -> bool {
    let mut chars = site.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let stem = site
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let reserved = matches!(stem.as_str(), "con" | "prn" | "aux" | "nul")
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    site.len() <= MAX_SITE_NAME
        && !reserved
        && first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The map file name of a site: `<SITE>.map.parquet`.
pub fn map_file_name(site: &str) -> String {
    format!("{site}.map.parquet")
}

/// Writes one map per site of `entities` into `out_dir` (created if needed):
/// the site's rows with the columns of `entities.parquet`, sorted by
/// (`entity_id`, `id`), and metadata `pprl.site`, `pprl.engine_version` and
/// `pprl.record_count`.
///
/// Every site name is checked before anything is written; each map is
/// written atomically.
///
/// # Errors
/// [`ReleaseError`]: an unreadable or malformed entity file, a duplicate
/// record, a site name that is not a safe file name ([`is_safe_site_name`]),
/// two site names that differ only in case, or a failed write.
pub fn split(entities: &Path, out_dir: &Path) -> Result<SplitSummary, ReleaseError> {
    let table = read_entities(entities)?;

    // Group rows by site; BTreeMap gives maps in site order.
    let mut by_site: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (row, site) in table.sites.iter().enumerate() {
        if !by_site.contains_key(site.as_str()) && !is_safe_site_name(site) {
            return Err(ReleaseError::UnsafeSiteName {
                path: entities.to_path_buf(),
                at: RowRef::Row(row as u64 + 1),
                site: site.clone(),
            });
        }
        by_site.entry(site.as_str()).or_default().push(row);
    }
    let mut lower: BTreeMap<String, &str> = BTreeMap::new();
    for site in by_site.keys() {
        if let Some(first) = lower.insert(site.to_ascii_lowercase(), site) {
            return Err(ReleaseError::SiteNameClash {
                path: entities.to_path_buf(),
                first: first.to_owned(),
                second: (*site).to_owned(),
            });
        }
    }

    std::fs::create_dir_all(out_dir).map_err(TableError::io(out_dir))?;
    let schema = Arc::new(ArrowSchema::new(vec![
        Field::new("entity_id", DataType::Int64, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
    ]));
    let mut maps = Vec::with_capacity(by_site.len());
    for (site, mut rows) in by_site {
        rows.sort_unstable_by(|&a, &b| {
            (table.entity_ids[a], &table.ids[a]).cmp(&(table.entity_ids[b], &table.ids[b]))
        });
        let entity_ids = Int64Array::from_iter_values(rows.iter().map(|&r| table.entity_ids[r]));
        let mut distinct: Vec<i64> = entity_ids.values().to_vec();
        distinct.dedup(); // sorted by entity id already
        let columns: Vec<ArrayRef> = vec![
            Arc::new(entity_ids),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| site))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|&r| table.ids[r].as_str()),
            )),
        ];
        let path = out_dir.join(map_file_name(site));
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|source| TableError::Arrow {
                path: path.clone(),
                source,
            })?;
        let count = rows.len().to_string();
        table::write_batch(
            &path,
            &batch,
            &[
                ("pprl.engine_version", crate::ENGINE_VERSION),
                ("pprl.site", site),
                ("pprl.record_count", &count),
            ],
        )?;
        maps.push(SiteMap {
            site: site.to_owned(),
            path,
            records: rows.len(),
            entities: distinct.len(),
        });
    }
    Ok(SplitSummary { maps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_site_names() {
        for ok in ["A", "site_b", "hospital-3", "reg.2024", "9"] {
            assert!(is_safe_site_name(ok), "{ok}");
        }
        for bad in [
            "", "../x", "a/b", "a\\b", ".hidden", "-x", "a b", "é", "..", "c:", "x\0", "CON",
            "nul.x", "com1",
        ] {
            assert!(!is_safe_site_name(bad), "{bad:?}");
        }
        assert!(!is_safe_site_name(&"a".repeat(65)));
        assert!(is_safe_site_name(&"a".repeat(64)));
    }
}
