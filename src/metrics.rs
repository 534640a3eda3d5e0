//! Prometheus metrics in the text exposition format, served at `/metrics` on the admin listener.
//! Registry requests are counted where they are made (`registry::metrics`); everything else is
//! read from the Scheduler's status (which carries the Writer's) at scrape time. Every series is
//! one row of [`families`]: name, kind, help, and its samples.

use std::fmt::Write as _;

use crate::db::fleet::members::MemberRow;
use crate::db::fleet::FleetStatus;
use crate::registry::RegistryMetrics;
use crate::scheduler::{BreakerPosition, ServiceStatus};

/// The prefix of every series.
const PREFIX: &str = "registry_repair_";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One series' value: `suffix` after the family's name (`_bucket`, `_sum`, ...), its label, if
/// any, and the value as written.
struct Sample {
    suffix: &'static str,
    label: Option<(&'static str, String)>,
    value: String,
}

/// One metric family: a `# HELP` and a `# TYPE` line, then its samples.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Vec<Sample>,
}

impl Family {
    /// A family of one unlabelled sample.
    fn one(name: &'static str, kind: Kind, help: &'static str, value: impl ToString) -> Self {
        Self::labelled(name, kind, help, "", [(None, value)])
    }

    /// A family of one sample per value of `label`.
    fn labelled<V: ToString>(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        label: &'static str,
        samples: impl IntoIterator<Item = (Option<String>, V)>,
    ) -> Self {
        Self {
            name,
            kind,
            help,
            samples: samples
                .into_iter()
                .map(|(value_of_label, value)| Sample {
                    suffix: "",
                    label: value_of_label.map(|v| (label, v)),
                    value: value.to_string(),
                })
                .collect(),
        }
    }
}

/// Every family, in the order they are written.
fn families(status: &ServiceStatus, registry: &RegistryMetrics) -> Vec<Family> {
    use Kind::{Counter, Gauge};
    let by = |pairs: &[(&str, u64)]| -> Vec<(Option<String>, u64)> {
        pairs
            .iter()
            .map(|(label, n)| (Some(label.to_string()), *n))
            .collect()
    };
    let mut families = vec![
        Family::labelled(
            "projects_analysed_total",
            Counter,
            "Projects recorded by this process, by status",
            "status",
            by(&[("completed", status.completed), ("failed", status.failed)]),
        ),
        Family::one(
            "missing_repositories_found_total",
            Counter,
            "Registry repositories without a container_repositories row, found by this process",
            status.missing_found,
        ),
        Family::one(
            "missing_bytes_found_total",
            Counter,
            "Known sizes of the missing repositories found by this process, summed (each repository deduplicated on its own)",
            status.missing_bytes_found,
        ),
        Family::one(
            "sizes_unknown_total",
            Counter,
            "Missing repositories found by this process whose size the registry did not give (or was not asked)",
            status.sizes_unknown,
        ),
        Family::one(
            "ignored_entries_total",
            Counter,
            "Registry entries outside the project path, ignored",
            status.ignored_entries,
        ),
        Family::one(
            "unaddressable_projects_total",
            Counter,
            "Projects whose path breaks the registry's name grammar, recorded with 0 without a request",
            status.unaddressable,
        ),
        Family::one(
            "deferred_total",
            Counter,
            "Analyses ended unrecorded by trouble outside the project, to be tried again",
            status.deferred,
        ),
        Family::one(
            "analyzer_restarts_total",
            Counter,
            "Analyzers restarted by their supervisor after a panic",
            status.analyzer_restarts,
        ),
        Family::one(
            "in_flight",
            Gauge,
            "Projects being analysed now",
            status.in_flight,
        ),
        Family::one(
            "max_concurrency",
            Gauge,
            "The concurrency limit in force",
            status.max_concurrency,
        ),
        Family::one(
            "enabled",
            Gauge,
            "The feature flag: 1 dispatching allowed, 0 paused",
            u8::from(status.enabled),
        ),
        Family::one(
            "queued",
            Gauge,
            "Projects read from the database and waiting for an Analyzer",
            status.queued,
        ),
        Family::one(
            "breaker_open",
            Gauge,
            "1 while the registry is treated as unavailable (open or half-open)",
            u8::from(status.breaker != BreakerPosition::Closed),
        ),
        Family::one(
            "breaker_trips_total",
            Counter,
            "Times the registry was found unavailable as a whole",
            status.breaker_trips,
        ),
        Family::one(
            "watermark",
            Gauge,
            "Every project of this shard up to this id has a row",
            status.watermark,
        ),
    ];
    if let Some(remaining) = status.remaining {
        families.push(Family::one(
            "remaining_projects",
            Gauge,
            "Projects without a row yet (estimate)",
            remaining,
        ));
    }
    if let Some(writer) = &status.writer {
        families.extend([
            Family::one(
                "writer_buffered",
                Gauge,
                "Results held by the Writer, not yet in the database",
                writer.buffered,
            ),
            Family::one(
                "writer_rows_written_total",
                Counter,
                "Rows written to the tracking table",
                writer.rows_written,
            ),
            Family::labelled(
                "writer_flushes_total",
                Counter,
                "Bulk writes, by what started them",
                "reason",
                by(&[
                    ("size", writer.flushes_size),
                    ("timer", writer.flushes_timer),
                    ("failure", writer.flushes_failure),
                    ("pass_end", writer.flushes_requested),
                    ("shutdown", writer.flushes_shutdown),
                ]),
            ),
            Family::one(
                "writer_failed_writes_total",
                Counter,
                "Bulk writes the database refused (rows kept and retried)",
                writer.failed_writes,
            ),
        ]);
    }
    if let Some(fleet) = &status.fleet {
        families.extend(fleet_families(fleet));
    }
    families.extend(registry_families(registry));
    families
}

/// The fleet as this member last read it: its totals, and each live member's share, work and
/// heartbeat, labelled by member id (`host:pid:nonce`).
fn fleet_families(fleet: &FleetStatus) -> [Family; 5] {
    use Kind::Gauge;
    let live: Vec<_> = fleet.members.iter().filter(|m| m.live).collect();
    let per_member = |value: fn(&MemberRow) -> String| -> Vec<(Option<String>, String)> {
        live.iter()
            .map(|m| (Some(m.id.clone()), value(m)))
            .collect()
    };
    [
        Family::one(
            "fleet_members",
            Gauge,
            "Live members of the fleet (instances of run against this database)",
            fleet.live,
        ),
        Family::one(
            "fleet_concurrency_total",
            Gauge,
            "The fleet's total concurrency, shared among its members",
            fleet.total,
        ),
        Family::labelled(
            "fleet_member_share",
            Gauge,
            "Each live member's share of the fleet's concurrency",
            "member",
            per_member(|m| m.share.to_string()),
        ),
        Family::labelled(
            "fleet_member_in_flight",
            Gauge,
            "Projects each live member has in flight",
            "member",
            per_member(|m| m.in_flight.to_string()),
        ),
        Family::labelled(
            "fleet_member_heartbeat_age_seconds",
            Gauge,
            "Seconds since each live member's last heartbeat",
            "member",
            per_member(|m| format!("{:.3}", m.heartbeat_age_s)),
        ),
    ]
}

/// The registry client's requests: by status code, and a duration histogram.
fn registry_families(registry: &RegistryMetrics) -> [Family; 2] {
    let codes = registry.by_code().into_iter().map(|(code, n)| {
        let code = code.map_or_else(|| "error".to_string(), |c| c.to_string());
        (Some(code), n)
    });
    let histogram = registry.histogram();
    let bucket = |le: String, n: u64| Sample {
        suffix: "_bucket",
        label: Some(("le", le)),
        value: n.to_string(),
    };
    let mut samples: Vec<Sample> = histogram
        .buckets
        .iter()
        .map(|(bound, cumulative)| bucket(bound.to_string(), *cumulative))
        .collect();
    samples.push(bucket("+Inf".into(), histogram.count));
    samples.push(Sample {
        suffix: "_sum",
        label: None,
        value: histogram.sum_seconds.to_string(),
    });
    samples.push(Sample {
        suffix: "_count",
        label: None,
        value: histogram.count.to_string(),
    });
    [
        Family::labelled(
            "registry_requests_total",
            Kind::Counter,
            "List Sub Repositories requests, by HTTP status code (`error`: no answer)",
            "code",
            codes,
        ),
        Family {
            name: "registry_request_duration_seconds",
            kind: Kind::Histogram,
            help: "How long registry requests took",
            samples,
        },
    ]
}

/// The whole exposition.
pub fn render(status: &ServiceStatus, registry: &RegistryMetrics) -> String {
    let mut out = String::new();
    for family in families(status, registry) {
        let name = family.name;
        let _ = writeln!(out, "# HELP {PREFIX}{name} {}", family.help);
        let _ = writeln!(out, "# TYPE {PREFIX}{name} {}", family.kind.as_str());
        for sample in family.samples {
            let label = sample
                .label
                .map(|(key, value)| format!("{{{key}=\"{value}\"}}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{PREFIX}{name}{}{label} {}",
                sample.suffix, sample.value
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn the_exposition_keeps_every_series_name_and_value() {
        let (status, registry) = sample_status();
        assert_eq!(
            render(&status, &registry),
            include_str!("../tests/fixtures/metrics.prom")
        );
    }

    #[test]
    fn a_member_shows_the_fleet_with_every_live_member_labelled() {
        let (status, registry) = sample_status();
        let text = render(&status, &registry);
        for line in [
            "registry_repair_fleet_members 2",
            "registry_repair_fleet_concurrency_total 6",
            "registry_repair_fleet_member_share{member=\"a:1:0\"} 4",
            "registry_repair_fleet_member_share{member=\"b:2:0\"} 2",
            "registry_repair_fleet_member_in_flight{member=\"b:2:0\"} 2",
            "registry_repair_fleet_member_heartbeat_age_seconds{member=\"a:1:0\"} 0.250",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(!text.contains("dead:3:0"), "a dead member is not a series");
    }
}
