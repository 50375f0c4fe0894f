//! The answer's text on its way from the model to the client: deltas that reach the server
//! together leave together ([`gather_ready_text`]), and `streaming.min_text_interval` spaces
//! the `text` chunks further ([`HeldText`]). Every chunk a client gets costs a frame, a write
//! and the client's own work; neither rule drops, reorders or delays text past what it says.

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};

use crate::llm::{LlmError, LlmEvent, LlmStream};
use crate::ready::{self, Round};

/// Appends to `delta` the text deltas `stream` has ready now or within a few scheduler rounds
/// ([`crate::ready`]): those of the same network read, handed over one at a time. Nothing not
/// already on its way is waited for. Returns the first event other than text it read, which
/// the caller handles next.
pub(super) async fn gather_ready_text(
    stream: &mut LlmStream,
    delta: &mut String,
) -> Option<Option<Result<LlmEvent, LlmError>>> {
    let mut read_ahead = None;
    ready::gather(|| {
        let mut took = false;
        while let Some(event) = stream.next().now_or_never() {
            match event {
                Some(Ok(LlmEvent::Text(more))) => {
                    delta.push_str(&more);
                    took = true;
                }
                other => {
                    read_ahead = Some(other);
                    return Round::Enough;
                }
            }
        }
        if took { Round::More } else { Round::Enough }
    })
    .await;
    read_ahead
}

/// At most one `text` chunk per `streaming.min_text_interval`: a delta after a quiet interval
/// goes out at once, and those that follow it sooner wait for the interval's end and go out
/// together; text a reader sees 20 ms later looks the same. Time is passed in, so the rule is
/// tested without a clock.
pub(super) struct HeldText {
    interval: Duration,
    text: String,
    /// When the held text goes out; `None` while nothing is held.
    due: Option<Instant>,
    last_sent: Option<Instant>,
}

impl HeldText {
    pub(super) fn new(interval_seconds: f64) -> Self {
        let interval = Duration::try_from_secs_f64(interval_seconds).unwrap_or(Duration::ZERO);
        Self { interval, text: String::new(), due: None, last_sent: None }
    }

    /// Takes `delta`, arriving at `now`; returns the text to send now, if any.
    pub(super) fn add(&mut self, delta: String, now: Instant) -> Option<String> {
        if self.interval.is_zero() {
            return Some(delta);
        }
        let next_allowed = self.last_sent.map(|sent| sent + self.interval);
        if self.due.is_none() && next_allowed.is_none_or(|allowed| allowed <= now) {
            self.last_sent = Some(now);
            return Some(delta);
        }
        self.text.push_str(&delta);
        self.due.get_or_insert(next_allowed.unwrap_or(now));
        None
    }

    /// The held text, sent at `now` (the interval is over, or something else comes next).
    pub(super) fn take(&mut self, now: Instant) -> Option<String> {
        self.due.take()?;
        self.last_sent = Some(now);
        Some(std::mem::take(&mut self.text))
    }

    /// Resolves when held text is due; never while nothing is held.
    pub(super) async fn until_due(&self) {
        match self.due {
            Some(due) => tokio::time::sleep_until(due.into()).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(delta: &str) -> Result<LlmEvent, LlmError> {
        Ok(LlmEvent::Text(delta.to_owned()))
    }

    #[tokio::test]
    async fn deltas_ready_together_leave_as_one_and_the_next_event_is_kept() {
        let events = vec![text("b"), text("c"), Ok(LlmEvent::Finish(crate::domain::FinishReason::Stop)), text("late")];
        let mut stream: LlmStream = Box::pin(futures::stream::iter(events));
        let mut delta = "a".to_owned();
        let read_ahead = gather_ready_text(&mut stream, &mut delta).await;
        assert_eq!(delta, "abc");
        assert!(matches!(read_ahead, Some(Some(Ok(LlmEvent::Finish(_))))), "{read_ahead:?}");
        assert!(matches!(stream.next().await, Some(Ok(LlmEvent::Text(late))) if late == "late"), "nothing skipped");

        let mut ended: LlmStream = Box::pin(futures::stream::iter(vec![text("b")]));
        let mut delta = "a".to_owned();
        let read_ahead = gather_ready_text(&mut ended, &mut delta).await;
        assert_eq!(
            (delta.as_str(), read_ahead.is_some_and(|end| end.is_none())),
            ("ab", true),
            "the end is read ahead"
        );
    }

    #[tokio::test]
    async fn a_delta_not_yet_sent_is_not_waited_for() {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        let mut stream: LlmStream = Box::pin(receiver);
        sender.unbounded_send(text("b")).expect("open");
        let mut delta = "a".to_owned();
        // The sender stays open with nothing more sent: the gathering must return all the same.
        let read_ahead = gather_ready_text(&mut stream, &mut delta).await;
        assert_eq!(delta, "ab");
        assert!(read_ahead.is_none());
        sender.unbounded_send(text("c")).expect("open");
        assert!(matches!(stream.next().await, Some(Ok(LlmEvent::Text(next))) if next == "c"));
    }

    #[test]
    fn a_delta_after_a_quiet_interval_goes_at_once_and_quicker_ones_wait_for_its_end() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut held = HeldText::new(0.020);
        assert_eq!(held.add("a".into(), at(0)).as_deref(), Some("a"), "the first delta is not held");
        assert_eq!(held.add("b".into(), at(5)), None);
        assert_eq!(held.add("c".into(), at(10)), None);
        assert_eq!(held.due, Some(at(20)), "due an interval after the last chunk went out");
        assert_eq!(held.take(at(20)).as_deref(), Some("bc"));
        assert_eq!(held.take(at(21)), None, "nothing held any more");

        assert_eq!(held.add("d".into(), at(30)), None, "10 ms after the last chunk: held");
        assert_eq!(held.due, Some(at(40)));
        assert_eq!(held.add("e".into(), at(70)), None, "held text stays held until it is taken");
        assert_eq!(held.take(at(70)).as_deref(), Some("de"));
        assert_eq!(held.add("f".into(), at(95)).as_deref(), Some("f"), "after a quiet interval: at once");
    }

    #[test]
    fn no_interval_sends_every_delta() {
        let now = Instant::now();
        let mut held = HeldText::new(0.0);
        assert_eq!(held.add("a".into(), now).as_deref(), Some("a"));
        assert_eq!(held.add("b".into(), now).as_deref(), Some("b"));
        assert_eq!(held.take(now), None);
    }
}
