use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {}

pub fn run(_args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
