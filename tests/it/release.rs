//! `pprl split` and `pprl release`: maps per site, payload joined to entity
//! ids, identifying columns refused, bad input refused without output, and
//! the released files read back by an independent reader (DuckDB).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use pprl::io::table;
use pprl::release::{ReleaseError, ReleaseOptions};

use crate::util::{fixture, run_duckdb_script, run_err, run_ok, temp_dir};

/// Writes an entity file (or a map) with rows (entity_id, site, id).
pub fn write_entities(path: &Path, rows: &[(i64, &str, &str)], metadata: &[(&str, &str)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("entity_id", DataType::Int64, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    table::write_batch(path, &batch, metadata).unwrap();
}

/// The entity file used by most tests: three sites, four entities.
fn entities(dir: &Path) -> PathBuf {
    let path = dir.join("entities.parquet");
    write_entities(
        &path,
        &[
            (0, "A", "a1"),
            (0, "B", "b1"),
            (1, "A", "a2"),
            (1, "C", "c1"),
            (2, "A", "a3"),
            (3, "B", "b2"),
        ],
        &[],
    );
    path
}

/// Column `name` of a whole file as optional strings (any type, via its text).
fn column_text(path: &Path, name: &str) -> Vec<Option<String>> {
    let (_, batches, _) = table::read_batches(path).unwrap();
    let mut out = Vec::new();
    for batch in batches {
        let col = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        let text = arrow_cast::cast(col, &DataType::Utf8).unwrap();
        let text = text.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..text.len()).map(|i| (!text.is_null(i)).then(|| text.value(i).to_owned())));
    }
    out
}

fn column_names(path: &Path) -> Vec<String> {
    let (schema, _, _) = table::read_batches(path).unwrap();
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

fn entity_ids(path: &Path) -> Vec<i64> {
    let (schema, batches, _) = table::read_batches(path).unwrap();
    assert_eq!(schema.field(0).name(), "entity_id");
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn strings(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files in `dir`, sorted (to show that a failed run left nothing behind).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Splits `entities(dir)` into `dir/maps` and returns that directory.
fn split_maps(dir: &Path) -> PathBuf {
    let maps = dir.join("maps");
    run_ok([
        "split".as_ref(),
        "--entities".as_ref(),
        entities(dir).as_os_str(),
        "--out-dir".as_ref(),
        maps.as_os_str(),
    ]);
    maps
}

/// The payload of site A: Febrl-style `, ` separators, a byte order mark, a
/// quoted field with the delimiter in it, an identifying column, a row (a9)
/// that has no map row, and no row for a3 (which is in the map).
const PAYLOAD_A: &str = "\u{feff}rec_id, weight, diagnosis, surname\r\n\
    a2, 81.5, \"J45, asthma\", smith\r\n\
    a1, 70, E11, jones\r\n\
    a9, 66, I10, brown\r\n";

fn write_payload_a(dir: &Path) -> PathBuf {
    let path = dir.join("clinical_a.csv");
    std::fs::write(&path, PAYLOAD_A).unwrap();
    path
}

/// `pprl release` arguments with the clkhash tutorial schema (given_name,
/// surname, ... date_of_birth are identifying; rec_id and soc_sec_id are
/// ignored), followed by `extra`.
fn release_args(map: &Path, payload: &Path, output: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "release".into(),
        "--map".into(),
        map.into(),
        "--payload".into(),
        payload.into(),
        "--id-column".into(),
        "rec_id".into(),
        "--schema".into(),
        fixture("clkhash_v3_blake.schema.json").into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}

#[test]
fn split_writes_one_map_per_site_with_only_its_rows() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    assert_eq!(
        files_in(&maps),
        ["A.map.parquet", "B.map.parquet", "C.map.parquet"]
    );
    let a = maps.join("A.map.parquet");
    assert_eq!(entity_ids(&a), [0, 1, 2]);
    assert_eq!(column_text(&a, "site"), strings(&["A", "A", "A"]));
    assert_eq!(column_text(&a, "id"), strings(&["a1", "a2", "a3"]));
    let b = maps.join("B.map.parquet");
    assert_eq!(entity_ids(&b), [0, 3]);
    assert_eq!(column_text(&b, "id"), strings(&["b1", "b2"]));
    assert_eq!(
        column_text(&maps.join("C.map.parquet"), "id"),
        strings(&["c1"])
    );
    let (_, _, meta) = table::read_batches(&b).unwrap();
    assert_eq!(meta.get("pprl.site").map(String::as_str), Some("B"));
    assert_eq!(meta.get("pprl.record_count").map(String::as_str), Some("2"));
}

#[test]
fn split_refuses_unsafe_site_names_and_writes_nothing() {
    let dir = temp_dir();
    let entities = dir.path().join("entities.parquet");
    write_entities(&entities, &[(0, "A", "a1"), (0, "../evil", "x1")], &[]);
    let maps = dir.path().join("maps");
    let err = run_err([
        "split".as_ref(),
        "--entities".as_ref(),
        entities.as_os_str(),
        "--out-dir".as_ref(),
        maps.as_os_str(),
    ]);
    assert!(
        err.contains("\"../evil\"") && err.contains("row 2"),
        "{err}"
    );
    assert!(!maps.exists(), "nothing may be written");
    assert_eq!(files_in(dir.path()), ["entities.parquet"]);
}

#[test]
fn split_refuses_a_malformed_entity_file() {
    let dir = temp_dir();
    let path = dir.path().join("entities.parquet");
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["a1"])) as ArrayRef],
    )
    .unwrap();
    table::write_batch(&path, &batch, &[]).unwrap();
    let err = run_err([
        "split".as_ref(),
        "--entities".as_ref(),
        path.as_os_str(),
        "--out-dir".as_ref(),
        dir.path().join("maps").as_os_str(),
    ]);
    assert!(err.contains("no column `entity_id`"), "{err}");

    write_entities(&path, &[(0, "A", "a1"), (-3, "B", "b1")], &[]);
    let err = run_err([
        "split".as_ref(),
        "--entities".as_ref(),
        path.as_os_str(),
        "--out-dir".as_ref(),
        dir.path().join("maps").as_os_str(),
    ]);
    assert!(
        err.contains("row 2") && err.contains("-3 is not an entity id"),
        "{err}"
    );
    assert!(!dir.path().join("maps").exists());
}

#[test]
fn release_joins_payload_to_entity_ids_and_counts_unmatched_rows() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = write_payload_a(dir.path());
    let output = dir.path().join("a.linked.parquet");
    let args = release_args(
        &maps.join("A.map.parquet"),
        &payload,
        &output,
        &["--drop-column", "surname"],
    );
    let out = run_ok(args);

    assert_eq!(column_names(&output), ["entity_id", "weight", "diagnosis"]);
    assert_eq!(entity_ids(&output), [0, 1]);
    assert_eq!(column_text(&output, "weight"), strings(&["70", "81.5"]));
    assert_eq!(
        column_text(&output, "diagnosis"),
        strings(&["E11", "J45, asthma"])
    );
    let (_, _, meta) = table::read_batches(&output).unwrap();
    assert_eq!(meta.get("pprl.site").map(String::as_str), Some("A"));

    let text = stdout(&out);
    for line in [
        "payload rows:                             3",
        "map rows:                                 3",
        "rows released:                            2",
        "payload rows without entity id:           1  (not released)",
        "map rows without payload row:             1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn release_summary_from_the_library() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = write_payload_a(dir.path());
    let output = dir.path().join("a.parquet");
    let mut options = ReleaseOptions::new(&maps.join("A.map.parquet"), &payload, "rec_id", &output);
    options.identifying_columns = vec!["surname".into(), "given_name".into()];
    options.drop_columns = vec!["surname".into()];
    let summary = pprl::release::release(&options).unwrap();
    assert_eq!(summary.site, "A");
    assert_eq!(
        (
            summary.payload_rows,
            summary.map_rows,
            summary.released_rows
        ),
        (3, 3, 2)
    );
    assert_eq!(summary.payload_without_entity, 1);
    assert_eq!(summary.map_without_payload, 1);
    assert_eq!(summary.columns, ["entity_id", "weight", "diagnosis"]);
    assert_eq!(summary.dropped_columns, ["rec_id", "surname"]);

    // Requiring a complete match turns the unmatched rows into an error, and
    // the earlier output stays as it was.
    let before = std::fs::read(&output).unwrap();
    options.require_complete = true;
    let err = pprl::release::release(&options).unwrap_err();
    assert!(
        matches!(
            err,
            ReleaseError::Incomplete {
                payload_without_entity: 1,
                map_without_payload: 1
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&output).unwrap(), before);
}

#[test]
fn release_refuses_identifying_columns_unless_named() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = write_payload_a(dir.path());
    let output = dir.path().join("a.linked.parquet");
    let map = maps.join("A.map.parquet");

    let err = run_err(release_args(&map, &payload, &output, &[]));
    assert!(err.contains("surname"), "{err}");
    assert!(err.contains("--include-identifying-column"), "{err}");
    assert!(
        !err.contains("weight"),
        "only the identifying columns are listed: {err}"
    );
    assert!(!output.exists());

    let args = release_args(
        &map,
        &payload,
        &output,
        &["--include-identifying-column", "surname"],
    );
    let out = run_ok(args);
    assert!(
        stdout(&out).contains("WARNING: identifying columns released by explicit choice: surname")
    );
    assert_eq!(
        column_names(&output),
        ["entity_id", "weight", "diagnosis", "surname"]
    );
    assert_eq!(
        column_text(&output, "surname"),
        strings(&["jones", "smith"])
    );
}

#[test]
fn record_id_is_dropped_unless_kept() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = write_payload_a(dir.path());
    let map = maps.join("A.map.parquet");

    let dropped = dir.path().join("dropped.parquet");
    let args = release_args(&map, &payload, &dropped, &["--drop-column", "surname"]);
    run_ok(args);
    assert!(!column_names(&dropped).contains(&"rec_id".to_owned()));

    let kept = dir.path().join("kept.parquet");
    let args = release_args(
        &map,
        &payload,
        &kept,
        &["--drop-column", "surname", "--keep-record-id"],
    );
    run_ok(args);
    assert_eq!(
        column_names(&kept),
        ["entity_id", "rec_id", "weight", "diagnosis"]
    );
    assert_eq!(column_text(&kept, "rec_id"), strings(&["a1", "a2"]));
}

#[test]
fn duplicate_payload_ids_are_refused_without_output() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = dir.path().join("dup.csv");
    std::fs::write(&payload, "rec_id,weight\na1,70\na2,80\na1,71\n").unwrap();
    let output = dir.path().join("out.parquet");
    let err = run_err(release_args(
        &maps.join("A.map.parquet"),
        &payload,
        &output,
        &[],
    ));
    assert!(
        err.contains("line 4") && err.contains("\"a1\"") && err.contains("first at line 2"),
        "{err}"
    );
    assert!(!output.exists());
    assert_eq!(
        files_in(dir.path()),
        ["dup.csv", "entities.parquet", "maps"]
    );
}

#[test]
fn a_map_of_another_site_is_refused() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = write_payload_a(dir.path());
    let output = dir.path().join("out.parquet");

    // Named site differs from the map's.
    let args = release_args(
        &maps.join("A.map.parquet"),
        &payload,
        &output,
        &["--site", "B", "--drop-column", "surname"],
    );
    let err = run_err(args);
    assert!(
        err.contains("entity map of site \"A\", not of site \"B\""),
        "{err}"
    );

    // No site named, but not one id of B's map is in A's payload.
    let args = release_args(
        &maps.join("B.map.parquet"),
        &payload,
        &output,
        &["--drop-column", "surname"],
    );
    let err = run_err(args);
    assert!(
        err.contains("none of the 2 record ids") && err.contains("another site"),
        "{err}"
    );
    assert!(!output.exists());

    // entities.parquet itself is not a site's map.
    let args = release_args(
        &dir.path().join("entities.parquet"),
        &payload,
        &output,
        &["--drop-column", "surname"],
    );
    let err = run_err(args);
    assert!(err.contains("several sites (A, B, C)"), "{err}");
    assert!(!output.exists());
}

#[test]
fn unknown_columns_are_named() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let payload = write_payload_a(dir.path());
    let output = dir.path().join("out.parquet");
    let map = maps.join("A.map.parquet");

    let args = release_args(&map, &payload, &output, &["--drop-column", "surnam"]);
    let err = run_err(args);
    assert!(
        err.contains("`surnam`") && err.contains("rec_id, weight, diagnosis, surname"),
        "{err}"
    );

    let mut args = release_args(&map, &payload, &output, &[]);
    args[6] = "patient".into(); // --id-column
    let err = run_err(args);
    assert!(err.contains("no column `patient`"), "{err}");
    assert!(!output.exists());
}

#[test]
fn parquet_payload_keeps_its_types_and_integer_ids() {
    let dir = temp_dir();
    let map = dir.path().join("S.map.parquet");
    write_entities(
        &map,
        &[(4, "S", "7"), (5, "S", "12")],
        &[("pprl.site", "S")],
    );
    let payload = dir.path().join("payload.parquet");
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("patient", DataType::Int64, false),
            Field::new("weight", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![12, 7, 99])) as ArrayRef,
            Arc::new(Float64Array::from(vec![Some(80.5), None, Some(1.0)])),
        ],
    )
    .unwrap();
    table::write_batch(&payload, &batch, &[]).unwrap();
    let output = dir.path().join("s.parquet");
    let options = ReleaseOptions::new(&map, &payload, "patient", &output);
    let summary = pprl::release::release(&options).unwrap();
    assert_eq!(summary.payload_without_entity, 1);

    let (schema, batches, _) = table::read_batches(&output).unwrap();
    assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    let weight = batches[0]
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(entity_ids(&output), [4, 5]);
    assert!(weight.is_null(0)); // id 7 -> entity 4
    assert_eq!(weight.value(1), 80.5); // id 12 -> entity 5
}

/// Releases sites A and B of one linkage, then joins them with DuckDB (an
/// independent Parquet implementation) and compares with what Rust wrote.
#[test]
fn released_files_read_correctly_with_duckdb() {
    let dir = temp_dir();
    let maps = split_maps(dir.path());
    let a_payload = write_payload_a(dir.path());
    let b_payload = dir.path().join("registry_b.csv");
    std::fs::write(&b_payload, "rec_id;stage;year\nb2;III;2019\nb1;I;2021\n").unwrap();
    let a_out = dir.path().join("a.linked.parquet");
    let b_out = dir.path().join("b.linked.parquet");
    let args = release_args(
        &maps.join("A.map.parquet"),
        &a_payload,
        &a_out,
        &["--drop-column", "surname"],
    );
    run_ok(args);
    let args = release_args(
        &maps.join("B.map.parquet"),
        &b_payload,
        &b_out,
        &["--delimiter", ";"],
    );
    run_ok(args);

    // What Rust wrote, joined on entity_id the same way DuckDB will.
    let (a_ids, b_ids) = (entity_ids(&a_out), entity_ids(&b_out));
    let (weight, diagnosis) = (
        column_text(&a_out, "weight"),
        column_text(&a_out, "diagnosis"),
    );
    let (stage, year) = (column_text(&b_out, "stage"), column_text(&b_out, "year"));
    let mut expected = Vec::new();
    for (i, a) in a_ids.iter().enumerate() {
        for (j, b) in b_ids.iter().enumerate() {
            if a == b {
                expected.push(format!(
                    "{a}|{}|{}|{}|{}",
                    weight[i].as_deref().unwrap(),
                    diagnosis[i].as_deref().unwrap(),
                    stage[j].as_deref().unwrap(),
                    year[j].as_deref().unwrap()
                ));
            }
        }
    }
    assert_eq!(
        expected,
        ["0|70|E11|I|2021"],
        "the linkage joins entity 0 only"
    );

    let script = r#"
import sys, duckdb
a, b = sys.argv[1], sys.argv[2]
con = duckdb.connect()
print("rows", con.execute(f"SELECT count(*) FROM read_parquet('{a}')").fetchone()[0],
      con.execute(f"SELECT count(*) FROM read_parquet('{b}')").fetchone()[0])
print("types", con.execute(f"SELECT typeof(entity_id), typeof(weight) FROM read_parquet('{a}') LIMIT 1").fetchone())
for row in con.execute(f"""
    SELECT a.entity_id, a.weight, a.diagnosis, b.stage, b.year
    FROM read_parquet('{a}') a JOIN read_parquet('{b}') b USING (entity_id)
    ORDER BY a.entity_id""").fetchall():
    print("join", "|".join(str(v) for v in row))
"#;
    let Some(text) = run_duckdb_script(script, &[&a_out, &b_out]) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("rows {} {}", a_ids.len(), b_ids.len()));
    assert_eq!(lines[1], "types ('BIGINT', 'VARCHAR')");
    let joined: Vec<String> = lines[2..]
        .iter()
        .map(|l| l.strip_prefix("join ").unwrap().to_owned())
        .collect();
    assert_eq!(joined, expected);
}
