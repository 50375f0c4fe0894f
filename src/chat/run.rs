//! A request's numbered messages: what it has produced so far, and a way to follow it.
//!
//! The turn only ever appends to its run and never waits for a client. Every follower (the
//! socket that sent it, a socket that resumed it, a duplicate `chat` that attached to it) reads
//! the run at its own pace from its own cursor, so a slow client cannot stall the turn, and
//! `resume` from any `seq` is a slice of the run. The compact replay of a finished request is
//! a run too, so [`Run::push`] is the only place a message gets its `seq`.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::questions::OpenQuestions;
use crate::protocol::{ErrorBody, RequestMessage, ServerMessage};

/// One message as sent, serialised once and shared by every follower.
pub type SerializedMessage = Arc<str>;

pub struct Run {
    pub request_id: String,
    /// Questions to the request's user that wait for an answer from any socket.
    pub questions: OpenQuestions,
    messages: Mutex<Vec<SerializedMessage>>,
    /// Number of messages and whether the last one ended the request.
    progress: watch::Sender<(usize, bool)>,
}

impl Run {
    pub fn new(request_id: String) -> Arc<Self> {
        Arc::new(Self {
            request_id,
            questions: OpenQuestions::default(),
            messages: Mutex::new(Vec::new()),
            progress: watch::Sender::new((0, false)),
        })
    }

    /// A finished request's compact replay, numbered from `seq` 0 like a live run.
    pub fn replay(request_id: String, replay: Vec<RequestMessage>) -> Arc<Self> {
        let run = Self::new(request_id);
        replay.into_iter().for_each(|message| run.push(message));
        run
    }

    /// Numbers `message` with the next `seq`, then publishes it to every follower.
    pub fn push(&self, message: RequestMessage) {
        let terminal = message.is_terminal();
        let messages = self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = messages.len() as u64;
        self.publish(messages, message.numbered(&self.request_id, seq).to_json().into(), terminal);
    }

    /// Publishes a message numbered by the process that runs the request: a `resume` on
    /// another replica follows it through the store (`relay`).
    pub fn relay(&self, message: SerializedMessage, terminal: bool) {
        let messages = self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.publish(messages, message, terminal);
    }

    /// Ends a request that never started with an error outside the numbered stream.
    pub fn reject(&self, error: ErrorBody) {
        let messages = self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.publish(messages, ServerMessage::rejection(Some(self.request_id.clone()), error).to_json().into(), true);
    }

    fn publish(
        &self,
        mut messages: std::sync::MutexGuard<'_, Vec<SerializedMessage>>,
        message: SerializedMessage,
        terminal: bool,
    ) {
        messages.push(message);
        let length = messages.len();
        drop(messages);
        self.progress.send_replace((length, terminal));
    }

    /// Whether `processing` (or any other message) has gone out.
    pub fn is_started(&self) -> bool {
        self.progress.borrow().0 > 0
    }

    pub fn is_finished(&self) -> bool {
        self.progress.borrow().1
    }

    /// Waits for messages from `cursor` on, and returns them with the cursor after them.
    /// `None` once the run has ended and the follower has seen everything. A cursor past the
    /// end (a `resume` with an `after_seq` beyond the last message) waits like any other and
    /// still gets the terminal message, so every follower sees how the request ended.
    pub async fn next(&self, cursor: usize) -> Option<(Vec<SerializedMessage>, usize)> {
        self.next_ending(cursor).await.map(|(messages, cursor, _)| (messages, cursor))
    }

    /// [`Run::next`], and whether the last message returned ends the request.
    pub async fn next_ending(&self, cursor: usize) -> Option<(Vec<SerializedMessage>, usize, bool)> {
        let mut watcher = self.progress.subscribe();
        let (length, finished) = *watcher.wait_for(|(length, finished)| *length > cursor || *finished).await.ok()?;
        if length == cursor && finished {
            return None;
        }
        let messages = self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cursor > length {
            return Some((messages.last().cloned().into_iter().collect(), length, finished));
        }
        // Up to the length seen with `finished`, so that the flag belongs to the last message.
        Some((messages[cursor..length].to_vec(), length, finished))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Chunk;

    #[tokio::test]
    async fn followers_read_from_any_cursor_and_see_the_end() {
        let run = Run::new("r".into());
        run.push(RequestMessage::Processing { conversation_id: "c".into(), replayed: false });
        run.push(RequestMessage::Chunk(Chunk::Text("hi".into())));
        let (late, cursor) = run.next(1).await.expect("one message after seq 0");
        assert_eq!((late.len(), cursor), (1, 2));
        assert!(late[0].contains(r#""seq":1"#));

        let follower = {
            let run = run.clone();
            tokio::spawn(async move {
                let mut cursor = 0;
                while let Some((_, next)) = run.next(cursor).await {
                    cursor = next;
                }
                cursor
            })
        };
        run.push(RequestMessage::Cancelled);
        assert_eq!(follower.await.expect("follower"), 3);
        assert!(run.is_finished());
        assert_eq!(run.next(3).await, None);
        let (past_the_end, cursor) = run.next(100).await.expect("the terminal message");
        assert!(past_the_end[0].contains("cancelled"), "{}", past_the_end[0]);
        assert_eq!(run.next(cursor).await, None);
    }

    #[tokio::test]
    async fn a_rejection_ends_the_run_without_a_seq() {
        let run = Run::new("r".into());
        run.reject(ErrorBody::new(409, "taken"));
        assert!(run.is_finished());
        let (messages, _) = run.next(0).await.expect("the rejection");
        assert!(!messages[0].contains("seq"), "{}", messages[0]);
    }
}
