//! Everything between the chat service and the MCP servers.
//!
//! The chat service sees only [`ToolProvider`]. Below it, [`McpManager`] wires one concern
//! per submodule: `supervisor` keeps each server running, reaching it through a `transport`
//! (a child process over stdio, or a remote server over streamable HTTP); `session` is one
//! MCP session over it; `registry` names what the servers offer; `calls` runs one request;
//! `views` shows it all under `/api`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{Message, ToolAttachments, ToolCall, ToolSpec};

/// A progress notification of a running tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolProgress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// The outcome of one tool call, as the model will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// False when the call failed, timed out, was refused, or the tool returned `isError`.
    pub ok: bool,
    /// The whole output as text; the chat service cuts what the model and the client see.
    pub content: String,
    /// Images, structured content and resource links.
    pub attachments: ToolAttachments,
    /// What the tool returned that reaches no one (audio, binary data), for the client.
    pub notices: Vec<String>,
    pub duration: Duration,
}

/// An enabled MCP server that cannot serve right now.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerIssue {
    pub server: String,
    pub reason: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// The tools, prompts and resources of every MCP server, as the chat service uses them.
#[async_trait]
pub trait ToolProvider: Send + Sync {
    /// Tools offered to the model now: connected servers only, filters applied.
    fn tools(&self) -> Vec<ToolSpec>;

    /// Enabled servers whose tools are missing from [`ToolProvider::tools`], and why.
    fn unavailable(&self) -> Vec<McpServerIssue>;

    /// Runs one tool call. Never fails as a whole: every failure is an outcome with
    /// `ok: false` that the model can read. Progress notifications go to `progress`;
    /// cancelling `cancel` sends `notifications/cancelled` to the server.
    async fn call_tool(
        &self,
        call: &ToolCall,
        progress: mpsc::UnboundedSender<ToolProgress>,
        cancel: CancellationToken,
    ) -> ToolOutcome;

    /// Renders an MCP prompt (`<server>__<prompt>`) into messages.
    async fn get_prompt(&self, name: &str, arguments: Map<String, Value>) -> Result<Vec<Message>, ToolError>;

    /// Reads a resource by URI from whichever server offers it, as text.
    async fn read_resource(&self, uri: &str) -> Result<String, ToolError>;
}
mod breaker;
mod calls;
mod convert;
mod manager;
mod names;
mod progress;
mod registry;
mod session;
mod supervisor;
mod transport;
mod views;

pub use breaker::CircuitState;
pub use manager::{McpManager, ToolDefaults};
pub use names::MAX_NAME_LEN;
pub use supervisor::McpServerState;
pub use views::{
    McpServerSnapshot, Offered, PromptArgumentView, PromptView, ResourceListing, ResourceTemplateView, ResourceView,
    ToolView,
};
