//! A plain reference implementation of the encoding, written for clarity, not
//! speed: keys derived on every call, every hash keyed afresh for every token,
//! tokens as `Vec<String>`, bits as `Vec<bool>`. The fast [`super::Encoder`]
//! must give exactly the same bytes; property tests check this.

use blake2::Blake2bMac512;
use blake2::digest::Mac;
use hmac::Hmac;
use md5::Md5;
use sha1::Sha1;

use super::{FieldError, RejectReason, keys, value, write_salt_prefix};
use crate::schema::{Comparison, Format, HashKind, Schema, TextEncoding};
use crate::secret::Secret;

/// Encodes one record; same contract as [`super::Encoder::encode`].
///
/// # Errors
/// As [`super::Encoder::encode`].
pub fn encode(
    schema: &Schema,
    secret: &Secret,
    values: &[Option<&str>],
) -> Result<Vec<u8>, FieldError> {
    assert_eq!(values.len(), schema.features().len());
    let keys = keys::feature_keys(schema, secret);
    let features = schema.features();

    // Every value validated and formatted first, as clkhash validates rows before hashing.
    let mut prepared: Vec<String> = vec![String::new(); features.len()];
    for (i, feature) in features.iter().enumerate() {
        if let Some(spec) = feature.spec() {
            let mut tmp = String::new();
            value::prepare(spec, values[i], &mut prepared[i], &mut tmp).map_err(|reason| {
                FieldError {
                    feature: feature.identifier().to_owned(),
                    reason,
                }
            })?;
        }
    }

    let hash_bits = schema.hash_bits();
    let mut filter = vec![false; hash_bits];
    for (i, feature) in features.iter().enumerate() {
        let Some(spec) = feature.spec() else { continue };
        let tokens = tokens_of(&spec.comparison, &prepared[i]).map_err(|reason| FieldError {
            feature: feature.identifier().to_owned(),
            reason,
        })?;
        let mut prefix = Vec::new();
        if let Some(salt) = &spec.salt {
            let source = if features[salt.source].is_ignored() {
                let mut s = String::new();
                value::salt_of_ignored(values[salt.source], &mut s);
                s
            } else {
                prepared[salt.source].clone()
            };
            write_salt_prefix(&source, salt.length, &mut prefix);
        }
        let encoding = match &spec.format {
            Format::String { encoding, .. } => *encoding,
            _ => TextEncoding::Utf8,
        };
        for (t, token) in tokens.iter().enumerate() {
            let k = spec.strategy.bits_for(t, tokens.len());
            let mut message = prefix.clone();
            message.extend(token_bytes(encoding, token));
            for position in positions(spec.hash, &keys[i], &message, k, hash_bits) {
                filter[position] = true;
            }
        }
    }

    for _ in 0..schema.xor_folds() {
        let half = filter.len() / 2;
        filter = (0..half).map(|i| filter[i] ^ filter[half + i]).collect();
    }
    let l = schema.l();
    let hardening = schema.hardening();
    if let Some(p) = hardening.blip {
        let key = keys::blip_key(secret);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(&(l as u64).to_le_bytes());
        hasher.update(&to_bytes(&filter));
        let mut reader = hasher.finalize_xof();
        let threshold = (p * 4_294_967_296.0).round() as u64;
        for bit in filter.iter_mut() {
            let mut draw = [0u8; 4];
            reader.fill(&mut draw);
            if u64::from(u32::from_le_bytes(draw)) < threshold {
                *bit = !*bit;
            }
        }
    }
    if hardening.balance {
        let perm = keys::balance_permutation(secret, 2 * l);
        let doubled: Vec<bool> = filter
            .iter()
            .copied()
            .chain(filter.iter().map(|b| !b))
            .collect();
        filter = perm.iter().map(|&src| doubled[src as usize]).collect();
    }
    Ok(to_bytes(&filter))
}

/// Bits to bytes, most significant bit first, zero-padded.
fn to_bytes(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |byte, (i, &b)| byte | (u8::from(b) << (7 - i)))
        })
        .collect()
}

fn token_bytes(encoding: TextEncoding, token: &str) -> Vec<u8> {
    match encoding {
        TextEncoding::Ascii | TextEncoding::Utf8 => token.as_bytes().to_vec(),
        TextEncoding::Utf16 => [0xFF, 0xFE]
            .into_iter()
            .chain(token.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
        TextEncoding::Utf32 => [0xFF, 0xFE, 0, 0]
            .into_iter()
            .chain(token.chars().flat_map(|c| (c as u32).to_le_bytes()))
            .collect(),
    }
}

fn tokens_of(comparison: &Comparison, value: &str) -> Result<Vec<String>, RejectReason> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match comparison {
        Comparison::Exact => vec![value.to_owned()],
        Comparison::Ngram { n, positional } => {
            let pad = " ".repeat(n.saturating_sub(1));
            let chars: Vec<char> = format!("{pad}{value}{pad}").chars().collect();
            if chars.len() < *n {
                return Ok(Vec::new());
            }
            (0..=chars.len() - n)
                .map(|i| {
                    let gram: String = chars[i..i + n].iter().collect();
                    if *positional {
                        format!("{} {gram}", i + 1)
                    } else {
                        gram
                    }
                })
                .collect()
        }
        Comparison::Numeric { .. } => {
            let mut tokens = crate::tokenize::Tokens::new();
            crate::tokenize::tokenize(comparison, value, &mut tokens)
                .map_err(|_| RejectReason::NotANumber)?;
            tokens.iter().map(str::to_owned).collect()
        }
    })
}

/// The `k` bit positions of one token (with its salt prefix) among `l` bits.
fn positions(
    hash: HashKind,
    keys: &keys::FeatureKeys,
    message: &[u8],
    k: usize,
    l: usize,
) -> Vec<usize> {
    match hash {
        HashKind::Blake2b => {
            let mut words = Vec::new();
            for j in 0..k.div_ceil(32) {
                let mut mac = Blake2bMac512::new_with_salt_and_personal(
                    &keys.first,
                    j.to_string().as_bytes(),
                    &[],
                )
                .expect("valid key and salt");
                mac.update(message);
                let digest = mac.finalize().into_bytes();
                words.extend(
                    digest
                        .chunks(2)
                        .map(|p| u16::from_le_bytes([p[0], p[1]]) as usize),
                );
            }
            words.into_iter().take(k).map(|w| w % l).collect()
        }
        HashKind::DoubleHash {
            prevent_singularity,
        } => {
            let modulo = |bytes: &[u8]| {
                bytes
                    .iter()
                    .fold(0usize, |r, &b| (r * 256 + b as usize) % l)
            };
            let hmac = |key: &[u8], data: &[u8], md5: bool| -> Vec<u8> {
                if md5 {
                    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).expect("any key");
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                } else {
                    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key");
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
            };
            let h1 = modulo(&hmac(&keys.first, message, false));
            let mut h2 = modulo(&hmac(&keys.second, message, true));
            let mut i = 0u32;
            while prevent_singularity && h2 == 0 {
                let mut data = message.to_vec();
                data.extend(
                    char::from_u32(i)
                        .unwrap_or('\u{FFFD}')
                        .to_string()
                        .as_bytes(),
                );
                h2 = modulo(&hmac(&keys.second, &data, true));
                i += 1;
            }
            (0..k).map(|j| (h1 + j * h2) % l).collect()
        }
        HashKind::Blake3 => {
            let mut hasher = blake3::Hasher::new_keyed(&keys.blake3_key());
            hasher.update(message);
            let mut reader = hasher.finalize_xof();
            // 16-bit draws for filters up to 2^16 bits, else 32-bit.
            let width: u32 = if l <= 1 << 16 { 16 } else { 32 };
            let mut next = || {
                let mut b = [0u8; 4];
                reader.fill(&mut b[..width as usize / 8]);
                u64::from(u32::from_le_bytes(b))
            };
            let n = l as u64;
            // Lemire: accept x·n unless its low bits fall below 2^width mod n.
            let reject_below = (1u64 << width) % n;
            let low_mask = (1u64 << width) - 1;
            (0..k)
                .map(|_| {
                    loop {
                        let m = next() * n;
                        if m & low_mask >= reject_below {
                            break (m >> width) as usize;
                        }
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;
    use proptest::prelude::*;
    use serde_json::json;

    /// A random feature: (format, comparison, strategy, hash, missing, normalize, salt).
    fn feature() -> impl Strategy<Value = serde_json::Value> {
        let format = prop_oneof![
            prop::sample::select(vec!["utf-8", "utf-16", "utf-32", "ascii"])
                .prop_map(|e| json!({"type": "string", "encoding": e})),
            Just(json!({"type": "string", "case": "lower", "maxLength": 6})),
            Just(json!({"type": "integer", "minimum": -50, "maximum": 5000})),
            Just(json!({"type": "date", "format": "%d/%m/%Y", "acceptedFormats": ["%Y%m%d"]})),
            Just(json!({"type": "enum", "values": ["a", "b", "ab"]})),
        ];
        let comparison = prop_oneof![
            (0u32..4, any::<bool>()).prop_map(|(n, p)| json!({"type": "ngram", "n": n, "positional": p})),
            Just(json!({"type": "exact"})),
            (prop::sample::select(vec![1.0, 2.5, 5.0]), 1u32..4, 0u32..3).prop_map(|(t, r, f)| json!({
                "type": "numeric", "thresholdDistance": t, "resolution": r, "fractional_precision": f
            })),
        ];
        let strategy = prop_oneof![
            (1u32..70).prop_map(|k| json!({"bitsPerToken": k})),
            (1u32..300).prop_map(|b| json!({"bitsPerFeature": b})),
        ];
        let hash = prop::sample::select(vec![
            json!({"type": "blakeHash"}),
            json!({"type": "doubleHash"}),
            json!({"type": "doubleHash", "prevent_singularity": true}),
            json!({"type": "blake3"}),
        ]);
        let missing = prop::sample::select(vec![
            None,
            Some(json!({"sentinel": ""})),
            Some(json!({"sentinel": "-", "replaceWith": "x"})),
        ]);
        let normalize = prop::sample::select(vec![
            None,
            Some(json!({})),
            Some(json!({"caseFold": false})),
        ]);
        let on_invalid = prop::sample::select(vec!["reject", "missing", "keep"]);
        (
            format,
            comparison,
            strategy,
            hash,
            missing,
            normalize,
            on_invalid,
            any::<bool>(),
        )
            .prop_map(
                |(format, comparison, strategy, hash, missing, normalize, on_invalid, salted)| {
                    let mut hashing =
                        json!({"comparison": comparison, "strategy": strategy, "hash": hash});
                    if let Some(m) = missing {
                        hashing["missingValue"] = m;
                    }
                    if salted {
                        hashing["salt"] = json!({"identifier": "salt", "length": 2});
                    }
                    let mut f =
                        json!({"format": format, "hashing": hashing, "onInvalid": on_invalid});
                    if let Some(n) = normalize {
                        f["normalize"] = n;
                    }
                    f
                },
            )
    }

    fn schema() -> impl Strategy<Value = (Schema, usize)> {
        schema_salted_by(Just(vec![]))
    }

    /// Random schemas whose salted features take their salt from the ignored
    /// feature or, by `sources[i]` (0 is the ignored one), from another feature.
    fn schema_salted_by(
        sources: impl Strategy<Value = Vec<usize>>,
    ) -> impl Strategy<Value = (Schema, usize)> {
        let l = prop::sample::select(vec![8usize, 16, 64, 100, 256, 1000, 1024]);
        let kdf = prop::sample::select(vec![
            json!({"type": "BLAKE3"}),
            json!({"type": "HKDF", "hash": "SHA256", "keySize": 64}),
            json!({"type": "HKDF", "hash": "SHA512", "keySize": 32, "salt": "c2FsdA==", "info": "aW5mbw=="}),
        ]);
        (
            l,
            0u32..3,
            kdf,
            any::<bool>(),
            prop::option::of(0.01f64..0.3),
            prop::collection::vec(feature(), 1..4),
            sources,
        )
            .prop_map(|(l, folds, kdf, balance, blip, features, sources)| {
                let mut all = vec![json!({"identifier": "salt", "ignored": true})];
                let count = features.len();
                for (i, mut f) in features.into_iter().enumerate() {
                    f["identifier"] = json!(format!("f{i}"));
                    let source = sources.get(i).copied().unwrap_or(0) % (count + 1);
                    if f["hashing"].get("salt").is_some() && source > 0 && source - 1 != i {
                        f["hashing"]["salt"]["identifier"] = json!(format!("f{}", source - 1));
                    }
                    // blakeHash needs a power-of-two filter.
                    if !l.is_power_of_two() && f["hashing"]["hash"]["type"] == "blakeHash" {
                        f["hashing"]["hash"] = json!({"type": "blake3"});
                    }
                    all.push(f);
                }
                let mut config =
                    json!({"l": l, "xor_folds": folds, "kdf": kdf, "balance": balance});
                if let Some(p) = blip {
                    config["blip"] = json!({"probability": p});
                }
                let text = json!({"version": 3, "clkConfig": config, "features": all}).to_string();
                let schema = Schema::from_json(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
                let n = schema.features().len();
                (schema, n)
            })
    }

    fn value() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(
            0.9,
            prop_oneof![
                "[a-cé' -]{0,8}",
                "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
                "[0-3][0-9]/[01][0-9]/19[0-9]{2}",
                "19[0-9]{2}[01][0-9][0-3][0-9]",
                prop::sample::select(vec![
                    "a".to_owned(),
                    "ab".to_owned(),
                    "-".to_owned(),
                    String::new()
                ]),
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn fast_encoder_equals_the_reference(
            (schema, n) in schema(),
            values in prop::collection::vec(prop::collection::vec(value(), 4), 1..6),
        ) {
            let secret = Secret::new("proptest project secret 0123456789").unwrap();
            let encoder = Encoder::new(&schema, &secret);
            for row in values {
                let row: Vec<Option<&str>> = row.iter().take(n).map(|v| v.as_deref()).collect();
                prop_assert_eq!(encoder.encode(&row), encode(&schema, &secret, &row));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Records drawn from a few values, so the memos hit, with budgets
        /// from none to tiny (cleared at almost every store) to the default;
        /// salts come from ignored and encoded features.
        #[test]
        fn memoised_encoder_equals_the_reference(
            (schema, n) in schema_salted_by(prop::collection::vec(0usize..4, 3)),
            pool in prop::collection::vec(value(), 1..5),
            rows in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 4), 10..40),
            budget in prop_oneof![Just(0usize), 1usize..3000, Just(crate::encode::DEFAULT_MEMO_BUDGET)],
        ) {
            let secret = Secret::new("proptest project secret 0123456789").unwrap();
            let encoder = Encoder::new(&schema, &secret).with_memo_budget(budget);
            let rows: Vec<Vec<Option<&str>>> = rows
                .iter()
                .map(|row| row.iter().take(n).map(|i| i.get(&pool).as_deref()).collect())
                .collect();
            let mut expected = std::collections::HashMap::new();
            for (i, row) in rows.iter().enumerate() {
                let want = expected
                    .entry(row.clone())
                    .or_insert_with(|| encode(&schema, &secret, row))
                    .clone();
                // Every third record plainly; the others with memo entries
                // fetched ahead for the next records, or for values of no
                // record: hints that must change nothing.
                let got = if i % 3 == 0 {
                    encoder.encode(row)
                } else {
                    let next = |f: usize| -> Option<&str> {
                        if i % 3 == 1 {
                            rows.get(i + 1).and_then(|r| r.get(f).copied().flatten())
                        } else {
                            Some("not a value of any record")
                        }
                    };
                    let mut out = vec![0xAA; encoder.filter_bytes()];
                    encoder.encode_into_ahead(row, &mut out, &next).map(|()| out)
                };
                prop_assert_eq!(got, want);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Positional unigrams and bigrams of ASCII values, which take the
        /// encoder's table by their bytes (positional unigrams up to the
        /// 64th character, those further are hashed each time): values on
        /// both sides of that length, with and
        /// without other letters, for every `k` of either strategy, give the
        /// reference's clks.
        #[test]
        fn short_grams_equal_the_reference(
            positional in any::<bool>(),
            strategy in prop_oneof![
                (1u32..40).prop_map(|k| json!({"bitsPerToken": k})),
                (1u32..300).prop_map(|b| json!({"bitsPerFeature": b})),
            ],
            hash in prop::sample::select(vec!["blakeHash", "doubleHash", "blake3"]),
            encoding in prop::sample::select(vec!["utf-8", "ascii"]),
            l in prop::sample::select(vec![64usize, 1024]),
            pool in prop::collection::vec("[0-9]{0,70}|[0-9a-zé ]{0,8}", 1..6),
            rows in prop::collection::vec(any::<prop::sample::Index>(), 5..30),
            budget in prop_oneof![1usize..3000, Just(crate::encode::DEFAULT_MEMO_BUDGET)],
        ) {
            let text = json!({"version": 3, "clkConfig": {"l": l, "kdf": {"type": "BLAKE3"}},
                "features": [{"identifier": "id", "format": {"type": "string", "encoding": encoding},
                    "hashing": {"comparison": {"type": "ngram", "n": if positional { 1 } else { 2 }, "positional": positional},
                                "strategy": strategy, "hash": {"type": hash}}}]});
            let schema = Schema::from_json(&text.to_string()).unwrap();
            let secret = Secret::new("proptest project secret 0123456789").unwrap();
            let encoder = Encoder::new(&schema, &secret).with_memo_budget(budget);
            for i in rows {
                let row = [Some(i.get(&pool).as_str())];
                prop_assert_eq!(encoder.encode(&row), encode(&schema, &secret, &row));
            }
        }
    }

    #[test]
    fn edge_cases_agree() {
        // Empty tokens (n = 0), many salts per token, folding, blank values.
        let text = r#"{"version": 3, "clkConfig": {"l": 64, "xor_folds": 1, "kdf": {"type": "HKDF"}},
          "features": [{"identifier": "a", "format": {"type": "string"},
            "hashing": {"comparison": {"type": "ngram", "n": 0}, "strategy": {"bitsPerToken": 500},
                        "hash": {"type": "blakeHash"}}}]}"#;
        let schema = Schema::from_json(text).unwrap();
        let secret = Secret::new("proptest project secret 0123456789").unwrap();
        let encoder = Encoder::new(&schema, &secret);
        for v in ["", " ", "abc"] {
            let fast = encoder.encode(&[Some(v)]).unwrap();
            assert_eq!(fast, encode(&schema, &secret, &[Some(v)]).unwrap());
        }
    }
}
