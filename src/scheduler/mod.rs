//! The Scheduler actor: walks the projects to work on (keyset, in id order), keeps a bounded queue
//! of them, and hands each to an idle Analyzer while fewer than `limit` are in flight. It alone
//! decides what runs: concurrency, pause and resume, the end of a pass all arrive here as
//! messages, and are defined here, beside the actor that receives them (`Shutdown` beside its
//! handling). The rest of it is split by concern: `walk` (where an analysis' projects come from,
//! passes), `candidates` (where a repair's come from: one finite pass), `pool` (the Analyzers and
//! dispatching), `outage` (the breaker's probes), `shutdown` (draining) and `accounting` (counts,
//! status).
//!
//! It is started with one kind of [`Work`]: an analysis (`run`) or a repair (`repair plan`,
//! `repair apply`). Concurrency, the feature flag, pause and resume, the breaker, the Writer's
//! back-pressure, progress and shutdown work alike for both.

mod accounting;
mod breaker;
mod candidates;
mod outage;
mod pool;
mod shutdown;
mod sweep;
mod walk;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use self::accounting::Accounting;
pub use self::accounting::ServiceStatus;
use self::breaker::{Breaker, State as BreakerState};
use self::pool::Slot;
pub use self::shutdown::Shutdown;
use self::sweep::Sweep;
use self::walk::Source;
use crate::analyzer::{AnalyzerDeps, AnalyzerFinished, Disposition, Job};
use crate::config::Shard;
use crate::db::tracking::TrackingStatus;
use crate::db::watermark::Fences;
use crate::db::Database;
use crate::registry::{NoGitlabApi, RegistryClient};
use crate::work::Work;
use crate::writer::{GetWriterStats, WriteError, Writer, WriterPressure};

/// Projects read per keyset query; the queue is refilled when it falls below half of this.
pub const FETCH_BATCH: i64 = 1000;
/// How often the watermark is moved up.
const WATERMARK_INTERVAL: Duration = Duration::from_secs(5);
const RETRY_DB: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub limit: usize,
    pub enabled: bool,
    pub until_done: bool,
    pub rescan_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Walk the projects recorded `failed` first, and analyse them again.
    pub retry_failed: bool,
    /// This instance's share of the projects.
    pub shard: Shard,
    /// Every project of the shard up to this id has a row (see `db::watermark`).
    pub watermark: i64,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// Why the registry's GitLab API is not confirmed yet (it did not answer at start): then
    /// nothing is dispatched until a probe answers, and an answer without the API ends the run.
    pub registry_unconfirmed: Option<String>,
    /// How often the projects below the watermark are swept for ones without an answer.
    pub sweep_interval: Duration,
    /// How long ago this shard was last swept (`None`: never).
    pub swept_ago: Option<Duration>,
    /// What the service does: analyse, or repair (then `until_done`, `retry_failed`, the shard,
    /// the watermark and the sweep do not apply: a repair walks its candidates once).
    pub work: Work,
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum RunEnd {
    /// `--until-done`: every project has a row and everything is flushed. A repair: every
    /// candidate was planned (or failed) and everything is flushed.
    Done,
    /// Stopped by a signal; everything that finished in time is flushed.
    Stopped,
    /// Stopped, but the last flush failed: those projects will be analysed again next time.
    FlushFailed(WriteError),
    /// The registry answered, but without GitLab's API, before anything was dispatched: no
    /// project can be analysed until its configuration changes.
    RegistryWithoutApi(NoGitlabApi),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Walking projects and dispatching them.
    Running,
    /// The pass is over; waiting for the Writer to flush before the next pass.
    Flushing,
    /// Nothing was left to do; waiting `rescan_interval` before looking again.
    Idle,
    /// Shutting down: no new dispatch, in-flight projects finishing.
    Draining,
    Finished,
}

pub struct Scheduler {
    db: Database,
    /// Probes, and signs batch tokens ahead of need.
    registry: RegistryClient,
    /// Flushes at the end of a pass and on shutdown.
    writer: Addr<Writer>,
    /// What each Analyzer the pool grows by is started with.
    analyzer_deps: Arc<AnalyzerDeps>,
    config: SchedulerConfig,
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    cursor: i64,
    exhausted: bool,
    fetching: bool,
    found_in_pass: u64,
    passes: u64,
    phase: Phase,
    writer_full: bool,
    breaker_reported_open: bool,
    breaker: Breaker,
    /// `GET /gitlab/v1/` has answered 200 or 401 once.
    registry_confirmed: bool,
    source: Source,
    advancing: bool,
    /// What caps the watermark: fences against transactions that commit late.
    fences: Arc<Fences>,
    sweep: Sweep,
    /// While a sweep runs, reads alternate between it and the walk above the watermark.
    sweep_turn: bool,
    /// A repair's `--limit`: candidates still to read.
    candidates_left: Option<u64>,
    accounting: Accounting,
    finished: Option<oneshot::Sender<RunEnd>>,
}

impl Scheduler {
    pub fn new(
        db: Database,
        registry: RegistryClient,
        writer: Addr<Writer>,
        analyzer_deps: Arc<AnalyzerDeps>,
        config: SchedulerConfig,
        finished: oneshot::Sender<RunEnd>,
    ) -> Self {
        let retry_failed = config.retry_failed;
        let breaker = match &config.registry_unconfirmed {
            Some(reason) => Breaker::waiting_for_registry(reason.clone()),
            None => Breaker::default(),
        };
        let registry_confirmed = config.registry_unconfirmed.is_none();
        let cursor = match (&config.work, retry_failed) {
            (Work::Repair(_), _) | (Work::Analysis, true) => 0,
            (Work::Analysis, false) => config.watermark,
        };
        let candidates_left = config.work.repair().and_then(|r| r.scope.limit);
        let sweep = Sweep::new(config.sweep_interval, config.swept_ago);
        Self {
            db,
            registry,
            writer,
            analyzer_deps,
            config,
            slots: Vec::new(),
            queue: VecDeque::new(),
            cursor,
            exhausted: false,
            fetching: false,
            found_in_pass: 0,
            passes: 1,
            phase: Phase::Running,
            writer_full: false,
            breaker_reported_open: false,
            registry_confirmed,
            breaker,
            advancing: false,
            fences: Arc::default(),
            sweep,
            sweep_turn: false,
            candidates_left,
            accounting: Accounting::new(),
            source: if retry_failed {
                Source::Failed
            } else {
                Source::Unanalysed
            },
            finished: Some(finished),
        }
    }

    /// Everything the Scheduler does after an event: refill, dispatch, end the pass.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.config.work {
            Work::Analysis => {
                self.refill(ctx);
                self.dispatch(ctx);
                self.end_pass_if_done(ctx);
            }
            Work::Repair(_) => {
                self.refill_candidates(ctx);
                self.dispatch(ctx);
                self.end_repair_if_done(ctx);
            }
        }
    }

    fn finish(&mut self, end: RunEnd) {
        self.phase = Phase::Finished;
        if let Some(tx) = self.finished.take() {
            let _ = tx.send(end);
        }
    }

    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Draining => "draining",
            Phase::Finished => "stopped",
            _ if !self.config.enabled => "paused",
            _ if self.config.limit == 0 => "paused (concurrency 0)",
            _ if self.breaker.state() != BreakerState::Closed => "registry unavailable",
            _ if self.writer_full => "waiting for the writer",
            Phase::Idle => "idle",
            Phase::Running | Phase::Flushing => "running",
        }
    }

    fn status(&self) -> ServiceStatus {
        ServiceStatus {
            state: self.state_name().to_string(),
            work: self.config.work.to_string(),
            enabled: self.config.enabled,
            max_concurrency: self.config.limit,
            in_flight: self.in_flight(),
            queued: self.queue.len(),
            analyzers: self.slots.len(),
            pass: self.passes,
            writer_full: self.writer_full,
            watermark: self.config.watermark,
            sweeping: self.sweep.is_active(),
            sweeps: self.sweep.completed(),
            writer: None,
            breaker: self.breaker.name().to_string(),
            breaker_trips: self.breaker.trips(),
            last_error: self.breaker.last_error().map(str::to_string),
            ..self.accounting.status()
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            max_concurrency = self.config.limit,
            enabled = self.config.enabled,
            until_done = self.config.until_done,
            shard = %self.config.shard,
            watermark = self.config.watermark,
            "scheduler started"
        );
        if let Some(reason) = &self.config.registry_unconfirmed {
            tracing::warn!(%reason, "the registry does not answer yet; nothing is dispatched until it does");
            self.breaker_reported_open = true;
            ctx.run_later(self.breaker.probe_delay(), |act, ctx| act.probe(ctx));
        }
        match self.config.work {
            Work::Analysis => {
                ctx.run_interval(WATERMARK_INTERVAL, |act, ctx| {
                    act.advance_watermark(ctx);
                    act.sweep_if_due(ctx);
                });
                self.count_remaining(ctx);
                self.take_fence();
            }
            // A repair writes no watermark (a plan writes nothing at all).
            Work::Repair(_) => self.count_candidates(ctx),
        }
        ctx.run_interval(self.config.progress_interval, |act, _ctx| {
            if act.phase != Phase::Finished {
                act.accounting.log_progress(act.state_name());
            }
        });
        self.tick(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for Scheduler {
    type Result = ResponseActFuture<Self, ServiceStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let writer = self.writer.send(GetWriterStats);
        Box::pin(writer.into_actor(self).map(|stats, act, _ctx| {
            let mut status = act.status();
            status.writer = stats.ok();
            status
        }))
    }
}

/// Use at most this many projects in flight from now on; 0 pauses.
#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct SetConcurrency(pub usize);

impl Handler<SetConcurrency> for Scheduler {
    type Result = MessageResult<SetConcurrency>;

    fn handle(
        &mut self,
        SetConcurrency(limit): SetConcurrency,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if limit != self.config.limit {
            tracing::info!(
                from = self.config.limit,
                to = limit,
                "max concurrency changed"
            );
            self.config.limit = limit;
        }
        // Lowering takes effect as in-flight projects finish: none is interrupted.
        self.tick(ctx);
        MessageResult(self.status())
    }
}

/// Switch the feature flag: off stops dispatching, in-flight projects finish and are recorded.
#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct SetEnabled(pub bool);

impl Handler<SetEnabled> for Scheduler {
    type Result = MessageResult<SetEnabled>;

    fn handle(&mut self, SetEnabled(enabled): SetEnabled, ctx: &mut Context<Self>) -> Self::Result {
        if enabled != self.config.enabled {
            tracing::info!(enabled, "feature flag switched");
            self.config.enabled = enabled;
        }
        self.tick(ctx);
        MessageResult(self.status())
    }
}

impl Handler<AnalyzerFinished> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AnalyzerFinished, ctx: &mut Context<Self>) {
        self.freed(msg.analyzer, msg.project_id);
        self.accounting.record(&msg.disposition);
        match msg.disposition {
            Disposition::Recorded {
                row,
                unaddressable: false,
                ..
            } if row.status != TrackingStatus::Failed => self.registry_served(ctx),
            Disposition::Planned { .. } => self.registry_served(ctx),
            Disposition::Recorded { .. }
            | Disposition::CrashedForGood
            | Disposition::NotPlanned => {}
            // The registry refuses this path only: to the back, as trouble goes.
            Disposition::Deferred {
                job,
                others_served: true,
                ..
            } => self.requeue(job, false),
            // The registry refuses every path: first in line when it is back.
            Disposition::Deferred { job, reason, .. } => {
                self.registry_troubled(&reason.to_string(), ctx);
                self.requeue(job, true);
            }
            // To the back: other projects show meanwhile whether the registry serves.
            Disposition::Troubled {
                job,
                reason,
                others_served,
            } => {
                if !others_served {
                    self.registry_troubled(&reason.to_string(), ctx);
                }
                self.requeue(job, false);
            }
            Disposition::Crashed(job) => self.requeue(job, true),
        }
        if self.phase == Phase::Draining && self.in_flight() == 0 {
            self.finalize(ctx);
            return;
        }
        self.tick(ctx);
    }
}

impl Handler<WriterPressure> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: WriterPressure, ctx: &mut Context<Self>) {
        self.writer_full = msg.full;
        self.tick(ctx);
    }
}
