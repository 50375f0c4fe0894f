use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct MockLlmArgs {}

pub async fn run(_args: MockLlmArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
