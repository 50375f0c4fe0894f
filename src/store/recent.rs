//! The one stopping rule of [`EventStore::recent`](super::EventStore::recent), for every
//! backend: each reads its events newest first and asks [`RecentCut::take`] about each.

use super::{ChatEvent, RecentLimit};

/// Where reading a conversation backwards stops.
#[derive(Debug)]
pub struct RecentCut {
    limit: RecentLimit,
    tokens: u64,
    messages: usize,
    /// Set once the limit is met: the request whose older events are still taken.
    finishing: Option<Option<String>>,
}

impl RecentCut {
    pub fn new(limit: RecentLimit) -> Self {
        Self { limit, tokens: 0, messages: 0, finishing: None }
    }

    /// Offers the next older event: true when it belongs to the answer, false when reading
    /// stops before it.
    pub fn take(&mut self, event: &ChatEvent) -> bool {
        if let Some(request_id) = &self.finishing {
            return request_id.is_some() && event.request_id == *request_id;
        }
        if event.kind.is_message() {
            self.tokens += event.token_count;
            self.messages += 1;
        }
        if self.tokens > self.limit.tokens && self.messages >= self.limit.messages {
            self.finishing = Some(event.request_id.clone());
        }
        true
    }
}
