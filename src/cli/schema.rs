//! `pprl schema`: write the default linkage schema, or check one.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pprl::schema::{Schema, default_schema_json};

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Print the default linkage schema for health identifiers (native BLAKE3 scheme) to
    /// stdout, e.g. `pprl schema init > linkage.json`. Every site must use the same file.
    Init,
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
        SchemaCommand::Init => {
            let json = default_schema_json();
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
