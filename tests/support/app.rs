//! The whole application on loopback, built by [`App::build`] as `serve` builds it: typed
//! settings, the real JSONL store in a temp dir, the demo MCP server as a child process,
//! mock-llm over HTTP, and the axum server on a random port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use mcp_platform::app::App;
use mcp_platform::config::{
    ApprovalPolicy, AuthMode, AuthSettings, ChatServiceSettings, ChatSettings, CircuitBreakerSettings, ContextSettings,
    JwtSettings, LimitsSettings, LlmSettings, LogFormat, LoggingSettings, McpConnectionSettings, McpSettings,
    PostgresSettings, ProviderKind, ProviderSettings, Secret, ServerConfig, ServersConfig, Settings, ShutdownSettings,
    StoreBackend, StoreSettings, StreamingSettings, ToolApprovalSettings, WebSocketSettings,
};
use mcp_platform::server::RunningServer;
use mock_llm::{MockLlm, Script};
use serde_json::Value;
use tempfile::TempDir;

use super::mcp::server;
use super::process::{binary, read_events};
use super::ws::WsClient;

/// The settings of a test app: the shipped defaults, with the mock provider at `base_url`,
/// the store at `store_path`, and reconnects and retries short enough for tests.
pub fn settings(base_url: &str, store_path: PathBuf) -> Settings {
    let provider = ProviderSettings {
        kind: ProviderKind::Openai,
        base_url: base_url.to_owned(),
        api_key: Secret::default(),
        model: "mock-demo".to_owned(),
        temperature: 0.7,
        max_tokens: 4000,
        top_p: 0.9,
        vision: false,
    };
    Settings {
        llm: LlmSettings {
            active: "mock".to_owned(),
            providers: BTreeMap::from([("mock".to_owned(), provider)]),
            request_timeout: 60.0,
            max_retries: 1,
        },
        chat: ChatSettings {
            service: ChatServiceSettings {
                system_prompt: "You are a helpful assistant.".to_owned(),
                streaming: StreamingSettings { enabled: true, min_text_interval: 0.0 },
                context: ContextSettings { max_tokens: 4000, reserve_tokens: 500, preserve_recent: 5 },
                max_tool_hops: 8,
                tool_timeout: 30.0,
                max_tool_result_chars: 20000,
                tool_approval: ToolApprovalSettings { policy: ApprovalPolicy::Never, timeout: 300.0 },
            },
        },
        websocket: WebSocketSettings {
            host: "127.0.0.1".to_owned(),
            port: 0,
            max_message_bytes: 65536,
            max_in_flight_per_connection: 8,
            send_buffer_bytes: 1 << 20,
            slow_client_timeout: 10.0,
            header_timeout: 10.0,
            first_frame_timeout: 60.0,
        },
        store: StoreSettings {
            backend: StoreBackend::Jsonl,
            path: store_path,
            fsync: true,
            postgres: PostgresSettings { url: Secret::default(), pool_size: 8 },
        },
        mcp: McpSettings {
            connection: McpConnectionSettings {
                max_reconnect_attempts: 5,
                connection_timeout: 30.0,
                initial_reconnect_delay: 0.1,
                max_reconnect_delay: 30.0,
            },
            circuit_breaker: CircuitBreakerSettings { failure_threshold: 5, cooldown: 30.0 },
        },
        auth: AuthSettings {
            mode: AuthMode::None,
            allow_anonymous_remote: false,
            allowed_origins: Vec::new(),
            api_keys: Vec::new(),
            jwt: JwtSettings {
                issuer: String::new(),
                audience: String::new(),
                jwks_path: PathBuf::new(),
                hs256_secret: Secret::default(),
                user_claim: "sub".to_owned(),
                admin_claim: "roles".to_owned(),
            },
        },
        limits: LimitsSettings {
            chats_per_minute: 30,
            tokens_per_day: 0,
            connections_per_user: 16,
            connections_per_ip: 64,
            max_connections: 10000,
        },
        logging: LoggingSettings { level: "warn".to_owned(), format: LogFormat::Json },
        shutdown: ShutdownSettings { grace_seconds: 5.0 },
    }
}

/// The demo MCP server with `env` added to its environment.
pub fn demo_server(env: &[(&str, &str)]) -> ServerConfig {
    let mut demo = server(binary("demo-server").display().to_string(), &[]);
    demo.env = env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
    demo
}

/// A `servers_config.json` with just the demo server, for tests that start `mcp-platform`.
pub fn write_servers_config(dir: &std::path::Path) -> PathBuf {
    let servers = serde_json::json!({"mcpServers": {"demo": {"command": binary("demo-server").display().to_string()}}});
    let path = dir.join("servers_config.json");
    std::fs::write(&path, servers.to_string()).expect("write servers config");
    path
}

/// What a test changes; everything else is [`settings`].
pub struct Options {
    pub script: Option<Value>,
    /// Edits the typed settings before the app is built; it may capture what the test made
    /// (keys, a JWKS file).
    pub configure: Box<dyn FnOnce(&mut Settings) + Send>,
    /// The MCP servers; the demo server by default.
    pub servers: Vec<(&'static str, ServerConfig)>,
    pub store_path: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self { script: None, configure: Box::new(|_| {}), servers: vec![("demo", demo_server(&[]))], store_path: None }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub mock: MockLlm,
    pub store_path: PathBuf,
    pub dir: TempDir,
    server: RunningServer,
}

impl TestApp {
    pub async fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script =
            options.script.as_ref().map(|script| Script::from_json(&script.to_string()).expect("valid script"));
        let mock = MockLlm::start("127.0.0.1:0".parse().expect("addr"), script).await.expect("start mock-llm");
        let store_path = options.store_path.clone().unwrap_or_else(|| dir.path().join("events.jsonl"));
        let mut settings = settings(&mock.openai_base_url(), store_path.clone());
        (options.configure)(&mut settings);
        let servers = ServersConfig {
            servers: options.servers.into_iter().map(|(name, config)| (name.to_owned(), config)).collect(),
        };
        let app = App::build(settings, &servers).await.expect("the app builds");
        // Tests call tools right away: wait until every MCP server has connected or failed.
        app.mcp().settled().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = app.serve(listener).await.expect("server starts");
        Self { addr: server.addr, mock, store_path, dir, server }
    }

    pub async fn client(&self) -> WsClient {
        WsClient::connect(self.addr).await
    }

    /// Every line of the event log, parsed.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.store_path)
    }

    /// The question events of the log (approvals and elicitations: `extra.question`), in order.
    pub fn questions(&self) -> Vec<Value> {
        self.events().into_iter().filter(|event| event["extra"].get("question").is_some()).collect()
    }

    /// Bodies of the requests mock-llm received.
    pub fn model_requests(&self) -> Vec<Value> {
        self.mock.requests().into_iter().map(|request| request.body).collect()
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
