//! [`McpManager`]: every enabled MCP server, started, supervised, restarted, and offered to
//! the chat service as one [`ToolProvider`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequest, CallToolRequestParams, CancelledNotificationParam, ClientRequest, ErrorCode, GetPromptRequest,
        GetPromptRequestParams, ProgressNotificationParam, ProgressToken, ReadResourceRequest,
        ReadResourceRequestParams, ServerResult,
    },
    service::{PeerRequestOptions, RunningService, ServiceError},
    transport::async_rw::AsyncRwTransport,
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::breaker::{Breaker, CircuitState, Verdict};
use super::connection::{ClientEvents, Connection, Lists, WatchedTransport, list_all};
use super::process::{self, ServerProcess};
use super::{ServerIssue, ToolError, ToolOutcome, ToolProgress, ToolProvider, convert, names};
use crate::config::{McpConnectionSettings, McpSettings, ServerConfig, ServersConfig};
use crate::domain::{Message, ToolCall, ToolSpec};

/// How long a stopping server gets at each step (after stdin closes, after SIGTERM).
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Progress notifications that arrived before their call registered, kept per server.
const EARLY_PROGRESS_LIMIT: usize = 64;

/// The chat defaults the MCP layer applies to every call.
#[derive(Debug, Clone, Copy)]
pub struct ToolDefaults {
    /// Per call, unless the server's entry sets `tool_timeout`.
    pub tool_timeout: Duration,
    pub max_tool_result_chars: usize,
}

impl ToolDefaults {
    /// The defaults `chat.service` sets for every tool call.
    pub fn from_chat(service: &crate::config::ChatServiceSettings) -> Self {
        Self {
            tool_timeout: Duration::from_secs_f64(service.tool_timeout),
            max_tool_result_chars: service.max_tool_result_chars,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Connecting,
    Connected,
    Restarting,
    /// Gave up after `max_reconnect_attempts`.
    Failed,
    /// Connected, but its circuit breaker refuses calls.
    CircuitOpen,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolView {
    /// The model-facing name.
    pub name: String,
    pub original_name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptArgumentView {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptView {
    /// `<server>__<prompt>`, what [`ToolProvider::get_prompt`] takes.
    pub name: String,
    pub original_name: String,
    pub description: Option<String>,
    pub arguments: Vec<PromptArgumentView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceView {
    pub uri: String,
    pub name: String,
    pub description: Option<String>,
    pub mime_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceTemplateView {
    pub uri_template: String,
    pub name: String,
    pub description: Option<String>,
    pub mime_type: Option<String>,
}

/// One server as `/api/servers` and `check` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSnapshot {
    pub name: String,
    pub state: ServerState,
    pub circuit: CircuitState,
    pub last_error: Option<String>,
    /// Restarts after the server had been connected.
    pub restarts: u32,
    /// Consecutive failed start attempts.
    pub failed_attempts: u32,
    /// When the next start attempt is due, while restarting.
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub pid: Option<u32>,
    pub server_info: Option<String>,
    pub tools: Vec<ToolView>,
    pub prompts: Vec<PromptView>,
    pub resources: Vec<ResourceView>,
    pub resource_templates: Vec<ResourceTemplateView>,
}

/// Tools, prompts or resources with the server offering them, for `/api/*`.
#[derive(Debug, Clone, Serialize)]
pub struct Offered<T> {
    pub server: String,
    #[serde(flatten)]
    pub item: T,
}

/// A listed resource or a resource template: the first has `uri`, the second `uri_template`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ResourceListing {
    Resource(ResourceView),
    Template(ResourceTemplateView),
}

fn offered<T>(servers: Vec<ServerSnapshot>, items: impl Fn(ServerSnapshot) -> Vec<T>) -> Vec<Offered<T>> {
    servers
        .into_iter()
        .flat_map(|server| {
            let name = server.name.clone();
            items(server).into_iter().map(move |item| Offered { server: name.clone(), item })
        })
        .collect()
}

struct Status {
    state: ServerState,
    last_error: Option<String>,
    restarts: u32,
    failed_attempts: u32,
    next_attempt_at: Option<SystemTime>,
    pid: Option<u32>,
    server_info: Option<String>,
    lists: Lists,
    generation: u64,
}

struct ProgressRoute {
    sender: mpsc::UnboundedSender<ToolProgress>,
    last: Option<f64>,
}

impl ProgressRoute {
    /// Forwards progress in order: rmcp hands each notification to its own task, so a late
    /// one can overtake; MCP progress only grows, so anything not newer is stale.
    fn forward(&mut self, params: ProgressNotificationParam) {
        if self.last.is_some_and(|last| params.progress <= last) {
            return;
        }
        self.last = Some(params.progress);
        let _ =
            self.sender.send(ToolProgress { progress: params.progress, total: params.total, message: params.message });
    }
}

#[derive(Default)]
struct ProgressRoutes {
    routes: HashMap<(u64, ProgressToken), ProgressRoute>,
    early: VecDeque<(u64, ProgressNotificationParam)>,
}

/// One configured server and everything known about it.
pub struct Server {
    pub name: String,
    config: ServerConfig,
    connection_settings: McpConnectionSettings,
    tool_timeout: Duration,
    status: Mutex<Status>,
    current: watch::Sender<Option<Arc<Connection>>>,
    breaker: Mutex<Breaker>,
    progress: Mutex<ProgressRoutes>,
    /// Woken by list_changed notifications.
    pub refresh: Notify,
    /// Processes of timed-out start attempts, still being stopped in the background so the
    /// first attempt is reported without waiting for their grace periods.
    stopping: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

/// The delay before start attempt number `failed_attempts + 1`: doubling from the initial
/// delay, capped, plus up to 20% jitter so many servers do not retry in lockstep.
fn backoff(settings: &McpConnectionSettings, failed_attempts: u32) -> Duration {
    let exponent = failed_attempts.saturating_sub(1).min(30);
    let base = (settings.initial_reconnect_delay * f64::from(1u32 << exponent)).min(settings.max_reconnect_delay);
    let jittered = base * (1.0 + rand::random_range(0.0..=0.2));
    seconds(jittered.min(settings.max_reconnect_delay.max(base)))
}

enum CallFailure {
    /// The request never reached the server: safe to send again.
    NotSent(String),
    Failed(String, Verdict),
}

impl Server {
    fn new(name: String, config: ServerConfig, settings: &McpSettings, defaults: ToolDefaults) -> Self {
        let tool_timeout = config.tool_timeout.map_or(defaults.tool_timeout, seconds);
        Self {
            name,
            config,
            connection_settings: settings.connection.clone(),
            tool_timeout,
            status: Mutex::new(Status {
                state: ServerState::Connecting,
                last_error: None,
                restarts: 0,
                failed_attempts: 0,
                next_attempt_at: None,
                pid: None,
                server_info: None,
                lists: Lists::default(),
                generation: 0,
            }),
            current: watch::Sender::new(None),
            breaker: Mutex::new(Breaker::new(
                settings.circuit_breaker.failure_threshold,
                seconds(settings.circuit_breaker.cooldown),
            )),
            progress: Mutex::new(ProgressRoutes::default()),
            refresh: Notify::new(),
            stopping: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> ServerState {
        let state = lock(&self.status).state;
        if state == ServerState::Connected && lock(&self.breaker).state() == CircuitState::Open {
            ServerState::CircuitOpen
        } else {
            state
        }
    }

    fn allowed(&self, tool: &str) -> bool {
        self.config.allowed_tools.as_ref().is_none_or(|allowed| allowed.iter().any(|name| name == tool))
            && !self.config.excluded_tools.iter().any(|name| name == tool)
    }

    pub fn route_progress(&self, generation: u64, params: ProgressNotificationParam) {
        let mut progress = lock(&self.progress);
        let key = (generation, params.progress_token.clone());
        match progress.routes.get_mut(&key) {
            Some(route) => route.forward(params),
            None => {
                if progress.early.len() >= EARLY_PROGRESS_LIMIT {
                    progress.early.pop_front();
                }
                progress.early.push_back((generation, params));
            }
        }
    }

    fn register_progress(&self, key: (u64, ProgressToken), sender: mpsc::UnboundedSender<ToolProgress>) {
        let mut progress = lock(&self.progress);
        let mut route = ProgressRoute { sender, last: None };
        let early = std::mem::take(&mut progress.early);
        for (generation, params) in early {
            if generation == key.0 && params.progress_token == key.1 {
                route.forward(params);
            } else {
                progress.early.push_back((generation, params));
            }
        }
        progress.routes.insert(key, route);
    }

    fn unregister_progress(&self, key: &(u64, ProgressToken)) {
        lock(&self.progress).routes.remove(key);
    }

    fn unavailable_reason(&self) -> String {
        let status = lock(&self.status);
        let error = status.last_error.as_deref().map(|error| format!("; last error: {error}")).unwrap_or_default();
        match status.state {
            ServerState::Failed => format!("server `{}` failed and is no longer restarted{error}", self.name),
            ServerState::Stopped => format!("server `{}` is stopped", self.name),
            _ => format!("server `{}` is not connected{error}", self.name),
        }
    }

    /// The live connection, waiting for a restart in progress until `deadline`.
    async fn connection(
        &self,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<Arc<Connection>, CallFailure> {
        let mut current = self.current.subscribe();
        loop {
            if let Some(connection) = current.borrow_and_update().clone()
                && !connection.dead.is_cancelled()
                && !connection.peer.is_transport_closed()
            {
                return Ok(connection);
            }
            if matches!(lock(&self.status).state, ServerState::Failed | ServerState::Stopped) {
                return Err(CallFailure::Failed(self.unavailable_reason(), Verdict::Neutral));
            }
            tokio::select! {
                changed = current.changed() => if changed.is_err() {
                    return Err(CallFailure::Failed(self.unavailable_reason(), Verdict::Neutral));
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(CallFailure::Failed(
                        format!("{} (waited {:.1}s for it to come back)", self.unavailable_reason(), self.tool_timeout.as_secs_f64()),
                        Verdict::Neutral,
                    ));
                }
                _ = cancel.cancelled() => {
                    return Err(CallFailure::Failed("cancelled before the call was sent".into(), Verdict::Neutral));
                }
            }
        }
    }

    /// Sends `notifications/cancelled` without making the caller wait for the write.
    fn send_cancel(connection: &Arc<Connection>, id: rmcp::model::RequestId, reason: &str) {
        let peer = connection.peer.clone();
        let param = CancelledNotificationParam::new(Some(id), Some(reason.to_owned()));
        tokio::spawn(async move {
            if let Err(error) = peer.notify_cancelled(param).await {
                tracing::debug!(%error, "could not send notifications/cancelled");
            }
        });
    }

    async fn call_once(
        &self,
        tool: &str,
        arguments: &Map<String, Value>,
        progress: &mpsc::UnboundedSender<ToolProgress>,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Result<(bool, String), CallFailure> {
        let connection = self.connection(deadline, cancel).await?;
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(
            CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments.clone()),
        ));
        let mut handle =
            connection.peer.send_request_with_option(request, PeerRequestOptions::no_options()).await.map_err(
                |error| CallFailure::NotSent(format!("server `{}` could not be reached: {error}", self.name)),
            )?;
        let key = (connection.generation, handle.progress_token.clone());
        self.register_progress(key.clone(), progress.clone());
        let answer = tokio::select! {
            biased;
            answer = &mut handle.rx => answer,
            _ = connection.dead.cancelled() => {
                self.unregister_progress(&key);
                return Err(CallFailure::Failed(format!(
                    "server `{}` stopped while `{tool}` was running: {}; it is being restarted",
                    self.name, connection.death_reason()
                ), Verdict::Failure));
            }
            _ = cancel.cancelled() => {
                self.unregister_progress(&key);
                Self::send_cancel(&connection, handle.id.clone(), "cancelled by the user");
                return Err(CallFailure::Failed(format!("`{tool}` was cancelled"), Verdict::Neutral));
            }
            _ = tokio::time::sleep_until(deadline) => {
                self.unregister_progress(&key);
                Self::send_cancel(&connection, handle.id.clone(), "timed out");
                return Err(CallFailure::Failed(format!(
                    "`{tool}` on server `{}` timed out after {:.1}s (the server's tool_timeout); it was asked to cancel",
                    self.name, self.tool_timeout.as_secs_f64()
                ), Verdict::Failure));
            }
        };
        self.unregister_progress(&key);
        match answer {
            Ok(Ok(ServerResult::CallToolResult(result))) => Ok(convert::result_text(&result)),
            Ok(Ok(_)) => Err(CallFailure::Failed(
                format!("server `{}` sent an unexpected answer to `{tool}`", self.name),
                Verdict::Failure,
            )),
            Ok(Err(ServiceError::TransportSend(error))) => {
                Err(CallFailure::NotSent(format!("server `{}` could not be sent the call: {error}", self.name)))
            }
            Ok(Err(ServiceError::McpError(error))) => {
                let verdict = if error.code == ErrorCode::INVALID_PARAMS || error.code == ErrorCode::METHOD_NOT_FOUND {
                    Verdict::Neutral
                } else {
                    Verdict::Failure
                };
                Err(CallFailure::Failed(
                    format!(
                        "server `{}` answered `{tool}` with an error: {} (code {})",
                        self.name, error.message, error.code.0
                    ),
                    verdict,
                ))
            }
            Ok(Err(error)) => Err(CallFailure::Failed(
                format!("server `{}` failed on `{tool}`: {error}", self.name),
                Verdict::Failure,
            )),
            Err(_closed) => {
                // The session ended; the supervisor learns why a moment later.
                let _ = tokio::time::timeout(Duration::from_millis(500), connection.dead.cancelled()).await;
                Err(CallFailure::Failed(
                    format!(
                        "server `{}` stopped while `{tool}` was running: {}; it is being restarted",
                        self.name,
                        connection.death_reason()
                    ),
                    Verdict::Failure,
                ))
            }
        }
    }

    /// Runs a tool call with the breaker, the timeout and the one safe retry.
    async fn call(
        &self,
        tool: &str,
        arguments: &Map<String, Value>,
        progress: &mpsc::UnboundedSender<ToolProgress>,
        cancel: &CancellationToken,
    ) -> (bool, String) {
        let trial = match lock(&self.breaker).admit(&self.name) {
            Ok(trial) => trial,
            Err(refusal) => return (false, refusal),
        };
        let deadline = tokio::time::Instant::now() + self.tool_timeout;
        let mut outcome = self.call_once(tool, arguments, progress, cancel, deadline).await;
        if let Err(CallFailure::NotSent(first)) = &outcome {
            tracing::info!(server = %self.name, tool, "retrying a call that was never sent: {first}");
            outcome = self.call_once(tool, arguments, progress, cancel, deadline).await;
        }
        let (verdict, result) = match outcome {
            Ok(answer) => (Verdict::Success, answer),
            Err(CallFailure::NotSent(message)) => (Verdict::Failure, (false, message)),
            Err(CallFailure::Failed(message, verdict)) => (verdict, (false, message)),
        };
        lock(&self.breaker).record(verdict, trial);
        result
    }

    async fn request(&self, request: ClientRequest) -> Result<ServerResult, ToolError> {
        let deadline = tokio::time::Instant::now() + self.tool_timeout;
        let connection =
            self.connection(deadline, &CancellationToken::new()).await.map_err(|failure| match failure {
                CallFailure::NotSent(message) | CallFailure::Failed(message, _) => ToolError(message),
            })?;
        let answer = tokio::time::timeout(
            self.tool_timeout,
            connection.peer.send_request_with_option(request, PeerRequestOptions::with_timeout(self.tool_timeout)),
        )
        .await
        .map_err(|_| ToolError(format!("server `{}` did not take the request", self.name)))?
        .map_err(|error| ToolError(format!("server `{}`: {error}", self.name)))?;
        tokio::select! {
            answer = answer.await_response() => {
                answer.map_err(|error| ToolError(format!("server `{}`: {error}", self.name)))
            }
            _ = connection.dead.cancelled() => Err(ToolError(format!(
                "server `{}` stopped: {}", self.name, connection.death_reason()
            ))),
        }
    }

    fn set_status(&self, update: impl FnOnce(&mut Status)) {
        update(&mut lock(&self.status));
    }

    fn snapshot(&self, tool_names: &HashMap<(String, String), String>) -> ServerSnapshot {
        let status = lock(&self.status);
        let circuit = lock(&self.breaker).state();
        let state = if status.state == ServerState::Connected && circuit == CircuitState::Open {
            ServerState::CircuitOpen
        } else {
            status.state
        };
        let tools = status
            .lists
            .tools
            .iter()
            .filter(|tool| self.allowed(&tool.name))
            .filter_map(|tool| {
                let name = tool_names.get(&(self.name.clone(), tool.name.to_string()))?;
                let spec = convert::tool_spec(name, tool);
                Some(ToolView {
                    name: spec.name,
                    original_name: tool.name.to_string(),
                    description: spec.description,
                    parameters: spec.parameters,
                })
            })
            .collect();
        let prompt_names = names::assign(
            &status.lists.prompts.iter().map(|prompt| (self.name.clone(), prompt.name.clone())).collect::<Vec<_>>(),
        );
        ServerSnapshot {
            name: self.name.clone(),
            state,
            circuit,
            last_error: status.last_error.clone(),
            restarts: status.restarts,
            failed_attempts: status.failed_attempts,
            next_attempt_at: status.next_attempt_at.map(chrono::DateTime::from),
            pid: status.pid,
            server_info: status.server_info.clone(),
            tools,
            prompts: status
                .lists
                .prompts
                .iter()
                .map(|prompt| PromptView {
                    name: prompt_names[&(self.name.clone(), prompt.name.clone())].clone(),
                    original_name: prompt.name.clone(),
                    description: prompt.description.clone(),
                    arguments: prompt
                        .arguments
                        .iter()
                        .flatten()
                        .map(|argument| PromptArgumentView {
                            name: argument.name.clone(),
                            description: argument.description.clone(),
                            required: argument.required.unwrap_or(false),
                        })
                        .collect(),
                })
                .collect(),
            resources: status
                .lists
                .resources
                .iter()
                .map(|resource| ResourceView {
                    uri: resource.uri.clone(),
                    name: resource.name.clone(),
                    description: resource.description.clone(),
                    mime_type: resource.mime_type.clone(),
                })
                .collect(),
            resource_templates: status
                .lists
                .resource_templates
                .iter()
                .map(|template| ResourceTemplateView {
                    uri_template: template.uri_template.clone(),
                    name: template.name.clone(),
                    description: template.description.clone(),
                    mime_type: template.mime_type.clone(),
                })
                .collect(),
        }
    }
}

/// A tool as the registry knows it: where it goes and how its arguments are checked.
struct RegisteredTool {
    server: usize,
    original: String,
    spec: ToolSpec,
    validator: Option<Arc<jsonschema::Validator>>,
}

#[derive(Default)]
struct Registry {
    tools: HashMap<String, RegisteredTool>,
    /// Model-facing names in a stable order (server, then the server's order).
    order: Vec<String>,
    names: HashMap<(String, String), String>,
}

/// A running session and its process, owned by the server's supervisor task.
struct Live {
    process: ServerProcess,
    service: RunningService<RoleClient, ClientEvents>,
    connection: Arc<Connection>,
    stdout_closed: CancellationToken,
}

enum Ended {
    Shutdown,
    Died(String),
}

struct Inner {
    servers: Vec<Arc<Server>>,
    registry: RwLock<Arc<Registry>>,
    defaults: ToolDefaults,
    shutdown: CancellationToken,
}

impl Inner {
    /// Recomputes model-facing names from every server's last known tools, so a server that
    /// is restarting does not rename the tools of another.
    fn rebuild_registry(&self) {
        let mut pairs = Vec::new();
        let mut entries = Vec::new();
        for (index, server) in self.servers.iter().enumerate() {
            let status = lock(&server.status);
            for tool in &status.lists.tools {
                if server.allowed(&tool.name) {
                    pairs.push((server.name.clone(), tool.name.to_string()));
                    entries.push((index, tool.clone()));
                }
            }
        }
        let names = names::assign(&pairs);
        let mut registry = Registry { names: names.clone().into_iter().collect(), ..Registry::default() };
        for (pair, (index, tool)) in pairs.iter().zip(entries) {
            let name = names[pair].clone();
            let validator = match jsonschema::validator_for(&Value::Object((*tool.input_schema).clone())) {
                Ok(validator) => Some(Arc::new(validator)),
                Err(error) => {
                    tracing::warn!(server = %pair.0, tool = %pair.1, %error, "tool input schema does not compile; arguments are passed unchecked");
                    None
                }
            };
            registry.order.push(name.clone());
            registry.tools.insert(
                name.clone(),
                RegisteredTool {
                    server: index,
                    original: pair.1.clone(),
                    spec: convert::tool_spec(&name, &tool),
                    validator,
                },
            );
        }
        *self.registry.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(registry);
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn connect(&self, server: &Arc<Server>) -> Result<Live, String> {
        let (mut process, stdout, stdin) = process::spawn(&server.name, &server.config)?;
        let last_stderr = process.last_stderr.clone();
        let generation = {
            let mut status = lock(&server.status);
            status.generation += 1;
            status.pid = process.child.id();
            status.generation
        };
        let stdout_closed = CancellationToken::new();
        let transport =
            WatchedTransport { inner: AsyncRwTransport::new_client(stdout, stdin), closed: stdout_closed.clone() };
        let events = ClientEvents { server: Arc::downgrade(server), generation };
        let timeout = seconds(server.connection_settings.connection_timeout);
        let setup = async {
            let service =
                events.serve(transport).await.map_err(|error| format!("MCP initialisation failed: {error}"))?;
            let capabilities = service.peer().peer_info().map(|info| info.capabilities.clone()).unwrap_or_default();
            let lists = list_all(service.peer(), &capabilities).await?;
            Ok::<_, String>((service, lists))
        };
        let mut timed_out = false;
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, setup) => outcome.unwrap_or_else(|_| {
                timed_out = true;
                Err(format!(
                    "no answer to initialize and the list requests within connection_timeout ({:.1}s)",
                    timeout.as_secs_f64()
                ))
            }),
            status = process.child.wait() => Err(match status {
                Ok(status) => format!("exited during start-up ({status})"),
                Err(error) => format!("could not be watched during start-up: {error}"),
            }),
            _ = self.shutdown.cancelled() => Err("shutting down".to_owned()),
        };
        let (service, lists) = match outcome {
            Ok(ready) => ready,
            Err(error) => {
                // A process that exits makes the transport fail first; its status says why.
                let error = if timed_out {
                    // Still running, perhaps ignoring stdin closing: stopping it may take the
                    // grace periods, which the report need not wait for.
                    lock(&server.stopping).push(tokio::spawn(async move {
                        process.stop(STOP_GRACE).await;
                    }));
                    error
                } else {
                    let error = match tokio::time::timeout(Duration::from_millis(300), process.child.wait()).await {
                        Ok(Ok(status)) => format!("exited during start-up ({status})"),
                        _ => error,
                    };
                    process.stop(STOP_GRACE).await;
                    error
                };
                let error = match lock(&last_stderr).clone() {
                    Some(line) => format!("{error}; its last stderr line: {line}"),
                    None => error,
                };
                return Err(error);
            }
        };
        let server_info = service
            .peer()
            .peer_info()
            .and_then(|info| info.server_info.clone())
            .map(|info| format!("{} {}", info.name, info.version));
        let connection = Arc::new(Connection::new(service.peer().clone(), generation));
        server.set_status(|status| {
            status.state = ServerState::Connected;
            status.lists = lists;
            status.server_info = server_info;
            status.failed_attempts = 0;
            status.next_attempt_at = None;
            status.last_error = None;
        });
        server.current.send_replace(Some(connection.clone()));
        self.rebuild_registry();
        Ok(Live { process, service, connection, stdout_closed })
    }

    /// Waits for the session to end, refreshing the lists on list_changed.
    async fn watch(&self, server: &Arc<Server>, live: &mut Live) -> Ended {
        let refresh_timeout = seconds(server.connection_settings.connection_timeout);
        loop {
            tokio::select! {
                status = live.process.child.wait() => {
                    return Ended::Died(match status {
                        Ok(status) => format!("the process exited ({status})"),
                        Err(error) => format!("the process could not be watched: {error}"),
                    });
                }
                _ = live.stdout_closed.cancelled() => {
                    // Usually the process is exiting: its status says more than the EOF.
                    return Ended::Died(match tokio::time::timeout(Duration::from_millis(200), live.process.child.wait()).await {
                        Ok(Ok(status)) => format!("the process exited ({status})"),
                        _ => "the server closed its stdout".to_owned(),
                    });
                }
                _ = self.shutdown.cancelled() => return Ended::Shutdown,
                _ = server.refresh.notified() => {
                    let capabilities = live.connection.peer.peer_info()
                        .map(|info| info.capabilities.clone())
                        .unwrap_or_default();
                    let listed = tokio::time::timeout(refresh_timeout, list_all(&live.connection.peer, &capabilities)).await
                        .unwrap_or_else(|_| Err("no answer within connection_timeout".to_owned()));
                    match listed {
                        Ok(lists) => {
                            server.set_status(|status| {
                                status.lists = lists;
                                status.last_error = None;
                            });
                            self.rebuild_registry();
                        }
                        Err(error) => {
                            let error = format!("refreshing the lists after list_changed failed: {error}; the previous lists are kept");
                            tracing::warn!(server = %server.name, "{error}");
                            server.set_status(|status| status.last_error = Some(error));
                        }
                    }
                }
            }
        }
    }

    async fn supervise(self: Arc<Self>, index: usize, started: oneshot::Sender<()>) {
        let server = self.servers[index].clone();
        let settings = server.connection_settings.clone();
        let mut started = Some(started);
        let mut failed_attempts = 0u32;
        loop {
            match self.connect(&server).await {
                Ok(mut live) => {
                    failed_attempts = 0;
                    tracing::info!(server = %server.name, "MCP server connected");
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                    match self.watch(&server, &mut live).await {
                        Ended::Shutdown => {
                            server.current.send_replace(None);
                            live.connection.mark_dead("the platform is shutting down");
                            let _ = live.service.close_with_timeout(STOP_GRACE).await;
                            let status = live.process.stop(STOP_GRACE).await;
                            tracing::info!(server = %server.name, ?status, "MCP server stopped");
                            break;
                        }
                        Ended::Died(reason) => {
                            tracing::warn!(server = %server.name, "MCP server stopped: {reason}; restarting");
                            live.connection.mark_dead(&reason);
                            server.current.send_replace(None);
                            server.set_status(|status| {
                                status.state = ServerState::Restarting;
                                status.restarts += 1;
                                status.last_error = Some(reason);
                                status.pid = None;
                            });
                            self.rebuild_registry();
                            let _ = live.service.close_with_timeout(STOP_GRACE).await;
                            live.process.reap_group().await;
                        }
                    }
                }
                Err(error) => {
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                    failed_attempts += 1;
                    tracing::warn!(server = %server.name, attempt = failed_attempts, "MCP server did not start: {error}");
                    server.set_status(|status| {
                        status.failed_attempts = failed_attempts;
                        status.last_error = Some(error);
                        status.pid = None;
                    });
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                }
            }
            if failed_attempts > settings.max_reconnect_attempts {
                tracing::error!(server = %server.name, "MCP server failed {failed_attempts} start attempts in a row; giving up");
                server.set_status(|status| {
                    status.state = ServerState::Failed;
                    status.next_attempt_at = None;
                });
                server.current.send_replace(None);
                Self::finish_stops(&server).await;
                return;
            }
            let delay = backoff(&settings, failed_attempts);
            server.set_status(|status| {
                status.state = ServerState::Restarting;
                status.next_attempt_at = Some(SystemTime::now() + delay);
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        server.set_status(|status| {
            status.state = ServerState::Stopped;
            status.next_attempt_at = None;
            status.pid = None;
        });
        server.current.send_replace(None);
        Self::finish_stops(&server).await;
    }

    async fn finish_stops(server: &Server) {
        let stopping = std::mem::take(&mut *lock(&server.stopping));
        for stop in stopping {
            let _ = stop.await;
        }
    }

    fn validate(tool: &RegisteredTool, arguments: &Value) -> Result<(), String> {
        let Some(validator) = &tool.validator else {
            return Ok(());
        };
        let problems: Vec<String> = validator
            .iter_errors(arguments)
            .take(5)
            .map(|error| {
                let path = error.instance_path().to_string();
                if path.is_empty() {
                    format!("{error}")
                } else {
                    format!("field `{}`: {error}", path.trim_start_matches('/'))
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid arguments for `{}`: {}", tool.spec.name, problems.join("; ")))
        }
    }

    async fn call_tool(
        &self,
        call: &ToolCall,
        progress: mpsc::UnboundedSender<ToolProgress>,
        cancel: CancellationToken,
    ) -> (bool, String) {
        let registry = self.registry();
        let Some(tool) = registry.tools.get(&call.name) else {
            return (false, format!("unknown tool `{}`: no MCP server offers a tool by that name", call.name));
        };
        let no_arguments = Value::Object(Map::new());
        let arguments = if call.arguments.is_null() { &no_arguments } else { &call.arguments };
        let Value::Object(object) = arguments else {
            return (false, format!("arguments of `{}` must be a JSON object, not {arguments}", call.name));
        };
        if let Err(problem) = Self::validate(tool, arguments) {
            return (false, problem);
        }
        let arguments = object.clone();
        self.servers[tool.server].call(&tool.original, &arguments, &progress, &cancel).await
    }
}

/// Every enabled MCP server, supervised. Cheap to share: hand out the `Arc`.
pub struct McpManager {
    inner: Arc<Inner>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl McpManager {
    /// Starts every enabled server at once and returns when each has connected or failed its
    /// first attempt (each bounded by `connection_timeout`). Failed servers keep retrying in
    /// the background on the backoff schedule.
    pub async fn start(servers: &ServersConfig, settings: &McpSettings, defaults: ToolDefaults) -> Arc<Self> {
        let servers: Vec<Arc<Server>> = servers
            .servers
            .iter()
            .filter(|(_, config)| config.enabled)
            .map(|(name, config)| Arc::new(Server::new(name.clone(), config.clone(), settings, defaults)))
            .collect();
        let inner = Arc::new(Inner {
            servers,
            registry: RwLock::new(Arc::new(Registry::default())),
            defaults,
            shutdown: CancellationToken::new(),
        });
        let mut supervisors = Vec::new();
        let mut first_attempts = Vec::new();
        for index in 0..inner.servers.len() {
            let (started, first_attempt) = oneshot::channel();
            supervisors.push(tokio::spawn(inner.clone().supervise(index, started)));
            first_attempts.push(first_attempt);
        }
        for first_attempt in first_attempts {
            let _ = first_attempt.await;
        }
        Arc::new(Self { inner, supervisors: Mutex::new(supervisors) })
    }

    /// Every enabled server: state, circuit, last error, and what it offers (`/api/servers`).
    pub fn servers_view(&self) -> Vec<ServerSnapshot> {
        let registry = self.inner.registry();
        self.inner.servers.iter().map(|server| server.snapshot(&registry.names)).collect()
    }

    pub fn server(&self, name: &str) -> Option<ServerSnapshot> {
        self.servers_view().into_iter().find(|server| server.name == name)
    }

    /// Each server's state by name, for `/readyz`.
    pub fn server_states(&self) -> BTreeMap<String, ServerState> {
        self.inner.servers.iter().map(|server| (server.name.clone(), server.state())).collect()
    }

    /// Tools of every server, offered right now or not (`/api/tools`).
    pub fn tools_view(&self) -> Vec<Offered<ToolView>> {
        offered(self.servers_view(), |server| server.tools)
    }

    /// `/api/prompts`.
    pub fn prompts_view(&self) -> Vec<Offered<PromptView>> {
        offered(self.servers_view(), |server| server.prompts)
    }

    /// Resources, then resource templates (`/api/resources`).
    pub fn resources_view(&self) -> Vec<Offered<ResourceListing>> {
        offered(self.servers_view(), |server| {
            let resources = server.resources.into_iter().map(ResourceListing::Resource);
            let templates = server.resource_templates.into_iter().map(ResourceListing::Template);
            resources.chain(templates).collect()
        })
    }

    /// Stops every server: closes its stdin, waits, SIGTERMs its process group, SIGKILLs it
    /// after a grace period. Returns when no process of any server is left.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let supervisors = std::mem::take(&mut *lock(&self.supervisors));
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
    }
}

impl Drop for McpManager {
    /// Without an explicit [`McpManager::shutdown`], the supervisors still stop their servers
    /// in the background rather than run on.
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

#[async_trait]
impl ToolProvider for McpManager {
    fn tools(&self) -> Vec<ToolSpec> {
        let registry = self.inner.registry();
        registry
            .order
            .iter()
            .filter_map(|name| registry.tools.get(name))
            .filter(|tool| {
                let server = &self.inner.servers[tool.server];
                server.state() == ServerState::Connected
            })
            .map(|tool| tool.spec.clone())
            .collect()
    }

    fn unavailable(&self) -> Vec<ServerIssue> {
        self.inner
            .servers
            .iter()
            .filter_map(|server| {
                let state = server.state();
                let reason = match state {
                    ServerState::Connected => return None,
                    ServerState::CircuitOpen => lock(&server.breaker).open_message(&server.name),
                    _ => server.unavailable_reason(),
                };
                Some(ServerIssue { server: server.name.clone(), reason })
            })
            .collect()
    }

    async fn call_tool(
        &self,
        call: &ToolCall,
        progress: mpsc::UnboundedSender<ToolProgress>,
        cancel: CancellationToken,
    ) -> ToolOutcome {
        let started = Instant::now();
        let (ok, content) = self.inner.call_tool(call, progress, cancel).await;
        ToolOutcome {
            ok,
            content: crate::text::truncate(content, self.inner.defaults.max_tool_result_chars),
            duration: started.elapsed(),
        }
    }

    async fn get_prompt(&self, name: &str, arguments: Map<String, Value>) -> Result<Vec<Message>, ToolError> {
        let (server, original) = self
            .inner
            .servers
            .iter()
            .find_map(|server| {
                let status = lock(&server.status);
                let pairs: Vec<_> =
                    status.lists.prompts.iter().map(|prompt| (server.name.clone(), prompt.name.clone())).collect();
                names::assign(&pairs)
                    .into_iter()
                    .find(|(_, model_name)| model_name == name)
                    .map(|((_, original), _)| (server.clone(), original))
            })
            .ok_or_else(|| ToolError(format!("unknown prompt `{name}`: no MCP server offers it")))?;
        let mut params = GetPromptRequestParams::new(original);
        params.arguments = Some(arguments);
        match server.request(ClientRequest::GetPromptRequest(GetPromptRequest::new(params))).await? {
            ServerResult::GetPromptResult(result) => Ok(result.messages.iter().map(convert::prompt_message).collect()),
            _ => Err(ToolError(format!("server `{}` sent an unexpected answer to prompts/get", server.name))),
        }
    }

    async fn read_resource(&self, uri: &str) -> Result<String, ToolError> {
        let offers = |server: &Arc<Server>, by_template: bool| {
            let status = lock(&server.status);
            if by_template {
                status
                    .lists
                    .resource_templates
                    .iter()
                    .any(|template| convert::template_matches(&template.uri_template, uri))
            } else {
                status.lists.resources.iter().any(|resource| resource.uri == uri)
            }
        };
        let server = self
            .inner
            .servers
            .iter()
            .find(|server| offers(server, false))
            .or_else(|| self.inner.servers.iter().find(|server| offers(server, true)))
            .ok_or_else(|| {
                ToolError(format!("no MCP server offers the resource `{uri}` (neither listed nor matching a template)"))
            })?;
        match server
            .request(ClientRequest::ReadResourceRequest(ReadResourceRequest::new(ReadResourceRequestParams::new(uri))))
            .await?
        {
            ServerResult::ReadResourceResult(result) => Ok(convert::resource_contents_text(&result.contents)),
            _ => Err(ToolError(format!("server `{}` sent an unexpected answer to resources/read", server.name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap_with_jitter() {
        let settings = McpConnectionSettings {
            max_reconnect_attempts: 5,
            connection_timeout: 1.0,
            initial_reconnect_delay: 1.0,
            max_reconnect_delay: 5.0,
        };
        for (failed_attempts, base) in [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (40, 5.0)] {
            for _ in 0..50 {
                let delay = backoff(&settings, failed_attempts).as_secs_f64();
                assert!(delay >= base, "{failed_attempts}: {delay}");
                assert!(delay <= (base * 1.2).min(5.0), "{failed_attempts}: {delay}");
            }
        }
    }
}
