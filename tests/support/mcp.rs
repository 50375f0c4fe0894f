//! MCP layer tests: server entries and settings built in code, a started manager, calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_platform::config::{CircuitBreakerSettings, McpConnectionSettings, McpSettings, ServerConfig, ServersConfig};
use mcp_platform::domain::ToolCall;
use mcp_platform::mcp::{McpManager, ToolDefaults, ToolOutcome, ToolProgress, ToolProvider, Unattended, UserInput};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process::{ChildProcess, binary};

pub fn server(command: impl Into<String>, args: &[&str]) -> ServerConfig {
    ServerConfig {
        enabled: true,
        transport_type: None,
        command: Some(command.into()),
        args: args.iter().map(|arg| arg.to_string()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        url: None,
        headers: BTreeMap::new(),
        allowed_tools: None,
        excluded_tools: Vec::new(),
        tool_timeout: None,
        max_tool_timeout: None,
        approval: None,
        approve_tools: Vec::new(),
        auto_approve_tools: Vec::new(),
        trusted: false,
    }
}

/// A remote server at `url` (streamable HTTP), sending `headers` with every request.
pub fn remote(url: &str, headers: &[(&str, &str)]) -> ServerConfig {
    ServerConfig {
        command: None,
        args: Vec::new(),
        url: Some(url.to_owned()),
        headers: headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect(),
        ..server("", &[])
    }
}

/// `demo-server --http ADDRESS`, with `env` added.
pub fn demo_http(address: &str, env: &[(&str, &str)]) -> ChildProcess {
    let mut command = std::process::Command::new(binary("demo-server"));
    command.args(["--http", address]).envs(env.iter().copied());
    ChildProcess::start(command)
}

/// The MCP endpoint of a `demo-server --http` at `addr`.
pub fn endpoint(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/mcp")
}

pub fn demo() -> ServerConfig {
    server(binary("demo-server").display().to_string(), &[])
}

pub fn faulty(args: &[&str]) -> ServerConfig {
    server(binary("faulty-server").display().to_string(), args)
}

pub fn servers(entries: Vec<(&str, ServerConfig)>) -> ServersConfig {
    ServersConfig { servers: entries.into_iter().map(|(name, config)| (name.to_owned(), config)).collect() }
}

/// Fast reconnects so supervision tests run in seconds.
pub fn settings() -> McpSettings {
    McpSettings {
        connection: McpConnectionSettings {
            max_reconnect_attempts: 5,
            connection_timeout: 10.0,
            initial_reconnect_delay: 0.2,
            max_reconnect_delay: 1.0,
        },
        circuit_breaker: CircuitBreakerSettings { failure_threshold: 5, cooldown: 30.0 },
    }
}

pub fn defaults() -> ToolDefaults {
    ToolDefaults { tool_timeout: Duration::from_secs(20) }
}

pub async fn start(servers: ServersConfig) -> std::sync::Arc<McpManager> {
    McpManager::start(&servers, &settings(), defaults()).await
}

pub async fn call(manager: &McpManager, name: &str, arguments: Value) -> ToolOutcome {
    call_for(manager, name, arguments, Arc::new(Unattended)).await.0
}

/// Calls a tool on behalf of `user` (whom its server may ask), with the progress it reported.
pub async fn call_for(
    manager: &McpManager,
    name: &str,
    arguments: Value,
    user: Arc<dyn UserInput>,
) -> (ToolOutcome, Vec<ToolProgress>) {
    let (progress, mut updates) = mpsc::unbounded_channel::<ToolProgress>();
    let outcome = manager.call_tool(&tool_call(name, arguments), progress, CancellationToken::new(), user).await;
    let mut reported = Vec::new();
    while let Ok(update) = updates.try_recv() {
        reported.push(update);
    }
    (outcome, reported)
}

pub fn tool_call(name: &str, arguments: Value) -> ToolCall {
    ToolCall { id: format!("call-{name}"), name: name.to_owned(), arguments }
}

/// Polls `condition` until it holds; panics with `what` after `within`.
pub async fn wait_for(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A live process, not a zombie waiting to be reaped.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z")
        }
        Err(_) => false,
    }
}

pub fn tool_names(manager: &McpManager) -> Vec<String> {
    manager.tools().into_iter().map(|tool| tool.name.clone()).collect()
}
