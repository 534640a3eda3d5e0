//! When the Writer writes: on size, on its timer, at once for a failed project, when asked; one
//! write at a time; backing off after the database refused one; and when to tell the Scheduler to
//! hold back. Pure decisions over counts and instants, so they are tested without an actor or a
//! database; the actor in `mod.rs` carries them out.

use std::time::{Duration, Instant};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why a flush happened; counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    Size,
    Timer,
    Failure,
    /// Asked for at the end of a pass.
    Requested,
    /// Asked for on shutdown.
    Shutdown,
}

impl FlushReason {
    /// Someone waits for this flush: it is written even while backing off.
    fn asked(self) -> bool {
        matches!(self, FlushReason::Requested | FlushReason::Shutdown)
    }
}

/// What the Writer holds as it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Rows buffered, not in the write under way.
    pub buffered: usize,
    /// A write is under way.
    pub writing: bool,
    /// Someone waits for the buffer to be written.
    pub waiters: bool,
}

/// What to do about a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStep {
    /// Write the whole buffer now, in one statement.
    Write,
    /// Not now: a write is under way (its end decides again), or the database refused one a
    /// moment ago (the timer tries again).
    Later,
    /// Everything is written: answer whoever waits.
    Written,
}

/// The Writer's flush decisions and the state they need: the batch size, the bound over which the
/// Scheduler holds back, a failed project waiting for the write under way, the backoff.
#[derive(Debug)]
pub struct FlushPolicy {
    batch_size: usize,
    /// Over this many held rows the Scheduler stops dispatching.
    high_water: usize,
    /// A failed project arrived while writing: write again as soon as the current write ends.
    urgent: bool,
    retry_delay: Duration,
    retry_after: Option<Instant>,
    full: bool,
}

impl FlushPolicy {
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            high_water: batch_size.saturating_mul(4).max(64),
            urgent: false,
            retry_delay: RETRY_MIN,
            retry_after: None,
            full: false,
        }
    }

    /// A row arrived, `buffered` now: a failed project is written at once, a full batch too.
    pub fn after_record(&self, failed: bool, buffered: usize) -> Option<FlushReason> {
        if failed {
            Some(FlushReason::Failure)
        } else if buffered >= self.batch_size {
            Some(FlushReason::Size)
        } else {
            None
        }
    }

    /// Whether a flush for `reason` writes now. `Write` means the write starts.
    pub fn flush(&mut self, reason: FlushReason, held: Held, now: Instant) -> FlushStep {
        if held.writing {
            self.urgent |= reason == FlushReason::Failure;
            return FlushStep::Later;
        }
        if held.buffered == 0 {
            return FlushStep::Written;
        }
        if !reason.asked() && self.retry_after.is_some_and(|t| now < t) {
            return FlushStep::Later;
        }
        self.urgent = false;
        FlushStep::Write
    }

    /// A write succeeded; `held` is what arrived meanwhile. Answers the flush to start now, if
    /// any: what arrived is written at once if someone waits (who is answered at once if nothing
    /// did), a failed project is among it, or it makes a batch.
    pub fn written(&mut self, held: Held) -> Option<FlushReason> {
        self.retry_delay = RETRY_MIN;
        self.retry_after = None;
        if held.waiters {
            Some(FlushReason::Requested)
        } else if held.buffered == 0 {
            None
        } else if self.urgent {
            Some(FlushReason::Failure)
        } else if held.buffered >= self.batch_size {
            Some(FlushReason::Size)
        } else {
            None
        }
    }

    /// A write failed at `now`: no flush but an asked one writes before the answered delay is
    /// over, and the next failure waits twice as long (up to 10 s).
    pub fn write_failed(&mut self, now: Instant) -> Duration {
        let delay = self.retry_delay;
        self.retry_after = Some(now + delay);
        self.retry_delay = (delay * 2).min(RETRY_MAX);
        delay
    }

    /// The Writer holds `rows` (buffered or being written). Answers whether the Scheduler must
    /// hold back, when that changed.
    pub fn pressure(&mut self, rows: usize) -> Option<bool> {
        let full = rows >= self.high_water;
        (full != self.full).then(|| {
            self.full = full;
            full
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(buffered: usize) -> Held {
        Held {
            buffered,
            writing: false,
            waiters: false,
        }
    }

    fn writing(buffered: usize) -> Held {
        Held {
            writing: true,
            ..held(buffered)
        }
    }

    #[test]
    fn a_full_batch_flushes_on_size_and_a_failed_project_at_once() {
        let policy = FlushPolicy::new(3);
        assert_eq!(policy.after_record(false, 2), None);
        assert_eq!(policy.after_record(false, 3), Some(FlushReason::Size));
        assert_eq!(policy.after_record(true, 1), Some(FlushReason::Failure));
    }

    #[test]
    fn the_timer_writes_what_is_buffered_and_an_empty_buffer_answers_at_once() {
        let mut policy = FlushPolicy::new(100);
        let now = Instant::now();
        assert_eq!(
            policy.flush(FlushReason::Timer, held(1), now),
            FlushStep::Write
        );
        assert_eq!(
            policy.flush(FlushReason::Requested, held(0), now),
            FlushStep::Written
        );
    }

    #[test]
    fn one_write_at_a_time_and_what_arrived_meanwhile_goes_next_when_due() {
        let mut policy = FlushPolicy::new(10);
        let now = Instant::now();
        assert_eq!(
            policy.flush(FlushReason::Size, writing(10), now),
            FlushStep::Later
        );
        // A batch arrived meanwhile: it is written next.
        assert_eq!(policy.written(held(10)), Some(FlushReason::Size));
        // Less than a batch waits for the timer.
        assert_eq!(policy.written(held(4)), None);
        // Nothing arrived: nothing to write.
        assert_eq!(policy.written(held(0)), None);
        // Someone waits: written at once, or answered at once if nothing arrived.
        for buffered in [1, 0] {
            let waited = Held {
                waiters: true,
                ..held(buffered)
            };
            assert_eq!(policy.written(waited), Some(FlushReason::Requested));
            assert_eq!(
                policy.flush(FlushReason::Requested, waited, now),
                if buffered > 0 {
                    FlushStep::Write
                } else {
                    FlushStep::Written
                }
            );
        }
    }

    #[test]
    fn a_failed_project_during_a_write_is_written_right_after_it() {
        let mut policy = FlushPolicy::new(100);
        let now = Instant::now();
        assert_eq!(
            policy.flush(FlushReason::Failure, writing(1), now),
            FlushStep::Later
        );
        assert_eq!(policy.written(held(1)), Some(FlushReason::Failure));
        // Once written, the urgency is spent.
        assert_eq!(
            policy.flush(FlushReason::Failure, held(1), now),
            FlushStep::Write
        );
        assert_eq!(policy.written(held(1)), None);
    }

    #[test]
    fn after_a_failed_write_only_an_asked_flush_writes_until_the_delay_is_over() {
        let mut policy = FlushPolicy::new(2);
        let now = Instant::now();
        assert_eq!(policy.write_failed(now), RETRY_MIN);
        for reason in [FlushReason::Timer, FlushReason::Size, FlushReason::Failure] {
            assert_eq!(
                policy.flush(reason, held(5), now),
                FlushStep::Later,
                "{reason:?}"
            );
        }
        for reason in [FlushReason::Requested, FlushReason::Shutdown] {
            assert_eq!(
                policy.flush(reason, held(5), now),
                FlushStep::Write,
                "{reason:?}"
            );
        }
        assert_eq!(
            policy.flush(FlushReason::Timer, held(5), now + RETRY_MIN),
            FlushStep::Write
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_a_success_resets_it() {
        let mut policy = FlushPolicy::new(2);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..8).map(|_| policy.write_failed(now)).collect();
        assert_eq!(delays[1], RETRY_MIN * 2);
        assert_eq!(delays.last(), Some(&RETRY_MAX));
        assert_eq!(policy.written(held(0)), None);
        assert_eq!(policy.write_failed(now), RETRY_MIN);
    }

    #[test]
    fn over_four_batches_the_scheduler_is_told_to_hold_back_once_and_to_resume_once() {
        let mut policy = FlushPolicy::new(100);
        assert_eq!(policy.pressure(399), None);
        assert_eq!(policy.pressure(400), Some(true));
        assert_eq!(policy.pressure(900), None);
        assert_eq!(policy.pressure(10), Some(false));
        assert_eq!(policy.pressure(0), None);
        // Small batches still buffer 64 rows before holding back.
        assert_eq!(FlushPolicy::new(1).pressure(63), None);
    }
}
