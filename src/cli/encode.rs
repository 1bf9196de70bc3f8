use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {}

pub fn run(_args: EncodeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
