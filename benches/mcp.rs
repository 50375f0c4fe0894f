//! Round trip of a `demo-server` tool call through [`McpManager`] next to a bare rmcp client
//! call, interleaved in one run: over stdio (a second `demo-server` process), then over
//! streamable HTTP (two sessions with one `demo-server --http`).
//!
//! `cargo bench --bench mcp` (release). Our layer may add at most 50 µs at p50.

use std::time::{Duration, Instant};

use mcp_platform::config::{CircuitBreakerSettings, McpConnectionSettings, McpSettings, ServerConfig, ServersConfig};
use mcp_platform::domain::ToolCall;
use mcp_platform::mcp::{McpManager, ToolDefaults, ToolProvider, Unattended};
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WARMUP: usize = 200;
const ROUNDS: usize = 3000;

fn demo_server() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "--release", "-p", "demo-server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building demo-server failed");
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/demo-server")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

async fn time_ours(manager: &McpManager, call: &ToolCall) -> Duration {
    let (progress, _) = mpsc::unbounded_channel();
    let started = Instant::now();
    let outcome = manager.call_tool(call, progress, CancellationToken::new(), Arc::new(Unattended)).await;
    let took = started.elapsed();
    assert!(outcome.ok && outcome.content == "5", "{}", outcome.content);
    took
}

type Bare = rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>;

async fn time_bare(bare: &Bare, arguments: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let result = bare.call_tool(CallToolRequestParams::new("sum").with_arguments(arguments.clone())).await?;
    let took = started.elapsed();
    assert_eq!(result.is_error, Some(false));
    Ok(took)
}

/// `servers_config.json` with the one server `demo`, as its entry in that file would read
/// (`{"command": ...}` or `{"url": ...}`).
fn entry(server: serde_json::Value) -> ServersConfig {
    let server: ServerConfig = serde_json::from_value(server).expect("a valid server entry");
    ServersConfig { servers: [("demo".to_owned(), server)].into() }
}

async fn start_ours(servers: &ServersConfig) -> std::sync::Arc<McpManager> {
    let settings = McpSettings {
        connection: McpConnectionSettings {
            max_reconnect_attempts: 1,
            connection_timeout: 10.0,
            initial_reconnect_delay: 1.0,
            max_reconnect_delay: 1.0,
        },
        circuit_breaker: CircuitBreakerSettings { failure_threshold: 5, cooldown: 30.0 },
    };
    let defaults = ToolDefaults { tool_timeout: Duration::from_secs(30) };
    McpManager::start(servers, &settings, defaults).await
}

/// The lifecycle our layer uses, so only the layers differ.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::NO_INITIALIZE],
        legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
    }
}

/// Runs both, interleaved, and returns what our layer adds at p50 in µs.
async fn compare(transport: &str, manager: &McpManager, bare: &Bare) -> anyhow::Result<f64> {
    let call = ToolCall { id: "bench".into(), name: "demo__sum".into(), arguments: json!({"a": 2, "b": 3}) };
    let arguments = json!({"a": 2, "b": 3}).as_object().cloned().unwrap_or_default();
    let mut ours = Vec::with_capacity(ROUNDS);
    let mut theirs = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer cache.
        let (ours_took, theirs_took) = if round % 2 == 0 {
            let ours_took = time_ours(manager, &call).await;
            (ours_took, time_bare(bare, &arguments).await?)
        } else {
            let theirs_took = time_bare(bare, &arguments).await?;
            (time_ours(manager, &call).await, theirs_took)
        };
        if round >= WARMUP {
            ours.push(ours_took);
            theirs.push(theirs_took);
        }
    }
    ours.sort();
    theirs.sort();
    let (ours_p50, ours_p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (bare_p50, bare_p99) = (percentile(&theirs, 0.5), percentile(&theirs, 0.99));
    let revision = bare.peer().peer_info().map(|info| info.protocol_version.to_string()).unwrap_or_default();
    println!("demo sum round trip over {transport} ({revision}), {ROUNDS} calls each, interleaved");
    println!("  McpManager::call_tool  p50 {:8.1} µs  p99 {:8.1} µs", micros(ours_p50), micros(ours_p99));
    println!("  bare rmcp call_tool    p50 {:8.1} µs  p99 {:8.1} µs", micros(bare_p50), micros(bare_p99));
    let added = micros(ours_p50) - micros(bare_p50);
    println!("  our layer adds {added:.1} µs at p50 (budget 50 µs)");
    Ok(added)
}

/// `demo-server --http 127.0.0.1:0` and the URL it prints.
async fn start_http_demo(binary: &std::path::Path) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(binary)
        .args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let line = BufReader::new(stdout).lines().next_line().await?.unwrap_or_default();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .map(|word| word.trim_end_matches(')').to_owned());
    Ok((child, url.ok_or_else(|| anyhow::anyhow!("demo-server printed no URL: {line}"))?))
}

const STARTS: usize = 15;

/// Start-up of a stdio server (spawn, handshake, tools/list) with the `initialize` handshake
/// alone and with our discovery probe first, interleaved; prints the medians.
async fn compare_startup(label: &str, command: impl Fn() -> tokio::process::Command) -> anyhow::Result<()> {
    let legacy_only = ClientLifecycleMode::Initialize;
    let mut times = [Vec::with_capacity(STARTS), Vec::with_capacity(STARTS)];
    let mut revision = String::new();
    for _ in 0..STARTS {
        for (index, lifecycle) in [legacy_only.clone(), lifecycle()].into_iter().enumerate() {
            let started = Instant::now();
            let client = ClientConfig::default()
                .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
                .serve_with_lifecycle(TokioChildProcess::new(command())?, lifecycle)
                .await?;
            client.peer().list_all_tools().await?;
            times[index].push(started.elapsed());
            if index == 1 {
                revision = client.peer().peer_info().map(|info| info.protocol_version.to_string()).unwrap_or_default();
            }
            client.cancel().await?;
        }
    }
    for list in &mut times {
        list.sort();
    }
    let (initialize, probed) = (percentile(&times[0], 0.5), percentile(&times[1], 0.5));
    println!("start-up of {label} (spawn, handshake, tools/list), median of {STARTS}");
    println!("  initialize only         {:8.1} ms", initialize.as_secs_f64() * 1e3);
    println!("  discovery, then initialize if refused ({revision})  {:8.1} ms", probed.as_secs_f64() * 1e3);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = demo_server();
    let _ = rustls::crypto::ring::default_provider().install_default();

    let manager = start_ours(&entry(json!({"command": binary.display().to_string()}))).await;
    let bare = ClientConfig::default()
        .serve_with_lifecycle(TokioChildProcess::new(tokio::process::Command::new(&binary))?, lifecycle())
        .await?;
    let stdio_added = compare("stdio", &manager, &bare).await?;
    manager.shutdown().await;
    bare.cancel().await?;

    let (_http_server, url) = start_http_demo(&binary).await?;
    let manager = start_ours(&entry(json!({"url": url}))).await;
    let bare = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
        .serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url.as_str()), lifecycle())
        .await?;
    let http_added = compare("streamable HTTP", &manager, &bare).await?;
    manager.shutdown().await;
    bare.cancel().await?;

    compare_startup("demo-server (speaks 2026-07-28)", || tokio::process::Command::new(&binary)).await?;
    let npx = std::process::Command::new("npx").arg("--version").output().is_ok_and(|output| output.status.success());
    if npx {
        compare_startup("server-everything (2025-11-25 and older)", || {
            let mut command = tokio::process::Command::new("npx");
            command.args(["-y", "@modelcontextprotocol/server-everything"]);
            command
        })
        .await?;
    }

    if stdio_added > 50.0 || http_added > 50.0 {
        eprintln!("over budget: our layer adds {stdio_added:.1} µs (stdio), {http_added:.1} µs (HTTP) at p50");
        std::process::exit(1);
    }
    Ok(())
}
