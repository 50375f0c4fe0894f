//! Live resume across replicas: with a store that shares frames (PostgreSQL), the process
//! that claimed a request shares its numbered messages as they go out, and a `resume` (or a
//! resent `chat`) that reaches another process follows them from the store: every message, in
//! the owner's numbering, so a client resumes after any `after_seq` without a gap or a repeat.

use std::sync::Arc;
use std::time::Duration;

use super::cached::{self, StoredRequest};
use super::{Run, internal_error, store_error};
use crate::protocol::{ErrorBody, RequestMessage};
use crate::store::{EventStore, FrameBatch};

/// Tries to share one batch before the share is given up for that batch's followers.
const SHARE_ATTEMPTS: u32 = 3;
const SHARE_RETRY_AFTER: Duration = Duration::from_millis(200);

/// With a store that shares frames, shares `run`'s messages until it ends, beside the turn;
/// called once the turn holds the request's claim, so only the claiming process shares.
pub(super) fn start_sharing(store: &Arc<dyn EventStore>, user: &str, run: &Arc<Run>) {
    if store.shares_frames() {
        tokio::spawn(share(store.clone(), user.to_owned(), run.clone()));
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

/// A run that follows `user`'s request running in another process.
pub(super) fn follow(store: Arc<dyn EventStore>, user: &str, request_id: &str) -> Arc<Run> {
    let run = Run::new(request_id.to_owned());
    tokio::spawn(relay(store, user.to_owned(), run.clone()));
    run
}

/// Relays the shared messages into `run`; when they stop before the request's end (its
/// process is gone, or the store is unreachable), ends `run` with what the store holds.
pub(super) async fn relay(store: Arc<dyn EventStore>, user: String, run: Arc<Run>) {
    let request_id = &run.request_id;
    let failure = match store.follow_frames(&user, request_id).await {
        Ok(mut feed) => loop {
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
        },
        Err(error) => Some(error),
    };
    let end = match failure {
        Some(error) => RequestMessage::Failed(store_error(&error)),
        None => stored_end(store.as_ref(), &user, request_id).await,
    };
    run.push(end);
}

/// The end of a request as the store holds it: the last message of its replay.
async fn stored_end(store: &dyn EventStore, user: &str, request_id: &str) -> RequestMessage {
    let events = match store.request(user, request_id).await {
        Ok(events) => events,
        Err(error) => return RequestMessage::Failed(store_error(&error)),
    };
    match cached::stored_request(&events) {
        Ok(StoredRequest::Finished { replay, .. }) => replay.into_iter().last().unwrap_or_else(|| {
            RequestMessage::Failed(internal_error(&format!("the stored request {request_id:?} replays to nothing")))
        }),
        Ok(_) => RequestMessage::Failed(ErrorBody::new(
            503,
            format!(
                "the messages of request_id {request_id:?} stopped coming from the server process answering it; \
                 resume it again in a moment"
            ),
        )),
        Err(error) => RequestMessage::Failed(internal_error(&error)),
    }
}
