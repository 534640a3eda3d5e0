//! What the registry client counts about its own requests: answers by status code and how long
//! they took, as prometheus-client metrics. They live beside the client that counts;
//! `crate::metrics` serves them at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the registry request duration histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label of a request's answer: its HTTP status code, or `error` when none came.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Answer {
    pub code: String,
}

/// Registry requests by answer and how long they took. Clones share the counts.
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    pub requests: Family<Answer, Counter>,
    pub durations: Histogram,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Histogram::new(BUCKETS),
        }
    }
}

impl RegistryMetrics {
    /// One request, answered with `code` (`None`: no answer), after `took`.
    pub fn observe(&self, code: Option<u16>, took: Duration) {
        let code = match code {
            Some(code) if (100..600).contains(&code) => code.to_string(),
            _ => "error".to_string(),
        };
        self.requests.get_or_create(&Answer { code }).inc();
        self.durations.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_code() {
        let metrics = RegistryMetrics::default();
        metrics.observe(Some(200), Duration::from_millis(3));
        metrics.observe(Some(200), Duration::from_millis(40));
        metrics.observe(Some(503), Duration::from_secs(60));
        metrics.observe(None, Duration::from_millis(7));
        metrics.observe(Some(999), Duration::from_millis(7));
        let count = |code: &str| {
            metrics
                .requests
                .get(&Answer {
                    code: code.to_string(),
                })
                .map(|counter| counter.get())
        };
        assert_eq!(count("200"), Some(2));
        assert_eq!(count("503"), Some(1));
        assert_eq!(count("error"), Some(2));
    }
}
