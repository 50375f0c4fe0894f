//! No stuck requests: a request whose owner process is gone is finished, not left claimed.
//!
//! With a store that leases claims (PostgreSQL), every process renews the leases of the
//! requests it is running and, in the same beat, takes over the requests whose lease ran out
//! and stores their end: a logged `error` 503 telling the client to send the request again
//! with a new `request_id`. A resent `chat` or a `resume` then gets that end as the stored
//! result. The half-done turn never runs again: its tools may have had side effects.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::ChatService;
use crate::store::Orphan;
use crate::store::record::{Ending, Failure, Record};

pub const INTERRUPTED: &str = "interrupted: the server process answering this request stopped; send it again with a \
                               new request_id";

/// Runs until the service is dropped or aborted.
pub(super) async fn keep(service: Weak<ChatService>, every: Duration) {
    let mut beat = tokio::time::interval(every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        let Some(service) = service.upgrade() else { return };
        if service.abort.is_cancelled() {
            return;
        }
        renew_and_sweep(&service).await;
    }
}

async fn renew_and_sweep(service: &Arc<ChatService>) {
    let running: Vec<String> = service.lock_runs().keys().cloned().collect();
    if let Err(error) = service.deps.store.renew_leases(&running).await {
        tracing::warn!(%error, running = running.len(), "cannot renew the leases of running requests");
    }
    let orphans = match service.deps.store.take_orphans().await {
        Ok(orphans) => orphans,
        Err(error) => {
            tracing::warn!(%error, "cannot look for requests whose server process is gone");
            return;
        }
    };
    for orphan in orphans {
        finish(service, orphan).await;
    }
}

async fn finish(service: &ChatService, Orphan { request_id, conversation_id }: Orphan) {
    let failure = Failure { code: 503, message: INTERRUPTED.to_owned(), data: None };
    let ended = Record::Ended { model: String::new(), partial_text: String::new(), ending: Ending::Failed(failure) };
    let event = ended.into_event(conversation_id.clone(), request_id.clone(), 0);
    match service.deps.store.append(vec![event]).await {
        Ok(_) => tracing::error!(
            %request_id,
            %conversation_id,
            "request interrupted: the server process answering it is gone (its lease ran out); stored its end, a 503"
        ),
        Err(error) => tracing::error!(%request_id, %error, "cannot store the end of an interrupted request"),
    }
}
