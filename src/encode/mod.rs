//! Encoding: one record's identifying fields -> one Bloom filter ("clk").
//!
//! For each feature of the [`Schema`], a value is normalised (native schemas),
//! checked against its missing-value sentinel, validated and reformatted
//! (`value.rs`), tokenised ([`crate::tokenize`]), and every token sets k bits
//! through the feature's keyed hash (`hashing.rs`, keys from `keys.rs`); then
//! the record-level hardening runs (`harden.rs`: XOR folding, BLIP,
//! balancing). The result is
//! handed on as `filter_bytes()` bytes, bit `i` of the filter being bit
//! `7 - i % 8` of byte `i / 8` (clkhash's order).
//!
//! [`Encoder`] is the fast path: keyed hash states built once, buffers reused
//! per thread, bits set in `u64` words. [`mod@reference`] is a plain
//! implementation of the same encoding, which the fast path is tested against.

mod harden;
mod hashing;
mod keys;
pub mod reference;
mod value;

use std::cell::RefCell;
use std::fmt;

use crate::schema::{Feature, FeatureSpec, Schema, Strategy};
use crate::secret::Secret;
use crate::tokenize::{TokenizeError, Tokens, tokenize};
use hashing::FieldHasher;

/// Encodes records with one schema and one secret. `Send + Sync` and cheap to
/// share across threads: each thread reuses its own scratch buffers.
/// `Debug` shows no key.
pub struct Encoder {
    l: usize,
    hash_bits: usize,
    xor_folds: u32,
    filter_bits: usize,
    n_features: usize,
    fields: Vec<FieldPlan>,
    /// Ignored features that salt another feature.
    blip: Option<Blip>,
    balance: Option<Vec<u32>>,
}

/// BLIP settings: flip threshold on 32-bit draws, and the stream key.
struct Blip {
    threshold: u64,
    key: [u8; 32],
}

/// One encoded feature, ready to go.
struct FieldPlan {
    index: usize,
    identifier: String,
    spec: FeatureSpec,
    /// For salts that come from an ignored feature.
    salt_from_ignored: bool,
    hasher: FieldHasher,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("filter_bits", &self.filter_bits)
            .field(
                "features",
                &self
                    .fields
                    .iter()
                    .map(|p| p.identifier.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A field value that the schema refuses. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{feature}`: {reason}")]
pub struct FieldError {
    /// The feature's identifier.
    pub feature: String,
    /// Why the value was refused.
    pub reason: RejectReason,
}

/// Why a value was refused. `Display` never shows the value (it goes into
/// reject files and logs at the site).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// A value is absent or empty, and the feature has no missing-value
    /// sentinel that allows it.
    #[error("value is missing")]
    Missing,
    /// Shorter than the schema's `minLength` (in characters).
    #[error("value has {len} characters, fewer than the minimum {min}")]
    TooShort { min: usize, len: usize },
    /// Longer than the schema's `maxLength` (in characters).
    #[error("value has {len} characters, more than the maximum {max}")]
    TooLong { max: usize, len: usize },
    /// Does not match the schema's `pattern`.
    #[error("value does not match the pattern {pattern:?}")]
    PatternMismatch { pattern: String },
    /// Not an integer (integer format).
    #[error("value is not an integer")]
    NotAnInteger,
    /// An integer outside `[minimum, maximum]`.
    #[error(
        "value is out of range (minimum {}, maximum {})",
        show(minimum),
        show(maximum)
    )]
    OutOfRange {
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    /// Not a date in the expected format.
    #[error("value is not a valid date in the format {expected_format}")]
    BadDate { expected_format: String },
    /// Not one of the schema's enum values.
    #[error("value is not one of the allowed values")]
    NotInEnum,
    /// Not in the required case.
    #[error("value is not in {expected} case")]
    WrongCase { expected: String },
    /// Not a number (numeric comparison).
    #[error("value is not a number")]
    NotANumber,
    /// Not representable in the declared character encoding.
    #[error("value cannot be encoded as {encoding}")]
    BadEncoding { encoding: String },
}

fn show(bound: &Option<i64>) -> String {
    bound.map_or_else(|| "none".to_owned(), |b| b.to_string())
}

/// Per-thread buffers, reused from record to record.
#[derive(Default)]
struct Scratch {
    values: Vec<String>,
    tmp: String,
    salt: String,
    salt_prefix: Vec<u8>,
    tokens: Tokens,
    token_bytes: Vec<u8>,
    message: Vec<u8>,
    words: Vec<u64>,
    spare_words: Vec<u64>,
    bytes: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The most bits one token of a feature can set.
fn max_bits_per_token(strategy: Strategy) -> usize {
    match strategy {
        Strategy::BitsPerToken(k) | Strategy::BitsPerFeature(k) => k as usize,
    }
}

/// The salt prefix hashed before every token of a salted feature: the salt's
/// length (u32, little-endian) and its UTF-8 bytes, so that no salt is a
/// prefix of another.
pub(crate) fn write_salt_prefix(salt: &str, length: Option<usize>, out: &mut Vec<u8>) {
    let salt = match length {
        Some(n) => match salt.char_indices().nth(n) {
            Some((end, _)) => &salt[..end],
            None => salt,
        },
        None => salt,
    };
    out.clear();
    out.extend_from_slice(&(salt.len() as u32).to_le_bytes());
    out.extend_from_slice(salt.as_bytes());
}

impl Encoder {
    /// Derives every key and builds the keyed hash states of every feature.
    pub fn new(schema: &Schema, secret: &Secret) -> Encoder {
        let keys = keys::feature_keys(schema, secret);
        let fields = schema
            .features()
            .iter()
            .enumerate()
            .filter_map(|(index, feature): (usize, &Feature)| {
                let spec = feature.spec()?.clone();
                let salt_from_ignored = spec
                    .salt
                    .as_ref()
                    .is_some_and(|s| schema.features()[s.source].is_ignored());
                Some(FieldPlan {
                    index,
                    identifier: feature.identifier().to_owned(),
                    hasher: FieldHasher::new(
                        spec.hash,
                        &keys[index],
                        max_bits_per_token(spec.strategy),
                        schema.hash_bits(),
                    ),
                    spec,
                    salt_from_ignored,
                })
            })
            .collect();
        let hardening = schema.hardening();
        Encoder {
            l: schema.l(),
            hash_bits: schema.hash_bits(),
            xor_folds: schema.xor_folds(),
            filter_bits: schema.filter_bits(),
            n_features: schema.features().len(),
            fields,
            blip: hardening.blip.map(|p| Blip {
                threshold: harden::blip_threshold(p),
                key: keys::blip_key(secret),
            }),
            balance: hardening
                .balance
                .then(|| keys::balance_permutation(secret, 2 * schema.l())),
        }
    }

    /// Bits in each clk.
    pub fn filter_bits(&self) -> usize {
        self.filter_bits
    }

    /// Bytes in each clk.
    pub fn filter_bytes(&self) -> usize {
        self.filter_bits.div_ceil(8)
    }

    /// Encodes one record; `values[i]` is the raw value of
    /// `schema.features()[i]`, `None` for null or absent (read as the empty
    /// value). Ignored features' values are not encoded, but may serve as salt.
    ///
    /// # Errors
    /// A [`FieldError`] for the first feature (in schema order) whose value
    /// the schema refuses.
    ///
    /// # Panics
    /// If `values.len()` differs from the number of features of the schema.
    pub fn encode(&self, values: &[Option<&str>]) -> Result<Vec<u8>, FieldError> {
        let mut out = vec![0; self.filter_bytes()];
        self.encode_into(values, &mut out)?;
        Ok(out)
    }

    /// Encodes one record into `out`, overwriting it.
    ///
    /// # Errors
    /// As [`Encoder::encode`]; `out` is then left zeroed.
    ///
    /// # Panics
    /// If `values.len()` differs from the number of features, or
    /// `out.len() != filter_bytes()`.
    pub fn encode_into(&self, values: &[Option<&str>], out: &mut [u8]) -> Result<(), FieldError> {
        assert_eq!(
            values.len(),
            self.n_features,
            "one value per schema feature (ignored ones included)"
        );
        assert_eq!(
            out.len(),
            self.filter_bytes(),
            "output buffer of filter_bytes()"
        );
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let result = self.encode_with(values, scratch);
            match result {
                Ok(()) => harden::write_bytes(&scratch.words, out),
                Err(_) => out.fill(0),
            }
            result
        })
    }

    fn encode_with(&self, values: &[Option<&str>], s: &mut Scratch) -> Result<(), FieldError> {
        if s.values.len() < self.n_features {
            s.values.resize_with(self.n_features, String::new);
        }
        // Pass 1: every value validated and formatted (salts need other features' values).
        for plan in &self.fields {
            value::prepare(
                &plan.spec,
                values[plan.index],
                &mut s.values[plan.index],
                &mut s.tmp,
            )
            .map_err(|reason| FieldError {
                feature: plan.identifier.clone(),
                reason,
            })?;
        }
        // Pass 2: tokens hashed into the filter.
        s.words.clear();
        s.words.resize(self.hash_bits.div_ceil(64), 0);
        for plan in &self.fields {
            let spec = &plan.spec;
            tokenize(&spec.comparison, &s.values[plan.index], &mut s.tokens).map_err(|e| {
                FieldError {
                    feature: plan.identifier.clone(),
                    reason: match e {
                        TokenizeError::NotANumber => RejectReason::NotANumber,
                    },
                }
            })?;
            match &spec.salt {
                None => s.salt_prefix.clear(),
                Some(salt) => {
                    let source: &str = if plan.salt_from_ignored {
                        value::salt_of_ignored(values[salt.source], &mut s.salt);
                        &s.salt
                    } else {
                        &s.values[salt.source]
                    };
                    write_salt_prefix(source, salt.length, &mut s.salt_prefix);
                }
            }
            let count = s.tokens.len();
            for i in 0..count {
                let k = spec.strategy.bits_for(i, count);
                if k == 0 {
                    continue;
                }
                let token = s.tokens.get(i);
                let bytes: &[u8] = match &spec.format {
                    crate::schema::Format::String { encoding, .. } => {
                        hashing::encode_token(*encoding, token, &mut s.token_bytes)
                    }
                    _ => token.as_bytes(),
                };
                let message: &[u8] = if s.salt_prefix.is_empty() {
                    bytes
                } else {
                    s.message.clear();
                    s.message.extend_from_slice(&s.salt_prefix);
                    s.message.extend_from_slice(bytes);
                    &s.message
                };
                plan.hasher.insert(message, k, self.hash_bits, &mut s.words);
            }
        }
        harden::xor_fold(&mut s.words, self.hash_bits, self.xor_folds);
        if let Some(blip) = &self.blip {
            harden::blip(
                &mut s.words,
                self.l,
                blip.threshold,
                &blip.key,
                &mut s.bytes,
            );
        }
        if let Some(perm) = &self.balance {
            harden::balance(&mut s.words, self.l, perm, &mut s.spare_words);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("correct horse battery staple").unwrap()
    }

    fn febrl_schema() -> Schema {
        Schema::from_json(&crate::schema::default_schema_json()).unwrap()
    }

    fn record<'a>(given: &'a str, surname: &'a str, dob: &'a str) -> Vec<Option<&'a str>> {
        // rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id
        vec![
            Some("rec-1"),
            Some(given),
            Some(surname),
            Some("12"),
            Some("main street"),
            None,
            Some("dapto"),
            Some("2530"),
            Some("nsw"),
            Some(dob),
            Some("1234567"),
        ]
    }

    #[test]
    fn encoder_is_send_sync_and_debug_hides_keys() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Encoder>();
        let e = Encoder::new(&febrl_schema(), &secret());
        let shown = format!("{e:?}");
        assert!(
            shown.contains("filter_bits: 1024") && !shown.contains("key"),
            "{shown}"
        );
    }

    #[test]
    fn normalisation_makes_spelling_variants_encode_alike() {
        let e = Encoder::new(&febrl_schema(), &secret());
        let a = e
            .encode(&record("Jean-Pierre", "Dupont", "19560909"))
            .unwrap();
        let b = e
            .encode(&record("jean pierre", "DUPÖNT", "1956-09-09"))
            .unwrap();
        let c = e
            .encode(&record("  JEAN   PIERRE ", "dupont", "09/09/1956"))
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = e
            .encode(&record("jean pierre", "dupond", "19560909"))
            .unwrap();
        assert_ne!(a, d);
        assert_eq!(a.len(), 128);
    }

    #[test]
    fn different_secrets_give_different_clks() {
        let r = record("anna", "smith", "19800101");
        let a = Encoder::new(&febrl_schema(), &secret()).encode(&r).unwrap();
        let b = Encoder::new(
            &febrl_schema(),
            &Secret::new("another long project secret").unwrap(),
        )
        .encode(&r)
        .unwrap();
        assert_ne!(a, b);
    }

    const CLKHASH_STYLE: &str = r#"{"version": 3, "clkConfig": {"l": 256, "kdf": {"type": "HKDF"}},
      "features": [
        {"identifier": "id", "ignored": true},
        {"identifier": "name", "format": {"type": "string", "case": "lower", "minLength": 2, "maxLength": 5},
         "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 10}}},
        {"identifier": "age", "format": {"type": "integer", "minimum": 0, "maximum": 120},
         "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": true}, "strategy": {"bitsPerToken": 10},
                     "missingValue": {"sentinel": "N/A", "replaceWith": ""}}},
        {"identifier": "dob", "format": {"type": "date", "format": "%d/%m/%Y"},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}}},
        {"identifier": "sex", "format": {"type": "enum", "values": ["f", "m"]},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}}},
        {"identifier": "code", "format": {"type": "string", "pattern": "[A-Z]{2}[0-9]+"},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 10}, "hash": {"type": "doubleHash"}}},
        {"identifier": "weight", "format": {"type": "string"},
         "hashing": {"comparison": {"type": "numeric", "thresholdDistance": 5, "resolution": 2}, "strategy": {"bitsPerToken": 10}}}
      ]}"#;

    fn reject(values: [&str; 7]) -> Option<String> {
        let schema = Schema::from_json(CLKHASH_STYLE).unwrap();
        let e = Encoder::new(&schema, &secret());
        let values: Vec<Option<&str>> = values.iter().map(|v| Some(*v)).collect();
        e.encode(&values).err().map(|e| e.to_string())
    }

    #[test]
    fn validation_rejects_with_reasons_that_never_show_the_value() {
        let ok = ["r1", "anna", "42", "01/02/1990", "f", "AB12", "70.5"];
        assert_eq!(reject(ok), None);
        let cases: [([&str; 7], &str); 11] = [
            (
                ["r", "Anna", "42", "01/02/1990", "f", "AB12", "70"],
                "field `name`: value is not in lower case",
            ),
            (
                ["r", "a", "42", "01/02/1990", "f", "AB12", "70"],
                "field `name`: value has 1 characters, fewer than the minimum 2",
            ),
            (
                ["r", "annabel", "42", "01/02/1990", "f", "AB12", "70"],
                "field `name`: value has 7 characters, more than the maximum 5",
            ),
            (
                ["r", "anna", "4x2", "01/02/1990", "f", "AB12", "70"],
                "field `age`: value is not an integer",
            ),
            (
                ["r", "anna", "142", "01/02/1990", "f", "AB12", "70"],
                "field `age`: value is out of range (minimum 0, maximum 120)",
            ),
            (
                ["r", "anna", "", "01/02/1990", "f", "AB12", "70"],
                "field `age`: value is missing",
            ),
            (
                ["r", "anna", "42", "31/02/1990", "f", "AB12", "70"],
                "field `dob`: value is not a valid date in the format %d/%m/%Y",
            ),
            (
                ["r", "anna", "42", "01/02/1990", "x", "AB12", "70"],
                "field `sex`: value is not one of the allowed values",
            ),
            (
                ["r", "anna", "42", "01/02/1990", "f", "ab12", "70"],
                "field `code`: value does not match the pattern \"[A-Z]{2}[0-9]+\"",
            ),
            (
                ["r", "anna", "42", "01/02/1990", "f", "AB12", "heavy"],
                "field `weight`: value is not a number",
            ),
            (
                ["r", "anna", "N/A", "01/02/1990", "f", "AB12", "seventy"],
                "field `weight`: value is not a number",
            ),
        ];
        for (values, expected) in cases {
            assert_eq!(reject(values).as_deref(), Some(expected), "{values:?}");
        }
        // The sentinel is not validated.
        assert_eq!(
            reject(["r", "anna", "N/A", "01/02/1990", "f", "AB12", "70"]),
            None
        );
    }

    #[test]
    fn on_invalid_keep_and_missing() {
        let text = r#"{"version": 3, "clkConfig": {"l": 64, "kdf": {"type": "BLAKE3"}},
          "features": [{"identifier": "dob", "onInvalid": "ONINVALID",
            "format": {"type": "date", "format": "%Y%m%d"},
            "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": true},
                        "strategy": {"bitsPerToken": 3}, "hash": {"type": "blake3"}}}]}"#;
        let keep = Encoder::new(
            &Schema::from_json(&text.replace("ONINVALID", "keep")).unwrap(),
            &secret(),
        );
        let bad = keep.encode(&[Some("19450493")]).unwrap();
        let good = keep.encode(&[Some("19450403")]).unwrap();
        assert_ne!(bad, good);
        assert!(bad.iter().any(|&b| b != 0));
        let missing = Encoder::new(
            &Schema::from_json(&text.replace("ONINVALID", "missing")).unwrap(),
            &secret(),
        );
        assert_eq!(missing.encode(&[Some("19450493")]).unwrap(), vec![0; 8]);
        let reject = Encoder::new(
            &Schema::from_json(&text.replace("ONINVALID", "reject")).unwrap(),
            &secret(),
        );
        assert!(reject.encode(&[Some("19450493")]).is_err());
    }

    fn hardened(extra: &str, salt: &str) -> Encoder {
        let text = format!(
            r#"{{"version": 3, "clkConfig": {{"l": 512, "kdf": {{"type": "BLAKE3"}} {extra}}},
              "features": [
                {{"identifier": "year", "ignored": true}},
                {{"identifier": "name", "normalize": {{}}, "format": {{"type": "string"}},
                  "hashing": {{"comparison": {{"type": "ngram", "n": 2}}, "strategy": {{"bitsPerToken": 15}},
                              "hash": {{"type": "blake3"}} {salt}}}}}]}}"#
        );
        Encoder::new(&Schema::from_json(&text).unwrap(), &secret())
    }

    #[test]
    fn balanced_output_has_length_2l_and_popcount_l() {
        let e = hardened(r#", "balance": true"#, "");
        assert_eq!(e.filter_bits(), 1024);
        for name in ["anna", "bartholomew", "", "x"] {
            let clk = e.encode(&[None, Some(name)]).unwrap();
            assert_eq!(clk.len(), 128);
            assert_eq!(
                clk.iter().map(|b| b.count_ones()).sum::<u32>(),
                512,
                "{name}"
            );
            assert_eq!(clk, e.encode(&[None, Some(name)]).unwrap());
        }
    }

    #[test]
    fn salting_changes_bits_only_with_a_different_salt() {
        let e = hardened("", r#", "salt": {"identifier": "year", "length": 4}"#);
        let a = e.encode(&[Some("1956"), Some("anna")]).unwrap();
        let b = e.encode(&[Some("19561231"), Some("anna")]).unwrap();
        let c = e.encode(&[Some("1957"), Some("anna")]).unwrap();
        assert_eq!(a, b, "only the first 4 characters salt");
        let shared = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (x & y).count_ones())
            .sum::<u32>();
        let set = a.iter().map(|x| x.count_ones()).sum::<u32>();
        assert!(
            shared * 4 < set,
            "different salts share {shared} of {set} bits"
        );
        let unsalted = hardened("", "")
            .encode(&[Some("1956"), Some("anna")])
            .unwrap();
        assert_ne!(a, unsalted);
    }

    #[test]
    fn blip_flips_about_p_and_is_deterministic() {
        let plain = hardened("", "");
        let blipped = hardened(r#", "blip": {"probability": 0.05}"#, "");
        let mut flips = 0u32;
        let names: Vec<String> = (0..300).map(|i| format!("name{i}")).collect();
        for name in &names {
            let a = plain.encode(&[None, Some(name)]).unwrap();
            let b = blipped.encode(&[None, Some(name)]).unwrap();
            assert_eq!(b, blipped.encode(&[None, Some(name)]).unwrap());
            flips += a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x ^ y).count_ones())
                .sum::<u32>();
        }
        let rate = f64::from(flips) / (300.0 * 512.0);
        assert!((0.045..0.055).contains(&rate), "flip rate {rate}");
    }

    #[test]
    fn xor_folding_in_native_mode_halves_the_filter() {
        let folded = hardened(r#", "xor_folds": 1"#, "");
        assert_eq!(folded.filter_bits(), 512);
        let clk = folded.encode(&[None, Some("anna")]).unwrap();
        assert_eq!(clk.len(), 64);
        assert!(clk.iter().any(|&b| b != 0));
    }

    #[test]
    fn output_is_the_same_on_every_thread() {
        use rayon::prelude::*;
        let e = Encoder::new(&febrl_schema(), &secret());
        let names: Vec<String> = (0..200).map(|i| format!("person {i}")).collect();
        let serial: Vec<Vec<u8>> = names
            .iter()
            .map(|n| e.encode(&record(n, "smith", "19700101")).unwrap())
            .collect();
        let parallel: Vec<Vec<u8>> = names
            .par_iter()
            .map(|n| e.encode(&record(n, "smith", "19700101")).unwrap())
            .collect();
        assert_eq!(serial, parallel);
    }
}
