//! Server-sent events in, [`LlmEvent`]s out: the framing both streaming APIs share.
//!
//! The decoding is independent of HTTP: [`decode`] takes any stream of byte chunks, so the
//! provider feeds it the response body and the benchmark a prebuilt buffer, through the same
//! code.

use std::collections::VecDeque;

use eventsource_stream::{EventStream, EventStreamError};
use futures::{Stream, StreamExt};

use super::LlmEvent;

/// Accumulates one API's streamed events into [`LlmEvent`]s: text passes through at once,
/// tool calls are assembled from their deltas and come out whole.
pub trait StreamDecoder: Send {
    /// Handles one event; `event` is the SSE event name (`message` when the server sent none).
    fn event(&mut self, event: &str, data: &str, out: &mut Vec<LlmEvent>) -> Result<Flow, WireError>;

    /// The stream is over (end marker or end of body): emits what is still pending (tool calls,
    /// usage, finish reason), or fails when the answer was cut short.
    fn end(&mut self, out: &mut Vec<LlmEvent>) -> Result<(), WireError>;
}

/// Whether the decoder expects more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    More,
    /// The API's end marker arrived (`[DONE]`, `message_stop`).
    Done,
}

/// The provider sent something unusable or reported an error inside the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub message: String,
    /// A transient condition (the provider is overloaded, the stream was cut short) that a new
    /// attempt may not meet.
    pub retryable: bool,
}

impl WireError {
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// Why a decoded stream stopped early.
#[derive(Debug)]
pub enum DecodeFailure<E> {
    /// The byte source failed (connection lost, idle timeout).
    Transport(E),
    Wire(WireError),
}

/// Decodes an SSE byte stream with `decoder`. Ends after the decoder's end marker or the end of
/// the bytes; the first failure is the last item.
pub fn decode<S, B, E, D>(bytes: S, decoder: D) -> impl Stream<Item = Result<LlmEvent, DecodeFailure<E>>> + Send
where
    S: Stream<Item = Result<B, E>> + Send + Unpin,
    B: AsRef<[u8]> + Send,
    E: Send,
    D: StreamDecoder,
{
    let state = Decoding {
        events: EventStream::new(bytes),
        decoder,
        pending: VecDeque::new(),
        scratch: Vec::new(),
        finished: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}

struct Decoding<S, D> {
    events: EventStream<S>,
    decoder: D,
    pending: VecDeque<LlmEvent>,
    scratch: Vec<LlmEvent>,
    finished: bool,
}

impl<S, B, E, D> Decoding<S, D>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    D: StreamDecoder,
{
    async fn next(&mut self) -> Option<Result<LlmEvent, DecodeFailure<E>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let step = match self.events.next().await {
                Some(Ok(event)) => self
                    .decoder
                    .event(&event.event, &event.data, &mut self.scratch)
                    .and_then(|flow| match flow {
                        Flow::More => Ok(()),
                        Flow::Done => {
                            self.finished = true;
                            self.decoder.end(&mut self.scratch)
                        }
                    })
                    .map_err(DecodeFailure::Wire),
                None => {
                    self.finished = true;
                    self.decoder.end(&mut self.scratch).map_err(DecodeFailure::Wire)
                }
                Some(Err(EventStreamError::Transport(error))) => Err(DecodeFailure::Transport(error)),
                Some(Err(EventStreamError::Utf8(error))) => Err(DecodeFailure::Wire(WireError::fatal(format!(
                    "the provider's event stream is not UTF-8: {error}"
                )))),
                Some(Err(EventStreamError::Parser(error))) => Err(DecodeFailure::Wire(WireError::fatal(format!(
                    "the provider's event stream is malformed: {error}"
                )))),
            };
            self.pending.extend(self.scratch.drain(..));
            if let Err(failure) = step {
                self.finished = true;
                self.pending.clear();
                return Some(Err(failure));
            }
        }
    }
}
