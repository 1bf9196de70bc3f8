//! `pprl generate`: synthetic site records with ground truth, for trying the
//! pipeline and for scale tests, without any real person's data.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pprl::io::clk_file::{self, ClkFile, ClkMeta};
use pprl::synth::{self, ErrorRates, Side, Synth, SynthConfig};

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
///
/// With --planted-clks, writes encodings instead of records, for blocking and matching at
/// scale without encoding first: a.clk.parquet and b.clk.parquet (sites A and B) of random
/// --bits-bit clks with bits set with probability --density, where half of site B's rows are
/// copies of distinct site-A clks with each bit flipped with probability --noise (the other
/// half are fresh), and truth.csv of the copies. The error-rate options do not apply.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct GenerateArgs {
    /// Write planted noisy copies of random clks (a.clk.parquet, b.clk.parquet) instead
    /// of records (--records-b and --overlap do not apply: both sites get --records rows).
    #[arg(long, conflicts_with_all = ["records_b", "overlap"])]
    planted_clks: bool,
    /// --planted-clks: filter length in bits.
    #[arg(
        long,
        default_value_t = 1024,
        requires = "planted_clks",
        value_name = "BITS"
    )]
    bits: usize,
    /// --planted-clks: probability that a bit is set.
    #[arg(
        long,
        default_value_t = 0.3,
        requires = "planted_clks",
        value_name = "P"
    )]
    density: f64,
    /// --planted-clks: probability that a bit of a copy is flipped (0.1 gives Dice about 0.84).
    #[arg(
        long,
        default_value_t = 0.1,
        requires = "planted_clks",
        value_name = "P"
    )]
    noise: f64,
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
    if args.planted_clks {
        return planted(&args);
    }
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

/// `--planted-clks`: two clk files and their truth.
fn planted(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    for (name, p) in [("--density", args.density), ("--noise", args.noise)] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&p),
            "{name} must be in [0, 1], not {p}"
        );
    }
    anyhow::ensure!(args.bits > 0, "--bits must be at least 1");
    anyhow::ensure!(
        args.records <= (u32::MAX / 2) as usize,
        "--records: at most {} records per site",
        u32::MAX / 2
    );
    let data = synth::random_clks_with_copies(
        args.records,
        args.bits,
        args.density,
        args.noise,
        args.seed,
    );
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    // Synthetic clks have no schema or secret: name what made them instead.
    let made_of = format!(
        "planted:bits={},density={},noise={},seed={}",
        args.bits, args.density, args.noise, args.seed
    );
    let bytes = args.bits.div_ceil(8);
    let mut written = Vec::new();
    for (site, words) in [("A", &data.a), ("B", &data.b)] {
        let prefix = site.to_lowercase();
        let clks: Vec<u8> = words
            .chunks_exact(data.words)
            .flat_map(|clk| {
                let mut le: Vec<u8> = clk.iter().flat_map(|w| w.to_le_bytes()).collect();
                le.truncate(bytes);
                le
            })
            .collect();
        let file = ClkFile {
            meta: ClkMeta {
                engine_version: pprl::ENGINE_VERSION.into(),
                site: site.into(),
                schema_fingerprint: Some(made_of.clone()),
                filter_bits: args.bits,
                key_check_value: Some(made_of.clone()),
            },
            ids: (0..args.records).map(|i| format!("{prefix}-{i}")).collect(),
            popcounts: clks.chunks_exact(bytes).map(clk_file::popcount).collect(),
            clks,
            blocking_keys: None,
        };
        let path = args.out_dir.join(format!("{prefix}.clk.parquet"));
        clk_file::write_parquet(&path, &file)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push((prefix, path));
    }
    let truth = args.out_dir.join("truth.csv");
    let mut text = String::from("id_a,id_b\n");
    for (i, j) in &data.truth {
        text += &format!("a-{i},b-{j}\n");
    }
    pprl::io::atomic::write_all(&truth, text.as_bytes())
        .with_context(|| format!("cannot write {}", truth.display()))?;
    println!("{:<8} {:>10}  file", "site", "records");
    for (site, path) in &written {
        println!("{site:<8} {:>10}  {}", args.records, path.display());
    }
    println!(
        "{:<8} {:>10}  {}",
        "truth",
        data.truth.len(),
        truth.display()
    );
    println!("{:.2} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
