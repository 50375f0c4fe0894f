//! The `mcp-platform` command line (SPEC §7). Each subcommand's flags live with the module
//! that implements it; this module only dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mcp-platform", version, about = "WebSocket chat server driving an LLM tool loop against MCP servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(crate::app::ServeArgs),
    /// Validate both config files, start every enabled MCP server and list what each offers.
    Check(crate::check::CheckArgs),
    /// Print transcripts and token totals of an events file, or verify its hash chain.
    Replay(crate::replay::ReplayArgs),
    /// A terminal client of the WebSocket protocol.
    Chat(crate::client::ChatArgs),
    /// A scripted, OpenAI- and Anthropic-compatible stand-in model for tests and the offline demo.
    MockLlm(crate::mock_llm::MockLlmArgs),
    /// Load-test a release server over WebSockets (starts its own mock-llm and server).
    Bench(crate::bench::BenchArgs),
    /// Print a new random API key and the key_sha256 line that configures it.
    Key,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mcp-platform: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => crate::app::serve(args).await,
            Command::Check(args) => crate::check::run(args).await,
            Command::Replay(args) => crate::replay::run(args).await,
            Command::Chat(args) => crate::client::run(args).await,
            Command::MockLlm(args) => crate::mock_llm::run(args).await,
            Command::Bench(args) => crate::bench::run(args).await,
            Command::Key => crate::auth::print_new_key(),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mcp-platform: {error:#}");
            ExitCode::FAILURE
        }
    }
}
