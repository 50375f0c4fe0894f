//! What the lines the chat service writes mean: one typed [`Record`] per kind of line, and the
//! one mapping between records and the store's events, both ways.
//!
//! The mapping lives in `store`, not in `chat`, because a line's meaning is part of the log
//! format (SPEC §6): the chat service writes and reads records, `replay` shows them, and
//! another store backend must keep the same lines; all of them need it, and it needs nothing
//! but `domain`. No wire type of the WebSocket protocol is stored: `extra` holds each record's
//! own fields, as the serde structs below, so a protocol change cannot silently change the log.
//!
//! The keys and shapes in `extra` are the ones earlier versions wrote (`fingerprint`,
//! `prompt`, `resources`; `name`, `ok`, `duration_ms`; `status`, `metadata`, `error`), so
//! older files read back, and processes of an earlier version sharing the store read new lines.
//! A line that does not read back as a record is an error, never a record with parts missing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ChatEvent, EventType, NewEvent};
use crate::domain::{
    Decision, ElicitationAction, FinishReason, Message, PromptRef, Role, ToolAttachments, ToolCall, Usage,
};

/// One thing the chat service records about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The user's turn as the model saw it; storing it claims the `request_id` store-wide.
    UserTurn(UserTurn),
    /// The model asked for tools, after the text it had written so far.
    ToolCalls {
        model: String,
        text: String,
        calls: Vec<ToolCall>,
    },
    ToolResult(ToolResult),
    /// The final answer; it ends the request.
    Answer {
        text: String,
        figures: AnswerFigures,
    },
    /// The request ended without an answer, after `partial_text` had streamed.
    Ended {
        model: String,
        partial_text: String,
        ending: Ending,
    },
    /// A question to the request's user, or its answer (SPEC §2.6), recorded before it takes
    /// effect: before the question goes out, before a decided call runs or an answer goes back
    /// to the MCP server.
    Question(Question),
}

/// The human-in-the-loop records. Stored as `meta` events, which the model never sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "question", rename_all = "snake_case")]
pub enum Question {
    ApprovalRequest(ApprovalAsked),
    Approval(ApprovalDecided),
    Elicitation(ElicitationAsked),
    ElicitationResult(ElicitationAnswered),
}

/// A tool call held until its user decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAsked {
    pub call_id: String,
    /// The model-facing tool name.
    pub name: String,
    pub server: String,
    pub arguments: Value,
    pub annotations: Value,
    pub timeout_seconds: f64,
}

/// `by` is the user who decided; `None` when the timeout did (then `decision` is `deny`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    pub call_id: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An MCP server's question, as the user was shown it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElicitationAsked {
    pub elicitation_id: String,
    pub server: String,
    /// `form` or `url`.
    pub mode: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub timeout_seconds: f64,
    /// Whether the answer's content may be logged: only when the server said it is not
    /// sensitive.
    pub log_content: bool,
}

/// What went back to the server. `by` is `None` when the timeout answered (`cancel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElicitationAnswered {
    pub elicitation_id: String,
    pub action: ElicitationAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only when the question allowed logging it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
}

impl Question {
    /// The line's `content`: what happened, in words, for anyone reading the log.
    pub fn summary(&self) -> String {
        let by =
            |by: &Option<String>| by.as_deref().map_or_else(|| " (timed out)".to_owned(), |by| format!(" by {by}"));
        match self {
            Question::ApprovalRequest(asked) => format!("approval asked for {} ({})", asked.name, asked.call_id),
            Question::Approval(decided) => {
                format!("{} {}{}", decided.call_id, json_word(&decided.decision), by(&decided.by))
            }
            Question::Elicitation(asked) => format!("{} asks ({} mode): {}", asked.server, asked.mode, asked.message),
            Question::ElicitationResult(answered) => {
                format!("{} {}{}", answered.elicitation_id, json_word(&answered.action), by(&answered.by))
            }
        }
    }
}

fn json_word(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserTurn {
    /// Resource contents, the rendered prompt and the user's text, joined.
    pub text: String,
    /// Identifies the request's payload, so that its `request_id` with another payload is
    /// refused in every process sharing the store.
    pub fingerprint: String,
    pub prompt: Option<PromptRef>,
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub call_id: String,
    /// The model-facing tool name (`<server>__<tool>`).
    pub name: String,
    pub ok: bool,
    /// The tool's whole output as text: the log is the audit record.
    pub content: String,
    /// What the model got instead, when `content` was longer than `max_tool_result_chars`:
    /// its head and tail and a line saying how much was cut.
    pub model_content: Option<String>,
    /// Images, structured content and resource links the tool returned.
    pub attachments: ToolAttachments,
    pub duration_ms: f64,
}

impl ToolResult {
    /// The tool message the model reads in the turn that ran the tool: its text and images.
    /// Later turns read [`Record::message`], the text only.
    pub fn for_model(&self) -> Message {
        Message { images: self.attachments.images.clone(), ..self.model_message() }
    }

    fn model_message(&self) -> Message {
        Message::tool(self.call_id.clone(), self.model_content.as_ref().unwrap_or(&self.content).clone())
    }
}

/// What answering cost and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerFigures {
    /// Tokens spent over all hops.
    pub tokens: u64,
    pub usage: Usage,
    pub model: String,
    pub tool_hops: u32,
    pub finish_reason: FinishReason,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Cancelled,
    Failed(Failure),
}

/// Why a request failed, as its client was told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub code: u16,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// What a client is told about a request whose server process stopped mid-turn.
pub const INTERRUPTED: &str =
    "interrupted: the server process answering this request stopped; send it again with a new request_id";

/// The end stored for a request whose owner process is gone (SPEC §6, no stuck requests): an
/// `error` 503, so that resending it gets a terminal message instead of running a half-done
/// turn, whose tools may have had side effects, a second time.
pub fn interrupted(conversation_id: String, request_id: String, user: String) -> NewEvent {
    let failure = Failure { code: 503, message: INTERRUPTED.to_owned(), data: None };
    let ended = Record::Ended { model: String::new(), partial_text: String::new(), ending: Ending::Failed(failure) };
    ended.into_event(conversation_id, request_id, user, 0)
}

/// A stored event that is not a record this version can read.
#[derive(Debug, thiserror::Error)]
#[error("event {event_id} (seq {seq} of conversation {conversation_id:?}) is not a readable record: {reason}")]
pub struct RecordError {
    pub event_id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub reason: String,
}

/// `extra` of a user turn.
#[derive(Serialize, Deserialize)]
struct UserExtra {
    fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<PromptRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resources: Vec<String>,
}

/// `extra` of a tool result.
#[derive(Serialize, Deserialize)]
struct ToolResultExtra {
    name: String,
    ok: bool,
    duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_content: Option<String>,
    #[serde(flatten)]
    attachments: ToolAttachments,
}

/// `extra` of the event that ends a request, tagged by `status`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum EndExtra {
    Complete { metadata: StoredFigures },
    Cancelled,
    Error { error: Failure },
}

/// The key of `extra` whose presence marks the event that ends a request; stores that track
/// running requests (PostgreSQL's leases) recognise the end by it.
pub const END_KEY: &str = "status";
/// The key of a claim's `extra` (a `user_message`) naming the process that stored it, where the
/// store tracks owners in its lines (JSONL: [`super::process`]).
pub const OWNER_KEY: &str = "owner";
/// The key whose presence marks a question or its answer.
const QUESTION_KEY: &str = "question";

#[derive(Serialize, Deserialize)]
struct StoredFigures {
    #[serde(flatten)]
    figures: AnswerFigures,
    /// Always false in the log. Earlier versions require the key when they read the line.
    #[serde(default)]
    cached: bool,
}

impl Record {
    /// The message the model sees for this record; its cost is the event's `token_count`.
    pub fn message(&self) -> Message {
        match self {
            Record::UserTurn(turn) => Message::user(turn.text.clone()),
            Record::ToolCalls { text, calls, .. } => Message::assistant(text.clone(), calls.clone()),
            Record::ToolResult(result) => result.model_message(),
            Record::Answer { text, .. } => Message::assistant(text.clone(), Vec::new()),
            Record::Ended { partial_text, .. } => Message::assistant(partial_text.clone(), Vec::new()),
            Record::Question(question) => Message::system(question.summary()),
        }
    }

    /// Whether this record ends its request.
    pub fn is_end(&self) -> bool {
        matches!(self, Record::Answer { .. } | Record::Ended { .. })
    }

    /// The event that stores this record, a request of `user`.
    pub fn into_event(self, conversation_id: String, request_id: String, user: String, token_count: u64) -> NewEvent {
        let event = |kind, role, content| NewEvent {
            conversation_id,
            request_id: Some(request_id),
            user,
            kind,
            role: Some(role),
            content: Some(content),
            tool_calls: None,
            tool_call_id: None,
            model: None,
            usage: None,
            token_count,
            extra: Map::new(),
        };
        match self {
            Record::UserTurn(UserTurn { text, fingerprint, prompt, resources }) => NewEvent {
                extra: to_extra(UserExtra { fingerprint, prompt, resources }),
                ..event(EventType::UserMessage, Role::User, text)
            },
            Record::ToolCalls { model, text, calls } => NewEvent {
                tool_calls: Some(calls),
                model: Some(model),
                ..event(EventType::AssistantMessage, Role::Assistant, text)
            },
            Record::ToolResult(ToolResult { call_id, name, ok, content, model_content, attachments, duration_ms }) => {
                NewEvent {
                    tool_call_id: Some(call_id),
                    extra: to_extra(ToolResultExtra { name, ok, duration_ms, model_content, attachments }),
                    ..event(EventType::ToolResult, Role::Tool, content)
                }
            }
            Record::Answer { text, figures } => NewEvent {
                model: Some(figures.model.clone()),
                usage: Some(figures.usage),
                extra: to_extra(EndExtra::Complete { metadata: StoredFigures { figures, cached: false } }),
                ..event(EventType::AssistantMessage, Role::Assistant, text)
            },
            Record::Ended { model, partial_text, ending } => NewEvent {
                model: Some(model),
                extra: to_extra(match ending {
                    Ending::Cancelled => EndExtra::Cancelled,
                    Ending::Failed(error) => EndExtra::Error { error },
                }),
                ..event(EventType::Meta, Role::Assistant, partial_text)
            },
            Record::Question(question) => {
                NewEvent { extra: to_extra(&question), ..event(EventType::Meta, Role::System, question.summary()) }
            }
        }
    }

    /// Reads a stored event back as the record it stores.
    pub fn from_event(event: &ChatEvent) -> Result<Record, RecordError> {
        let error = |reason: String| RecordError {
            event_id: event.id.clone(),
            conversation_id: event.conversation_id.clone(),
            seq: event.seq,
            reason,
        };
        let required = |value: Option<&String>, key: &str| value.cloned().ok_or_else(|| error(format!("no {key}")));
        let content = required(event.content.as_ref(), "content")?;
        let ends = event.extra.contains_key(END_KEY);
        Ok(match event.kind {
            EventType::Meta if event.extra.contains_key(QUESTION_KEY) => {
                Record::Question(from_extra(&event.extra, "a question or its answer").map_err(error)?)
            }
            EventType::UserMessage => {
                let UserExtra { fingerprint, prompt, resources } =
                    from_extra(&event.extra, "a user turn").map_err(error)?;
                Record::UserTurn(UserTurn { text: content, fingerprint, prompt, resources })
            }
            EventType::ToolResult => {
                let ToolResultExtra { name, ok, duration_ms, model_content, attachments } =
                    from_extra(&event.extra, "a tool result").map_err(error)?;
                let call_id = required(event.tool_call_id.as_ref(), "tool_call_id")?;
                Record::ToolResult(ToolResult { call_id, name, ok, content, model_content, attachments, duration_ms })
            }
            EventType::AssistantMessage | EventType::Meta if ends => {
                match from_extra(&event.extra, "the end of a request").map_err(error)? {
                    EndExtra::Complete { metadata } => Record::Answer { text: content, figures: metadata.figures },
                    EndExtra::Cancelled => Record::Ended {
                        model: required(event.model.as_ref(), "model")?,
                        partial_text: content,
                        ending: Ending::Cancelled,
                    },
                    EndExtra::Error { error } => Record::Ended {
                        model: required(event.model.as_ref(), "model")?,
                        partial_text: content,
                        ending: Ending::Failed(error),
                    },
                }
            }
            EventType::AssistantMessage => Record::ToolCalls {
                model: required(event.model.as_ref(), "model")?,
                text: content,
                calls: event
                    .tool_calls
                    .clone()
                    .ok_or_else(|| error("an assistant message without tool_calls or status".into()))?,
            },
            EventType::SystemUpdate | EventType::Meta => {
                return Err(error(format!("a {:?} event is no record of a request", event.kind)));
            }
        })
    }
}

fn to_extra(fields: impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(fields) {
        Ok(Value::Object(map)) => map,
        other => unreachable!("a record's extra serialises to a JSON object, got {other:?}"),
    }
}

fn from_extra<T: DeserializeOwned>(extra: &Map<String, Value>, what: &str) -> Result<T, String> {
    T::deserialize(Value::Object(extra.clone())).map_err(|error| format!("extra is not that of {what}: {error}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::Image;
    use crate::store::EventStore;
    use crate::store::memory::MemoryStore;

    fn figures() -> AnswerFigures {
        AnswerFigures {
            tokens: 42,
            usage: Usage { prompt_tokens: 30, completion_tokens: 12, total_tokens: 42 },
            model: "m".into(),
            tool_hops: 1,
            finish_reason: FinishReason::Stop,
            duration_ms: 812,
        }
    }

    /// Every record, with the `extra` the previous version of the chat service wrote for it
    /// (built there from the protocol's `Metadata` and `ErrorBody` and a JSON map); the
    /// questions, new in this version, with the `extra` they are written with.
    fn records_and_their_extra() -> Vec<(Record, Value)> {
        let call = ToolCall { id: "call_1".into(), name: "demo__sum".into(), arguments: json!({"a": 2, "b": 3}) };
        let prompt = PromptRef { name: "demo__explain".into(), arguments: [("topic".into(), "tides".into())].into() };
        vec![
            (
                Record::UserTurn(UserTurn {
                    text: "what is 2+3".into(),
                    fingerprint: "f00d".into(),
                    prompt: Some(prompt),
                    resources: vec!["demo://readme".into()],
                }),
                json!({"fingerprint": "f00d", "prompt": {"name": "demo__explain", "arguments": {"topic": "tides"}},
                       "resources": ["demo://readme"]}),
            ),
            (
                Record::UserTurn(UserTurn {
                    text: "hi".into(),
                    fingerprint: "f00d".into(),
                    prompt: None,
                    resources: Vec::new(),
                }),
                json!({"fingerprint": "f00d"}),
            ),
            (Record::ToolCalls { model: "m".into(), text: "Let me".into(), calls: vec![call] }, json!({})),
            (
                Record::ToolResult(ToolResult {
                    call_id: "call_1".into(),
                    name: "demo__sum".into(),
                    ok: true,
                    content: "5".into(),
                    model_content: None,
                    attachments: ToolAttachments::default(),
                    duration_ms: 0.7,
                }),
                json!({"name": "demo__sum", "ok": true, "duration_ms": 0.7}),
            ),
            (
                Record::ToolResult(ToolResult {
                    call_id: "call_2".into(),
                    name: "everything__get-tiny-image".into(),
                    ok: true,
                    content: "a long text".into(),
                    model_content: Some("a lo… cut …ext".into()),
                    attachments: ToolAttachments {
                        images: vec![Image { mime_type: "image/png".into(), data: "iVBO".into() }],
                        structured: Some(json!({"n": 1})),
                        resource_links: Vec::new(),
                    },
                    duration_ms: 2.0,
                }),
                json!({"name": "everything__get-tiny-image", "ok": true, "duration_ms": 2.0,
                       "model_content": "a lo… cut …ext",
                       "images": [{"mime_type": "image/png", "data": "iVBO"}], "structured": {"n": 1}}),
            ),
            (
                Record::Answer { text: "5".into(), figures: figures() },
                json!({"status": "complete", "metadata": {"tokens": 42,
                    "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
                    "model": "m", "tool_hops": 1, "finish_reason": "stop", "duration_ms": 812, "cached": false}}),
            ),
            (
                Record::Ended { model: "m".into(), partial_text: "Let".into(), ending: Ending::Cancelled },
                json!({"status": "cancelled"}),
            ),
            (
                Record::Ended {
                    model: "m".into(),
                    partial_text: String::new(),
                    ending: Ending::Failed(Failure { code: 503, message: "shutting down".into(), data: None }),
                },
                json!({"status": "error", "error": {"code": 503, "message": "shutting down"}}),
            ),
            (
                Record::Question(Question::ApprovalRequest(ApprovalAsked {
                    call_id: "call_1".into(),
                    name: "demo__delete_note".into(),
                    server: "demo".into(),
                    arguments: json!({"note": "n"}),
                    annotations: json!({"destructiveHint": true}),
                    timeout_seconds: 300.0,
                })),
                json!({"question": "approval_request", "call_id": "call_1", "name": "demo__delete_note",
                       "server": "demo", "arguments": {"note": "n"}, "annotations": {"destructiveHint": true},
                       "timeout_seconds": 300.0}),
            ),
            (
                Record::Question(Question::Approval(ApprovalDecided {
                    call_id: "call_1".into(),
                    decision: Decision::Deny,
                    by: None,
                    reason: Some("approval timed out".into()),
                })),
                json!({"question": "approval", "call_id": "call_1", "decision": "deny", "reason": "approval timed out"}),
            ),
            (
                Record::Question(Question::Elicitation(ElicitationAsked {
                    elicitation_id: "e-1".into(),
                    server: "demo".into(),
                    mode: "url".into(),
                    message: "Sign in".into(),
                    requested_schema: None,
                    url: Some("https://example.com/in".into()),
                    timeout_seconds: 300.0,
                    log_content: false,
                })),
                json!({"question": "elicitation", "elicitation_id": "e-1", "server": "demo", "mode": "url",
                       "message": "Sign in", "url": "https://example.com/in", "timeout_seconds": 300.0,
                       "log_content": false}),
            ),
            (
                Record::Question(Question::ElicitationResult(ElicitationAnswered {
                    elicitation_id: "e-1".into(),
                    action: ElicitationAction::Accept,
                    by: Some("alice".into()),
                    reason: None,
                    content: Some(json!({"name": "Ada"})),
                })),
                json!({"question": "elicitation_result", "elicitation_id": "e-1", "action": "accept", "by": "alice",
                       "content": {"name": "Ada"}}),
            ),
        ]
    }

    async fn stored(record: Record) -> ChatEvent {
        let store = MemoryStore::new();
        let mut events =
            store.append(vec![record.into_event("c".into(), "r".into(), "alice".into(), 1)]).await.expect("append");
        events.pop().expect("one event")
    }

    #[tokio::test]
    async fn records_keep_the_extra_of_earlier_versions_and_read_back_whole() {
        for (record, extra) in records_and_their_extra() {
            let event = stored(record.clone()).await;
            assert_eq!(Value::Object(event.extra.clone()), extra, "{record:?}");
            assert_eq!(Record::from_event(&event).expect("reads back"), record);
        }
    }

    #[tokio::test]
    async fn a_record_whose_extra_does_not_parse_is_an_error_naming_the_event() {
        let mut event = stored(Record::Answer { text: "5".into(), figures: figures() }).await;
        event.extra.insert("metadata".into(), json!({"tokens": "many"}));
        let error = Record::from_event(&event).expect_err("unreadable");
        assert_eq!((error.event_id.as_str(), error.seq), (event.id.as_str(), 1));
        assert!(error.reason.contains("the end of a request"), "{error}");

        let mut event = stored(Record::ToolResult(ToolResult {
            call_id: "call_1".into(),
            name: "demo__sum".into(),
            ok: true,
            content: "5".into(),
            model_content: None,
            attachments: ToolAttachments::default(),
            duration_ms: 1.0,
        }))
        .await;
        event.tool_call_id = None;
        assert!(Record::from_event(&event).expect_err("no call id").reason.contains("tool_call_id"));
    }
}
