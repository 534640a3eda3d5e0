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
use crate::identity::ProcessIdentity;

/// What a member that analyses says it does (`work` of its row); a repair says `repair plan` or
/// `repair apply (run N)`.
pub const ANALYSIS: &str = "analyse";

/// This instance, as the fleet knows it.
#[derive(Debug)]
pub struct Member {
    /// `host:pid:nonce`: unique even when a container restarts with the same host name and pid.
    pub id: String,
    /// Its process: with it, a member of this machine whose process is gone is told at once.
    pub process: ProcessIdentity,
    /// What it does: [`ANALYSIS`], or a repair (whose registry requests count in the fleet's
    /// total too, and which reads no claims).
    pub work: String,
    /// The `worker.shard` it analyses: instances with the same shard share its work.
    pub shard: Shard,
    /// After this long without a heartbeat a member is taken for dead.
    pub timeout: Duration,
    /// Whether this member has heartbeat long enough to judge others dead (see
    /// [`Member::may_take_over`]).
    trusted: AtomicBool,
}

impl Member {
    pub fn new(work: String, shard: Shard, timeout: Duration) -> Self {
        let process = ProcessIdentity::this_process();
        let nonce: u32 = rand::random();
        Self {
            id: format!("{}:{}:{nonce:08x}", process.host, process.pid),
            process,
            work,
            shard,
            timeout,
            trusted: AtomicBool::new(false),
        }
    }

    /// Whether it does the analysis (reads claims, moves passes); a repair only takes a share.
    pub fn analyses(&self) -> bool {
        self.work == ANALYSIS
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

    /// How long it may start work after a heartbeat was sent: half the timeout ([`crate::fence`]).
    pub fn hold(&self) -> Duration {
        self.timeout / 2
    }

    /// How long past that its work under way may go on: a quarter of the timeout, so that it all
    /// ends a quarter of the timeout before the others may take it over.
    pub fn grace(&self) -> Duration {
        self.timeout / 4
    }

    /// The timeout in seconds, as `db::dsl::ago` takes it.
    fn timeout_s(&self) -> f64 {
        self.timeout.as_secs_f64()
    }
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
    /// The repair lease's holder, when an apply or an undo runs.
    #[serde(default)]
    pub repair: Option<String>,
}
