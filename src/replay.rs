use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {}

pub async fn run(_args: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
