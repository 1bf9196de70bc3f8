//! # pprl — privacy-preserving record linkage of health data
//!
//! Sites (hospitals, registries, biobanks) turn their identifying fields into
//! keyed Bloom-filter encodings ("clks"); a linkage unit that never sees the
//! secret matches the encodings of all sites; analysts receive linked Parquet
//! keyed by an `entity_id`, with no identifier in it.
//!
//! Data flows one way through the modules, one per pipeline stage:
//!
//! | stage | module | hands on |
//! |---|---|---|
//! | linkage schema | [`schema`] | a validated [`schema::Schema`] |
//! | normalisation | [`normalize`] | canonical field values |
//! | tokenisation | [`tokenize`] | the tokens of one value |
//! | encoding | [`encode`] | one clk (filter bits) per record |
//! | files | [`io`] | `.clk.parquet`, CSV/Parquet input, clkhash JSON |
//! | candidate search | [`similarity`] | scored candidate pairs (Dice) |
//! | solving | [`solve`] | links and entities |
//! | the match run | [`matching`] | `links.parquet`, `entities.parquet` |
//! | release | [`release`] | per-site linked Parquet for analysts |
//! | evaluation | [`evaluate`] | precision / recall / F1 against ground truth |
//!
//! The secret only ever lives in a [`secret::Secret`], which refuses to be
//! printed.

pub mod block;
pub mod encode;
pub mod evaluate;
pub mod io;
pub mod matching;
pub mod normalize;
pub mod release;
pub mod schema;
pub mod secret;
pub mod similarity;
pub mod site;
pub mod solve;
pub mod synth;
pub mod tokenize;

/// The engine version written into every output file's metadata.
pub const ENGINE_VERSION: &str = concat!("pprl ", env!("CARGO_PKG_VERSION"));
