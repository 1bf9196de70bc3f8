//! The match run end to end: Febrl4 and synthetic N × N clks.
//!
//! ```text
//! cargo bench --bench match_e2e                          # Febrl4, then 100,000 × 100,000
//! cargo bench --bench match_e2e -- --size 20000          # a smaller synthetic run (or PPRL_MATCH_SIZE)
//! cargo bench --bench match_e2e -- --threads 1 --no-febrl
//! cargo bench --bench match_e2e -- --write-anonlink DIR --size 100000
//! ```
//!
//! - Febrl4: both files encoded with the default schema (`pprl schema init`)
//!   through the site's encode run, then matched from the files at the
//!   default threshold; precision and recall against the rec-N truth.
//! - Synthetic: random 1024-bit clks of density 0.3 at two sites, half of
//!   site B noisy copies of site-A clks (5% of bits flipped: Dice about 0.92;
//!   strangers score about 0.3), matched in memory at threshold 0.8 with the
//!   greedy one-to-one solver. Prints seconds, comparisons per second (in all
//!   and per thread), links, the planted pairs found, and peak memory (VmHWM).
//! - `--write-anonlink DIR` writes the same synthetic clks as anonlink JSON
//!   (`DIR/a.json`, `DIR/b.json`) and the planted pairs (`DIR/truth.csv`,
//!   `id_a,id_b`), for `benches/anonlink_compare.sh`, and runs nothing else.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use pprl::io::clk_file::{self, ClkFile, ClkMeta};
use pprl::matching::{self, MatchInput, MatchOptions, NoProgress};
use pprl::schema::{Schema, default_schema_json};
use pprl::secret::Secret;
use pprl::site::{self, EncodeOptions, MaxRejects, OutputFormat};
use pprl::synth::random_clks_with_copies;

const BITS: usize = 1024;
const DENSITY: f64 = 0.3;
const NOISE: f64 = 0.05;
const SEED: u64 = 20_240_501;
const SYNTH_THRESHOLD: f64 = 0.8;

struct Args {
    size: usize,
    threads: usize,
    febrl: bool,
    write_anonlink: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        size: std::env::var("PPRL_MATCH_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000),
        threads: 0,
        febrl: true,
        write_anonlink: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size" => args.size = it.next().and_then(|s| s.parse().ok()).expect("--size N"),
            "--threads" => {
                args.threads = it.next().and_then(|s| s.parse().ok()).expect("--threads N")
            }
            "--no-febrl" => args.febrl = false,
            "--write-anonlink" => {
                args.write_anonlink = Some(it.next().expect("--write-anonlink DIR").into())
            }
            // `cargo bench` passes `--bench`; filters and other harness flags are ignored.
            _ => {}
        }
    }
    args
}

/// `VmHWM` of this process, in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The synthetic sites as clk files in memory (ids are row numbers) and the planted pairs.
fn synthetic(n: usize) -> (ClkFile, ClkFile, Vec<(u32, u32)>) {
    let planted = random_clks_with_copies(n, BITS, DENSITY, NOISE, SEED);
    let file = |site: &str, words: &[u64]| {
        let clks: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        ClkFile {
            meta: ClkMeta {
                engine_version: pprl::ENGINE_VERSION.into(),
                site: site.into(),
                schema_fingerprint: None,
                filter_bits: BITS,
                key_check_value: None,
            },
            ids: (0..n).map(|i| i.to_string()).collect(),
            popcounts: clks.chunks(BITS / 8).map(clk_file::popcount).collect(),
            clks,
            blocking_keys: None,
        }
    };
    (file("a", &planted.a), file("b", &planted.b), planted.truth)
}

fn write_anonlink(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("create the output directory");
    let (a, b, truth) = synthetic(n);
    clk_file::write_clkhash_json(&dir.join("a.json"), &a).expect("write a.json");
    clk_file::write_clkhash_json(&dir.join("b.json"), &b).expect("write b.json");
    let mut text = String::from("id_a,id_b\n");
    for (x, y) in truth {
        text += &format!("{x},{y}\n");
    }
    std::fs::write(dir.join("truth.csv"), text).expect("write truth.csv");
    println!("wrote {n} x {n} synthetic clks to {}", dir.display());
}

fn febrl4(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let schema = Schema::from_json(&default_schema_json()).expect("the default schema");
    let secret = Secret::new("an example project secret, 32+ bytes long").expect("secret");
    let started = Instant::now();
    let mut inputs = Vec::new();
    for (site, csv) in [("A", "febrl4_a.csv"), ("B", "febrl4_b.csv")] {
        let output = dir.join(format!("{site}.clk.parquet"));
        let options = EncodeOptions {
            schema: &schema,
            secret: &secret,
            site: site.into(),
            input: root.join(csv),
            read: Default::default(),
            id_column: "rec_id".into(),
            output: output.clone(),
            output_format: OutputFormat::Parquet,
            threads: 0,
            max_rejects: MaxRejects::Count(0),
        };
        site::encode_site(&options, &mut |_| {}).expect("encode Febrl4");
        inputs.push(MatchInput {
            path: output,
            site: None,
        });
    }
    let encode_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let outcome =
        matching::run_match(&MatchOptions::default(), &inputs, &NoProgress).expect("match");
    let match_s = started.elapsed().as_secs_f64();
    let entity = |id: &str| id.split('-').nth(1).map(str::to_owned);
    let true_links = outcome
        .links
        .iter()
        .filter(|l| entity(outcome.record(l.a).1) == entity(outcome.record(l.b).1))
        .count();
    let s = &outcome.summary;
    println!(
        "febrl4 5000 x 5000, default schema, threshold {}: encode {encode_s:.2} s, match {match_s:.3} s \
         (files read, {} comparisons, {:.0} M/s), {} links, precision {:.4}, recall {:.4}",
        matching::DEFAULT_THRESHOLD,
        s.comparisons,
        s.comparisons as f64 / match_s / 1e6,
        outcome.links.len(),
        true_links as f64 / outcome.links.len().max(1) as f64,
        true_links as f64 / 5000.0,
    );
}

fn synthetic_run(n: usize, threads: usize) {
    let (a, b, truth) = synthetic(n);
    let before = peak_mib();
    let options = MatchOptions {
        threshold: SYNTH_THRESHOLD,
        ..MatchOptions::default()
    };
    let started = Instant::now();
    let outcome = matching::match_files(
        &options,
        vec![(PathBuf::from("a"), a), (PathBuf::from("b"), b)],
        &NoProgress,
    )
    .expect("match");
    let seconds = started.elapsed().as_secs_f64();
    let planted: std::collections::HashSet<(u32, u32)> = truth.into_iter().collect();
    let found = outcome
        .links
        .iter()
        .filter(|l| planted.contains(&(l.a.record, l.b.record)))
        .count();
    let s = &outcome.summary;
    let rate = s.comparisons as f64 / seconds;
    println!(
        "synthetic {n} x {n}, 1024-bit density {DENSITY}, noise {NOISE}, threshold {SYNTH_THRESHOLD}, \
         {threads} threads, {} kernel: {seconds:.2} s, {} comparisons ({} skipped by length), \
         {:.0} M/s ({:.0} M/s per thread), {} links, {found}/{} planted pairs found, \
         peak {:.0} MiB (clks in memory before matching: {before:.0} MiB)",
        s.kernel.name(),
        s.comparisons,
        s.skipped_by_length,
        rate / 1e6,
        rate / 1e6 / threads as f64,
        outcome.links.len(),
        planted.len(),
        peak_mib(),
    );
}

fn main() {
    let args = parse_args();
    if let Some(dir) = &args.write_anonlink {
        write_anonlink(dir, args.size);
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .expect("threads");
    let threads = pool.current_num_threads();
    pool.install(|| {
        if args.febrl {
            let dir = tempfile::tempdir().expect("temp dir");
            febrl4(dir.path());
        }
        synthetic_run(args.size, threads);
    });
}
