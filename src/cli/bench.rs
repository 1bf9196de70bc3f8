//! `pprl bench`: encoding and matching throughput on the bundled Febrl4 data,
//! side by side with the plain reference implementations, measured in the
//! same run (ratios, not absolute times, are what carry over between machines).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use pprl::encode::Encoder;
use pprl::schema::{Schema, default_schema_json};
use pprl::secret::Secret;
use pprl::similarity::{Kernel, PackedClks, SearchOptions, scalar, search_pair};
use pprl::site::{EncodeOptions, MaxRejects, OutputFormat, encode_site};

use super::example::{FEBRL4_A, FEBRL4_B};
use pprl::io::atomic::ScratchDir;
use pprl::io::records::{ReadOptions, read_named_columns};

/// Copies of Febrl4 A in the thread-scaling measurement.
const SCALING_REPEATS: usize = 20;

const CLKHASH_BLAKE_SCHEMA: &str = include_str!("../../fixtures/clkhash_v3_blake.schema.json");

#[derive(Debug, clap::Args)]
#[command(
    long_about = "Measure encoding and matching throughput on the bundled Febrl4 data (2 x 5000 \
records), next to the plain reference implementations that the fast paths are tested against, in \
the same run. To compare with clkhash and anonlink themselves, run benches/clkhash_compare.sh and \
benches/anonlink_compare.sh (they install them into a throw-away virtualenv)."
)]
pub struct BenchArgs {
    /// Worker threads for the parallel figures (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Minimum time spent on each measurement, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let threads = pool.current_num_threads();
    let min_time = Duration::from_secs_f64(args.seconds.max(0.01));
    let secret = Secret::new("pprl bench secret, not for real use")?;

    println!("encoding: Febrl4 A, records/s ({threads} threads for the parallel column)");
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>10}",
        "schema", "reference", "fast, 1 th", "fast, all", "fast/ref"
    );
    let schemas = [
        ("native default", Schema::from_json(&default_schema_json())?),
        ("clkhash blake", Schema::from_json(CLKHASH_BLAKE_SCHEMA)?),
    ];
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut rows_of = Vec::new();
    for (name, schema) in &schemas {
        let rows = febrl_rows(FEBRL4_A, schema)?;
        let values: Vec<Vec<Option<&str>>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v.as_deref()).collect())
            .collect();
        let reference = rate(min_time, values.len(), || {
            for v in &values {
                let _ = std::hint::black_box(pprl::encode::reference::encode(schema, &secret, v));
            }
        });
        // A fresh encoder per pass, so that its token memo starts cold each time.
        let one = rate(min_time, values.len(), || {
            let encoder = Encoder::new(schema, &secret);
            let mut out = vec![0u8; encoder.filter_bytes()];
            for v in &values {
                let _ = std::hint::black_box(encoder.encode_into(v, &mut out));
            }
        });
        let all = pool.install(|| {
            rate(min_time, values.len(), || {
                encode_all(&Encoder::new(schema, &secret), &values)
            })
        });
        println!(
            "{name:<16} {reference:>12.0} {one:>12.0} {all:>12.0} {:>9.1}x",
            one / reference
        );
        rows_of.push(rows);
    }

    // Thread scaling where memo warm-up matters little, as in a large file:
    // each thread fills its own memos, which on 5000 cold records is a large
    // part of the work (the "fast, all" column above). One encoder for every
    // pass, so its memos are warm after the first: with a fresh one per pass,
    // 16 threads each saw 6,250 records, most of them for the first time,
    // against 100,000 on one thread.
    let records = SCALING_REPEATS * rows_of[0].len();
    scaling_header(
        &format!("encoding, thread scaling: Febrl4 A {SCALING_REPEATS} times ({records} records)"),
        threads,
    );
    for ((name, schema), rows) in schemas.iter().zip(&rows_of) {
        let values: Vec<Vec<Option<&str>>> = (0..SCALING_REPEATS)
            .flat_map(|_| rows.iter())
            .map(|r| r.iter().map(|v| v.as_deref()).collect())
            .collect();
        let encoder = Encoder::new(schema, &secret);
        let on = |pool: &rayon::ThreadPool| {
            pool.install(|| rate(min_time, values.len(), || encode_all(&encoder, &values)))
        };
        let (one, all) = (on(&single), on(&pool));
        let speed_up = all / one;
        println!(
            "{name:<16} {one:>12.0} {all:>12.0} {speed_up:>9.2}x {:>10.0}%",
            100.0 * speed_up / threads as f64
        );
    }

    // The whole site run, as `pprl encode` does it: CSV in, Parquet out. Each
    // run starts with cold memos in every worker, so the input grows with
    // the thread count (10 copies per thread, at least 20) for each worker
    // to see every record about ten times, as on one thread.
    let copies = SCALING_REPEATS.max(10 * threads);
    let records = copies * rows_of[0].len();
    let dir = ScratchDir::new()?;
    let input = dir.path().join("febrl4_a_repeated.csv");
    std::fs::write(&input, repeated_febrl(FEBRL4_A, copies))?;
    scaling_header(
        &format!(
            "site encode run (read CSV, encode, write Parquet): Febrl4 A {copies} \
             times ({records} records)"
        ),
        threads,
    );
    for (name, schema) in &schemas {
        let run = |threads: usize| -> anyhow::Result<f64> {
            let options = EncodeOptions {
                schema,
                secret: &secret,
                site: "bench".into(),
                input: input.clone(),
                read: ReadOptions::default(),
                id_column: "rec_id".into(),
                output: dir.path().join("bench.clk.parquet"),
                output_format: OutputFormat::Parquet,
                threads,
                max_rejects: MaxRejects::Percent(100.0),
            };
            let mut failure = None;
            let rate = rate(min_time, records, || {
                if let Err(e) = encode_site(&options, &mut |_| {}) {
                    failure = Some(e);
                }
            });
            match failure {
                Some(e) => Err(e.into()),
                None => Ok(rate),
            }
        };
        let (one, all) = (run(1)?, run(threads)?);
        let speed_up = all / one;
        println!(
            "{name:<16} {one:>12.0} {all:>12.0} {speed_up:>9.2}x {:>10.0}%",
            100.0 * speed_up / threads as f64
        );
    }

    // Matching: all 25 million pairs of the encoded Febrl4 sites.
    let schema = &schemas[0].1;
    let encode_site = |csv: &str| -> anyhow::Result<PackedClks> {
        let encoder = Encoder::new(schema, &secret);
        let mut bytes = Vec::new();
        for row in febrl_rows(csv, schema)? {
            let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            if let Ok(clk) = encoder.encode(&values) {
                bytes.extend_from_slice(&clk);
            }
        }
        Ok(PackedClks::from_bytes(&bytes, encoder.filter_bytes()))
    };
    let (a, b) = (encode_site(FEBRL4_A)?, encode_site(FEBRL4_B)?);
    let pairs = a.len() * b.len();
    let threshold = pprl::matching::DEFAULT_THRESHOLD;
    println!(
        "\nmatching: Febrl4 A x B ({pairs} pairs, threshold {threshold}), pairs/s (best kernel: {})",
        Kernel::best().name()
    );
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>10}",
        "search", "reference", "fast, 1 th", "fast, all", "fast/ref"
    );
    let reference = rate(min_time, pairs, || {
        std::hint::black_box(scalar::all_pairs(&a, &b, threshold));
    });
    for length_filter in [false, true] {
        let options = SearchOptions {
            length_filter,
            ..SearchOptions::new(threshold)
        };
        let search = || std::hint::black_box(search_pair(&a, &b, &options, &|_| {}));
        let one = single.install(|| rate(min_time, pairs, || drop(search())));
        let all = pool.install(|| rate(min_time, pairs, || drop(search())));
        let name = if length_filter {
            "length filter"
        } else {
            "all pairs"
        };
        println!(
            "{name:<16} {reference:>12.0} {one:>12.0} {all:>12.0} {:>9.1}x",
            one / reference
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Encodes `values` on the current rayon pool.
fn encode_all(encoder: &Encoder, values: &[Vec<Option<&str>>]) {
    values.par_iter().for_each_init(
        || vec![0u8; encoder.filter_bytes()],
        |out, v| {
            let _ = std::hint::black_box(encoder.encode_into(v, out));
        },
    );
}

/// The title and column heads of a table of records/s on one thread and on `threads`.
fn scaling_header(title: &str, threads: usize) {
    println!("\n{title}, records/s");
    println!(
        "{:<16} {:>12} {:>12} {:>10} {:>11}",
        "schema",
        "1 thread",
        format!("{threads} threads"),
        "speed-up",
        "per thread"
    );
}

/// `csv` (with a header and `rec_id` first) `times` times over, each copy's
/// ids made distinct with a suffix.
fn repeated_febrl(csv: &str, times: usize) -> String {
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    let rows: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let mut out = String::with_capacity(csv.len() * times + 8 * rows.len() * times);
    out.push_str(header);
    out.push('\n');
    for copy in 0..times {
        for row in &rows {
            let (id, rest) = row.split_once(',').unwrap_or((row, ""));
            out.push_str(&format!("{id}-{copy},{rest}\n"));
        }
    }
    out
}

/// Items per second of `work` (which handles `items` items), repeated until
/// at least `min_time` has passed.
fn rate(min_time: Duration, items: usize, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || start.elapsed() < min_time {
        work();
        rounds += 1;
    }
    (rounds * items as u64) as f64 / start.elapsed().as_secs_f64()
}

/// Febrl's rows (embedded in the binary) as values in `schema`'s feature
/// order; features without a column are `None`.
fn febrl_rows(csv: &str, schema: &Schema) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let dir = ScratchDir::new()?;
    let path = dir.path().join("febrl.csv");
    std::fs::write(&path, csv)?;
    let names: Vec<&str> = schema.features().iter().map(|f| f.identifier()).collect();
    Ok(read_named_columns(&path, &ReadOptions::default(), &names)?)
}
