//! The default schema written by `pprl schema init`: pprl's native scheme for
//! health identifiers, with column names as in Febrl (the synthetic data the
//! engine is tested on). Its bit budgets were tuned on Febrl4 (see the
//! `febrl4_default_schema` test) for filters about 45% full: unrelated
//! records then score around 0.45 and true matches above 0.7, which keeps
//! the threshold robust and leaves room for the length filter and blocking.
//! Fuller filters (clkhash's tutorial schema sets ~70% of the bits) push
//! unrelated records up to 0.7 and squeeze the margin.

/// The default schema of `pprl schema init` (JSON text).
///
/// Every feature is normalised, hashed with keyed BLAKE3 ("random hashing",
/// k independent positions per token), keyed per identifier (`BLAKE3` kdf),
/// and has the empty value as its missing-value sentinel, so a missing field
/// sets no bits instead of refusing the record. Text fields use bigrams,
/// numbers positional unigrams, the state an exact match. The national
/// register number (`soc_sec_id`) is included: it is the most discriminating
/// identifier when present. `rec_id` is the site's record key and is never
/// encoded. Hardening (balance, BLIP, salting) is off: turn it on per project.
pub fn default_schema_json() -> String {
    DEFAULT_SCHEMA.to_owned()
}

/// The default schema plus site-side blocking keys (`pprl schema init
/// --blocking-keys`), P-Sig style: each record gets one keyed hash per key,
/// and the linkage unit compares two records only when they share one.
///
/// Each key combines two fields, or one that a nation shares with many
/// (date of birth), through coarse transforms (Soundex, an initial), so that
/// many records share each hash; the keys draw on different fields, so a true
/// match with an error or a gap in one field still shares another key: names
/// (surname + initial), names and place (surname + suburb, given name +
/// suburb), date of birth, address (street + postcode). On Febrl4 (one
/// duplicate per record, with typos and missing values in several fields)
/// 99.68% of the true pairs share a key while 0.052% of all pairs are
/// candidates (see the `blocking_keys` integration test). The national
/// register number is left out on purpose: a key on it would be a
/// deterministic pseudonym of the person.
pub fn default_schema_with_blocking_keys_json() -> String {
    let body = DEFAULT_SCHEMA
        .trim_end()
        .strip_suffix('}')
        .expect("the default schema is a JSON object")
        .trim_end();
    format!("{body},\n  \"blocking_keys\": {DEFAULT_BLOCKING_KEYS}\n}}\n")
}

/// The keys of [`default_schema_with_blocking_keys_json`].
const DEFAULT_BLOCKING_KEYS: &str = r#"[
    {
      "name": "surname_initial",
      "description": "Soundex of the family name and first letter of the given name",
      "parts": [
        {"field": "surname", "transform": "soundex"},
        {"field": "given_name", "transform": "prefix", "length": 1}
      ]
    },
    {
      "name": "surname_suburb",
      "description": "Soundex of the family name and of the town",
      "parts": [
        {"field": "surname", "transform": "soundex"},
        {"field": "suburb", "transform": "soundex"}
      ]
    },
    {
      "name": "given_name_suburb",
      "description": "Soundex of the given name and of the town",
      "parts": [
        {"field": "given_name", "transform": "soundex"},
        {"field": "suburb", "transform": "soundex"}
      ]
    },
    {
      "name": "birth_date",
      "description": "date of birth (YYYYMMDD); shared by many people in a national population",
      "parts": [
        {"field": "date_of_birth", "transform": "value"}
      ]
    },
    {
      "name": "street_postcode",
      "description": "Soundex of the street name and the postcode",
      "parts": [
        {"field": "address_1", "transform": "soundex"},
        {"field": "postcode", "transform": "value"}
      ]
    }
  ]"#;

const DEFAULT_SCHEMA: &str = r#"{
  "version": 3,
  "clkConfig": {
    "l": 1024,
    "kdf": {"type": "BLAKE3"}
  },
  "features": [
    {
      "identifier": "rec_id",
      "ignored": true,
      "description": "the site's own record key: never encoded"
    },
    {
      "identifier": "given_name",
      "description": "first given name",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 100},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "surname",
      "description": "family name",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 100},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "street_number",
      "description": "house number of the address",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 30},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "address_1",
      "description": "street name and type",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 60},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "address_2",
      "description": "address complement (building, locality)",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 40},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "suburb",
      "description": "town or suburb",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 2, "positional": false},
        "strategy": {"bitsPerFeature": 50},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "postcode",
      "description": "postal code",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 40},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "state",
      "description": "state or region code",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "exact"},
        "strategy": {"bitsPerFeature": 15},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "date_of_birth",
      "description": "date of birth; encoded as YYYYMMDD whatever the input format; a value that is not a valid date is encoded as written",
      "normalize": {"removePunctuation": false},
      "onInvalid": "keep",
      "format": {
        "type": "date",
        "format": "%Y%m%d",
        "acceptedFormats": ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y"]
      },
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 100},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    },
    {
      "identifier": "soc_sec_id",
      "description": "national register number (social security id)",
      "normalize": {},
      "format": {"type": "string", "encoding": "utf-8"},
      "hashing": {
        "comparison": {"type": "ngram", "n": 1, "positional": true},
        "strategy": {"bitsPerFeature": 75},
        "hash": {"type": "blake3"},
        "missingValue": {"sentinel": ""}
      }
    }
  ]
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;
    use crate::io::records::{ReadOptions, read_named_columns};
    use crate::schema::Schema;
    use crate::secret::Secret;
    use std::path::Path;

    /// Febrl4 as `(N of rec-N-..., values in schema order)`.
    fn febrl(name: &str, schema: &Schema) -> Vec<(String, Vec<Option<String>>)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        let names: Vec<&str> = std::iter::once("rec_id")
            .chain(schema.features().iter().map(|f| f.identifier()))
            .collect();
        read_named_columns(&path, &ReadOptions::default(), &names)
            .unwrap()
            .into_iter()
            .map(|mut row| {
                let id = row.remove(0).unwrap();
                (id.split('-').nth(1).unwrap().to_owned(), row)
            })
            .collect()
    }

    /// Links Febrl4 A and B with all-pairs Dice and greedy one-to-one
    /// matching at `threshold`; returns (precision, recall).
    pub(crate) fn febrl4_precision_recall(schema: &Schema, threshold: f64) -> (f64, f64) {
        let secret = Secret::new("an example project secret, 32+ bytes long").unwrap();
        let encoder = Encoder::new(schema, &secret);
        let encode_all = |name: &str| -> (Vec<String>, Vec<Vec<u64>>, Vec<u32>) {
            let mut ids = Vec::new();
            let mut clks = Vec::new();
            let mut pops = Vec::new();
            for (id, values) in febrl(name, schema) {
                let values: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
                let bytes = encoder.encode(&values).unwrap();
                let words: Vec<u64> = bytes
                    .chunks(8)
                    .map(|c| {
                        let mut w = [0u8; 8];
                        w[..c.len()].copy_from_slice(c);
                        u64::from_be_bytes(w)
                    })
                    .collect();
                pops.push(words.iter().map(|w| w.count_ones()).sum());
                ids.push(id);
                clks.push(words);
            }
            (ids, clks, pops)
        };
        let (ids_a, a, pop_a) = encode_all("febrl4_a.csv");
        let (ids_b, b, pop_b) = encode_all("febrl4_b.csv");
        let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                let common: u32 = x.iter().zip(y).map(|(p, q)| (p & q).count_ones()).sum();
                let total = pop_a[i] + pop_b[j];
                let dice = if total == 0 {
                    0.0
                } else {
                    2.0 * f64::from(common) / f64::from(total)
                };
                if dice >= threshold {
                    candidates.push((dice, i, j));
                }
            }
        }
        candidates.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)).then(p.2.cmp(&q.2)));
        let mut used_a = vec![false; a.len()];
        let mut used_b = vec![false; b.len()];
        let (mut links, mut correct) = (0usize, 0usize);
        for (_, i, j) in candidates {
            if used_a[i] || used_b[j] {
                continue;
            }
            used_a[i] = true;
            used_b[j] = true;
            links += 1;
            correct += usize::from(ids_a[i] == ids_b[j]);
        }
        (
            correct as f64 / links.max(1) as f64,
            correct as f64 / a.len() as f64,
        )
    }

    #[test]
    fn febrl4_default_schema() {
        // The tuned figure: Dice + greedy 1:1 at the default threshold on the 5000 x 5000 Febrl4 pairs.
        let schema = Schema::from_json(&default_schema_json()).unwrap();
        let (precision, recall) =
            febrl4_precision_recall(&schema, crate::matching::DEFAULT_THRESHOLD);
        assert!(precision >= 0.99, "precision {precision}");
        assert!(recall >= 0.98, "recall {recall}");
    }

    #[test]
    #[ignore = "tuning aid: PPRL_TUNE_SCHEMA=path cargo test --lib tune_febrl4 -- --ignored --nocapture"]
    #[allow(clippy::print_stderr)]
    fn tune_febrl4() {
        let schema = match std::env::var("PPRL_TUNE_SCHEMA") {
            Ok(path) => Schema::from_file(Path::new(&path)).unwrap(),
            Err(_) => Schema::from_json(&default_schema_json()).unwrap(),
        };
        for t in [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9] {
            let (p, r) = febrl4_precision_recall(&schema, t);
            eprintln!("threshold {t}: precision {p:.4} recall {r:.4}");
        }
    }
}
