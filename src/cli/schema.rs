use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Print the default schema.
    Init,
}

pub fn run(_cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
