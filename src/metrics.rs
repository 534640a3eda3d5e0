//! Prometheus metrics in the text exposition format, served at `/metrics` on the admin listener.
//! Registry requests are counted where they are made (`registry::metrics`); everything else is
//! read from the Scheduler's status (which carries the Writer's) at scrape time.

use std::fmt::Write as _;

use crate::registry::RegistryMetrics;
use crate::scheduler::{BreakerPosition, ServiceStatus};

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP registry_repair_{name} {help}");
    let _ = writeln!(out, "# TYPE registry_repair_{name} {kind}");
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "registry_repair_{name} {value}");
}

/// The whole exposition.
pub fn render(status: &ServiceStatus, registry: &RegistryMetrics) -> String {
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
        u8::from(status.breaker != BreakerPosition::Closed),
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
    render_registry(&mut out, registry);
    out
}

/// The registry client's requests: by status code, and a duration histogram.
fn render_registry(out: &mut String, registry: &RegistryMetrics) {
    header(
        out,
        "registry_requests_total",
        "counter",
        "List Sub Repositories requests, by HTTP status code (`error`: no answer)",
    );
    for (code, n) in registry.by_code() {
        let code = code.map_or_else(|| "error".to_string(), |c| c.to_string());
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
    let histogram = registry.histogram();
    for (bound, cumulative) in &histogram.buckets {
        let _ = writeln!(
            out,
            "registry_repair_registry_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = histogram.count;
    let _ = writeln!(
        out,
        "registry_repair_registry_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "registry_repair_registry_request_duration_seconds_sum {}",
        histogram.sum_seconds
    );
    let _ = writeln!(
        out,
        "registry_repair_registry_request_duration_seconds_count {count}"
    );
}
