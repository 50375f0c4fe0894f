use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

pub async fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
