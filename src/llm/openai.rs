//! Any OpenAI-compatible chat completions API (`kind: openai`): OpenAI, Groq, OpenRouter,
//! Ollama, vLLM, llama.cpp's server.
//!
//! Requests carry only fields of the standard API, so every compatible server accepts them.
//! Streamed answers are read leniently, because the compatible servers differ in detail: every
//! field of a chunk may be missing or null, tool-call deltas may lack `index` or `id` or carry
//! a whole call at once, and usage may be null, empty, or (Groq) under `x_groq`.
//!
//! `base_url` of the common servers (the provider appends `/chat/completions`):
//!
//! | server | `base_url` | `api_key` |
//! |---|---|---|
//! | OpenAI | `https://api.openai.com/v1` | required |
//! | Groq | `https://api.groq.com/openai/v1` | required |
//! | OpenRouter | `https://openrouter.ai/api/v1` | required |
//! | Ollama | `http://localhost:11434/v1` | `""` (no `Authorization` is sent) |
//! | vLLM | `http://localhost:8000/v1` | `""`, or its `--api-key` |
//! | llama.cpp `llama-server` | `http://localhost:8080/v1` | `""`, or its `--api-key` |
//! | `mcp-platform mock-llm` | `http://127.0.0.1:PORT/v1` | `""` |
//!
//! `max_tokens` is sent as such; OpenAI's reasoning models (o-series, gpt-5), which want
//! `max_completion_tokens` and no `temperature`, are not supported by this request shape.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::sse::{Flow, StreamDecoder, WireError};
use super::transport::{self, Endpoint, Wire};
use super::{
    LlmEvent, LlmProvider, LlmRequest, LlmStream, RetryPolicy, generated_call_id, parse_tool_arguments,
    tool_arguments_text,
};
use crate::config::ProviderSettings;
use crate::domain::{FinishReason, Image, Message, Role, ToolCall, ToolSpec, Usage};

/// A configured OpenAI-compatible endpoint.
pub struct OpenAiProvider {
    endpoint: Arc<Endpoint>,
    settings: ProviderSettings,
}

impl OpenAiProvider {
    /// `name` is the provider's key in `llm.providers`, used in error messages.
    pub fn new(name: &str, settings: &ProviderSettings, policy: RetryPolicy) -> anyhow::Result<Self> {
        let url = transport::endpoint_url(name, &settings.base_url, "/chat/completions")?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Local servers (Ollama, llama.cpp) need no key; an empty bearer would be malformed.
        if !settings.api_key.is_empty() {
            let bearer = format!("Bearer {}", settings.api_key.expose());
            headers.insert(AUTHORIZATION, transport::secret_header(name, &bearer)?);
        }
        Ok(Self { endpoint: Arc::new(Endpoint::new(name, url, headers, policy)?), settings: settings.clone() })
    }
}

impl LlmProvider for OpenAiProvider {
    fn default_model(&self) -> &str {
        &self.settings.model
    }

    fn chat(&self, request: &LlmRequest) -> LlmStream {
        let body = request_body(request, &self.settings);
        let wire = Wire { stream_decoder: OpenAiStreamDecoder::default, decode_complete };
        transport::call(Arc::clone(&self.endpoint), body, request.streaming, wire)
    }

    fn connect_ahead(&self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(Arc::clone(&self.endpoint).connect_ahead())
    }
}

/// The chat completions request for `request`, with the model parameters of `settings`,
/// serialised straight from the request: the whole context goes out with every model call, so
/// it is written once, not copied into a JSON tree first.
pub fn request_body(request: &LlmRequest, settings: &ProviderSettings) -> Bytes {
    let body = WireRequest {
        model: request.model.as_deref().unwrap_or(&settings.model),
        messages: wire_messages(&request.messages, settings.vision),
        stream: request.streaming,
        temperature: settings.temperature,
        max_tokens: settings.max_tokens,
        top_p: settings.top_p,
        tools: request.tools.iter().map(|tool| wire_tool(tool)).collect(),
        stream_options: request.streaming.then_some(StreamOptions { include_usage: true }),
    };
    let mut bytes = Vec::with_capacity(body.encoded_len_hint());
    serde_json::to_writer(&mut bytes, &body).expect("a request of strings and JSON values serialises");
    Bytes::from(bytes)
}

/// The name under which this format keeps a message's or tool's encoding
/// ([`crate::domain::Encoded`]).
const WIRE_FORMAT: &str = "openai chat completions";

/// The messages; images of tool results follow the results as a user message (tool messages
/// carry text only in this API), and only for a model that reads them.
fn wire_messages(messages: &[Arc<Message>], vision: bool) -> Vec<WireItem<'_, WireMessage<'_>>> {
    let mut out = Vec::with_capacity(messages.len());
    let mut images: Vec<&Image> = Vec::new();
    for message in messages {
        if message.role != Role::Tool {
            push_images(&mut out, &mut images);
        }
        let encode = || {
            serde_json::value::to_raw_value(&WireMessage::from(&**message))
                .expect("a message of strings and JSON values serialises")
        };
        out.push(match message.encoded.get_or_make(WIRE_FORMAT, encode) {
            Some(encoded) => WireItem::Encoded(encoded),
            None => WireItem::Built(WireMessage::from(&**message)),
        });
        if vision && message.role == Role::Tool {
            images.extend(&message.images);
        }
    }
    push_images(&mut out, &mut images);
    out
}

fn push_images<'a>(out: &mut Vec<WireItem<'a, WireMessage<'a>>>, images: &mut Vec<&'a Image>) {
    if images.is_empty() {
        return;
    }
    let intro = WirePart::Text { text: "The images the tool results above returned:" };
    let parts = images.drain(..).map(|image| WirePart::ImageUrl {
        image_url: WireImageUrl { url: format!("data:{};base64,{}", image.mime_type, image.data) },
    });
    out.push(WireItem::Built(WireMessage {
        role: "user",
        content: WireContent::Parts(std::iter::once(intro).chain(parts).collect()),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }));
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireItem<'a, WireMessage<'a>>>,
    stream: bool,
    temperature: f64,
    max_tokens: u32,
    top_p: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireItem<'a, WireTool<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

impl WireRequest<'_> {
    /// About the length of the body: the kept encodings' own lengths, and a guess for the
    /// rest. A context's body runs to tens of kilobytes, which a buffer grown by doubling would
    /// copy about as many times again.
    fn encoded_len_hint(&self) -> usize {
        fn len<Built>(item: &WireItem<'_, Built>) -> usize {
            match item {
                WireItem::Encoded(encoded) => encoded.get().len() + 1,
                WireItem::Built(_) => 256,
            }
        }
        let items: usize = self.messages.iter().map(len).sum::<usize>() + self.tools.iter().map(len).sum::<usize>();
        items + self.model.len() + 256
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A message or tool of the request: encoded before, or built for this request.
#[derive(Serialize)]
#[serde(untagged)]
enum WireItem<'a, Built> {
    Encoded(&'a RawValue),
    Built(Built),
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    /// `None` (null) only for an assistant turn that only calls tools: the API wants null, not "".
    Text(Option<&'a str>),
    Parts(Vec<WirePart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: WireImageUrl },
}

#[derive(Serialize)]
struct WireImageUrl {
    url: String,
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    fn from(message: &'a Message) -> Self {
        let text = |role| WireMessage {
            role,
            content: WireContent::Text(Some(&message.content)),
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        match message.role {
            Role::System => text("system"),
            Role::User => text("user"),
            Role::Assistant if message.tool_calls.is_empty() => text("assistant"),
            Role::Assistant => WireMessage {
                role: "assistant",
                content: WireContent::Text(Some(message.content.as_str()).filter(|content| !content.is_empty())),
                tool_calls: message.tool_calls.iter().map(WireToolCall::from).collect(),
                tool_call_id: None,
            },
            Role::Tool => {
                WireMessage { tool_call_id: Some(message.tool_call_id.as_deref().unwrap_or_default()), ..text("tool") }
            }
        }
    }
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: String,
}

impl<'a> From<&'a ToolCall> for WireToolCall<'a> {
    fn from(call: &'a ToolCall) -> Self {
        WireToolCall {
            id: &call.id,
            kind: "function",
            function: WireFunction { name: &call.name, arguments: tool_arguments_text(&call.arguments) },
        }
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireToolSpec<'a>,
}

#[derive(Serialize)]
struct WireToolSpec<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

/// A tool of the request: its encoding kept from an earlier request, or built for this one.
fn wire_tool(tool: &ToolSpec) -> WireItem<'_, WireTool<'_>> {
    let encode = || {
        serde_json::value::to_raw_value(&WireTool::from(tool)).expect("a tool of strings and a JSON schema serialises")
    };
    match tool.encoded.get_or_make(WIRE_FORMAT, encode) {
        Some(encoded) => WireItem::Encoded(encoded),
        None => WireItem::Built(WireTool::from(tool)),
    }
}

impl<'a> From<&'a ToolSpec> for WireTool<'a> {
    fn from(tool: &'a ToolSpec) -> Self {
        WireTool {
            kind: "function",
            function: WireToolSpec { name: &tool.name, description: &tool.description, parameters: &tool.parameters },
        }
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Some servers report `stop` for an answer that calls tools; the calls decide.
fn settle_finish(reason: Option<FinishReason>, has_calls: bool) -> FinishReason {
    match reason {
        Some(FinishReason::Stop) | None if has_calls => FinishReason::ToolCalls,
        Some(reason) => reason,
        None => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

impl WireUsage {
    /// `None` for an empty usage object, which some servers send instead of none.
    fn figures(&self) -> Option<Usage> {
        if self.prompt_tokens.is_none() && self.completion_tokens.is_none() && self.total_tokens.is_none() {
            return None;
        }
        let prompt_tokens = self.prompt_tokens.unwrap_or(0);
        let completion_tokens = self.completion_tokens.unwrap_or(0);
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: self.total_tokens.unwrap_or(prompt_tokens + completion_tokens),
        })
    }
}

#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<ChunkChoice>>,
    usage: Option<WireUsage>,
    x_groq: Option<GroqExtra>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct GroqExtra {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    index: Option<u32>,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    /// A string fragment per the API; some servers send the whole arguments object instead.
    arguments: Option<Value>,
}

/// A tool call being assembled from deltas.
#[derive(Default)]
struct PartialCall {
    index: Option<usize>,
    id: String,
    name: String,
    arguments: String,
}

impl PartialCall {
    fn finish(self) -> ToolCall {
        ToolCall {
            id: if self.id.is_empty() { generated_call_id() } else { self.id },
            name: self.name,
            arguments: parse_tool_arguments(&self.arguments),
        }
    }
}

/// Accumulates a streamed chat completion: text deltas pass through, tool calls are emitted
/// whole at the end, then usage and the finish reason.
#[derive(Default)]
pub struct OpenAiStreamDecoder {
    calls: Vec<PartialCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// `[DONE]` arrived (or the answer came whole).
    complete: bool,
}

impl OpenAiStreamDecoder {
    /// The call a delta continues. With `index`, the call of that index, unless the delta
    /// brings a different id (servers that number every parallel call 0); without `index`, the
    /// call of the same id, else the latest call unless the delta brings a new id.
    fn call_for(&mut self, delta: &ToolCallDelta) -> &mut PartialCall {
        let new_id = delta.id.as_deref().filter(|id| !id.is_empty());
        let position = match delta.index {
            Some(index) => self.calls.iter().rposition(|call| {
                call.index == Some(index) && new_id.is_none_or(|id| call.id.is_empty() || call.id == id)
            }),
            None => match new_id {
                Some(id) => self.calls.iter().rposition(|call| call.id == id),
                None => self.calls.len().checked_sub(1),
            },
        };
        let position = position.unwrap_or_else(|| {
            self.calls.push(PartialCall { index: delta.index, ..PartialCall::default() });
            self.calls.len() - 1
        });
        &mut self.calls[position]
    }

    fn add_tool_delta(&mut self, delta: ToolCallDelta) {
        let call = self.call_for(&delta);
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        let Some(function) = delta.function else {
            return;
        };
        // Servers that repeat the full name in every delta must not double it.
        if let Some(name) = function.name.filter(|name| *name != call.name) {
            call.name.push_str(&name);
        }
        match function.arguments {
            Some(Value::String(fragment)) => call.arguments.push_str(&fragment),
            Some(Value::Null) | None => {}
            Some(whole) => call.arguments = whole.to_string(),
        }
    }
}

impl StreamDecoder for OpenAiStreamDecoder {
    fn event(&mut self, _event: &str, data: &str, out: &mut Vec<LlmEvent>) -> Result<Flow, WireError> {
        // Empty events carry nothing; some proxies send them to keep the connection open.
        if data.trim().is_empty() {
            return Ok(Flow::More);
        }
        if data.trim() == "[DONE]" {
            self.complete = true;
            return Ok(Flow::Done);
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|error| WireError::fatal(format!("unreadable chunk in the answer stream ({error}): {data}")))?;
        if let Some(error) = chunk.error.filter(|error| !error.is_null()) {
            return Err(WireError::fatal(transport::provider_message(
                json!({ "error": error }).to_string().as_bytes(),
            )));
        }
        let usage =
            chunk.usage.as_ref().and_then(WireUsage::figures).or_else(|| chunk.x_groq?.usage.as_ref()?.figures());
        if usage.is_some() {
            self.usage = usage;
        }
        for choice in chunk.choices.into_iter().flatten() {
            // Only one answer is asked for (no `n`); other choices would interleave with it.
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                    out.push(LlmEvent::Text(text));
                }
                for tool_delta in delta.tool_calls.into_iter().flatten() {
                    self.add_tool_delta(tool_delta);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        Ok(Flow::More)
    }

    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), WireError> {
        // Some servers close after the finish reason without `[DONE]`; with neither, the
        // connection ended early and the answer is incomplete.
        if !self.complete && self.finish.is_none() {
            return Err(WireError {
                message: "the answer stream ended without a finish reason or [DONE]: the answer \
                          is incomplete"
                    .to_owned(),
                retryable: true,
            });
        }
        let has_calls = !self.calls.is_empty();
        out.extend(self.calls.drain(..).map(|call| LlmEvent::ToolCall(call.finish())));
        out.extend(self.usage.take().map(LlmEvent::Usage));
        out.push(LlmEvent::Finish(settle_finish(self.finish, has_calls)));
        Ok(())
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Option<Vec<CompletionChoice>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: Option<CompletionMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallDelta>>,
}

/// Reads a non-streamed chat completion into the events a stream of it would give.
fn decode_complete(body: &[u8]) -> Result<Vec<LlmEvent>, WireError> {
    let completion: Completion = serde_json::from_slice(body).map_err(|error| {
        WireError::fatal(format!("unreadable answer ({error}): {}", transport::provider_message(body)))
    })?;
    let choice = completion
        .choices
        .and_then(|choices| choices.into_iter().next())
        .ok_or_else(|| WireError::fatal("the answer has no choices"))?;
    // Reuse the stream decoder's assembly so both paths treat odd tool calls alike.
    let mut decoder = OpenAiStreamDecoder {
        finish: choice.finish_reason.as_deref().map(finish_reason),
        usage: completion.usage.as_ref().and_then(WireUsage::figures),
        complete: true,
        ..OpenAiStreamDecoder::default()
    };
    let mut events = Vec::new();
    if let Some(message) = choice.message {
        if let Some(text) = message.content.filter(|text| !text.is_empty()) {
            events.push(LlmEvent::Text(text));
        }
        for (position, mut call) in message.tool_calls.into_iter().flatten().enumerate() {
            call.index.get_or_insert(position);
            decoder.add_tool_delta(call);
        }
    }
    decoder.end(&mut events)?;
    Ok(events)
}
