//! The WebSocket protocol (SPEC §2): what clients send, what the server answers, and the
//! validation between the two.
//!
//! Validation walks the parsed JSON by hand instead of relying on serde's first error so that
//! a client learns about every bad field of a frame at once, each with its path.
//!
//! One file for both directions, longer than most: the client frames' validators and the
//! server messages are one contract (SPEC §2), reviewed together when it changes; the
//! approval and elicitation shapes live in `protocol::questions`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::{PromptRef, ToolAttachments};

mod questions;

pub use questions::*;

/// Longest `request_id` (and `conversation_id`) a client may choose.
pub const MAX_ID_CHARS: usize = 128;
/// `after_seq` must be below 2^53: the largest integer every JSON client (a browser's
/// `Number`) represents exactly, and far beyond any real `seq`.
pub const AFTER_SEQ_LIMIT: u64 = 1 << 53;

/// A validated client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Chat {
        request_id: String,
        payload: ChatPayload,
    },
    Cancel {
        request_id: String,
    },
    Resume {
        request_id: String,
        after_seq: Option<u64>,
    },
    Ping {
        request_id: String,
    },
    /// A decision on a tool call waiting for approval (SPEC §2.6).
    Approve {
        request_id: String,
        answer: ApprovalAnswer,
    },
    /// An answer to an MCP server's question (SPEC §2.6).
    Elicit {
        request_id: String,
        answer: ElicitationAnswer,
    },
}

impl ClientMessage {
    pub fn request_id(&self) -> &str {
        match self {
            ClientMessage::Chat { request_id, .. }
            | ClientMessage::Cancel { request_id }
            | ClientMessage::Resume { request_id, .. }
            | ClientMessage::Ping { request_id }
            | ClientMessage::Approve { request_id, .. }
            | ClientMessage::Elicit { request_id, .. } => request_id,
        }
    }
}

/// The `payload` of a `chat` action. Serialises canonically (fixed field order, sorted
/// argument map), which is what makes "the same payload" comparable across processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatPayload {
    /// The user's message; may be absent when `prompt` supplies the turn.
    pub text: Option<String>,
    pub conversation_id: Option<String>,
    pub model: Option<String>,
    pub streaming: Option<bool>,
    /// An MCP prompt (`<server>__<prompt>`) rendered as the user turn.
    pub prompt: Option<PromptRef>,
    /// Resource URIs whose contents join the turn.
    #[serde(default)]
    pub resources: Vec<String>,
}

impl ChatPayload {
    /// Identifies the payload across processes: the SHA-256 of its canonical JSON. A
    /// `request_id` sent again with another fingerprint is a different request (409).
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a chat payload is plain JSON data");
        hex::encode(Sha256::digest(canonical))
    }
}

/// One problem with a client frame, in the shape of `error.data.validation_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>, kind: &'static str) -> Self {
        Self { field: field.into(), message: message.into(), kind }
    }
}

/// Why a frame was refused before it reached the chat service.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The frame's `request_id` when it could be read, so the client can tie the error to it.
    pub request_id: Option<String>,
    pub error: ErrorBody,
}

/// Parses and validates one text frame. Its size, and so the length of `payload.text`, is
/// bounded before: a frame over `websocket.max_message_bytes` is refused whole (413).
pub fn parse_client_message(frame: &str) -> Result<ClientMessage, Rejection> {
    let value: Value = serde_json::from_str(frame).map_err(|error| Rejection {
        request_id: None,
        error: ErrorBody::validation(vec![FieldError::new("", format!("not valid JSON: {error}"), "json_invalid")]),
    })?;
    let Value::Object(object) = value else {
        return Err(Rejection {
            request_id: None,
            error: ErrorBody::validation(vec![FieldError::new(
                "",
                format!("expected a JSON object, found {}", json_type(&value)),
                "type_error",
            )]),
        });
    };
    let mut errors = Vec::new();
    let request_id = validate_id(&object, "request_id", true, &mut errors);
    let message = validate_action(&object, request_id.clone(), &mut errors);
    match message {
        Some(message) if errors.is_empty() => Ok(message),
        _ => Err(Rejection { request_id, error: ErrorBody::validation(errors) }),
    }
}

/// The `request_id` of a frame that is refused as a whole (too large), if it can be read.
pub fn peek_request_id(frame: &str) -> Option<String> {
    let value: Value = serde_json::from_str(frame).ok()?;
    Some(value.get("request_id")?.as_str()?.to_owned())
}

fn validate_action(
    object: &Map<String, Value>,
    request_id: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<ClientMessage> {
    let action = match object.get("action") {
        None => {
            errors.push(FieldError::new("action", "is required", "missing"));
            return None;
        }
        Some(Value::String(action)) => action.as_str(),
        Some(other) => {
            errors.push(type_error("action", "a string", other));
            return None;
        }
    };
    let allowed: &[&str] = match action {
        "chat" => &["action", "request_id", "payload"],
        "resume" => &["action", "request_id", "after_seq"],
        "cancel" | "ping" => &["action", "request_id"],
        "approve" | "elicit" => &["action", "request_id", "payload"],
        other => {
            errors.push(FieldError::new(
                "action",
                format!("unknown action {other:?}; expected one of chat, cancel, resume, ping, approve, elicit"),
                "value_error",
            ));
            return None;
        }
    };
    reject_unknown_fields(object, "", allowed, errors);
    let payload = if action == "chat" { validate_payload(object.get("payload"), errors) } else { None };
    let after_seq = if action == "resume" { validate_after_seq(object.get("after_seq"), errors) } else { None };
    let approval = if action == "approve" { questions::validate_approval(object.get("payload"), errors) } else { None };
    let elicitation =
        if action == "elicit" { questions::validate_elicitation(object.get("payload"), errors) } else { None };
    let request_id = request_id?;
    Some(match action {
        "chat" => ClientMessage::Chat { request_id, payload: payload? },
        "approve" => ClientMessage::Approve { request_id, answer: approval? },
        "elicit" => ClientMessage::Elicit { request_id, answer: elicitation? },
        "resume" => ClientMessage::Resume { request_id, after_seq },
        "cancel" => ClientMessage::Cancel { request_id },
        _ => ClientMessage::Ping { request_id },
    })
}

fn validate_after_seq(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<u64> {
    match value {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(seq) if seq < AFTER_SEQ_LIMIT => Some(seq),
            Some(seq) => {
                errors.push(FieldError::new(
                    "after_seq",
                    format!("must be below 2^53 ({AFTER_SEQ_LIMIT}), found {seq}"),
                    "value_error",
                ));
                None
            }
            None => {
                errors.push(type_error("after_seq", "an integer from 0 to 2^53 - 1", value));
                None
            }
        },
    }
}

fn validate_payload(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<ChatPayload> {
    let payload = match value {
        None => {
            errors.push(FieldError::new("payload", "is required for chat", "missing"));
            return None;
        }
        Some(Value::Object(payload)) => payload,
        Some(other) => {
            errors.push(type_error("payload", "an object", other));
            return None;
        }
    };
    reject_unknown_fields(
        payload,
        "payload.",
        &["text", "conversation_id", "model", "streaming", "prompt", "resources"],
        errors,
    );
    let before = errors.len();
    let text = optional_string(payload, "payload.text", "text", errors);
    if text.as_deref().is_some_and(|text| text.trim().is_empty()) {
        errors.push(FieldError::new("payload.text", "must not be empty", "value_error"));
    }
    let conversation_id = validate_id(payload, "conversation_id", false, errors);
    let conversation_id = conversation_id.map(|id| id.to_owned());
    let model = optional_string(payload, "payload.model", "model", errors);
    if model.as_deref().is_some_and(|model| model.trim().is_empty()) {
        errors.push(FieldError::new("payload.model", "must not be empty", "value_error"));
    }
    let streaming = match payload.get("streaming") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(streaming)) => Some(*streaming),
        Some(other) => {
            errors.push(type_error("payload.streaming", "a boolean", other));
            None
        }
    };
    let prompt = validate_prompt(payload.get("prompt"), errors);
    let resources = validate_resources(payload.get("resources"), errors);
    if text.is_none() && prompt.is_none() && !payload.contains_key("text") {
        errors.push(FieldError::new("payload.text", "is required (or name a payload.prompt)", "missing"));
    }
    (errors.len() == before).then_some(ChatPayload { text, conversation_id, model, streaming, prompt, resources })
}

fn validate_prompt(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<PromptRef> {
    let prompt = match value {
        None | Some(Value::Null) => return None,
        Some(Value::Object(prompt)) => prompt,
        Some(other) => {
            errors.push(type_error("payload.prompt", "an object {\"name\", \"arguments\"}", other));
            return None;
        }
    };
    reject_unknown_fields(prompt, "payload.prompt.", &["name", "arguments"], errors);
    let name = optional_string(prompt, "payload.prompt.name", "name", errors);
    if name.as_deref().is_none_or(|name| name.is_empty()) {
        errors.push(FieldError::new("payload.prompt.name", "is required and must not be empty", "missing"));
    }
    let mut arguments = BTreeMap::new();
    match prompt.get("arguments") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (key, value) in given {
                match value {
                    Value::String(value) => {
                        arguments.insert(key.clone(), value.clone());
                    }
                    other => errors.push(type_error(&format!("payload.prompt.arguments.{key}"), "a string", other)),
                }
            }
        }
        Some(other) => errors.push(type_error("payload.prompt.arguments", "an object of strings", other)),
    }
    Some(PromptRef { name: name?, arguments })
}

fn validate_resources(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| match item {
                Value::String(uri) if !uri.is_empty() => Some(uri.clone()),
                other => {
                    errors.push(type_error(&format!("payload.resources[{index}]"), "a non-empty URI string", other));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errors.push(type_error("payload.resources", "an array of URI strings", other));
            Vec::new()
        }
    }
}

/// Validates an identifier field (`request_id`, `conversation_id`): a non-empty string of at
/// most [`MAX_ID_CHARS`] characters without control characters. Identifiers go into log lines
/// and file names of operators' tools; a newline or an escape code in one could forge a line.
fn validate_id(object: &Map<String, Value>, key: &str, required: bool, errors: &mut Vec<FieldError>) -> Option<String> {
    let field = if key == "request_id" { key.to_owned() } else { format!("payload.{key}") };
    match object.get(key) {
        None | Some(Value::Null) if required => {
            errors.push(FieldError::new(field, "is required", "missing"));
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.is_empty() => {
            errors.push(FieldError::new(field, "must not be empty", "value_error"));
            None
        }
        Some(Value::String(id)) if id.chars().count() > MAX_ID_CHARS => {
            errors.push(FieldError::new(
                field,
                format!("must be at most {MAX_ID_CHARS} characters, found {}", id.chars().count()),
                "value_error",
            ));
            None
        }
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            errors.push(FieldError::new(
                field,
                "must not contain control characters (newline, carriage return, escape, U+0000-U+001F, U+007F-U+009F)",
                "value_error",
            ));
            None
        }
        Some(Value::String(id)) => Some(id.clone()),
        Some(other) => {
            errors.push(type_error(&field, "a string", other));
            None
        }
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(value)) => Some(value.clone()),
        Some(other) => {
            errors.push(type_error(field, "a string", other));
            None
        }
    }
}

fn reject_unknown_fields(object: &Map<String, Value>, prefix: &str, allowed: &[&str], errors: &mut Vec<FieldError>) {
    for key in object.keys().filter(|key| !allowed.contains(&key.as_str())) {
        errors.push(FieldError::new(
            format!("{prefix}{key}"),
            format!("unknown field; expected one of {}", allowed.join(", ")),
            "extra_forbidden",
        ));
    }
}

fn type_error(field: &str, expected: &str, found: &Value) -> FieldError {
    FieldError::new(field, format!("expected {expected}, found {}", json_type(found)), "type_error")
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `status` of a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Processing,
    Chunk,
    Complete,
    Cancelled,
    Error,
    Pong,
}

impl Status {
    /// Whether this status ends a request.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Complete | Status::Cancelled | Status::Error)
    }
}

/// One server → client message. Optional parts are left out of the JSON when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub request_id: Option<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Chunk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl ServerMessage {
    fn bare(request_id: Option<String>, status: Status) -> Self {
        Self {
            request_id,
            status,
            conversation_id: None,
            seq: None,
            replayed: None,
            chunk: None,
            metadata: None,
            error: None,
        }
    }

    pub fn pong(request_id: &str) -> Self {
        Self::bare(Some(request_id.to_owned()), Status::Pong)
    }

    /// An error that is not part of a request's numbered stream (the request never started).
    pub fn rejection(request_id: Option<String>, error: ErrorBody) -> Self {
        Self { error: Some(error), ..Self::bare(request_id, Status::Error) }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages hold only JSON-representable data")
    }
}

/// A message of a request's numbered stream, before it has its `seq`. Only the run the request
/// belongs to numbers it ([`RequestMessage::numbered`]), in the order it publishes it, so the
/// code that produces messages cannot get `seq` wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestMessage {
    /// `replayed`: the request had finished and this is its compact replay from the log.
    Processing {
        conversation_id: String,
        replayed: bool,
    },
    Chunk(Chunk),
    Complete(Metadata),
    Cancelled,
    Failed(ErrorBody),
}

impl RequestMessage {
    pub fn is_terminal(&self) -> bool {
        matches!(self, RequestMessage::Complete(_) | RequestMessage::Cancelled | RequestMessage::Failed(_))
    }

    /// The message as sent, carrying `seq`.
    pub fn numbered(self, request_id: &str, seq: u64) -> ServerMessage {
        let bare =
            |status| ServerMessage { seq: Some(seq), ..ServerMessage::bare(Some(request_id.to_owned()), status) };
        match self {
            RequestMessage::Processing { conversation_id, replayed } => ServerMessage {
                conversation_id: Some(conversation_id),
                replayed: replayed.then_some(true),
                ..bare(Status::Processing)
            },
            RequestMessage::Chunk(chunk) => ServerMessage { chunk: Some(chunk), ..bare(Status::Chunk) },
            RequestMessage::Complete(metadata) => ServerMessage { metadata: Some(metadata), ..bare(Status::Complete) },
            RequestMessage::Cancelled => bare(Status::Cancelled),
            RequestMessage::Failed(error) => ServerMessage { error: Some(error), ..bare(Status::Error) },
        }
    }
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Chunk {
    Text(String),
    ToolCall(ToolCallChunk),
    ToolResult(ToolResultChunk),
    Progress(ProgressChunk),
    Notice(String),
    ApprovalRequest(ApprovalRequestChunk),
    Approval(ApprovalChunk),
    Elicitation(ElicitationChunk),
    ElicitationResult(ElicitationResultChunk),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallChunk {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResultChunk {
    pub id: String,
    pub name: String,
    pub ok: bool,
    /// A preview: long results are shortened for the client (the log keeps them whole).
    pub content: String,
    /// `images`, `structured`, `resource_links`, each present only when the tool returned it.
    #[serde(flatten)]
    pub attachments: ToolAttachments,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressChunk {
    pub id: String,
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `metadata` of a `complete` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub tokens: u64,
    pub usage: crate::domain::Usage,
    pub model: String,
    pub tool_hops: u32,
    pub finish_reason: crate::domain::FinishReason,
    pub duration_ms: u64,
    pub cached: bool,
}

/// `error` of an error message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorBody {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            code: 400,
            message: "Parameter validation failed".to_owned(),
            data: Some(serde_json::json!({ "validation_errors": errors })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn rejection(frame: &str) -> Rejection {
        parse_client_message(frame).expect_err("frame should be refused")
    }

    pub(super) fn fields(rejection: &Rejection) -> Vec<String> {
        let errors = &rejection.error.data.as_ref().expect("validation data")["validation_errors"];
        errors.as_array().expect("array").iter().map(|error| error["field"].as_str().unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn a_full_chat_frame_parses() {
        let message = parse_client_message(
            r#"{"action":"chat","request_id":"r-1","payload":{"text":"hi","conversation_id":"c-1","model":"m","streaming":false,
                "prompt":{"name":"demo__greet","arguments":{"name":"Ada"}},"resources":["demo://readme"]}}"#,
        )
        .expect("valid");
        let ClientMessage::Chat { request_id, payload } = message else { panic!("not a chat: {message:?}") };
        assert_eq!(request_id, "r-1");
        assert_eq!(payload.conversation_id.as_deref(), Some("c-1"));
        assert_eq!(payload.streaming, Some(false));
        assert_eq!(payload.prompt.expect("prompt").arguments["name"], "Ada");
        assert_eq!(payload.resources, vec!["demo://readme"]);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let rejected = rejection(
            r#"{"action":"chat","request_id":"r-1","extra":1,"payload":{"text":"","streaming":"yes","colour":"red","conversation_id":7}}"#,
        );
        assert_eq!(rejected.request_id.as_deref(), Some("r-1"));
        assert_eq!(rejected.error.code, 400);
        let mut found = fields(&rejected);
        found.sort();
        assert_eq!(found, ["extra", "payload.colour", "payload.conversation_id", "payload.streaming", "payload.text"]);
    }

    #[test]
    fn not_json_and_not_object_carry_no_request_id() {
        let rejected = rejection("{nope");
        assert_eq!(rejected.request_id, None);
        assert!(rejected.error.data.expect("data").to_string().contains("not valid JSON"));
        assert_eq!(rejection("[1,2]").error.code, 400);
    }

    #[test]
    fn request_id_rules() {
        assert_eq!(fields(&rejection(r#"{"action":"ping"}"#)), ["request_id"]);
        assert_eq!(fields(&rejection(r#"{"action":"ping","request_id":""}"#)), ["request_id"]);
        let long = "x".repeat(MAX_ID_CHARS + 1);
        assert_eq!(fields(&rejection(&format!(r#"{{"action":"ping","request_id":"{long}"}}"#))), ["request_id"]);
        assert!(parse_client_message(&format!(r#"{{"action":"ping","request_id":"{}"}}"#, &long[1..])).is_ok());
    }

    #[test]
    fn identifiers_with_control_characters_are_refused_by_name() {
        for bad in [r"a\nFORGED", r"a\rb", r"a\u001b[31mred", r"a\u0000b", r"a\u0085b"] {
            let frame = format!(r#"{{"action":"ping","request_id":"{bad}"}}"#);
            assert_eq!(fields(&rejection(&frame)), ["request_id"], "{frame}");
            let frame =
                format!(r#"{{"action":"chat","request_id":"r","payload":{{"text":"t","conversation_id":"{bad}"}}}}"#);
            assert_eq!(fields(&rejection(&frame)), ["payload.conversation_id"], "{frame}");
        }
        assert!(parse_client_message(r#"{"action":"ping","request_id":"r-1 ünïcode ✓"}"#).is_ok());
    }

    #[test]
    fn after_seq_is_an_integer_below_two_to_the_53() {
        for bad in ["-1", "18446744073709551615", "1000000000000000000", "\"3\"", "1.5", "9007199254740992"] {
            let frame = format!(r#"{{"action":"resume","request_id":"r","after_seq":{bad}}}"#);
            assert_eq!(fields(&rejection(&frame)), ["after_seq"], "{frame}");
        }
        let frame = r#"{"action":"resume","request_id":"r","after_seq":9007199254740991}"#;
        assert_eq!(
            parse_client_message(frame),
            Ok(ClientMessage::Resume { request_id: "r".into(), after_seq: Some(9007199254740991) })
        );
    }

    #[test]
    fn unknown_action_names_the_allowed_ones() {
        let rejected = rejection(r#"{"action":"dance","request_id":"r"}"#);
        assert!(rejected.error.data.expect("data").to_string().contains("expected one of chat, cancel, resume, ping"));
    }

    #[test]
    fn server_messages_serialise_as_the_spec_shows() {
        let chunk = RequestMessage::Chunk(Chunk::Text("Let me ".into())).numbered("r-1", 1);
        assert_eq!(
            chunk.to_json(),
            r#"{"request_id":"r-1","status":"chunk","seq":1,"chunk":{"type":"text","data":"Let me "}}"#
        );
        assert_eq!(ServerMessage::pong("p-1").to_json(), r#"{"request_id":"p-1","status":"pong"}"#);
        let processing =
            RequestMessage::Processing { conversation_id: "c-42".into(), replayed: false }.numbered("r-1", 0);
        assert_eq!(
            processing.to_json(),
            r#"{"request_id":"r-1","status":"processing","conversation_id":"c-42","seq":0}"#
        );
    }
}
