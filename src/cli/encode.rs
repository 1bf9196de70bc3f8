//! `pprl encode`: the site's step. Turns the clap arguments into
//! [`pprl::site::EncodeOptions`], loads the schema and the secret, draws the
//! progress bar and prints the one-line summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pprl::io::records::{CsvOptions, InputFormat, ReadOptions, default_delimiter};
use pprl::schema::Schema;
use pprl::secret::Secret;
use pprl::site::{self, EncodeOptions, EncodeSummary, MaxRejects, OutputFormat};

/// The environment variable that may hold the project secret.
const SECRET_ENV: &str = "PPRL_SECRET";

/// Encode a site's records into Bloom filters (clks) for the linkage unit.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads the identifying columns that the schema names, encodes them with the project secret, and \
writes one clk per record with the record's id. The output contains no identifier value and \
nothing from which the secret can be recovered. Rows whose values the schema refuses are not \
encoded; they are listed (row, id, column, reason; never a value) in <output>.rejects.csv, and \
the run goes on up to --max-rejects. Rows are numbered from 1 for the first data row (the CSV \
header is not counted).

Exit status: 0 when the output was written (some rows may have been rejected: see the \
summary and the rejects file); 1 on any error, and then no output is written; 2 for an \
invalid command line; 130 when interrupted (Ctrl-C, kill, a closed terminal), and then no \
output or temporary file is left.

Example:
  pprl encode --schema linkage.json --secret-file project.key --site A \\
      --input patients.csv --id-column rec_id --output a.clk.parquet")]
pub struct EncodeArgs {
    /// The linkage schema (JSON) that every site uses.
    #[arg(long, value_name = "FILE")]
    schema: PathBuf,

    /// The file holding the project secret that every site shares (at least 16 bytes; one
    /// trailing newline is ignored). Without this flag the secret is taken from the
    /// environment variable PPRL_SECRET. The secret is never printed or written.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,

    /// This site's name, written into the output so the linkage unit can tell sites apart.
    #[arg(long)]
    site: String,

    /// The site's records: CSV with a header row, or Parquet.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,

    /// The input format [default: from the extension: .csv/.tsv/.txt or .parquet/.pq].
    #[arg(long, value_enum, value_name = "FORMAT")]
    input_format: Option<InputFormatArg>,

    /// CSV field separator: one character, or `tab` [default: tab for .tsv, `,` otherwise].
    #[arg(long, value_parser = super::parse_delimiter, value_name = "CHAR")]
    delimiter: Option<u8>,

    /// Keep CSV fields byte for byte, and open a quoted field only with a quote right
    /// after the delimiter (RFC 4180). By default leading and trailing whitespace is
    /// removed from every field, and a quote after the blanks that follow a delimiter
    /// opens a quoted field (files such as Febrl write `a, "b, c"`).
    #[arg(long)]
    no_trim: bool,

    /// The column holding each record's key at the site. It is written to the output in
    /// clear, so it must not be an identifier; it must be unique and non-empty.
    #[arg(long, value_name = "COLUMN")]
    id_column: String,

    /// The output file. Written to a temporary file and renamed at the end, so a failed
    /// run leaves nothing.
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,

    /// Output format: `parquet` (ids, clks, popcounts, metadata for `pprl match`, and the
    /// blocking-key hashes when the schema declares blocking keys) or `clkhash-json`
    /// (anonlink's {"clks": [...]}, in input order, without ids, metadata or blocking keys,
    /// so `pprl match --blocking keys` cannot use it)
    /// [default: clkhash-json when the output name ends in .json, else parquet].
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<FormatArg>,

    /// Worker threads (0: one per CPU core). The output is the same for any value. Each
    /// thread keeps its own memos of values and tokens: 32 MiB each up to 16 threads, then
    /// 512 MiB shared among them (at least 4 MiB each), so that memory stays bounded.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,

    /// Fail, writing no output, when more rows are rejected than this: a count (`100`) or
    /// a percentage of the rows read (`0.5%`). The rejects file is still written.
    #[arg(long, default_value = "1%", value_name = "N|P%")]
    max_rejects: MaxRejects,

    /// No progress bar and no summary; errors and warnings are still printed.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum InputFormatArg {
    Csv,
    Parquet,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Parquet,
    ClkhashJson,
}

/// The secret from `--secret-file`, else from `PPRL_SECRET`.
fn load_secret(secret_file: Option<&PathBuf>) -> anyhow::Result<Secret> {
    if let Some(path) = secret_file {
        return Secret::from_file(path).context("the project secret (--secret-file) is refused");
    }
    match std::env::var_os(SECRET_ENV) {
        Some(value) => Secret::new(value.into_encoded_bytes())
            .with_context(|| format!("the project secret ({SECRET_ENV}) is refused")),
        None => anyhow::bail!(
            "no project secret: give --secret-file FILE or set the environment variable \
             {SECRET_ENV}"
        ),
    }
}

pub fn run(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let schema = Schema::from_file(&args.schema)
        .with_context(|| format!("cannot use the schema {}", args.schema.display()))?;
    let secret = load_secret(args.secret_file.as_ref())?;
    // `pprl match` tells the formats apart by the extension, so the two should agree.
    let json_name = args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let output_format = match args.format {
        None if json_name => OutputFormat::ClkhashJson,
        None | Some(FormatArg::Parquet) => OutputFormat::Parquet,
        Some(FormatArg::ClkhashJson) => OutputFormat::ClkhashJson,
    };
    if json_name != (output_format == OutputFormat::ClkhashJson) {
        eprintln!(
            "warning: {} is written as {}, but other pprl commands read files named *.json as \
             clkhash JSON and all others as Parquet",
            args.output.display(),
            if json_name { "Parquet" } else { "clkhash JSON" }
        );
    }
    let options = EncodeOptions {
        schema: &schema,
        secret: &secret,
        site: args.site.clone(),
        input: args.input.clone(),
        read: ReadOptions {
            format: args.input_format.map(|f| match f {
                InputFormatArg::Csv => InputFormat::Csv,
                InputFormatArg::Parquet => InputFormat::Parquet,
            }),
            csv: CsvOptions {
                delimiter: args
                    .delimiter
                    .unwrap_or_else(|| default_delimiter(&args.input)),
                trim: !args.no_trim,
            },
            ..ReadOptions::default()
        },
        id_column: args.id_column.clone(),
        output: args.output.clone(),
        output_format,
        threads: args.threads,
        max_rejects: args.max_rejects,
    };

    let bar = progress_bar(args.quiet);
    let started = std::time::Instant::now();
    let result = site::encode_site(&options, &mut |p| {
        if let Some(total) = p.total {
            bar.set_length(total);
        }
        bar.set_position(p.done);
        let rate = p.rows_read as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{} rows, {:.0} rows/s", p.rows_read, rate));
    });
    bar.finish_and_clear();
    let summary = result.with_context(|| format!("cannot encode {}", args.input.display()))?;
    if summary.rows_read == 0 {
        eprintln!("warning: {} has no records", args.input.display());
    }
    if let Some(rejects) = &summary.rejects_file {
        eprintln!(
            "warning: {} rows rejected (not encoded); see {}",
            summary.rejected,
            rejects.display()
        );
    }
    if !args.quiet {
        eprintln!("{}", summary_line(&args.site, &summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("encoding {wide_bar} {percent:>3}% {msg} ETA {eta}")
            .expect("valid template"),
    );
    bar
}

fn summary_line(site: &str, s: &EncodeSummary) -> String {
    let keys = if s.blocking_keys.is_empty() {
        String::new()
    } else {
        format!(" (with blocking keys {})", s.blocking_keys.join(", "))
    };
    format!(
        "site {site}: {} rows read, {} encoded, {} rejected in {:.2} s ({:.0} rows/s) -> {}{keys}",
        s.rows_read,
        s.encoded,
        s.rejected,
        s.seconds,
        s.rows_read as f64 / s.seconds.max(1e-9),
        s.output.display()
    )
}
