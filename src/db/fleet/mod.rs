//! The fleet's tables: every instance of `run` against this database finds the others here, and
//! nowhere else (no coordinator process, no session state, so PgBouncer in transaction pooling
//! carries it as it is):
//! - `members`: who runs, since when, its heartbeat, its share of the concurrency and what it
//!   does; the fleet's switches in `config` mode.
//! - `claims`: per shard, the pass the fleet is in, and the spans of ids each member answers for.
//!
//! Liveness is the database's clock only: a member is live while its heartbeat is younger than
//! `fleet.member_timeout_ms` by `now()`, whatever the hosts' clocks say.

pub mod claims;
pub mod members;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Shard;

/// This instance, as the fleet knows it.
#[derive(Debug)]
pub struct Member {
    /// `host:pid:nonce`: unique even when a container restarts with the same host name and pid.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// `/proc/sys/kernel/random/boot_id`: with `host`, tells a member of this machine.
    pub boot_id: String,
    /// When this process started (see [`process_started`]).
    pub process_started: i64,
    /// The `worker.shard` it analyses: instances with the same shard share its work.
    pub shard: Shard,
    /// After this long without a heartbeat a member is taken for dead.
    pub timeout: Duration,
    /// Whether this member has heartbeat long enough to judge others dead (see
    /// [`Member::may_take_over`]).
    trusted: AtomicBool,
}

impl Member {
    pub fn new(shard: Shard, timeout: Duration) -> Self {
        let host = host_name();
        let pid = std::process::id();
        let nonce: u32 = rand::random();
        Self {
            id: format!("{host}:{pid}:{nonce:08x}"),
            host,
            pid,
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|id| id.trim().to_string())
                .unwrap_or_default(),
            process_started: process_started(i32::try_from(pid).unwrap_or(0)).unwrap_or(0),
            shard,
            timeout,
            trusted: AtomicBool::new(false),
        }
    }

    /// Whether this member may take over the claims of members whose heartbeat is older than the
    /// timeout. Only once its own heartbeats have gone through for a whole timeout: after a
    /// database outage every member's heartbeat looks old, and the first one back must not take
    /// the others' work before they had the chance to heartbeat again.
    pub fn may_take_over(&self) -> bool {
        self.trusted.load(Ordering::Relaxed)
    }

    pub fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::Relaxed);
    }

    /// The timeout in seconds, as `make_interval` takes it.
    fn timeout_s(&self) -> f64 {
        self.timeout.as_secs_f64()
    }
}

/// When process `pid` of this machine (and pid namespace) started, in clock ticks since boot
/// (`starttime` of `/proc/PID/stat`); `None` when no such process runs. With the pid, it names one
/// process for the machine's uptime: a pid reused, or pid 1 of a restarted container, starts later.
pub fn process_started(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state is field 3, starttime field 22.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(19)?.parse().ok()
}

/// The host's name as the kernel has it (a pod's name under Kubernetes), or `unknown-host`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The fleet as `status` shows it: every member the table has, and the totals of the live ones.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetStatus {
    /// This instance's id among the members.
    pub me: String,
    /// The fleet's total concurrency (GitLab's setting, or the fleet's own in `config` mode).
    pub total: usize,
    pub live: usize,
    /// The live members' shares added up: never more than `total`.
    pub shares: usize,
    pub in_flight: usize,
    pub members: Vec<members::MemberRow>,
}
