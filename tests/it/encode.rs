//! `pprl encode`: output format and metadata, clkhash interoperability,
//! determinism across thread counts, no identifier or secret in any output,
//! and every kind of bad input.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray, UInt16Array};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use pprl::schema::Schema;
use pprl::secret::Secret;

use crate::util::{fixture, run_duckdb_script, run_ok, run_pprl, temp_dir, write_secret};

/// The secret of the clkhash reference vectors.
const CLKHASH_SECRET: &str = "correct horse battery staple";
/// The secret that `util::write_secret` writes.
const PROJECT_SECRET: &str = "an example project secret, 32+ bytes long";

fn clkhash_secret(dir: &Path) -> PathBuf {
    let path = dir.join("clkhash.key");
    std::fs::write(&path, CLKHASH_SECRET).unwrap();
    path
}

/// The base64 clks of a reference file.
fn reference_clks(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["clks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// The clks of an anonlink JSON output.
fn json_clks(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json.as_object().unwrap().len(),
        1,
        "only `clks`: {text:.200}"
    );
    json["clks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// `pprl encode` arguments with the given schema fixture, secret file, input and output.
fn encode_args(schema: &Path, secret: &Path, input: &Path, output: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["encode", "--site", "A", "--id-column", "rec_id", "--quiet"]
        .iter()
        .map(OsString::from)
        .collect();
    for (flag, value) in [
        ("--schema", schema),
        ("--secret-file", secret),
        ("--input", input),
        ("--output", output),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args
}

fn with(mut args: Vec<OsString>, extra: &[&str]) -> Vec<OsString> {
    args.extend(extra.iter().map(OsString::from));
    args
}

/// The first-200 clkhash input as rows of fields (header first).
fn first200_rows() -> Vec<Vec<String>> {
    std::fs::read_to_string(fixture("febrl4_a_first200.clkhash_input.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn write_rows(path: &Path, rows: &[Vec<String>]) {
    let text: String = rows.iter().map(|r| r.join(",") + "\n").collect();
    std::fs::write(path, text).unwrap();
}

/// The names in `dir`, sorted.
fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs `args`, expecting a failure that leaves `dir` as it was; returns stderr.
fn run_fails(dir: &Path, args: &[OsString]) -> String {
    let before = dir_names(dir);
    let out = run_pprl(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1; stderr: {stderr}"
    );
    assert_eq!(
        dir_names(dir),
        before,
        "a failed run changed the directory; stderr: {stderr}"
    );
    stderr
}

fn default_schema(dir: &Path) -> PathBuf {
    let out = run_ok(["schema", "init"]);
    let path = dir.join("linkage.json");
    std::fs::write(&path, out.stdout).unwrap();
    path
}

#[test]
fn parquet_output_has_the_contract_columns_and_metadata() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema_path = fixture("clkhash_v3_blake.schema.json");
    let output = dir.path().join("a.clk.parquet");
    let out = run_ok(with(
        encode_args(&schema_path, &secret, &fixture("febrl4_a.csv"), &output),
        &["--threads", "2"],
    ));
    assert!(out.stdout.is_empty());

    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&output).unwrap()).unwrap();
    let kv: std::collections::HashMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect();
    let schema = reader.schema().clone();
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("id", DataType::Utf8, false),
            ("clk", DataType::FixedSizeBinary(128), false),
            ("popcount", DataType::UInt16, false),
        ]
    );
    let secret_value = Secret::from_file(&secret).unwrap();
    let expected_schema = Schema::from_file(&schema_path).unwrap();
    let get = |k: &str| kv.get(k).map(String::as_str);
    assert_eq!(get("pprl.engine_version"), Some(pprl::ENGINE_VERSION));
    assert_eq!(get("pprl.site"), Some("A"));
    assert_eq!(get("pprl.filter_bits"), Some("1024"));
    assert_eq!(get("pprl.record_count"), Some("5000"));
    assert_eq!(
        get("pprl.schema_fingerprint"),
        Some(expected_schema.fingerprint().as_str())
    );
    assert_eq!(
        get("pprl.key_check_value"),
        Some(secret_value.key_check_value().as_str())
    );

    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let mut ids = Vec::new();
    let mut rows = 0;
    for batch in &batches {
        let id = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let clk = batch
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap();
        let pop = batch
            .column(2)
            .as_any()
            .downcast_ref::<UInt16Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            ids.push(id.value(i).to_owned());
            let ones: u32 = clk.value(i).iter().map(|b| b.count_ones()).sum();
            assert_eq!(u32::from(pop.value(i)), ones, "row {i}");
            assert!(ones > 0, "row {i} has an empty clk");
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, 5000);
    // Ids in input order.
    let input = std::fs::read_to_string(fixture("febrl4_a.csv")).unwrap();
    let expected_ids: Vec<String> = input
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected_ids);
    // The library's reader agrees.
    let file = pprl::io::clk_file::read(&output, None).unwrap();
    assert_eq!(file.ids, expected_ids);
    assert_eq!(file.meta.filter_bits, 1024);
}

/// An encoding read by DuckDB (an independent Parquet implementation) has the
/// ids, clks and popcounts that the library reads: the clk column's pages
/// are cut by pprl itself rather than by Arrow's writer.
#[test]
fn encoded_file_reads_the_same_in_duckdb() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema = default_schema(dir.path());
    let output = dir.path().join("a.clk.parquet");
    run_ok(with(
        encode_args(&schema, &secret, &fixture("febrl4_a.csv"), &output),
        &["--threads", "2"],
    ));
    let file = pprl::io::clk_file::read(&output, None).unwrap();
    let expected: Vec<String> = (0..file.len())
        .map(|i| {
            let hex: String = file.clk(i).iter().map(|b| format!("{b:02X}")).collect();
            format!("{}|{hex}|{}", file.ids[i], file.popcounts[i])
        })
        .collect();

    let script = r#"
import sys, duckdb
path = sys.argv[1]
con = duckdb.connect()
print("row groups", con.execute(
    f"SELECT count(DISTINCT row_group_id) FROM parquet_metadata('{path}')").fetchone()[0])
print("types", con.execute(
    f"SELECT typeof(id), typeof(clk), typeof(popcount) FROM read_parquet('{path}') LIMIT 1").fetchone())
for row in con.execute(
        f"SELECT id, hex(clk), popcount FROM read_parquet('{path}', file_row_number = true) "
        "ORDER BY file_row_number").fetchall():
    print("|".join(str(v) for v in row))
"#;
    let Some(text) = run_duckdb_script(script, &[&output]) else {
        return;
    };
    let mut lines = text.lines();
    let row_groups: usize = (lines.next().unwrap().strip_prefix("row groups "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        row_groups > 1,
        "the file should span row groups: {row_groups}"
    );
    assert_eq!(
        lines.next().unwrap(),
        "types ('VARCHAR', 'BLOB', 'USMALLINT')"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows, expected);
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let native = default_schema(dir.path());
    for (schema, format) in [
        (native.clone(), "parquet"),
        (fixture("clkhash_v3_blake.schema.json"), "parquet"),
        (fixture("clkhash_v3_doublehash.schema.json"), "clkhash-json"),
    ] {
        let mut outputs = Vec::new();
        for threads in ["1", "2", "3"] {
            let output = dir.path().join(format!("t{threads}.out"));
            run_ok(with(
                encode_args(&schema, &secret, &fixture("febrl4_a.csv"), &output),
                &["--threads", threads, "--format", format],
            ));
            outputs.push(std::fs::read(&output).unwrap());
        }
        assert!(outputs[0].len() > 5000 * 8, "{format}");
        assert!(outputs[0] == outputs[1], "1 vs 2 threads differ ({format})");
        assert!(outputs[0] == outputs[2], "1 vs 3 threads differ ({format})");
    }
}

#[test]
fn clkhash_json_matches_clkhash_for_both_schemes() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    for name in ["blake", "doublehash"] {
        let output = dir.path().join(format!("{name}.json"));
        run_ok(with(
            encode_args(
                &fixture(&format!("clkhash_v3_{name}.schema.json")),
                &secret,
                &fixture("febrl4_a_first200.clkhash_input.csv"),
                &output,
            ),
            &["--format", "clkhash-json"],
        ));
        let ours = json_clks(&output);
        let theirs = reference_clks(&format!("clkhash_v3_{name}.clks.json"));
        assert_eq!(ours.len(), 200);
        for (row, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{name}: row {} differs from clkhash", row + 1);
        }
    }
}

#[test]
fn febrl_with_comma_space_gives_the_same_clks_as_clkhash_input() {
    // febrl4_a.csv separates fields with ", "; trimming makes it equal to the
    // plain CSV that clkhash was given.
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let output = dir.path().join("all.json");
    run_ok(with(
        encode_args(
            &fixture("clkhash_v3_blake.schema.json"),
            &secret,
            &fixture("febrl4_a.csv"),
            &output,
        ),
        &["--format", "clkhash-json"],
    ));
    let ours = json_clks(&output);
    assert_eq!(ours.len(), 5000);
    assert_eq!(
        ours[..200],
        reference_clks("clkhash_v3_blake.clks.json")[..]
    );
}

/// `input` (the first 200 Febrl4 records), encoded with clkhash's blake
/// schema and `extra` arguments, gives clkhash's own clks; returns the
/// output's path.
fn assert_clkhash_blake_clks(secret: &Path, input: &Path, extra: &[&str]) -> PathBuf {
    let output = input.with_extension("clks.json");
    let mut args = vec!["--format", "clkhash-json"];
    args.extend_from_slice(extra);
    run_ok(with(
        encode_args(
            &fixture("clkhash_v3_blake.schema.json"),
            secret,
            input,
            &output,
        ),
        &args,
    ));
    assert_eq!(
        json_clks(&output),
        reference_clks("clkhash_v3_blake.clks.json")
    );
    output
}

#[test]
fn bom_quotes_and_custom_delimiter_give_the_same_clks() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let rows = first200_rows();
    let mut text = String::from("\u{feff}");
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            // Quote every other field, with whitespace inside the quotes on
            // data rows, and on every other row a blank before the quote
            // (Febrl-style `; "a"`, which trimming reads as quoted too).
            .map(|(j, f)| match (i > 0, j % 2) {
                (true, 0) if i % 2 == 0 => format!(" \"  {f} \""),
                (true, 0) => format!("\"  {f} \""),
                (false, 0) => format!("\"{f}\""),
                _ => format!(" {f}"),
            })
            .collect();
        text.push_str(&fields.join(";"));
        text.push_str("\r\n");
    }
    let input = dir.path().join("quoted.txt");
    std::fs::write(&input, text).unwrap();
    assert_clkhash_blake_clks(&secret, &input, &["--delimiter", ";"]);

    // --no-trim keeps the spaces: the string fields then encode differently.
    let exact = dir.path().join("exact.json");
    run_ok(with(
        encode_args(
            &fixture("clkhash_v3_blake.schema.json"),
            &secret,
            &input,
            &exact,
        ),
        &[
            "--format",
            "clkhash-json",
            "--delimiter",
            ";",
            "--no-trim",
            "--max-rejects",
            "100%",
        ],
    ));
    let untrimmed = json_clks(&exact);
    let reference = reference_clks("clkhash_v3_blake.clks.json");
    assert!(untrimmed.iter().all(|c| !reference.contains(c)));
}

#[test]
fn a_tsv_file_is_read_with_tabs_by_default() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let text: String = first200_rows()
        .iter()
        .map(|row| row.join("\t") + "\n")
        .collect();
    let input = dir.path().join("records.tsv");
    std::fs::write(&input, text).unwrap();
    assert_clkhash_blake_clks(&secret, &input, &[]);
}

#[test]
fn parquet_input_gives_the_same_clks_as_csv() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let rows = first200_rows();
    let header = &rows[0];
    let data = &rows[1..];
    let mut fields = Vec::new();
    let mut columns: Vec<Arc<dyn Array>> = Vec::new();
    for (j, name) in header.iter().enumerate() {
        if name == "street_number" || name == "postcode" {
            // Integers, with nulls for empty values.
            fields.push(Field::new(name, DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from(
                data.iter()
                    .map(|r| (!r[j].is_empty()).then(|| r[j].parse::<i64>().unwrap()))
                    .collect::<Vec<_>>(),
            )));
        } else {
            fields.push(Field::new(name, DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from_iter_values(
                data.iter().map(|r| r[j].as_str()),
            )));
        }
    }
    let batch = RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns).unwrap();
    let input = dir.path().join("records.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(File::create(&input).unwrap(), batch.schema(), None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let output = assert_clkhash_blake_clks(&secret, &input, &[]);

    // The same file under a name without a known extension needs --input-format.
    let renamed = dir.path().join("records.bin");
    std::fs::rename(&input, &renamed).unwrap();
    let output2 = dir.path().join("from_bin.json");
    let stderr = run_fails(
        dir.path(),
        &encode_args(
            &fixture("clkhash_v3_blake.schema.json"),
            &secret,
            &renamed,
            &output2,
        ),
    );
    assert!(
        stderr.contains("records.bin") && stderr.contains("extension"),
        "{stderr}"
    );
    run_ok(with(
        encode_args(
            &fixture("clkhash_v3_blake.schema.json"),
            &secret,
            &renamed,
            &output2,
        ),
        &["--format", "clkhash-json", "--input-format", "parquet"],
    ));
    assert_eq!(json_clks(&output2), json_clks(&output));
}

#[test]
fn no_identifier_value_and_no_secret_in_any_output() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema_path = default_schema(dir.path());
    let schema = Schema::from_file(&schema_path).unwrap();
    let output = dir.path().join("a.clk.parquet");
    let out = run_ok(with(
        encode_args(&schema_path, &secret, &fixture("febrl4_a.csv"), &output),
        &["--max-rejects", "100%"],
    ));
    let out = [out.stdout, out.stderr].concat();
    let bytes = std::fs::read(&output).unwrap();
    let mut files = vec![bytes];
    let rejects = dir.path().join("a.clk.parquet.rejects.csv");
    if rejects.exists() {
        files.push(std::fs::read(&rejects).unwrap());
    }

    let identifying = schema.identifying_columns();
    assert!(identifying.len() >= 3, "{identifying:?}");
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(fixture("febrl4_a.csv"))
        .unwrap();
    let header = reader.headers().unwrap().clone();
    let columns: Vec<usize> = identifying
        .iter()
        .map(|c| header.iter().position(|h| h == *c).unwrap())
        .collect();
    let mut values = BTreeSet::new();
    for record in reader.records() {
        let record = record.unwrap();
        for &c in &columns {
            values.insert(record[c].to_owned());
            values.insert(record[c].to_lowercase());
        }
    }
    // Strings that are in the output by design: the site's record keys (ids such
    // as rec-2108-org hold 4-digit numbers that are also postcodes) and the
    // metadata. An identifier value inside one of them proves no leak.
    let secret_value = Secret::from_file(&secret).unwrap();
    let mut by_design: Vec<String> = pprl::io::clk_file::read(&output, None).unwrap().ids;
    by_design.extend([
        schema.fingerprint(),
        secret_value.key_check_value(),
        pprl::ENGINE_VERSION.to_owned(),
    ]);
    // 1 to 3 byte sequences occur by chance in 640 kB of random filter bits;
    // from 4 bytes on, a hit would be a leak, not chance.
    let checked: Vec<&String> = values
        .iter()
        .filter(|v| v.len() >= 4 && !by_design.iter().any(|d| d.contains(v.as_str())))
        .collect();
    assert!(checked.len() > 10_000, "{}", checked.len());
    // The search does find values where they are: in the input itself.
    let input_bytes = std::fs::read(fixture("febrl4_a.csv")).unwrap();
    assert!(find_any(&input_bytes, checked.iter().map(|v| v.as_bytes())).is_some());
    for file in &files {
        let leaked = find_any(file, checked.iter().map(|v| v.as_bytes()));
        assert!(
            leaked.is_none(),
            "an identifier value appears in the output"
        );
        assert!(!contains(file, PROJECT_SECRET.as_bytes()));
        assert!(!contains(file, &PROJECT_SECRET.as_bytes()[..16]));
    }
    assert!(!contains(&out, PROJECT_SECRET.as_bytes()));
    assert!(!contains(&out, &PROJECT_SECRET.as_bytes()[..16]));
}

/// The first of `needles` found in `haystack`: all windows of each needle
/// length go into a set once, which keeps 20,000 needles fast.
fn find_any<'a>(haystack: &[u8], needles: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut by_len: std::collections::BTreeMap<usize, Vec<&[u8]>> = Default::default();
    for n in needles {
        by_len.entry(n.len()).or_default().push(n);
    }
    for (len, needles) in by_len {
        let windows: std::collections::HashSet<&[u8]> = haystack.windows(len).collect();
        if let Some(hit) = needles.into_iter().find(|n| windows.contains(n)) {
            return Some(hit);
        }
    }
    None
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secret_from_the_environment_and_secret_checks() {
    let dir = temp_dir();
    let input = fixture("febrl4_a_first200.clkhash_input.csv");
    let schema = fixture("clkhash_v3_blake.schema.json");
    let output = dir.path().join("a.json");
    let base = |secret_file: Option<&Path>| {
        let mut args = with(
            encode_args(&schema, Path::new("unused"), &input, &output),
            &["--format", "clkhash-json"],
        );
        // Drop the --secret-file pair and add the one asked for.
        let at = args.iter().position(|a| a == "--secret-file").unwrap();
        args.drain(at..at + 2);
        if let Some(path) = secret_file {
            args.push("--secret-file".into());
            args.push(path.into());
        }
        args
    };

    // PPRL_SECRET is used when there is no --secret-file.
    let out = crate::util::pprl()
        .args(base(None))
        .env("PPRL_SECRET", CLKHASH_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_clks(&output),
        reference_clks("clkhash_v3_blake.clks.json")
    );
    std::fs::remove_file(&output).unwrap();

    // No secret at all.
    let stderr = run_fails(dir.path(), &base(None));
    assert!(
        stderr.contains("--secret-file") && stderr.contains("PPRL_SECRET"),
        "{stderr}"
    );

    // Short and empty secrets, from a file and from the environment.
    for (content, expect) in [
        ("tiny-pass\n", "at least 16"),
        ("\n", "empty"),
        ("", "empty"),
    ] {
        let key = dir.path().join("weak.key");
        std::fs::write(&key, content).unwrap();
        let stderr = run_fails(dir.path(), &base(Some(&key)));
        assert!(stderr.contains(expect), "{stderr}");
        std::fs::remove_file(&key).unwrap();
    }
    let out = crate::util::pprl()
        .args(base(None))
        .env("PPRL_SECRET", "tiny-pass")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("at least 16") && !stderr.contains("tiny-pass"),
        "{stderr}"
    );
    assert!(!output.exists());

    // The help names the variable but never shows its value.
    let help = crate::util::pprl()
        .args(["encode", "--help"])
        .env("PPRL_SECRET", CLKHASH_SECRET)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("PPRL_SECRET") && !help.contains("horse"),
        "{help}"
    );
}

#[test]
fn missing_columns_are_named_with_the_existing_ones() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let rows: Vec<Vec<String>> = first200_rows()
        .into_iter()
        .map(|mut r| {
            r.remove(2); // surname
            r
        })
        .collect();
    let input = dir.path().join("no_surname.csv");
    write_rows(&input, &rows);
    let output = dir.path().join("a.clk.parquet");
    let schema = fixture("clkhash_v3_blake.schema.json");
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &input, &output));
    assert!(stderr.contains("\"surname\""), "{stderr}");
    assert_eq!(stderr.matches("no_surname.csv").count(), 1, "{stderr}");
    for existing in ["rec_id", "given_name", "postcode", "soc_sec_id"] {
        assert!(stderr.contains(&format!("\"{existing}\"")), "{stderr}");
    }

    // The id column too.
    let input = fixture("febrl4_a_first200.clkhash_input.csv");
    let mut args = encode_args(&schema, &secret, &input, &output);
    let at = args.iter().position(|a| a == "rec_id").unwrap();
    args[at] = "patient_key".into();
    let stderr = run_fails(dir.path(), &args);
    assert!(
        stderr.contains("\"patient_key\"") && stderr.contains("\"rec_id\""),
        "{stderr}"
    );

    // An identifying column cannot be the id: it would be written in clear.
    let mut args = encode_args(&schema, &secret, &input, &output);
    args[at] = "surname".into();
    let stderr = run_fails(dir.path(), &args);
    assert!(
        stderr.contains("surname") && stderr.contains("identifying"),
        "{stderr}"
    );
}

#[test]
fn bad_schema_and_unreadable_input_fail_cleanly() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let output = dir.path().join("a.clk.parquet");
    let input = fixture("febrl4_a_first200.clkhash_input.csv");

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"version\": 3, \"clkConfig\": ").unwrap();
    let stderr = run_fails(dir.path(), &encode_args(&broken, &secret, &input, &output));
    assert!(stderr.contains("broken.json"), "{stderr}");

    let missing = dir.path().join("nowhere.csv");
    let schema = fixture("clkhash_v3_blake.schema.json");
    let stderr = run_fails(
        dir.path(),
        &encode_args(&schema, &secret, &missing, &output),
    );
    assert!(stderr.contains("nowhere.csv"), "{stderr}");

    // Invalid UTF-8 in an identifying column: named by row and column, value not shown.
    let mut bytes = std::fs::read(&input).unwrap();
    let at = bytes.windows(7).position(|w| w == b"neumann").unwrap();
    bytes[at + 1] = 0xff;
    let bad = dir.path().join("latin1.csv");
    std::fs::write(&bad, &bytes).unwrap();
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &bad, &output));
    assert!(
        stderr.contains("row 1") && stderr.contains("\"surname\"") && stderr.contains("UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("umann"), "{stderr}");

    // A row with too few fields.
    let mut rows = first200_rows();
    rows[10].truncate(5);
    let short = dir.path().join("short_row.csv");
    write_rows(&short, &rows);
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &short, &output));
    assert!(
        stderr.contains("row 10") && stderr.contains("5 fields"),
        "{stderr}"
    );

    // The output must not overwrite the input.
    let copy = dir.path().join("copy.csv");
    std::fs::copy(&input, &copy).unwrap();
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &copy, &copy));
    assert!(stderr.contains("overwrite the input"), "{stderr}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&input).unwrap()
    );

    // An output directory that does not exist.
    let nowhere = dir.path().join("no/such/dir/a.clk.parquet");
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &input, &nowhere));
    assert!(stderr.contains("a.clk.parquet"), "{stderr}");
}

#[test]
fn duplicate_and_empty_ids_are_refused() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let schema = fixture("clkhash_v3_blake.schema.json");
    let output = dir.path().join("a.clk.parquet");

    let mut rows = first200_rows();
    let id = rows[2][0].clone();
    rows[150][0] = id.clone();
    let input = dir.path().join("dup.csv");
    write_rows(&input, &rows);
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &input, &output));
    assert!(
        stderr.contains(&format!("{id:?}")) && stderr.contains("rows 2 and 150"),
        "{stderr}"
    );
    // The message names the input once, not once more as context.
    assert_eq!(stderr.matches("dup.csv").count(), 1, "{stderr}");

    let mut rows = first200_rows();
    rows[42][0] = String::new();
    let input = dir.path().join("empty_id.csv");
    write_rows(&input, &rows);
    let stderr = run_fails(dir.path(), &encode_args(&schema, &secret, &input, &output));
    assert!(
        stderr.contains("row 42") && stderr.contains("empty id"),
        "{stderr}"
    );
}

/// The first-200 input with values the clkhash schema refuses (integer
/// fields that are not integers) in the given 1-based rows.
fn input_with_rejects(dir: &Path, bad_rows: &[(usize, &str, &str)]) -> PathBuf {
    let mut rows = first200_rows();
    for &(row, column, value) in bad_rows {
        let c = rows[0].iter().position(|h| h == column).unwrap();
        rows[row][c] = value.to_owned();
    }
    let input = dir.join("rejects_in.csv");
    write_rows(&input, &rows);
    input
}

#[test]
fn rejected_rows_are_listed_without_values_and_the_run_goes_on() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let schema = fixture("clkhash_v3_blake.schema.json");
    let input = input_with_rejects(
        dir.path(),
        &[
            (3, "postcode", "zzqpost"),
            (7, "date_of_birth", "xxbirthday"),
        ],
    );
    let output = dir.path().join("a.json");
    let out = run_ok(with(
        encode_args(&schema, &secret, &input, &output),
        &["--format", "clkhash-json"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 rows rejected"), "{stderr}");

    // The other 198 rows are encoded as clkhash does.
    let mut expected = reference_clks("clkhash_v3_blake.clks.json");
    expected.remove(6);
    expected.remove(2);
    assert_eq!(json_clks(&output), expected);

    let rejects_path = dir.path().join("a.json.rejects.csv");
    let text = std::fs::read_to_string(&rejects_path).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["row", "id", "column", "reason"]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let rows = first200_rows();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(&records[0][0], "3");
    assert_eq!(&records[0][1], rows[3][0]);
    assert_eq!(&records[0][2], "postcode");
    assert_eq!(&records[1][0], "7");
    assert_eq!(&records[1][1], rows[7][0]);
    assert_eq!(&records[1][2], "date_of_birth");
    assert!(records.iter().all(|r| !r[3].is_empty()));
    assert!(
        !text.contains("zzqpost") && !text.contains("xxbirthday"),
        "{text}"
    );

    // A clean run over the same output removes the stale rejects file.
    run_ok(with(
        encode_args(
            &schema,
            &secret,
            &fixture("febrl4_a_first200.clkhash_input.csv"),
            &output,
        ),
        &["--format", "clkhash-json"],
    ));
    assert!(!rejects_path.exists());
    assert_eq!(
        json_clks(&output),
        reference_clks("clkhash_v3_blake.clks.json")
    );
}

#[test]
fn too_many_rejects_fail_without_output() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let schema = fixture("clkhash_v3_blake.schema.json");
    let bad = [
        (3, "postcode", "zzqpost"),
        (7, "date_of_birth", "xxbirthday"),
        (99, "street_number", "twelve"),
    ];
    let input = input_with_rejects(dir.path(), &bad);
    let output = dir.path().join("a.clk.parquet");
    let rejects_path = dir.path().join("a.clk.parquet.rejects.csv");

    // Default: 1% of 200 rows = 2 allowed; 3 rejects fail.
    let out = run_pprl(encode_args(&schema, &secret, &input, &output));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!output.exists());
    assert!(
        stderr.contains("3 of 200 rows") && stderr.contains("2 allowed"),
        "{stderr}"
    );
    // The rejects file is the diagnosis, so it is kept.
    let text = std::fs::read_to_string(&rejects_path).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    std::fs::remove_file(&rejects_path).unwrap();

    // An explicit count.
    let out = run_pprl(with(
        encode_args(&schema, &secret, &input, &output),
        &["--max-rejects", "2"],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(!output.exists());
    // A higher limit lets the run finish.
    run_ok(with(
        encode_args(&schema, &secret, &input, &output),
        &["--max-rejects", "3"],
    ));
    assert_eq!(pprl::io::clk_file::read(&output, None).unwrap().len(), 197);

    // Bad --max-rejects values are usage errors.
    let out = run_pprl(with(
        encode_args(&schema, &secret, &input, &output),
        &["--max-rejects", "lots"],
    ));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn output_format_follows_the_extension_unless_given() {
    let dir = temp_dir();
    let secret = clkhash_secret(dir.path());
    let schema = fixture("clkhash_v3_blake.schema.json");
    let input = fixture("febrl4_a_first200.clkhash_input.csv");
    let json = dir.path().join("a.clks.json");
    let out = run_ok(encode_args(&schema, &secret, &input, &json));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    assert_eq!(
        json_clks(&json),
        reference_clks("clkhash_v3_blake.clks.json")
    );

    // An explicit format wins, with a warning that the name misleads other commands.
    let parquet = dir.path().join("b.json");
    let out = run_ok(with(
        encode_args(&schema, &secret, &input, &parquet),
        &["--format", "parquet"],
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    assert_eq!(&std::fs::read(&parquet).unwrap()[..4], b"PAR1");
}

/// Ctrl-C (SIGINT) or `kill` (SIGTERM) in the middle of a run: exit code 130,
/// and neither the output nor its temporary file is left behind. The input
/// is a named pipe that the test keeps open after some rows, so the run is
/// certainly still waiting for input, its output begun, when the signal comes.
#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_no_file_behind() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    for signal in ["INT", "TERM"] {
        let dir = temp_dir();
        let secret = write_secret(dir.path());
        let schema = default_schema(dir.path());
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let input = dir.path().join("patients.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&input)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let output = out_dir.join("a.clk.parquet");
        let mut child = crate::util::pprl()
            .args(encode_args(&schema, &secret, &input, &output))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Opening the pipe waits for the run to open it for reading.
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(&input)
            .unwrap();
        let text = std::fs::read_to_string(fixture("febrl4_a.csv")).unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
        pipe.flush().unwrap();
        let started = Instant::now();
        while dir_names(&out_dir).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no output begun"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let begun = dir_names(&out_dir);
        assert!(
            begun
                .iter()
                .all(|name| name.starts_with(".a.clk.parquet.") && name.ends_with(".tmp")),
            "{begun:?}"
        );
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = child.wait().unwrap();
        drop(pipe);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(130), "SIG{signal}; stderr: {stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        assert_eq!(
            dir_names(&out_dir),
            BTreeSet::new(),
            "SIG{signal}: files left"
        );
    }
}

/// `pprl bench` writes its test input into a scratch directory; Ctrl-C while
/// it times the site run (the input there) removes the directory too.
#[cfg(unix)]
#[test]
fn an_interrupted_bench_leaves_no_scratch_directory_behind() {
    use std::time::{Duration, Instant};

    let dir = temp_dir();
    let scratch_root = dir.path().join("tmp");
    std::fs::create_dir(&scratch_root).unwrap();
    let mut child = crate::util::pprl()
        .args(["bench", "--threads", "1", "--seconds", "1"])
        .env("TMPDIR", &scratch_root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The site run's input, written before its timings (a second or more).
    let has_site_input = || {
        std::fs::read_dir(&scratch_root).unwrap().any(|entry| {
            let entry = entry.unwrap().path();
            entry.join("febrl4_a_repeated.csv").exists()
        })
    };
    let started = Instant::now();
    while !has_site_input() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no site run begun"
        );
        assert!(child.try_wait().unwrap().is_none(), "bench ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    assert_eq!(dir_names(&scratch_root), BTreeSet::new(), "left behind");
}

/// An output into a directory that does not exist fails before reading,
/// naming the directory (not a temporary file), and makes nothing; so does
/// an output that is a directory.
#[test]
fn an_output_into_a_missing_directory_names_it() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema = default_schema(dir.path());
    let output = dir.path().join("results").join("a.clk.parquet");
    let stderr = run_fails(
        dir.path(),
        &encode_args(&schema, &secret, &fixture("febrl4_a.csv"), &output),
    );
    assert!(
        stderr.contains(&format!(
            "the directory {} does not exist",
            dir.path().join("results").display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(".a.clk.parquet."), "{stderr}");

    // A directory given as the output is refused before any work.
    let results = dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    let stderr = run_fails(
        dir.path(),
        &encode_args(&schema, &secret, &fixture("febrl4_a.csv"), &results),
    );
    assert!(
        stderr.contains(&format!("{} is a directory", results.display())),
        "{stderr}"
    );
    assert_eq!(dir_names(&results), BTreeSet::new());
}
