//! `pprl release`: a site joins its payload to its entity map and writes
//! Parquet keyed by `entity_id`, without identifying columns.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use pprl::io::records::default_delimiter;
use pprl::release::{PayloadFormat, ReleaseError, ReleaseOptions};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Parquet,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// This site's entity map (`maps/<SITE>.map.parquet` from `pprl split`).
    #[arg(long, value_name = "FILE")]
    map: PathBuf,
    /// The payload: CSV with a header row, or Parquet.
    #[arg(long, value_name = "FILE")]
    payload: PathBuf,
    /// Payload format [default: from the extension: .parquet/.pq or .csv/.tsv/.txt].
    #[arg(long, value_enum, value_name = "FORMAT")]
    payload_format: Option<FormatArg>,
    /// CSV field delimiter: one character, or `tab` [default: tab for .tsv, `,` otherwise].
    #[arg(long, value_parser = super::parse_delimiter, value_name = "CHAR")]
    delimiter: Option<u8>,
    /// Payload column holding the site's record id (the ids that were encoded).
    #[arg(long, value_name = "NAME")]
    id_column: String,
    /// The linkage schema: every column it encodes is identifying and is refused.
    #[arg(long, value_name = "FILE")]
    schema: PathBuf,
    /// The released Parquet file.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// This site's name; the map must belong to it.
    #[arg(long, value_name = "SITE")]
    site: Option<String>,
    /// Release this identifying column anyway (repeatable). Only if the
    /// data-sharing agreement allows analysts to see it.
    #[arg(long, value_name = "NAME")]
    include_identifying_column: Vec<String>,
    /// Leave this payload column out of the released file (repeatable).
    #[arg(long, value_name = "NAME")]
    drop_column: Vec<String>,
    /// Keep the site's record id column (dropped by default: it links back to the site's systems).
    #[arg(long)]
    keep_record_id: bool,
    /// Fail unless every payload row has an entity id and every map row a payload row.
    #[arg(long)]
    require_complete: bool,
}

pub fn run(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let schema = pprl::schema::Schema::from_file(&args.schema)
        .with_context(|| format!("cannot use the linkage schema {}", args.schema.display()))?;
    let payload_format = match args.payload_format {
        Some(FormatArg::Csv) => PayloadFormat::Csv,
        Some(FormatArg::Parquet) => PayloadFormat::Parquet,
        None => match PayloadFormat::from_path(&args.payload) {
            Some(format) => format,
            None => bail!(
                "cannot tell the format of {} from its extension: give --payload-format csv|parquet",
                args.payload.display()
            ),
        },
    };
    let mut options = ReleaseOptions::new(&args.map, &args.payload, &args.id_column, &args.output);
    options.payload_format = payload_format;
    options.csv_delimiter = args
        .delimiter
        .unwrap_or_else(|| default_delimiter(&args.payload));
    options.identifying_columns = schema
        .identifying_columns()
        .into_iter()
        .map(str::to_owned)
        .collect();
    options.include_identifying = args.include_identifying_column;
    options.drop_columns = args.drop_column;
    options.keep_record_id = args.keep_record_id;
    options.site = args.site;
    options.require_complete = args.require_complete;

    let summary = match pprl::release::release(&options) {
        Ok(summary) => summary,
        Err(ReleaseError::IdentifyingColumns { path, columns }) => bail!(
            "refusing to release {}: it has columns that the linkage schema {} encodes as \
             identifying: {}. Remove them from the payload or leave them out with --drop-column NAME; \
             release one only if the data-sharing agreement allows it, with \
             --include-identifying-column NAME",
            path.display(),
            args.schema.display(),
            columns.join(", ")
        ),
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("cannot release {}", args.payload.display())));
        }
    };

    println!("site {}: released {}", summary.site, args.output.display());
    println!(
        "  payload rows:                    {:>10}",
        summary.payload_rows
    );
    println!(
        "  map rows:                        {:>10}",
        summary.map_rows
    );
    println!(
        "  rows released:                   {:>10}",
        summary.released_rows
    );
    println!(
        "  payload rows without entity id:  {:>10}  (not released)",
        summary.payload_without_entity
    );
    println!(
        "  map rows without payload row:    {:>10}",
        summary.map_without_payload
    );
    println!("  columns: {}", summary.columns.join(", "));
    if !summary.dropped_columns.is_empty() {
        println!("  left out: {}", summary.dropped_columns.join(", "));
    }
    if !summary.identifying_released.is_empty() {
        println!(
            "  WARNING: identifying columns released by explicit choice: {}",
            summary.identifying_released.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
