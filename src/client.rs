use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ChatArgs {}

pub async fn run(_args: ChatArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
