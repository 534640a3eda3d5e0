//! What the registry client counts about its own requests: answers by status code and how long
//! they took. It lives beside the client that counts; `crate::metrics` renders it for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the registry request duration histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const CODES: std::ops::Range<u16> = 100..600;

/// Registry requests by answer and how long they took. Counting is a few relaxed atomic adds: it
/// runs for every request.
#[derive(Debug)]
pub struct RegistryMetrics {
    /// By HTTP status code (100 to 599); the last slot counts requests that got no answer.
    by_code: Vec<AtomicU64>,
    /// Requests per duration bucket, the last past every bound (not cumulative; summed when
    /// read).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self {
            by_code: (CODES.start..=CODES.end)
                .map(|_| AtomicU64::new(0))
                .collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

/// The requests' durations as a Prometheus histogram reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Each bound of [`BUCKETS`] with the requests that took at most that long (cumulative).
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl RegistryMetrics {
    /// One request, answered with `code` (`None`: no answer), after `took`.
    pub fn observe(&self, code: Option<u16>, took: Duration) {
        let slot = match code {
            Some(c) if CODES.contains(&c) => usize::from(c - CODES.start),
            _ => self.by_code.len() - 1,
        };
        self.by_code[slot].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests per status code (`None`: no answer), codes that were never answered left out.
    pub fn by_code(&self) -> Vec<(Option<u16>, u64)> {
        let no_answer = self.by_code.len() - 1;
        self.by_code
            .iter()
            .enumerate()
            .map(|(slot, n)| (slot, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(slot, n)| {
                let code = (slot != no_answer).then(|| CODES.start + slot as u16);
                (code, n)
            })
            .collect()
    }

    pub fn histogram(&self) -> Histogram {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .zip(BUCKETS)
            .map(|(bucket, bound)| {
                cumulative += bucket.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        Histogram {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_code_and_duration() {
        let metrics = RegistryMetrics::default();
        metrics.observe(Some(200), Duration::from_millis(3));
        metrics.observe(Some(200), Duration::from_millis(40));
        metrics.observe(Some(503), Duration::from_secs(60));
        metrics.observe(None, Duration::from_millis(7));
        assert_eq!(
            metrics.by_code(),
            vec![(Some(200), 2), (Some(503), 1), (None, 1)]
        );
        let histogram = metrics.histogram();
        assert_eq!(histogram.count, 4);
        assert_eq!(histogram.buckets[0], (0.005, 1));
        assert_eq!(histogram.buckets[1], (0.01, 2));
        assert_eq!(histogram.buckets[3], (0.05, 3));
        assert_eq!(histogram.buckets.last(), Some(&(30.0, 3)));
    }
}
