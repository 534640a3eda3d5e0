//! Prometheus metrics in the text exposition format, served at `/metrics` on the admin listener.
//! Registry requests are counted where they are made (the client); everything else is read from
//! the Scheduler's status (which carries the Writer's) at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::scheduler::Status;

/// Upper bounds of the registry request duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registry requests by answer and how long they took. Counting is a few relaxed atomic adds: it
/// runs for every request.
#[derive(Debug)]
pub struct RegistryMetrics {
    /// By HTTP status code (100 to 599); the last slot counts requests that got no answer.
    by_code: Vec<AtomicU64>,
    /// Requests per duration bucket, the last past every bound (not cumulative; summed when
    /// rendered).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

const CODES: std::ops::Range<u16> = 100..600;

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

impl RegistryMetrics {
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

    fn render(&self, out: &mut String) {
        header(
            out,
            "registry_requests_total",
            "counter",
            "List Sub Repositories requests, by HTTP status code (`error`: no answer)",
        );
        let no_answer = self.by_code.len() - 1;
        for (slot, n) in self.by_code.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let code = if slot == no_answer {
                "error".to_string()
            } else {
                (usize::from(CODES.start) + slot).to_string()
            };
            let _ = writeln!(
                out,
                "registry_repair_registry_requests_total{{code=\"{code}\"}} {n}"
            );
        }
        header(
            out,
            "registry_request_duration_seconds",
            "histogram",
            "How long registry requests took",
        );
        let mut cumulative = 0;
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "registry_repair_registry_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "registry_repair_registry_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "registry_repair_registry_request_duration_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "registry_repair_registry_request_duration_seconds_count {count}"
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP registry_repair_{name} {help}");
    let _ = writeln!(out, "# TYPE registry_repair_{name} {kind}");
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "registry_repair_{name} {value}");
}

/// The whole exposition.
pub fn render(status: &Status, registry: &RegistryMetrics) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "projects_analysed_total",
        "counter",
        "Projects recorded by this process, by status",
    );
    let _ = writeln!(
        out,
        "registry_repair_projects_analysed_total{{status=\"completed\"}} {}",
        status.completed
    );
    let _ = writeln!(
        out,
        "registry_repair_projects_analysed_total{{status=\"failed\"}} {}",
        status.failed
    );
    sample(
        &mut out,
        "missing_repositories_found_total",
        "counter",
        "Registry repositories without a container_repositories row, found by this process",
        status.missing_found,
    );
    sample(
        &mut out,
        "ignored_entries_total",
        "counter",
        "Registry entries outside the project path, ignored",
        status.ignored_entries,
    );
    sample(
        &mut out,
        "unaddressable_projects_total",
        "counter",
        "Projects whose path breaks the registry's name grammar, recorded with 0 without a request",
        status.unaddressable,
    );
    sample(
        &mut out,
        "deferred_total",
        "counter",
        "Analyses ended unrecorded by trouble outside the project, to be tried again",
        status.deferred,
    );
    sample(
        &mut out,
        "analyzer_restarts_total",
        "counter",
        "Analyzers restarted by their supervisor after a panic",
        status.analyzer_restarts,
    );
    sample(
        &mut out,
        "in_flight",
        "gauge",
        "Projects being analysed now",
        status.in_flight,
    );
    sample(
        &mut out,
        "max_concurrency",
        "gauge",
        "The concurrency limit in force",
        status.max_concurrency,
    );
    sample(
        &mut out,
        "enabled",
        "gauge",
        "The feature flag: 1 dispatching allowed, 0 paused",
        u8::from(status.enabled),
    );
    sample(
        &mut out,
        "queued",
        "gauge",
        "Projects read from the database and waiting for an Analyzer",
        status.queued,
    );
    sample(
        &mut out,
        "breaker_open",
        "gauge",
        "1 while the registry is treated as unavailable (open or half-open)",
        u8::from(status.breaker != "closed"),
    );
    sample(
        &mut out,
        "breaker_trips_total",
        "counter",
        "Times the registry was found unavailable as a whole",
        status.breaker_trips,
    );
    sample(
        &mut out,
        "watermark",
        "gauge",
        "Every project of this shard up to this id has a row",
        status.watermark,
    );
    if let Some(remaining) = status.remaining {
        sample(
            &mut out,
            "remaining_projects",
            "gauge",
            "Projects without a row yet (estimate)",
            remaining,
        );
    }
    if let Some(writer) = &status.writer {
        sample(
            &mut out,
            "writer_buffered",
            "gauge",
            "Results held by the Writer, not yet in the database",
            writer.buffered,
        );
        sample(
            &mut out,
            "writer_rows_written_total",
            "counter",
            "Rows written to the tracking table",
            writer.rows_written,
        );
        header(
            &mut out,
            "writer_flushes_total",
            "counter",
            "Bulk writes, by what started them",
        );
        for (reason, n) in [
            ("size", writer.flushes_size),
            ("timer", writer.flushes_timer),
            ("failure", writer.flushes_failure),
            ("pass_end", writer.flushes_requested),
            ("shutdown", writer.flushes_shutdown),
        ] {
            let _ = writeln!(
                out,
                "registry_repair_writer_flushes_total{{reason=\"{reason}\"}} {n}"
            );
        }
        sample(
            &mut out,
            "writer_failed_writes_total",
            "counter",
            "Bulk writes the database refused (rows kept and retried)",
            writer.failed_writes,
        );
    }
    registry.render(&mut out);
    out
}
