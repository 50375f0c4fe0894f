//! Gathering what other tasks are about to hand over, so that it travels as one piece.
//!
//! A model's answer reaches the server a network read at a time, each read holding several
//! streamed chunks, but the chunks of one read are handed from task to task one at a time (the
//! HTTP client's connection task passes the body on a chunk per hand-off). Work done per
//! piece downstream (a frame, a write) is then paid per chunk although the chunks were all
//! there at once. A consumer that lets the tasks already woken run for a few scheduler rounds,
//! only while each round brings more, collects what was ready together at a cost of
//! microseconds, and waits for nothing that is not already on its way.

/// At most this many rounds: a few are enough to drain one read's chunks (`BENCHMARKS.md`,
/// "Third pass"), and a bound keeps a busy stream from delaying the first piece for long.
pub const ROUNDS: usize = 4;

/// Whether a round of [`gather`] brought anything, and whether to keep going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// It took something and has room for more.
    More,
    /// It took nothing, or has taken all it wants.
    Enough,
}

/// Yields to the scheduler, then calls `take_ready` to collect what is ready now, for up to
/// [`ROUNDS`] rounds, stopping at the first round that answers [`Round::Enough`].
pub async fn gather(mut take_ready: impl FnMut() -> Round) {
    for _ in 0..ROUNDS {
        tokio::task::yield_now().await;
        if take_ready() == Round::Enough {
            return;
        }
    }
}
