//! The schema file as serde sees it: one struct per JSON object, every one
//! with `deny_unknown_fields`, so that a misspelt key is an error that names
//! it. Nothing here is validated beyond JSON types; [`super`] turns these into
//! the validated [`super::Schema`].
//!
//! Sub-objects of a feature are kept as [`serde_json::Value`] at first and
//! parsed one by one, so that an error can name the feature and the key path.

use serde::Deserialize;
use serde_json::Value;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchema {
    pub version: Value,
    #[serde(rename = "clkConfig")]
    pub clk_config: RawClkConfig,
    pub features: Vec<Value>,
    /// Free text, ignored (not part of the fingerprint).
    #[serde(default)]
    pub description: Option<String>,
    /// pprl extension: site-side blocking keys, each kept as a [`Value`] and
    /// parsed one by one so that an error can name the key.
    #[serde(default)]
    pub blocking_keys: Option<Vec<Value>>,
}

/// `clkConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClkConfig {
    pub l: u64,
    pub kdf: RawKdf,
    /// clkhash's code reads `xor_folds`.
    #[serde(default)]
    pub xor_folds: Option<u32>,
    /// clkhash's published JSON schema spells it `xorFolds`.
    #[serde(default, rename = "xorFolds")]
    pub xor_folds_camel: Option<u32>,
    /// pprl extension: balanced filter (see [`super::Hardening::balance`]).
    #[serde(default)]
    pub balance: Option<bool>,
    /// pprl extension: random bit flips (see [`super::Hardening::blip`]).
    #[serde(default)]
    pub blip: Option<RawBlip>,
}

/// `clkConfig.blip`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlip {
    pub probability: f64,
}

/// `clkConfig.kdf`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(super) enum RawKdf {
    #[serde(rename = "HKDF")]
    Hkdf {
        #[serde(default)]
        hash: Option<String>,
        #[serde(default, rename = "keySize")]
        key_size: Option<u64>,
        #[serde(default)]
        salt: Option<String>,
        #[serde(default)]
        info: Option<String>,
    },
    #[serde(rename = "BLAKE3")]
    Blake3 {},
}

/// One element of `features`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeature {
    pub identifier: String,
    #[serde(default)]
    pub ignored: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub hashing: Option<Value>,
    /// pprl extension: value normalisation.
    #[serde(default)]
    pub normalize: Option<Value>,
    /// pprl extension: what to do with a value that fails validation.
    #[serde(default, rename = "onInvalid")]
    pub on_invalid: Option<Value>,
}

/// `features[i].onInvalid`.
#[derive(Debug, Deserialize)]
pub(super) enum RawOnInvalid {
    #[serde(rename = "reject")]
    Reject,
    #[serde(rename = "missing")]
    Missing,
    #[serde(rename = "keep")]
    Keep,
}

/// `features[i].format`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(super) enum RawFormat {
    #[serde(rename = "string")]
    String {
        #[serde(default)]
        encoding: Option<String>,
        #[serde(default)]
        case: Option<String>,
        #[serde(default, rename = "minLength")]
        min_length: Option<u64>,
        #[serde(default, rename = "maxLength")]
        max_length: Option<u64>,
        #[serde(default)]
        pattern: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
    #[serde(rename = "integer")]
    Integer {
        #[serde(default)]
        minimum: Option<i64>,
        #[serde(default)]
        maximum: Option<i64>,
        #[serde(default)]
        description: Option<String>,
    },
    #[serde(rename = "date")]
    Date {
        format: String,
        /// pprl extension: further input formats tried in order after `format`.
        #[serde(default, rename = "acceptedFormats")]
        accepted_formats: Option<Vec<String>>,
        #[serde(default)]
        description: Option<String>,
    },
    #[serde(rename = "enum")]
    Enum {
        values: Vec<String>,
        #[serde(default)]
        description: Option<String>,
    },
}

/// `features[i].hashing`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHashing {
    pub comparison: Value,
    pub strategy: Value,
    #[serde(default)]
    pub hash: Option<Value>,
    #[serde(default, rename = "missingValue")]
    pub missing_value: Option<Value>,
    /// pprl extension: salt the tokens with another feature's value.
    #[serde(default)]
    pub salt: Option<Value>,
}

/// `features[i].hashing.comparison`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(super) enum RawComparison {
    #[serde(rename = "ngram")]
    Ngram {
        n: i64,
        #[serde(default)]
        positional: Option<bool>,
    },
    #[serde(rename = "exact")]
    Exact {},
    #[serde(rename = "numeric")]
    Numeric {
        #[serde(rename = "thresholdDistance")]
        threshold_distance: f64,
        resolution: i64,
        #[serde(default)]
        fractional_precision: Option<i64>,
    },
}

/// `features[i].hashing.strategy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStrategy {
    #[serde(default, rename = "bitsPerToken")]
    pub bits_per_token: Option<u32>,
    #[serde(default, rename = "bitsPerFeature")]
    pub bits_per_feature: Option<u32>,
}

/// `features[i].hashing.hash`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(super) enum RawHash {
    #[serde(rename = "blakeHash")]
    BlakeHash {},
    #[serde(rename = "doubleHash")]
    DoubleHash {
        #[serde(default)]
        prevent_singularity: Option<bool>,
    },
    #[serde(rename = "blake3")]
    Blake3 {},
}

/// `features[i].hashing.missingValue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMissingValue {
    pub sentinel: String,
    #[serde(default, rename = "replaceWith")]
    pub replace_with: Option<String>,
}

/// `features[i].normalize`: every step defaults to on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNormalize {
    #[serde(default, rename = "foldAccents")]
    pub fold_accents: Option<bool>,
    #[serde(default, rename = "caseFold")]
    pub case_fold: Option<bool>,
    #[serde(default, rename = "collapseWhitespace")]
    pub collapse_whitespace: Option<bool>,
    #[serde(default, rename = "removePunctuation")]
    pub remove_punctuation: Option<bool>,
}

/// `features[i].hashing.salt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSalt {
    pub identifier: String,
    #[serde(default)]
    pub length: Option<u64>,
}

/// One element of `blocking_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlockingKey {
    pub name: String,
    pub parts: Vec<Value>,
    /// Free text, ignored (not part of the fingerprint).
    #[serde(default)]
    pub description: Option<String>,
}

/// `blocking_keys[i].parts[j]`. The transform is a plain string, so that an
/// unknown one gets an error listing the known ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyPart {
    pub field: String,
    pub transform: String,
    /// Characters kept by the `prefix` transform.
    #[serde(default)]
    pub length: Option<u64>,
}
