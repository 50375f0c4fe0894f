//! The event log (SPEC §6): the event type and the store interface the chat service uses.
//!
//! The chat service sees only [`EventStore`]; `jsonl` (one host) and `postgres` (several hosts) are
//! the production implementations and `memory` the one for unit tests of the turn. `record` says what the chat service's lines
//! mean.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{Kept, Message, Role, ToolCall, Usage};

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
    /// The principal the event belongs to (SPEC §6): who made the request, or the admin of an
    /// admin action.
    pub user: String,
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
    /// Absent only on lines written before events named their user; those belong to
    /// [`ANONYMOUS`](crate::store::ANONYMOUS). Not filled in on read, so such a line
    /// serialises back to the very bytes its hash covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
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
    /// What the event is to a model, built by the first turn that sends it; the stores' tails
    /// share their events, so every later turn's context shares the message too.
    #[serde(skip)]
    pub model_message: Kept<Option<Arc<Message>>>,
}

/// How much of a conversation's end [`EventStore::recent`] must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentLimit {
    /// The messages returned hold more than this many tokens (sum of their `token_count`)...
    pub tokens: u64,
    /// ...and there are at least this many of them.
    pub messages: usize,
}

impl EventType {
    /// Whether events of this kind are messages a model sees (bookkeeping events are not).
    pub fn is_message(self) -> bool {
        matches!(self, EventType::UserMessage | EventType::AssistantMessage | EventType::ToolResult)
    }
}

impl ChatEvent {
    /// Who the event belongs to; lines from before `user` existed are [`ANONYMOUS`]'s.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(ANONYMOUS)
    }

    /// The message a model is sent for this event; `None` for bookkeeping events and for a
    /// tool result that names no call.
    pub fn message(&self) -> Option<&Arc<Message>> {
        self.model_message
            .get_or_init(|| {
                let content = self.content.clone().unwrap_or_default();
                let message = match self.kind {
                    EventType::ToolResult => Message::tool(self.tool_call_id.clone()?, content),
                    EventType::AssistantMessage if matches!(self.role, Some(Role::Assistant) | None) => {
                        Message::assistant(content, self.tool_calls.clone().unwrap_or_default())
                    }
                    EventType::UserMessage | EventType::AssistantMessage => Message::user(content),
                    EventType::SystemUpdate | EventType::Meta => return None,
                };
                Some(Arc::new(message))
            })
            .as_ref()
    }
}

/// The user of events written with auth off, and of lines written before events had a user.
pub const ANONYMOUS: &str = "anonymous";

/// A conversation as listed by [`EventStore::conversations`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    pub conversation_id: String,
    /// Its owner: the user of its first event.
    pub user: String,
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
    /// A `user_message` of one user in a conversation another user created.
    #[error("conversation {conversation_id:?} belongs to another user")]
    ConversationOwned { conversation_id: String },
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
    /// are durable. A `user_message` whose `request_id` its user already holds refuses the
    /// whole batch with [`StoreError::DuplicateRequest`]; one in a conversation that another
    /// user created, with [`StoreError::ConversationOwned`].
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError>;

    /// The events of one conversation, in `seq` order; empty when unknown.
    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError>;

    /// The newest events of a conversation, as much as a context within `limit` needs, in `seq`
    /// order; what the chat service reads each turn, so its cost follows `limit`, never the
    /// conversation's length.
    ///
    /// The contract every backend keeps: take events newest first until the messages among
    /// them ([`EventType::is_message`]) hold more than `limit.tokens` tokens and number at
    /// least `limit.messages`; then keep taking the older events of the request the oldest
    /// taken event belongs to, so that a request (a tool call with its results, above all)
    /// is never cut; stop there. A conversation that runs out first is returned whole, which
    /// the caller sees from its first event's `seq` being 1. Events without a `request_id`
    /// are a request of their own. Like every method it sees what other processes appended
    /// up to the call. (JSONL: the index's byte offsets, read backwards; PostgreSQL: rows by
    /// descending `seq`, fetched in limited pages.) The events are shared, not copied: every
    /// turn reads a whole context's worth, and a backend that keeps them hands out its own.
    async fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<Arc<ChatEvent>>, StoreError>;

    /// The events of `user` carrying `request_id`, in log order; empty when unknown. Request
    /// ids are per user: another user's equal `request_id` is another request.
    async fn request(&self, user: &str, request_id: &str) -> Result<Vec<ChatEvent>, StoreError>;

    /// The conversations `user` created.
    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError>;

    /// Model tokens `user` spent on the UTC day `day` (`YYYY-MM-DD`): the `usage` of the
    /// user's events stamped that day, in every process sharing the store.
    async fn tokens_spent(&self, user: &str, day: &str) -> Result<u64, StoreError>;

    /// How often this process renews the leases of the requests it runs and finishes the
    /// requests of processes that are gone ([`EventStore::finish_orphans`]); `None` for a
    /// store no other process shares.
    fn sweep_every(&self) -> Option<std::time::Duration> {
        None
    }

    /// Extends this process's leases on `requests`, the `(user, request_id)` it is still
    /// running; a no-op for a store whose claims carry no lease.
    async fn renew_leases(&self, _requests: &[(String, String)]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores the end of every request claimed by a process that is gone (its lease ran out
    /// on PostgreSQL; its process is dead for JSONL) without its end being stored: an
    /// `error` 503 [`record::INTERRUPTED`], so that a resent request gets a terminal message
    /// and the half-done turn never runs twice. Each such request is finished once, whichever
    /// processes sweep at the same time. Returns the stored ends.
    async fn finish_orphans(&self) -> Result<Vec<ChatEvent>, StoreError> {
        Ok(Vec::new())
    }

    /// Whether the frames of running requests are shared with processes on other hosts
    /// ([`EventStore::share_frames`], [`EventStore::follow_frames`]), so that a `resume`
    /// reaching another replica follows its request live.
    fn shares_frames(&self) -> bool {
        false
    }

    /// For `user`'s request this process has just claimed (called right after the claim, before
    /// the request appends its end): resolves to `true` once a process on another host follows
    /// it, and the frames from the first on are to be shared ([`EventStore::share_frames`]);
    /// to `false` when the request ended with nobody following, so that a request nobody
    /// follows, almost every one, costs the store nothing.
    fn followers(&self, _user: &str, _request_id: &str) -> FollowersWanted {
        Box::pin(std::future::ready(false))
    }

    /// Shares the next frames of a request running in this process.
    async fn share_frames(&self, _batch: FrameBatch<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Follows `user`'s request running in another process: its shared frames from the first
    /// on, as they come; the feed ends after the terminal frame. `None` when the request is no
    /// longer running anywhere: its end is in the store.
    async fn follow_frames(&self, _user: &str, _request_id: &str) -> Result<Option<FrameFeed>, StoreError> {
        Ok(None)
    }
}

/// What [`EventStore::followers`] returns.
pub type FollowersWanted = futures::future::BoxFuture<'static, bool>;

/// The next frames of `user`'s request running in this process: JSON text as its clients were
/// sent it, numbered from `first_seq`; `terminal` when the last of them ends the request.
#[derive(Debug, Clone, Copy)]
pub struct FrameBatch<'a> {
    pub user: &'a str,
    pub request_id: &'a str,
    pub first_seq: u64,
    pub frames: &'a [Arc<str>],
    pub terminal: bool,
}

/// One frame of a request running in another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFrame {
    /// Empty when the request's process is gone: the request's end is in the store.
    pub frame: Arc<str>,
    pub terminal: bool,
}

/// What [`EventStore::follow_frames`] yields.
pub type FrameFeed = tokio::sync::mpsc::UnboundedReceiver<Result<SharedFrame, StoreError>>;

pub mod chain;
pub mod jsonl;
pub mod lines;
pub mod location;
pub mod memory;
pub mod metered;
pub mod postgres;
pub mod process;
pub mod recent;
pub mod record;
mod tails;
pub mod verify;
