//! Site-side blocking keys: a record's identifying values -> the keyed
//! hashes of the schema's [`BlockingKey`]s, which the site writes beside its
//! clks and the linkage unit blocks on ([`crate::block::key_candidates`]: two
//! records are compared only when they share a hash).
//!
//! Each part of a key takes its feature's value as the encoder sees it
//! (normalised, validated and formatted by the same code, `value.rs`) and
//! transforms it (the value, its Soundex code, a prefix, a date's year). The
//! key's hash is the first 8 bytes, little-endian, of a BLAKE3 keyed hash over
//! the key's name and its part values, each length-prefixed, under a key
//! derived from the project secret. Without the secret the linkage unit (or
//! anyone) cannot tell which values a hash stands for by hashing guesses; it
//! does see which records share a key, and how often each hash occurs.

use std::fmt;

use super::value;
use crate::schema::{BlockingKey, FeatureSpec, KeyTransform, Schema};
use crate::secret::Secret;

/// `blake3::derive_key` context of the blocking-key hashing key; distinct
/// from every other context derived from the secret (`keys.rs`, `secret.rs`).
const BLOCKING_KEY_CONTEXT: &str = "pprl 2026-11 blocking key hashes v1";

/// Hashes the blocking keys of records with one schema and one secret.
/// `Send + Sync`; `Debug` shows the key names, never the hashing key.
pub struct BlockingKeyHasher {
    key: [u8; 32],
    keys: Vec<BlockingKey>,
    /// The features that some part uses: (feature index, its spec), each once.
    features: Vec<(usize, FeatureSpec)>,
    /// For each key, for each part, its position in `features`.
    slots: Vec<Vec<usize>>,
    n_features: usize,
}

impl fmt::Debug for BlockingKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingKeyHasher")
            .field("keys", &self.names())
            .finish_non_exhaustive()
    }
}

impl Drop for BlockingKeyHasher {
    fn drop(&mut self) {
        for b in &mut self.key {
            *b = std::hint::black_box(0);
        }
    }
}

impl BlockingKeyHasher {
    /// Derives the hashing key from the secret and plans the schema's keys
    /// (none when the schema declares none: every record then gets no hash).
    pub fn new(schema: &Schema, secret: &Secret) -> BlockingKeyHasher {
        let mut features: Vec<(usize, FeatureSpec)> = Vec::new();
        let slots = schema
            .blocking_keys()
            .iter()
            .map(|key| {
                key.parts
                    .iter()
                    .map(|part| {
                        features
                            .iter()
                            .position(|(i, _)| *i == part.feature)
                            .unwrap_or_else(|| {
                                let spec = schema.features()[part.feature]
                                    .spec()
                                    .expect("the schema refuses keys on ignored features")
                                    .clone();
                                features.push((part.feature, spec));
                                features.len() - 1
                            })
                    })
                    .collect()
            })
            .collect();
        BlockingKeyHasher {
            key: blake3::derive_key(BLOCKING_KEY_CONTEXT, secret.expose()),
            keys: schema.blocking_keys().to_vec(),
            features,
            slots,
            n_features: schema.features().len(),
        }
    }

    /// Whether the schema declares any key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key names, in schema order.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The hashes of one record's keys, sorted and without repeats: one per
    /// key whose parts all have a value. `values[i]` is the raw value of
    /// `schema.features()[i]`, as for [`super::Encoder::encode`]; each part
    /// sees it normalised and formatted as the encoder does. A value that is
    /// missing (empty, or the feature's missing-value sentinel) or that the
    /// schema refuses gives no value, and its keys no hash.
    ///
    /// # Panics
    /// If `values.len()` differs from the number of features of the schema.
    pub fn hash_record(&self, values: &[Option<&str>]) -> Vec<u64> {
        assert_eq!(
            values.len(),
            self.n_features,
            "one value per schema feature (ignored ones included)"
        );
        SCRATCH.with(|scratch| {
            let Scratch {
                prepared,
                present,
                tmp,
            } = &mut *scratch.borrow_mut();
            if prepared.len() < self.features.len() {
                prepared.resize_with(self.features.len(), String::new);
            }
            present.clear();
            for ((index, spec), out) in self.features.iter().zip(prepared.iter_mut()) {
                let valid = value::prepare(spec, values[*index], out, tmp).is_ok();
                let missing = out.is_empty()
                    || spec
                        .missing
                        .as_ref()
                        .is_some_and(|m| *out == m.replacement());
                present.push(valid && !missing);
            }
            let mut hashes = Vec::with_capacity(self.keys.len());
            'keys: for (key, slots) in self.keys.iter().zip(&self.slots) {
                let mut hasher = blake3::Hasher::new_keyed(&self.key);
                write_field(&mut hasher, key.name.as_bytes());
                for (part, &slot) in key.parts.iter().zip(slots) {
                    if !present[slot] {
                        continue 'keys;
                    }
                    let mut code = [0u8; 4];
                    let Some(value) = transform(part.transform, &prepared[slot], &mut code) else {
                        continue 'keys;
                    };
                    write_field(&mut hasher, value);
                }
                let digest = hasher.finalize();
                let mut first = [0u8; 8];
                first.copy_from_slice(&digest.as_bytes()[..8]);
                hashes.push(u64::from_le_bytes(first));
            }
            hashes.sort_unstable();
            hashes.dedup();
            hashes
        })
    }
}

/// Buffers reused from record to record on each thread.
#[derive(Default)]
struct Scratch {
    /// Prepared values, by position in `BlockingKeyHasher::features`.
    prepared: Vec<String>,
    /// Whether each prepared value is there (valid and not missing).
    present: Vec<bool>,
    tmp: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Hashes `bytes` with its length first (u64, little-endian), so that no two
/// sequences of fields give the same input: ("ab", "c") != ("a", "bc").
fn write_field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// A part's bytes from its feature's prepared value (`code` holds a Soundex
/// code); `None` when there is nothing to take (no letters for Soundex, no year).
fn transform<'a>(
    transform: KeyTransform,
    value: &'a str,
    code: &'a mut [u8; 4],
) -> Option<&'a [u8]> {
    let out: &[u8] = match transform {
        KeyTransform::Value => value.as_bytes(),
        KeyTransform::Soundex => {
            *code = soundex_code(value)?;
            code
        }
        KeyTransform::Prefix(n) => match value.char_indices().nth(n) {
            Some((end, _)) => &value.as_bytes()[..end],
            None => value.as_bytes(),
        },
        KeyTransform::Year => {
            // The canonical date is the year followed by MMDD; a kept invalid
            // value such as 19450493 still gives its year.
            let digits = value.len() >= 5 && value.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| &value.as_bytes()[..value.len() - 4])?
        }
    };
    (!out.is_empty()).then_some(out)
}

/// American Soundex of the ASCII letters of `value` (others are skipped):
/// the first letter, then the digits of the following consonants, a digit
/// repeated only when a vowel separates the letters (`h` and `w` do not), cut
/// or padded with `0` to four characters, e.g. `R163` for Robert and Rupert.
/// `None` when there is no letter.
pub fn soundex(value: &str) -> Option<String> {
    soundex_code(value).map(|code| code.iter().map(|&b| char::from(b)).collect())
}

/// [`soundex`] as four ASCII bytes.
fn soundex_code(value: &str) -> Option<[u8; 4]> {
    fn digit(c: u8) -> u8 {
        match c {
            b'B' | b'F' | b'P' | b'V' => b'1',
            b'C' | b'G' | b'J' | b'K' | b'Q' | b'S' | b'X' | b'Z' => b'2',
            b'D' | b'T' => b'3',
            b'L' => b'4',
            b'M' | b'N' => b'5',
            b'R' => b'6',
            _ => b'0',
        }
    }
    let mut letters = value
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase());
    let first = letters.next()?;
    let mut code = [first, b'0', b'0', b'0'];
    let mut len = 1;
    let mut last = digit(first);
    for c in letters {
        if len == 4 {
            break;
        }
        if matches!(c, b'H' | b'W') {
            continue;
        }
        let d = digit(c);
        if d != b'0' && d != last {
            code[len] = d;
            len += 1;
        }
        last = d;
    }
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soundex_classic_examples() {
        for (name, code) in [
            ("Robert", "R163"),
            ("Rupert", "R163"),
            ("Ashcraft", "A261"),
            ("Ashcroft", "A261"),
            ("Tymczak", "T522"),
            ("Pfister", "P236"),
            ("Honeyman", "H555"),
            ("Rubin", "R150"),
            ("Lee", "L000"),
            ("Gutierrez", "G362"),
            ("Jackson", "J250"),
        ] {
            assert_eq!(soundex(name).as_deref(), Some(code), "{name}");
        }
        assert_eq!(soundex("o'brien"), soundex("OBrien"));
        assert_eq!(soundex("van der berg").as_deref(), Some("V536"));
        assert_eq!(soundex("1234 -"), None);
        assert_eq!(soundex(""), None);
    }

    #[test]
    fn transforms_take_their_part_of_the_value() {
        let t = |k, v: &str| {
            let mut code = [0; 4];
            transform(k, v, &mut code).map(|b| String::from_utf8(b.to_vec()).unwrap())
        };
        assert_eq!(t(KeyTransform::Value, "smith").as_deref(), Some("smith"));
        assert_eq!(t(KeyTransform::Soundex, "smith").as_deref(), Some("S530"));
        assert_eq!(t(KeyTransform::Prefix(2), "émile").as_deref(), Some("ém"));
        assert_eq!(t(KeyTransform::Prefix(9), "ann").as_deref(), Some("ann"));
        assert_eq!(t(KeyTransform::Year, "19450403").as_deref(), Some("1945"));
        assert_eq!(t(KeyTransform::Year, "9990102").as_deref(), Some("999"));
        assert_eq!(t(KeyTransform::Year, "19450493").as_deref(), Some("1945"));
        assert_eq!(t(KeyTransform::Year, "1945-04-93"), None);
        assert_eq!(t(KeyTransform::Year, "0403"), None);
        assert_eq!(t(KeyTransform::Soundex, "42"), None);
    }

    fn secret() -> Secret {
        Secret::new("correct horse battery staple").unwrap()
    }

    const SCHEMA: &str = r#"{"version": 3, "clkConfig": {"l": 64, "kdf": {"type": "BLAKE3"}},
      "features": [
        {"identifier": "id", "ignored": true},
        {"identifier": "given", "normalize": {}, "format": {"type": "string"},
         "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 2},
                     "hash": {"type": "blake3"}, "missingValue": {"sentinel": ""}}},
        {"identifier": "surname", "normalize": {}, "format": {"type": "string"},
         "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 2},
                     "hash": {"type": "blake3"}, "missingValue": {"sentinel": "unknown", "replaceWith": "zz"}}},
        {"identifier": "dob", "normalize": {"removePunctuation": false},
         "format": {"type": "date", "format": "%Y%m%d", "acceptedFormats": ["%d/%m/%Y"]},
         "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 2},
                     "hash": {"type": "blake3"}, "missingValue": {"sentinel": ""}}}],
      "blocking_keys": [
        {"name": "sy", "parts": [{"field": "surname", "transform": "soundex"},
                                 {"field": "dob", "transform": "year"}]},
        {"name": "gs", "parts": [{"field": "given", "transform": "prefix", "length": 1},
                                 {"field": "surname", "transform": "value"}]}]}"#;

    fn hasher(secret: &Secret) -> BlockingKeyHasher {
        BlockingKeyHasher::new(&Schema::from_json(SCHEMA).unwrap(), secret)
    }

    #[test]
    fn keys_follow_normalisation_and_formatting() {
        let h = hasher(&secret());
        let a = h.hash_record(&[Some("1"), Some("Anna"), Some("Smith"), Some("19800102")]);
        assert_eq!(a.len(), 2);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        // Same values after normalisation and date formatting: same hashes.
        let b = h.hash_record(&[Some("2"), Some(" ANNA"), Some("smith "), Some("02/01/1980")]);
        assert_eq!(a, b);
        // Smyth sounds alike and the year agrees: the first key still matches.
        let c = h.hash_record(&[Some("3"), Some("anna"), Some("smyth"), Some("19801231")]);
        assert_eq!(c.len(), 2);
        assert_eq!(a.iter().filter(|x| c.contains(x)).count(), 1);
    }

    #[test]
    fn a_missing_part_omits_only_its_keys() {
        let h = hasher(&secret());
        let full = h.hash_record(&[None, Some("anna"), Some("smith"), Some("19800102")]);
        let no_dob = h.hash_record(&[None, Some("anna"), Some("smith"), None]);
        let bad_dob = h.hash_record(&[None, Some("anna"), Some("smith"), Some("31/02/1980")]);
        let no_given = h.hash_record(&[None, Some(""), Some("smith"), Some("19800102")]);
        assert_eq!(no_dob.len(), 1);
        assert_eq!(bad_dob, no_dob);
        assert_eq!(no_given.len(), 1);
        assert!(full.contains(&no_dob[0]) && full.contains(&no_given[0]));
        assert_ne!(no_dob, no_given);
        // The sentinel is a missing value: no key that uses the surname.
        let sentinel = h.hash_record(&[None, Some("anna"), Some("Unknown"), Some("19800102")]);
        assert!(sentinel.is_empty(), "{sentinel:?}");
    }

    #[test]
    fn hashes_depend_on_the_secret_and_the_key_name() {
        let r = [None, Some("anna"), Some("smith"), Some("19800102")];
        let a = hasher(&secret()).hash_record(&r);
        let b = hasher(&Secret::new("another long project secret").unwrap()).hash_record(&r);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| !b.contains(x)));
        // The same part values under another key name hash differently.
        let renamed = Schema::from_json(&SCHEMA.replace("\"sy\"", "\"sy2\"")).unwrap();
        let c = BlockingKeyHasher::new(&renamed, &secret()).hash_record(&r);
        assert_eq!(a.iter().filter(|x| c.contains(x)).count(), 1);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let mut x = blake3::Hasher::new_keyed(&[7; 32]);
        write_field(&mut x, b"ab");
        write_field(&mut x, b"c");
        let mut y = blake3::Hasher::new_keyed(&[7; 32]);
        write_field(&mut y, b"a");
        write_field(&mut y, b"bc");
        assert_ne!(x.finalize(), y.finalize());
    }

    #[test]
    fn context_is_distinct_and_debug_hides_the_key() {
        // No other key is derived with this context.
        for source in [include_str!("keys.rs"), include_str!("../secret.rs")] {
            assert!(source.contains("derive_key") && !source.contains(BLOCKING_KEY_CONTEXT));
        }
        let h = hasher(&secret());
        let shown = format!("{h:?}");
        assert!(
            shown.contains("\"sy\"") && !shown.contains("key:"),
            "{shown}"
        );
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BlockingKeyHasher>();
    }
}
