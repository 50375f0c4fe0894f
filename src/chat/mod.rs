//! The chat service: one turn of the tool loop per request, and the bookkeeping that makes
//! requests survive their sockets (dedup across the store, attach, resume, cancel, drain).
//!
//! It knows the model, the tools and the log only through [`LlmProvider`], [`ToolProvider`]
//! and [`EventStore`]; the WebSocket layer knows only this module.

mod answer_text;
mod cached;
mod context;
mod dedup;
pub mod leases;
mod questions;
mod relay;
mod run;
#[cfg(test)]
mod tests;
mod turn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use run::{Run, SerializedMessage};

use crate::config::ChatServiceSettings;
use crate::llm::LlmProvider;
use crate::mcp::ToolProvider;
use crate::protocol::{ApprovalAnswer, ChatPayload, ElicitationAnswer, ErrorBody};
use crate::store::EventStore;
use dedup::Standing;

/// The collaborators of the chat service.
#[derive(Clone)]
pub struct ChatDeps {
    pub llm: Arc<dyn LlmProvider>,
    pub tools: Arc<dyn ToolProvider>,
    pub store: Arc<dyn EventStore>,
}

/// How a client receives a request's messages: a run (live, or the replay of a finished
/// request), from message `from` on.
pub struct Subscription {
    pub run: Arc<Run>,
    pub from: usize,
}

/// A request running in this process.
struct Active {
    run: Arc<Run>,
    /// Identifies the payload, so a reused `request_id` with another payload is a 409.
    fingerprint: String,
    /// Cancelled by the client's `cancel`. A child of the service's abort token, so shutdown
    /// reaches the turn and its tool calls through it too.
    cancel: CancellationToken,
}

/// A request as its user names it: request ids are unique per user (SPEC §2.4).
type RequestKey = (String, String);

fn request_key(user: &str, request_id: &str) -> RequestKey {
    (user.to_owned(), request_id.to_owned())
}

pub struct ChatService {
    settings: ChatServiceSettings,
    deps: ChatDeps,
    /// Requests running in this process, by user and `request_id`. A run leaves the map once
    /// its terminal message is published; by then its events are in the store.
    runs: Mutex<HashMap<RequestKey, Active>>,
    /// Cancelled when the server starts shutting down: no new requests.
    draining: CancellationToken,
    /// Cancelled when the shutdown grace is over: running turns end with a 503.
    abort: CancellationToken,
    turns: TaskTracker,
}

impl ChatService {
    /// With a store that leases claims, also starts keeping this process's leases and
    /// finishing the requests of processes that are gone (`leases`); needs a tokio runtime then.
    pub fn new(settings: ChatServiceSettings, deps: ChatDeps) -> Arc<Self> {
        let renewal = deps.store.sweep_every();
        let service = Arc::new(Self {
            settings,
            deps,
            runs: Mutex::new(HashMap::new()),
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
            turns: TaskTracker::new(),
        });
        if let Some(every) = renewal {
            tokio::spawn(leases::keep(Arc::downgrade(&service), every));
        }
        service
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.deps.store
    }

    /// Starts `user`'s `chat` request, or answers a known one of theirs: attached to its run
    /// when it is running here, its stored result when it has finished.
    pub async fn submit(
        self: &Arc<Self>,
        user: &str,
        request_id: String,
        payload: ChatPayload,
        default_conversation: &str,
    ) -> Result<Subscription, ErrorBody> {
        if !self.is_accepting() {
            return Err(shutting_down());
        }
        let fingerprint = payload.fingerprint();
        let (run, cancel) = loop {
            match self.standing(user, &request_id, Some(&fingerprint)).await? {
                Standing::RunningHere(run) => return Ok(Subscription { run, from: 0 }),
                Standing::RunningElsewhere => {
                    return Ok(relay::follow(self.deps.store.clone(), user, &request_id, 0).await);
                }
                Standing::Finished(replay) => {
                    return Ok(Subscription { run: Run::replay(request_id, replay), from: 0 });
                }
                Standing::New => {
                    if let Some(reserved) = self.reserve(user, &request_id, &fingerprint) {
                        break reserved;
                    }
                    // The same request_id started here since it was looked up: look again.
                }
            }
        };
        let conversation_id = payload.conversation_id.clone().unwrap_or_else(|| default_conversation.to_owned());
        let turn = turn::TurnRequest { run: run.clone(), user: user.to_owned(), conversation_id, fingerprint, cancel };
        let service = self.clone();
        self.turns.spawn(async move {
            let _in_flight = crate::metrics::Open::request();
            turn::run_turn(&service, &turn, payload).await;
            service.lock_runs().remove(&request_key(&turn.user, &turn.run.request_id));
        });
        Ok(Subscription { run, from: 0 })
    }

    /// Lists a new run for `request_id` among the running requests, unless one appeared since
    /// it was looked up.
    fn reserve(&self, user: &str, request_id: &str, fingerprint: &str) -> Option<(Arc<Run>, CancellationToken)> {
        let mut runs = self.lock_runs();
        let key = request_key(user, request_id);
        if runs.contains_key(&key) {
            return None;
        }
        let run = Run::new(request_id.to_owned());
        let cancel = self.abort.child_token();
        let active = Active { run: run.clone(), fingerprint: fingerprint.to_owned(), cancel: cancel.clone() };
        runs.insert(key, active);
        Some((run, cancel))
    }

    /// `resume`: the messages of `user`'s request after `after_seq`, then live; a finished
    /// request is replayed whole in compact form. Another user's request is unknown here.
    pub async fn resume(
        &self,
        user: &str,
        request_id: &str,
        after_seq: Option<u64>,
    ) -> Result<Subscription, ErrorBody> {
        match self.standing(user, request_id, None).await? {
            Standing::RunningHere(run) => Ok(Subscription { run, from: after_seq.map_or(0, |seq| seq as usize + 1) }),
            Standing::RunningElsewhere => {
                let from = after_seq.map_or(0, |seq| seq as usize + 1);
                Ok(relay::follow(self.deps.store.clone(), user, request_id, from).await)
            }
            Standing::Finished(replay) => Ok(Subscription { run: Run::replay(request_id.to_owned(), replay), from: 0 }),
            Standing::New => Err(ErrorBody::new(404, format!("unknown request_id {request_id:?}: nothing to resume"))),
        }
    }

    /// `cancel`: stops `user`'s request running in this process.
    pub fn cancel(&self, user: &str, request_id: &str) -> Result<(), ErrorBody> {
        match self.lock_runs().get(&request_key(user, request_id)) {
            Some(active) => {
                active.cancel.cancel();
                Ok(())
            }
            None => Err(not_running(request_id)),
        }
    }

    /// `approve`: `user`'s decision on a tool call of a request running in this process.
    pub fn approve(&self, user: &str, request_id: &str, answer: ApprovalAnswer) -> Result<(), ErrorBody> {
        self.running(user, request_id)?.questions.approve(user, answer)
    }

    /// `elicit`: `user`'s answer to an MCP server's question in a request running here.
    pub fn elicit(&self, user: &str, request_id: &str, answer: ElicitationAnswer) -> Result<(), ErrorBody> {
        self.running(user, request_id)?.questions.elicit(user, answer)
    }

    /// The request `user` runs here; another user's is as unknown as a missing one (SPEC §8).
    fn running(&self, user: &str, request_id: &str) -> Result<Arc<Run>, ErrorBody> {
        self.lock_runs()
            .get(&request_key(user, request_id))
            .map(|active| active.run.clone())
            .ok_or_else(|| not_running(request_id))
    }

    /// Whether new requests are taken: false from the start of shutdown on. Readiness
    /// (`/readyz`, new sockets) follows this.
    pub fn is_accepting(&self) -> bool {
        !self.draining.is_cancelled()
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

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<RequestKey, Active>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Another user's conversation, to the one who named it: the same words whether it exists or
/// not (SPEC §8).
pub fn not_your_conversation(conversation_id: &str) -> ErrorBody {
    ErrorBody::new(404, format!("no conversation {conversation_id:?} of yours in the store"))
}

fn not_running(request_id: &str) -> ErrorBody {
    ErrorBody::new(
        404,
        format!("request_id {request_id:?} is not running in this server (unknown or already finished)"),
    )
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(503, "the server is shutting down; send the request again to reach another instance")
}

/// An unreachable database is a 503 the client can act on (send again, possibly to another
/// replica); anything else is an internal error.
pub fn store_error(error: &crate::store::StoreError) -> ErrorBody {
    match error {
        crate::store::StoreError::Unavailable { .. } => {
            tracing::warn!(%error, "the event store is unavailable");
            ErrorBody::new(
                503,
                "the event store is unavailable, so this request could not be completed; send it \
                 again with a new request_id once the service is back",
            )
        }
        other => internal_error(other),
    }
}

/// A bug or an infrastructure failure: logged with a correlation id that the client sees.
pub fn internal_error(error: &dyn std::fmt::Display) -> ErrorBody {
    let correlation_id = uuid::Uuid::now_v7().to_string();
    tracing::error!(%correlation_id, %error, "internal error");
    ErrorBody::new(500, format!("internal error (correlation id {correlation_id}); the server log has the details"))
}
