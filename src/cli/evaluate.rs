//! `pprl evaluate`: precision, recall and F1 of a match run against ground
//! truth, a threshold sweep over the candidate scores, and a picture of both.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pprl::evaluate::{EvaluateOptions, Quality, SweepMode, ThresholdGrid, Truth};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SweepArg {
    /// Greedy one-to-one in descending score, as `pprl match` links two sites.
    OneToOne,
    /// Every candidate pair at or above the threshold.
    AllPairs,
}

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// links.parquet of the match run.
    #[arg(long, value_name = "FILE")]
    links: PathBuf,
    /// Ground truth: a CSV of true pairs (columns id_a, id_b, optionally site_a,
    /// site_b; tab-separated for .tsv), or `febrl` (rec-N-org <-> rec-N-dup-M;
    /// needs --entities).
    /// Without site columns, id_a belongs to the first and id_b to the second
    /// site in name order. (A file named `febrl` is given as `./febrl`.)
    #[arg(long, value_name = "FILE|febrl")]
    truth: String,
    /// entities.parquet of the match run: every record, so that every id is
    /// checked and Febrl truth can be counted.
    #[arg(long, value_name = "FILE")]
    entities: Option<PathBuf>,
    /// scores.parquet of the match run (candidate pairs): adds a threshold sweep.
    #[arg(long, value_name = "FILE")]
    scores: Option<PathBuf>,
    /// Thresholds of the sweep, START:STOP:STEP [default: steps of 0.05 from
    /// the lowest score to 1].
    #[arg(long, value_name = "START:STOP:STEP")]
    thresholds: Option<String>,
    /// How candidates become links in the sweep [default: one-to-one when the
    /// scores link two sites, all-pairs otherwise].
    #[arg(long, value_enum, value_name = "MODE")]
    sweep: Option<SweepArg>,
    /// Write an SVG of the score distributions and the precision/recall curve.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// The sites' clk files the match run read (all of them): reports the pair
    /// completeness of its blocking, the share of true pairs that blocking left to be
    /// scored (read from the run's --blocking recorded in links.parquet).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    clks: Vec<PathBuf>,
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let truth = if args.truth.eq_ignore_ascii_case("febrl") {
        Truth::Febrl
    } else {
        Truth::PairsCsv(PathBuf::from(&args.truth))
    };
    let mut options = EvaluateOptions::new(&args.links, truth);
    options.entities = args.entities;
    options.scores = args.scores;
    options.plot = args.plot;
    options.clks = args.clks;
    options.thresholds = args
        .thresholds
        .as_deref()
        .map(str::parse::<ThresholdGrid>)
        .transpose()?;
    options.sweep_mode = args.sweep.map(|s| match s {
        SweepArg::OneToOne => SweepMode::OneToOne,
        SweepArg::AllPairs => SweepMode::AllPairs,
    });
    let report = pprl::evaluate::evaluate(&options)
        .with_context(|| format!("cannot evaluate {}", args.links.display()))?;

    println!("links:       {}", args.links.display());
    println!(
        "truth:       {} ({} true pairs)",
        args.truth, report.truth_pairs
    );
    match report.records {
        Some(n) => println!("records:     {n} (every id checked against the entity file)"),
        None => println!("records:     ids not checked (give --entities to check them)"),
    }
    if let Some(b) = &report.blocking {
        println!(
            "blocking:    {}: {} of {} true pairs left to be scored, pair completeness {:.4}",
            b.method,
            b.kept,
            b.true_pairs,
            b.pair_completeness()
        );
        if let (Some(above), Some(kept), Some(pc)) = (
            b.above_threshold,
            b.kept_above_threshold,
            b.pair_completeness_at_threshold(),
        ) {
            println!(
                "             of the {above} true pairs scoring at least the run's threshold \
                 (all-pairs candidates): {kept} kept, pair completeness {pc:.4}"
            );
        }
    }
    println!();
    println!("{}", header());
    println!("{}", row("links", &report.links));
    if let Some(sweep) = &report.sweep {
        let mode = match sweep.mode {
            SweepMode::OneToOne => "one-to-one, as pprl match links two sites",
            SweepMode::AllPairs => "all candidate pairs at or above the threshold",
        };
        println!();
        println!(
            "sweep over {} candidate pairs (lowest score {:.4}; {mode}):",
            sweep.candidates, sweep.lowest_score
        );
        println!("{}", header());
        for r in &sweep.rows {
            println!("{}", row(&format!("{:.4}", r.threshold), &r.quality));
        }
        match &sweep.best {
            Some(best) => {
                println!();
                println!("best F1 at threshold {:.4}:", best.threshold);
                println!("{}", row(&format!("{:.4}", best.threshold), &best.quality));
            }
            None => println!("no candidate pairs: no best threshold"),
        }
    }
    if let Some(plot) = &options.plot {
        println!();
        println!("plot: {}", plot.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn header() -> String {
    format!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "threshold", "links", "TP", "FP", "FN", "precision", "recall", "F1"
    )
}

fn row(label: &str, q: &Quality) -> String {
    format!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9.4} {:>9.4} {:>9.4}",
        label,
        q.links,
        q.true_positives,
        q.false_positives,
        q.false_negatives,
        q.precision,
        q.recall,
        q.f1
    )
}
