//! Anthropic's Messages API (`kind: anthropic`).
//!
//! The system prompt goes into the top-level `system`; tool calls and results are `tool_use` and
//! `tool_result` content blocks, and consecutive tool results are merged into one user message,
//! as the API requires alternating roles. Only `temperature` is sent, not `top_p`: current
//! Claude models reject requests that set both.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{Flow, StreamDecoder, WireError};
use super::transport::{self, Endpoint, Wire};
use super::{LlmEvent, LlmProvider, LlmRequest, LlmStream, RetryPolicy, generated_call_id, parse_tool_arguments};
use crate::config::ProviderSettings;
use crate::domain::{FinishReason, Message, Role, ToolCall, ToolSpec, Usage};

/// The API version this client speaks; Anthropic keeps old versions working.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A configured Anthropic endpoint.
pub struct AnthropicProvider {
    endpoint: Arc<Endpoint>,
    settings: ProviderSettings,
}

impl AnthropicProvider {
    /// `name` is the provider's key in `llm.providers`, used in error messages.
    pub fn new(name: &str, settings: &ProviderSettings, policy: RetryPolicy) -> anyhow::Result<Self> {
        if !(0.0..=1.0).contains(&settings.temperature) {
            anyhow::bail!(
                "llm.providers.{name}.temperature is {} but Anthropic accepts 0.0 to 1.0",
                settings.temperature
            );
        }
        let url = transport::endpoint_url(name, &settings.base_url, "/v1/messages")?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(ANTHROPIC_VERSION));
        headers
            .insert(HeaderName::from_static("x-api-key"), transport::secret_header(name, settings.api_key.expose())?);
        Ok(Self { endpoint: Arc::new(Endpoint::new(name, url, headers, policy)?), settings: settings.clone() })
    }
}

impl LlmProvider for AnthropicProvider {
    fn default_model(&self) -> &str {
        &self.settings.model
    }

    fn chat(&self, request: &LlmRequest) -> LlmStream {
        let body = Bytes::from(request_body(request, &self.settings).to_string());
        let wire = Wire { stream_decoder: AnthropicStreamDecoder::default, decode_complete };
        transport::call(Arc::clone(&self.endpoint), body, request.streaming, wire)
    }

    fn connect_ahead(&self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(Arc::clone(&self.endpoint).connect_ahead())
    }
}

/// The Messages API request for `request`, with the model parameters of `settings`.
pub fn request_body(request: &LlmRequest, settings: &ProviderSettings) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|message| message.role == Role::System && !message.content.is_empty())
        .map(|message| message.content.as_str())
        .collect();
    let mut body = json!({
        "model": request.model.as_deref().unwrap_or(&settings.model),
        "max_tokens": settings.max_tokens,
        "messages": messages_json(&request.messages, settings.vision),
        "stream": request.streaming,
        "temperature": settings.temperature,
    });
    if !system.is_empty() {
        body["system"] = Value::String(system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(|tool| tool_json(tool)).collect();
    }
    body
}

/// The conversation as alternating user/assistant messages of content blocks. Images of a
/// tool result go inside its `tool_result` block, and only to a model that reads them.
fn messages_json(messages: &[Arc<Message>], vision: bool) -> Vec<Value> {
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", vec![text_block(&message.content)]),
            Role::Tool => {
                let content = if vision && !message.images.is_empty() {
                    let images = message.images.iter().map(|image| {
                        json!({"type": "image", "source": {"type": "base64", "media_type": image.mime_type, "data": image.data}})
                    });
                    Value::Array(std::iter::once(text_block(&message.content)).chain(images).collect())
                } else {
                    Value::String(message.content.clone())
                };
                (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
                        "content": content,
                    })],
                )
            }
            Role::Assistant => {
                let text = (!message.content.is_empty()).then(|| text_block(&message.content));
                let calls = message.tool_calls.iter().map(|call| {
                    // The API wants an object; arguments the model garbled were already
                    // reported to it as the tool's error.
                    let input = if call.arguments.is_object() { call.arguments.clone() } else { json!({}) };
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
                });
                ("assistant", text.into_iter().chain(calls).collect())
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut blocks)| {
            let only_text = blocks.len() == 1 && blocks[0]["type"] == "text";
            let content = if only_text { blocks.swap_remove(0)["text"].take() } else { Value::Array(blocks) };
            json!({"role": role, "content": content})
        })
        .collect()
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn tool_json(tool: &ToolSpec) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.parameters,
    })
}

fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// Usage figures as they arrive: input at `message_start`, output (cumulative) later.
#[derive(Default)]
struct UsageSoFar {
    prompt: Option<u64>,
    completion: Option<u64>,
}

impl UsageSoFar {
    fn update(&mut self, usage: &WireUsage) {
        // Cached prompt tokens are prompt tokens too, only billed differently.
        let cached = usage.cache_creation_input_tokens.unwrap_or(0) + usage.cache_read_input_tokens.unwrap_or(0);
        if let Some(input) = usage.input_tokens {
            self.prompt = Some(input + cached);
        }
        if usage.output_tokens.is_some() {
            self.completion = usage.output_tokens;
        }
    }

    fn figures(&self) -> Option<Usage> {
        if self.prompt.is_none() && self.completion.is_none() {
            return None;
        }
        let prompt_tokens = self.prompt.unwrap_or(0);
        let completion_tokens = self.completion.unwrap_or(0);
        Some(Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens })
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: ApiError,
    },
    /// `ping` and event types added to the API later.
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
struct StartedMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking and other blocks the chat service does not show.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// A tool-use block being assembled.
struct OpenToolUse {
    index: usize,
    id: String,
    name: String,
    /// The `input` of the block start, used when no JSON deltas follow.
    input: Value,
    json: String,
}

/// Accumulates a streamed Messages API answer: text deltas pass through, each tool call is
/// emitted when its block stops, usage and the finish reason at `message_stop`.
#[derive(Default)]
pub struct AnthropicStreamDecoder {
    tool_uses: Vec<OpenToolUse>,
    usage: UsageSoFar,
    finish: Option<FinishReason>,
    stopped: bool,
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn event(&mut self, _event: &str, data: &str, out: &mut Vec<LlmEvent>) -> Result<Flow, WireError> {
        // Empty events carry nothing; some proxies send them to keep the connection open.
        if data.trim().is_empty() {
            return Ok(Flow::More);
        }
        let event: StreamEvent = serde_json::from_str(data)
            .map_err(|error| WireError::fatal(format!("unreadable event in the answer stream ({error}): {data}")))?;
        match event {
            StreamEvent::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.usage.update(&usage);
                }
            }
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                ContentBlock::Text { text } if !text.is_empty() => out.push(LlmEvent::Text(text)),
                ContentBlock::ToolUse { id, name, input } => {
                    self.tool_uses.push(OpenToolUse { index, id, name, input, json: String::new() })
                }
                ContentBlock::Text { .. } | ContentBlock::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => out.push(LlmEvent::Text(text)),
                BlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(tool_use) = self.tool_uses.iter_mut().find(|t| t.index == index) {
                        tool_use.json.push_str(&partial_json);
                    }
                }
                BlockDelta::TextDelta { .. } | BlockDelta::Other => {}
            },
            StreamEvent::ContentBlockStop { index } => {
                if let Some(position) = self.tool_uses.iter().position(|t| t.index == index) {
                    let tool_use = self.tool_uses.remove(position);
                    out.push(LlmEvent::ToolCall(finished_call(tool_use)));
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.finish = Some(finish_reason(&reason));
                }
                if let Some(usage) = usage {
                    self.usage.update(&usage);
                }
            }
            StreamEvent::MessageStop => {
                self.stopped = true;
                return Ok(Flow::Done);
            }
            StreamEvent::Error { error } => {
                let kind = error.kind.unwrap_or_default();
                let message = error.message.unwrap_or_else(|| "no message".to_owned());
                return Err(WireError {
                    message: format!("{message} ({kind})"),
                    retryable: matches!(kind.as_str(), "overloaded_error" | "api_error"),
                });
            }
            StreamEvent::Ignored => {}
        }
        Ok(Flow::More)
    }

    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), WireError> {
        if !self.stopped {
            return Err(WireError {
                message: "the answer stream ended before message_stop: the answer is incomplete".to_owned(),
                retryable: true,
            });
        }
        out.extend(self.usage.figures().map(LlmEvent::Usage));
        out.push(LlmEvent::Finish(self.finish.unwrap_or(FinishReason::Stop)));
        Ok(())
    }
}

fn finished_call(tool_use: OpenToolUse) -> ToolCall {
    let arguments = if tool_use.json.trim().is_empty() && tool_use.input.is_object() {
        tool_use.input
    } else {
        parse_tool_arguments(&tool_use.json)
    };
    ToolCall {
        id: if tool_use.id.is_empty() { generated_call_id() } else { tool_use.id },
        name: tool_use.name,
        arguments,
    }
}

#[derive(Deserialize)]
struct CompleteMessage {
    #[serde(default)]
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

/// Reads a non-streamed Messages API answer into the events a stream of it would give.
fn decode_complete(body: &[u8]) -> Result<Vec<LlmEvent>, WireError> {
    let message: CompleteMessage = serde_json::from_slice(body).map_err(|error| {
        WireError::fatal(format!("unreadable answer ({error}): {}", transport::provider_message(body)))
    })?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message.content {
        match block {
            ContentBlock::Text { text: part } => text.push_str(&part),
            ContentBlock::ToolUse { id, name, input } => {
                calls.push(finished_call(OpenToolUse { index: calls.len(), id, name, input, json: String::new() }))
            }
            ContentBlock::Other => {}
        }
    }
    let mut usage = UsageSoFar::default();
    if let Some(wire) = &message.usage {
        usage.update(wire);
    }
    let mut events = Vec::new();
    if !text.is_empty() {
        events.push(LlmEvent::Text(text));
    }
    events.extend(calls.into_iter().map(LlmEvent::ToolCall));
    events.extend(usage.figures().map(LlmEvent::Usage));
    let finish = message.stop_reason.as_deref().map_or(FinishReason::Stop, finish_reason);
    events.push(LlmEvent::Finish(finish));
    Ok(events)
}
