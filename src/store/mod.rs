//! The event log (SPEC §6): the event type and the store interface the chat service uses.
//!
//! The chat service sees only [`EventStore`]; `jsonl` (one host) and `postgres` (several hosts) are
//! the production implementations and `memory` the one for unit tests of the turn. `record` says what the chat service's lines
//! mean.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{Role, ToolCall, Usage};

/// The kind of a logged event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    UserMessage,
    AssistantMessage,
    ToolResult,
    SystemUpdate,
    Meta,
}

/// An event as the chat service hands it over; the store assigns `id`, `seq`, `timestamp`,
/// `prev` and `hash` when it appends it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub conversation_id: String,
    pub request_id: Option<String>,
    pub kind: EventType,
    pub role: Option<Role>,
    pub content: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    pub tool_call_id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub token_count: u64,
    pub extra: Map<String, Value>,
}

/// One line of `events.jsonl`. Field order is the line's key order; `prev` and `hash` last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEvent {
    pub v: u32,
    pub id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub request_id: Option<String>,
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub role: Option<Role>,
    pub content: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    pub tool_call_id: Option<String>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub token_count: u64,
    pub extra: Map<String, Value>,
    pub prev: String,
    pub hash: String,
}

/// A conversation as listed by [`EventStore::conversations`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    pub conversation_id: String,
    pub events: u64,
    pub first_timestamp: String,
    pub last_timestamp: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A `user_message` claimed a `request_id` that an earlier event (possibly written by
    /// another process) already holds.
    #[error("request_id {request_id:?} is already taken by event {event_id} of conversation {conversation_id:?}")]
    DuplicateRequest { request_id: String, conversation_id: String, event_id: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: line {line}: {message}")]
    Corrupt { path: String, line: u64, message: String },
    /// The database did not answer or refused the statement; nothing of the batch is stored.
    #[error("the event database {store} is unavailable: {message}")]
    Unavailable { store: String, message: String },
}

/// The conversation log. Every method sees what other processes sharing the store have
/// appended up to the moment it is called.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends the batch atomically (all lines or none) and returns the stored events once they
    /// are durable. A `user_message` whose `request_id` is already in the store refuses the
    /// whole batch with [`StoreError::DuplicateRequest`].
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError>;

    /// The events of one conversation, in `seq` order; empty when unknown.
    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError>;

    /// The events carrying `request_id`, in log order; empty when unknown.
    async fn request(&self, request_id: &str) -> Result<Vec<ChatEvent>, StoreError>;

    /// Every conversation in the store.
    async fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError>;

    /// How often the leases of running requests must be renewed; `None` for a store that
    /// holds no leases (JSONL: its processes share one host).
    fn lease_renewal(&self) -> Option<std::time::Duration> {
        None
    }

    /// Extends this process's leases on `request_ids`, the requests it is still running.
    async fn renew_leases(&self, _request_ids: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Requests whose owner is gone (its lease ran out) without their end being stored. Each
    /// is handed to one caller only, which must store its end.
    async fn take_orphans(&self) -> Result<Vec<Orphan>, StoreError> {
        Ok(Vec::new())
    }
}

/// A request claimed by a process that is gone before it stored the request's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub request_id: String,
    pub conversation_id: String,
}

pub mod chain;
pub mod jsonl;
pub mod lines;
pub mod location;
pub mod memory;
pub mod metered;
pub mod postgres;
pub mod record;
pub mod verify;
