//! Typed settings: `config.yaml` (SPEC §4) and `servers_config.json` (SPEC §5).
//!
//! Loading and validation live here so that every other module receives settings that are
//! already known to be complete and in range: [`load_settings`] and [`load_servers_config`]
//! check each file against a declarative description of its layout (`schema`) and report
//! every problem at once in a [`ConfigError`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod load;
mod rules;
mod schema;

pub use load::{ConfigError, load_servers_config, load_settings};

/// Everything `config.yaml` holds, after `MCP__SECTION__KEY` overrides and `env:` secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub llm: LlmSettings,
    pub chat: ChatSettings,
    pub websocket: WebSocketSettings,
    pub store: StoreSettings,
    pub mcp: McpSettings,
    pub auth: AuthSettings,
    pub limits: LimitsSettings,
    pub logging: LoggingSettings,
    pub shutdown: ShutdownSettings,
}

impl Settings {
    /// The provider `llm.active` names, the only one the server talks to.
    ///
    /// # Panics
    /// If `llm.active` is not a key of `llm.providers`, which [`load_settings`] rules out.
    pub fn active_provider(&self) -> &ProviderSettings {
        &self.llm.providers[&self.llm.active]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    /// A key of `providers`.
    pub active: String,
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Seconds per LLM call.
    pub request_timeout: f64,
    pub max_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat completions API (Groq, OpenAI, OpenRouter, Ollama, vLLM, ...).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Secret,
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u32,
    pub top_p: f64,
    /// Whether the model reads images: only then do images that tools return reach it.
    #[serde(default)]
    pub vision: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    pub service: ChatServiceSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatServiceSettings {
    pub system_prompt: String,
    pub streaming: StreamingSettings,
    pub context: ContextSettings,
    pub max_tool_hops: u32,
    /// Seconds an MCP tool call may go without an answer or progress, unless the server's
    /// entry sets its own.
    pub tool_timeout: f64,
    /// The most of a tool's output the model reads (head and tail); the log keeps it whole.
    pub max_tool_result_chars: usize,
    pub tool_approval: ToolApprovalSettings,
}

/// When a person must allow a tool call before it runs (SPEC §2.6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolApprovalSettings {
    /// For every server whose entry sets no `approval` of its own.
    pub policy: ApprovalPolicy,
    /// Seconds to wait for a decision (and for an answer to an MCP elicitation); then the
    /// call is denied (the elicitation cancelled).
    pub timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalPolicy {
    /// Calls run without asking.
    Never,
    /// Every call is asked.
    Always,
    /// Asked unless the tool is marked `readOnlyHint`; only a `trusted` server's marks count.
    Annotations,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingSettings {
    pub enabled: bool,
    /// Seconds between two `text` chunks of an answer at the least: deltas the model sends
    /// sooner wait and go out together. 0 (the default) sends every delta as it comes.
    #[serde(default)]
    pub min_text_interval: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSettings {
    pub max_tokens: usize,
    pub reserve_tokens: usize,
    pub preserve_recent: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    pub host: String,
    pub port: u16,
    pub max_message_bytes: usize,
    pub max_in_flight_per_connection: usize,
    /// Bytes of messages queued for one socket's client, at most: what a client that does not
    /// read can make the server hold. Producers (and the socket's reader) wait while it is full.
    pub send_buffer_bytes: usize,
    /// Seconds the send buffer may stay full before the client is disconnected (1008).
    pub slow_client_timeout: f64,
    /// Seconds a new connection gets to send its request headers.
    pub header_timeout: f64,
    /// Seconds an upgraded socket gets to send its first frame.
    pub first_frame_timeout: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    /// The events file of the `jsonl` backend.
    pub path: PathBuf,
    /// An event is acknowledged only once it is on disk (`jsonl`; PostgreSQL commits durably).
    pub fsync: bool,
    pub postgres: PostgresSettings,
}

/// Where the events live (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// `events.jsonl`: processes on one host.
    Jsonl,
    /// A PostgreSQL database: processes on several hosts.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:pass@host:5432/db`; empty only when the backend is not `postgres` and
    /// its `env:` variable is unset.
    pub url: Secret,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSettings {
    pub connection: McpConnectionSettings,
    pub circuit_breaker: CircuitBreakerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConnectionSettings {
    pub max_reconnect_attempts: u32,
    /// Seconds.
    pub connection_timeout: f64,
    /// Seconds.
    pub initial_reconnect_delay: f64,
    /// Seconds.
    pub max_reconnect_delay: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSettings {
    /// Consecutive failed calls that open the circuit.
    pub failure_threshold: u32,
    /// Seconds the circuit stays open before one trial call is let through.
    pub cooldown: f64,
}

/// Who may connect and as whom (SPEC §8). [`load_settings`] guarantees the mode's keys are
/// there: at least one API key in `api_keys` mode, exactly one of `jwt.jwks_path` and
/// `jwt.hs256_secret` in `jwt` mode, and a loopback `websocket.host` in `none` mode unless
/// `allow_anonymous_remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// Whether mode `none` may listen on a non-loopback host (a proxy in front authenticates).
    pub allow_anonymous_remote: bool,
    /// Browser origins allowed on `/ws/chat` besides the server's own, as `Origin` sends them.
    pub allowed_origins: Vec<String>,
    pub api_keys: Vec<ApiKeyEntry>,
    pub jwt: JwtSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Everyone is `anonymous`.
    None,
    ApiKeys,
    Jwt,
}

/// One API key: the SHA-256 of the key, never the key itself, names a user and a role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub user: String,
    pub role: Role,
    /// 64 hexadecimal digits (either case); empty only when the mode is not `api_keys` and its
    /// `env:` variable is unset.
    pub key_sha256: Secret,
}

/// What a user may do (SPEC §8); not to be confused with a message's [`crate::domain::Role`].
/// It lives with the settings because the config names it; `auth` re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    /// May also use the admin endpoints and `/metrics`, and read any conversation.
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The required `iss`; empty: not checked.
    pub issuer: String,
    /// The required `aud` (one of the token's); empty: not checked.
    pub audience: String,
    /// A JWKS file of public keys; empty when `hs256_secret` is used instead.
    pub jwks_path: PathBuf,
    /// At least 32 bytes; empty when `jwks_path` is used instead.
    pub hs256_secret: Secret,
    /// The claim that names the user (a string).
    pub user_claim: String,
    /// The claim that makes an admin when it is, or is a list containing, `"admin"`; empty: no
    /// token makes an admin.
    pub admin_claim: String,
}

/// SPEC §8 limits; 0 means no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Per user (token bucket).
    pub chats_per_minute: u32,
    /// Model tokens per user per UTC day, across every process sharing the store.
    pub tokens_per_day: u64,
    pub connections_per_user: u32,
    pub connections_per_ip: u32,
    /// Per process.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub grace_seconds: f64,
}

/// `servers_config.json`: the MCP servers to run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServersConfig {
    /// By server name, in name order so start-up and listings are deterministic.
    #[serde(rename = "mcpServers")]
    pub servers: BTreeMap<String, ServerConfig>,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "enabled_unless_said_otherwise")]
    pub enabled: bool,
    /// Optional: `command` or `url` already says which; validation keeps them consistent.
    #[serde(default, rename = "type")]
    pub transport_type: Option<ServerTransport>,
    /// A local server: the program started as a child process (stdio). Exactly one of
    /// `command` and `url` is set.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Absolute: a relative `cwd` is resolved against the folder of `servers_config.json`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Added over the inherited environment, `${VAR}` already substituted.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A remote server: its MCP endpoint (streamable HTTP), `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// Sent with every request to a remote server, `${VAR}` already substituted. Values
    /// usually carry tokens: never logged, shown as `***`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `None`: every tool the server offers.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    pub excluded_tools: Vec<String>,
    /// Seconds a call may go without news; `None` falls back to `chat.service.tool_timeout`.
    /// Each progress notification starts it again, up to `max_tool_timeout` in total.
    #[serde(default)]
    pub tool_timeout: Option<f64>,
    /// Seconds a call may run in total however much progress it reports; `None`: ten
    /// times the tool timeout.
    #[serde(default)]
    pub max_tool_timeout: Option<f64>,
    /// Overrides `chat.service.tool_approval.policy` for this server's tools.
    #[serde(default)]
    pub approval: Option<ApprovalPolicy>,
    /// Tools that are always asked, whatever the policy.
    #[serde(default)]
    pub approve_tools: Vec<String>,
    /// Tools that are never asked, whatever the policy.
    #[serde(default)]
    pub auto_approve_tools: Vec<String>,
    /// Whether the server's tool annotations (readOnlyHint, destructiveHint) are believed.
    #[serde(default)]
    pub trusted: bool,
}

/// How a server is reached: `type` in `servers_config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerTransport {
    /// A child process speaking MCP over stdin/stdout.
    Stdio,
    /// MCP streamable HTTP.
    Http,
}

impl ServerConfig {
    /// How the server is reached: as `type` says, else a `url` makes it remote.
    pub fn transport(&self) -> ServerTransport {
        self.transport_type.unwrap_or(if self.url.is_some() { ServerTransport::Http } else { ServerTransport::Stdio })
    }
}

fn enabled_unless_said_otherwise() -> bool {
    true
}

/// Shows `env` and `headers` names only: their values often carry tokens
/// (`"TOKEN": "${DEMO_TOKEN}"`, `"Authorization": "Bearer ${REMOTE_MCP_TOKEN}"`).
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("enabled", &self.enabled)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("allowed_tools", &self.allowed_tools)
            .field("excluded_tools", &self.excluded_tools)
            .field("tool_timeout", &self.tool_timeout)
            .field("max_tool_timeout", &self.max_tool_timeout)
            .field("approval", &self.approval)
            .field("approve_tools", &self.approve_tools)
            .field("auto_approve_tools", &self.auto_approve_tools)
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// A secret (an API key, a key's hash, an HMAC secret): never printed by `Debug`, so never in
/// logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}
