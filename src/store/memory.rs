//! An in-process [`EventStore`] for unit tests of the chat service: the same `seq`, claim and
//! hash-chain rules as the file store, without a file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::chain::{Claim, GENESIS_PREV, Ledger, Staging, utc_day};
use super::recent::RecentCut;
use super::{ChatEvent, ConversationSummary, EventStore, EventType, NewEvent, RecentLimit, StoreError};

/// Keeps every event in memory; lost when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<ChatEvent>,
    conversations: HashMap<String, Vec<usize>>,
    requests: HashMap<String, Vec<usize>>,
}

impl Ledger for State {
    fn last_seq(&self, conversation_id: &str) -> u64 {
        self.conversations
            .get(conversation_id)
            .and_then(|positions| positions.last())
            .map_or(0, |&at| self.events[at].seq)
    }

    fn claim(&self, user: &str, request_id: &str) -> Option<Claim> {
        self.requests
            .get(request_id)?
            .iter()
            .map(|&at| &self.events[at])
            .find(|event| event.kind == EventType::UserMessage && event.user() == user)
            .map(|event| Claim { conversation_id: event.conversation_id.clone(), event_id: event.id.clone() })
    }

    fn owner(&self, conversation_id: &str) -> Option<String> {
        let first = *self.conversations.get(conversation_id)?.first()?;
        Some(self.events[first].user().to_owned())
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated: every update
        // below happens after the fallible staging.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError> {
        let mut state = self.state();
        let prev = state.events.last().map_or_else(|| GENESIS_PREV.to_string(), |event| event.hash.clone());
        let stored = Staging::new(prev).stage(&*state, batch)?;
        for event in &stored {
            let at = state.events.len();
            state.conversations.entry(event.conversation_id.clone()).or_default().push(at);
            if let Some(request_id) = &event.request_id {
                state.requests.entry(request_id.clone()).or_default().push(at);
            }
            state.events.push(event.clone());
        }
        Ok(stored)
    }

    async fn conversation(&self, conversation_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        let state = self.state();
        Ok(state
            .conversations
            .get(conversation_id)
            .map(|positions| positions.iter().map(|&at| state.events[at].clone()).collect())
            .unwrap_or_default())
    }

    async fn recent(&self, conversation_id: &str, limit: RecentLimit) -> Result<Vec<Arc<ChatEvent>>, StoreError> {
        let state = self.state();
        let Some(positions) = state.conversations.get(conversation_id) else { return Ok(Vec::new()) };
        let mut cut = RecentCut::new(limit);
        let mut events: Vec<Arc<ChatEvent>> = positions
            .iter()
            .rev()
            .map(|&at| &state.events[at])
            .take_while(|event| cut.take(event))
            .map(|event| Arc::new(event.clone()))
            .collect();
        events.reverse();
        Ok(events)
    }

    async fn request(&self, user: &str, request_id: &str) -> Result<Vec<ChatEvent>, StoreError> {
        let state = self.state();
        Ok(state
            .requests
            .get(request_id)
            .map(|positions| {
                positions.iter().map(|&at| &state.events[at]).filter(|event| event.user() == user).cloned().collect()
            })
            .unwrap_or_default())
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        let state = self.state();
        let mut summaries: Vec<ConversationSummary> = state
            .conversations
            .iter()
            .filter_map(|(conversation_id, positions)| {
                let first = &state.events[*positions.first()?];
                let last = &state.events[*positions.last()?];
                (first.user() == user).then(|| ConversationSummary {
                    conversation_id: conversation_id.clone(),
                    user: user.to_owned(),
                    events: positions.len() as u64,
                    first_timestamp: first.timestamp.clone(),
                    last_timestamp: last.timestamp.clone(),
                })
            })
            .collect();
        summaries.sort_by(|a, b| a.first_timestamp.cmp(&b.first_timestamp));
        Ok(summaries)
    }

    async fn tokens_spent(&self, user: &str, day: &str) -> Result<u64, StoreError> {
        let state = self.state();
        Ok(state
            .events
            .iter()
            .filter(|event| event.user() == user && utc_day(&event.timestamp) == day)
            .filter_map(|event| event.usage)
            .map(|usage| usage.total_tokens)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use serde_json::Map;

    fn event(conversation: &str, request: &str, kind: EventType) -> NewEvent {
        NewEvent {
            conversation_id: conversation.into(),
            request_id: Some(request.into()),
            user: "alice".into(),
            kind,
            role: Some(Role::User),
            content: Some("text".into()),
            tool_calls: None,
            tool_call_id: None,
            model: None,
            usage: None,
            token_count: 1,
            extra: Map::new(),
        }
    }

    #[tokio::test]
    async fn assigns_seq_chains_hashes_and_refuses_duplicate_requests() {
        let store = MemoryStore::new();
        let first = store
            .append(vec![event("a", "r1", EventType::UserMessage), event("a", "r1", EventType::AssistantMessage)])
            .await
            .unwrap();
        let second = store.append(vec![event("b", "r2", EventType::UserMessage)]).await.unwrap();
        assert_eq!((first[0].seq, first[1].seq, second[0].seq), (1, 2, 1));
        assert_eq!(first[0].prev, GENESIS_PREV);
        assert_eq!(first[1].prev, first[0].hash);
        assert_eq!(second[0].prev, first[1].hash);

        let refused = store
            .append(vec![event("b", "r3", EventType::UserMessage), event("b", "r1", EventType::UserMessage)])
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::DuplicateRequest { conversation_id, event_id, .. }
                if conversation_id == "a" && *event_id == first[0].id),
            "{refused}"
        );
        assert_eq!(store.conversation("b").await.unwrap().len(), 1);
        assert_eq!(store.request("alice", "r3").await.unwrap(), vec![]);
        assert_eq!(store.request("alice", "r1").await.unwrap(), first);
        let listed = store.conversations("alice").await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].conversation_id, "a");
        assert_eq!(listed[0].events, 2);
    }
}
