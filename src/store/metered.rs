//! Store appends counted and timed for `/metrics`, whichever backend is behind: the chat
//! service gets the store wrapped once, in `App::build`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{ChatEvent, ConversationSummary, EventStore, NewEvent, Orphan, StoreError};

pub struct MeteredStore(pub Arc<dyn EventStore>);

#[async_trait]
impl EventStore for MeteredStore {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError> {
        let started = Instant::now();
        let events = batch.len();
        let result = self.0.append(batch).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::DuplicateRequest { .. }) => "refused",
            Err(_) => "error",
        };
        crate::metrics::store_append(outcome, if result.is_ok() { events } else { 0 }, started.elapsed());
        result
    }

    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.0.conversation(conversation_id).await
    }

    async fn request(&self, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.0.request(request_id).await
    }

    async fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        self.0.conversations().await
    }

    fn lease_renewal(&self) -> Option<std::time::Duration> {
        self.0.lease_renewal()
    }

    async fn renew_leases(&self, request_ids: &[String]) -> Result<(), StoreError> {
        self.0.renew_leases(request_ids).await
    }

    async fn take_orphans(&self) -> Result<Vec<Orphan>, StoreError> {
        self.0.take_orphans().await
    }
}
