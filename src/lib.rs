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
//!
//! # Example: encode two tiny sites and match them
//!
//! ```
//! use pprl::encode::Encoder;
//! use pprl::io::clk_file::{ClkFile, ClkMeta, popcount};
//! use pprl::matching::{MatchOptions, NoProgress, match_files};
//! use pprl::schema::{Schema, default_schema_json};
//! use pprl::secret::Secret;
//!
//! let schema = Schema::from_json(&default_schema_json())?;
//! let secret = Secret::new("a project secret shared by the sites")?;
//! let encoder = Encoder::new(&schema, &secret);
//!
//! // Each site encodes its records (values in the schema's feature order).
//! let site = |name: &str, records: &[(&str, &str, &str, &str)]| -> ClkFile {
//!     let mut file = ClkFile {
//!         meta: ClkMeta {
//!             engine_version: pprl::ENGINE_VERSION.into(),
//!             site: name.into(),
//!             schema_fingerprint: Some(schema.fingerprint()),
//!             filter_bits: schema.filter_bits(),
//!             key_check_value: Some(secret.key_check_value()),
//!         },
//!         ids: vec![], clks: vec![], popcounts: vec![], blocking_keys: None,
//!     };
//!     for &(id, given_name, surname, date_of_birth) in records {
//!         let values: Vec<Option<&str>> = schema.features().iter().map(|f| {
//!             match f.identifier() {
//!                 "given_name" => Some(given_name),
//!                 "surname" => Some(surname),
//!                 "date_of_birth" => Some(date_of_birth),
//!                 _ => None,
//!             }
//!         }).collect();
//!         let clk = encoder.encode(&values).expect("valid record");
//!         file.ids.push(id.into());
//!         file.popcounts.push(popcount(&clk));
//!         file.clks.extend_from_slice(&clk);
//!     }
//!     file
//! };
//! let a = site("A", &[("a1", "Marie", "Dupont", "1951-11-11"), ("a2", "Jan", "Peeters", "1980-02-29")]);
//! let b = site("B", &[("b1", "Jan", "Peters", "29/02/1980"), ("b2", "MARIE", "DUPÖNT", "19511111")]);
//!
//! // The linkage unit sees only the clks.
//! let outcome = match_files(
//!     &MatchOptions::default(),
//!     vec![("a".into(), a), ("b".into(), b)],
//!     &NoProgress,
//! )?;
//! let links: Vec<_> = outcome.links.iter()
//!     .map(|l| (outcome.record(l.a).1, outcome.record(l.b).1))
//!     .collect();
//! assert_eq!(links, [("a1", "b2"), ("a2", "b1")]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
