//! [`McpManager`]: every enabled MCP server, each kept running by its supervisor, offered to
//! the chat service as one [`ToolProvider`].
//!
//! Only wiring: a server's transport and supervisor are made here, the registry is told when
//! lists change, and the [`ToolProvider`] calls go through the registry to `calls`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::model::{
    ClientRequest, GetPromptRequest, GetPromptRequestParams, ReadResourceRequest, ReadResourceRequestParams,
    ServerResult,
};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use super::server::{McpServer, McpServerState, lock};
use super::supervisor::Supervisor;
use super::{
    ApprovalFacts, McpServerIssue, ToolError, ToolOutcome, ToolProgress, ToolProvider, UserInput, calls, convert,
    transport,
};
use crate::config::{ApprovalPolicy, McpSettings, ServersConfig};
use crate::domain::{Message, ToolCall, ToolSpec};

/// The chat defaults the MCP layer applies to every call.
#[derive(Debug, Clone, Copy)]
pub struct ToolDefaults {
    /// Per call, unless the server's entry sets `tool_timeout`.
    pub tool_timeout: Duration,
}

impl ToolDefaults {
    /// The defaults `chat.service` sets for every tool call.
    pub fn from_chat(service: &crate::config::ChatServiceSettings) -> Self {
        Self { tool_timeout: Duration::from_secs_f64(service.tool_timeout) }
    }
}

/// Every enabled MCP server, supervised. Cheap to share: hand out the `Arc`.
pub struct McpManager {
    pub(super) registry: Arc<Registry>,
    shutdown: CancellationToken,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
    /// Servers whose first start attempt has not yet connected or failed.
    starting: watch::Sender<usize>,
}

impl McpManager {
    /// Starts every enabled server at once and returns when each has connected or failed its
    /// first attempt (each bounded by `connection_timeout`). Failed servers keep retrying in
    /// the background on the backoff schedule.
    pub async fn start(servers: &ServersConfig, settings: &McpSettings, defaults: ToolDefaults) -> Arc<Self> {
        let manager = Self::launch(servers, settings, defaults);
        manager.settled().await;
        manager
    }

    /// Starts every enabled server at once without waiting for any: a server that hangs in
    /// `initialize` must not hold up the process that serves (and is asked to stop meanwhile).
    pub fn launch(servers: &ServersConfig, settings: &McpSettings, defaults: ToolDefaults) -> Arc<Self> {
        let enabled: Vec<_> = servers.servers.iter().filter(|(_, config)| config.enabled).collect();
        let registry = Arc::new(Registry::new(
            enabled
                .iter()
                .map(|(name, config)| {
                    Arc::new(McpServer::new((*name).clone(), (*config).clone(), settings, defaults.tool_timeout))
                })
                .collect(),
        ));
        let shutdown = CancellationToken::new();
        let starting = watch::Sender::new(enabled.len());
        let mut supervisors = Vec::new();
        for (server, (name, config)) in registry.servers().iter().zip(enabled) {
            let lists_changed = {
                let registry = registry.clone();
                Arc::new(move || registry.rebuild())
            };
            let supervisor =
                Supervisor::new(server.clone(), transport::for_server(name, config), shutdown.clone(), lists_changed);
            let (started, first_attempt) = oneshot::channel();
            supervisors.push(tokio::spawn(supervisor.run(started)));
            let starting = starting.clone();
            tokio::spawn(async move {
                // Fires on the first attempt's outcome, or is dropped when the supervisor ends.
                let _ = first_attempt.await;
                starting.send_modify(|count| *count -= 1);
            });
        }
        Arc::new(Self { registry, shutdown, supervisors: Mutex::new(supervisors), starting })
    }

    /// Waits until every server's first start attempt has connected or failed.
    pub async fn settled(&self) {
        let _ = self.starting.subscribe().wait_for(|count| *count == 0).await;
    }

    /// Servers whose first start attempt is still under way (for `/readyz`).
    pub fn still_starting(&self) -> usize {
        *self.starting.borrow()
    }

    /// Stops every server: closes its session, then stops what carried it (a child process:
    /// SIGTERM to its process group, SIGKILL after a grace period). Returns when nothing of
    /// any server is left.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
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
        self.shutdown.cancel();
    }
}

#[async_trait]
impl ToolProvider for McpManager {
    fn tools(&self) -> Vec<Arc<ToolSpec>> {
        self.registry.offered_tools()
    }

    fn unavailable(&self) -> Vec<McpServerIssue> {
        self.registry
            .servers()
            .iter()
            .filter_map(|server| {
                let reason = match server.state() {
                    McpServerState::Connected => return None,
                    McpServerState::CircuitOpen => lock(&server.breaker).open_message(&server.name),
                    _ => server.unavailable_reason(),
                };
                Some(McpServerIssue { server: server.name.clone(), reason })
            })
            .collect()
    }

    fn needs_approval(&self, call: &ToolCall, policy: ApprovalPolicy) -> Option<ApprovalFacts> {
        self.registry.needs_approval(&call.name, policy)
    }

    async fn call_tool(
        &self,
        call: &ToolCall,
        progress: mpsc::UnboundedSender<ToolProgress>,
        cancel: CancellationToken,
        user: Arc<dyn UserInput>,
    ) -> ToolOutcome {
        let started = Instant::now();
        let context = calls::CallContext { progress: &progress, cancel: &cancel, user: &user };
        let answer = match self.registry.route(call) {
            Ok(routed) => calls::call_tool(routed.server, &routed.tool, &routed.arguments, &context).await,
            Err(refusal) => convert::ToolAnswer::failed(refusal),
        };
        ToolOutcome {
            ok: answer.ok,
            content: answer.text,
            attachments: answer.attachments,
            notices: answer.notices,
            duration: started.elapsed(),
        }
    }

    async fn get_prompt(&self, name: &str, arguments: Map<String, Value>) -> Result<Vec<Message>, ToolError> {
        let (server, original) = self.registry.prompt(name)?;
        let mut params = GetPromptRequestParams::new(original);
        params.arguments = Some(arguments);
        match calls::request(server, ClientRequest::GetPromptRequest(GetPromptRequest::new(params))).await? {
            ServerResult::GetPromptResult(result) => Ok(result.messages.iter().map(convert::prompt_message).collect()),
            _ => Err(ToolError(format!("server `{}` sent an unexpected answer to prompts/get", server.name))),
        }
    }

    async fn read_resource(&self, uri: &str) -> Result<String, ToolError> {
        let server = self.registry.resource_server(uri)?;
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(ReadResourceRequestParams::new(uri)));
        match calls::request(server, request).await? {
            ServerResult::ReadResourceResult(result) => Ok(convert::resource_contents_text(&result.contents)),
            _ => Err(ToolError(format!("server `{}` sent an unexpected answer to resources/read", server.name))),
        }
    }
}
