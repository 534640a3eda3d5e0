//! Prometheus metrics, served at `/metrics` on the admin listener in Prometheus' text format
//! (0.0.4), through prometheus-client. Registry requests are counted where they are made
//! (`registry::metrics`); everything else is read from the Scheduler's status (which carries the
//! Writer's and the fleet's) at scrape time, as constant series. Every family is one call in
//! [`Scrape::encode`]: name (prometheus-client adds `_total` to counters), help, samples.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use crate::db::fleet::FleetStatus;
use crate::registry::RegistryMetrics;
use crate::scheduler::{BreakerPosition, ServiceStatus};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The prefix of every series (`registry_repair_...`).
const PREFIX: &str = "registry_repair";

/// What one scrape shows: the status read for it, and the registry client's live metrics.
#[derive(Debug)]
struct Scrape {
    status: ServiceStatus,
    registry: RegistryMetrics,
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let out = &mut out;
        let status = &self.status;
        let counter = ConstCounter::new;
        labelled(
            out,
            "projects_analysed",
            "Projects recorded by this process, by status",
            "status",
            [
                ("completed", counter(status.completed)),
                ("failed", counter(status.failed)),
            ],
        )?;
        for (name, help, value) in [
            (
                "missing_repositories_found",
                "Registry repositories without a container_repositories row, found by this process",
                status.missing_found,
            ),
            (
                "missing_bytes_found",
                "Known sizes of the missing repositories found by this process, summed (each repository deduplicated on its own)",
                status.missing_bytes_found,
            ),
            (
                "sizes_unknown",
                "Missing repositories found by this process whose size the registry did not give (or was not asked)",
                status.sizes_unknown,
            ),
            (
                "ignored_entries",
                "Registry entries outside the project path, ignored",
                status.ignored_entries,
            ),
            (
                "unaddressable_projects",
                "Projects whose path breaks the registry's name grammar, recorded with 0 without a request",
                status.unaddressable,
            ),
            (
                "deferred",
                "Analyses ended unrecorded by trouble outside the project, to be tried again",
                status.deferred,
            ),
            (
                "analyzer_restarts",
                "Analyzers restarted by their supervisor after a panic",
                status.analyzer_restarts,
            ),
        ] {
            one(out, name, help, &counter(value))?;
        }
        for (name, help, value) in [
            ("in_flight", "Projects being analysed now", status.in_flight),
            (
                "max_concurrency",
                "The concurrency limit in force",
                status.max_concurrency,
            ),
            (
                "enabled",
                "The feature flag: 1 dispatching allowed, 0 paused",
                usize::from(status.enabled),
            ),
            (
                "queued",
                "Projects read from the database and waiting for an Analyzer",
                status.queued,
            ),
            (
                "breaker_open",
                "1 while the registry is treated as unavailable (open or half-open)",
                usize::from(status.breaker != BreakerPosition::Closed),
            ),
        ] {
            one(out, name, help, &ConstGauge::new(value))?;
        }
        one(
            out,
            "breaker_trips",
            "Times the registry was found unavailable as a whole",
            &counter(status.breaker_trips),
        )?;
        one(
            out,
            "watermark",
            "Every project of this shard up to this id has a row",
            &ConstGauge::new(status.watermark),
        )?;
        if let Some(remaining) = status.remaining {
            one(
                out,
                "remaining_projects",
                "Projects without a row yet (estimate)",
                &ConstGauge::new(remaining),
            )?;
        }
        if let Some(writer) = &status.writer {
            one(
                out,
                "writer_buffered",
                "Results held by the Writer, not yet in the database",
                &ConstGauge::new(writer.buffered),
            )?;
            one(
                out,
                "writer_rows_written",
                "Rows written to the tracking table",
                &counter(writer.rows_written),
            )?;
            labelled(
                out,
                "writer_flushes",
                "Bulk writes, by what started them",
                "reason",
                [
                    ("size", counter(writer.flushes_size)),
                    ("timer", counter(writer.flushes_timer)),
                    ("failure", counter(writer.flushes_failure)),
                    ("pass_end", counter(writer.flushes_requested)),
                    ("shutdown", counter(writer.flushes_shutdown)),
                ],
            )?;
            one(
                out,
                "writer_failed_writes",
                "Bulk writes the database refused (rows kept and retried)",
                &counter(writer.failed_writes),
            )?;
        }
        if let Some(fleet) = &status.fleet {
            encode_fleet(out, fleet)?;
        }
        one(
            out,
            "registry_requests",
            "List Sub Repositories requests, by HTTP status code (`error`: no answer)",
            &self.registry.requests,
        )?;
        one(
            out,
            "registry_request_duration_seconds",
            "How long registry requests took",
            &self.registry.durations,
        )
    }
}

/// The fleet as this member last read it: its totals, and each live member's share, work and
/// heartbeat, labelled by member id (`host:pid:nonce`).
fn encode_fleet(out: &mut DescriptorEncoder, fleet: &FleetStatus) -> fmt::Result {
    one(
        out,
        "fleet_members",
        "Live members of the fleet (instances of run against this database)",
        &ConstGauge::new(fleet.live),
    )?;
    one(
        out,
        "fleet_concurrency_total",
        "The fleet's total concurrency, shared among its members",
        &ConstGauge::new(fleet.total),
    )?;
    let live = || fleet.members.iter().filter(|m| m.live);
    labelled(
        out,
        "fleet_member_share",
        "Each live member's share of the fleet's concurrency",
        "member",
        live().map(|m| (m.id.as_str(), ConstGauge::new(m.share))),
    )?;
    labelled(
        out,
        "fleet_member_in_flight",
        "Projects each live member has in flight",
        "member",
        live().map(|m| (m.id.as_str(), ConstGauge::new(m.in_flight))),
    )?;
    labelled(
        out,
        "fleet_member_heartbeat_age_seconds",
        "Seconds since each live member's last heartbeat",
        "member",
        live().map(|m| (m.id.as_str(), ConstGauge::new(m.heartbeat_age_s))),
    )
}

/// A family of one unlabelled metric.
fn one(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A family of one metric per value of `label`, in the order given.
fn labelled<V, M>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (V, M)>,
) -> fmt::Result
where
    V: EncodeLabelValue,
    M: EncodeMetric + TypedMetric,
{
    let mut family = out.encode_descriptor(name, help, None, M::TYPE)?;
    for (value, metric) in samples {
        metric.encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// The whole exposition, in Prometheus' text format ([`CONTENT_TYPE`]).
pub fn render(status: ServiceStatus, registry: &RegistryMetrics) -> Result<String, fmt::Error> {
    let mut metrics = Registry::with_prefix(PREFIX);
    metrics.register_collector(Box::new(Scrape {
        status,
        registry: registry.clone(),
    }));
    let mut text = String::new();
    prometheus_text::encode(&mut text, &metrics)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::fleet::members::MemberRow;
    use crate::writer::WriterStats;
    use std::time::Duration;

    /// A live (or dead) member of the sample's fleet, its share also its work in flight.
    fn member(id: &str, share: i32, live: bool) -> MemberRow {
        MemberRow {
            id: id.to_string(),
            host: "h".to_string(),
            pid: 1,
            shard: "0/1".to_string(),
            started_at: chrono::DateTime::UNIX_EPOCH,
            heartbeat_age_s: 0.25,
            share,
            in_flight: share,
            wants_work: true,
            state: "running".to_string(),
            work: "analyse".to_string(),
            analysed: 3,
            live,
        }
    }

    /// A status with every family in it: the fixture is the list of names that exist
    /// (`tests/it/contrib.rs` checks the dashboard and the alerts against it).
    fn sample_status() -> (ServiceStatus, RegistryMetrics) {
        let status = ServiceStatus {
            completed: 7,
            failed: 2,
            missing_found: 11,
            missing_bytes_found: 123_456_789,
            sizes_unknown: 2,
            ignored_entries: 3,
            unaddressable: 1,
            deferred: 4,
            analyzer_restarts: 1,
            in_flight: 2,
            max_concurrency: 8,
            enabled: true,
            queued: 17,
            breaker: BreakerPosition::HalfOpen,
            breaker_trips: 2,
            watermark: 1234,
            remaining: Some(99),
            writer: Some(WriterStats {
                buffered: 5,
                rows_written: 40,
                flushes_size: 1,
                flushes_timer: 2,
                flushes_failure: 3,
                flushes_requested: 4,
                flushes_shutdown: 5,
                failed_writes: 6,
                ..WriterStats::default()
            }),
            fleet: Some(FleetStatus {
                me: "a:1:0".to_string(),
                total: 6,
                live: 2,
                shares: 6,
                in_flight: 6,
                members: vec![
                    member("a:1:0", 4, true),
                    member("b:2:0", 2, true),
                    member("dead:3:0", 5, false),
                ],
                repair: None,
            }),
            ..ServiceStatus::default()
        };
        let registry = RegistryMetrics::default();
        registry.observe(Some(200), Duration::from_millis(30));
        registry.observe(Some(404), Duration::from_millis(300));
        registry.observe(None, Duration::from_secs(3));
        (status, registry)
    }

    /// `text` with the samples of each family sorted: a family's samples come in no set order
    /// (the registry client's codes are a hash map's).
    fn by_family(text: &str) -> Vec<Vec<&str>> {
        let mut families: Vec<Vec<&str>> = Vec::new();
        for line in text.lines() {
            match families.last_mut() {
                Some(family) if !line.starts_with("# HELP ") => family.push(line),
                _ => families.push(vec![line]),
            }
        }
        for family in &mut families {
            family[2..].sort_unstable();
        }
        families
    }

    #[test]
    fn the_exposition_keeps_every_series_name_and_value() {
        let (status, registry) = sample_status();
        let text = render(status, &registry).expect("rendered");
        assert_eq!(
            by_family(&text),
            by_family(include_str!("../tests/fixtures/metrics.prom"))
        );
        // Prometheus' text format, not OpenMetrics: counters' `# TYPE` names the series.
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE registry_repair_deferred_total counter\n"));
    }

    #[test]
    fn a_member_shows_the_fleet_with_every_live_member_labelled() {
        let (status, registry) = sample_status();
        let text = render(status, &registry).expect("rendered");
        for line in [
            "registry_repair_fleet_members 2",
            "registry_repair_fleet_concurrency_total 6",
            "registry_repair_fleet_member_share{member=\"a:1:0\"} 4",
            "registry_repair_fleet_member_share{member=\"b:2:0\"} 2",
            "registry_repair_fleet_member_in_flight{member=\"b:2:0\"} 2",
            "registry_repair_fleet_member_heartbeat_age_seconds{member=\"a:1:0\"} 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(!text.contains("dead:3:0"), "a dead member is not a series");
    }

    #[test]
    fn a_label_value_is_escaped() {
        // A member id carries the host's name, which the service does not choose.
        let (mut status, registry) = sample_status();
        if let Some(fleet) = status.fleet.as_mut() {
            fleet.members = vec![member("odd\"host\\name\nx:1:0", 4, true)];
        }
        let text = render(status, &registry).expect("rendered");
        assert!(
            text.lines()
                .any(|l| l
                    == r#"registry_repair_fleet_member_share{member="odd\"host\\name\nx:1:0"} 4"#),
            "{text}"
        );
    }
}
