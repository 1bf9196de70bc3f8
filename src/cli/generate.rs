//! `pprl generate`: synthetic site records with ground truth, for trying the
//! pipeline and for scale tests, without any real person's data.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pprl::synth::{ErrorRates, Side, Synth, SynthConfig};

/// Write two sites' synthetic records and the truth of which belong together.
///
/// Writes three files into --out-dir:
///
///   a.csv, b.csv   one record per person; columns rec_id, given_name, surname, sex,
///                  date_of_birth (%Y%m%d), street_number, address_1, address_2, suburb,
///                  postcode, state, soc_sec_id (Febrl's names, so the default schema of
///                  `pprl schema init` applies as is; an empty field is a missing value)
///   truth.csv      id_a,id_b: one row per person found at both sites
///
/// Names mix European given names and surnames with accents and particles (José, Małgorzata,
/// van der Berg, d'Angelo, O'Brien), common names more often; addresses are Australian-style
/// as in Febrl. Rows are shuffled, so record ids (a-<row>, b-<row>) say nothing about partners.
///
/// Error model: site A holds each person's record as it is; site B's copy of a shared person
/// carries errors at the given rates: per field, typos (one character inserted, deleted,
/// substituted or transposed in given_name, surname, address_1, suburb; one digit substituted
/// or transposed in street_number, postcode, soc_sec_id) and missing values; per record,
/// given_name and surname swapped, a new address (moved), a date_of_birth error (day and month
/// swapped, year off by one, or day off by one or two; always a valid date), and a spelling
/// variant of a name (accents dropped or transliterated, upper case, particle capitalised or
/// joined, apostrophe dropped).
///
/// The same seed and settings give byte-identical files, whatever the number of threads.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct GenerateArgs {
    /// Records at each site.
    #[arg(long, value_name = "N")]
    records: usize,
    /// Records at site B, when different from --records.
    #[arg(long, value_name = "N")]
    records_b: Option<usize>,
    /// Fraction of the smaller site's records that have a partner at the other site.
    #[arg(long, default_value_t = 0.5, value_name = "FRACTION")]
    overlap: f64,
    /// The seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for a.csv, b.csv and truth.csv (created if needed).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Per-field probability of a typo in site B's copy.
    #[arg(long, default_value_t = ErrorRates::default().typo, value_name = "P")]
    typo_rate: f64,
    /// Per-record probability that given_name and surname are swapped.
    #[arg(long, default_value_t = ErrorRates::default().swap_names, value_name = "P")]
    swap_rate: f64,
    /// Per-record probability of a new address.
    #[arg(long, default_value_t = ErrorRates::default().moved, value_name = "P")]
    moved_rate: f64,
    /// Per-field probability of a missing value.
    #[arg(long, default_value_t = ErrorRates::default().missing, value_name = "P")]
    missing_rate: f64,
    /// Per-record probability of a date_of_birth error.
    #[arg(long, default_value_t = ErrorRates::default().date, value_name = "P")]
    date_rate: f64,
    /// Per-record probability of a spelling variant of a name.
    #[arg(long, default_value_t = ErrorRates::default().variant, value_name = "P")]
    variant_rate: f64,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = SynthConfig {
        records_a: args.records,
        records_b: args.records_b.unwrap_or(args.records),
        overlap: args.overlap,
        seed: args.seed,
        errors: ErrorRates {
            typo: args.typo_rate,
            swap_names: args.swap_rate,
            moved: args.moved_rate,
            missing: args.missing_rate,
            date: args.date_rate,
            variant: args.variant_rate,
        },
    };
    let synth = Synth::new(config).context("cannot generate these records")?;
    let files = synth
        .write_csv(&args.out_dir)
        .context("cannot write the generated records")?;
    println!("{:<8} {:>10}  file", "site", "records");
    println!(
        "{:<8} {:>10}  {}",
        "a",
        synth.len(Side::A),
        files.site_a.display()
    );
    println!(
        "{:<8} {:>10}  {}",
        "b",
        synth.len(Side::B),
        files.site_b.display()
    );
    println!(
        "{:<8} {:>10}  {}",
        "truth",
        files.true_pairs,
        files.truth.display()
    );
    println!("{:.2} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
