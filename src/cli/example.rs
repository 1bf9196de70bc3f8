use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ExampleArgs {}

pub fn run(_args: ExampleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
