//! Site-side blocking keys: `pprl schema init --blocking-keys`, the
//! `blocking_keys` column that `pprl encode` writes, its determinism and
//! privacy, and the pair completeness / reduction ratio of the default keys
//! on Febrl4.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use pprl::encode::blocking::{BlockingKeyHasher, soundex};
use pprl::io::clk_file::{self, ClkFile};
use pprl::schema::Schema;
use pprl::secret::Secret;

use crate::util::{fixture, run_ok, run_pprl, temp_dir, write_secret};

/// The secret that `util::write_secret` writes.
const PROJECT_SECRET: &str = "an example project secret, 32+ bytes long";

/// `pprl schema init [extra]` written to `dir/name`.
fn init_schema(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["schema", "init"];
    args.extend(extra);
    let out = run_ok(args);
    let path = dir.join(name);
    std::fs::write(&path, out.stdout).unwrap();
    path
}

fn keyed_schema(dir: &Path) -> PathBuf {
    init_schema(dir, "keyed.json", &["--blocking-keys"])
}

/// Runs `pprl encode` of `input` to `output` as site `site`, with extra flags.
fn encode(
    schema: &Path,
    secret: &Path,
    site: &str,
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args: Vec<OsString> = vec![
        "encode".into(),
        "--site".into(),
        site.into(),
        "--id-column".into(),
        "rec_id".into(),
        "--schema".into(),
        schema.into(),
        "--secret-file".into(),
        secret.into(),
        "--input".into(),
        input.into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    run_ok(args)
}

fn keys_of(file: &ClkFile) -> &[Vec<u64>] {
    file.blocking_keys
        .as_deref()
        .expect("the file carries blocking keys")
}

/// A CSV file's header and rows, fields trimmed (Febrl separates them with ", ").
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .unwrap();
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) {
    let mut writer = csv::Writer::from_path(path).unwrap();
    writer.write_record(header).unwrap();
    for row in rows {
        writer.write_record(row).unwrap();
    }
    writer.flush().unwrap();
}

/// The entity of a Febrl4 id: `N` of `rec-N-org` / `rec-N-dup-0`.
fn entity(id: &str) -> &str {
    id.split('-').nth(1).unwrap()
}

#[test]
fn febrl4_default_keys_keep_true_pairs_and_cut_candidates() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema = keyed_schema(dir.path());
    let a_path = dir.path().join("a.clk.parquet");
    let b_path = dir.path().join("b.clk.parquet");
    encode(
        &schema,
        &secret,
        "A",
        &fixture("febrl4_a.csv"),
        &a_path,
        &[],
    );
    encode(
        &schema,
        &secret,
        "B",
        &fixture("febrl4_b.csv"),
        &b_path,
        &[],
    );
    let a = clk_file::read(&a_path, None).unwrap();
    let b = clk_file::read(&b_path, None).unwrap();
    assert_eq!((a.len(), b.len()), (5000, 5000));
    let (keys_a, keys_b) = (keys_of(&a), keys_of(&b));
    assert_eq!((keys_a.len(), keys_b.len()), (5000, 5000));

    let truth: HashSet<(usize, usize)> = {
        let by_entity: std::collections::HashMap<&str, usize> = b
            .ids
            .iter()
            .enumerate()
            .map(|(j, id)| (entity(id), j))
            .collect();
        a.ids
            .iter()
            .enumerate()
            .map(|(i, id)| (i, by_entity[entity(id)]))
            .collect()
    };
    assert_eq!(truth.len(), 5000);
    let mut candidates = 0u64;
    let mut true_pairs = 0u64;
    let mut seen = HashSet::new();
    let stats = pprl::block::key_candidates(
        keys_a,
        Some(keys_b),
        pprl::block::DEFAULT_MAX_BUCKET_PAIRS,
        |pairs| {
            for &(i, j) in pairs {
                assert!(seen.insert((i, j)), "pair ({i}, {j}) emitted twice");
                candidates += 1;
                true_pairs += u64::from(truth.contains(&(i as usize, j as usize)));
            }
        },
    )
    .unwrap();
    assert_eq!(stats.oversize_buckets, 0);
    // A brute-force count on a sample: the candidates are exactly the pairs that share a key.
    for i in (0..5000).step_by(97) {
        let mine: HashSet<u64> = keys_a[i].iter().copied().collect();
        for (j, theirs) in keys_b.iter().enumerate() {
            let shares = theirs.iter().any(|k| mine.contains(k));
            assert_eq!(shares, seen.contains(&(i as u32, j as u32)), "({i}, {j})");
        }
    }
    let pair_completeness = true_pairs as f64 / truth.len() as f64;
    let reduction_ratio = 1.0 - candidates as f64 / (5000.0 * 5000.0);
    eprintln!(
        "Febrl4, default blocking keys: pair completeness {pair_completeness:.4} \
         ({true_pairs} of 5000 true pairs share a key), reduction ratio {reduction_ratio:.5} \
         ({candidates} distinct candidate pairs of 25,000,000)"
    );
    assert!(
        pair_completeness >= 0.99,
        "pair completeness {pair_completeness}"
    );
    assert!(reduction_ratio >= 0.99, "reduction ratio {reduction_ratio}");
}

#[test]
fn keys_match_the_library_and_do_not_change_the_clks() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let keyed = keyed_schema(dir.path());
    let plain = init_schema(dir.path(), "plain.json", &[]);
    let keyed_out = dir.path().join("keyed.clk.parquet");
    let plain_out = dir.path().join("plain.clk.parquet");
    let out = run_ok([
        OsString::from("encode"),
        "--site".into(),
        "B".into(),
        "--id-column".into(),
        "rec_id".into(),
        "--schema".into(),
        keyed.clone().into(),
        "--secret-file".into(),
        secret.clone().into(),
        "--input".into(),
        fixture("febrl4_b.csv").into(),
        "--output".into(),
        keyed_out.clone().into(),
    ]);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("with blocking keys surname_initial"),
        "{summary}"
    );
    encode(
        &plain,
        &secret,
        "B",
        &fixture("febrl4_b.csv"),
        &plain_out,
        &[],
    );
    let with_keys = clk_file::read(&keyed_out, None).unwrap();
    let without = clk_file::read(&plain_out, None).unwrap();
    assert_eq!(without.blocking_keys, None);
    assert_eq!(with_keys.clks, without.clks);
    assert_eq!(with_keys.ids, without.ids);
    assert_ne!(
        with_keys.meta.schema_fingerprint,
        without.meta.schema_fingerprint
    );

    // The column holds what the library computes from the same rows.
    let schema = Schema::from_file(&keyed).unwrap();
    let hasher = BlockingKeyHasher::new(&schema, &Secret::new(PROJECT_SECRET).unwrap());
    let (header, rows) = read_csv(&fixture("febrl4_b.csv"));
    let columns: Vec<Option<usize>> = schema
        .features()
        .iter()
        .map(|f| header.iter().position(|h| h == f.identifier()))
        .collect();
    let keys = keys_of(&with_keys);
    let mut counts = [0usize; 6];
    for (row, file_keys) in rows.iter().zip(keys) {
        let values: Vec<Option<&str>> =
            columns.iter().map(|c| c.map(|c| row[c].as_str())).collect();
        assert_eq!(&hasher.hash_record(&values), file_keys);
        counts[file_keys.len()] += 1;
    }
    // Most records have all five keys; those with missing values fewer.
    assert!(counts[5] > 2500 && counts[5] < 5000, "{counts:?}");
    assert!(counts[..5].iter().sum::<usize>() > 0, "{counts:?}");

    // The metadata names the keys.
    let reader = SerializedFileReader::new(std::fs::File::open(&keyed_out).unwrap()).unwrap();
    let names = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .find(|kv| kv.key == "pprl.blocking_keys")
        .and_then(|kv| kv.value.clone());
    let expected: Vec<&str> = schema
        .blocking_keys()
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(names, Some(expected.join(",")));
}

#[test]
fn keys_are_identical_whatever_the_thread_count() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema = keyed_schema(dir.path());
    let one = dir.path().join("one.clk.parquet");
    let two = dir.path().join("two.clk.parquet");
    let input = fixture("febrl4_a.csv");
    encode(&schema, &secret, "A", &input, &one, &["--threads", "1"]);
    encode(&schema, &secret, "A", &input, &two, &["--threads", "2"]);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    let file = clk_file::read(&one, None).unwrap();
    assert_eq!(keys_of(&file).len(), 5000);
}

#[test]
fn another_secret_gives_other_hashes() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let other = dir.path().join("other.key");
    std::fs::write(&other, "a different project secret, also long").unwrap();
    let schema = keyed_schema(dir.path());
    let input = fixture("febrl4_a.csv");
    let first = dir.path().join("first.clk.parquet");
    let second = dir.path().join("second.clk.parquet");
    encode(&schema, &secret, "A", &input, &first, &[]);
    encode(&schema, &other, "A", &input, &second, &[]);
    let first = clk_file::read(&first, None).unwrap();
    let second = clk_file::read(&second, None).unwrap();
    let hashes: HashSet<u64> = keys_of(&first).iter().flatten().copied().collect();
    assert!(hashes.len() > 10_000, "{}", hashes.len());
    let shared = keys_of(&second)
        .iter()
        .flatten()
        .filter(|h| hashes.contains(h))
        .count();
    assert_eq!(shared, 0);
    // Same records, same key structure: only the hashes differ.
    let lengths = |f: &ClkFile| keys_of(f).iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lengths(&first), lengths(&second));
}

#[test]
fn a_missing_value_omits_only_the_keys_that_use_it() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema_path = keyed_schema(dir.path());
    let (header, rows) = read_csv(&fixture("febrl4_a.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // A record with every value, then copies without their suburb, their
    // date of birth, their postcode (each copy a record of its own).
    let base = rows
        .iter()
        .find(|r| r.iter().all(|v| !v.is_empty()))
        .unwrap()
        .clone();
    let mut variants = vec![base.clone()];
    for (i, column) in ["suburb", "date_of_birth", "postcode"].iter().enumerate() {
        let mut row = base.clone();
        row[col(column)] = String::new();
        row[col("rec_id")] = format!("variant-{i}");
        variants.push(row);
    }
    let input = dir.path().join("variants.csv");
    write_csv(&input, &header, &variants);
    let output = dir.path().join("variants.clk.parquet");
    encode(&schema_path, &secret, "A", &input, &output, &[]);
    let file = clk_file::read(&output, None).unwrap();
    let keys = keys_of(&file);
    let full: BTreeSet<u64> = keys[0].iter().copied().collect();
    assert_eq!(full.len(), 5);
    let schema = Schema::from_file(&schema_path).unwrap();
    for (i, column) in ["suburb", "date_of_birth", "postcode"].iter().enumerate() {
        let users = schema
            .blocking_keys()
            .iter()
            .filter(|k| k.parts.iter().any(|p| p.identifier == *column))
            .count();
        assert!(users > 0, "{column}");
        let mine: BTreeSet<u64> = keys[i + 1].iter().copied().collect();
        assert!(mine.is_subset(&full), "{column}");
        assert_eq!(mine.len(), 5 - users, "{column}");
    }
}

#[test]
fn clkhash_json_output_carries_no_keys() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema = keyed_schema(dir.path());
    let output = dir.path().join("a.clks.json");
    let out = encode(
        &schema,
        &secret,
        "A",
        &fixture("febrl4_a_first200.clkhash_input.csv"),
        &output,
        &[],
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(!summary.contains("blocking keys"), "{summary}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 1);
    assert_eq!(json["clks"].as_array().unwrap().len(), 200);
    assert_eq!(clk_file::read(&output, None).unwrap().blocking_keys, None);
    let help = String::from_utf8(run_ok(["encode", "--help"]).stdout).unwrap();
    assert!(help.contains("blocking keys"), "{help}");
}

/// The first of `needles` found in `haystack`.
fn find_any<'a>(haystack: &[u8], needles: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut by_len: std::collections::BTreeMap<usize, Vec<&[u8]>> = Default::default();
    for n in needles {
        by_len.entry(n.len()).or_default().push(n);
    }
    for (len, needles) in by_len {
        let windows: HashSet<&[u8]> = haystack.windows(len).collect();
        if let Some(hit) = needles.into_iter().find(|n| windows.contains(n)) {
            return Some(hit);
        }
    }
    None
}

/// How many of `needles` (all of one length) occur in `haystack`.
fn count_found(haystack: &[u8], needles: &BTreeSet<String>) -> usize {
    let len = needles.first().map_or(0, String::len);
    assert!(needles.iter().all(|n| n.len() == len));
    let windows: HashSet<&[u8]> = haystack.windows(len).collect();
    needles
        .iter()
        .filter(|n| windows.contains(n.as_bytes()))
        .count()
}

#[test]
fn no_identifier_value_and_no_soundex_code_in_the_output() {
    let dir = temp_dir();
    let secret = write_secret(dir.path());
    let schema_path = keyed_schema(dir.path());
    let schema = Schema::from_file(&schema_path).unwrap();
    let output = dir.path().join("a.clk.parquet");
    encode(
        &schema_path,
        &secret,
        "A",
        &fixture("febrl4_a.csv"),
        &output,
        &["--max-rejects", "100%"],
    );
    let bytes = std::fs::read(&output).unwrap();
    let file = clk_file::read(&output, None).unwrap();
    assert!(keys_of(&file).iter().any(|k| !k.is_empty()));

    let (header, rows) = read_csv(&fixture("febrl4_a.csv"));
    let identifying = schema.identifying_columns();
    let columns: Vec<usize> = identifying
        .iter()
        .map(|c| header.iter().position(|h| h == *c).unwrap())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut values = BTreeSet::new();
    // Soundex codes (4 characters), and codes with the year of birth.
    let mut codes = BTreeSet::new();
    let mut coded = BTreeSet::new();
    for row in &rows {
        for &c in &columns {
            values.insert(row[c].clone());
            values.insert(row[c].to_lowercase());
        }
        let year = row[col("date_of_birth")].get(..4).unwrap_or("").to_owned();
        for name in ["surname", "given_name", "suburb", "address_1"] {
            if let Some(code) = soundex(&row[col(name)]) {
                // What a careless encoder would write: the code, in either
                // case, alone or with the year of birth.
                if year.len() == 4 {
                    coded.insert(format!("{code}{year}"));
                    coded.insert(format!("{}{year}", code.to_lowercase()));
                }
                codes.insert(code.to_lowercase());
                codes.insert(code);
            }
        }
    }
    // In the output by design: the record keys, the metadata (key names included).
    let mut by_design: Vec<String> = file.ids.clone();
    by_design.extend([
        schema.fingerprint(),
        Secret::new(PROJECT_SECRET).unwrap().key_check_value(),
        pprl::ENGINE_VERSION.to_owned(),
    ]);
    by_design.extend(schema.blocking_keys().iter().map(|k| k.name.clone()));
    // The column of key hashes and its list item ("blocking" holds "lock").
    by_design.extend(["pprl.blocking_keys".to_owned(), "item".to_owned()]);
    let checked: Vec<&String> = values
        .iter()
        .filter(|v| v.len() >= 4 && !by_design.iter().any(|d| d.contains(v.as_str())))
        .collect();
    assert!(checked.len() > 10_000, "{}", checked.len());
    assert!(
        codes.len() > 1_000 && coded.len() > 5_000,
        "{}",
        codes.len()
    );
    // The searches do find what is there: values and codes in a plain listing.
    let listing: String = rows
        .iter()
        .map(|r| {
            let code = soundex(&r[col("surname")]).unwrap_or_default();
            let year = r[col("date_of_birth")].get(..4).unwrap_or("");
            format!("{},{code}{year}\n", r[col("surname")])
        })
        .collect();
    let listing = listing.as_bytes();
    assert!(find_any(listing, checked.iter().map(|v| v.as_bytes())).is_some());
    assert!(find_any(listing, coded.iter().map(|v| v.as_bytes())).is_some());
    assert!(count_found(listing, &codes) > 500);
    assert_eq!(
        find_any(&bytes, checked.iter().map(|v| v.as_bytes())),
        None,
        "an identifier value appears in the output"
    );
    assert_eq!(
        find_any(&bytes, coded.iter().map(|v| v.as_bytes())),
        None,
        "a Soundex code with a year of birth appears in the output"
    );
    // A given 4-byte string turns up by chance about once in 4 GiB of random
    // bytes: with ~5,000 codes (both cases) and ~1 MB of clks and hashes, about
    // one code turns up by chance (3 do here), while codes written out would
    // nearly all be there.
    let found = count_found(&bytes, &codes);
    assert!(
        found <= 10,
        "{found} of {} Soundex codes appear in the output",
        codes.len()
    );
    assert!(
        !bytes
            .windows(PROJECT_SECRET.len())
            .any(|w| w == PROJECT_SECRET.as_bytes())
    );
}

#[test]
fn schema_init_and_check_show_the_keys_and_bad_keys_are_named() {
    let dir = temp_dir();
    let path = keyed_schema(dir.path());
    let schema = Schema::from_file(&path).unwrap();
    assert!(schema.blocking_keys().len() >= 3);
    let out = run_ok([
        OsString::from("schema"),
        "check".into(),
        path.clone().into(),
    ]);
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("blocking keys:"), "{summary}");
    for key in schema.blocking_keys() {
        assert!(summary.contains(&key.name), "{summary}");
    }
    assert!(
        summary.contains("soundex(surname) + prefix(given_name, 1)"),
        "{summary}"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let secret = write_secret(dir.path());
    for (from, to, expected) in [
        (
            "\"transform\": \"prefix\", \"length\": 1",
            "\"transform\": \"initial\"",
            [
                "surname_initial",
                "parts[1].transform",
                "unknown transform \"initial\"",
            ],
        ),
        (
            "{\"field\": \"postcode\", \"transform\": \"value\"}",
            "{\"field\": \"rec_id\", \"transform\": \"value\"}",
            ["street_postcode", "parts[1].field", "`rec_id` is ignored"],
        ),
        (
            "\"name\": \"surname_suburb\"",
            "\"name\": \"surname_initial\"",
            [
                "blocking key 1 (`surname_initial`)",
                "key `name`",
                "duplicate name",
            ],
        ),
        (
            "{\"field\": \"date_of_birth\", \"transform\": \"value\"}",
            "{\"field\": \"surname\", \"transform\": \"year\"}",
            ["birth_date", "year transform needs a date", "`surname`"],
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let out = run_pprl([OsString::from("schema"), "check".into(), bad.clone().into()]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        for needle in expected {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        }
        // `pprl encode` refuses it too, before writing anything.
        let output = dir.path().join("never.clk.parquet");
        let out = run_pprl([
            OsString::from("encode"),
            "--site".into(),
            "A".into(),
            "--id-column".into(),
            "rec_id".into(),
            "--schema".into(),
            bad.into(),
            "--secret-file".into(),
            secret.clone().into(),
            "--input".into(),
            fixture("febrl4_a.csv").into(),
            "--output".into(),
            output.clone().into(),
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(expected[0]));
        assert!(!output.exists());
    }
}
