//! An MCP server's questions (elicitation) taken to the one user whose call caused them.
//!
//! A 2026-07-28 server returns its questions with the tool call's answer (`input_required`),
//! so the call that asks is known; `calls` hands them to that call's user. An older server
//! sends `elicitation/create` as a request of its own: over streamable HTTP it arrives on the
//! response stream of the call it belongs to, over stdio nothing ties it to a call. Then it
//! goes to the request whose calls are the only ones in flight on that session, and when
//! calls of several requests are in flight it is declined: a question must never reach a
//! user it was not meant for, and a guess could show one user's question to another.
//!
//! Separate from `session` (which receives the requests) and `calls` (which registers what is
//! in flight) for the same reason as `progress`: both sides meet here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rmcp::model::{ElicitRequestParams, ElicitResult, ElicitationAction as McpAction, RequestId, RequestMetaObject};
use serde_json::Value;

use super::UserInput;
use crate::domain::{Elicitation, ElicitationAction, ElicitationMode, ElicitationReply};

/// A call in flight on one session, and the user behind it.
struct InFlight {
    key: u64,
    generation: u64,
    /// The JSON-RPC id of the `tools/call`, once sent.
    request: Option<RequestId>,
    user: Arc<dyn UserInput>,
    /// Questions of this call's request open right now: the call's timeout does not run
    /// while a person is being asked.
    asking: Arc<AtomicUsize>,
}

/// The calls in flight on one server, for its questions to find their user.
#[derive(Default)]
pub struct ElicitationRouter {
    calls: Mutex<(u64, Vec<InFlight>)>,
}

impl ElicitationRouter {
    fn calls(&self) -> MutexGuard<'_, (u64, Vec<InFlight>)> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists a call before it is sent (a question may arrive before the send returns); it
    /// leaves the list when the returned guard is dropped, however the call ends.
    pub fn register(&self, generation: u64, user: Arc<dyn UserInput>) -> InFlightCall<'_> {
        let mut calls = self.calls();
        calls.0 += 1;
        let key = calls.0;
        let asking = Arc::new(AtomicUsize::new(0));
        calls.1.push(InFlight { key, generation, request: None, user, asking: asking.clone() });
        InFlightCall { router: self, key, asking }
    }

    /// The user an `elicitation/create` of session `generation` is for: the one whose call
    /// it arrived with, else the only request with calls in flight; `None` when that is not
    /// certain. The calls of that request count as asking until the returned guard is dropped.
    pub fn addressee(&self, generation: u64, origin: Option<&RequestId>) -> Option<(Arc<dyn UserInput>, Asking)> {
        let calls = self.calls();
        let live = || calls.1.iter().filter(|call| call.generation == generation);
        let user = match origin.and_then(|origin| live().find(|call| call.request.as_ref() == Some(origin))) {
            Some(call) => call.user.clone(),
            None => {
                let mut users = live().map(|call| &call.user);
                let first = users.next()?;
                if !users.all(|user| user.request_key() == first.request_key()) {
                    return None;
                }
                first.clone()
            }
        };
        let counters: Vec<_> = live()
            .filter(|call| call.user.request_key() == user.request_key())
            .map(|call| call.asking.clone())
            .collect();
        counters.iter().for_each(|counter| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        Some((user, Asking(counters)))
    }
}

/// Marks calls as waiting for their user while it lives.
pub struct Asking(Vec<Arc<AtomicUsize>>);

impl Drop for Asking {
    fn drop(&mut self) {
        self.0.iter().for_each(|counter| {
            counter.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A registered call; dropping it takes the call off the list.
pub struct InFlightCall<'a> {
    router: &'a ElicitationRouter,
    key: u64,
    asking: Arc<AtomicUsize>,
}

impl InFlightCall<'_> {
    /// Whether the server is waiting for this call's user to answer a question.
    pub fn is_asking(&self) -> bool {
        self.asking.load(Ordering::SeqCst) > 0
    }

    /// Records the JSON-RPC id the call went out with.
    pub fn sent(&self, request: RequestId) {
        if let Some(call) = self.router.calls().1.iter_mut().find(|call| call.key == self.key) {
            call.request = Some(request);
        }
    }
}

impl Drop for InFlightCall<'_> {
    fn drop(&mut self) {
        self.router.calls().1.retain(|call| call.key != self.key);
    }
}

/// The question as the chat service shows it; `None` for a mode this version does not know
/// (declined). `meta` is the request's `_meta` where rmcp took it off the parameters.
pub fn question(server: &str, params: ElicitRequestParams, meta: Option<&RequestMetaObject>) -> Option<Elicitation> {
    // Content is logged only when the server says it holds nothing sensitive.
    let marked = |value: Option<Value>| value.as_ref().and_then(|meta| meta.get("sensitive")).and_then(Value::as_bool);
    let in_params = serde_json::to_value(&params).ok().and_then(|value| value.get("_meta").cloned());
    let sensitive = marked(in_params).or_else(|| marked(meta.and_then(|meta| serde_json::to_value(meta).ok())));
    let log_content = sensitive == Some(false);
    let (message, mode) = match params {
        ElicitRequestParams::FormElicitationParams { message, requested_schema, .. } => {
            let requested_schema = serde_json::to_value(requested_schema).unwrap_or(Value::Null);
            (message, ElicitationMode::Form { requested_schema })
        }
        ElicitRequestParams::UrlElicitationParams { message, url, .. } => (message, ElicitationMode::Url { url }),
        _ => return None,
    };
    Some(Elicitation { server: server.to_owned(), message, mode, log_content })
}

/// The user's answer as the server receives it.
pub fn result(reply: ElicitationReply) -> ElicitResult {
    let action = match reply.action {
        ElicitationAction::Accept => McpAction::Accept,
        ElicitationAction::Decline => McpAction::Decline,
        ElicitationAction::Cancel => McpAction::Cancel,
    };
    let result = ElicitResult::new(action);
    match reply.content {
        Some(content) => result.with_content(content),
        None => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user that never gets asked here: only who it is matters.
    struct Named(&'static str);

    #[async_trait::async_trait]
    impl UserInput for Named {
        fn request_key(&self) -> &str {
            self.0
        }

        async fn elicit(&self, _question: Elicitation) -> ElicitationReply {
            ElicitationReply::declined()
        }
    }

    fn addressee(router: &ElicitationRouter, generation: u64, origin: Option<&RequestId>) -> Option<String> {
        router.addressee(generation, origin).map(|(user, _)| user.request_key().to_owned())
    }

    #[test]
    fn a_question_goes_to_the_only_request_in_flight_or_to_none() {
        let router = ElicitationRouter::default();
        assert_eq!(addressee(&router, 1, None), None, "nobody to ask");
        let alice = router.register(1, Arc::new(Named("alice/r-1")));
        let alice_again = router.register(1, Arc::new(Named("alice/r-1")));
        assert_eq!(addressee(&router, 1, None).as_deref(), Some("alice/r-1"), "two calls of one request");
        assert_eq!(addressee(&router, 2, None), None, "calls of an old session do not count");

        let bob = router.register(1, Arc::new(Named("bob/r-1")));
        assert_eq!(addressee(&router, 1, None), None, "two requests in flight: never a guess");
        bob.sent(RequestId::Number(7));
        alice.sent(RequestId::Number(8));
        let origin = RequestId::Number(7);
        assert_eq!(addressee(&router, 1, Some(&origin)).as_deref(), Some("bob/r-1"), "the call it arrived with");

        drop((bob, alice_again));
        assert_eq!(addressee(&router, 1, None).as_deref(), Some("alice/r-1"));
    }

    #[test]
    fn a_call_counts_as_asking_while_its_user_is_asked() {
        let router = ElicitationRouter::default();
        let call = router.register(1, Arc::new(Named("alice/r-1")));
        assert!(!call.is_asking());
        let (_, asking) = router.addressee(1, None).expect("alice");
        assert!(call.is_asking(), "the timeout waits for the person");
        drop(asking);
        assert!(!call.is_asking());
    }
}
