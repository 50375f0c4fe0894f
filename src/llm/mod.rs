//! The model side of the tool loop: one interface over OpenAI-compatible and Anthropic APIs.
//!
//! The chat service sees only [`LlmProvider`]; the wire formats live in the submodules.

use std::pin::Pin;

use futures::Stream;

use crate::domain::{FinishReason, Message, ToolCall, ToolSpec, Usage};

/// What the chat service asks of the model for one hop.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// Overrides the provider's configured model when set (`payload.model`).
    pub model: Option<String>,
    /// Shared: most of a context is the conversation's history, whose messages its events hold.
    pub messages: Vec<Arc<Message>>,
    /// Empty: the model is called without tools (the final answer after `max_tool_hops`).
    pub tools: Vec<Arc<ToolSpec>>,
    pub streaming: bool,
}

/// One event of a model answer. Text arrives as deltas; tool calls arrive whole, assembled.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Text(String),
    ToolCall(ToolCall),
    Usage(Usage),
    Finish(FinishReason),
}

/// Why a model call failed, after the configured retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The provider answered with an error or broke off; maps to 502.
    #[error("LLM provider error: {0}")]
    Provider(String),
    /// No answer within `llm.request_timeout`; maps to 504.
    #[error("LLM provider timed out after {0:.1}s")]
    Timeout(f64),
}

impl LlmError {
    /// The protocol error code (SPEC §2.3) this failure is reported with.
    pub fn code(&self) -> u16 {
        match self {
            LlmError::Provider(_) => 502,
            LlmError::Timeout(_) => 504,
        }
    }
}

pub type LlmStream = Pin<Box<dyn Stream<Item = Result<LlmEvent, LlmError>> + Send>>;

/// A configured model endpoint.
pub trait LlmProvider: Send + Sync {
    /// The model used when a request names none.
    fn default_model(&self) -> &str;

    /// Starts one model call. Retries happen inside the stream, and only while it has yielded
    /// nothing, so text the client has seen is never repeated. Dropping the stream cancels the
    /// call. The request is only borrowed: the provider serialises it at once, and the turn
    /// keeps the context to extend it for the next hop.
    fn chat(&self, request: &LlmRequest) -> LlmStream;

    /// Opens a connection to the provider before the first call needs one (the TCP and TLS
    /// handshakes, the provider's own work on a first request), so that a fresh server's first
    /// turn is not its slowest. Never fails: a provider out of reach now is reported by the
    /// first call. A provider that holds no connection has nothing to open.
    fn connect_ahead(&self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

pub mod anthropic;
pub mod openai;
pub mod sse;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{LlmSettings, ProviderKind};

pub use transport::RetryPolicy;

/// Builds the provider named by `llm.active`, so the server holds one ready client.
///
/// Fails when `llm.active` names no provider, `base_url` is not an http(s) URL, or a value is
/// outside what the provider's API accepts; the message names the key and the fix.
pub fn from_settings(settings: &LlmSettings) -> anyhow::Result<Arc<dyn LlmProvider>> {
    let name = settings.active.as_str();
    let provider = settings.providers.get(name).with_context(|| {
        let known: Vec<&str> = settings.providers.keys().map(String::as_str).collect();
        format!(
            "llm.active is {name:?} but llm.providers has no such key; set llm.active to one of: {}",
            known.join(", ")
        )
    })?;
    let timeout =
        Duration::try_from_secs_f64(settings.request_timeout).ok().filter(|timeout| !timeout.is_zero()).with_context(
            || format!("llm.request_timeout is {} but must be a positive number of seconds", settings.request_timeout),
        )?;
    let policy = RetryPolicy { max_retries: settings.max_retries, request_timeout: timeout };
    Ok(match provider.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAiProvider::new(name, provider, policy)?),
        ProviderKind::Anthropic => Arc::new(anthropic::AnthropicProvider::new(name, provider, policy)?),
    })
}

/// Turns the arguments text a model produced into the [`ToolCall::arguments`] value.
///
/// Empty text means a call without arguments (`{}`). Text that is not JSON is kept verbatim as
/// a JSON string instead of failing the whole answer: a string is never a valid arguments
/// object, so the tool layer rejects the call and the chat loop reports that to the model as
/// the tool's error result, quoting what it sent, and the model can correct itself.
pub fn parse_tool_arguments(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

/// The arguments text to send back to a model for a call it made earlier: the verbatim text
/// when it was not JSON (see [`parse_tool_arguments`]), so the model sees its own mistake.
fn tool_arguments_text(arguments: &serde_json::Value) -> String {
    match arguments {
        serde_json::Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// A tool call id for providers that stream calls without one; unique so that tool results
/// can still be matched to their call across the hops of a conversation.
fn generated_call_id() -> String {
    format!("call_{}", uuid::Uuid::now_v7().simple())
}
