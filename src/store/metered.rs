//! Store appends counted and timed for `/metrics`, whichever backend is behind: the chat
//! service gets the store wrapped once, in `App::build`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    ChatEvent, ConversationSummary, EventStore, FollowersWanted, FrameBatch, FrameFeed, NewEvent, RecentLimit,
    StoreError,
};

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

    async fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<Arc<ChatEvent>>, StoreError> {
        self.0.recent(conversation_id, limit).await
    }

    async fn request(&self, user: &str, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        self.0.request(user, request_id).await
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        self.0.conversations(user).await
    }

    async fn tokens_spent(&self, user: &str, day: &str) -> Result<u64, StoreError> {
        self.0.tokens_spent(user, day).await
    }

    fn sweep_every(&self) -> Option<std::time::Duration> {
        self.0.sweep_every()
    }

    async fn renew_leases(&self, requests: &[(String, String)]) -> Result<(), StoreError> {
        self.0.renew_leases(requests).await
    }

    async fn finish_orphans(&self) -> Result<Vec<ChatEvent>, StoreError> {
        self.0.finish_orphans().await
    }

    fn shares_frames(&self) -> bool {
        self.0.shares_frames()
    }

    async fn share_frames(&self, batch: FrameBatch<'_>) -> Result<(), StoreError> {
        self.0.share_frames(batch).await
    }

    fn followers(&self, user: &str, request_id: &str) -> FollowersWanted {
        self.0.followers(user, request_id)
    }

    async fn follow_frames(&self, user: &str, request_id: &str) -> Result<Option<FrameFeed>, StoreError> {
        self.0.follow_frames(user, request_id).await
    }
}
