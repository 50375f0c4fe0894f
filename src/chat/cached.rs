//! What the store knows of a request, and the compact replay of a finished one (SPEC §2.4):
//! `processing` with `replayed: true`, one chunk per tool call, tool result and the final
//! text, then the terminal message, numbered from `seq` 0.
//!
//! The turn writes the keys read here into its events' `extra`; both sides use the constants
//! below so the two cannot drift apart.

use serde_json::Value;

use crate::protocol::{Chunk, ErrorBody, Metadata, ServerMessage, ToolCallChunk, ToolResultChunk};
use crate::store::{ChatEvent, EventType};

/// `extra` of the `user_message`: the payload fingerprint, for 409 across processes.
pub const FINGERPRINT: &str = "fingerprint";
/// `extra` of the event that ends a request: `complete`, `cancelled` or `error`.
pub const STATUS: &str = "status";
/// `extra` of the final answer: the `complete` metadata as sent.
pub const METADATA: &str = "metadata";
/// `extra` of an `error` end: the error as sent.
pub const ERROR: &str = "error";
/// `extra` of a tool result: model-facing tool name, success, duration.
pub const TOOL_NAME: &str = "name";
pub const TOOL_OK: &str = "ok";
pub const TOOL_DURATION_MS: &str = "duration_ms";

/// Longest tool output shown to the client; the model always gets the whole result.
const PREVIEW_CHARS: usize = 2000;

pub enum StoredRequest {
    Unknown,
    /// Claimed, not finished: another process is answering it (or died while it did).
    Running {
        fingerprint: Option<String>,
    },
    Finished {
        fingerprint: Option<String>,
        messages: Vec<ServerMessage>,
    },
}

/// Reads a request's stored events (in log order).
pub fn stored_request(events: &[ChatEvent]) -> StoredRequest {
    let Some(user) = events.iter().find(|event| event.kind == EventType::UserMessage) else {
        return StoredRequest::Unknown;
    };
    let fingerprint = user.extra.get(FINGERPRINT).and_then(Value::as_str).map(str::to_owned);
    if !events.iter().any(|event| event.extra.contains_key(STATUS)) {
        return StoredRequest::Running { fingerprint };
    }
    let request_id = user.request_id.as_deref().unwrap_or_default();
    let mut messages = vec![ServerMessage::processing(request_id, &user.conversation_id, true)];
    for event in events {
        messages.extend(replay_event(request_id, event));
    }
    for (seq, message) in messages.iter_mut().enumerate() {
        message.seq = Some(seq as u64);
    }
    StoredRequest::Finished { fingerprint, messages }
}

fn replay_event(request_id: &str, event: &ChatEvent) -> Vec<ServerMessage> {
    let chunk = |chunk| ServerMessage::chunk(request_id, 0, chunk);
    let content = event.content.clone().unwrap_or_default();
    match (event.kind, event.extra.get(STATUS).and_then(Value::as_str)) {
        (EventType::AssistantMessage, None) => event
            .tool_calls
            .iter()
            .flatten()
            .map(|call| {
                chunk(Chunk::ToolCall(ToolCallChunk {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                }))
            })
            .collect(),
        (EventType::ToolResult, _) => vec![chunk(tool_result_chunk(
            event.tool_call_id.clone().unwrap_or_default(),
            event.extra.get(TOOL_NAME).and_then(Value::as_str).unwrap_or_default().to_owned(),
            event.extra.get(TOOL_OK).and_then(Value::as_bool).unwrap_or(false),
            &content,
            event.extra.get(TOOL_DURATION_MS).and_then(Value::as_f64).unwrap_or(0.0),
        ))],
        (_, Some("complete")) => {
            let metadata = event.extra.get(METADATA).cloned().and_then(|value| serde_json::from_value(value).ok());
            let mut messages = Vec::new();
            if !content.is_empty() {
                messages.push(chunk(Chunk::Text(content)));
            }
            if let Some(metadata) = metadata {
                messages.push(ServerMessage::complete(request_id, 0, Metadata { cached: true, ..metadata }));
            }
            messages
        }
        (_, Some("cancelled")) => vec![ServerMessage::cancelled(request_id, 0)],
        (_, Some(_)) => {
            let error = event
                .extra
                .get(ERROR)
                .cloned()
                .and_then(|value| serde_json::from_value::<ErrorBody>(value).ok())
                .unwrap_or_else(|| ErrorBody::new(500, "the request failed"));
            vec![ServerMessage::failed(request_id, 0, error)]
        }
        _ => Vec::new(),
    }
}

/// The client's view of a tool result: long output shortened, saying so.
pub fn tool_result_chunk(id: String, name: String, ok: bool, content: &str, duration_ms: f64) -> Chunk {
    let total = content.chars().count();
    let content = if total > PREVIEW_CHARS {
        let shown: String = content.chars().take(PREVIEW_CHARS).collect();
        format!("{shown}… ({} more characters)", total - PREVIEW_CHARS)
    } else {
        content.to_owned()
    };
    Chunk::ToolResult(ToolResultChunk { id, name, ok, content, duration_ms })
}
