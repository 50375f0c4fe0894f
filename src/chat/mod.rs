//! The chat service: one turn of the tool loop per request, and the bookkeeping that makes
//! requests survive their sockets (dedup across the store, attach, resume, cancel, drain).
//!
//! It knows the model, the tools and the log only through [`LlmProvider`], [`ToolProvider`]
//! and [`EventStore`]; the WebSocket layer knows only this module.

mod cached;
mod context;
mod run;
mod turn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use run::{Frame, Run};

use crate::config::ChatServiceSettings;
use crate::llm::LlmProvider;
use crate::mcp::ToolProvider;
use crate::protocol::{ChatPayload, ErrorBody, ServerMessage};
use crate::store::EventStore;

/// The collaborators of the chat service.
#[derive(Clone)]
pub struct ChatDeps {
    pub llm: Arc<dyn LlmProvider>,
    pub tools: Arc<dyn ToolProvider>,
    pub store: Arc<dyn EventStore>,
}

/// How a client receives a request's messages.
pub enum Subscription {
    /// Follow a run in this process from message `from` on.
    Live { run: Arc<Run>, from: usize },
    /// A finished request, from the store, already numbered from `seq` 0.
    Replay(Vec<ServerMessage>),
}

pub struct ChatService {
    settings: ChatServiceSettings,
    deps: ChatDeps,
    /// Requests running in this process, by `request_id`. A run leaves the map once its
    /// terminal message is published; by then its events are in the store.
    runs: Mutex<HashMap<String, Arc<Run>>>,
    /// Cancelled when the server starts shutting down: no new requests.
    draining: CancellationToken,
    /// Cancelled when the shutdown grace is over: running turns end with a 503.
    abort: CancellationToken,
    turns: TaskTracker,
}

impl ChatService {
    pub fn new(settings: ChatServiceSettings, deps: ChatDeps) -> Arc<Self> {
        Arc::new(Self {
            settings,
            deps,
            runs: Mutex::new(HashMap::new()),
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            turns: TaskTracker::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.deps.store
    }

    /// Starts a `chat` request, or attaches to it when the same request is already running
    /// here. A request the store already holds is answered from the store by the turn itself,
    /// so that concurrent duplicates in this process all see the same answer.
    pub fn submit(
        self: &Arc<Self>,
        request_id: String,
        payload: ChatPayload,
        default_conversation: &str,
    ) -> Result<Subscription, ErrorBody> {
        if self.draining.is_cancelled() {
            return Err(shutting_down());
        }
        let fingerprint = fingerprint(&payload);
        let mut runs = self.lock_runs();
        if let Some(run) = runs.get(&request_id) {
            return if run.fingerprint == fingerprint {
                Ok(Subscription::Live { run: run.clone(), from: 0 })
            } else {
                Err(reused_request_id(&request_id))
            };
        }
        let conversation_id = payload.conversation_id.clone().unwrap_or_else(|| default_conversation.to_owned());
        let run = Run::new(request_id.clone(), conversation_id, fingerprint, self.abort.child_token());
        runs.insert(request_id, run.clone());
        drop(runs);
        let service = self.clone();
        let turn_run = run.clone();
        self.turns.spawn(async move {
            turn::run_turn(&service, &turn_run, payload).await;
            service.lock_runs().remove(&turn_run.request_id);
        });
        Ok(Subscription::Live { run, from: 0 })
    }

    /// `resume`: the messages of a request after `after_seq`, then live; a finished request is
    /// replayed whole in compact form.
    pub async fn resume(&self, request_id: &str, after_seq: Option<u64>) -> Result<Subscription, ErrorBody> {
        if let Some(run) = self.lock_runs().get(request_id) {
            let from = after_seq.map_or(0, |seq| seq as usize + 1);
            return Ok(Subscription::Live { run: run.clone(), from });
        }
        let events = self.deps.store.request(request_id).await.map_err(|error| internal_error(&error))?;
        match cached::stored_request(&events) {
            cached::StoredRequest::Unknown => {
                Err(ErrorBody::new(404, format!("unknown request_id {request_id:?}: nothing to resume")))
            }
            cached::StoredRequest::Running { .. } => Err(running_elsewhere(request_id)),
            cached::StoredRequest::Finished { messages, .. } => Ok(Subscription::Replay(messages)),
        }
    }

    /// `cancel`: stops a request running in this process.
    pub fn cancel(&self, request_id: &str) -> Result<(), ErrorBody> {
        match self.lock_runs().get(request_id) {
            Some(run) => {
                run.cancel.cancel();
                Ok(())
            }
            None => Err(ErrorBody::new(
                404,
                format!("request_id {request_id:?} is not running in this server (unknown or already finished)"),
            )),
        }
    }

    /// Refuses new requests from now on (with 503); running ones go on.
    pub fn stop_accepting(&self) {
        self.draining.cancel();
    }

    /// Waits up to `grace` for running turns, then cancels the rest (their clients get a 503)
    /// and waits for them to record that.
    pub async fn drain(&self, grace: Duration) {
        self.stop_accepting();
        self.turns.close();
        if tokio::time::timeout(grace, self.turns.wait()).await.is_err() {
            tracing::warn!(running = self.lock_runs().len(), "shutdown grace over: cancelling running turns");
            self.abort.cancel();
            self.turns.wait().await;
        }
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Identifies a chat payload: the hash of its canonical JSON.
fn fingerprint(payload: &ChatPayload) -> String {
    let canonical = serde_json::to_vec(payload).expect("a chat payload is plain JSON data");
    hex::encode(Sha256::digest(canonical))
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(503, "the server is shutting down; send the request again to reach another instance")
}

fn reused_request_id(request_id: &str) -> ErrorBody {
    ErrorBody::new(
        409,
        format!("request_id {request_id:?} was already used with a different payload; choose a new request_id"),
    )
}

fn running_elsewhere(request_id: &str) -> ErrorBody {
    ErrorBody::new(
        409,
        format!(
            "request_id {request_id:?} is still being answered by another server process sharing the store; \
             send it again once it has finished to receive the stored result"
        ),
    )
}

/// A bug or an infrastructure failure: logged with a correlation id that the client sees.
pub fn internal_error(error: &dyn std::fmt::Display) -> ErrorBody {
    let correlation_id = uuid::Uuid::now_v7().to_string();
    tracing::error!(%correlation_id, %error, "internal error");
    ErrorBody::new(500, format!("internal error (correlation id {correlation_id}); the server log has the details"))
}
