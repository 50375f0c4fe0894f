//! The newest events of the conversations the JSONL store was recently asked about, parsed,
//! so that a turn's history read parses only what was appended since the last one.
//!
//! A tail is a contiguous run of a conversation's events ending at the `end`-th line the index
//! holds for it. The store's own appends extend it as they are indexed; lines another process
//! appended are parsed at the next read, since the index says how many lines exist. A read
//! takes its tail out of the map while it works (no lock over file reads, and an append meanwhile
//! only leaves a gap the next read fills) and puts back just what it returned, so a tail never
//! holds more than one context's worth of events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ChatEvent;
use super::recent::RecentCut;

/// Conversations with a cached tail; past this, the map starts over (a burst of new
/// conversations costs one cold read each, never unbounded memory).
const MAX_TAILS: usize = 1024;
/// A tail further behind the index than this is dropped: reading newest-first is then cheaper
/// than parsing everything missed.
const MAX_GAP: usize = 64;

#[derive(Debug, Default)]
pub struct Tails {
    conversations: Mutex<HashMap<String, Tail>>,
}

#[derive(Debug)]
struct Tail {
    /// How many of the conversation's indexed lines the tail reaches to.
    end: usize,
    /// Shared with the reads that returned them, which never copy an event.
    events: VecDeque<Arc<ChatEvent>>,
}

impl Tails {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tail>> {
        self.conversations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The store indexed `event` as line `position` of its conversation.
    pub fn appended(&self, event: &ChatEvent, position: usize) {
        if let Some(tail) = self.lock().get_mut(&event.conversation_id).filter(|tail| tail.end == position) {
            tail.events.push_back(Arc::new(event.clone()));
            tail.end += 1;
        }
    }

    /// The events [`EventStore::recent`](super::EventStore::recent) returns for a conversation
    /// whose index holds `indexed` lines; `read` parses the line at a position.
    pub fn recent<E>(
        &self,
        conversation_id: &str,
        indexed: usize,
        mut cut: RecentCut,
        mut read: impl FnMut(usize) -> Result<ChatEvent, E>,
    ) -> Result<Vec<Arc<ChatEvent>>, E> {
        let cached = self.lock().remove(conversation_id);
        let mut tail = cached
            .filter(|tail| tail.end >= indexed || indexed - tail.end <= MAX_GAP)
            .unwrap_or(Tail { end: indexed, events: VecDeque::new() });
        for position in tail.end..indexed {
            tail.events.push_back(Arc::new(read(position)?));
        }
        tail.end = tail.end.max(indexed);
        let mut kept = tail.events.iter().rev().take_while(|event| cut.take(event)).count();
        let mut stopped = kept < tail.events.len();
        if !stopped {
            for position in (0..tail.end - tail.events.len()).rev() {
                let event = Arc::new(read(position)?);
                let taken = cut.take(&event);
                tail.events.push_front(event);
                if !taken {
                    stopped = true;
                    break;
                }
                kept += 1;
            }
        }
        // The event the read stopped at stays too: the next read stops there without parsing.
        let boundary = usize::from(stopped);
        tail.events.drain(..tail.events.len() - kept - boundary);
        let events: Vec<Arc<ChatEvent>> = tail.events.iter().skip(boundary).cloned().collect();
        let mut tails = self.lock();
        if tails.len() >= MAX_TAILS {
            tails.clear();
        }
        tails.insert(conversation_id.to_owned(), tail);
        Ok(events)
    }
}
