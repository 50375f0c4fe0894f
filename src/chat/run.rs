//! A request in flight: the numbered messages it has produced so far, and a way to follow it.
//!
//! The turn only ever appends to its own message log and never waits for a client. Every
//! follower (the socket that sent it, a socket that resumed it, a duplicate `chat` that
//! attached to it) reads the log at its own pace from its own cursor, so a slow client cannot
//! stall the turn, and `resume` from any `seq` is a slice of the log.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::protocol::ServerMessage;

/// One serialised message, shared by every follower.
pub type Frame = Arc<str>;

pub struct Run {
    pub request_id: String,
    pub conversation_id: String,
    /// Identifies the payload, so a reused `request_id` with another payload is a 409.
    pub fingerprint: String,
    /// Cancelled by the client's `cancel`. A child of the service's abort token, so shutdown
    /// reaches the turn and its tool calls through it too.
    pub cancel: CancellationToken,
    frames: Mutex<Vec<Frame>>,
    /// Number of frames and whether the last one ended the request.
    progress: watch::Sender<(usize, bool)>,
}

impl Run {
    pub fn new(
        request_id: String,
        conversation_id: String,
        fingerprint: String,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            request_id,
            conversation_id,
            fingerprint,
            cancel,
            frames: Mutex::new(Vec::new()),
            progress: watch::Sender::new((0, false)),
        })
    }

    /// Numbers `message` with the next `seq` (unless it is a rejection, which is not part of
    /// a numbered stream), then publishes it to every follower.
    pub fn push(&self, mut message: ServerMessage) {
        let terminal = message.status.is_terminal();
        let mut frames = self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if message.seq.is_some() {
            message.seq = Some(frames.len() as u64);
        }
        frames.push(message.to_json().into());
        let length = frames.len();
        drop(frames);
        self.progress.send_replace((length, terminal));
    }

    /// The `seq` the next message will carry.
    pub fn next_seq(&self) -> u64 {
        self.progress.borrow().0 as u64
    }

    /// Whether `processing` (or any other message) has gone out.
    pub fn is_started(&self) -> bool {
        self.next_seq() > 0
    }

    pub fn is_finished(&self) -> bool {
        self.progress.borrow().1
    }

    /// Waits for messages from `cursor` on. `None` once the run has ended and the follower has
    /// seen everything.
    pub async fn next(&self, cursor: usize) -> Option<Vec<Frame>> {
        let mut watcher = self.progress.subscribe();
        let (length, finished) = *watcher.wait_for(|(length, finished)| *length > cursor || *finished).await.ok()?;
        if length <= cursor && finished {
            return None;
        }
        let frames = self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(frames[cursor.min(frames.len())..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Chunk;

    #[tokio::test]
    async fn followers_read_from_any_cursor_and_see_the_end() {
        let run = Run::new("r".into(), "c".into(), "f".into(), CancellationToken::new());
        run.push(ServerMessage::processing("r", "c", false));
        run.push(ServerMessage::chunk("r", 0, Chunk::Text("hi".into())));
        let late = run.next(1).await.expect("one frame after seq 0");
        assert_eq!(late.len(), 1);
        assert!(late[0].contains(r#""seq":1"#));

        let follower = {
            let run = run.clone();
            tokio::spawn(async move {
                let mut cursor = 0;
                while let Some(frames) = run.next(cursor).await {
                    cursor += frames.len();
                }
                cursor
            })
        };
        run.push(ServerMessage::cancelled("r", 0));
        assert_eq!(follower.await.expect("follower"), 3);
        assert!(run.is_finished());
        assert_eq!(run.next(3).await, None);
    }
}
