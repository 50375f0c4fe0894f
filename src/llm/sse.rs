//! Server-sent events in, [`LlmEvent`]s out: the framing both streaming APIs share.
//!
//! The decoding is independent of HTTP: [`decode`] takes any stream of byte chunks, so the
//! provider feeds it the response body and the benchmark a prebuilt buffer, through the same
//! code. The framing ([`SseParser`]) is a plain struct rather than a stream adapter so that it
//! can hand each event's text to the decoder without copying it: per chunk of a model's answer
//! the SSE layer costs less than the JSON parse (see `benches/sse.rs`).

use std::collections::VecDeque;

use futures::{Stream, StreamExt};

use super::LlmEvent;

/// Splits a byte stream into server-sent events (the WHATWG framing: `LF`, `CR` or `CRLF`
/// line ends, `:` comments, multi-line `data`, named events; `id` and `retry` are ignored, as a
/// model call is never resumed).
#[derive(Debug, Default)]
pub struct SseParser {
    /// The unfinished last line of the bytes so far.
    partial: Vec<u8>,
    data: String,
    event: String,
    /// The last chunk ended in `CR`: an `LF` opening the next one ends the same line.
    after_cr: bool,
    started: bool,
}

impl SseParser {
    /// Feeds the next bytes and calls `on_event(name, data)` for each event they complete
    /// (`name` is `message` when the server gave none). Stops early, returning it, at the
    /// first error or [`Flow::Done`] of `on_event`.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(&str, &str) -> Result<Flow, WireError>,
    ) -> Result<Flow, WireError> {
        if !self.started && !bytes.is_empty() {
            self.started = true;
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            bytes = bytes.strip_prefix(b"\n").unwrap_or(bytes);
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            let flow = if self.partial.is_empty() {
                self.line(&bytes[..end], &mut on_event)?
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[..end]);
                let flow = self.line(&line, &mut on_event);
                line.clear();
                self.partial = line;
                flow?
            };
            let terminator = bytes[end];
            bytes = &bytes[end + 1..];
            if terminator == b'\r' {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if flow == Flow::Done {
                return Ok(Flow::Done);
            }
        }
        self.partial.extend_from_slice(bytes);
        Ok(Flow::More)
    }

    fn line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&str, &str) -> Result<Flow, WireError>,
    ) -> Result<Flow, WireError> {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        let line = std::str::from_utf8(line)
            .map_err(|error| WireError::fatal(format!("the provider's event stream is not UTF-8: {error}")))?;
        let (field, value) = match line.split_once(':') {
            Some(("", _)) => return Ok(Flow::More),
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {}
        }
        Ok(Flow::More)
    }

    fn dispatch(
        &mut self,
        on_event: &mut impl FnMut(&str, &str) -> Result<Flow, WireError>,
    ) -> Result<Flow, WireError> {
        if self.data.is_empty() {
            self.event.clear();
            return Ok(Flow::More);
        }
        self.data.pop();
        let name = if self.event.is_empty() { "message" } else { &self.event };
        let flow = on_event(name, &self.data);
        self.data.clear();
        self.event.clear();
        flow
    }
}

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
        bytes,
        parser: SseParser::default(),
        decoder,
        pending: VecDeque::new(),
        scratch: Vec::new(),
        failure: None,
        finished: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}

struct Decoding<S, D, E> {
    bytes: S,
    parser: SseParser,
    decoder: D,
    pending: VecDeque<LlmEvent>,
    scratch: Vec<LlmEvent>,
    /// Reported once the events decoded before it are out.
    failure: Option<DecodeFailure<E>>,
    finished: bool,
}

impl<S, B, E, D> Decoding<S, D, E>
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
            if let Some(failure) = self.failure.take() {
                return Some(Err(failure));
            }
            if self.finished {
                return None;
            }
            let step = match self.bytes.next().await {
                Some(Ok(chunk)) => {
                    let Self { parser, decoder, scratch, .. } = self;
                    let fed = parser.feed(chunk.as_ref(), |event, data| decoder.event(event, data, scratch));
                    match fed {
                        Ok(Flow::More) => Ok(()),
                        Ok(Flow::Done) => {
                            self.finished = true;
                            self.decoder.end(&mut self.scratch)
                        }
                        Err(error) => Err(error),
                    }
                    .map_err(DecodeFailure::Wire)
                }
                None => {
                    self.finished = true;
                    self.decoder.end(&mut self.scratch).map_err(DecodeFailure::Wire)
                }
                Some(Err(error)) => Err(DecodeFailure::Transport(error)),
            };
            self.pending.extend(self.scratch.drain(..));
            if let Err(failure) = step {
                self.finished = true;
                self.failure = Some(failure);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of `stream` fed in pieces of `size` bytes.
    fn events(stream: &str, size: usize) -> Vec<(String, String)> {
        let mut parser = SseParser::default();
        let mut seen = Vec::new();
        for piece in stream.as_bytes().chunks(size) {
            let flow = parser.feed(piece, |name, data| {
                seen.push((name.to_owned(), data.to_owned()));
                Ok(Flow::More)
            });
            assert_eq!(flow, Ok(Flow::More));
        }
        seen
    }

    #[test]
    fn frames_events_however_the_bytes_are_cut() {
        let stream = "\u{feff}: keep-alive\r\n\r\ndata: one\r\n\r\nevent: message_stop\ndata:{\"a\":\r\ndata:  1}\n\nid: 7\nretry: 10\ndata: ünï\r\rdata\n\ndata:\n\nevent: lonely\n\ndata: unfinished";
        // `data` without a colon and `data:` both give an event with empty data, as the
        // standard says; an event without data, or an unterminated last one, gives none.
        let expected: Vec<(String, String)> = [
            ("message", "one"),
            ("message_stop", "{\"a\":\n 1}"),
            ("message", "ünï"),
            ("message", ""),
            ("message", ""),
        ]
        .iter()
        .map(|(name, data)| ((*name).to_owned(), (*data).to_owned()))
        .collect();
        for size in [1, 2, 3, 5, 7, 64, stream.len()] {
            assert_eq!(events(stream, size), expected, "pieces of {size} bytes");
        }
    }

    #[test]
    fn stops_at_done_and_reports_bytes_that_are_not_utf8() {
        let mut parser = SseParser::default();
        let mut seen = 0;
        let flow = parser.feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\n", |_, data| {
            seen += 1;
            Ok(if data == "2" { Flow::Done } else { Flow::More })
        });
        assert_eq!((flow, seen), (Ok(Flow::Done), 2));
        let mut parser = SseParser::default();
        let error = parser.feed(b"data: \xff\n\n", |_, _| Ok(Flow::More));
        assert!(error.is_err_and(|error| error.message.contains("UTF-8")));
    }
}
