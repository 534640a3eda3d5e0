//! The sweep: every `worker.sweep_interval_s`, a second walk from id 0 up to the watermark, beside
//! the passes above it, for projects below the watermark that have no answer: tracking rows
//! deleted by hand, project rows restored with their old id, a project whose creating transaction
//! committed so late that the watermark's fences did not see it. It reads the projects in spans of
//! `SPAN` ids, each one range scan of the two primary keys, so no statement runs long; a sweep of
//! a fully analysed installation is one pass over both indexes. A pure state machine, tested on
//! its own; the Scheduler does the reading.

use std::time::{Duration, Instant};

/// Ids a sweep reads per statement.
pub const SPAN: i64 = 100_000;

#[derive(Debug)]
pub struct Sweep {
    interval: Duration,
    last_done: Option<Instant>,
    /// The sweep under way: next id to read after, and the last id it covers.
    active: Option<(i64, i64)>,
    completed: u64,
}

impl Sweep {
    /// `last_done_ago`: how long ago this shard last finished a sweep (`None`: never).
    pub fn new(interval: Duration, last_done_ago: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            interval,
            last_done: last_done_ago.map(|ago| now.checked_sub(ago).unwrap_or(now)),
            active: None,
            completed: 0,
        }
    }

    /// Whether a sweep should start now.
    pub fn due(&self) -> bool {
        self.active.is_none()
            && self
                .last_done
                .is_none_or(|done| done.elapsed() >= self.interval)
    }

    /// Starts a sweep of ids up to `until` (the watermark: above it the passes look anyway).
    pub fn start(&mut self, until: i64) {
        if self.active.is_none() {
            self.active = Some((0, until));
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Sweeps finished by this process.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// The next span to read, `(after, through)`, while a sweep is under way.
    pub fn next_span(&self) -> Option<(i64, i64)> {
        self.active
            .map(|(after, until)| (after, after.saturating_add(SPAN).min(until)))
    }

    /// The span read from `after` ended at `to` (the last id returned when the read was cut at its
    /// limit, else the end of the span). Returns true when the sweep is complete. An answer for a
    /// span other than the current one (the sweep was restarted meanwhile) changes nothing.
    pub fn advanced(&mut self, after: i64, to: i64) -> bool {
        let Some((cursor, until)) = self.active else {
            return false;
        };
        if cursor != after {
            return false;
        }
        if to >= until {
            self.active = None;
            self.last_done = Some(Instant::now());
            self.completed += 1;
            true
        } else {
            self.active = Some((to, until));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_at_first_and_then_every_interval() {
        let never = Sweep::new(Duration::from_secs(3600), None);
        assert!(never.due());
        let recent = Sweep::new(Duration::from_secs(3600), Some(Duration::from_secs(60)));
        assert!(!recent.due());
        let old = Sweep::new(Duration::from_secs(3600), Some(Duration::from_secs(7200)));
        assert!(old.due());
    }

    #[test]
    fn a_sweep_walks_spans_up_to_where_it_started_and_then_is_done() {
        let mut s = Sweep::new(Duration::from_secs(3600), None);
        s.start(250_000);
        assert!(!s.due(), "not while one runs");
        assert_eq!(s.next_span(), Some((0, 100_000)));
        // A span cut at its limit continues after its last id.
        assert!(!s.advanced(0, 42_000));
        assert_eq!(s.next_span(), Some((42_000, 142_000)));
        assert!(!s.advanced(7, 99), "a stale answer changes nothing");
        assert!(!s.advanced(42_000, 142_000));
        assert_eq!(s.next_span(), Some((142_000, 242_000)));
        assert!(!s.advanced(142_000, 242_000));
        assert_eq!(s.next_span(), Some((242_000, 250_000)));
        assert!(s.advanced(242_000, 250_000));
        assert!(!s.is_active());
        assert_eq!(s.completed(), 1);
        assert!(!s.due(), "just done");
    }

    #[test]
    fn an_empty_range_is_swept_at_once() {
        let mut s = Sweep::new(Duration::from_secs(1), None);
        s.start(0);
        assert_eq!(s.next_span(), Some((0, 0)));
        assert!(s.advanced(0, 0));
    }
}
