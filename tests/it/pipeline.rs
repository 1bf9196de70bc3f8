//! The one-command example end to end: quality, payload attachment, and that
//! nothing identifying reaches the linkage unit or the analysts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow_array::{Int64Array, RecordBatch, StringArray};

use crate::util::{fixture, run_ok};

fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let column = column.as_any().downcast_ref::<StringArray>().expect("Utf8");
    column
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let column = column.as_any().downcast_ref::<Int64Array>().expect("Int64");
    column.values().to_vec()
}

fn table(path: &Path) -> RecordBatch {
    let (schema, batches, _) = pprl::io::table::read_batches(path).expect("readable Parquet");
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

/// Febrl's entity number: `rec-N-org` / `rec-N-dup-M` -> N.
fn febrl_n(id: &str) -> &str {
    id.split('-').nth(1).expect("rec-N-...")
}

/// Every identifying value of a Febrl file (all columns but rec_id), long
/// enough that finding it by chance in compressed or random bytes is unlikely.
fn identifier_values(csv: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut values = HashSet::new();
    for line in text.lines().skip(1) {
        for field in line.split(',').skip(1) {
            let field = field.trim();
            if field.len() >= 6 {
                values.insert(field.to_owned());
            }
        }
    }
    values
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn example_pipeline_links_releases_and_leaks_nothing() {
    let dir = crate::util::temp_dir();
    let root = dir.path().join("example");
    let out = run_ok([
        "example",
        "--out-dir",
        root.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");

    // Quality, recomputed here from links.parquet rather than taken from the report.
    let unit = root.join("linkage-unit");
    let links = table(&unit.join("links.parquet"));
    let (id_a, id_b) = (strings(&links, "id_a"), strings(&links, "id_b"));
    let true_links = id_a
        .iter()
        .zip(&id_b)
        .filter(|(a, b)| febrl_n(a) == febrl_n(b))
        .count();
    let precision = true_links as f64 / id_a.len() as f64;
    let recall = true_links as f64 / 5000.0;
    println!(
        "example: {} links, precision {precision:.4}, recall {recall:.4}",
        id_a.len()
    );
    assert!(precision >= 0.99, "precision {precision}");
    assert!(recall >= 0.98, "recall {recall}");
    assert!(stdout.contains("precision") && stdout.contains("recall"));

    // Payload attachment: each released row carries the payload of the record
    // that the site's map puts under that entity id, and true matches share it.
    let maps = unit.join("maps");
    let mut entity_of: HashMap<(String, String), i64> = HashMap::new();
    for (site, dir_name) in [("A", "site-a"), ("B", "site-b")] {
        let map = table(&maps.join(format!("{site}.map.parquet")));
        let (entity_ids, ids) = (ints(&map, "entity_id"), strings(&map, "id"));
        assert!(
            strings(&map, "site").iter().all(|s| s == site),
            "map holds only its site"
        );
        let rec_of_entity: HashMap<i64, &String> = entity_ids.iter().copied().zip(&ids).collect();
        for (e, id) in entity_ids.iter().zip(&ids) {
            entity_of.insert((site.to_owned(), id.clone()), *e);
        }

        let payload_text =
            std::fs::read_to_string(root.join(dir_name).join("clinical.csv")).unwrap();
        let payload: HashMap<&str, Vec<&str>> = payload_text
            .lines()
            .skip(1)
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                (fields[0], fields[1..].to_vec())
            })
            .collect();
        let linked = table(
            &root
                .join(dir_name)
                .join(format!("{}.linked.parquet", site.to_lowercase())),
        );
        let names: Vec<String> = linked
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names[0], "entity_id");
        assert!(
            !names.contains(&"rec_id".to_owned()),
            "record id dropped: {names:?}"
        );
        let released_ids = ints(&linked, "entity_id");
        assert_eq!(released_ids.len(), 5000);
        let payload_columns: Vec<Vec<String>> =
            names[1..].iter().map(|n| strings(&linked, n)).collect();
        for (row, e) in released_ids.iter().enumerate() {
            let rec = rec_of_entity[e];
            let expected = &payload[rec.as_str()];
            let got: Vec<&str> = payload_columns.iter().map(|c| c[row].as_str()).collect();
            assert_eq!(
                &got, expected,
                "site {site} entity {e} carries {rec}'s payload"
            );
        }
    }
    for (a, b) in id_a.iter().zip(&id_b) {
        assert_eq!(
            entity_of[&("A".to_owned(), a.clone())],
            entity_of[&("B".to_owned(), b.clone())],
            "linked {a} and {b} share an entity"
        );
    }

    // What leaves the sites: encodings to the linkage unit, linked files to analysts.
    let mut leaving: Vec<PathBuf> = files_under(&unit);
    for dir_name in ["site-a", "site-b"] {
        leaving.extend(
            files_under(&root.join(dir_name))
                .into_iter()
                .filter(|p| p.to_string_lossy().ends_with(".parquet")),
        );
    }
    assert!(leaving.len() >= 8, "{leaving:?}");
    let mut identifiers = identifier_values(&fixture("febrl4_a.csv"));
    identifiers.extend(identifier_values(&fixture("febrl4_b.csv")));
    assert!(identifiers.len() > 10_000);
    let secret = std::fs::read(root.join("sites-only.key")).unwrap();
    let secret = secret.trim_ascii_end();
    let identifiers: Vec<String> = identifiers.into_iter().collect();
    let searcher = aho_corasick::AhoCorasick::new(&identifiers).unwrap();
    for path in &leaving {
        let bytes = std::fs::read(path).unwrap();
        let leaked: Vec<&String> = searcher
            .find_overlapping_iter(&bytes)
            .take(5)
            .map(|m| &identifiers[m.pattern().as_usize()])
            .collect();
        assert!(
            leaked.is_empty(),
            "{} contains identifiers {leaked:?}",
            path.display()
        );
        assert!(
            !memmem(&bytes, secret),
            "{} contains the secret",
            path.display()
        );
    }
    assert!(!stdout.contains(std::str::from_utf8(secret).unwrap()));
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The native schema shown in the README is valid, so users can start from it.
#[test]
fn readme_schema_example_is_valid() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let start = readme.find("```json\n").expect("a json block") + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let schema =
        pprl::schema::Schema::from_json(&readme[start..end]).expect("README schema parses");
    assert_eq!(schema.filter_bits(), 1024);
    assert_eq!(
        schema.identifying_columns(),
        vec!["surname", "date_of_birth"]
    );
}
