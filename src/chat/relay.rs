//! Live resume across replicas: with a store that shares frames (PostgreSQL), a `resume` (or a
//! resent `chat`) that reaches a process where the request is not running follows it from the
//! store, and the process that claimed the request then shares its numbered messages, those
//! already sent and those to come: every message, in the owner's numbering, so a client
//! resumes after any `after_seq` without a gap or a repeat. A request nobody follows shares
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use super::cached::{self, StoredRequest};
use super::{Run, Subscription, internal_error, store_error};
use crate::protocol::{ErrorBody, RequestMessage};
use crate::store::{EventStore, FrameBatch, FrameFeed};

/// Tries to share one batch before the share is given up for that batch's followers.
const SHARE_ATTEMPTS: u32 = 3;
const SHARE_RETRY_AFTER: Duration = Duration::from_millis(200);

/// With a store that shares frames, shares `run`'s messages from the first on, beside the
/// turn, once a process on another host follows the request; called right after the turn
/// claimed the request (so only the claiming process shares) and before it appends the end.
pub(super) fn start_sharing(store: &Arc<dyn EventStore>, user: &str, run: &Arc<Run>) {
    if store.shares_frames() {
        let followed = store.followers(user, &run.request_id);
        let (store, user, run) = (store.clone(), user.to_owned(), run.clone());
        tokio::spawn(async move {
            if followed.await {
                share(store, user, run).await;
            }
        });
    }
}

async fn share(store: Arc<dyn EventStore>, user: String, run: Arc<Run>) {
    let mut cursor = 0;
    while let Some((messages, next, ends)) = run.next_ending(cursor).await {
        for attempt in 1..=SHARE_ATTEMPTS {
            let batch = FrameBatch {
                user: &user,
                request_id: &run.request_id,
                first_seq: cursor as u64,
                frames: &messages,
                terminal: ends,
            };
            match store.share_frames(batch).await {
                Ok(()) => break,
                Err(error) if attempt == SHARE_ATTEMPTS => {
                    tracing::warn!(request_id = %run.request_id, %error, "cannot share a request's messages; its followers on other replicas get a 503");
                }
                Err(_) => tokio::time::sleep(SHARE_RETRY_AFTER).await,
            }
        }
        cursor = next;
    }
}

/// Follows `user`'s request running in another process from message `from` on: live, in the
/// owner's numbering, or, when it ended before the following began, its stored compact
/// replay from the start, as for any finished request.
pub(super) async fn follow(store: Arc<dyn EventStore>, user: &str, request_id: &str, from: usize) -> Subscription {
    let run = Run::new(request_id.to_owned());
    match store.follow_frames(user, request_id).await {
        Ok(Some(feed)) => {
            tokio::spawn(relay_feed(store, user.to_owned(), run.clone(), feed));
            Subscription { run, from }
        }
        Ok(None) => Subscription {
            run: Run::replay(request_id.to_owned(), stored_replay(store.as_ref(), user, request_id).await),
            from: 0,
        },
        Err(error) => {
            run.push(RequestMessage::Failed(store_error(&error)));
            Subscription { run, from: 0 }
        }
    }
}

/// Relays `user`'s request running in another process into `run`, a run of its own that
/// starts empty.
pub(super) async fn relay(store: Arc<dyn EventStore>, user: String, run: Arc<Run>) {
    match store.follow_frames(&user, &run.request_id).await {
        Ok(Some(feed)) => relay_feed(store, user, run, feed).await,
        Ok(None) => stored_replay(store.as_ref(), &user, &run.request_id)
            .await
            .into_iter()
            .for_each(|message| run.push(message)),
        Err(error) => run.push(RequestMessage::Failed(store_error(&error))),
    }
}

/// Relays the shared messages into `run`; when they stop before the request's end (its
/// process is gone, or the store is unreachable), ends `run` with what the store holds.
async fn relay_feed(store: Arc<dyn EventStore>, user: String, run: Arc<Run>, mut feed: FrameFeed) {
    let failure = loop {
        match feed.recv().await {
            Some(Ok(shared)) if !shared.frame.is_empty() => {
                run.relay(shared.frame, shared.terminal);
                if shared.terminal {
                    return;
                }
            }
            Some(Ok(_)) | None => break None,
            Some(Err(error)) => break Some(error),
        }
    };
    let end = match failure {
        Some(error) => RequestMessage::Failed(store_error(&error)),
        None => stored_replay(store.as_ref(), &user, &run.request_id).await.pop().unwrap_or_else(|| {
            RequestMessage::Failed(internal_error(&format!(
                "the stored request {:?} replays to nothing",
                run.request_id
            )))
        }),
    };
    run.push(end);
}

/// A finished request as the store holds it: its compact replay, or the error why there is
/// none.
async fn stored_replay(store: &dyn EventStore, user: &str, request_id: &str) -> Vec<RequestMessage> {
    let events = match store.request(user, request_id).await {
        Ok(events) => events,
        Err(error) => return vec![RequestMessage::Failed(store_error(&error))],
    };
    match cached::stored_request(&events) {
        Ok(StoredRequest::Finished { replay, .. }) => replay,
        Ok(_) => vec![RequestMessage::Failed(ErrorBody::new(
            503,
            format!(
                "the messages of request_id {request_id:?} stopped coming from the server process answering it; \
                 resume it again in a moment"
            ),
        ))],
        Err(error) => vec![RequestMessage::Failed(internal_error(&error))],
    }
}
