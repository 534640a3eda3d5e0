//! The Scheduler's accounting: what became of the projects it dispatched, where its time went,
//! the rate, the ETA and the progress line. Kept apart from the actor so that deciding what runs
//! and counting what ran do not share one file.

use std::time::{Duration, Instant};

use crate::db::fleet::FleetStatus;
use serde::{Deserialize, Serialize};

use super::Disposition;
use crate::work::WorkName;
use crate::writer::WriterStats;

/// What the service is doing, as `status` says it (the JSON strings are stable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    #[default]
    #[serde(rename = "running")]
    Running,
    /// A pass found nothing; looking again after `worker.rescan_interval_s`.
    #[serde(rename = "idle")]
    Idle,
    /// The feature flag is off.
    #[serde(rename = "paused")]
    Paused,
    #[serde(rename = "paused (concurrency 0)")]
    PausedByConcurrency,
    /// The breaker is open: the registry fails as a whole.
    #[serde(rename = "registry unavailable")]
    RegistryUnavailable,
    /// The Writer's buffer is over its bound.
    #[serde(rename = "waiting for the writer")]
    WaitingForTheWriter,
    /// In a fleet whose total is taken by the other members' shares.
    #[serde(rename = "waiting for a share")]
    WaitingForAShare,
    /// In a fleet: no heartbeat confirmed this member within half the member timeout, so it
    /// acts on nothing until one does ([`crate::fence`]).
    #[serde(rename = "fenced: waiting for a heartbeat")]
    Fenced,
    #[serde(rename = "draining")]
    Draining,
    #[serde(rename = "stopped")]
    Stopped,
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The JSON string, which serde_json writes quoted.
        let quoted = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(quoted.trim_matches('"'))
    }
}

/// The breaker's position, as `status` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerPosition {
    /// Dispatching as usual.
    #[default]
    Closed,
    /// The registry fails as a whole: nothing is dispatched, it is probed.
    Open,
    /// The probe answered: one trial project runs.
    HalfOpen,
}

impl std::fmt::Display for BreakerPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BreakerPosition::Closed => "closed",
            BreakerPosition::Open => "open",
            BreakerPosition::HalfOpen => "half-open",
        })
    }
}

/// The running service's state, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub state: ServiceState,
    /// What the service does ([`WorkName`]).
    #[serde(default)]
    pub work: WorkName,
    pub enabled: bool,
    pub max_concurrency: usize,
    /// In a fleet: this instance's share of `max_concurrency`, the fleet's total.
    #[serde(default)]
    pub share: Option<usize>,
    pub in_flight: usize,
    pub queued: usize,
    /// Projects recorded by this process (completed + failed).
    pub analysed: u64,
    pub completed: u64,
    pub failed: u64,
    pub missing_found: u64,
    /// The known sizes of the missing repositories found, summed.
    #[serde(default)]
    pub missing_bytes_found: u64,
    /// Missing repositories found whose size is not known.
    #[serde(default)]
    pub sizes_unknown: u64,
    /// Attempts that ended unrecorded (registry or database trouble), to be tried again.
    pub deferred: u64,
    /// Projects handed back unfinished because this member's hold on its work lapsed (its
    /// requests cancelled), to be tried again.
    #[serde(default)]
    pub handed_back: u64,
    /// Registry entries outside the project path, ignored.
    pub ignored_entries: u64,
    /// Projects whose path breaks the registry's name grammar: recorded with 0, nothing asked.
    #[serde(default)]
    pub unaddressable: u64,
    pub analyzer_restarts: u64,
    pub analyzers: usize,
    pub pass: u64,
    pub rate_per_s: f64,
    pub uptime_s: f64,
    pub writer_full: bool,
    /// Every project of this shard up to this id has a row; passes start here.
    pub watermark: i64,
    /// A sweep below the watermark is under way.
    #[serde(default)]
    pub sweeping: bool,
    /// Sweeps this process finished.
    #[serde(default)]
    pub sweeps: u64,
    /// Scheduling batches read from the database, and the database time they took.
    pub fetches: u64,
    pub fetch_ms_avg: f64,
    pub fetch_ms_max: f64,
    /// From dispatching a project to its Analyzer reporting back, on average.
    pub analysis_ms_avg: f64,
    /// From the Scheduler's start to its first dispatch.
    pub first_dispatch_ms: Option<f64>,
    /// Projects without an answer yet, as the source counts them: its count less those done since,
    /// or what the source tells (the fleet's count at the pass's start less what its walk has read
    /// since).
    pub remaining: Option<u64>,
    /// `remaining` comes from PostgreSQL's table statistics, not a count (the count did not finish
    /// within its statement timeout): off by what changed since the last `ANALYZE`.
    #[serde(default)]
    pub remaining_estimated: bool,
    /// When `remaining` will be done at the rate so far.
    pub eta_s: Option<f64>,
    /// The process's peak resident memory (VmHWM).
    pub peak_rss_kib: Option<u64>,
    pub writer: Option<WriterStats>,
    /// In a fleet: its members, their shares and the totals, as this member last read them.
    #[serde(default)]
    pub fleet: Option<FleetStatus>,
    pub breaker: BreakerPosition,
    pub breaker_trips: u64,
    pub last_error: Option<String>,
}

impl ServiceStatus {
    /// Done, total and left, as the progress bar, the progress line and the live page show them:
    /// what this process analysed, beside what is left (for `run`, left of the fleet's pass).
    pub fn progress(&self) -> Option<(u64, u64, u64)> {
        let left = self.remaining?;
        Some((self.analysed, self.analysed + left, left))
    }
}

/// What became of the projects dispatched so far.
#[derive(Default)]
struct Counts {
    completed: u64,
    failed: u64,
    missing: u64,
    missing_bytes: u64,
    sizes_unknown: u64,
    deferred: u64,
    handed_back: u64,
    crashes: u64,
    ignored_entries: u64,
    unaddressable: u64,
}

/// Where the Scheduler's time goes.
#[derive(Default)]
struct Timing {
    /// Projects back from an Analyzer, and the time from dispatch to that.
    back: u64,
    back_total: Duration,
    fetches: u64,
    fetch_total: Duration,
    fetch_max: Duration,
    first_dispatch: Option<Duration>,
}

/// Counts, timings and the estimate of what is left, since the Scheduler started.
pub struct Accounting {
    counts: Counts,
    timing: Timing,
    /// Projects left when last counted, and how many this process had analysed then.
    counted: Option<(u64, u64)>,
    started_at: Instant,
}

impl Accounting {
    pub fn new() -> Self {
        Self {
            counts: Counts::default(),
            timing: Timing::default(),
            counted: None,
            started_at: Instant::now(),
        }
    }

    /// What became of one project.
    pub fn record<I>(&mut self, disposition: &Disposition<I>) {
        let counts = &mut self.counts;
        match disposition {
            Disposition::Recorded(tally) if tally.failed => counts.failed += 1,
            Disposition::Recorded(tally) => {
                counts.completed += 1;
                counts.unaddressable += u64::from(tally.unaddressable);
                counts.ignored_entries += u64::from(tally.ignored);
                counts.missing += tally.missing;
                counts.missing_bytes += tally.missing_bytes;
                counts.sizes_unknown += tally.sizes_unknown;
            }
            Disposition::Deferred { .. } | Disposition::Troubled { .. } => counts.deferred += 1,
            Disposition::Crashed(_) => counts.crashes += 1,
            Disposition::Fenced(_) => counts.handed_back += 1,
            Disposition::CrashedForGood => {
                counts.crashes += 1;
                counts.failed += 1;
            }
        }
    }

    /// A project came back from its Analyzer `took` after it was dispatched.
    pub fn back(&mut self, took: Duration) {
        self.timing.back += 1;
        self.timing.back_total += took;
    }

    /// A read of projects came back after `took`.
    pub fn fetched(&mut self, took: Duration) {
        self.timing.fetches += 1;
        self.timing.fetch_total += took;
        self.timing.fetch_max = self.timing.fetch_max.max(took);
    }

    /// A project is dispatched: the first time, how long after the start.
    pub fn dispatched(&mut self) -> Option<Duration> {
        if self.timing.first_dispatch.is_some() {
            return None;
        }
        let after = self.started_at.elapsed();
        self.timing.first_dispatch = Some(after);
        Some(after)
    }

    /// The projects left to analyse were counted (or estimated): `left`.
    pub fn counted(&mut self, left: u64) {
        self.counted = Some((left, self.analysed()));
    }

    pub fn analysed(&self) -> u64 {
        self.counts.completed + self.counts.failed
    }

    /// Projects recorded per second since the start.
    fn rate(&self) -> f64 {
        self.analysed() as f64 / self.started_at.elapsed().as_secs_f64().max(1e-3)
    }

    /// Projects left now (estimate), and when they will be done at the rate so far.
    fn remaining(&self) -> Option<(u64, Option<f64>)> {
        let (left, at) = self.counted?;
        let left = left.saturating_sub(self.analysed().saturating_sub(at));
        let rate = self.rate();
        Some((left, (rate > 0.0).then(|| left as f64 / rate)))
    }

    /// One `progress` log line; `state` is the Scheduler's.
    pub fn log_progress(status: &ServiceStatus) {
        let rate = status.rate_per_s;
        let state = status.state;
        match status.progress() {
            Some((done, total, left)) => tracing::info!(
                done,
                total,
                left,
                estimated = status.remaining_estimated,
                rate_per_s = format!("{rate:.1}"),
                eta_s = status.eta_s.map(|e| e.round() as u64),
                %state,
                "progress"
            ),
            None => tracing::info!(
                done = status.analysed,
                rate_per_s = format!("{rate:.1}"),
                %state,
                "progress"
            ),
        }
    }

    /// The status fields this accounting knows; the Scheduler fills in the rest.
    pub fn status(&self) -> ServiceStatus {
        let remaining = self.remaining();
        let (counts, timing) = (&self.counts, &self.timing);
        ServiceStatus {
            analysed: self.analysed(),
            completed: counts.completed,
            failed: counts.failed,
            missing_found: counts.missing,
            missing_bytes_found: counts.missing_bytes,
            sizes_unknown: counts.sizes_unknown,
            deferred: counts.deferred,
            handed_back: counts.handed_back,
            ignored_entries: counts.ignored_entries,
            unaddressable: counts.unaddressable,
            analyzer_restarts: counts.crashes,
            rate_per_s: self.rate(),
            uptime_s: self.started_at.elapsed().as_secs_f64(),
            fetches: timing.fetches,
            fetch_ms_avg: average_ms(timing.fetch_total, timing.fetches),
            fetch_ms_max: timing.fetch_max.as_secs_f64() * 1000.0,
            analysis_ms_avg: average_ms(timing.back_total, timing.back),
            first_dispatch_ms: timing.first_dispatch.map(|d| d.as_secs_f64() * 1000.0),
            peak_rss_kib: peak_rss_kib(),
            remaining: remaining.map(|(left, _)| left),
            eta_s: remaining.and_then(|(_, eta)| eta),
            ..ServiceStatus::default()
        }
    }
}

fn average_ms(total: Duration, n: u64) -> f64 {
    if n > 0 {
        total.as_secs_f64() * 1000.0 / n as f64
    } else {
        0.0
    }
}

/// The process's peak resident set size, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
