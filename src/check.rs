//! `mcp-platform check`: builds the application exactly as `serve` would (both config files,
//! the store, the LLM provider, every enabled MCP server), reports what each MCP server
//! offers, and stops, so a broken setup shows up before `serve`.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::app::{App, ConfigArgs};
use crate::mcp::{McpServerSnapshot, McpServerState};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    files: ConfigArgs,
    /// Print the servers as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (settings, servers) = args.files.load()?;
    let app = App::build(settings, &servers).await?;
    app.mcp().settled().await;
    let snapshots = app.mcp().servers_view();
    app.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshots)?);
    } else {
        print!("{}", render(&snapshots));
    }
    let healthy = snapshots.iter().all(|server| server.state == McpServerState::Connected);
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn state_label(state: McpServerState) -> &'static str {
    match state {
        McpServerState::Connecting => "connecting",
        McpServerState::Connected => "connected",
        McpServerState::Restarting => "restarting",
        McpServerState::Failed => "failed",
        McpServerState::CircuitOpen => "circuit open",
        McpServerState::Stopped => "stopped",
    }
}

/// A summary table, then each server's offer in detail.
fn render(servers: &[McpServerSnapshot]) -> String {
    let mut out = String::new();
    if servers.is_empty() {
        out.push_str("no enabled MCP servers\n");
        return out;
    }
    let width = servers.iter().map(|server| server.name.len()).max().unwrap_or(0).max("SERVER".len());
    let _ = writeln!(
        out,
        "{:width$}  {:12}  {:>5}  {:>7}  {:>9}  ERROR",
        "SERVER", "STATE", "TOOLS", "PROMPTS", "RESOURCES"
    );
    for server in servers {
        let resources = server.resources.len() + server.resource_templates.len();
        let _ = writeln!(
            out,
            "{:width$}  {:12}  {:>5}  {:>7}  {:>9}  {}",
            server.name,
            state_label(server.state),
            server.tools.len(),
            server.prompts.len(),
            resources,
            server.last_error.as_deref().unwrap_or("-"),
        );
    }
    for server in servers {
        let _ = writeln!(out, "\n{} ({})", server.name, state_label(server.state));
        if let Some(url) = &server.url {
            let _ = writeln!(out, "  url       {url}");
        }
        for (header, shown) in &server.headers {
            let _ = writeln!(out, "  header    {header}: {shown}");
        }
        if let Some(revision) = &server.protocol_version {
            let _ = writeln!(out, "  revision  {revision}");
        }
        for tool in &server.tools {
            let _ = writeln!(out, "  tool      {}  {}", tool.name, tool.description);
        }
        for prompt in &server.prompts {
            let _ = writeln!(out, "  prompt    {}  {}", prompt.name, prompt.description.as_deref().unwrap_or(""));
        }
        for resource in &server.resources {
            let _ = writeln!(out, "  resource  {}  {}", resource.uri, resource.name);
        }
        for template in &server.resource_templates {
            let _ = writeln!(out, "  template  {}  {}", template.uri_template, template.name);
        }
    }
    out
}
