//! Command-line parsing and dispatch. Each subcommand lives in its own file,
//! turns its clap arguments into plain library options, and nowhere else.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod encode;
mod evaluate;
mod example;
mod generate;
mod match_;
mod release;
mod schema;
mod split;

/// Privacy-preserving record linkage of health data.
///
/// Each site encodes its identifying fields into Bloom filters with a shared
/// secret (`pprl encode`); the linkage unit matches the encodings of all sites
/// without the secret (`pprl match`) and hands each site its entity map
/// (`pprl split`); each site attaches its clinical payload (`pprl release`);
/// analysts join the released files on `entity_id`.
#[derive(Debug, Parser)]
#[command(name = "pprl", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = "Write or check a linkage schema (site and linkage unit).")]
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    #[command(about = "Encode a site's records into Bloom filters (site).")]
    Encode(encode::EncodeArgs),
    #[command(about = "Match the encodings of one or more sites (linkage unit).")]
    Match(match_::MatchArgs),
    #[command(about = "Split entities.parquet into one entity map per site (linkage unit).")]
    Split(split::SplitArgs),
    #[command(about = "Attach a site's payload to its entity ids, without identifiers (site).")]
    Release(release::ReleaseArgs),
    #[command(about = "Precision, recall and F1 of links against ground truth.")]
    Evaluate(evaluate::EvaluateArgs),
    #[command(about = "Run the whole pipeline on the bundled Febrl4 data.")]
    Example(example::ExampleArgs),
    #[command(about = "Measure encoding and matching throughput.")]
    Bench(bench::BenchArgs),
    #[command(about = "Write synthetic site records with ground truth, for tests and benchmarks.")]
    Generate(generate::GenerateArgs),
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    remove_unfinished_outputs_on_signals();
    match cli.command {
        Command::Schema(cmd) => schema::run(cmd),
        Command::Encode(args) => encode::run(args),
        Command::Match(args) => match_::run(args),
        Command::Split(args) => split::run(args),
        Command::Release(args) => release::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Example(args) => example::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Generate(args) => generate::run(args),
    }
}

/// Exit code of a run ended by Ctrl-C, `kill` or a closed terminal (128 + SIGINT,
/// as shells report an interrupted command).
const INTERRUPTED: i32 = 130;

/// Makes Ctrl-C (SIGINT), `kill` (SIGTERM) and a closed terminal (SIGHUP) end
/// the run at once without leaving the temporary files of unfinished outputs
/// or a `pprl bench` scratch directory behind (a signal runs no destructor).
/// Outputs already finished stay.
fn remove_unfinished_outputs_on_signals() {
    use std::io::Write as _;

    // Without a handler (one already set, or none possible) the signal still
    // ends the run, and no output is half-written either way.
    let _ = ctrlc::set_handler(|| {
        let removed = pprl::io::atomic::remove_pending();
        // Not `eprintln!`, which panics when stderr is gone (a closed terminal).
        let plural = if removed == 1 { "" } else { "s" };
        let _ = writeln!(
            std::io::stderr(),
            "\ninterrupted: {removed} temporary file{plural} removed"
        );
        std::process::exit(INTERRUPTED);
    });
}

/// A `--delimiter`: one ASCII character, or `tab`.
fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        "\"" | "\r" | "\n" => Err(format!(
            "{s:?} cannot be the delimiter: quotes and line breaks have their own meaning in CSV"
        )),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!(
            "{s:?} is not a single ASCII character (use `tab` for a tab)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter("\\t"), Ok(b'\t'));
        assert!(parse_delimiter(";;").is_err());
        assert!(parse_delimiter("é").is_err());
        assert!(parse_delimiter("\"").is_err());
        assert!(parse_delimiter("\n").is_err());
    }
}
