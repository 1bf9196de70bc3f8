//! Synthetic test data with ground truth, for tests and benchmarks of the
//! matching and blocking stages: seeded site records with realistic health
//! identifiers, and random clks with planted noisy copies.
//!
//! [`Synth`] makes two sites, A and B, from one population of people
//! ("entities"). A fraction of the entities (`overlap`) appear at both sites;
//! site B's copy of a shared entity carries the errors of real registries
//! (typos, swapped names, a changed address, missing values, date errors,
//! spelling variants) at configurable rates ([`ErrorRates`]). Rows of each site
//! are shuffled, so a record id (`a-<row>`, `b-<row>`) says nothing about its
//! partner; the truth lists the shared pairs. Every record is a pure function
//! of the seed and its row, so generation is parallel, streams in chunks and
//! gives byte-identical files whatever the thread count.
//!
//! Column names follow Febrl, so the default linkage schema applies to the
//! files as they are: see [`COLUMNS`].
//!
//! [`random_clks_with_copies`] skips the identifiers and makes packed clks
//! directly (each bit set with a given density) with noisy copies planted at
//! the other site: the input of kernel and blocking benchmarks.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::encode::{Encoder, FieldError};
use crate::io::atomic::AtomicFile;
use crate::schema::Schema;

/// The columns of a generated site file, in file order. `rec_id` is the
/// record id; the others are identifiers (`sex` is not in the default schema).
pub const COLUMNS: [&str; 12] = [
    "rec_id",
    "given_name",
    "surname",
    "sex",
    "date_of_birth",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "soc_sec_id",
];

/// Number of identifier values of a record (every column but `rec_id`).
pub const FIELDS: usize = COLUMNS.len() - 1;

// Positions of the identifiers in `SynthRecord::values`.
const GIVEN: usize = 0;
const SURNAME: usize = 1;
const SEX: usize = 2;
const DOB: usize = 3;
const STREET_NUMBER: usize = 4;
const ADDRESS_1: usize = 5;
const ADDRESS_2: usize = 6;
const SUBURB: usize = 7;
const POSTCODE: usize = 8;
const STATE: usize = 9;
const SOC_SEC_ID: usize = 10;

/// Rates of the errors in site B's copy of a shared entity. Each is a
/// probability in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRates {
    /// Per field, one typo (insert, delete, substitute or transpose one
    /// character) in given_name, surname, address_1 and suburb, and one digit
    /// substituted or transposed in street_number, postcode and soc_sec_id.
    pub typo: f64,
    /// Per record, given_name and surname swapped.
    pub swap_names: f64,
    /// Per record, the person moved: a new street_number, address_1,
    /// address_2, suburb, postcode and state.
    pub moved: f64,
    /// Per field, the value is missing (empty).
    pub missing: f64,
    /// Per record, an error in date_of_birth: day and month swapped, the year
    /// off by one, or the day off by one or two (always a valid date).
    pub date: f64,
    /// Per record, a spelling variant of a name that normalisation may or may
    /// not undo: accents dropped or transliterated (ü → ue), upper case, the
    /// particle of a surname capitalised or joined, an apostrophe dropped.
    pub variant: f64,
}

impl Default for ErrorRates {
    fn default() -> ErrorRates {
        ErrorRates {
            typo: 0.1,
            swap_names: 0.02,
            moved: 0.1,
            missing: 0.03,
            date: 0.05,
            variant: 0.1,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Records at site A.
    pub records_a: usize,
    /// Records at site B.
    pub records_b: usize,
    /// Fraction of the smaller site's records that have a partner at the other site.
    pub overlap: f64,
    /// The seed: the same seed and settings give the same records.
    pub seed: u64,
    /// Errors in site B's copies.
    pub errors: ErrorRates,
}

impl SynthConfig {
    /// `records` at each site, half of them shared, default error rates.
    pub fn new(records: usize, seed: u64) -> SynthConfig {
        SynthConfig {
            records_a: records,
            records_b: records,
            overlap: 0.5,
            seed,
            errors: ErrorRates::default(),
        }
    }
}

/// A setting that cannot be generated, or an output that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A rate outside `[0, 1]` (or not a number).
    #[error("{name} must be between 0 and 1, got {value}")]
    Rate { name: &'static str, value: f64 },
    /// More records than row numbers fit in `u32`.
    #[error("at most {max} records per site, got {records}")]
    TooMany { records: usize, max: usize },
    /// An output file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One of the two generated sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    /// `"a"` or `"b"`: the prefix of record ids and file names.
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// One generated record: its id and its identifiers in [`COLUMNS`] order
/// (without `rec_id`); an empty string is a missing value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthRecord {
    pub id: String,
    pub values: [String; FIELDS],
}

/// The paths written by [`Synth::write_csv`].
#[derive(Debug, Clone)]
pub struct SynthFiles {
    pub site_a: PathBuf,
    pub site_b: PathBuf,
    pub truth: PathBuf,
    /// Rows of the truth file (shared entities).
    pub true_pairs: usize,
}

/// A seeded two-site population; records are made on demand.
#[derive(Debug, Clone)]
pub struct Synth {
    config: SynthConfig,
    shared: usize,
    /// Entity of each row, per site.
    entity_a: Vec<u32>,
    entity_b: Vec<u32>,
}

// Independent random streams: one per purpose, indexed by entity or row.
const STREAM_ENTITY: u64 = 1;
const STREAM_ERRORS: u64 = 2;
const STREAM_ORDER_A: u64 = 3;
const STREAM_ORDER_B: u64 = 4;
const STREAM_CLK: u64 = 5;
const STREAM_NOISE: u64 = 6;
const STREAM_PLANT: u64 = 7;

// Rows per parallel task, and tasks held in memory at once, when writing.
const CHUNK_ROWS: usize = 4096;
const WAVE_CHUNKS: usize = 64;

impl Synth {
    /// Checks the settings and shuffles the rows of both sites.
    ///
    /// # Errors
    /// [`SynthError::Rate`] for a rate or overlap outside `[0, 1]`,
    /// [`SynthError::TooMany`] beyond `u32::MAX / 2` records per site.
    pub fn new(config: SynthConfig) -> Result<Synth, SynthError> {
        let e = &config.errors;
        for (name, value) in [
            ("overlap", config.overlap),
            ("typo rate", e.typo),
            ("swap-names rate", e.swap_names),
            ("moved rate", e.moved),
            ("missing rate", e.missing),
            ("date rate", e.date),
            ("variant rate", e.variant),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SynthError::Rate { name, value });
            }
        }
        let max = (u32::MAX / 2) as usize;
        for records in [config.records_a, config.records_b] {
            if records > max {
                return Err(SynthError::TooMany { records, max });
            }
        }
        let shared = (config.overlap * config.records_a.min(config.records_b) as f64).round();
        let shared = shared as usize;
        // Entities 0..shared are at both sites, then A's own, then B's own.
        let mut entity_a: Vec<u32> = (0..config.records_a as u32).collect();
        let b_own = config.records_a as u32..(config.records_a + config.records_b - shared) as u32;
        let mut entity_b: Vec<u32> = (0..shared as u32).chain(b_own).collect();
        shuffle(
            &mut entity_a,
            &mut SplitMix64::stream(config.seed, STREAM_ORDER_A, 0),
        );
        shuffle(
            &mut entity_b,
            &mut SplitMix64::stream(config.seed, STREAM_ORDER_B, 0),
        );
        Ok(Synth {
            config,
            shared,
            entity_a,
            entity_b,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// Records at `side`.
    pub fn len(&self, side: Side) -> usize {
        match side {
            Side::A => self.entity_a.len(),
            Side::B => self.entity_b.len(),
        }
    }

    /// Whether both sites are empty.
    pub fn is_empty(&self) -> bool {
        self.entity_a.is_empty() && self.entity_b.is_empty()
    }

    /// The record id of a row: `a-<row>` or `b-<row>`.
    pub fn id(side: Side, row: usize) -> String {
        format!("{}-{row}", side.name())
    }

    /// The record at `row` of `side`.
    ///
    /// # Panics
    /// When `row >= self.len(side)`.
    pub fn record(&self, side: Side, row: usize) -> SynthRecord {
        let seed = self.config.seed;
        let (entity, id) = match side {
            Side::A => (self.entity_a[row], Synth::id(side, row)),
            Side::B => (self.entity_b[row], Synth::id(side, row)),
        };
        let mut values = person(&mut SplitMix64::stream(seed, STREAM_ENTITY, entity.into()));
        if side == Side::B && (entity as usize) < self.shared {
            let mut rng = SplitMix64::stream(seed, STREAM_ERRORS, entity.into());
            corrupt(&mut values, &self.config.errors, &mut rng);
        }
        SynthRecord { id, values }
    }

    /// Every record of `side`, in row order (made in parallel).
    pub fn records(&self, side: Side) -> Vec<SynthRecord> {
        (0..self.len(side))
            .into_par_iter()
            .map(|row| self.record(side, row))
            .collect()
    }

    /// The shared entities as `(row at A, row at B)`, sorted by row at A.
    pub fn truth(&self) -> Vec<(u32, u32)> {
        let mut row_b = vec![u32::MAX; self.shared];
        for (row, &entity) in self.entity_b.iter().enumerate() {
            if (entity as usize) < self.shared {
                row_b[entity as usize] = row as u32;
            }
        }
        let mut pairs = Vec::with_capacity(self.shared);
        for (row, &entity) in self.entity_a.iter().enumerate() {
            if (entity as usize) < self.shared {
                pairs.push((row as u32, row_b[entity as usize]));
            }
        }
        pairs
    }

    /// Encodes every record of `side` with `encoder` (made from `schema`):
    /// clk `row` at `bytes[row * filter_bytes..]`, in parallel, without
    /// holding the records. Schema features are looked up by column name;
    /// a feature that is not a column gets no value.
    ///
    /// # Errors
    /// The row and [`FieldError`] of the first record (by row) the schema refuses.
    pub fn encode(
        &self,
        side: Side,
        schema: &Schema,
        encoder: &Encoder,
    ) -> Result<Vec<u8>, (usize, FieldError)> {
        let columns: Vec<Option<usize>> = schema
            .features()
            .iter()
            .map(|f| COLUMNS.iter().position(|&c| c == f.identifier()))
            .collect();
        let bytes = encoder.filter_bytes();
        let mut out = vec![0u8; self.len(side) * bytes];
        if bytes == 0 {
            return Ok(out);
        }
        out.par_chunks_mut(bytes)
            .enumerate()
            .try_for_each(|(row, clk)| {
                let record = self.record(side, row);
                encoder
                    .encode_into(&schema_values(&columns, &record), clk)
                    .map_err(|e| (row, e))
            })
            .map_err(|_| {
                // Report the first failing row, whatever thread met one first.
                (0..self.len(side))
                    .find_map(|row| {
                        let record = self.record(side, row);
                        let values = schema_values(&columns, &record);
                        encoder.encode(&values).err().map(|e| (row, e))
                    })
                    .expect("a row failed")
            })?;
        Ok(out)
    }

    /// Writes `a.csv`, `b.csv` (header [`COLUMNS`], comma-separated, UTF-8) and
    /// `truth.csv` (`id_a,id_b`) into `dir`, creating it if needed. Each file
    /// is written to a temporary file and renamed at the end.
    ///
    /// # Errors
    /// [`SynthError::Write`] naming the file that cannot be written.
    pub fn write_csv(&self, dir: &Path) -> Result<SynthFiles, SynthError> {
        let files = SynthFiles {
            site_a: dir.join("a.csv"),
            site_b: dir.join("b.csv"),
            truth: dir.join("truth.csv"),
            true_pairs: self.shared,
        };
        fs::create_dir_all(dir).map_err(|source| SynthError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        self.write_site(Side::A, &files.site_a)?;
        self.write_site(Side::B, &files.site_b)?;
        let wrap = |source| SynthError::Write {
            path: files.truth.clone(),
            source,
        };
        let mut out = AtomicFile::create(&files.truth).map_err(wrap)?;
        let mut text = String::from("id_a,id_b\n");
        for (a, b) in self.truth() {
            text.push_str(&format!("a-{a},b-{b}\n"));
        }
        out.write_all(text.as_bytes()).map_err(wrap)?;
        out.commit().map_err(wrap)?;
        Ok(files)
    }

    fn write_site(&self, side: Side, path: &Path) -> Result<(), SynthError> {
        let wrap = |source| SynthError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = AtomicFile::create(path).map_err(wrap)?;
        let mut out = file.flush_behind().map_err(wrap)?;
        let mut header = COLUMNS.join(",");
        header.push('\n');
        out.write_all(header.as_bytes()).map_err(wrap)?;
        let rows = self.len(side);
        let chunks: Vec<usize> = (0..rows.div_ceil(CHUNK_ROWS)).collect();
        // Chunks are made in parallel, a wave at a time, and written in order.
        for wave in chunks.chunks(WAVE_CHUNKS) {
            let texts: Vec<Vec<u8>> = wave
                .par_iter()
                .map(|&chunk| {
                    let start = chunk * CHUNK_ROWS;
                    let end = (start + CHUNK_ROWS).min(rows);
                    let mut text = Vec::with_capacity((end - start) * 128);
                    for row in start..end {
                        write_csv_row(&mut text, &self.record(side, row));
                    }
                    text
                })
                .collect();
            for text in texts {
                out.write_all(&text).map_err(wrap)?;
            }
        }
        drop(out);
        file.commit().map_err(wrap)
    }
}

/// A record's values in schema order; `columns[f]` is feature `f`'s column.
fn schema_values<'r>(columns: &[Option<usize>], record: &'r SynthRecord) -> Vec<Option<&'r str>> {
    columns
        .iter()
        .map(|c| match c {
            Some(0) => Some(record.id.as_str()),
            Some(c) => Some(record.values[c - 1].as_str()),
            None => None,
        })
        .collect()
}

/// One CSV line; values are quoted only when they need it.
fn write_csv_row(out: &mut Vec<u8>, record: &SynthRecord) {
    out.extend_from_slice(record.id.as_bytes());
    for value in &record.values {
        out.push(b',');
        if value.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(value.as_bytes());
        }
    }
    out.push(b'\n');
}

/// Packed random clks of two sites with planted noisy copies; see
/// [`random_clks_with_copies`].
#[derive(Debug, Clone)]
pub struct PlantedClks {
    /// Bits per clk.
    pub bits: usize,
    /// `u64` words per clk: `bits.div_ceil(64)`.
    pub words: usize,
    /// Site A, clk `i` at `a[i * words..(i + 1) * words]`; bit `p` of a clk is
    /// bit `p % 64` of word `p / 64`, bits past `bits` are zero.
    pub a: Vec<u64>,
    /// Site B, packed the same way.
    pub b: Vec<u64>,
    /// `(row at A, row at B)` of every planted copy, sorted by row at A.
    pub truth: Vec<(u32, u32)>,
}

/// `n` random clks per site of `bits` bits, each bit set with probability
/// `density` (to 1/65536). Half of site B's rows (rounded down) are noisy
/// copies of distinct site-A clks, in which each bit is flipped with
/// probability `noise`; the other half are fresh random clks. Rows are
/// shuffled. Deterministic for a seed, whatever the thread count.
///
/// # Panics
/// When `density` or `noise` is outside `[0, 1]` or `n > u32::MAX / 2`.
pub fn random_clks_with_copies(
    n: usize,
    bits: usize,
    density: f64,
    noise: f64,
    seed: u64,
) -> PlantedClks {
    assert!((0.0..=1.0).contains(&density), "density must be in [0, 1]");
    assert!((0.0..=1.0).contains(&noise), "noise must be in [0, 1]");
    assert!(n <= (u32::MAX / 2) as usize, "too many records");
    let words = bits.div_ceil(64);
    let last_mask = match bits % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    };
    let fill = |clk: &mut [u64], rng: &mut SplitMix64| {
        for w in clk.iter_mut() {
            *w = rng.bernoulli_word(density);
        }
        if let Some(last) = clk.last_mut() {
            *last &= last_mask;
        }
    };
    let mut a = vec![0u64; n * words];
    if words > 0 {
        a.par_chunks_mut(words).enumerate().for_each(|(i, clk)| {
            fill(clk, &mut SplitMix64::stream(seed, STREAM_CLK, i as u64));
        });
    }
    // Which A rows are copied, and where their copies land at B.
    let copies = n / 2;
    let mut source: Vec<u32> = (0..n as u32).collect();
    shuffle(&mut source, &mut SplitMix64::stream(seed, STREAM_PLANT, 0));
    let mut place: Vec<u32> = (0..n as u32).collect();
    shuffle(&mut place, &mut SplitMix64::stream(seed, STREAM_PLANT, 1));
    let mut copy_of = vec![u32::MAX; n];
    let mut truth = Vec::with_capacity(copies);
    for k in 0..copies {
        copy_of[place[k] as usize] = source[k];
        truth.push((source[k], place[k]));
    }
    truth.sort_unstable();
    let mut b = vec![0u64; n * words];
    if words > 0 {
        b.par_chunks_mut(words).enumerate().for_each(|(j, clk)| {
            let src = copy_of[j];
            if src == u32::MAX {
                fill(
                    clk,
                    &mut SplitMix64::stream(seed, STREAM_CLK, (n + j) as u64),
                );
            } else {
                let mut rng = SplitMix64::stream(seed, STREAM_NOISE, j as u64);
                let from = &a[src as usize * words..(src as usize + 1) * words];
                for (w, x) in clk.iter_mut().zip(from) {
                    *w = x ^ rng.bernoulli_word(noise);
                }
                if let Some(last) = clk.last_mut() {
                    *last &= last_mask;
                }
            }
        });
    }
    PlantedClks {
        bits,
        words,
        a,
        b,
        truth,
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, seedable generator.
/// Not cryptographic; only for test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// An independent generator for item `index` of stream `stream`.
    pub fn stream(seed: u64, stream: u64, index: u64) -> SplitMix64 {
        let mut g = SplitMix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let s = g.next_u64();
        SplitMix64(s ^ mix64(index.wrapping_add(0x632B_E59B_D9B4_E019)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias below 2^-32 for small `n`).
    /// `n` must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A word whose bits are each set with probability `p`, rounded to
    /// 1/65536: the binary digits of `p` combine random words with AND
    /// (digit 0) and OR (digit 1), from the least significant digit up.
    pub fn bernoulli_word(&mut self, p: f64) -> u64 {
        let q = (p * 65536.0).round() as u32;
        if q == 0 {
            return 0;
        }
        if q >= 65536 {
            return u64::MAX;
        }
        let mut word = 0u64;
        for digit in q.trailing_zeros()..16 {
            let r = self.next_u64();
            word = if (q >> digit) & 1 == 1 {
                word | r
            } else {
                word & r
            };
        }
        word
    }

    /// An item of `items`, the first ones more often (density falling
    /// linearly from first to last), roughly like name frequencies.
    fn skewed<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let u = self.unit();
        items[((1.0 - (1.0 - u).sqrt()) * items.len() as f64) as usize % items.len()]
    }
}

/// The SplitMix64 output function (a 64-bit finaliser).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fisher–Yates.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

// ---------------------------------------------------------------------------
// People

#[rustfmt::skip]
const GIVEN_FEMALE: &[&str] = &[
    "Maria", "Anna", "Emma", "Sophie", "Laura", "Julia", "Sarah", "Chloé", "Léa", "Zoë", "Hélène",
    "Małgorzata", "Agnieszka", "Katarzyna", "Ingrid", "Astrid", "Sigrid", "Åsa", "Björg", "Inês",
    "Beatriz", "Lucía", "María José", "Carmen", "Giulia", "Francesca", "Chiara", "Anneke", "Femke",
    "Sanne", "Maëlle", "Renée", "Noémie", "Amélie", "Käthe", "Ursula", "Brigitte", "Monika",
    "Jana", "Zuzana", "Kateřina", "Eszter", "Réka", "Ioana", "Elena", "Olga", "Jelena", "Mirjana",
    "Saoirse", "Siobhán", "Aoife", "Niamh", "Charlotte", "Olivia", "Isabelle", "Margaret",
    "Elizabeth", "Catherine", "Jessica", "Emily", "Hannah", "Grace", "Ruby", "Mia", "Lena", "Nora",
    "Ida", "Freja", "Maja", "Alicja", "Dorota", "Ewa", "Ana", "Marta", "Paula", "Rosa", "Lotte",
    "Eline", "Yasmin", "Aylin", "Zeynep", "Fatma", "Leila", "Mariam", "Anne-Marie", "Marie-Claire",
    "Ann", "Jo", "Éva",
];

#[rustfmt::skip]
const GIVEN_MALE: &[&str] = &[
    "Thomas", "Jan", "Peter", "Michael", "Lukas", "David", "Daniel", "José", "François", "Jérôme",
    "Stéphane", "Andrés", "Jesús", "Łukasz", "Paweł", "Wojciech", "Grzegorz", "Søren", "Jørgen",
    "Björn", "Håkan", "Ömer", "Çağlar", "Günther", "Jürgen", "Jörg", "Matthias", "Stefan", "Klaus",
    "Dieter", "Pieter", "Joost", "Sjoerd", "Maarten", "Bram", "Giuseppe", "Giovanni", "Luca",
    "Niccolò", "Antonio", "João", "Gonçalo", "Miguel", "Pablo", "Sergio", "Tomáš", "Jiří", "Miloš",
    "Dragan", "Nikola", "Mihai", "Ștefan", "András", "Zoltán", "Seán", "Ciarán", "Patrick",
    "James", "John", "William", "Robert", "Richard", "Charles", "George", "Oliver", "Jack", "Noah",
    "Leo", "Elias", "Finn", "Lars", "Erik", "Olaf", "Mehmet", "Ahmed", "Yusuf", "Omar", "Karim",
    "Jean-Pierre", "Jean-Luc", "Hans-Peter", "Karl-Heinz", "Al", "Bo",
];

#[rustfmt::skip]
const SURNAMES: &[&str] = &[
    "Smith", "Müller", "García", "Martin", "de Vries", "van Dijk", "van der Berg", "de Jong",
    "Jansen", "Bakker", "Visser", "van den Broek", "van 't Hof", "ter Horst", "Schmidt",
    "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Schäfer",
    "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
    "Krüger", "Hartmann", "Lange", "Köhler", "Jäger", "Groß", "von Bülow", "von der Heyde",
    "Dubois", "Durand", "Lefèvre", "Lefebvre", "Moreau", "Laurent", "Girard", "Bérénger",
    "Fournier", "Mercier", "Lemaître", "Faure", "d'Angelo", "D'Amico", "d'Ornano", "De Luca",
    "Di Stefano", "Del Piero", "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano",
    "Colombo", "Ricci", "Marino", "Greco", "Bruno", "Gallo", "Conti", "Costa", "Fernández",
    "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Jiménez", "Muñoz",
    "Álvarez", "Núñez", "de la Cruz", "de los Santos", "Silva", "Santos", "Ferreira", "Pereira",
    "Gonçalves", "Conceição", "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński",
    "Lewandowski", "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Novák", "Svoboda", "Dvořák",
    "Černý", "Procházka", "Kučera", "Horváth", "Nagy", "Kovács", "Tóth", "Szabó", "Popescu",
    "Ionescu", "Jovanović", "Petrović", "Nikolić", "Hansen", "Johansen", "Jensen", "Nielsen",
    "Pedersen", "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Lindström", "Åberg",
    "Sjögren", "Østergaard", "Virtanen", "Mäkinen", "Häkkinen", "O'Brien", "O'Connor",
    "O'Sullivan", "McCarthy", "MacDonald", "Murphy", "Kelly", "Walsh", "Byrne", "Ryan", "Jones",
    "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Roberts", "Johnson",
    "Lewis", "Walker", "Robinson", "Wood", "Thompson", "White", "Watson", "Jackson", "Wright",
    "Green", "Harris", "Cooper", "King", "Lee", "Nguyen", "Tran", "Le", "Pham", "Yılmaz", "Kaya",
    "Demir", "Şahin", "Çelik", "Öztürk", "Papadopoulos", "Georgiou", "Nikolaidis", "Papageorgiou",
    "Ben Ali", "El Amrani", "Abu-Bakr", "Ng", "Wu", "Li",
];

#[rustfmt::skip]
const STREETS: &[&str] = &[
    "wattle", "acacia", "banksia", "station", "church", "high", "main", "victoria", "george",
    "king", "queen", "william", "elizabeth", "albert", "park", "railway", "bridge", "mill",
    "school", "hill", "green", "lake", "river", "ocean", "beach", "forest", "oak", "elm", "maple",
    "cedar", "pine", "willow", "jacaranda", "eucalyptus", "kookaburra", "wombat", "boronia",
    "grevillea", "hakea", "melaleuca", "waratah", "camellia", "gardenia", "magnolia", "rosemary",
    "lavender", "heather", "stanley", "pinkerton", "macquarie", "bourke", "darling", "flinders",
    "sturt", "hume", "oxley", "mitchell", "kennedy", "burke", "wills", "leichhardt", "lawson",
    "blaxland", "wentworth", "phillip", "hunter", "bligh", "brisbane", "denison", "fitzroy",
    "gipps", "hotham", "la trobe", "de castella", "van diemen", "cook", "banks", "tasman",
    "dampier", "baudin", "de la perouse", "du cane", "o'connell", "st georges", "st kilda",
    "goethe", "schiller", "beethoven", "mozart", "rembrandt", "vermeer", "montaigne", "voltaire",
    "dante", "garibaldi", "cervantes", "chopin", "dvorak", "sibelius",
];

#[rustfmt::skip]
const STREET_TYPES: &[&str] = &[
    "street", "road", "avenue", "place", "crescent", "drive", "court", "lane", "way", "parade",
    "circuit", "close", "terrace", "boulevard", "grove", "highway",
];

#[rustfmt::skip]
const BUILDINGS: &[&str] = &[
    "rosedale", "the grange", "villa marguerite", "kirkwood", "miami", "sunnyside", "belvedere",
    "la residenza", "haus am see", "de kroon", "tower a", "riverview", "bellevue", "st mary's",
    "oakleigh", "wattle grove", "brookside", "glen ayr", "fairview", "manor house",
];

#[rustfmt::skip]
const SUBURB_WORDS: &[&str] = &[
    "winston", "rich", "bega", "glen", "mount", "north", "south", "east", "west", "port", "lake",
    "kings", "queens", "spring", "oak", "elm", "ash", "bay", "bright", "green", "black", "white",
    "red", "long", "broad", "wood", "haven", "new", "st", "fern",
];

#[rustfmt::skip]
const SUBURB_ENDS: &[&str] = &[
    "hills", "lands", "flats", "vale", "park", "field", "wood", "ton", "ville", "brook", "creek",
    "haven", "heights", "point", "beach", "bury", "dale", "ford", "grove", "view",
];

/// `(state, first postcode, postcodes)`, weighted roughly by population.
const STATES: &[(&str, u32, u32)] = &[
    ("nsw", 2000, 900),
    ("nsw", 2000, 900),
    ("nsw", 2000, 900),
    ("vic", 3000, 1000),
    ("vic", 3000, 1000),
    ("qld", 4000, 900),
    ("qld", 4000, 900),
    ("wa", 6000, 800),
    ("sa", 5000, 800),
    ("tas", 7000, 400),
    ("act", 2600, 20),
    ("nt", 800, 100),
];

/// The number of distinct suburbs: word × ending.
const SUBURBS: usize = 600;

/// A fresh person: the identifiers of one entity.
fn person(rng: &mut SplitMix64) -> [String; FIELDS] {
    let female = rng.chance(0.5);
    let given = if female {
        rng.skewed(GIVEN_FEMALE)
    } else {
        rng.skewed(GIVEN_MALE)
    };
    let surname = if rng.chance(0.06) {
        // A double-barrelled name.
        format!("{}-{}", rng.skewed(SURNAMES), rng.skewed(SURNAMES))
    } else {
        rng.skewed(SURNAMES).to_string()
    };
    let year = 1925 + rng.below(98) as u32;
    let month = 1 + rng.below(12) as u32;
    let day = 1 + rng.below(days_in_month(year, month) as usize) as u32;
    let soc_sec_id = 1_000_000 + rng.below(9_000_000);
    let mut values: [String; FIELDS] = Default::default();
    values[GIVEN] = given.to_string();
    values[SURNAME] = surname;
    values[SEX] = if female { "f" } else { "m" }.to_string();
    values[DOB] = format!("{year:04}{month:02}{day:02}");
    values[SOC_SEC_ID] = soc_sec_id.to_string();
    address(&mut values, rng);
    values
}

/// A fresh address into `values`.
fn address(values: &mut [String; FIELDS], rng: &mut SplitMix64) {
    // Low street numbers are the most common.
    let number = 1 + (rng.unit().powi(3) * 400.0) as u32;
    values[STREET_NUMBER] = number.to_string();
    values[ADDRESS_1] = format!("{} {}", rng.skewed(STREETS), rng.skewed(STREET_TYPES));
    values[ADDRESS_2] = match rng.below(10) {
        0 => format!("unit {}", 1 + rng.below(40)),
        1 => format!("flat {}", 1 + rng.below(20)),
        2 => rng.skewed(BUILDINGS).to_string(),
        _ => String::new(),
    };
    // A suburb fixes its state and postcode.
    let suburb = (SUBURBS as f64 * (1.0 - (1.0 - rng.unit()).sqrt())) as usize % SUBURBS;
    let word = SUBURB_WORDS[suburb % SUBURB_WORDS.len()];
    let end = SUBURB_ENDS[(suburb / SUBURB_WORDS.len()) % SUBURB_ENDS.len()];
    values[SUBURB] = if suburb.is_multiple_of(3) {
        format!("{word} {end}")
    } else {
        format!("{word}{end}")
    };
    let h = mix64(suburb as u64);
    let (state, first, count) = STATES[(h % STATES.len() as u64) as usize];
    values[STATE] = state.to_string();
    values[POSTCODE] = format!("{:04}", first + ((h >> 20) % u64::from(count)) as u32);
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Site B's errors, applied in a fixed order so that the result depends only
/// on the entity's random stream.
fn corrupt(values: &mut [String; FIELDS], rates: &ErrorRates, rng: &mut SplitMix64) {
    if rng.chance(rates.variant) {
        let field = if rng.chance(0.5) { GIVEN } else { SURNAME };
        values[field] = variant(&values[field], rng);
    }
    if rng.chance(rates.swap_names) {
        values.swap(GIVEN, SURNAME);
    }
    for field in [GIVEN, SURNAME, ADDRESS_1, SUBURB] {
        if rng.chance(rates.typo) {
            values[field] = typo(&values[field], false, rng);
        }
    }
    for field in [STREET_NUMBER, POSTCODE, SOC_SEC_ID] {
        if rng.chance(rates.typo) {
            values[field] = typo(&values[field], true, rng);
        }
    }
    if rng.chance(rates.date) {
        values[DOB] = date_error(&values[DOB], rng);
    }
    if rng.chance(rates.moved) {
        address(values, rng);
    }
    for value in values.iter_mut() {
        if rng.chance(rates.missing) {
            value.clear();
        }
    }
}

/// One edit: insert, delete, substitute or transpose (characters, not bytes).
fn typo(value: &str, digits: bool, rng: &mut SplitMix64) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    let alphabet: &[u8] = if digits {
        b"0123456789"
    } else {
        b"abcdefghijklmnopqrstuvwxyz"
    };
    let random_char = |rng: &mut SplitMix64| char::from(alphabet[rng.below(alphabet.len())]);
    // Numbers keep their length: only substitute or transpose. A transpose of
    // two equal characters would change nothing, so it substitutes instead.
    let op = if digits {
        2 + rng.below(2)
    } else {
        rng.below(4)
    };
    let at = rng.below(chars.len());
    let pair = at.min(chars.len().saturating_sub(2));
    let can_swap = chars.len() > 1 && chars[pair] != chars[pair + 1];
    match op {
        0 => chars.insert(at, random_char(rng)),
        1 if chars.len() > 1 => {
            chars.remove(at);
        }
        3 if can_swap => chars.swap(pair, pair + 1),
        _ => {
            let k = rng.below(alphabet.len());
            let mut c = char::from(alphabet[k]);
            if c == chars[at] {
                c = char::from(alphabet[(k + 1) % alphabet.len()]);
            }
            chars[at] = c;
        }
    }
    chars.into_iter().collect()
}

/// A spelling variant of a name.
fn variant(value: &str, rng: &mut SplitMix64) -> String {
    match rng.below(5) {
        0 => strip_accents(value),
        1 => transliterate(value),
        2 => value.to_uppercase(),
        3 => {
            // "van der Berg" -> "Van der Berg" or "vanderBerg".
            if value.contains(' ') && rng.chance(0.5) {
                value.replace(' ', "")
            } else {
                let mut chars = value.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect(),
                    None => String::new(),
                }
            }
        }
        _ => {
            if value.contains('\'') {
                value.replace('\'', if rng.chance(0.5) { "" } else { " " })
            } else {
                value.to_lowercase()
            }
        }
    }
}

/// Drops diacritics from the common Latin letters (ü -> u, ł -> l).
fn strip_accents(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' | 'ą' => 'a',
            'Á' | 'À' | 'Â' | 'Ä' | 'Ã' | 'Å' => 'A',
            'é' | 'è' | 'ê' | 'ë' | 'ę' | 'ě' => 'e',
            'É' | 'È' | 'Ê' | 'Ë' => 'E',
            'í' | 'ì' | 'î' | 'ï' | 'ı' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => 'o',
            'Ó' | 'Ö' | 'Ø' => 'O',
            'ú' | 'ù' | 'û' | 'ü' | 'ů' => 'u',
            'Ú' | 'Ü' => 'U',
            'ç' | 'ć' | 'č' => 'c',
            'Ç' | 'Č' => 'C',
            'ñ' | 'ń' => 'n',
            'ł' => 'l',
            'Ł' => 'L',
            'ś' | 'š' | 'ş' | 'ș' => 's',
            'Ś' | 'Š' | 'Ş' | 'Ș' => 'S',
            'ź' | 'ż' | 'ž' => 'z',
            'Ž' | 'Ż' | 'Ź' => 'Z',
            'ř' => 'r',
            'ğ' => 'g',
            'ý' => 'y',
            'ț' => 't',
            'ď' => 'd',
            other => other,
        })
        .collect()
}

/// German/Nordic transliteration (ü -> ue, ß -> ss, å -> aa), then accents dropped.
fn transliterate(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            'ä' | 'æ' => out.push_str("ae"),
            'ö' | 'ø' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'Ä' | 'Æ' => out.push_str("Ae"),
            'Ö' | 'Ø' => out.push_str("Oe"),
            'Ü' => out.push_str("Ue"),
            'ß' => out.push_str("ss"),
            'å' => out.push_str("aa"),
            'Å' => out.push_str("Aa"),
            other => out.push(other),
        }
    }
    strip_accents(&out)
}

/// A date error that still gives a valid `%Y%m%d` date.
fn date_error(value: &str, rng: &mut SplitMix64) -> String {
    let parse = |range: std::ops::Range<usize>| value.get(range).and_then(|s| s.parse().ok());
    let (Some(year), Some(month), Some(day)) = (parse(0..4), parse(4..6), parse(6..8)) else {
        return value.to_string();
    };
    let (year, month, day): (u32, u32, u32) = (year, month, day);
    let (year, month, day) = match rng.below(3) {
        0 if day <= 12 && day != month => (year, day, month),
        0 | 1 => {
            let year = if rng.chance(0.5) { year + 1 } else { year - 1 };
            (year, month, day.min(days_in_month(year, month)))
        }
        _ => {
            let shift = 1 + rng.below(2) as u32;
            let last = days_in_month(year, month);
            let day = if day + shift <= last {
                day + shift
            } else {
                day - shift
            };
            (year, month, day)
        }
    };
    format!("{year:04}{month:02}{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bernoulli_word_density() {
        let mut rng = SplitMix64::new(7);
        for p in [0.0, 0.05, 0.3, 0.5, 0.9, 1.0] {
            let ones: u32 = (0..20_000)
                .map(|_| rng.bernoulli_word(p).count_ones())
                .sum();
            let got = f64::from(ones) / (20_000.0 * 64.0);
            assert!((got - p).abs() < 0.005, "p = {p}, got {got}");
        }
    }

    #[test]
    fn edits_change_one_character() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..2000 {
            let t = typo("Müller", false, &mut rng);
            assert_ne!(t, "Müller");
            let (a, b) = (t.chars().count() as i64, 6i64);
            assert!((a - b).abs() <= 1, "{t}");
            let d = typo("4223", true, &mut rng);
            assert_eq!(d.len(), 4);
            assert!(d.bytes().all(|c| c.is_ascii_digit()), "{d}");
        }
    }

    #[test]
    fn date_errors_stay_valid() {
        let mut rng = SplitMix64::new(3);
        for value in ["19290228", "20000229", "19511231", "19800101", "19750612"] {
            for _ in 0..500 {
                let d = date_error(value, &mut rng);
                assert_ne!(d, value);
                let y: u32 = d[0..4].parse().unwrap();
                let m: u32 = d[4..6].parse().unwrap();
                let day: u32 = d[6..8].parse().unwrap();
                assert!(
                    (1..=12).contains(&m) && day >= 1 && day <= days_in_month(y, m),
                    "{d}"
                );
            }
        }
    }

    #[test]
    fn variants() {
        assert_eq!(
            strip_accents("Wiśniewski Dvořák Núñez"),
            "Wisniewski Dvorak Nunez"
        );
        assert_eq!(transliterate("Müller Groß Åberg"), "Mueller Gross Aaberg");
    }

    #[test]
    fn records_are_a_function_of_seed_and_row() {
        let synth = Synth::new(SynthConfig::new(300, 11)).unwrap();
        let again = Synth::new(SynthConfig::new(300, 11)).unwrap();
        let other = Synth::new(SynthConfig::new(300, 12)).unwrap();
        assert_eq!(synth.records(Side::B), again.records(Side::B));
        assert_ne!(synth.records(Side::A), other.records(Side::A));
        assert_eq!(synth.record(Side::A, 17), synth.records(Side::A)[17]);
    }

    #[test]
    fn rates_are_checked() {
        let mut config = SynthConfig::new(10, 1);
        config.errors.typo = 1.5;
        assert!(matches!(
            Synth::new(config),
            Err(SynthError::Rate {
                name: "typo rate",
                ..
            })
        ));
    }
}
