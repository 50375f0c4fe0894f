//! Spawns the whole application on loopback for a test: the real config loaders, the real
//! JSONL store in a temp dir, the demo MCP server as a child process, mock-llm over HTTP, and
//! the axum server on a random port.
#![allow(dead_code)] // each test binary uses its own part of the helpers

pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcp_platform::chat::ChatDeps;
use mcp_platform::mcp::McpManager;
use mcp_platform::server::RunningServer;
use mcp_platform::store::EventStore;
use mcp_platform::store::jsonl::JsonlStore;
use mock_llm::{MockLlm, Script};
use serde_json::{Value, json};
use tempfile::TempDir;

pub use ws::*;

/// Knobs a test may turn; everything else is the shipped `config.yaml`.
#[derive(Clone)]
pub struct Options {
    pub script: Option<Value>,
    pub max_tool_hops: u32,
    pub max_message_bytes: usize,
    pub max_in_flight: usize,
    pub grace_seconds: f64,
    pub demo_server: bool,
    /// Environment of the demo server.
    pub demo_env: Value,
    /// More `mcpServers` entries beside the demo server.
    pub extra_servers: Value,
    pub store_path: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            script: None,
            max_tool_hops: 8,
            max_message_bytes: 65536,
            max_in_flight: 8,
            grace_seconds: 5.0,
            demo_server: true,
            demo_env: json!({}),
            extra_servers: json!({}),
            store_path: None,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub mock: MockLlm,
    pub store_path: PathBuf,
    pub dir: TempDir,
    server: Option<RunningServer>,
    mcp: Arc<McpManager>,
}

impl TestApp {
    pub async fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script =
            options.script.as_ref().map(|script| Script::from_json(&script.to_string()).expect("valid script"));
        let mock = MockLlm::start("127.0.0.1:0".parse().expect("addr"), script).await.expect("start mock-llm");
        let store_path = options.store_path.clone().unwrap_or_else(|| dir.path().join("events.jsonl"));
        let config_path = write_config(dir.path(), &mock.openai_base_url(), &store_path, &options);
        let mut servers = json!({"mcpServers": options.extra_servers});
        if options.demo_server {
            servers["mcpServers"]["demo"] = demo_server_entry(options.demo_env.clone());
        }
        let servers_path = dir.path().join("servers_config.json");
        std::fs::write(&servers_path, servers.to_string()).expect("write servers config");

        let settings = mcp_platform::config::load_settings(Some(&config_path)).expect("test config loads");
        let servers =
            mcp_platform::config::load_servers_config(Some(&servers_path)).expect("test servers config loads");
        let (store, _) = JsonlStore::open(&store_path, settings.store.fsync).expect("open store");
        let llm = mcp_platform::llm::from_settings(&settings.llm).expect("provider");
        let mcp = McpManager::start(
            &servers,
            &settings.mcp,
            mcp_platform::mcp::ToolDefaults::from_chat(&settings.chat.service),
        )
        .await;
        let store: Arc<dyn EventStore> = Arc::new(store);
        let deps = ChatDeps { llm, tools: mcp.clone(), store };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = RunningServer::start(settings, deps, mcp.clone(), listener).await.expect("server starts");
        Self { addr: server.addr, mock, store_path, dir, server: Some(server), mcp }
    }

    pub async fn client(&self) -> WsClient {
        WsClient::connect(self.addr).await
    }

    /// Every line of the event log, parsed.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.store_path)
    }

    /// Bodies of the requests mock-llm received.
    pub fn model_requests(&self) -> Vec<Value> {
        self.mock.requests().into_iter().map(|request| request.body).collect()
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.mcp.shutdown().await;
    }
}

pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).expect("every log line is JSON")).collect()
}

/// The workspace's binaries sit next to the test executable's folder (`target/debug`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// The shipped `config.yaml` with the test's values: the mock provider active at `base_url`.
pub fn write_config(dir: &Path, base_url: &str, store_path: &Path, options: &Options) -> PathBuf {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")).expect("config.yaml");
    let replacements = [
        ("  active: \"groq\"", "  active: \"mock\"".to_owned()),
        ("      base_url: \"http://127.0.0.1:8089/v1\"", format!("      base_url: \"{base_url}\"")),
        ("    max_tool_hops: 8", format!("    max_tool_hops: {}", options.max_tool_hops)),
        ("  max_message_bytes: 65536", format!("  max_message_bytes: {}", options.max_message_bytes)),
        ("  max_in_flight_per_connection: 8", format!("  max_in_flight_per_connection: {}", options.max_in_flight)),
        ("  path: \"events.jsonl\"", format!("  path: {:?}", store_path.display().to_string())),
        ("  grace_seconds: 5", format!("  grace_seconds: {}", options.grace_seconds)),
        ("  max_retries: 3", "  max_retries: 1".to_owned()),
        ("    initial_reconnect_delay: 1.0", "    initial_reconnect_delay: 0.1".to_owned()),
        ("  level: \"info\"", "  level: \"warn\"".to_owned()),
    ];
    let mut config = shipped;
    for (from, to) in replacements {
        assert!(config.contains(from), "config.yaml no longer contains {from:?}; update the test helper");
        config = config.replacen(from, &to, 1);
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

pub fn demo_server_entry(env: Value) -> Value {
    json!({"command": binary("demo-server").display().to_string(), "args": [], "env": env})
}

/// A `servers_config.json` with just the demo server.
pub fn write_servers_config(dir: &Path) -> PathBuf {
    let servers = json!({"mcpServers": {"demo": demo_server_entry(json!({}))}});
    let path = dir.join("servers_config.json");
    std::fs::write(&path, servers.to_string()).expect("write servers config");
    path
}
