//! `pprl split`: the linkage unit cuts `entities.parquet` into one entity map
//! per site, so that each site receives only its own rows.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// The entities file written by `pprl match`.
    #[arg(long, value_name = "FILE")]
    entities: PathBuf,
    /// Directory for the maps (created if needed): one `<SITE>.map.parquet` per site.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

pub fn run(args: SplitArgs) -> anyhow::Result<ExitCode> {
    let summary = pprl::release::split(&args.entities, &args.out_dir)
        .with_context(|| format!("cannot split {}", args.entities.display()))?;
    println!("{:<20} {:>10} {:>10}  map", "site", "records", "entities");
    for map in &summary.maps {
        println!(
            "{:<20} {:>10} {:>10}  {}",
            map.site,
            map.records,
            map.entities,
            map.path.display()
        );
    }
    println!("send each site only its own map file");
    Ok(ExitCode::SUCCESS)
}
