//! The `mcp-platform` command line (SPEC §7). Each subcommand's flags live with the module
//! or crate that implements it; this module only dispatches. It belongs to the binary, not the
//! library: only the command line reaches the test and demo tools (`mock_llm`, `mcp_bench`), so
//! the product library `mcp_platform` stays free of them.

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
    Serve(mcp_platform::app::ServeArgs),
    /// Build the application as `serve` would, list what each MCP server offers, and stop.
    Check(mcp_platform::check::CheckArgs),
    /// Print transcripts and token totals of an events file, or verify the hash chain of a file or a postgres:// database.
    Replay(mcp_platform::replay::ReplayArgs),
    /// Write the store's events as events.jsonl lines on stdout (a JSONL file or PostgreSQL).
    Export(mcp_platform::export::ExportArgs),
    /// Apply the pending schema migrations of a PostgreSQL store.
    Migrate(mcp_platform::migrate::MigrateArgs),
    /// A terminal client of the WebSocket protocol.
    Chat(mcp_platform::client::ChatArgs),
    /// A scripted, OpenAI- and Anthropic-compatible stand-in model for tests and the offline demo.
    MockLlm(mock_llm::MockLlmArgs),
    /// Load-test a release server over WebSockets (starts its own mock-llm and server).
    Bench(mcp_bench::BenchArgs),
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
            Command::Serve(args) => mcp_platform::app::serve(args).await,
            Command::Check(args) => mcp_platform::check::run(args).await,
            Command::Replay(args) => mcp_platform::replay::run(args).await,
            Command::Export(args) => mcp_platform::export::run(args).await,
            Command::Migrate(args) => mcp_platform::migrate::run(args).await,
            Command::Chat(args) => mcp_platform::client::run(args).await,
            Command::MockLlm(args) => mock_llm::run(args).await,
            Command::Bench(args) => mcp_bench::run(args).await,
            Command::Key => mcp_platform::auth::print_new_key(),
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
