//! `pprl example`: the whole pipeline on the bundled Febrl4 data, with
//! built-in defaults, laid out as the three roles would see it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use base64::Engine as _;

use pprl::evaluate::{EvaluateOptions, Truth};
use pprl::matching::{MatchInput, MatchOptions, NoProgress};
use pprl::release::ReleaseOptions;
use pprl::schema::{Schema, default_schema_json};
use pprl::secret::Secret;
use pprl::site::{EncodeOptions, MaxRejects, OutputFormat};

/// Febrl4 (synthetic records from the Febrl generator; see fixtures/DATA.md),
/// compiled in so that the example needs nothing but the binary.
pub(crate) const FEBRL4_A: &str = include_str!("../../fixtures/febrl4_a.csv");
pub(crate) const FEBRL4_B: &str = include_str!("../../fixtures/febrl4_b.csv");

#[derive(Debug, clap::Args)]
pub struct ExampleArgs {
    /// Directory to write the example into; files of an earlier run are replaced.
    #[arg(long, default_value = "pprl-example")]
    pub out_dir: PathBuf,
    /// Worker threads for encoding and matching (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The two sites of the example and what they hold.
struct ExampleSite {
    name: &'static str,
    febrl: &'static str,
    dir: PathBuf,
}

impl ExampleSite {
    fn records(&self) -> PathBuf {
        self.dir.join("patients.csv")
    }
    fn payload(&self) -> PathBuf {
        self.dir.join("clinical.csv")
    }
    fn clks(&self) -> PathBuf {
        self.dir
            .join(format!("{}.clk.parquet", self.name.to_lowercase()))
    }
    fn linked(&self) -> PathBuf {
        self.dir
            .join(format!("{}.linked.parquet", self.name.to_lowercase()))
    }
}

pub fn run(args: ExampleArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let root = args.out_dir;
    let unit = root.join("linkage-unit");
    let sites = [
        ExampleSite {
            name: "A",
            febrl: FEBRL4_A,
            dir: root.join("site-a"),
        },
        ExampleSite {
            name: "B",
            febrl: FEBRL4_B,
            dir: root.join("site-b"),
        },
    ];
    for dir in [&root, &unit]
        .into_iter()
        .chain(sites.iter().map(|s| &s.dir))
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    // Agreed by all: the schema. Shared by the sites only: the secret.
    let schema_path = root.join("linkage.json");
    write(&schema_path, default_schema_json().as_bytes())?;
    let schema = Schema::from_file(&schema_path)?;
    let secret_path = root.join("sites-only.key");
    write(&secret_path, generate_secret()?.as_bytes())?;
    let secret = Secret::from_file(&secret_path)?;

    // Each site: its records (Febrl4), a synthetic clinical payload, its encodings.
    for site in &sites {
        write(&site.records(), site.febrl.as_bytes())?;
        write(
            &site.payload(),
            synthetic_payload(site.name, site.febrl).as_bytes(),
        )?;
        let summary = pprl::site::encode_site(
            &EncodeOptions {
                schema: &schema,
                secret: &secret,
                site: site.name.to_owned(),
                input: site.records(),
                read: Default::default(),
                id_column: "rec_id".into(),
                output: site.clks(),
                output_format: OutputFormat::Parquet,
                threads: args.threads,
                max_rejects: MaxRejects::default(),
            },
            &mut |_| {},
        )
        .with_context(|| format!("site {}: encode", site.name))?;
        eprintln!(
            "site {}: encoded {} of {} records ({} rejected) in {:.2}s",
            site.name, summary.encoded, summary.rows_read, summary.rejected, summary.seconds
        );
    }

    // The linkage unit: encodings only.
    let inputs: Vec<MatchInput> = sites
        .iter()
        .map(|s| MatchInput {
            path: s.clks(),
            site: None,
        })
        .collect();
    // Scores from 0.55 show the distribution around the threshold and where
    // the best one lies; from 0.5 the file would hold half of all 25M pairs
    // (the non-matches' scores centre near the filters' fill of about 0.5).
    let options = MatchOptions {
        min_score: Some(0.55),
        ..MatchOptions::default()
    };
    let outcome = in_pool(args.threads, || {
        pprl::matching::run_match(&options, &inputs, &NoProgress)
    })??;
    let scores_path = unit.join("scores.parquet");
    pprl::matching::write_outputs(&outcome, &unit, Some(&scores_path))?;
    let s = &outcome.summary;
    eprintln!(
        "linkage unit: {} comparisons ({} skipped by the length filter), {} links, {} entities in {:.2}s",
        s.comparisons, s.skipped_by_length, s.links, s.entities, s.seconds
    );
    let maps_dir = unit.join("maps");
    let split = pprl::release::split(&unit.join("entities.parquet"), &maps_dir)?;

    // Each site: its own entity map + payload -> linked Parquet for analysts.
    for site in &sites {
        let map = split
            .maps
            .iter()
            .find(|m| m.site == site.name)
            .with_context(|| format!("no entity map for site {}", site.name))?;
        let mut release = ReleaseOptions::new(&map.path, &site.payload(), "rec_id", &site.linked());
        release.identifying_columns = schema
            .identifying_columns()
            .into_iter()
            .map(str::to_owned)
            .collect();
        release.site = Some(site.name.to_owned());
        let summary = pprl::release::release(&release)
            .with_context(|| format!("site {}: release", site.name))?;
        eprintln!(
            "site {}: released {} rows keyed by entity_id",
            site.name, summary.released_rows
        );
    }

    // Ground truth is known for Febrl: rec-N-org and rec-N-dup-0 are the same person.
    let report_path = root.join("report.svg");
    let mut evaluate = EvaluateOptions::new(&unit.join("links.parquet"), Truth::Febrl);
    evaluate.entities = Some(unit.join("entities.parquet"));
    evaluate.scores = Some(scores_path);
    evaluate.plot = Some(report_path.clone());
    let report = pprl::evaluate::evaluate(&evaluate)?;

    let q = report.links;
    let mut out = String::new();
    writeln!(
        out,
        "\npprl example: Febrl4, 2 sites x 5000 records, default schema and threshold {}",
        options.threshold
    )?;
    writeln!(out, "\nwhere the files are ({}):", root.display())?;
    writeln!(out, "  agreed by all     {}", schema_path.display())?;
    writeln!(
        out,
        "  sites only        {} (the secret; never sent to the linkage unit)",
        secret_path.display()
    )?;
    for site in &sites {
        writeln!(
            out,
            "  site {}            {} (identifiers, stay at the site), {} (payload)",
            site.name,
            site.records().display(),
            site.payload().display()
        )?;
        writeln!(out, "    -> linkage unit {}", site.clks().display())?;
        writeln!(out, "    -> analysts     {}", site.linked().display())?;
    }
    writeln!(
        out,
        "  linkage unit      {}/{{links,entities,scores}}.parquet, {}/",
        unit.display(),
        maps_dir.display()
    )?;
    writeln!(out, "  evaluation plot   {}", report_path.display())?;
    writeln!(
        out,
        "\nquality against the Febrl ground truth ({} true pairs):",
        report.truth_pairs
    )?;
    writeln!(
        out,
        "  links {}   true {}   false {}   missed {}",
        q.links, q.true_positives, q.false_positives, q.false_negatives
    )?;
    writeln!(
        out,
        "  precision {:.4}   recall {:.4}   F1 {:.4}",
        q.precision, q.recall, q.f1
    )?;
    if let Some(best) = report.sweep.as_ref().and_then(|s| s.best) {
        writeln!(
            out,
            "  best threshold by F1: {:.3} (precision {:.4}, recall {:.4}, F1 {:.4})",
            best.threshold, best.quality.precision, best.quality.recall, best.quality.f1
        )?;
    }
    writeln!(
        out,
        "\nanalysts join the linked files on entity_id, e.g. in DuckDB:"
    )?;
    writeln!(
        out,
        "  SELECT * FROM '{}' a JOIN '{}' b USING (entity_id);",
        sites[0].linked().display(),
        sites[1].linked().display()
    )?;
    writeln!(out, "\ndone in {:.1}s", start.elapsed().as_secs_f64())?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    pprl::io::atomic::write_all(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A fresh 256-bit secret from the operating system, base64 encoded.
fn generate_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes) + "\n")
}

/// Runs `f` on a rayon pool of `threads` threads (0: one per core).
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    Ok(pool.install(f))
}

/// A synthetic clinical payload for each Febrl record: made up, deterministic,
/// and free of identifiers (only the site's record key joins it to the map).
fn synthetic_payload(site: &str, febrl: &str) -> String {
    let mut out = match site {
        "A" => String::from("rec_id,diagnosis_icd10,diagnosis_year,stage\n"),
        _ => String::from("rec_id,sample_type,sample_year,vitamin_d_nmol_l\n"),
    };
    const ICD10: [&str; 6] = ["C18.7", "C34.1", "C50.9", "C61", "E11.9", "I21.4"];
    const SAMPLES: [&str; 4] = ["serum", "plasma", "whole blood", "DNA"];
    for line in febrl.lines().skip(1) {
        let rec_id = line.split(',').next().unwrap_or_default().trim();
        if rec_id.is_empty() {
            continue;
        }
        let h = blake3::hash(format!("{site}/{rec_id}").as_bytes());
        let h = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        let year = 1995 + h % 30;
        match site {
            "A" => writeln!(
                out,
                "{rec_id},{},{year},{}",
                ICD10[(h >> 8) as usize % ICD10.len()],
                ["I", "II", "III", "IV"][(h >> 16) as usize % 4]
            ),
            _ => writeln!(
                out,
                "{rec_id},{},{year},{:.1}",
                SAMPLES[(h >> 8) as usize % SAMPLES.len()],
                20.0 + ((h >> 16) % 1200) as f64 / 10.0
            ),
        }
        .expect("writing to a String");
    }
    out
}
