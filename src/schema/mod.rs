//! The linkage schema: which identifying fields are encoded and how.
//!
//! Reads the clkhash v3 linkage-schema JSON as it is, plus pprl's native
//! extensions, validates it once into a [`Schema`] that the rest of the engine
//! uses, and gives its fingerprint (a hash of the canonical schema).
//!
//! # The file format
//!
//! A schema is clkhash's v3 linkage schema (`version`, `clkConfig`,
//! `features`), read with every clkhash v3 feature. pprl adds these keys; a
//! schema that uses none of them encodes bit for bit like clkhash 0.18:
//!
//! | where | key | meaning |
//! |---|---|---|
//! | `clkConfig.kdf` | `{"type": "BLAKE3"}` | per-feature keys from `blake3::derive_key`, bound to the feature's identifier (not its position) |
//! | `clkConfig` | `"balance": true` | balanced filter: the filter, its complement, keyed permutation; output `2l` bits |
//! | `clkConfig` | `"blip": {"probability": p}` | flip each bit with probability `p` (keyed, reproducible) |
//! | `clkConfig` | `"xorFolds"` | accepted as a synonym of clkhash's `xor_folds` |
//! | `features[i]` | `"normalize": {..}` | value clean-up before validation (see [`crate::normalize::Normalization`]) |
//! | `features[i]` | `"onInvalid": "reject" \| "missing" \| "keep"` | what an invalid value does (see [`OnInvalid`]); clkhash rejects |
//! | `features[i].format` (date) | `"acceptedFormats": [..]` | more `strptime` input formats, tried in order after `format` |
//! | `features[i].hashing.hash` | `{"type": "blake3"}` | random hashing with keyed BLAKE3: k independent positions per token |
//! | `features[i].hashing` | `"salt": {"identifier": f, "length": n}` | salt every token with feature `f`'s value (its first `n` characters) |
//! | top level | `"blocking_keys": [..]` | site-side blocking keys, written beside the clks (see [`BlockingKey`]); the clks do not change |
//!
//! ```json
//! {"version": 3,
//!  "clkConfig": {"l": 1024, "kdf": {"type": "BLAKE3"}, "balance": false},
//!  "features": [
//!   {"identifier": "rec_id", "ignored": true},
//!   {"identifier": "surname", "description": "family name at birth",
//!    "normalize": {},
//!    "format": {"type": "string", "encoding": "utf-8"},
//!    "hashing": {"comparison": {"type": "ngram", "n": 2},
//!                "strategy": {"bitsPerFeature": 300},
//!                "hash": {"type": "blake3"},
//!                "missingValue": {"sentinel": ""},
//!                "salt": {"identifier": "date_of_birth", "length": 4}}},
//!   {"identifier": "date_of_birth", "normalize": {"removePunctuation": false},
//!    "format": {"type": "date", "format": "%Y%m%d", "acceptedFormats": ["%Y-%m-%d", "%d/%m/%Y"]},
//!    "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": true},
//!                "strategy": {"bitsPerFeature": 200}, "hash": {"type": "blake3"},
//!                "missingValue": {"sentinel": ""}}}],
//!  "blocking_keys": [
//!   {"name": "surname_birth_year",
//!    "parts": [{"field": "surname", "transform": "soundex"},
//!              {"field": "date_of_birth", "transform": "year"}]}]}
//! ```

mod default;
mod raw;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

pub use default::{default_schema_json, default_schema_with_blocking_keys_json};

use crate::normalize::{DateFormat, Normalization};
use raw::{
    RawBlockingKey, RawClkConfig, RawComparison, RawFeature, RawFormat, RawHash, RawHashing,
    RawKdf, RawKeyPart, RawMissingValue, RawNormalize, RawOnInvalid, RawSalt, RawSchema,
    RawStrategy,
};

/// The only schema version read: clkhash's v3 (with or without pprl's extensions).
pub const SCHEMA_VERSION: u64 = 3;

/// The largest filter, in bits before folding, that a schema may ask for.
pub const MAX_HASH_BITS: u64 = 1 << 24;

/// Why a schema was refused.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The text is not JSON, or its top level or `clkConfig` does not have
    /// the expected shape (unknown key, wrong type, missing key).
    #[error("schema JSON, line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// `version` is not 3.
    #[error(
        "schema version {found} is not supported: expected 3 (a clkhash v3 linkage schema, \
         optionally with pprl's extensions); convert older clkhash schemas with clkhash first"
    )]
    Version { found: String },
    /// A value in `clkConfig` is out of range or inconsistent.
    #[error("clkConfig: key `{key}`: {message}")]
    Config { key: String, message: String },
    /// A feature is malformed: the message names the key and what was expected.
    #[error("feature {index} (`{identifier}`): key `{key}`: {message}")]
    Feature {
        /// 0-based position in `features`.
        index: usize,
        identifier: String,
        /// Path of the offending key inside the feature, e.g. `hashing.strategy`.
        key: String,
        message: String,
    },
    /// A blocking key is malformed: the message names the key's entry and
    /// what was expected.
    #[error("blocking key {index} (`{name}`): key `{key}`: {message}")]
    BlockingKey {
        /// 0-based position in `blocking_keys`.
        index: usize,
        name: String,
        /// Path of the offending entry inside the key, e.g. `parts[1].transform`.
        key: String,
        message: String,
    },
    /// The schema file cannot be read.
    #[error("cannot read the schema file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A validated linkage schema: every key checked, every default filled in.
#[derive(Debug, Clone)]
pub struct Schema {
    l: usize,
    xor_folds: u32,
    kdf: Kdf,
    hardening: Hardening,
    features: Vec<Feature>,
    blocking_keys: Vec<BlockingKey>,
    fingerprint: String,
}

/// How per-feature keys are derived from the project secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Kdf {
    /// clkhash's key derivation: one HKDF (RFC 5869) run over the secret
    /// gives `2 × keySize` bytes per feature (ignored ones included); feature
    /// `i` gets keys `2i` and `2i + 1`.
    Hkdf {
        hash: HkdfHash,
        key_size: usize,
        salt: Option<Vec<u8>>,
        info: Option<Vec<u8>>,
    },
    /// pprl's key derivation: `blake3::derive_key` over the secret and the
    /// feature's identifier, so a feature's key does not depend on its
    /// position and differs between features.
    Blake3,
}

/// The hash HKDF runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HkdfHash {
    Sha256,
    Sha512,
}

/// Record-level hardening against attacks on Bloom-filter encodings. All off by default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Hardening {
    /// Balanced filter (Berger & Schnell): the `l`-bit filter followed by its
    /// complement, then the `2l` bits shuffled by a permutation keyed by the
    /// secret. Every clk then has popcount exactly `l`, which defeats attacks
    /// that use the number of set bits (record length, frequent short names)
    /// and pattern-mining attacks that read frequent bit patterns.
    pub balance: bool,
    /// BLIP (randomised response): each bit of the (folded) filter is flipped
    /// with this probability, drawn from a stream keyed by the secret and the
    /// record's own unflipped filter, so the same record always gives the same
    /// clk. Counters frequency attacks and the exact re-identification of
    /// records from their bit patterns, at some cost in accuracy.
    pub blip: Option<f64>,
}

/// One feature (column) of a schema.
#[derive(Debug, Clone)]
pub struct Feature {
    identifier: String,
    description: Option<String>,
    spec: Option<FeatureSpec>,
}

/// How a non-ignored feature is normalised, validated, tokenised and hashed.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    /// Value clean-up before everything else (pprl extension; `None` in clkhash schemas).
    pub normalize: Option<Normalization>,
    pub format: Format,
    pub comparison: Comparison,
    pub strategy: Strategy,
    pub hash: HashKind,
    pub missing: Option<MissingValue>,
    pub salt: Option<Salt>,
    /// What happens to a value that fails validation (pprl extension; clkhash rejects).
    pub on_invalid: OnInvalid,
}

/// What the encoder does with a value that fails its feature's validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInvalid {
    /// The record is refused with a [`crate::encode::FieldError`] (clkhash's behaviour).
    #[default]
    Reject,
    /// The value is treated as missing (the `missingValue` replacement, or no tokens).
    Missing,
    /// The (normalised) value is tokenised as it is, without reformatting:
    /// e.g. a mistyped date of birth `19450493` still agrees with `19450403`
    /// in most positions, so the record is neither lost nor unlinkable.
    Keep,
}

/// What a valid value looks like (clkhash's field formats).
#[derive(Debug, Clone)]
pub enum Format {
    String {
        encoding: TextEncoding,
        case: Case,
        min_length: Option<usize>,
        max_length: Option<usize>,
        /// A regular expression the whole value must match.
        pattern: Option<Pattern>,
    },
    Integer {
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    /// Dates are handed on as `YYYYMMDD`.
    Date {
        format: DateFormat,
        /// Further input formats (pprl extension), tried in order after `format`.
        accepted: Vec<DateFormat>,
    },
    Enum {
        values: Vec<String>,
    },
}

/// A compiled `pattern` of a string format, matched against the whole value.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// The pattern as written in the schema.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches (Python's `re.fullmatch`).
    pub fn is_full_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// How a string is turned into bytes before hashing (Python codec semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Ascii,
    Utf8,
    /// Python's `utf-16`: a byte-order mark `FF FE`, then UTF-16LE.
    Utf16,
    /// Python's `utf-32`: a byte-order mark `FF FE 00 00`, then UTF-32LE.
    Utf32,
}

impl TextEncoding {
    fn name(self) -> &'static str {
        match self {
            TextEncoding::Ascii => "ascii",
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Utf16 => "utf-16",
            TextEncoding::Utf32 => "utf-32",
        }
    }
}

/// The case a string value must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Upper,
    Lower,
    Mixed,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Upper => "upper",
            Case::Lower => "lower",
            Case::Mixed => "mixed",
        }
    }
}

/// How a value becomes tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// Character n-grams; with `n > 1` the value is padded with `n - 1`
    /// spaces on both sides; positional grams are written `"<1-based position> <gram>"`.
    Ngram { n: usize, positional: bool },
    /// The whole value is one token.
    Exact,
    /// Numeric neighbourhood tokens (Vatsalan & Christen 2015), as clkhash.
    Numeric {
        threshold_distance: f64,
        resolution: u32,
        fractional_precision: u32,
        /// `round(threshold_distance × 10^fractional_precision)` (ties to even, as Python).
        distance_interval: i128,
    },
}

/// How many bits each token sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every token sets this many bits (the hash is evaluated this often).
    BitsPerToken(u32),
    /// The feature sets this many bits in all: with `t` tokens, the first
    /// `b mod t` tokens get `⌊b/t⌋ + 1` and the rest `⌊b/t⌋`.
    BitsPerFeature(u32),
}

impl Strategy {
    /// The number of bits of the `i`-th of `tokens` tokens.
    pub fn bits_for(self, i: usize, tokens: usize) -> usize {
        match self {
            Strategy::BitsPerToken(k) => k as usize,
            Strategy::BitsPerFeature(b) => {
                let b = b as usize;
                b / tokens + usize::from(i < b % tokens)
            }
        }
    }
}

/// The hash that turns a token into bit positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// clkhash `blakeHash`: keyed BLAKE2b-512 with salt `str(j)`, read as
    /// 16-bit little-endian words, modulo the filter length.
    Blake2b,
    /// clkhash `doubleHash`: `(HMAC-SHA1 + j · HMAC-MD5) mod l`.
    DoubleHash { prevent_singularity: bool },
    /// pprl random hashing: keyed BLAKE3 of the token, whose extendable output
    /// gives k independent positions (16-bit little-endian draws for filters
    /// up to 2^16 bits, 32-bit beyond), each mapped to `0..l` by Lemire's
    /// multiply-shift with rejection, so without modulo bias. Unlike double
    /// hashing, the k positions of a token are unrelated, which defeats the
    /// attacks that reconstruct tokens from the arithmetic progression of
    /// double-hashed positions.
    Blake3,
}

impl HashKind {
    fn name(self) -> &'static str {
        match self {
            HashKind::Blake2b => "blakeHash",
            HashKind::DoubleHash {
                prevent_singularity: false,
            } => "doubleHash",
            HashKind::DoubleHash {
                prevent_singularity: true,
            } => "doubleHash (prevent_singularity)",
            HashKind::Blake3 => "blake3",
        }
    }
}

/// clkhash's `missingValue`: a value equal to `sentinel` is not validated,
/// and `replace_with` (or, without it, the sentinel itself) is tokenised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingValue {
    pub sentinel: String,
    pub replace_with: Option<String>,
}

impl MissingValue {
    /// The value that is tokenised in place of a missing one.
    pub fn replacement(&self) -> &str {
        self.replace_with.as_deref().unwrap_or(&self.sentinel)
    }
}

/// Salting (pprl extension): every token of the feature is hashed together
/// with another feature's value of the same record, e.g. the year of birth.
/// Equal tokens of records with different salts then set unrelated bits, which
/// defeats frequency attacks that align frequent n-grams across all records
/// (an attacker must attack each salt group on its own). Choose a salt that is
/// stable and rarely wrong: a salt that differs between two records of the
/// same person makes that feature disagree entirely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salt {
    /// Index of the feature whose value is the salt.
    pub source: usize,
    /// Identifier of that feature.
    pub identifier: String,
    /// Use only the first `length` characters of its value (e.g. 4: the year of a `YYYYMMDD` date).
    pub length: Option<usize>,
}

/// A site-side blocking key (pprl extension, P-Sig style): a few parts of a
/// record's values, e.g. the Soundex code of the surname and the year of
/// birth. Each site hashes every key of every record with a key derived from
/// the secret ([`crate::encode::blocking`]) and writes the hashes beside the
/// clks; the linkage unit compares only records that share a key hash. A
/// record lacking a part's value has no hash for that key.
///
/// Parts see the feature's value after its normalisation and formatting (a
/// date in its canonical `YYYYMMDD` form), as the encoder does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingKey {
    /// Unique within the schema; hashed with the parts, so two keys never
    /// share a hash even when their part values agree.
    pub name: String,
    /// At least one.
    pub parts: Vec<KeyPart>,
}

/// One part of a [`BlockingKey`]: a transform of one encoded feature's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPart {
    /// Index of the feature in [`Schema::features`] (never an ignored one).
    pub feature: usize,
    /// That feature's identifier.
    pub identifier: String,
    pub transform: KeyTransform,
}

/// What a [`KeyPart`] takes of its feature's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTransform {
    /// The value itself (`"value"`).
    Value,
    /// American Soundex of the value's ASCII letters (`"soundex"`), e.g.
    /// `R163` for Robert and Rupert; a value without letters has none.
    Soundex,
    /// The first `n` characters (`"prefix"` with `"length": n`); a shorter
    /// value is taken whole.
    Prefix(usize),
    /// The year of a date feature (`"year"`): the canonical `YYYYMMDD` form
    /// without its last four digits; a value kept as written (`onInvalid`
    /// `keep`) gives its year when it is all digits too.
    Year,
}

impl KeyTransform {
    /// The transform's name in the schema file.
    pub fn name(self) -> &'static str {
        match self {
            KeyTransform::Value => "value",
            KeyTransform::Soundex => "soundex",
            KeyTransform::Prefix(_) => "prefix",
            KeyTransform::Year => "year",
        }
    }
}

impl Schema {
    /// Parses and validates a schema.
    ///
    /// # Errors
    /// [`SchemaError::Json`] for bad JSON or an unknown/mistyped top-level
    /// key, [`SchemaError::Version`], [`SchemaError::Config`],
    /// [`SchemaError::Feature`] naming the feature index, its identifier, the
    /// key and what was expected, or [`SchemaError::BlockingKey`] naming the
    /// blocking key, the entry and the problem (unknown or ignored field,
    /// duplicate name, no parts, unknown transform, `year` of a non-date).
    pub fn from_json(text: &str) -> Result<Schema, SchemaError> {
        let raw: RawSchema = serde_json::from_str(text).map_err(|e| SchemaError::Json {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e),
        })?;
        let _ = &raw.description;
        if raw.version.as_u64() != Some(SCHEMA_VERSION) {
            return Err(SchemaError::Version {
                found: raw.version.to_string(),
            });
        }
        let config = validate_config(&raw.clk_config)?;
        let mut features = Vec::with_capacity(raw.features.len());
        let mut salts: Vec<Option<RawSalt>> = Vec::with_capacity(raw.features.len());
        for (index, value) in raw.features.into_iter().enumerate() {
            let (feature, salt) = validate_feature(index, value, &config)?;
            if let Some(j) = features
                .iter()
                .position(|f: &Feature| f.identifier == feature.identifier)
            {
                return Err(feature_error(
                    index,
                    &feature.identifier,
                    "identifier",
                    format!("duplicate identifier: feature {j} has the same"),
                ));
            }
            features.push(feature);
            salts.push(salt);
        }
        // Salts name other features, so they are resolved once all are known.
        for (index, salt) in salts.into_iter().enumerate() {
            let Some(salt) = salt else { continue };
            let identifier = features[index].identifier.clone();
            let Some(source) = features
                .iter()
                .position(|f| f.identifier == salt.identifier)
            else {
                return Err(feature_error(
                    index,
                    &identifier,
                    "hashing.salt.identifier",
                    format!("no feature is called `{}`", salt.identifier),
                ));
            };
            if source == index {
                return Err(feature_error(
                    index,
                    &identifier,
                    "hashing.salt.identifier",
                    "a feature cannot be its own salt".to_owned(),
                ));
            }
            let length = match salt.length {
                Some(0) => {
                    return Err(feature_error(
                        index,
                        &identifier,
                        "hashing.salt.length",
                        "expected a positive number of characters".to_owned(),
                    ));
                }
                other => other.map(|n| n as usize),
            };
            if let Some(spec) = features[index].spec.as_mut() {
                spec.salt = Some(Salt {
                    source,
                    identifier: salt.identifier,
                    length,
                });
            }
        }
        let blocking_keys =
            validate_blocking_keys(raw.blocking_keys.unwrap_or_default(), &features)?;
        if features.iter().all(|f| f.spec.is_none()) {
            return Err(SchemaError::Config {
                key: "features".to_owned(),
                message: "expected at least one feature that is not ignored".to_owned(),
            });
        }
        let hash_bits = (config.l as u64) << config.xor_folds;
        for (index, feature) in features.iter().enumerate() {
            let Some(spec) = &feature.spec else { continue };
            match spec.hash {
                HashKind::Blake2b if !hash_bits.is_power_of_two() => {
                    return Err(feature_error(
                        index,
                        &feature.identifier,
                        "hashing.hash",
                        format!(
                            "blakeHash needs a filter length that is a power of two, but l × 2^xor_folds = {hash_bits}"
                        ),
                    ));
                }
                HashKind::Blake2b => {
                    if let Kdf::Hkdf { key_size, .. } = config.kdf
                        && key_size > 64
                    {
                        return Err(feature_error(
                            index,
                            &feature.identifier,
                            "hashing.hash",
                            format!(
                                "blakeHash takes keys of at most 64 bytes, but clkConfig.kdf.keySize is {key_size}"
                            ),
                        ));
                    }
                }
                HashKind::Blake3 => {
                    if config.l < 8 {
                        return Err(feature_error(
                            index,
                            &feature.identifier,
                            "hashing.hash",
                            format!(
                                "blake3 needs a filter of at least 8 bits, but l is {}",
                                config.l
                            ),
                        ));
                    }
                    if let Kdf::Hkdf { key_size, .. } = config.kdf
                        && key_size < 32
                    {
                        return Err(feature_error(
                            index,
                            &feature.identifier,
                            "hashing.hash",
                            format!(
                                "blake3 needs 32-byte keys, but clkConfig.kdf.keySize is {key_size}"
                            ),
                        ));
                    }
                }
                HashKind::DoubleHash { .. } => {}
            }
        }
        if let Kdf::Hkdf { hash, key_size, .. } = &config.kdf {
            let max = 255
                * match hash {
                    HkdfHash::Sha256 => 32,
                    HkdfHash::Sha512 => 64,
                };
            let needed = 2 * features.len() * key_size;
            if needed > max {
                return Err(SchemaError::Config {
                    key: "kdf.keySize".to_owned(),
                    message: format!(
                        "HKDF can derive at most {max} bytes, but {} features × 2 keys × {key_size} bytes = {needed}; \
                         use a smaller keySize, SHA512, or the BLAKE3 kdf",
                        features.len()
                    ),
                });
            }
        }
        let mut schema = Schema {
            l: config.l,
            xor_folds: config.xor_folds,
            kdf: config.kdf,
            hardening: config.hardening,
            features,
            blocking_keys,
            fingerprint: String::new(),
        };
        schema.fingerprint = blake3::hash(canonical_json(&schema.canonical_value()).as_bytes())
            .to_hex()
            .to_string();
        Ok(schema)
    }

    /// Reads, parses and validates a schema file.
    ///
    /// # Errors
    /// [`SchemaError::Read`], or the errors of [`Schema::from_json`].
    pub fn from_file(path: &Path) -> Result<Schema, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Schema::from_json(&text)
    }

    /// Every feature in file order, ignored ones included.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// The site-side blocking keys, in file order (empty when the schema declares none).
    pub fn blocking_keys(&self) -> &[BlockingKey] {
        &self.blocking_keys
    }

    /// The identifiers of every non-ignored feature, plus every ignored
    /// feature that serves as a salt, in file order: the columns the input
    /// must provide.
    pub fn identifying_columns(&self) -> Vec<&str> {
        let salt_sources: Vec<usize> = self
            .features
            .iter()
            .filter_map(|f| f.spec.as_ref()?.salt.as_ref().map(|s| s.source))
            .collect();
        self.features
            .iter()
            .enumerate()
            .filter(|(i, f)| f.spec.is_some() || salt_sources.contains(i))
            .map(|(_, f)| f.identifier.as_str())
            .collect()
    }

    /// Bits in the output clk (after XOR folding and balancing).
    pub fn filter_bits(&self) -> usize {
        if self.hardening.balance {
            2 * self.l
        } else {
            self.l
        }
    }

    /// Bytes in the output clk: `ceil(filter_bits / 8)`.
    pub fn filter_bytes(&self) -> usize {
        self.filter_bits().div_ceil(8)
    }

    /// `l`: the filter length after XOR folding, before balancing.
    pub fn l(&self) -> usize {
        self.l
    }

    /// The number of XOR folds; tokens are hashed into `l × 2^xor_folds` bits.
    pub fn xor_folds(&self) -> u32 {
        self.xor_folds
    }

    /// The filter length that tokens are hashed into: `l × 2^xor_folds`.
    pub fn hash_bits(&self) -> usize {
        self.l << self.xor_folds
    }

    /// The key derivation.
    pub fn kdf(&self) -> &Kdf {
        &self.kdf
    }

    /// Record-level hardening.
    pub fn hardening(&self) -> Hardening {
        self.hardening
    }

    /// 64 hex characters: BLAKE3 of the canonical JSON of the schema (every
    /// default filled in, keys sorted, no whitespace, descriptions left out),
    /// so two sites with semantically identical files agree.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The canonical JSON text that [`Schema::fingerprint`] hashes.
    pub fn canonical_json(&self) -> String {
        canonical_json(&self.canonical_value())
    }

    /// A multi-line human summary, for `pprl schema check`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let native = self.uses_extensions();
        let _ = writeln!(
            s,
            "linkage schema: version 3 ({})",
            if native {
                "pprl native: uses pprl extensions"
            } else {
                "clkhash v3 compatible"
            }
        );
        let _ = write!(s, "filter: {} bits", self.filter_bits());
        if self.xor_folds > 0 {
            let _ = write!(
                s,
                " (hashed into {} bits, {} XOR fold{})",
                self.hash_bits(),
                self.xor_folds,
                if self.xor_folds == 1 { "" } else { "s" }
            );
        }
        s.push('\n');
        let kdf = match &self.kdf {
            Kdf::Hkdf {
                hash,
                key_size,
                salt,
                info,
            } => format!(
                "HKDF-{} ({}-byte keys{}{})",
                match hash {
                    HkdfHash::Sha256 => "SHA256",
                    HkdfHash::Sha512 => "SHA512",
                },
                key_size,
                if salt.is_some() { ", salt" } else { "" },
                if info.is_some() { ", info" } else { "" }
            ),
            Kdf::Blake3 => "BLAKE3 derive_key per identifier".to_owned(),
        };
        let _ = writeln!(s, "key derivation: {kdf}");
        let _ = writeln!(
            s,
            "hardening: balance {}, BLIP {}",
            if self.hardening.balance { "on" } else { "off" },
            match self.hardening.blip {
                Some(p) => format!("p = {p}"),
                None => "off".to_owned(),
            }
        );
        let ignored = self.features.iter().filter(|f| f.spec.is_none()).count();
        let _ = writeln!(
            s,
            "features: {} ({} encoded, {} ignored)",
            self.features.len(),
            self.features.len() - ignored,
            ignored
        );
        let width = self
            .features
            .iter()
            .map(|f| f.identifier.chars().count())
            .max()
            .unwrap_or(0);
        for f in &self.features {
            let _ = write!(s, "  {:width$}  ", f.identifier);
            let Some(spec) = &f.spec else {
                s.push_str("ignored\n");
                continue;
            };
            let format = match &spec.format {
                Format::String { .. } => "string".to_owned(),
                Format::Integer { .. } => "integer".to_owned(),
                Format::Date { format, accepted } => {
                    let mut d = format!("date {}", format.as_str());
                    for a in accepted {
                        let _ = write!(d, "|{}", a.as_str());
                    }
                    d
                }
                Format::Enum { values } => format!("enum ({} values)", values.len()),
            };
            let comparison = match &spec.comparison {
                Comparison::Ngram { n, positional } => {
                    format!("{}{n}-grams", if *positional { "positional " } else { "" })
                }
                Comparison::Exact => "exact".to_owned(),
                Comparison::Numeric {
                    threshold_distance,
                    resolution,
                    fractional_precision,
                    ..
                } => format!(
                    "numeric (distance {threshold_distance}, resolution {resolution}, precision {fractional_precision})"
                ),
            };
            let bits = match spec.strategy {
                Strategy::BitsPerToken(k) => format!("{k} bits/token"),
                Strategy::BitsPerFeature(b) => format!("{b} bits/feature"),
            };
            let normalize = match spec.normalize {
                None => "none".to_owned(),
                Some(n) => {
                    let steps: Vec<&str> = [
                        (n.fold_accents, "accents"),
                        (n.case_fold, "case"),
                        (n.collapse_whitespace, "whitespace"),
                        (n.remove_punctuation, "punctuation"),
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, name)| *name)
                    .collect();
                    if steps.is_empty() {
                        "none".to_owned()
                    } else {
                        steps.join("+")
                    }
                }
            };
            let salt = match &spec.salt {
                None => String::new(),
                Some(salt) => match salt.length {
                    Some(n) => format!(", salted with {}[..{n}]", salt.identifier),
                    None => format!(", salted with {}", salt.identifier),
                },
            };
            let invalid = match spec.on_invalid {
                OnInvalid::Reject => "",
                OnInvalid::Missing => ", invalid values count as missing",
                OnInvalid::Keep => ", invalid values kept as they are",
            };
            let _ = writeln!(
                s,
                "{format}; {comparison}; {bits}; {}; normalise: {normalize}{salt}{invalid}",
                spec.hash.name()
            );
        }
        if !self.blocking_keys.is_empty() {
            let _ = writeln!(s, "blocking keys: {}", self.blocking_keys.len());
            let width = self
                .blocking_keys
                .iter()
                .map(|k| k.name.chars().count())
                .max()
                .unwrap_or(0);
            for key in &self.blocking_keys {
                let parts: Vec<String> = key
                    .parts
                    .iter()
                    .map(|p| match p.transform {
                        KeyTransform::Prefix(n) => format!("prefix({}, {n})", p.identifier),
                        t => format!("{}({})", t.name(), p.identifier),
                    })
                    .collect();
                let _ = writeln!(s, "  {:width$}  {}", key.name, parts.join(" + "));
            }
        }
        let _ = writeln!(s, "fingerprint: {}", self.fingerprint);
        s
    }

    /// Whether any pprl extension is in use (the schema is then not clkhash-compatible).
    pub fn uses_extensions(&self) -> bool {
        matches!(self.kdf, Kdf::Blake3)
            || self.hardening.balance
            || self.hardening.blip.is_some()
            || !self.blocking_keys.is_empty()
            || self.features.iter().any(|f| {
                f.spec.as_ref().is_some_and(|s| {
                s.normalize.is_some()
                    || s.on_invalid != OnInvalid::Reject
                    || s.salt.is_some()
                    || s.hash == HashKind::Blake3
                    || matches!(&s.format, Format::Date { accepted, .. } if !accepted.is_empty())
            })
            })
    }

    /// The schema with every default filled in, as JSON; descriptions are left out.
    fn canonical_value(&self) -> Value {
        let kdf = match &self.kdf {
            Kdf::Hkdf {
                hash,
                key_size,
                salt,
                info,
            } => {
                let b64 = |b: &Option<Vec<u8>>| {
                    b.as_ref()
                        .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b)))
                        .unwrap_or(Value::Null)
                };
                json!({
                    "type": "HKDF",
                    "hash": match hash { HkdfHash::Sha256 => "SHA256", HkdfHash::Sha512 => "SHA512" },
                    "keySize": key_size,
                    "salt": b64(salt),
                    "info": b64(info),
                })
            }
            Kdf::Blake3 => json!({"type": "BLAKE3"}),
        };
        let features: Vec<Value> = self
            .features
            .iter()
            .map(|f| match &f.spec {
                None => json!({"identifier": f.identifier, "ignored": true}),
                Some(spec) => json!({
                    "identifier": f.identifier,
                    "onInvalid": match spec.on_invalid {
                        OnInvalid::Reject => "reject",
                        OnInvalid::Missing => "missing",
                        OnInvalid::Keep => "keep",
                    },
                    "normalize": spec.normalize.map(|n| json!({
                        "foldAccents": n.fold_accents,
                        "caseFold": n.case_fold,
                        "collapseWhitespace": n.collapse_whitespace,
                        "removePunctuation": n.remove_punctuation,
                    })),
                    "format": match &spec.format {
                        Format::String { encoding, case, min_length, max_length, pattern } => json!({
                            "type": "string",
                            "encoding": encoding.name(),
                            "case": case.name(),
                            "minLength": min_length,
                            "maxLength": max_length,
                            "pattern": pattern.as_ref().map(|p| p.source.clone()),
                        }),
                        Format::Integer { minimum, maximum } => json!({
                            "type": "integer", "minimum": minimum, "maximum": maximum,
                        }),
                        Format::Date { format, accepted } => json!({
                            "type": "date",
                            "format": format.as_str(),
                            "acceptedFormats": accepted.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                        }),
                        Format::Enum { values } => json!({"type": "enum", "values": values}),
                    },
                    "hashing": {
                        "comparison": match &spec.comparison {
                            Comparison::Ngram { n, positional } => json!({
                                "type": "ngram", "n": n, "positional": positional,
                            }),
                            Comparison::Exact => json!({"type": "exact"}),
                            Comparison::Numeric { threshold_distance, resolution, fractional_precision, .. } => json!({
                                "type": "numeric",
                                "thresholdDistance": threshold_distance,
                                "resolution": resolution,
                                "fractional_precision": fractional_precision,
                            }),
                        },
                        "strategy": match spec.strategy {
                            Strategy::BitsPerToken(k) => json!({"bitsPerToken": k}),
                            Strategy::BitsPerFeature(b) => json!({"bitsPerFeature": b}),
                        },
                        "hash": match spec.hash {
                            HashKind::Blake2b => json!({"type": "blakeHash"}),
                            HashKind::DoubleHash { prevent_singularity } => json!({
                                "type": "doubleHash", "prevent_singularity": prevent_singularity,
                            }),
                            HashKind::Blake3 => json!({"type": "blake3"}),
                        },
                        "missingValue": spec.missing.as_ref().map(|m| json!({
                            "sentinel": m.sentinel, "replaceWith": m.replace_with,
                        })),
                        "salt": spec.salt.as_ref().map(|s| json!({
                            "identifier": s.identifier, "length": s.length,
                        })),
                    },
                }),
            })
            .collect();
        let mut value = json!({
            "version": SCHEMA_VERSION,
            "clkConfig": {
                "l": self.l,
                "xor_folds": self.xor_folds,
                "kdf": kdf,
                "balance": self.hardening.balance,
                "blip": self.hardening.blip.map(|p| json!({"probability": p})),
            },
            "features": features,
        });
        // Only when there are keys, so that schemas without keys keep their fingerprint.
        if !self.blocking_keys.is_empty() {
            let keys: Vec<Value> = self
                .blocking_keys
                .iter()
                .map(|k| {
                    let parts: Vec<Value> = k
                        .parts
                        .iter()
                        .map(|p| match p.transform {
                            KeyTransform::Prefix(n) => json!({
                                "field": p.identifier, "transform": "prefix", "length": n,
                            }),
                            t => json!({"field": p.identifier, "transform": t.name()}),
                        })
                        .collect();
                    json!({"name": k.name, "parts": parts})
                })
                .collect();
            value["blocking_keys"] = Value::Array(keys);
        }
        value
    }
}

impl Feature {
    /// The feature's identifier (its column name).
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// Whether the feature is ignored (not encoded).
    pub fn is_ignored(&self) -> bool {
        self.spec.is_none()
    }

    /// The feature's free-text description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// How the feature is encoded; `None` when it is ignored.
    pub fn spec(&self) -> Option<&FeatureSpec> {
        self.spec.as_ref()
    }
}

/// Writes JSON with object keys sorted and no whitespace, whatever order the
/// map type keeps.
fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// serde_json's message without its " at line L column C" suffix (kept in fields).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) if e.line() > 0 => text[..i].to_owned(),
        _ => text,
    }
}

fn feature_error(index: usize, identifier: &str, key: &str, message: String) -> SchemaError {
    SchemaError::Feature {
        index,
        identifier: identifier.to_owned(),
        key: key.to_owned(),
        message,
    }
}

fn config_error(key: &str, message: String) -> SchemaError {
    SchemaError::Config {
        key: key.to_owned(),
        message,
    }
}

fn key_error(index: usize, name: &str, key: &str, message: String) -> SchemaError {
    SchemaError::BlockingKey {
        index,
        name: name.to_owned(),
        key: key.to_owned(),
        message,
    }
}

/// Validates `blocking_keys` against the (validated) features.
fn validate_blocking_keys(
    raw: Vec<Value>,
    features: &[Feature],
) -> Result<Vec<BlockingKey>, SchemaError> {
    let mut keys: Vec<BlockingKey> = Vec::with_capacity(raw.len());
    for (index, value) in raw.into_iter().enumerate() {
        let hint = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let raw: RawBlockingKey = serde_json::from_value(value)
            .map_err(|e| key_error(index, &hint, "(key)", e.to_string()))?;
        let _ = &raw.description;
        let name = raw.name;
        let err = |key: &str, message: String| key_error(index, &name, key, message);
        // The names go comma-separated into the clk file's metadata.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(err(
                "name",
                "expected a non-empty name of ASCII letters, digits, `_`, `-` and `.`".to_owned(),
            ));
        }
        if let Some(j) = keys.iter().position(|k| k.name == name) {
            return Err(err(
                "name",
                format!("duplicate name: blocking key {j} has the same"),
            ));
        }
        if raw.parts.is_empty() {
            return Err(err("parts", "expected at least one part".to_owned()));
        }
        let mut parts = Vec::with_capacity(raw.parts.len());
        for (j, value) in raw.parts.into_iter().enumerate() {
            let at = |what: &str| format!("parts[{j}]{what}");
            let part: RawKeyPart =
                serde_json::from_value(value).map_err(|e| err(&at(""), e.to_string()))?;
            let Some(feature) = features.iter().position(|f| f.identifier == part.field) else {
                return Err(err(
                    &at(".field"),
                    format!("no feature is called `{}`", part.field),
                ));
            };
            let Some(spec) = &features[feature].spec else {
                return Err(err(
                    &at(".field"),
                    format!(
                        "feature `{}` is ignored; a blocking key can only use encoded features \
                         (their values are normalised and validated)",
                        part.field
                    ),
                ));
            };
            let transform = match part.transform.as_str() {
                "value" => KeyTransform::Value,
                "soundex" => KeyTransform::Soundex,
                "year" => KeyTransform::Year,
                "prefix" => match part.length {
                    Some(n) if n > 0 => KeyTransform::Prefix(n as usize),
                    Some(_) => {
                        return Err(err(
                            &at(".length"),
                            "expected a positive number of characters".to_owned(),
                        ));
                    }
                    None => {
                        return Err(err(
                            &at(".length"),
                            "the prefix transform needs a length (characters kept)".to_owned(),
                        ));
                    }
                },
                other => {
                    return Err(err(
                        &at(".transform"),
                        format!(
                            "unknown transform {other:?}: expected \"value\", \"soundex\", \
                             \"prefix\" or \"year\""
                        ),
                    ));
                }
            };
            if part.length.is_some() && !matches!(transform, KeyTransform::Prefix(_)) {
                return Err(err(
                    &at(".length"),
                    format!(
                        "only the prefix transform takes a length, not {}",
                        transform.name()
                    ),
                ));
            }
            if transform == KeyTransform::Year && !matches!(spec.format, Format::Date { .. }) {
                return Err(err(
                    &at(".transform"),
                    format!(
                        "the year transform needs a date feature, but `{}` is not a date",
                        part.field
                    ),
                ));
            }
            parts.push(KeyPart {
                feature,
                identifier: part.field,
                transform,
            });
        }
        keys.push(BlockingKey { name, parts });
    }
    Ok(keys)
}

/// `clkConfig`, validated.
struct Config {
    l: usize,
    xor_folds: u32,
    kdf: Kdf,
    hardening: Hardening,
}

fn validate_config(raw: &RawClkConfig) -> Result<Config, SchemaError> {
    let xor_folds = match (raw.xor_folds, raw.xor_folds_camel) {
        (Some(a), Some(b)) if a != b => {
            return Err(config_error(
                "xor_folds",
                format!("xor_folds ({a}) and xorFolds ({b}) disagree; give one of them"),
            ));
        }
        (a, b) => a.or(b).unwrap_or(0),
    };
    if raw.l == 0 {
        return Err(config_error(
            "l",
            "expected a filter length of at least 1 bit".to_owned(),
        ));
    }
    if xor_folds > 20 || (raw.l << xor_folds) > MAX_HASH_BITS {
        return Err(config_error(
            "l",
            format!(
                "l × 2^xor_folds must be at most {MAX_HASH_BITS} bits, but l = {} and xor_folds = {xor_folds}",
                raw.l
            ),
        ));
    }
    let kdf = match &raw.kdf {
        RawKdf::Hkdf {
            hash,
            key_size,
            salt,
            info,
        } => {
            let hash = match hash.as_deref() {
                None | Some("SHA256") => HkdfHash::Sha256,
                Some("SHA512") => HkdfHash::Sha512,
                Some(other) => {
                    return Err(config_error(
                        "kdf.hash",
                        format!("expected \"SHA256\" or \"SHA512\", found {other:?}"),
                    ));
                }
            };
            let key_size = key_size.unwrap_or(64);
            if key_size == 0 || key_size > 1024 {
                return Err(config_error(
                    "kdf.keySize",
                    format!("expected a key size from 1 to 1024 bytes, found {key_size}"),
                ));
            }
            let decode =
                |key: &str, text: &Option<String>| -> Result<Option<Vec<u8>>, SchemaError> {
                    text.as_deref()
                        .map(|t| {
                            base64::engine::general_purpose::STANDARD
                                .decode(t)
                                .map_err(|e| config_error(key, format!("expected base64: {e}")))
                        })
                        .transpose()
                };
            Kdf::Hkdf {
                hash,
                key_size: key_size as usize,
                salt: decode("kdf.salt", salt)?,
                info: decode("kdf.info", info)?,
            }
        }
        RawKdf::Blake3 {} => Kdf::Blake3,
    };
    let blip = match &raw.blip {
        None => None,
        Some(b) if b.probability > 0.0 && b.probability < 0.5 => Some(b.probability),
        Some(b) => {
            return Err(config_error(
                "blip.probability",
                format!(
                    "expected a flip probability above 0 and below 0.5, found {}",
                    b.probability
                ),
            ));
        }
    };
    Ok(Config {
        l: raw.l as usize,
        xor_folds,
        kdf,
        hardening: Hardening {
            balance: raw.balance.unwrap_or(false),
            blip,
        },
    })
}

/// Parses one sub-object of a feature, naming the feature and key on error.
fn parse_part<T: serde::de::DeserializeOwned>(
    index: usize,
    identifier: &str,
    key: &str,
    value: Value,
) -> Result<T, SchemaError> {
    serde_json::from_value(value).map_err(|e| feature_error(index, identifier, key, e.to_string()))
}

fn validate_feature(
    index: usize,
    value: Value,
    config: &Config,
) -> Result<(Feature, Option<RawSalt>), SchemaError> {
    let identifier_hint = value
        .get("identifier")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let raw: RawFeature = parse_part(index, &identifier_hint, "", value).map_err(|e| match e {
        SchemaError::Feature {
            index,
            identifier,
            message,
            ..
        } => SchemaError::Feature {
            index,
            identifier,
            key: "(feature)".to_owned(),
            message,
        },
        other => other,
    })?;
    let id = raw.identifier.clone();
    if id.is_empty() {
        return Err(feature_error(
            index,
            &id,
            "identifier",
            "expected a non-empty identifier".to_owned(),
        ));
    }
    let err = |key: &str, message: String| feature_error(index, &id, key, message);
    if raw.ignored == Some(true) {
        for (present, key) in [
            (raw.format.is_some(), "format"),
            (raw.hashing.is_some(), "hashing"),
            (raw.normalize.is_some(), "normalize"),
            (raw.on_invalid.is_some(), "onInvalid"),
        ] {
            if present {
                return Err(err(
                    key,
                    "an ignored feature takes no format, hashing or normalize".to_owned(),
                ));
            }
        }
        return Ok((
            Feature {
                identifier: raw.identifier,
                description: raw.description,
                spec: None,
            },
            None,
        ));
    }
    let format_value = raw.format.ok_or_else(|| {
        err(
            "format",
            "missing: a feature that is not ignored needs a format".to_owned(),
        )
    })?;
    let hashing_value = raw.hashing.ok_or_else(|| {
        err(
            "hashing",
            "missing: a feature that is not ignored needs hashing".to_owned(),
        )
    })?;
    let normalize = match raw.normalize {
        None => None,
        Some(v) => {
            let n: RawNormalize = parse_part(index, &id, "normalize", v)?;
            let d = Normalization::default();
            Some(Normalization {
                fold_accents: n.fold_accents.unwrap_or(d.fold_accents),
                case_fold: n.case_fold.unwrap_or(d.case_fold),
                collapse_whitespace: n.collapse_whitespace.unwrap_or(d.collapse_whitespace),
                remove_punctuation: n.remove_punctuation.unwrap_or(d.remove_punctuation),
            })
        }
    };
    let on_invalid = match raw.on_invalid {
        None => OnInvalid::Reject,
        Some(v) => match parse_part(index, &id, "onInvalid", v)? {
            RawOnInvalid::Reject => OnInvalid::Reject,
            RawOnInvalid::Missing => OnInvalid::Missing,
            RawOnInvalid::Keep => OnInvalid::Keep,
        },
    };
    let (format, format_description) =
        validate_format(parse_part(index, &id, "format", format_value)?, &err)?;
    let hashing: RawHashing = parse_part(index, &id, "hashing", hashing_value)?;
    let comparison = match parse_part(index, &id, "hashing.comparison", hashing.comparison)? {
        RawComparison::Ngram { n, positional } => {
            if !(0..=64).contains(&n) {
                return Err(err(
                    "hashing.comparison.n",
                    format!("expected n from 0 to 64, found {n}"),
                ));
            }
            Comparison::Ngram {
                n: n as usize,
                positional: positional.unwrap_or(false),
            }
        }
        RawComparison::Exact {} => Comparison::Exact,
        RawComparison::Numeric {
            threshold_distance,
            resolution,
            fractional_precision,
        } => {
            if !(threshold_distance > 0.0 && threshold_distance.is_finite()) {
                return Err(err(
                    "hashing.comparison.thresholdDistance",
                    format!("expected a positive number, found {threshold_distance}"),
                ));
            }
            if !(1..=10_000).contains(&resolution) {
                return Err(err(
                    "hashing.comparison.resolution",
                    format!("expected an integer from 1 to 10000, found {resolution}"),
                ));
            }
            let fractional_precision = fractional_precision.unwrap_or(0);
            if !(0..=18).contains(&fractional_precision) {
                return Err(err(
                    "hashing.comparison.fractional_precision",
                    format!("expected an integer from 0 to 18, found {fractional_precision}"),
                ));
            }
            let scaled =
                (threshold_distance * 10f64.powi(fractional_precision as i32)).round_ties_even();
            if scaled == 0.0 || scaled >= 1e30 {
                return Err(err(
                    "hashing.comparison.thresholdDistance",
                    "not enough fractional_precision to encode thresholdDistance".to_owned(),
                ));
            }
            Comparison::Numeric {
                threshold_distance,
                resolution: resolution as u32,
                fractional_precision: fractional_precision as u32,
                distance_interval: scaled as i128,
            }
        }
    };
    let strategy: RawStrategy = parse_part(index, &id, "hashing.strategy", hashing.strategy)?;
    let strategy = match (strategy.bits_per_token, strategy.bits_per_feature) {
        (Some(k), None) if k >= 1 => Strategy::BitsPerToken(k),
        (None, Some(b)) if b >= 1 => Strategy::BitsPerFeature(b),
        (Some(_), Some(_)) => {
            return Err(err(
                "hashing.strategy",
                "expected one of bitsPerToken and bitsPerFeature, found both".to_owned(),
            ));
        }
        (None, None) => {
            return Err(err(
                "hashing.strategy",
                "expected bitsPerToken or bitsPerFeature".to_owned(),
            ));
        }
        _ => {
            return Err(err(
                "hashing.strategy",
                "expected a positive number of bits".to_owned(),
            ));
        }
    };
    if let Strategy::BitsPerToken(k) | Strategy::BitsPerFeature(k) = strategy
        && k > 1_000_000
    {
        return Err(err(
            "hashing.strategy",
            format!("expected at most 1000000 bits, found {k}"),
        ));
    }
    let hash = match hashing.hash {
        None => HashKind::Blake2b,
        Some(v) => match parse_part(index, &id, "hashing.hash", v)? {
            RawHash::BlakeHash {} => HashKind::Blake2b,
            RawHash::DoubleHash {
                prevent_singularity,
            } => HashKind::DoubleHash {
                prevent_singularity: prevent_singularity.unwrap_or(false),
            },
            RawHash::Blake3 {} => HashKind::Blake3,
        },
    };
    let missing = match hashing.missing_value {
        None => None,
        Some(v) => {
            let m: RawMissingValue = parse_part(index, &id, "hashing.missingValue", v)?;
            Some(MissingValue {
                sentinel: m.sentinel,
                replace_with: m.replace_with,
            })
        }
    };
    let salt = match hashing.salt {
        None => None,
        Some(v) => Some(parse_part::<RawSalt>(index, &id, "hashing.salt", v)?),
    };
    let _ = config;
    Ok((
        Feature {
            identifier: raw.identifier,
            // clkhash keeps a feature's description in its format object.
            description: raw.description.or(format_description),
            spec: Some(FeatureSpec {
                normalize,
                format,
                comparison,
                strategy,
                hash,
                missing,
                salt: None,
                on_invalid,
            }),
        },
        salt,
    ))
}

fn validate_format(
    raw: RawFormat,
    err: &dyn Fn(&str, String) -> SchemaError,
) -> Result<(Format, Option<String>), SchemaError> {
    Ok(match raw {
        RawFormat::String {
            encoding,
            case,
            min_length,
            max_length,
            pattern,
            description,
        } => {
            let encoding = match encoding.as_deref() {
                None | Some("utf-8") => TextEncoding::Utf8,
                Some("ascii") => TextEncoding::Ascii,
                Some("utf-16") => TextEncoding::Utf16,
                Some("utf-32") => TextEncoding::Utf32,
                Some(other) => {
                    return Err(err(
                        "format.encoding",
                        format!(
                            "expected \"ascii\", \"utf-8\", \"utf-16\" or \"utf-32\", found {other:?}"
                        ),
                    ));
                }
            };
            let case = match case.as_deref() {
                None | Some("mixed") => Case::Mixed,
                Some("upper") => Case::Upper,
                Some("lower") => Case::Lower,
                Some(other) => {
                    return Err(err(
                        "format.case",
                        format!("expected \"upper\", \"lower\" or \"mixed\", found {other:?}"),
                    ));
                }
            };
            if max_length == Some(0) {
                return Err(err(
                    "format.maxLength",
                    "expected a positive length".to_owned(),
                ));
            }
            let pattern = match pattern {
                None => None,
                Some(source) => {
                    if case != Case::Mixed || min_length.is_some() || max_length.is_some() {
                        return Err(err(
                            "format.pattern",
                            "a pattern cannot be combined with case, minLength or maxLength"
                                .to_owned(),
                        ));
                    }
                    let regex = regex::Regex::new(&format!("\\A(?:{source})\\z")).map_err(|e| {
                        err(
                            "format.pattern",
                            format!("expected a regular expression: {e}"),
                        )
                    })?;
                    Some(Pattern { source, regex })
                }
            };
            (
                Format::String {
                    encoding,
                    case,
                    min_length: min_length.map(|n| n as usize),
                    max_length: max_length.map(|n| n as usize),
                    pattern,
                },
                description,
            )
        }
        RawFormat::Integer {
            minimum,
            maximum,
            description,
        } => (Format::Integer { minimum, maximum }, description),
        RawFormat::Date {
            format,
            accepted_formats,
            description,
        } => {
            let format = DateFormat::new(&format).map_err(|e| {
                err(
                    "format.format",
                    format!("expected a strptime date format: {e}"),
                )
            })?;
            let accepted = accepted_formats
                .unwrap_or_default()
                .iter()
                .map(|f| {
                    DateFormat::new(f).map_err(|e| {
                        err(
                            "format.acceptedFormats",
                            format!("expected strptime date formats: {f:?}: {e}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (Format::Date { format, accepted }, description)
        }
        RawFormat::Enum {
            values,
            description,
        } => {
            if values.is_empty() {
                return Err(err(
                    "format.values",
                    "expected at least one value".to_owned(),
                ));
            }
            (Format::Enum { values }, description)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"version": 3,
        "clkConfig": {"l": 1024, "kdf": {"type": "HKDF"}},
        "features": [
          {"identifier": "id", "ignored": true},
          {"identifier": "name", "format": {"type": "string"},
           "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 20}}}
        ]}"#;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn reads_a_minimal_clkhash_schema_with_defaults() {
        let s = Schema::from_json(MINIMAL).unwrap();
        assert_eq!(s.features().len(), 2);
        assert!(s.features()[0].is_ignored());
        assert_eq!(s.identifying_columns(), vec!["name"]);
        assert_eq!(s.filter_bits(), 1024);
        assert_eq!(s.filter_bytes(), 128);
        let spec = s.features()[1].spec().unwrap();
        assert_eq!(spec.hash, HashKind::Blake2b);
        assert_eq!(
            spec.comparison,
            Comparison::Ngram {
                n: 2,
                positional: false
            }
        );
        assert_eq!(
            s.kdf(),
            &Kdf::Hkdf {
                hash: HkdfHash::Sha256,
                key_size: 64,
                salt: None,
                info: None
            }
        );
        assert!(!s.uses_extensions());
    }

    #[test]
    fn reads_the_reference_schemas() {
        for name in [
            "clkhash_v3_blake.schema.json",
            "clkhash_v3_doublehash.schema.json",
        ] {
            let s = Schema::from_json(&fixture(name)).unwrap();
            assert_eq!(s.features().len(), 11, "{name}");
            assert_eq!(s.filter_bits(), 1024);
        }
        for (i, line) in fixture("clkhash_v3_features.jsonl").lines().enumerate() {
            let case: Value = serde_json::from_str(line).unwrap();
            let s = Schema::from_json(&case["schema"].to_string())
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(
                s.filter_bits() as u64,
                case["schema"]["clkConfig"]["l"].as_u64().unwrap()
            );
        }
    }

    #[test]
    fn fingerprint_ignores_whitespace_key_order_defaults_and_descriptions() {
        let a = Schema::from_json(MINIMAL).unwrap();
        let b = Schema::from_json(
            r#"{"features": [{"ignored": true, "identifier": "id", "description": "row key"},
              {"hashing": {"hash": {"type": "blakeHash"}, "strategy": {"bitsPerToken": 20},
                           "comparison": {"positional": false, "n": 2, "type": "ngram"}},
               "identifier": "name", "format": {"type": "string", "encoding": "utf-8", "case": "mixed"}}],
              "clkConfig": {"kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64}, "l": 1024, "xor_folds": 0},
              "version": 3}"#,
        )
        .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let c = Schema::from_json(&MINIMAL.replace("\"bitsPerToken\": 20", "\"bitsPerToken\": 21"))
            .unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert!(!a.canonical_json().contains(' '));
    }

    #[test]
    fn accepts_both_spellings_of_xor_folds() {
        let a =
            Schema::from_json(&MINIMAL.replace("\"l\": 1024,", "\"l\": 512, \"xor_folds\": 1,"))
                .unwrap();
        let b = Schema::from_json(&MINIMAL.replace("\"l\": 1024,", "\"l\": 512, \"xorFolds\": 1,"))
            .unwrap();
        assert_eq!(a.xor_folds(), 1);
        assert_eq!(a.hash_bits(), 1024);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    fn error_of(text: &str) -> String {
        Schema::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_feature_the_key_and_the_expectation() {
        let e = error_of(&MINIMAL.replace("bitsPerToken", "bitsPerTokn"));
        assert!(e.contains("feature 1 (`name`)"), "{e}");
        assert!(e.contains("hashing.strategy"), "{e}");
        assert!(e.contains("bitsPerTokn"), "{e}");
        let e = error_of(&MINIMAL.replace("\"ngram\", \"n\": 2", "\"ngrams\", \"n\": 2"));
        assert!(
            e.contains("hashing.comparison") && e.contains("ngrams") && e.contains("`exact`"),
            "{e}"
        );
        let e = error_of(&MINIMAL.replace("\"n\": 2", "\"n\": \"two\""));
        assert!(
            e.contains("hashing.comparison") && e.contains("expected i64"),
            "{e}"
        );
        let e = error_of(&MINIMAL.replace(
            "\"format\": {\"type\": \"string\"}",
            "\"format\": {\"type\": \"string\", \"cas\": \"lower\"}",
        ));
        assert!(e.contains("key `format`") && e.contains("cas"), "{e}");
        let e = error_of(&MINIMAL.replace("\"version\": 3", "\"version\": 2"));
        assert!(e.contains("version 2 is not supported"), "{e}");
        let e = error_of(&MINIMAL.replace("\"l\": 1024", "\"l\": 1024, \"lenght\": 3"));
        assert!(e.contains("lenght") && e.contains("line 2"), "{e}");
        let e = error_of(&MINIMAL.replace(
            "\"identifier\": \"name\", \"format\"",
            "\"identifier\": \"name\", \"formt\": 1, \"format\"",
        ));
        assert!(
            e.contains("feature 1 (`name`)") && e.contains("formt"),
            "{e}"
        );
        let e = error_of("{\"version\": 3,\n  \"clkConfig\": }");
        assert!(e.contains("line 2"), "{e}");
        let e =
            error_of(&MINIMAL.replace("\"id\", \"ignored\": true", "\"name\", \"ignored\": true"));
        assert!(e.contains("duplicate identifier"), "{e}");
        let e = error_of(&MINIMAL.replace("\"l\": 1024", "\"l\": 1000"));
        assert!(e.contains("power of two"), "{e}");
        let e = error_of(&MINIMAL.replace(
            "\"strategy\": {\"bitsPerToken\": 20}",
            "\"strategy\": {\"bitsPerToken\": 20}, \"salt\": {\"identifier\": \"dob\"}",
        ));
        assert!(
            e.contains("hashing.salt.identifier") && e.contains("dob"),
            "{e}"
        );
        let e = error_of(&MINIMAL.replace(
            "{\"type\": \"HKDF\"}",
            "{\"type\": \"HKDF\", \"salt\": \"not base64!\"}",
        ));
        assert!(e.contains("kdf.salt") && e.contains("base64"), "{e}");
        let e = error_of(&MINIMAL.replace(
            "{\"type\": \"string\"}",
            "{\"type\": \"date\", \"format\": \"%d/%q\"}",
        ));
        assert!(e.contains("format.format") && e.contains("%q"), "{e}");
    }

    #[test]
    fn ignored_salt_sources_are_identifying_columns() {
        let s = Schema::from_json(&MINIMAL.replace(
            "\"strategy\": {\"bitsPerToken\": 20}",
            "\"strategy\": {\"bitsPerToken\": 20}, \"salt\": {\"identifier\": \"id\", \"length\": 4}",
        ))
        .unwrap();
        assert_eq!(s.identifying_columns(), vec!["id", "name"]);
        let salt = s.features()[1].spec().unwrap().salt.clone().unwrap();
        assert_eq!((salt.source, salt.length), (0, Some(4)));
        assert!(s.uses_extensions());
    }

    #[test]
    fn bits_per_feature_spreads_the_remainder_over_the_first_tokens() {
        let s = Strategy::BitsPerFeature(10);
        let bits: Vec<usize> = (0..4).map(|i| s.bits_for(i, 4)).collect();
        assert_eq!(bits, vec![3, 3, 2, 2]);
        assert_eq!(Strategy::BitsPerToken(7).bits_for(3, 4), 7);
    }

    /// MINIMAL with a date feature and the given blocking keys (JSON array text).
    fn with_keys(keys: &str) -> String {
        r#"{"version": 3,
        "clkConfig": {"l": 1024, "kdf": {"type": "HKDF"}},
        "features": [
          {"identifier": "id", "ignored": true},
          {"identifier": "name", "format": {"type": "string"},
           "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 20}}},
          {"identifier": "dob", "format": {"type": "date", "format": "%Y%m%d"},
           "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 20}}}
        ],
        "blocking_keys": KEYS}"#
            .replace("KEYS", keys)
    }

    const NAME_YEAR: &str = r#"[{"name": "name_year", "description": "free text",
        "parts": [{"field": "name", "transform": "soundex"}, {"field": "dob", "transform": "year"}]}]"#;

    #[test]
    fn blocking_keys_are_read_listed_and_fingerprinted() {
        let plain = Schema::from_json(&with_keys("[]")).unwrap();
        assert!(plain.blocking_keys().is_empty());
        assert!(!plain.uses_extensions());
        assert!(!plain.canonical_json().contains("blocking_keys"));
        let keyed = Schema::from_json(&with_keys(NAME_YEAR)).unwrap();
        assert_eq!(
            keyed.blocking_keys(),
            &[BlockingKey {
                name: "name_year".into(),
                parts: vec![
                    KeyPart {
                        feature: 1,
                        identifier: "name".into(),
                        transform: KeyTransform::Soundex
                    },
                    KeyPart {
                        feature: 2,
                        identifier: "dob".into(),
                        transform: KeyTransform::Year
                    },
                ],
            }]
        );
        assert!(keyed.uses_extensions());
        assert_ne!(plain.fingerprint(), keyed.fingerprint());
        // Descriptions and whitespace do not count; the transforms and names do.
        let same = Schema::from_json(&with_keys(&NAME_YEAR.replace("free text", "other"))).unwrap();
        assert_eq!(same.fingerprint(), keyed.fingerprint());
        for other in [
            NAME_YEAR.replace("name_year", "name_year2"),
            NAME_YEAR.replace("\"soundex\"", "\"prefix\", \"length\": 2"),
        ] {
            let s = Schema::from_json(&with_keys(&other)).unwrap();
            assert_ne!(s.fingerprint(), keyed.fingerprint(), "{other}");
        }
        let summary = keyed.summary();
        assert!(
            summary.contains("blocking keys: 1")
                && summary.contains("name_year  soundex(name) + year(dob)"),
            "{summary}"
        );
        let prefix = Schema::from_json(&with_keys(
            r#"[{"name": "p", "parts": [{"field": "name", "transform": "prefix", "length": 3}]}]"#,
        ))
        .unwrap();
        assert!(prefix.summary().contains("p  prefix(name, 3)"));
        assert_eq!(
            prefix.blocking_keys()[0].parts[0].transform,
            KeyTransform::Prefix(3)
        );
    }

    #[test]
    fn blocking_key_errors_name_the_key_and_the_problem() {
        let part = |field: &str, transform: &str| {
            format!(r#"{{"field": "{field}", "transform": "{transform}"}}"#)
        };
        let key = |name: &str, parts: &[String]| {
            format!(r#"{{"name": "{name}", "parts": [{}]}}"#, parts.join(", "))
        };
        let cases: Vec<(String, &[&str])> = vec![
            (
                format!("[{}]", key("k", &[part("surname", "soundex")])),
                &["blocking key 0 (`k`)", "parts[0].field", "no feature is called `surname`"],
            ),
            (
                format!("[{}]", key("k", &[part("id", "value")])),
                &["blocking key 0 (`k`)", "parts[0].field", "`id` is ignored"],
            ),
            (
                format!(
                    "[{}, {}]",
                    key("k", &[part("name", "value")]),
                    key("k", &[part("dob", "value")])
                ),
                &["blocking key 1 (`k`)", "key `name`", "duplicate name"],
            ),
            (
                format!("[{}]", key("k", &[])),
                &["blocking key 0 (`k`)", "key `parts`", "at least one part"],
            ),
            (
                format!("[{}]", key("k", &[part("name", "metaphone")])),
                &["parts[0].transform", "unknown transform \"metaphone\"", "\"soundex\""],
            ),
            (
                format!("[{}]", key("k", &[part("name", "value"), part("name", "year")])),
                &["parts[1].transform", "year", "`name` is not a date"],
            ),
            (
                format!("[{}]", key("k", &[part("name", "prefix")])),
                &["parts[0].length", "needs a length"],
            ),
            (
                r#"[{"name": "k", "parts": [{"field": "name", "transform": "prefix", "length": 0}]}]"#
                    .to_owned(),
                &["parts[0].length", "positive"],
            ),
            (
                r#"[{"name": "k", "parts": [{"field": "name", "transform": "value", "length": 2}]}]"#
                    .to_owned(),
                &["parts[0].length", "only the prefix transform"],
            ),
            (
                r#"[{"name": "k", "parts": [{"field": "name", "transfrom": "value"}]}]"#.to_owned(),
                &["blocking key 0 (`k`)", "key `parts[0]`", "transfrom"],
            ),
            (
                r#"[{"name": "k", "part": []}]"#.to_owned(),
                &["blocking key 0 (`k`)", "key `(key)`", "part"],
            ),
            (
                format!("[{}]", key("a,b", &[part("name", "value")])),
                &["blocking key 0 (`a,b`)", "key `name`", "ASCII letters"],
            ),
        ];
        for (keys, expected) in cases {
            let e = error_of(&with_keys(&keys));
            for needle in expected {
                assert!(e.contains(needle), "{needle:?} not in {e}");
            }
        }
    }

    #[test]
    fn the_default_schema_with_blocking_keys_adds_only_keys() {
        let plain = Schema::from_json(&default_schema_json()).unwrap();
        let keyed = Schema::from_json(&default_schema_with_blocking_keys_json()).unwrap();
        assert!(keyed.blocking_keys().len() >= 3);
        // The clks do not change: the same schema but for the keys.
        let mut canonical: Value = serde_json::from_str(&keyed.canonical_json()).unwrap();
        assert!(
            canonical
                .as_object_mut()
                .unwrap()
                .remove("blocking_keys")
                .is_some()
        );
        assert_eq!(canonical_json(&canonical), plain.canonical_json());
        // No key uses the national register number.
        assert!(
            keyed
                .blocking_keys()
                .iter()
                .all(|k| k.parts.iter().all(|p| p.identifier != "soc_sec_id"))
        );
        let summary = keyed.summary();
        for key in keyed.blocking_keys() {
            assert!(summary.contains(&key.name), "{summary}");
        }
    }

    #[test]
    fn the_default_schema_is_valid_and_documented() {
        let s = Schema::from_json(&default_schema_json()).unwrap();
        assert!(s.uses_extensions());
        let ids: Vec<&str> = s.features().iter().map(|f| f.identifier()).collect();
        for id in [
            "given_name",
            "surname",
            "date_of_birth",
            "street_number",
            "address_1",
            "address_2",
            "suburb",
            "postcode",
            "state",
            "soc_sec_id",
        ] {
            assert!(ids.contains(&id), "{id}");
        }
        assert!(!s.identifying_columns().contains(&"rec_id"));
        assert!(s.features().iter().all(|f| f.description().is_some()));
        let summary = s.summary();
        assert!(
            summary.contains("given_name") && summary.contains(&s.fingerprint()),
            "{summary}"
        );
    }
}
