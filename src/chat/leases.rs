//! No stuck requests: a request whose owner process is gone is finished, not left claimed.
//!
//! Every process sharing a store renews the leases of the requests it is running (on
//! PostgreSQL) and, in the same beat, has the store finish the requests of processes that
//! are gone ([`EventStore::finish_orphans`](crate::store::EventStore::finish_orphans)): a
//! logged `error` 503 telling the client to send the request again with a new `request_id`.
//! A resent `chat` or a `resume` then gets that end as the stored result. The half-done turn
//! never runs again: its tools may have had side effects.

use std::sync::Weak;
use std::time::Duration;

use super::ChatService;
use crate::store::EventStore;

/// Runs until the service is dropped or aborted; its first beat is one period in, after the
/// sweep of start-up ([`finish_orphans`], called before the server listens).
pub(super) async fn keep(service: Weak<ChatService>, every: Duration) {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        let Some(service) = service.upgrade() else { return };
        if service.abort.is_cancelled() {
            return;
        }
        let running: Vec<(String, String)> = service.lock_runs().keys().cloned().collect();
        if let Err(error) = service.deps.store.renew_leases(&running).await {
            tracing::warn!(%error, running = running.len(), "cannot renew the leases of running requests");
        }
        finish_orphans(service.deps.store.as_ref()).await;
    }
}

/// Finishes the requests of processes that are gone, logging each: also called once before
/// the server listens, so a request interrupted by a crash is finished before anyone can
/// resend it.
pub async fn finish_orphans(store: &dyn EventStore) {
    match store.finish_orphans().await {
        Ok(ends) => {
            for end in ends {
                tracing::error!(
                    request_id = end.request_id.as_deref().unwrap_or_default(),
                    conversation_id = %end.conversation_id,
                    user = end.user(),
                    "request interrupted: the server process answering it is gone; stored its end, a 503"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot finish the requests of server processes that are gone"),
    }
}
