//! The circuit breaker that tells a registry (or database) failing as a whole from one project's
//! trouble. Consecutive projects that end in trouble, with no success between, open it: the
//! Scheduler stops dispatching, probes `GET /gitlab/v1/` with a growing delay, and when the registry
//! answers lets one project through; its success closes the breaker, its failure opens it again.

use std::time::{Duration, Instant};

use super::BreakerPosition;

/// Projects in a row that end in trouble before the breaker opens.
pub const TRIP_AFTER: u32 = 3;
const DELAY_MIN: Duration = Duration::from_millis(500);
const DELAY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Dispatching as usual.
    Closed,
    /// Nothing is dispatched; a probe is due at `probe_at`.
    Open { probe_at: Instant },
    /// The probe answered; one trial project may run.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    state: State,
    consecutive: u32,
    delay: Duration,
    opened_at: Option<Instant>,
    last_error: Option<String>,
    trips: u64,
}

/// What a change of state means for the caller: a probe to schedule, or a recovery to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// The breaker opened (or re-opened): probe after this delay.
    Opened {
        probe_in: Duration,
    },
    /// The breaker closed after this long open.
    Closed {
        after: Duration,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed,
            consecutive: 0,
            delay: DELAY_MIN,
            opened_at: None,
            last_error: None,
            trips: 0,
        }
    }
}

impl Breaker {
    /// Open from the start: the registry did not answer before the first dispatch, so nothing
    /// is dispatched until a probe says it is there.
    pub fn waiting_for_registry(reason: String) -> Self {
        Self {
            state: State::Open {
                probe_at: Instant::now() + DELAY_MIN,
            },
            opened_at: Some(Instant::now()),
            last_error: Some(reason),
            ..Self::default()
        }
    }

    /// The delay before the next probe.
    pub fn probe_delay(&self) -> Duration {
        self.delay
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn position(&self) -> BreakerPosition {
        match self.state {
            State::Closed => BreakerPosition::Closed,
            State::Open { .. } => BreakerPosition::Open,
            State::HalfOpen => BreakerPosition::HalfOpen,
        }
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// How many projects may be in flight now, of this member's `share`.
    pub fn allowed(&self, share: usize) -> usize {
        match self.state {
            State::Closed => share,
            State::Open { .. } => 0,
            State::HalfOpen => share.min(1),
        }
    }

    /// A project was analysed: the registry serves.
    pub fn success(&mut self) -> Transition {
        self.consecutive = 0;
        if self.state == State::Closed {
            return Transition::None;
        }
        self.state = State::Closed;
        self.delay = DELAY_MIN;
        let after = self
            .opened_at
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        Transition::Closed { after }
    }

    /// A project could not be analysed for a reason that may lie outside it.
    pub fn trouble(&mut self, reason: &str) -> Transition {
        self.consecutive += 1;
        self.last_error = Some(reason.to_string());
        match self.state {
            State::Closed if self.consecutive >= TRIP_AFTER => {
                self.trips += 1;
                self.opened_at = Some(Instant::now());
                self.open()
            }
            // The trial project failed too: wait longer before the next probe.
            State::HalfOpen => {
                self.delay = (self.delay * 2).min(DELAY_MAX);
                self.open()
            }
            _ => Transition::None,
        }
    }

    /// The probe's answer: the registry is reachable (`Ok`) or not (`Err(reason)`).
    pub fn probed(&mut self, answer: Result<(), String>) -> Transition {
        if !matches!(self.state, State::Open { .. }) {
            return Transition::None;
        }
        match answer {
            Ok(()) => {
                self.state = State::HalfOpen;
                Transition::None
            }
            Err(reason) => {
                self.last_error = Some(reason);
                self.delay = (self.delay * 2).min(DELAY_MAX);
                self.open()
            }
        }
    }

    /// Whether a probe scheduled earlier is due now.
    pub fn probe_due(&self) -> bool {
        matches!(self.state, State::Open { probe_at } if Instant::now() >= probe_at)
    }

    fn open(&mut self) -> Transition {
        self.state = State::Open {
            probe_at: Instant::now() + self.delay,
        };
        Transition::Opened {
            probe_in: self.delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_trouble_only() {
        let mut b = Breaker::default();
        assert_eq!(b.trouble("503"), Transition::None);
        assert_eq!(b.trouble("503"), Transition::None);
        b.success();
        assert_eq!(b.trouble("503"), Transition::None);
        assert_eq!(b.trouble("503"), Transition::None);
        assert!(matches!(b.trouble("503"), Transition::Opened { .. }));
        assert_eq!(b.allowed(8), 0);
        assert_eq!(b.last_error(), Some("503"));
        assert_eq!(b.trips(), 1);
    }

    #[test]
    fn a_good_probe_lets_one_trial_through_whose_outcome_decides() {
        let mut b = Breaker::default();
        for _ in 0..TRIP_AFTER {
            b.trouble("refused");
        }
        assert!(
            matches!(b.probed(Err("refused".into())), Transition::Opened { probe_in } if probe_in == DELAY_MIN * 2)
        );
        assert_eq!(b.probed(Ok(())), Transition::None);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.allowed(8), 1);
        assert!(
            matches!(b.trouble("401"), Transition::Opened { probe_in } if probe_in == DELAY_MIN * 4)
        );
        b.probed(Ok(()));
        assert!(matches!(b.success(), Transition::Closed { .. }));
        assert_eq!(b.allowed(8), 8);
        assert_eq!(b.trips(), 1, "a re-open is the same outage");
    }
}
