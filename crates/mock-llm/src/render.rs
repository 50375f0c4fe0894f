//! Answers in the wire format of each API: SSE frames for streams, one JSON body otherwise.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::script::{ScriptedError, ScriptedFinish, Usage};

/// Which API a request came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
}

/// A model answer ready to be written in either API's format.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub id: String,
    pub model: String,
    pub chunks: Vec<String>,
    pub calls: Vec<ReplyCall>,
    pub usage: Option<Usage>,
    pub finish: ScriptedFinish,
    pub delay: Duration,
    pub disconnect_after: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReplyCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model writes them (normally JSON).
    pub arguments_text: String,
}

impl ReplyCall {
    fn input(&self) -> Value {
        serde_json::from_str(&self.arguments_text).unwrap_or_else(|_| Value::String(self.arguments_text.clone()))
    }
}

/// One SSE frame; content frames count for `disconnect_after` and are paced by `delay`.
struct Frame {
    text: String,
    content: bool,
}

impl Frame {
    fn data(json: Value, content: bool) -> Self {
        Self { text: format!("data: {json}\n\n"), content }
    }
    fn named(event: &str, json: Value, content: bool) -> Self {
        Self { text: format!("event: {event}\ndata: {json}\n\n"), content }
    }
}

pub(crate) fn respond(api: Api, reply: Reply, streaming: bool) -> Response {
    if !streaming {
        let body = match api {
            Api::OpenAi => openai_completion(&reply),
            Api::Anthropic => anthropic_message(&reply),
        };
        if reply.disconnect_after.is_some() {
            return cut_body("application/json");
        }
        return axum::Json(body).into_response();
    }
    let frames = match api {
        Api::OpenAi => openai_frames(&reply),
        Api::Anthropic => anthropic_frames(&reply),
    };
    let pacing = Pacing {
        frames: frames.into_iter(),
        delay: reply.delay,
        disconnect_after: reply.disconnect_after,
        content_sent: 0,
    };
    let body = futures::stream::unfold(pacing, |mut pacing| async move {
        let item = pacing.next().await?;
        Some((item, pacing))
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

/// Headers, then a broken connection.
fn cut_body(content_type: &'static str) -> Response {
    let body = futures::stream::once(async { Err::<Bytes, _>(disconnect()) });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn disconnect() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "scripted disconnect")
}

struct Pacing {
    frames: std::vec::IntoIter<Frame>,
    delay: Duration,
    disconnect_after: Option<usize>,
    content_sent: usize,
}

impl Pacing {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        // Letting the server see an empty body for a moment makes it write out what it holds,
        // so every frame goes out on its own as a model's would, and a disconnect comes after
        // the frames before it have reached the client.
        tokio::task::yield_now().await;
        if self.disconnect_after == Some(self.content_sent) {
            // An error from the body makes the server drop the connection mid-response.
            self.disconnect_after = None;
            self.frames = Vec::new().into_iter();
            return Some(Err(disconnect()));
        }
        let frame = self.frames.next()?;
        if frame.content {
            if self.content_sent > 0 && !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.content_sent += 1;
        }
        Some(Ok(Bytes::from(frame.text)))
    }
}

/// The arguments text in up to three pieces, as models stream them.
fn fragments(text: &str) -> Vec<&str> {
    let size = text.len().div_ceil(3).max(1);
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

fn openai_finish(finish: ScriptedFinish) -> &'static str {
    match finish {
        ScriptedFinish::Stop => "stop",
        ScriptedFinish::Length => "length",
        ScriptedFinish::ToolCalls => "tool_calls",
    }
}

fn anthropic_finish(finish: ScriptedFinish) -> &'static str {
    match finish {
        ScriptedFinish::Stop => "end_turn",
        ScriptedFinish::Length => "max_tokens",
        ScriptedFinish::ToolCalls => "tool_use",
    }
}

fn openai_usage(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens(),
    })
}

fn created() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

fn openai_frames(reply: &Reply) -> Vec<Frame> {
    let created = created();
    let chunk = |choices: Value| {
        json!({
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "choices": choices,
        })
    };
    let delta = |delta: Value| chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]));
    let mut frames = vec![Frame::data(delta(json!({"role": "assistant", "content": ""})), false)];
    for text in &reply.chunks {
        frames.push(Frame::data(delta(json!({"content": text})), true));
    }
    for (index, call) in reply.calls.iter().enumerate() {
        let opening = json!({"tool_calls": [{
            "index": index, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]});
        frames.push(Frame::data(delta(opening), true));
        for piece in fragments(&call.arguments_text) {
            let more = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
            frames.push(Frame::data(delta(more), true));
        }
    }
    frames.push(Frame::data(
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": openai_finish(reply.finish)}])),
        false,
    ));
    if let Some(usage) = reply.usage {
        let mut last = chunk(json!([]));
        last["usage"] = openai_usage(usage);
        frames.push(Frame::data(last, false));
    }
    frames.push(Frame { text: "data: [DONE]\n\n".to_owned(), content: false });
    frames
}

fn openai_completion(reply: &Reply) -> Value {
    let text = reply.chunks.concat();
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !reply.calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !reply.calls.is_empty() {
        message["tool_calls"] = reply
            .calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_text},
                })
            })
            .collect();
    }
    let mut body = json!({
        "id": reply.id,
        "object": "chat.completion",
        "created": created(),
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "finish_reason": openai_finish(reply.finish)}],
    });
    if let Some(usage) = reply.usage {
        body["usage"] = openai_usage(usage);
    }
    body
}

fn anthropic_usage(usage: Option<Usage>) -> Value {
    let usage = usage.unwrap_or_default();
    json!({"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens})
}

fn anthropic_frames(reply: &Reply) -> Vec<Frame> {
    let mut start_usage = anthropic_usage(reply.usage);
    start_usage["output_tokens"] = json!(1);
    let mut frames = vec![
        Frame::named(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": reply.id, "type": "message", "role": "assistant", "model": reply.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": if reply.usage.is_some() { start_usage } else { json!({}) },
            }}),
            false,
        ),
        Frame::named("ping", json!({"type": "ping"}), false),
    ];
    let mut index = 0;
    if !reply.chunks.is_empty() {
        frames.push(Frame::named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
            false,
        ));
        for text in &reply.chunks {
            frames.push(Frame::named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": text}}),
                true,
            ));
        }
        frames.push(Frame::named("content_block_stop", json!({"type": "content_block_stop", "index": index}), false));
        index += 1;
    }
    for call in &reply.calls {
        frames.push(Frame::named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
            true,
        ));
        for piece in fragments(&call.arguments_text) {
            frames.push(Frame::named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
                true,
            ));
        }
        frames.push(Frame::named("content_block_stop", json!({"type": "content_block_stop", "index": index}), false));
        index += 1;
    }
    let mut delta = json!({"type": "message_delta",
        "delta": {"stop_reason": anthropic_finish(reply.finish), "stop_sequence": null}});
    if let Some(usage) = reply.usage {
        delta["usage"] = json!({"output_tokens": usage.completion_tokens});
    }
    frames.push(Frame::named("message_delta", delta, false));
    frames.push(Frame::named("message_stop", json!({"type": "message_stop"}), false));
    frames
}

fn anthropic_message(reply: &Reply) -> Value {
    let text = reply.chunks.concat();
    let mut content: Vec<Value> = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    content.extend(
        reply
            .calls
            .iter()
            .map(|call| json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input()})),
    );
    let mut body = json!({
        "id": reply.id, "type": "message", "role": "assistant", "model": reply.model,
        "content": content, "stop_reason": anthropic_finish(reply.finish), "stop_sequence": null,
    });
    if reply.usage.is_some() {
        body["usage"] = anthropic_usage(reply.usage);
    }
    body
}

/// A scripted HTTP error in the API's own error shape.
pub(crate) fn error_response(api: Api, error: &ScriptedError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = error.message.clone().unwrap_or_else(|| format!("scripted error: HTTP {}", error.status));
    let mut response = match &error.body {
        Some(Value::String(text)) => (status, text.clone()).into_response(),
        Some(body) => (status, axum::Json(body.clone())).into_response(),
        None => (status, axum::Json(api_error(api, status, &message))).into_response(),
    };
    if let Some(seconds) = error.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// An error body of the API's own shape.
pub(crate) fn api_error(api: Api, status: StatusCode, message: &str) -> Value {
    match api {
        Api::OpenAi => json!({"error": {
            "message": message, "type": "mock_error", "code": status.as_u16(),
        }}),
        Api::Anthropic => {
            let kind = match status.as_u16() {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
}
