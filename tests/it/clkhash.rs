//! clkhash 0.18.3 compatibility, bit for bit: the reference CLKs of
//! `fixtures/` (see `fixtures/DATA.md`) re-encoded with pprl's encoder.

use base64::Engine as _;
use pprl::encode::{Encoder, reference};
use pprl::schema::Schema;
use pprl::secret::Secret;

use crate::util::fixture;

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 clk")
}

/// The bit positions where two clks differ.
fn differing_bits(a: &[u8], b: &[u8]) -> Vec<usize> {
    (0..a.len().max(b.len()) * 8)
        .filter(|&i| {
            let bit = |c: &[u8]| {
                c.get(i / 8)
                    .is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
            };
            bit(a) != bit(b)
        })
        .collect()
}

/// Encodes `rows` and returns one line per row whose clk differs from `expected`.
fn mismatches(
    label: &str,
    schema: &Schema,
    secret: &Secret,
    rows: &[Vec<String>],
    expected: &[String],
) -> Vec<String> {
    let encoder = Encoder::new(schema, secret);
    assert_eq!(rows.len(), expected.len(), "{label}: one clk per row");
    let mut failures = Vec::new();
    for (r, (row, clk)) in rows.iter().zip(expected).enumerate() {
        let values: Vec<Option<&str>> = row.iter().map(|v| Some(v.as_str())).collect();
        let want = b64(clk);
        match encoder.encode(&values) {
            Err(e) => failures.push(format!("{label} row {r}: refused: {e}")),
            Ok(got) if got != want => failures.push(format!(
                "{label} row {r}: bits differ at {:?}",
                differing_bits(&got, &want)
            )),
            Ok(got) => {
                // The plain reference implementation agrees too.
                let slow = reference::encode(schema, secret, &values)
                    .expect("reference accepts what the encoder accepts");
                if slow != got {
                    failures.push(format!(
                        "{label} row {r}: reference differs at {:?}",
                        differing_bits(&slow, &got)
                    ));
                }
            }
        }
    }
    failures
}

fn febrl_reference(schema_file: &str, clks_file: &str) {
    let schema = Schema::from_file(&fixture(schema_file)).unwrap();
    let secret = Secret::new("correct horse battery staple").unwrap();
    let mut reader =
        csv::Reader::from_path(fixture("febrl4_a_first200.clkhash_input.csv")).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let identifiers: Vec<&str> = schema.features().iter().map(|f| f.identifier()).collect();
    assert_eq!(header, identifiers);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let clks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(clks_file)).unwrap()).unwrap();
    let clks: Vec<String> = clks["clks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rows.len(), 200);
    let failures = mismatches(schema_file, &schema, &secret, &rows, &clks);
    assert!(
        failures.is_empty(),
        "{} of 200 clks differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn febrl_first200_blake_hash() {
    febrl_reference("clkhash_v3_blake.schema.json", "clkhash_v3_blake.clks.json");
}

#[test]
fn febrl_first200_double_hash() {
    febrl_reference(
        "clkhash_v3_doublehash.schema.json",
        "clkhash_v3_doublehash.clks.json",
    );
}

#[test]
fn feature_coverage_vectors() {
    let text = std::fs::read_to_string(fixture("clkhash_v3_features.jsonl")).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut passed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let number = case["case"].as_u64().unwrap();
        cases += 1;
        let label = format!("case {number}");
        let schema = match Schema::from_json(&case["schema"].to_string()) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{label}: schema refused: {e}"));
                continue;
            }
        };
        let header: Vec<&str> = case["header"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        let identifiers: Vec<&str> = schema.features().iter().map(|f| f.identifier()).collect();
        assert_eq!(header, identifiers, "{label}");
        let secret = Secret::new_unchecked(case["secret"].as_str().unwrap().as_bytes());
        let rows: Vec<Vec<String>> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        let clks: Vec<String> = case["clks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        let case_failures = mismatches(&label, &schema, &secret, &rows, &clks);
        if case_failures.is_empty() {
            passed += 1;
        }
        failures.extend(case_failures);
    }
    assert_eq!(cases, 120);
    assert!(
        failures.is_empty(),
        "{passed}/{cases} cases bit for bit; failures:\n{}",
        failures.join("\n")
    );
}
