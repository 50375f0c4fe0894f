//! The circuit breaker of one server: after `failure_threshold` consecutive failed calls the
//! server is refused calls for `cooldown`, then one trial call decides.

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// How a finished call counts for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server answered (an `isError` result is still an answer).
    Success,
    /// Timeout, transport failure, server-side error.
    Failure,
    /// Says nothing about the server's health (cancelled by the user, bad arguments).
    Neutral,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), cooldown, consecutive_failures: 0, opened_at: None, trial_in_flight: false }
    }

    pub fn state(&self) -> CircuitState {
        match self.opened_at {
            None => CircuitState::Closed,
            Some(at) if at.elapsed() < self.cooldown => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    /// Lets a call through (`Ok(is_trial)`) or says why not.
    pub fn admit(&mut self, server: &str) -> Result<bool, String> {
        match self.state() {
            CircuitState::Closed => Ok(false),
            CircuitState::Open => Err(self.open_message(server)),
            CircuitState::HalfOpen if self.trial_in_flight => {
                Err(format!("server `{server}` is refusing calls: a trial call is checking whether it recovered"))
            }
            CircuitState::HalfOpen => {
                self.trial_in_flight = true;
                Ok(true)
            }
        }
    }

    /// Why calls are refused while the circuit is open.
    pub fn open_message(&self, server: &str) -> String {
        let remaining = self.opened_at.map(|at| self.cooldown.saturating_sub(at.elapsed())).unwrap_or_default();
        format!(
            "server `{server}` is refusing calls: its circuit breaker opened after {} consecutive failures; the next trial call is allowed in {:.1}s",
            self.consecutive_failures,
            remaining.as_secs_f64()
        )
    }

    /// Closes the circuit at once (an admin who knows the server is healthy again).
    pub fn reset(&mut self) {
        self.consecutive_failures = 0;
        self.opened_at = None;
        self.trial_in_flight = false;
    }

    pub fn record(&mut self, verdict: Verdict, trial: bool) {
        if trial {
            self.trial_in_flight = false;
        }
        match verdict {
            Verdict::Success => {
                self.consecutive_failures = 0;
                self.opened_at = None;
            }
            Verdict::Failure => {
                self.consecutive_failures += 1;
                if trial || self.consecutive_failures >= self.threshold {
                    self.opened_at = Some(Instant::now());
                }
            }
            Verdict::Neutral => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let mut breaker = Breaker::new(2, Duration::from_millis(30));
        breaker.record(Verdict::Failure, false);
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.record(Verdict::Failure, false);
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(breaker.admit("s").is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert_eq!(breaker.admit("s"), Ok(true));
        assert!(breaker.admit("s").is_err(), "one trial at a time");
        breaker.record(Verdict::Failure, true);
        assert_eq!(breaker.state(), CircuitState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(breaker.admit("s"), Ok(true));
        breaker.record(Verdict::Success, true);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
