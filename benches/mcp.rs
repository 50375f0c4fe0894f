//! Round trip of a `demo-server` tool call through [`McpManager`] next to a bare rmcp client
//! call to a second `demo-server` process, interleaved in one run.
//!
//! `cargo bench --bench mcp` (release). Our layer may add at most 50 µs at p50.

use std::time::{Duration, Instant};

use mcp_platform::config::{CircuitBreakerSettings, McpConnectionSettings, McpSettings, ServerConfig, ServersConfig};
use mcp_platform::domain::ToolCall;
use mcp_platform::mcp::{McpManager, ToolDefaults, ToolProvider, Unattended};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use std::sync::Arc;
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

async fn time_bare(
    bare: &rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>,
    arguments: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let result = bare.call_tool(CallToolRequestParams::new("sum").with_arguments(arguments.clone())).await?;
    let took = started.elapsed();
    assert_eq!(result.is_error, Some(false));
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = demo_server();
    let servers = ServersConfig {
        servers: [(
            "demo".to_owned(),
            ServerConfig {
                enabled: true,
                command: binary.display().to_string(),
                args: Vec::new(),
                cwd: None,
                env: Default::default(),
                allowed_tools: None,
                excluded_tools: Vec::new(),
                tool_timeout: None,
                approval: None,
                approve_tools: Vec::new(),
                auto_approve_tools: Vec::new(),
                trusted: false,
            },
        )]
        .into(),
    };
    let settings = McpSettings {
        connection: McpConnectionSettings {
            max_reconnect_attempts: 1,
            connection_timeout: 10.0,
            initial_reconnect_delay: 1.0,
            max_reconnect_delay: 1.0,
        },
        circuit_breaker: CircuitBreakerSettings { failure_threshold: 5, cooldown: 30.0 },
    };
    let defaults = ToolDefaults { tool_timeout: Duration::from_secs(30), max_tool_result_chars: 20_000 };
    let manager = McpManager::start(&servers, &settings, defaults).await;
    // The same protocol revision our layer negotiates, so only the layers differ.
    let bare_client = ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let bare = bare_client.serve(TokioChildProcess::new(tokio::process::Command::new(&binary))?).await?;

    let call = ToolCall { id: "bench".into(), name: "demo__sum".into(), arguments: json!({"a": 2, "b": 3}) };
    let arguments = json!({"a": 2, "b": 3}).as_object().cloned().unwrap_or_default();
    let mut ours = Vec::with_capacity(ROUNDS);
    let mut theirs = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer cache.
        let (ours_took, theirs_took) = if round % 2 == 0 {
            let ours_took = time_ours(&manager, &call).await;
            (ours_took, time_bare(&bare, &arguments).await?)
        } else {
            let theirs_took = time_bare(&bare, &arguments).await?;
            (time_ours(&manager, &call).await, theirs_took)
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
    println!("demo sum round trip, {ROUNDS} calls each, interleaved");
    println!("  McpManager::call_tool  p50 {:8.1} µs  p99 {:8.1} µs", micros(ours_p50), micros(ours_p99));
    println!("  bare rmcp call_tool    p50 {:8.1} µs  p99 {:8.1} µs", micros(bare_p50), micros(bare_p99));
    let added = micros(ours_p50) - micros(bare_p50);
    println!("  our layer adds {added:.1} µs at p50 (budget 50 µs)");
    manager.shutdown().await;
    bare.cancel().await?;
    if added > 50.0 {
        eprintln!("over budget: our layer adds {added:.1} µs at p50");
        std::process::exit(1);
    }
    Ok(())
}
