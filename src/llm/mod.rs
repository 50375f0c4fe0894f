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
    pub messages: Vec<Message>,
    /// Empty: the model is called without tools (the final answer after `max_tool_hops`).
    pub tools: Vec<ToolSpec>,
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
    /// call.
    fn chat(&self, request: LlmRequest) -> LlmStream;
}
