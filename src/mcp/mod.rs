//! Everything between the chat service and the MCP servers.
//!
//! The chat service sees only [`ToolProvider`]. Below it, [`McpManager`] wires one concern
//! per submodule: `server` holds what is known of each server, which `supervisor` keeps
//! running, reaching it through a `transport` (a child process over stdio, or a remote server
//! over streamable HTTP); `session` is one MCP session over it; `registry` names what the
//! servers offer; `calls` runs one request; `elicitation` takes a server's questions to the
//! user behind the call; `views` shows it all under `/api`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ApprovalPolicy;
use crate::domain::{Elicitation, ElicitationReply, Message, ToolAttachments, ToolCall, ToolSpec};

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

impl ToolOutcome {
    /// A call that never ran (a person refused it, or its turn ended first): `content` says
    /// why, in the words the model reads.
    pub fn not_run(content: String) -> Self {
        Self {
            ok: false,
            content,
            attachments: ToolAttachments::default(),
            notices: Vec::new(),
            duration: Duration::ZERO,
        }
    }
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

/// Why a tool call waits for a person before it runs, as the approval policy found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalFacts {
    pub server: String,
    /// The tool's MCP annotations as its server declares them (`{}` when none).
    pub annotations: Value,
}

/// The person behind a tool call, whom an MCP server may ask for input mid-call.
#[async_trait]
pub trait UserInput: Send + Sync {
    /// Identifies the request the questions go to: calls with equal keys belong to one
    /// request, so a question that can only be tied to "one of these calls" still has one
    /// addressee.
    fn request_key(&self) -> &str;

    /// Asks the question and waits for the answer (or the timeout's `cancel`).
    async fn elicit(&self, question: Elicitation) -> ElicitationReply;
}

/// The user of calls no person stands behind (benchmarks, scripted checks): every question is
/// declined, which a server must handle anyway.
pub struct Unattended;

#[async_trait]
impl UserInput for Unattended {
    fn request_key(&self) -> &str {
        "unattended"
    }

    async fn elicit(&self, _question: Elicitation) -> ElicitationReply {
        ElicitationReply::declined()
    }
}

/// The tools, prompts and resources of every MCP server, as the chat service uses them.
#[async_trait]
pub trait ToolProvider: Send + Sync {
    /// Tools offered to the model now: connected servers only, filters applied.
    fn tools(&self) -> Vec<Arc<ToolSpec>>;

    /// Enabled servers whose tools are missing from [`ToolProvider::tools`], and why.
    fn unavailable(&self) -> Vec<McpServerIssue>;

    /// Whether `call` must wait for a person under `policy` (the global one; a server's entry
    /// may override it), and what to show them. `None`: it runs at once.
    fn needs_approval(&self, call: &ToolCall, policy: ApprovalPolicy) -> Option<ApprovalFacts>;

    /// Runs one tool call. Never fails as a whole: every failure is an outcome with
    /// `ok: false` that the model can read. Progress notifications go to `progress`;
    /// cancelling `cancel` sends `notifications/cancelled` to the server; the server's
    /// questions (elicitation) go to `user`.
    async fn call_tool(
        &self,
        call: &ToolCall,
        progress: mpsc::UnboundedSender<ToolProgress>,
        cancel: CancellationToken,
        user: Arc<dyn UserInput>,
    ) -> ToolOutcome;

    /// Renders an MCP prompt (`<server>__<prompt>`) into messages.
    async fn get_prompt(&self, name: &str, arguments: Map<String, Value>) -> Result<Vec<Message>, ToolError>;

    /// Reads a resource by URI from whichever server offers it, as text.
    async fn read_resource(&self, uri: &str) -> Result<String, ToolError>;
}
mod breaker;
mod calls;
mod convert;
mod elicitation;
mod manager;
mod names;
mod progress;
mod registry;
mod server;
mod session;
mod supervisor;
mod transport;
mod views;

pub use breaker::CircuitState;
pub use manager::{McpManager, ToolDefaults};
pub use names::MAX_NAME_LEN;
pub use server::McpServerState;
pub use views::{
    McpServerSnapshot, Offered, PromptArgumentView, PromptView, ResourceListing, ResourceTemplateView, ResourceView,
    ToolView,
};
