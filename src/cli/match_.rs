//! `pprl match`: the linkage unit's step. Turns the clap arguments into
//! [`pprl::matching::MatchOptions`] and inputs, runs the match on a thread pool
//! of the size asked for, draws the progress bar, writes the outputs and
//! prints the summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pprl::block::{LshTarget, PlanOptions};
use pprl::matching::{
    self, Blocking, BlockingUsed, DEFAULT_THRESHOLD, LshOptions, MatchInput, MatchMode,
    MatchOptions, MatchOutcome, MatchProgress,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BlockingArg {
    None,
    Lsh,
    Keys,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LshTargetArg {
    BestMatches,
    Threshold,
}

/// Arguments of `pprl match`; the help text is in `long_about`.
#[derive(Debug, clap::Args)]
#[command(long_about = "\
Match the encodings of one or more sites (linkage unit).\n\n\
With two or more files, finds the records of different sites that belong to the same \
person: every pair of records from two sites whose clks have a Dice similarity of at \
least the threshold is a candidate; a greedy solver then accepts candidates in \
descending score so that each entity holds at most one record per site (with two sites: \
one-to-one, as anonlink does). With one file, finds the records of that site that \
belong to the same person (deduplication): an entity only holds records that all \
scored at least the threshold with one another.\n\n\
Writes OUT_DIR/links.parquet (site_a, id_a, site_b, id_b, score: the accepted links) \
and OUT_DIR/entities.parquet (entity_id, site, id: every input record, unmatched ones \
alone). Before comparing anything, checks that all files use the same filter length, \
linkage schema and secret. The output is the same whatever the number of threads and \
the order of the files.\n\n\
Large inputs: --blocking (default auto) scores only the candidate pairs of Hamming LSH \
on the clks or of site-side blocking keys instead of all pairs, above 2e9 pairs; the \
summary reports the reduction ratio, and `pprl evaluate --clks` the pair completeness.")]
#[command(after_help = "\
Exit status: 0 when the outputs were written; 1 on any error, and then no output is \
written; 2 for an invalid command line; 130 when interrupted (Ctrl-C, kill, a closed \
terminal), and then no output or temporary file is left.

Examples:
  pprl match --out-dir out/ a.clk.parquet b.clk.parquet c.clk.parquet
  pprl match --threshold 0.85 --out-dir out/ registry.clk.parquet        # deduplicate
  pprl match --out-dir out/ --scores out/scores.parquet --min-score 0.5 a.clk.parquet b.clk.parquet
  pprl match --out-dir out/ --site A --site B a.clks.json b.clks.json    # anonlink JSON
  pprl match --blocking keys --out-dir out/ a.clk.parquet b.clk.parquet  # site-side keys
  pprl match --blocking lsh --threshold 0.8 --out-dir out/ a.clk.parquet b.clk.parquet")]
pub struct MatchArgs {
    /// The sites' encodings: `.clk.parquet` files from `pprl encode`, or anonlink
    /// `{"clks": [...]}` JSON files (`.json`; records are numbered from 0).
    #[arg(required = true, value_name = "FILE")]
    inputs: Vec<PathBuf>,

    /// The directory for links.parquet and entities.parquet (created if missing).
    #[arg(long, short, value_name = "DIR")]
    out_dir: PathBuf,

    /// Dice score from which two records are a candidate link (0 < T <= 1). The default
    /// keeps precision >= 0.99 and recall >= 0.98 on Febrl4 with the default schema; look
    /// at the score distribution (`--scores`, `pprl evaluate`) to choose one for your data.
    #[arg(long, short, default_value_t = DEFAULT_THRESHOLD, value_name = "T")]
    threshold: f64,

    /// Also write every pair scoring at least --min-score, linked or not, to this Parquet
    /// file (same columns as links.parquet), to choose a threshold afterwards.
    #[arg(long, value_name = "FILE")]
    scores: Option<PathBuf>,

    /// The lowest score written to --scores [default: the threshold]. Low values make the
    /// file, and the memory the run needs, grow quickly: unrelated records score about
    /// the filters' fill (on Febrl4 with the default schema, half of all pairs score
    /// 0.5 or more, 4% 0.55 or more).
    #[arg(long, requires = "scores", value_name = "S")]
    min_score: Option<f64>,

    /// Keep only the K best-scoring candidates of each record (of two sites: of the site
    /// whose name sorts first), to bound memory on data with many similar records.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,

    /// Deduplication only: the largest number of records in one entity.
    #[arg(long, value_name = "N")]
    max_cluster_size: Option<usize>,

    /// Which pairs are scored. `none`: all pairs (exact). `lsh`: Hamming LSH on the clks,
    /// nothing needed from the sites; planned so that each best match is found with
    /// probability --lsh-recall. `keys`: pairs sharing a site-side blocking key (every input
    /// must carry keys: encode with a schema that declares `blocking_keys`). `auto`: all
    /// pairs up to 2e9 pairs; above, keys when every input has them, else LSH when its plan
    /// expects to take at most half the time of all pairs, else all pairs. The summary
    /// reports the method and the reduction ratio.
    #[arg(long, value_enum, default_value_t = BlockingArg::Auto, value_name = "METHOD")]
    blocking: BlockingArg,

    /// LSH: the number of tables L [default: planned from the clks and the threshold].
    #[arg(long, value_name = "L")]
    lsh_tables: Option<usize>,

    /// LSH: bits sampled per table k [default: planned from the clks and the threshold].
    #[arg(long, value_name = "K")]
    lsh_bits: Option<usize>,

    /// LSH: the probability with which the plan finds what --lsh-target says.
    #[arg(long, default_value_t = 0.995, value_name = "R")]
    lsh_recall: f64,

    /// LSH: what the plan must find. `best-matches`: the best partner above the threshold of
    /// a sample of 1,000 records (the pairs a one-to-one link keeps; on Febrl4 this leaves
    /// under 1% of the pairs). `threshold`: every pair at the threshold (leaves far more
    /// pairs on densely filled filters).
    #[arg(long, value_enum, default_value_t = LshTargetArg::BestMatches, value_name = "TARGET")]
    lsh_target: LshTargetArg,

    /// Blocking skips a bucket or key with more pairs than this (counted in the summary)
    /// [default: 4194304 for LSH, 268435456 for keys].
    #[arg(long, value_name = "N")]
    max_bucket_pairs: Option<u64>,

    /// The site name of each input, in order, instead of the one stored in the file
    /// (anonlink JSON stores none: its file name is used). Repeat once per input.
    #[arg(long = "site", value_name = "NAME")]
    sites: Vec<String>,

    /// Worker threads (0: one per CPU core). The output is the same for any value.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,

    /// No progress bar and no summary; errors are still printed.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: MatchArgs) -> anyhow::Result<ExitCode> {
    if !args.sites.is_empty() && args.sites.len() != args.inputs.len() {
        anyhow::bail!(
            "{} --site names for {} input files: give one per input, in the same order",
            args.sites.len(),
            args.inputs.len()
        );
    }
    let inputs: Vec<MatchInput> = args
        .inputs
        .iter()
        .enumerate()
        .map(|(i, path)| MatchInput {
            path: path.clone(),
            site: args.sites.get(i).cloned(),
        })
        .collect();
    let options = MatchOptions {
        threshold: args.threshold,
        min_score: match (&args.scores, args.min_score) {
            (Some(_), None) => Some(args.threshold),
            (_, min) => min,
        },
        top_k: args.top_k,
        max_cluster_size: args.max_cluster_size,
        blocking: match args.blocking {
            BlockingArg::None => Blocking::None,
            BlockingArg::Lsh => Blocking::Lsh,
            BlockingArg::Keys => Blocking::Keys,
            BlockingArg::Auto => Blocking::Auto,
        },
        lsh: LshOptions {
            tables: args.lsh_tables,
            bits_per_key: args.lsh_bits,
            plan: PlanOptions {
                recall: args.lsh_recall,
                target: match args.lsh_target {
                    LshTargetArg::BestMatches => LshTarget::BestMatches { sample_rows: 1000 },
                    LshTargetArg::Threshold => LshTarget::Threshold,
                },
                ..LshOptions::default().plan
            },
            ..LshOptions::default()
        },
        max_bucket_pairs: args.max_bucket_pairs,
        ..MatchOptions::default()
    };
    // Found now, not after the matching, which can take long.
    if args.out_dir.exists() && !args.out_dir.is_dir() {
        anyhow::bail!(
            "--out-dir {} is a file, not a directory",
            args.out_dir.display()
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("cannot start the worker threads")?;
    let started = std::time::Instant::now();
    let bar = Bar::new(args.quiet);
    let outcome = pool
        .install(|| matching::run_match(&options, &inputs, &bar))
        .context("cannot match")?;
    bar.0.finish_and_clear();
    matching::write_outputs(&outcome, &args.out_dir, args.scores.as_deref())
        .context("cannot write the match results")?;
    for path in &outcome.summary.unchecked {
        eprintln!(
            "warning: {} records no schema fingerprint or key check value (anonlink JSON): \
             it could not be checked to use the same schema and secret as the other inputs",
            path.display()
        );
    }
    if !args.quiet {
        eprint!(
            "{}",
            summary(&outcome, &args, started.elapsed().as_secs_f64())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress bar on stderr, hidden when quiet or not a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("matching {wide_bar} {percent:>3}% ETA {eta}")
                .expect("valid template"),
        );
        Self(bar)
    }
}

impl MatchProgress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
    }
    fn advance(&self, records: u64) {
        self.0.inc(records);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn summary(o: &MatchOutcome, args: &MatchArgs, total_seconds: f64) -> String {
    let s = &o.summary;
    let mode = match s.mode {
        MatchMode::Deduplicate => "deduplication of one site",
        MatchMode::TwoSites => "two sites, greedy one-to-one",
        MatchMode::MultiParty => "multi-party, at most one record per site per entity",
    };
    let mut out = format!(
        "{mode}, threshold {}, {}-bit clks, {} kernel\n",
        args.threshold,
        s.filter_bits,
        s.kernel.name()
    );
    for site in &o.sites {
        out += &format!(
            "  site {}: {} records ({})\n",
            site.name,
            site.ids.len(),
            site.path.display()
        );
    }
    out += &match s.blocking {
        BlockingUsed::AllPairs => format!("  blocking: none, all {} pairs\n", s.all_pairs),
        BlockingUsed::Lsh {
            params,
            planned_recall,
        } => format!(
            "  blocking: lsh, {} tables of {} bits{}: reduction ratio >= {:.5} of {} pairs \
             ({:.5} counting pairs met in several tables each time)\n",
            params.tables,
            params.bits_per_key,
            planned_recall.map_or(String::new(), |r| format!(" (planned recall {r:.3})")),
            s.reduction_ratio(),
            s.all_pairs,
            s.work_reduction_ratio(),
        ),
        BlockingUsed::Keys { .. } => format!(
            "  blocking: site keys: reduction ratio {:.5} of {} pairs\n",
            s.reduction_ratio(),
            s.all_pairs
        ),
    };
    if let Some(reason) = s.blocking_reason {
        out += &format!("    ({reason})\n");
    }
    if s.skipped_buckets > 0 {
        out += &format!(
            "  blocking skipped {} buckets or keys of more than --max-bucket-pairs pairs each \
             ({} pairs in all): raise it if true matches may hide there\n",
            s.skipped_buckets, s.skipped_bucket_pairs
        );
    }
    let pairs = s.comparisons + s.skipped_by_length;
    let skipped_pct = if pairs == 0 {
        0.0
    } else {
        100.0 * s.skipped_by_length as f64 / pairs as f64
    };
    out += &format!(
        "  comparisons: {} made, {} skipped by the length filter ({skipped_pct:.1}%)\n",
        s.comparisons, s.skipped_by_length
    );
    out += &format!("  candidates: {}", s.candidates);
    if let Some(n) = s.scored_pairs {
        out += &format!(" ({n} pairs written to --scores)");
    }
    out += &format!("\n  links: {}\n  entities: {}\n", s.links, s.entities);
    out += &format!(
        "  seconds: {:.2} matching, {total_seconds:.2} in all ({:.0} comparisons/s) -> {}\n",
        s.seconds,
        s.comparisons as f64 / s.seconds.max(1e-9),
        args.out_dir.display()
    );
    out
}
