//! `pprl schema`: write the default linkage schema, or check one.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pprl::schema::{Schema, default_schema_json, default_schema_with_blocking_keys_json};

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Print the default linkage schema for health identifiers (native BLAKE3 scheme) to
    /// stdout, e.g. `pprl schema init > linkage.json`. Every site must use the same file.
    Init {
        /// Add site-side blocking keys (Soundex of names with the town or an initial, date of
        /// birth, street and postcode), for `pprl match --blocking keys`. Each site then writes
        /// keyed hashes of these keys beside its clks: the linkage unit learns which records
        /// share a key and how often each key occurs, but not the values. Avoid on small sites.
        #[arg(long)]
        blocking_keys: bool,
    },
    /// Validate a linkage schema (native or clkhash v3) and print a summary: fields, bits,
    /// filter length and fingerprint. Exits with status 1 and names the problem when the
    /// schema is invalid.
    Check {
        /// The schema file (JSON).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cmd {
        SchemaCommand::Init { blocking_keys } => {
            let json = if blocking_keys {
                default_schema_with_blocking_keys_json()
            } else {
                default_schema_json()
            };
            stdout.write_all(json.as_bytes())?;
            if !json.ends_with('\n') {
                stdout.write_all(b"\n")?;
            }
        }
        SchemaCommand::Check { file } => {
            let schema = Schema::from_file(&file)
                .with_context(|| format!("{} is not a valid linkage schema", file.display()))?;
            let summary = schema.summary();
            writeln!(stdout, "{}: valid", file.display())?;
            stdout.write_all(summary.as_bytes())?;
            if !summary.ends_with('\n') {
                stdout.write_all(b"\n")?;
            }
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
